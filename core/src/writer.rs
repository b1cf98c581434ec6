//! The contract of an output writer and the plan it writes.

use std::collections::BTreeMap;

use crate::cpu::{Arch, CpuState};
use crate::error::Result;
use crate::mapping::MappingList;
use crate::memory::{PhysRange, PhysicalMemory};
use crate::note::Note;
use crate::progress::Progress;
use crate::sink::Sink;
use crate::vmcoreinfo::VmcoreInfo;

/// Everything a writer needs besides the memory itself. Built by the conversion
/// pipeline; writers never look at the input file.
#[derive(Debug, Clone)]
pub struct DumpPlan {
    pub arch: Arch,
    /// Page size of the dumped machine.
    pub page_size: u64,
    /// Physical ranges to write: RAM, clipped to `--begin/--length`; sorted, disjoint.
    pub ranges: Vec<PhysRange>,
    /// Virtual mappings (`--paging`), or None for the physical view.
    pub mappings: Option<MappingList>,
    /// Notes to write, already in output order (NT_PRSTATUS…, QEMU…, VMCOREINFO).
    pub notes: Vec<Note>,
    pub cpus: Vec<CpuState>,
    pub vmcoreinfo: Option<VmcoreInfo>,
    /// Writer-specific options as `key=value` (compression, level, threads...), so
    /// plugins loaded at run time receive them too.
    pub options: BTreeMap<String, String>,
    /// Page filtering (`--dump-level`, `--exclude`): the RAM pages left out on purpose.
    /// They are not in `ranges`, so a writer that knows nothing of filtering leaves them
    /// out as holes; one whose format can say "RAM, but excluded" (kdump) uses this.
    pub filter: Option<PlanFilter>,
}

/// RAM pages a filter left out of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanFilter {
    /// makedumpfile's dump level (1 zero, 2 cache, 4 cache-private, 8 user, 16 free).
    pub dump_level: u8,
    /// The pages left out: sorted, disjoint, whole pages, none of them in the plan's
    /// `ranges`. Zero pages are here only when the writer does not leave them out itself
    /// (a writer taking `exclude-zero` receives that option instead).
    pub excluded: Vec<PhysRange>,
}

impl DumpPlan {
    /// Total bytes of memory the plan writes.
    pub fn total_bytes(&self) -> u64 {
        self.ranges.iter().map(PhysRange::len).sum()
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
}

/// An output format.
pub trait DumpWriter: Send + Sync {
    /// Name used by `--format` ("elf", "raw", "kdump").
    fn name(&self) -> &str;

    /// One line for `--help` and `dumpconv plugins`.
    fn description(&self) -> &str;

    /// Output file name endings that select this writer (without the dot).
    fn extensions(&self) -> &[&str];

    /// True if the format compresses its own data (kdump each page, AVML each block):
    /// it then receives the `compress`, `level` and `threads` options itself, and its
    /// output is never wrapped in a compressed stream (`.zst`, `.lz4`). Formats that return false
    /// (the default) must be able to write to a forward-only sink to be wrapped.
    fn compresses_itself(&self) -> bool {
        false
    }

    /// The writer options (keys of [`DumpPlan::options`]) this writer takes. The
    /// pipeline refuses any other before anything is opened, naming the writer and the
    /// option (see [`check_writer_options`]). `None` (the default) declares nothing and
    /// lets every option through: a plugin writer whose descriptor lists no options.
    fn options(&self) -> Option<&[&str]> {
        None
    }

    /// A word on the options this writer refuses, added to the error (AVML: its blocks
    /// are always snappy-compressed, so it has no `compress`).
    fn options_note(&self) -> Option<&str> {
        None
    }

    /// Write the plan. Bytes of memory come from `mem`, output goes to `sink`, progress
    /// is reported in bytes of memory written. On error the caller discards the output.
    fn write(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<()>;
}

/// Refuse an option `writer` does not declare (a usage error naming the writer, the
/// option and what it takes). Writers declaring nothing take anything.
pub fn check_writer_options<'a>(
    writer: &dyn DumpWriter,
    keys: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let Some(takes) = writer.options() else {
        return Ok(());
    };
    for key in keys {
        if !takes.contains(&key.as_str()) {
            let takes = if takes.is_empty() {
                "it takes none".to_string()
            } else {
                format!("it takes {}", takes.join(", "))
            };
            let note = writer
                .options_note()
                .map_or(String::new(), |n| format!(": {n}"));
            return Err(crate::Error::invalid(format!(
                "{} output takes no option {key:?} ({takes}){note}",
                writer.name()
            )));
        }
    }
    Ok(())
}
