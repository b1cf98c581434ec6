//! The conversion pipeline: open → (walk) → plan → write. Readers, walkers and writers
//! know nothing of each other; this module wires them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dumpconv_core::memory::{clip_ranges, normalize_ranges};
use dumpconv_core::{
    build_view, Arch, ArchWalker, CpuState, Dump, DumpPlan, DumpWriter, Error, PhysRange, Progress,
    Regime, Result, ViewPolicy, VmcoreInfo, VmcoreInfoFile, WalkOptions, WalkStats,
};
use dumpconv_formats::OpenOptions;

use crate::compress::{NamedCodec, StreamCodec, STREAM_CODEC_NAMES, ZSTD_DEFAULT_LEVEL};
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
    /// `--paging-fallback`: when no page-table root is found, or the one found fails its
    /// checks or maps nothing, write the physical view with a warning instead of failing.
    pub fallback: bool,
}

impl Default for PagingOptions {
    fn default() -> Self {
        PagingOptions {
            user_cpu: None,
            all_cpus: false,
            max_phys_bits: 52,
            fallback: false,
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
    /// CPU states replacing the input's (`--cpu-state`).
    pub cpus: Option<Vec<CpuState>>,
    /// A page-table root given by hand (`--cr3/--root ADDR --paging-mode NAME`), which
    /// replaces the input's CPUs: resolved by the registry's walkers (plugins included)
    /// in [`effective_cpus`].
    pub root: Option<RootRequest>,
    /// `--kernel crashed|running|N`: the kernel whose page tables `--paging` walks.
    pub kernel: Option<crate::roots::KernelPick>,
    /// `--root cpu|vmcoreinfo|scan`: where the root comes from (an address is
    /// [`ConvertOptions::root`]).
    pub root_source: Option<crate::roots::RootSource>,
    /// VMCOREINFO to use when the input has none (`--vmcoreinfo FILE`, checked).
    pub vmcoreinfo: Option<VmcoreInfoFile>,
    /// Physical window: `--begin`, `--length`.
    pub begin: Option<u64>,
    pub length: Option<u64>,
    /// `--paging`: build virtual mappings.
    pub paging: Option<PagingOptions>,
    /// Replace an existing output.
    pub force: bool,
    /// Writer options (`compress=zstd`, `level=3`, `threads=4`, ...).
    pub writer_options: BTreeMap<String, String>,
    /// The other files of a kdump split set whose first file is the input (empty: the
    /// input is one file).
    pub parts: Vec<PathBuf>,
    /// Page filtering (`--dump-level`, `--exclude`, `--exclude-zero`).
    pub filter: Option<crate::filter::FilterOptions>,
}

/// `--cr3 ADDR --paging-mode NAME` (and `--arch`), as given: the walker that knows the
/// mode builds the CPU ([`Registry::cpu_from_root`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRequest {
    pub arch: Option<Arch>,
    pub mode: String,
    pub root: u64,
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
    /// The root `--paging` walked ("root 4level 0x1a0a000 from vmcoreinfo (kernel 0)").
    pub root: Option<String>,
    /// The kernels found (one line each), with `--paging`.
    pub kernels: Vec<String>,
    /// The walker used with `--paging`: name and origin ("x86 (built-in)").
    pub walker: Option<String>,
    pub walk_time: Duration,
    pub total_time: Duration,
    /// Notes that were said to the user as warnings.
    pub warnings: Vec<String>,
    /// What page filtering did.
    pub filter: Option<crate::filter::FilterReport>,
    /// BLAKE3 of the output's bytes (hex, as `b3sum` prints it), from
    /// [`convert_with_digest`]; `None` from [`convert`].
    pub output_blake3: Option<String>,
}

/// Open an input with the options' reader settings (with `opts.parts`, the files of a
/// split set together).
pub fn open_input(path: &Path, opts: &ConvertOptions) -> Result<Dump> {
    if opts.parts.is_empty() {
        dumpconv_formats::open(path, &opts.open)
    } else {
        crate::split::open_split_set(path, &opts.parts)
    }
}

/// The architecture of the dump: `--arch`, else what the input says, else
/// [`Arch::DEFAULT`].
pub fn effective_arch(dump: &Dump, opts: &ConvertOptions) -> Arch {
    opts.arch.or(dump.arch).unwrap_or(Arch::DEFAULT)
}

/// The CPU states to use: the one built from a root given by hand (by the registry's
/// walker for its mode), else the user's `--cpu-state`, else the input's; a CPU that
/// does not say its architecture gets the dump's ([`effective_arch`]).
pub fn effective_cpus(
    dump: &Dump,
    opts: &ConvertOptions,
    registry: &Registry,
) -> Result<Vec<CpuState>> {
    let arch = effective_arch(dump, opts);
    let mut cpus = match &opts.root {
        Some(r) => vec![registry.cpu_from_root(r.arch, &r.mode, r.root)?],
        None => opts.cpus.clone().unwrap_or_else(|| dump.cpus.clone()),
    };
    for c in &mut cpus {
        c.arch.get_or_insert(arch);
    }
    Ok(cpus)
}

/// The VMCOREINFO to use: the input's, else the user's `--vmcoreinfo` (whose "ADDR
/// SIZE" form is read from the dump's memory here).
pub fn effective_vmcoreinfo(dump: &Dump, opts: &ConvertOptions) -> Result<Option<VmcoreInfo>> {
    if let Some(v) = &dump.vmcoreinfo {
        return Ok(Some(v.clone()));
    }
    opts.vmcoreinfo
        .as_ref()
        .map(|f| f.resolve(dump.memory.as_ref(), &dump.path))
        .transpose()
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
    let cpus = effective_cpus(dump, opts, registry)?;
    let mut vmcoreinfo = effective_vmcoreinfo(dump, opts)?;
    let mut arch = effective_arch(dump, opts);
    let ranges = selected_ranges(dump, opts)?;

    let mappings = match &opts.paging {
        None => None,
        Some(p) => {
            let t = Instant::now();
            let kernels = crate::roots::find_kernels(
                dump,
                opts,
                registry,
                &cpus,
                crate::roots::wants_ram_scan(dump, opts),
            )?;
            for r in &kernels.rejected {
                progress.warn(r);
                report.warnings.push(r.clone());
            }
            let mut warnings = Vec::new();
            let choice =
                crate::roots::choose_root(dump, opts, registry, &kernels, &cpus, &mut warnings);
            for w in &warnings {
                progress.warn(w);
                report.warnings.push(w.clone());
            }
            let choice = choice?;
            report.kernels = kernels.list.iter().map(|k| k.describe()).collect();
            if let Some(k) = choice
                .as_ref()
                .and_then(|c| c.kernel)
                .and_then(|i| kernels.list.get(i))
            {
                // The chosen kernel's VMCOREINFO goes with the output (a raw input's found
                // in RAM), and its architecture when the input does not say one.
                if opts.arch.is_none() && dump.arch.is_none() {
                    arch = k.arch.unwrap_or(arch);
                }
                if dump.vmcoreinfo.is_none() {
                    vmcoreinfo = Some(k.info.clone());
                }
            } else if let Some(c) = choice.as_ref().and_then(|c| c.cpus.first()) {
                if opts.arch.is_none() && dump.arch.is_none() {
                    arch = c.arch.unwrap_or(arch);
                }
            }
            match choice {
                None => None,
                Some(choice) => {
                    report.root = Some(choice.describe());
                    let (walker, origin) =
                        registry.walker_for_cpus(&choice.cpus, p.user_cpu, arch)?;
                    report.walker = Some(format!("{} ({})", walker.name(), origin.describe()));
                    let roots = choice
                        .cpus
                        .first()
                        .map(|c| describe_roots(walker.as_ref(), c, &WalkOptions::default()))
                        .unwrap_or_default();
                    let cpu_paging = cpus.iter().any(|c| walker.paging_enabled(c));
                    let msg = match choice.source {
                        "vmcoreinfo" => Some(format!(
                            "--paging: {}; using the kernel's page-table root from VMCOREINFO \
                             ({roots}; {})",
                            if cpus.is_empty() {
                                "the input has no CPU state"
                            } else if !cpu_paging {
                                "no CPU has paging enabled"
                            } else {
                                "no CPU runs the chosen kernel"
                            },
                            choice.describe()
                        )),
                        "cpu" if choice.cpus.len() != cpus.len() => Some(format!(
                            "--paging: walking the CPUs {} that run the chosen kernel ({})",
                            choice
                                .cpus
                                .iter()
                                .map(|c| c.index.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            choice.describe()
                        )),
                        _ => None,
                    };
                    if let Some(msg) = msg {
                        progress.warn(&msg);
                        report.warnings.push(msg);
                    }
                    let wopts = walk_options(vmcoreinfo.as_ref(), p.max_phys_bits);
                    let policy = ViewPolicy {
                        user_cpu: p
                            .user_cpu
                            .filter(|u| choice.cpus.iter().any(|c| c.index == *u)),
                        all_cpus: p.all_cpus,
                    };
                    let (list, stats) = build_view(
                        walker.as_ref(),
                        &choice.cpus,
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
                    if list.is_empty() {
                        let msg = format!(
                            "{}: the page tables ({}) map nothing in RAM",
                            dump.path.display(),
                            choice.describe()
                        );
                        if !p.fallback {
                            return Err(Error::format(
                                dump.path.clone(),
                                None,
                                "page-table root",
                                format!(
                                    "the page tables ({}) map nothing in RAM (give --root ADDR \
                                     --paging-mode MODE, or --paging-fallback to write the \
                                     physical view)",
                                    choice.describe()
                                ),
                            ));
                        }
                        let msg = format!("{msg}; --paging-fallback: writing the physical view");
                        progress.warn(&msg);
                        report.warnings.push(msg);
                        report.walk = Some(stats);
                        None
                    } else {
                        report.walk = Some(stats);
                        report.mappings = Some(list.len());
                        Some(list)
                    }
                }
            }
        }
    };

    // Page filtering reads `struct page` through VMCOREINFO: an input without one (raw,
    // LiME, AVML) gets the kernel's own copy found in RAM, as `--paging` does, and the
    // output carries it.
    let filter_needs_vmcoreinfo = opts
        .filter
        .as_ref()
        .is_some_and(|f| f.level.needs_struct_page());
    if vmcoreinfo.is_none() && mappings.is_none() && filter_needs_vmcoreinfo {
        let kernels = crate::roots::find_kernels(dump, opts, registry, &cpus, true)?;
        let mut warnings = Vec::new();
        let picked = crate::roots::pick_kernel(dump, &kernels, opts.kernel, &mut warnings)?;
        for w in &warnings {
            progress.warn(w);
            report.warnings.push(w.clone());
        }
        if let Some(k) = picked {
            if opts.arch.is_none() && dump.arch.is_none() {
                arch = k.arch.unwrap_or(arch);
            }
            let msg = format!(
                "page filtering: the input has no VMCOREINFO; using {}",
                k.describe()
            );
            progress.warn(&msg);
            report.warnings.push(msg);
            vmcoreinfo = Some(k.info.clone());
        }
    }

    let notes = dumpconv_formats::notes::plan_notes(&dump.notes, &cpus, vmcoreinfo.as_ref(), arch);
    let page_size = vmcoreinfo
        .as_ref()
        .and_then(|v| v.page_size())
        .filter(|p| p.is_power_of_two() && *p >= 4096)
        .unwrap_or_else(|| arch.page_size());
    Ok(DumpPlan {
        filter: None,
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

/// "4level paging, CR3 0x1000": a CPU's mode and roots, as its walker describes them.
pub fn describe_roots(w: &dyn ArchWalker, cpu: &CpuState, opts: &WalkOptions) -> String {
    match w.regime(cpu, opts) {
        Ok(Regime::Paging { mode, spaces }) => {
            let roots: Vec<String> = spaces
                .iter()
                .map(|s| format!("{} {:#x}", s.root_name, s.root))
                .collect();
            format!("{mode} paging, {}", roots.join(", "))
        }
        _ => format!("{} paging", w.mode_of(cpu).as_deref().unwrap_or("unknown")),
    }
}

/// Choose the writer: `--format`, else the output's extension. A `.zst`/`.lz4` name is
/// looked through (`ram.raw.zst` → raw); see [`choose_output`] for the compression.
pub fn choose_writer(
    registry: &Registry,
    output: &Output,
    format: Option<&str>,
) -> Result<Arc<dyn DumpWriter>> {
    if let Some(f) = format {
        return registry.writer(f);
    }
    match output {
        Output::Path(p) => match NamedCodec::from_path(p) {
            // `X.zst`: the format from X's extension; a bare `ram.zst` is a raw image.
            Some((_, inner)) => match registry.writer_for_path(&inner) {
                Some(w) => Ok(w),
                None => registry.writer("raw"),
            },
            None => registry.writer_for_path(p).ok_or_else(|| {
                Error::invalid(format!(
                    "{}: cannot tell the output format from the name; give --format ({}), \
                     optionally with .zst or .lz4 after the format's extension",
                    p.display(),
                    registry.writer_names().join(", ")
                ))
            }),
        },
        Output::Stdout => Err(Error::invalid(format!(
            "writing to stdout needs --format ({})",
            registry.writer_names().join(", ")
        ))),
    }
}

/// The writer for an output, how its bytes are wrapped, and the options it receives.
#[derive(Clone)]
pub struct OutputChoice {
    pub writer: Arc<dyn DumpWriter>,
    /// Whole-output compression, from a `.zst`/`.lz4` name or `--compress zstd|lz4`.
    pub codec: Option<StreamCodec>,
    /// The plan's writer options: without `compress`, `level` and `threads` when they
    /// are the stream's.
    pub writer_options: BTreeMap<String, String>,
}

/// Whole-output compression options, removed from what the writer receives.
pub const STREAM_KEYS: [&str; 3] = ["compress", "level", "threads"];

/// The writer options `writer` receives from `options`: all of them when it compresses
/// itself, else all but the whole-output compression's. Checked against what the
/// writer declares (the same check for `convert`, a batch and a manifest line).
pub fn writer_receives(
    writer: &dyn DumpWriter,
    options: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut receives = options.clone();
    if !writer.compresses_itself() {
        for k in STREAM_KEYS {
            receives.remove(k);
        }
    }
    dumpconv_core::check_writer_options(writer, receives.keys())?;
    Ok(receives)
}

/// Choose the writer and the output compression. `--compress`, `--level` and
/// `--threads` belong to kdump's per-page compression when the writer compresses
/// itself, and to the whole output stream otherwise.
pub fn choose_output(
    registry: &Registry,
    output: &Output,
    opts: &ConvertOptions,
) -> Result<OutputChoice> {
    let writer = choose_writer(registry, output, opts.format.as_deref())?;
    let named = match output {
        Output::Path(p) => NamedCodec::from_path(p).map(|(c, _)| (c, p)),
        Output::Stdout => None,
    };
    let wopts = &opts.writer_options;
    let writer_options = writer_receives(writer.as_ref(), wopts)?;
    if writer.compresses_itself() {
        if let Some((c, p)) = named {
            return Err(Error::invalid(format!(
                "{}: {} output is compressed by its format and is not wrapped in .{}; \
                 name it .{} (kdump: choose the page codec with --compress)",
                p.display(),
                writer.name(),
                c.extension(),
                writer
                    .extensions()
                    .first()
                    .copied()
                    .unwrap_or(writer.name()),
            )));
        }
        return Ok(OutputChoice {
            writer,
            codec: None,
            writer_options,
        });
    }

    let asked = match wopts.get("compress") {
        None => None,
        Some(v) => Some(NamedCodec::from_option(v).ok_or_else(|| {
            Error::invalid(format!(
                "--compress {v:?} for {} output: expected {STREAM_CODEC_NAMES} (the whole \
                 output is compressed; zlib, lzo and snappy are kdump page codecs)",
                writer.name()
            ))
        })?),
    };
    let codec = match (named, asked) {
        (Some((n, _)), Some(Some(a))) if n == a => Some(n),
        (Some((n, p)), Some(a)) => {
            return Err(Error::invalid(format!(
                "{}: the name says {} but --compress says {}",
                p.display(),
                n.name(),
                a.map_or("none", NamedCodec::name)
            )))
        }
        (Some((n, _)), None) => Some(n),
        (None, a) => a.flatten(),
    };
    let level = match wopts.get("level") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<i32>()
                .map_err(|_| Error::invalid(format!("--level {v:?}: not an integer")))?,
        ),
    };
    let threads = match wopts.get("threads").map(|v| v.trim()) {
        None | Some("" | "0" | "auto") => None,
        Some(t) => Some(
            t.parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    Error::invalid(format!("--threads {t:?}: expected 1..256 or auto"))
                })?,
        ),
    };
    let codec = match codec {
        None => {
            if level.is_some() || threads.is_some() {
                return Err(Error::invalid(format!(
                    "--level and --threads apply to compressed output; {} output is not \
                     compressed (add --compress zstd or lz4, or name it .{}.zst)",
                    writer.name(),
                    writer
                        .extensions()
                        .first()
                        .copied()
                        .unwrap_or(writer.name()),
                )));
            }
            None
        }
        Some(NamedCodec::Lz4) => {
            if level.is_some() {
                return Err(Error::invalid(
                    "--level: lz4 output has no levels (zstd has)",
                ));
            }
            if threads.is_some_and(|t| t > 1) {
                return Err(Error::invalid(
                    "--threads: lz4 output is compressed on one thread (zstd uses several)",
                ));
            }
            Some(StreamCodec::Lz4)
        }
        Some(NamedCodec::Zstd) => {
            let level = level.unwrap_or(ZSTD_DEFAULT_LEVEL);
            let range = zstd::compression_level_range();
            if !range.contains(&level) {
                return Err(Error::invalid(format!(
                    "--level {level}: zstd levels are {} to {}",
                    range.start(),
                    range.end()
                )));
            }
            let threads = threads.unwrap_or_else(dumpconv_core::numbers::default_threads);
            Some(StreamCodec::Zstd { level, threads })
        }
    };
    Ok(OutputChoice {
        writer,
        codec,
        writer_options,
    })
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
    convert_impl(registry, input, output, opts, progress, false)
}

/// [`convert_with`], and the BLAKE3 of the output in [`ConvertReport::output_blake3`]:
/// hashed while it is written when the writer only appends (raw, ELF, LiME, AVML, any
/// whole-output-compressed output), else by reading the finished file back (kdump,
/// whose header and bitmaps are written last). See [`crate::digest`].
pub fn convert_with_digest(
    registry: &Registry,
    input: &Path,
    output: &Output,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    convert_impl(registry, input, output, opts, progress, true)
}

fn convert_impl(
    registry: &Registry,
    input: &Path,
    output: &Output,
    opts: &ConvertOptions,
    progress: &dyn Progress,
    digest: bool,
) -> Result<ConvertReport> {
    let start = Instant::now();
    let choice = choose_output(registry, output, opts)?;
    let writer = choice.writer.clone();
    let mut inputs = vec![input];
    inputs.extend(opts.parts.iter().map(PathBuf::as_path));
    check_output(output, &inputs, opts.force)?;
    let dump = open_input(input, opts)?;
    crate::split::check_complete(&dump)?;
    let mut report = ConvertReport {
        input_format: dump.format,
        writer: writer.name().to_string(),
        ..ConvertReport::default()
    };
    // The reader's warnings (an incomplete dump, a cut stream, a CPU note it could not
    // use) are said on conversion too, naming the input: the output may look complete.
    for (k, v) in &dump.details {
        if k == "warning" {
            let path = dump.path.display().to_string();
            let msg = if v.contains(&path) {
                v.clone()
            } else {
                format!("{path}: {v}")
            };
            progress.warn(&msg);
            report.warnings.push(msg);
        }
    }
    let mut plan = build_plan(&dump, opts, registry, progress, &mut report)
        .map_err(|e| name_the_input(e, &dump))?;
    plan.options = choice.writer_options;
    if let Some(f) = &opts.filter {
        report.filter = crate::filter::apply_filter(
            input,
            f,
            registry,
            &mut plan,
            dump.memory.as_ref(),
            writer.as_ref(),
            progress,
        )?;
        if let Some(f) = &report.filter {
            report.warnings.extend(f.warnings.iter().cloned());
        }
    }
    report.memory_bytes = plan.total_bytes();
    let keep_partial = opts.writer_options.contains_key("keep-partial");
    report.output_blake3 = write_output(
        output,
        opts.force,
        keep_partial,
        choice.codec,
        digest,
        |sink| writer.write(&plan, dump.memory.as_ref(), sink, progress),
    )
    .map_err(|e| name_the_input(e, &dump))?;
    progress.finish();
    report.total_time = start.elapsed();
    Ok(report)
}

/// Read `--cpu-state FILE`: a JSON array of CPU states, or the object `dumpconv info
/// --json` prints (its `cpus` field).
pub fn read_cpu_state_file(path: &Path) -> Result<Vec<CpuState>> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Errors give the byte offset and line of the problem: parse into a Value first
    // (syntax), then decode the same bytes again straight into the typed shape, so a
    // wrong type is reported where it is, not just as "invalid type".
    let json_err = |e: serde_json::Error| {
        let offset = json_offset(&text, e.line(), e.column());
        Error::format(
            PathBuf::from(path),
            (e.line() > 0).then_some(offset),
            "CPU-state JSON",
            e.to_string(),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(json_err)?;
    #[derive(serde::Deserialize)]
    struct Wrapped {
        cpus: Vec<CpuState>,
    }
    let mut cpus: Vec<CpuState> = match value {
        serde_json::Value::Object(o) if o.contains_key("cpus") => {
            let mut de = serde_json::Deserializer::from_slice(&text);
            // Unknown top-level keys (written by `info --json`) are ignored.
            let w: Wrapped = serde::Deserialize::deserialize(&mut de).map_err(json_err)?;
            w.cpus
        }
        _ => serde_json::from_slice(&text).map_err(json_err)?,
    };
    for (i, c) in cpus.iter_mut().enumerate() {
        c.index = i as u32;
    }
    Ok(cpus)
}

/// The byte offset of serde_json's 1-based `line` and `column` in `text`.
fn json_offset(text: &[u8], line: usize, column: usize) -> u64 {
    let mut at = 0usize;
    for _ in 1..line {
        match text[at..].iter().position(|&b| b == b'\n') {
            Some(p) => at += p + 1,
            None => break,
        }
    }
    (at + column.saturating_sub(1)).min(text.len()) as u64
}

/// A read of the dump's memory that failed without naming a file (a hole, a page the
/// dump lost, a page-table walk that gave up) names the input: "physical page 0x1000 is
/// lost" alone does not say where.
fn name_the_input(e: Error, dump: &dumpconv_core::Dump) -> Error {
    match e {
        Error::Hole { .. } | Error::PageUnavailable { .. } => Error::format(
            dump.path.clone(),
            None,
            dump.format,
            format!("reading its memory: {e}"),
        ),
        Error::Walk { .. } => Error::format(dump.path.clone(), None, dump.format, e.to_string()),
        // The writer refusing what the input's geometry asks (kdump bitmaps for RAM
        // spread over a huge address space): say which input.
        Error::Invalid(msg) => Error::Invalid(format!("{}: {msg}", dump.path.display())),
        e => e,
    }
}
