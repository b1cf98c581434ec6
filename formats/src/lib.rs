//! dumpconv-formats: one module per on-disk format, holding both directions of its byte
//! layout, plus content detection. Writers live in the plugins; they use the layouts
//! defined here.

pub mod avml;
pub mod bytes;
pub mod detect;
pub mod elf;
pub mod flattened;
pub mod input;
pub mod kdump;
pub mod lime;
mod lz4_frame_end;
pub mod lzop;
pub mod migration;
pub mod notes;
pub mod options;
pub mod qcow2;
pub mod raw;
pub mod wrapped;

pub use detect::{detect, open, Detected, DetectedBy, Probe};
pub use options::OpenOptions;
