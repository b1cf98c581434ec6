//! kdump-compressed ("diskdump") files, FORMATS.md §1: byte layouts shared by the reader
//! here and the writer in `plugins/kdump`, per-page codecs, and the reader.

pub mod codec;
pub mod layout;
pub mod reader;

pub use codec::Codec;
pub use layout::{DiskDumpHeader, Layout, PageDesc, SubHeader, Utsname};
pub use reader::{open_kdump, probe, KdumpMemory};
