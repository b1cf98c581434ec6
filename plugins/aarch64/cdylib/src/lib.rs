//! The AArch64 walker (`dumpconv_aarch64::Aarch64Walker`) exported through the plugin
//! SDK, so that `dumpconv --plugin libdumpconv_aarch64_plugin.so --plugin-override` can
//! prove a loaded walker gives the same output as the built-in one.

dumpconv_core::export_plugin!(
    walker: dumpconv_aarch64::Aarch64Walker::new(),
    version: env!("CARGO_PKG_VERSION"),
    description: dumpconv_aarch64::DESCRIPTION,
);
