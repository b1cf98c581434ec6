//! kdump-compressed ("diskdump") files (docs/formats.md#kdump): byte layouts shared by
//! the reader here and the writer in `plugins/kdump`, per-page codecs, and the reader.

pub mod codec;
pub mod layout;
pub mod reader;

pub use codec::Codec;
pub use layout::{DiskDumpHeader, Layout, PageDesc, SubHeader, Utsname};
pub use reader::{open_kdump, probe, KdumpMemory};
