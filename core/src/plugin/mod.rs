//! Plugins loaded at run time: the C ABI ([`abi`], mirror of
//! `core/include/dumpconv_plugin.h`).
//!
//! Unsafe code is allowed only in the modules below, each block with a `// SAFETY:` note.

pub mod abi;
