//! The conversion pipeline: open → (walk) → plan → write. Readers, walkers and writers
//! know nothing of each other; this module wires them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dumpconv_core::memory::{clip_ranges, normalize_ranges};
use dumpconv_core::{
    Arch, CpuState, Dump, DumpPlan, Error, PhysRange, Progress, Result, VmcoreInfo, WalkOptions,
    WalkStats, PAGE_SIZE,
};
use dumpconv_formats::OpenOptions;

use crate::output::{check_output, write_output, Output};
use crate::registry::Registry;

/// How to build virtual mappings (`--paging`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagingOptions {
    /// CPU whose user-half mappings are kept (default: the first with paging on).
    pub user_cpu: Option<u32>,
    /// Keep every CPU's mappings, as QEMU does (may hold contradictory user mappings).
    pub all_cpus: bool,
    /// MAXPHYADDR.
    pub max_phys_bits: u8,
}

impl Default for PagingOptions {
    fn default() -> Self {
        PagingOptions {
            user_cpu: None,
            all_cpus: false,
            max_phys_bits: 52,
        }
    }
}

/// Everything `dumpconv convert` can be told.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Output format name; None = from the output file's extension.
    pub format: Option<String>,
    /// How to read the input.
    pub open: OpenOptions,
    /// Architecture, when the input does not say (raw images).
    pub arch: Option<Arch>,
    /// CPU states replacing the input's (`--cr3`/`--cpu-state`).
    pub cpus: Option<Vec<CpuState>>,
    /// VMCOREINFO to use when the input has none (`--vmcoreinfo FILE`).
    pub vmcoreinfo: Option<VmcoreInfo>,
    /// Physical window: `--begin`, `--length`.
    pub begin: Option<u64>,
    pub length: Option<u64>,
    /// `--paging`: build virtual mappings.
    pub paging: Option<PagingOptions>,
    /// Replace an existing output.
    pub force: bool,
    /// Writer options (`compress=zstd`, `level=3`, `threads=4`, ...).
    pub writer_options: BTreeMap<String, String>,
}

/// What a conversion did.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    pub input_format: &'static str,
    pub writer: String,
    /// RAM bytes written.
    pub memory_bytes: u64,
    /// Mapping runs (paging view).
    pub mappings: Option<usize>,
    pub walk: Option<WalkStats>,
    pub walk_time: Duration,
    pub total_time: Duration,
    /// Notes that were said to the user as warnings.
    pub warnings: Vec<String>,
}

/// Open an input with the options' reader settings.
pub fn open_input(path: &Path, opts: &ConvertOptions) -> Result<Dump> {
    dumpconv_formats::open(path, &opts.open)
}

/// The CPU states to use: the user's, else the input's.
pub fn effective_cpus(dump: &Dump, opts: &ConvertOptions) -> Vec<CpuState> {
    opts.cpus.clone().unwrap_or_else(|| dump.cpus.clone())
}

/// The VMCOREINFO to use: the input's, else the user's `--vmcoreinfo`.
pub fn effective_vmcoreinfo(dump: &Dump, opts: &ConvertOptions) -> Option<VmcoreInfo> {
    dump.vmcoreinfo.clone().or_else(|| opts.vmcoreinfo.clone())
}

/// Walk options for a dump: MAXPHYADDR, and the SME C-bit from VMCOREINFO cleared from
/// every table entry.
pub fn walk_options(vmcoreinfo: Option<&VmcoreInfo>, max_phys_bits: u8) -> WalkOptions {
    WalkOptions {
        max_phys_bits,
        clear_mask: vmcoreinfo.and_then(|v| v.sme_mask()).unwrap_or(0),
        ..WalkOptions::default()
    }
}

/// The RAM ranges a conversion writes: the dump's, clipped to `--begin`/`--length`.
pub fn selected_ranges(dump: &Dump, opts: &ConvertOptions) -> Result<Vec<PhysRange>> {
    let ram = dump.memory.ranges().to_vec();
    match (opts.begin, opts.length) {
        (None, None) => Ok(ram),
        (b, l) => {
            let start = b.unwrap_or(0);
            let window = PhysRange::with_len(start, l.unwrap_or(u64::MAX - start));
            let clipped = clip_ranges(&ram, window);
            if clipped.is_empty() {
                return Err(Error::invalid(format!(
                    "--begin {start:#x} --length {:#x} selects no RAM of {}",
                    window.len(),
                    dump.path.display()
                )));
            }
            Ok(normalize_ranges(clipped))
        }
    }
}

