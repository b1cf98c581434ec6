//! ELF cores: layouts (through the `object` crate's `elf` structs), the note blob, the
//! reader and the header encoders the ELF writer uses.

pub mod note;
pub mod read;
pub mod write;
