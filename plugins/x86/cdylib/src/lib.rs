//! The x86 walker (`dumpconv_x86::X86Walker`) exported through the plugin SDK, so that
//! `dumpconv --plugin libdumpconv_x86_plugin.so --plugin-override` can prove a loaded
//! walker gives the same output as the built-in one, and as a template for walker
//! plugins written in Rust.

dumpconv_core::export_plugin!(
    walker: dumpconv_x86::X86Walker::new(),
    version: env!("CARGO_PKG_VERSION"),
    description: "x86 page tables: 32-bit (PSE, PSE-36), PAE, 4-level, 5-level (as a plugin)",
);
