//! Plugins loaded at run time.
//!
//! - [`abi`]: the `#[repr(C)]` mirror of `core/include/dumpconv_plugin.h`;
//! - [`host`]: a plugin's descriptor wrapped as an `ArchWalker` or `DumpWriter`;
//! - [`guest`]: the SDK, [`export_plugin!`](crate::export_plugin) for plugins in Rust;
//! - [`loader`]: finding, checking and loading shared libraries.
//!
//! Unsafe code is allowed only in these modules, each block with a `// SAFETY:` note.

pub mod abi;
pub mod guest;
pub mod host;
pub mod loader;

pub use host::{LoadedPlugin, PluginInfo, PluginKind, PluginWalker, PluginWriter};

#[cfg(test)]
mod tests;
