//! dumpconv-formats: one module per on-disk format, holding both directions of its byte
//! layout, plus content detection. Writers live in the plugins; they use the layouts
//! defined here.

pub mod elf;
pub mod notes;
