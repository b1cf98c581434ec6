//! A writer plugin built with the SDK macro whose `write` panics after writing a few
//! bytes, for the bad-plugin tests: the SDK must catch the panic at the boundary and the
//! host must report it, naming the plugin file, without crashing or leaving output.

use dumpconv_core::{DumpPlan, DumpWriter, PhysicalMemory, Progress, Result, Sink};

pub struct PanickyWriter;

impl DumpWriter for PanickyWriter {
    fn name(&self) -> &str {
        "panicky"
    }

    fn description(&self) -> &str {
        "a writer that panics on purpose (tests)"
    }

    fn extensions(&self) -> &[&str] {
        &["panicky"]
    }

    fn write(
        &self,
        plan: &DumpPlan,
        _mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        _progress: &dyn Progress,
    ) -> Result<()> {
        sink.write_all(b"partial output before the panic")?;
        panic!(
            "the panicky test writer gives up after {} ranges",
            plan.ranges.len()
        );
    }
}

dumpconv_core::export_plugin!(
    writer: PanickyWriter,
    version: env!("CARGO_PKG_VERSION"),
    description: "a writer that panics on purpose (tests)",
);
