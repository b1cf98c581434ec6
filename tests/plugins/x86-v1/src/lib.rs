//! The x86 walker exported with plugin ABI version 1 (x86 CPUs as CR0/CR3/CR4/EFER, x86
//! paging-mode numbers), as plugins built before ABI 2 are: dumpconv must still load it
//! and get byte-identical results (cli/tests/plugin_x86_identity.rs).

dumpconv_core::export_plugin!(
    walker_v1: dumpconv_x86::X86Walker::new(),
    version: env!("CARGO_PKG_VERSION"),
    description: "x86 page tables, exported with the version-1 plugin ABI (tests)",
);