/// Build the plan a writer receives. Returns the plan and, with `--paging`, the walk
/// statistics.
pub fn build_plan(
    dump: &Dump,
    opts: &ConvertOptions,
    registry: &Registry,
    progress: &dyn Progress,
    report: &mut ConvertReport,
) -> Result<DumpPlan> {
    let arch = opts.arch.or(dump.arch).unwrap_or(Arch::X86_64);
    let cpus = effective_cpus(dump, opts);
    let vmcoreinfo = effective_vmcoreinfo(dump, opts);
    let ranges = selected_ranges(dump, opts)?;

    let mappings = match &opts.paging {
        None => None,
        Some(p) => {
            let t = Instant::now();
            let walker = registry.walker()?;
            let wopts = walk_options(vmcoreinfo.as_ref(), p.max_phys_bits);
            if !cpus.iter().any(dumpconv_x86::paging_enabled) {
                let msg = if cpus.is_empty() {
                    "--paging: the input has no CPU state (give --cr3 and --paging-mode, \
                     or --cpu-state); writing the physical view"
                        .to_string()
                } else {
                    "--paging: no CPU has paging enabled; writing the physical view".to_string()
                };
                progress.warn(&msg);
                report.warnings.push(msg);
                None
            } else {
                let policy = dumpconv_x86::ViewPolicy {
                    user_cpu: p.user_cpu,
                    all_cpus: p.all_cpus,
                };
                let (list, stats) = dumpconv_x86::build_view(
                    walker.as_ref(),
                    &cpus,
                    dump.memory.as_ref(),
                    &wopts,
                    policy,
                )?;
                report.walk_time = t.elapsed();
                if stats.leaves_outside_ram > 0 || stats.tables_outside_ram > 0 {
                    let msg = format!(
                        "--paging: skipped {} leaf pages and {} tables that point outside RAM",
                        stats.leaves_outside_ram, stats.tables_outside_ram
                    );
                    progress.warn(&msg);
                    report.warnings.push(msg);
                }
                report.walk = Some(stats);
                report.mappings = Some(list.len());
                Some(list)
            }
        }
    };

    let notes = dumpconv_formats::notes::plan_notes(&dump.notes, &cpus, vmcoreinfo.as_ref(), arch);
    let page_size = vmcoreinfo
        .as_ref()
        .and_then(|v| v.page_size())
        .filter(|p| p.is_power_of_two() && *p >= 4096)
        .unwrap_or(PAGE_SIZE);
    Ok(DumpPlan {
        arch,
        page_size,
        ranges,
        mappings,
        notes,
        cpus,
        vmcoreinfo,
        options: opts.writer_options.clone(),
    })
}

/// Choose the writer: `--format`, else the output's extension.
pub fn choose_writer(
    registry: &Registry,
    output: &Output,
    format: Option<&str>,
) -> Result<std::sync::Arc<dyn dumpconv_core::DumpWriter>> {
    if let Some(f) = format {
        return registry.writer(f);
    }
    match output {
        Output::Path(p) => registry.writer_for_path(p).ok_or_else(|| {
            Error::invalid(format!(
                "{}: cannot tell the output format from the name; give --format ({})",
                p.display(),
                registry.writer_names().join(", ")
            ))
        }),
        Output::Stdout => Err(Error::invalid(format!(
            "writing to stdout needs --format ({})",
            registry.writer_names().join(", ")
        ))),
    }
}

/// Convert `input` into `output`.
pub fn convert(
    input: &Path,
    output: &Output,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    convert_with(&Registry::builtin(), input, output, opts, progress)
}

/// [`convert`] with a given registry (run-time plugins).
pub fn convert_with(
    registry: &Registry,
    input: &Path,
    output: &Output,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    let start = Instant::now();
    let writer = choose_writer(registry, output, opts.format.as_deref())?;
    check_output(output, &[input], opts.force)?;
    let dump = open_input(input, opts)?;
    let mut report = ConvertReport {
        input_format: dump.format,
        writer: writer.name().to_string(),
        ..ConvertReport::default()
    };
    let plan = build_plan(&dump, opts, registry, progress, &mut report)?;
    report.memory_bytes = plan.total_bytes();
    let keep_partial = opts.writer_options.contains_key("keep-partial");
    write_output(output, opts.force, keep_partial, |sink| {
        writer.write(&plan, dump.memory.as_ref(), sink, progress)
    })?;
    progress.finish();
    report.total_time = start.elapsed();
    Ok(report)
}

/// Read `--cpu-state FILE`: a JSON array of CPU states, or the object `dumpconv info
/// --json` prints (its `cpus` field).
pub fn read_cpu_state_file(path: &Path) -> Result<Vec<CpuState>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::format(PathBuf::from(path), None, "CPU-state JSON", e.to_string()))?;
    let cpus = match value {
        serde_json::Value::Object(mut o) if o.contains_key("cpus") => {
            o.remove("cpus").unwrap_or_default()
        }
        other => other,
    };
    let mut cpus: Vec<CpuState> = serde_json::from_value(cpus)
        .map_err(|e| Error::format(PathBuf::from(path), None, "CPU-state JSON", e.to_string()))?;
    for (i, c) in cpus.iter_mut().enumerate() {
        c.index = i as u32;
    }
    Ok(cpus)
}
