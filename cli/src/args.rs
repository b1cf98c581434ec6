//! Command-line arguments. `dumpconv INPUT -o OUTPUT` is short for
//! `dumpconv convert INPUT -o OUTPUT`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dumpconv::numbers::parse_u64;
use dumpconv::{ConvertOptions, PagingOptions};
use dumpconv_core::{Arch, CpuState, Error, VmcoreInfo};
use dumpconv_formats::OpenOptions;

const AFTER_HELP: &str = "\
Examples:
  dumpconv guest.raw -o guest.elf                  raw RAM image -> ELF core (physical view)
  dumpconv --paging qemu.elf -o gdb.elf            add virtual mappings for gdb
  dumpconv guest.raw --cr3 0x1c0a000 --paging-mode 4level --paging -o out.elf
  dumpconv vmcore.elf -o vmcore.kdump --compress zstd   kdump, zstd-compressed pages
  dumpconv qemu.elf -o guest.lime                  LiME (Volatility, AVML), one header per range
  dumpconv qemu.elf -o guest.avml                  AVML's compressed LiME (avml convert reads it)
  dumpconv qemu.elf -o ram.raw.zst                 raw image in one zstd stream (zstd -d reads it)
  dumpconv qemu.elf -o guest.elf.lz4               any format but kdump: add .zst or .lz4
  dumpconv qemu.elf --format raw --compress zstd -o - | ssh host 'zstd -d > ram.raw'
  dumpconv vmcore.elf --format kdump -o - | ssh host 'cat > vmcore.flat'
  dumpconv info --json qemu.elf > state.json       CPU state, editable, reusable with --cpu-state

Input formats are detected by content: ELF cores (QEMU dump-guest-memory, virsh dump
--memory-only, /proc/vmcore, makedumpfile -E), kdump-compressed (seekable or flattened),
LiME (lime.ko format=lime, avml convert --format lime), AVML (avml --compress, snappy
per range), raw images (file offset = physical address; give --ram-map to declare
holes; LiME format=padded is one).

Any of these may be wrapped in gzip, zlib, lz4, zstd or xz (one level), and INPUT may
be `-` (standard input) or a named pipe. Such inputs are first decompressed/copied as a
stream into an unlinked temporary file in --spill-dir ($DUMPCONV_SPILL_DIR, else
$TMPDIR): memory stays bounded, but that takes disk space up to the decompressed size
(all-zero pages are left sparse and cost nothing). --max-spill SIZE refuses an input
that decompresses to more than SIZE (no limit by default).

Plugins: walkers and writers can be added at run time, without rebuilding dumpconv, as
shared libraries (C ABI: core/include/dumpconv_plugin.h; Rust: export_plugin!). They are
loaded from --plugin PATH, from every *.so in the directories of $DUMPCONV_PLUGIN_PATH
(colon-separated), and from $XDG_DATA_HOME/dumpconv/plugins (default
~/.local/share/dumpconv/plugins). `dumpconv plugins` lists what is available. A plugin
may replace a built-in of the same name only with --plugin-override. See docs/plugins.md.

Output formats: elf, kdump, raw, lime, avml (from the name or --format). raw, elf and lime
can be compressed as a whole: add .zst or .lz4 to the name (ram.raw.zst, guest.lime.lz4;
a bare ram.zst is raw) or give --compress zstd|lz4; --level and --threads tune zstd. kdump
compresses each page instead (--compress zlib|lzo|snappy|zstd|none) and avml each 16 MiB
block (snappy, as `avml --compress`), so .kdump.zst and .avml.zst are refused.

Exit codes: 0 success, 1 bad or unreadable input, 2 bad usage, 3 output could not be
written (nothing is left behind), 4 plugin error.";

#[derive(Parser, Debug)]
#[command(
    name = "dumpconv",
    version,
    about = "Convert memory dumps between formats: raw, ELF core, kdump-compressed",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub plugins: PluginArgs,
}

/// Plugin libraries; global, so they work with every subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct PluginArgs {
    /// Load a walker or writer plugin (a shared library); repeatable. A library that
    /// fails to load is an error (exit 4). See docs/plugins.md.
    #[arg(
        long = "plugin",
        value_name = "PATH",
        global = true,
        help_heading = "Plugins"
    )]
    pub paths: Vec<PathBuf>,

    /// Let a plugin replace the built-in walker or writer of the same name.
    #[arg(long, global = true, help_heading = "Plugins")]
    pub plugin_override: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert a dump into another format (the default command).
    Convert(ConvertArgs),
    /// Describe a dump: format, RAM ranges, CPUs, notes, VMCOREINFO.
    Info(InfoArgs),
    /// Translate virtual addresses through a CPU's page tables, showing every level.
    Translate(TranslateArgs),
    /// List walkers and writers: built-in and loaded plugins (kind, name, version,
    /// origin, ABI version), and plugin libraries that failed to load.
    Plugins(PluginsArgs),
    /// Convert many dumps at once: directories, patterns or a manifest; resumable,
    /// splittable into shards for job arrays (see docs/batch.md).
    #[command(after_help = BATCH_AFTER_HELP)]
    Batch(BatchArgs),
}

const SUBCOMMANDS: &[&str] = &["convert", "info", "translate", "plugins", "batch", "help"];

/// Insert `convert` when the first argument (after the global plugin options) is not a
/// subcommand or a top-level flag, so `dumpconv IN -o OUT` and
/// `dumpconv --plugin LIB IN -o OUT` work.
pub fn with_default_subcommand(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut v: Vec<OsString> = args.collect();
    let mut i = 1;
    while let Some(a) = v.get(i).and_then(|a| a.to_str()) {
        match a {
            "--plugin" => i += 2,
            "--plugin-override" => i += 1,
            _ if a.starts_with("--plugin=") => i += 1,
            _ => break,
        }
    }
    let first = v.get(i).and_then(|a| a.to_str());
    let top_level_flag = matches!(first, Some("-h" | "--help" | "-V" | "--version"));
    let subcommand = first.is_some_and(|f| SUBCOMMANDS.contains(&f));
    if v.len() > 1 && !subcommand && !top_level_flag {
        v.insert(1, OsString::from("convert"));
    }
    v
}

/// Take the plugin options out of the arguments, wherever they are (before a `--`).
///
/// clap keeps only the occurrences of a global option given after the subcommand, so
/// `dumpconv --plugin a.so convert --plugin b.so` would lose `a.so`; collecting them here
/// keeps every one, in order. They stay declared in [`PluginArgs`] for `--help`.
pub fn take_plugin_args(args: Vec<OsString>) -> (Vec<OsString>, PluginArgs) {
    let mut rest = Vec::with_capacity(args.len());
    let mut p = PluginArgs::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--") => {
                rest.push(a);
                rest.extend(it.by_ref());
            }
            Some("--plugin") => match it.next() {
                Some(v) => p.paths.push(PathBuf::from(v)),
                // Let clap report the missing value.
                None => rest.push(a),
            },
            Some("--plugin-override") => p.plugin_override = true,
            Some(s) if s.starts_with("--plugin=") => p.paths.push(PathBuf::from(&s[9..])),
            _ => rest.push(a),
        }
    }
    (rest, p)
}

#[derive(Args, Debug)]
pub struct PluginsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_num(s: &str) -> Result<u64, String> {
    parse_u64(s)
}

/// `--arch NAME`: a name or alias of the architecture table (x86_64, i386, aarch64,
/// ...), or `em<N>/<bits>`.
fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse()
}

/// `--paging-mode NAME`: a mode name some walker accepts (checked when the CPU state is
/// built, by the walkers themselves).
fn parse_mode_name(s: &str) -> Result<String, String> {
    let m = s.trim();
    if m.is_empty() || m.len() > 64 {
        return Err("expected a paging-mode name (32bit, pae, 4level, 5level, ...)".into());
    }
    Ok(m.to_string())
}

/// How to read the input: format, RAM map, and CPU state for inputs that lack it.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Input dump (format detected by content); `-` reads standard input.
    pub input: PathBuf,

    /// Read the input as this format instead of detecting it (raw).
    #[arg(long, value_name = "FORMAT", help_heading = "Input")]
    pub input_format: Option<String>,

    /// RAM ranges of a raw image, inclusive: `0-0x9ffff,0x100000-0xbfffffff`, or a file
    /// holding a copy of /proc/iomem ("System RAM" lines are used).
    #[arg(long, value_name = "RANGES|FILE", help_heading = "Input")]
    pub ram_map: Option<String>,

    /// Directory for the temporary decompressed copy of a compressed or streamed input
    /// (default $DUMPCONV_SPILL_DIR, else $TMPDIR); needs up to the decompressed size.
    #[arg(long, value_name = "DIR", help_heading = "Input")]
    pub spill_dir: Option<PathBuf>,

    /// Refuse a compressed or streamed input once its decompressed size passes SIZE
    /// (16M, 1G, 4T...; all-zero pages included, though they cost no disk). Default
    /// $DUMPCONV_MAX_SPILL, else no limit; a guard against decompression bombs.
    #[arg(long, value_parser = parse_num, value_name = "SIZE", help_heading = "Input")]
    pub max_spill: Option<u64>,

    /// Architecture of a raw image (ELF and kdump inputs say it themselves): x86_64,
    /// i386, aarch64, ... (the architecture table's names).
    #[arg(long, value_parser = parse_arch, value_name = "ARCH", help_heading = "Input")]
    pub arch: Option<Arch>,

    /// Page-table root for inputs without CPU state (with --paging-mode).
    #[arg(long, value_parser = parse_num, value_name = "ADDR", help_heading = "CPU state")]
    pub cr3: Option<u64>,

    /// Paging mode that goes with --cr3: a mode name of a walker (x86: 32bit, pae,
    /// 4level, 5level).
    #[arg(
        long,
        value_parser = parse_mode_name,
        value_name = "MODE",
        requires = "cr3",
        help_heading = "CPU state"
    )]
    pub paging_mode: Option<String>,

    /// CPU states as JSON: an array of CPU objects, or the output of `dumpconv info
    /// --json` (its "cpus"). Registers are hex strings ("0x1000") or numbers.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "cr3",
        help_heading = "CPU state"
    )]
    pub cpu_state: Option<PathBuf>,

    /// VMCOREINFO text (KEY=value lines) to use when the input has none.
    #[arg(long, value_name = "FILE", help_heading = "Input")]
    pub vmcoreinfo: Option<PathBuf>,
}

impl InputArgs {
    pub fn open_options(&self) -> Result<OpenOptions, Error> {
        let ram_map = match &self.ram_map {
            None => None,
            Some(s) => {
                let p = std::path::Path::new(s);
                let text = if p.is_file() {
                    std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?
                } else {
                    s.clone()
                };
                Some(dumpconv_formats::raw::parse_ram_map(&text)?)
            }
        };
        Ok(OpenOptions {
            input_format: self.input_format.clone(),
            ram_map,
            spill_dir: self.spill_dir.clone(),
            max_spill: self.max_spill,
        })
    }

    pub fn cpus(&self) -> Result<Option<Vec<CpuState>>, Error> {
        if let Some(cr3) = self.cr3 {
            let mode = self.paging_mode.as_deref().ok_or_else(|| {
                Error::invalid("--cr3 needs --paging-mode (32bit, pae, 4level or 5level)")
            })?;
            let cpu = dumpconv::Registry::builtin().cpu_from_root(self.arch(), mode, cr3)?;
            return Ok(Some(vec![cpu]));
        }
        match &self.cpu_state {
            Some(p) => dumpconv::pipeline::read_cpu_state_file(p).map(Some),
            None => Ok(None),
        }
    }

    pub fn vmcoreinfo(&self) -> Result<Option<VmcoreInfo>, Error> {
        self.vmcoreinfo
            .as_ref()
            .map(|p| {
                std::fs::read(p)
                    .map(|b| VmcoreInfo::parse(&b))
                    .map_err(|e| Error::io(p, e))
            })
            .transpose()
    }

    pub fn arch(&self) -> Option<Arch> {
        self.arch
    }

    /// The options shared by every command that opens an input.
    pub fn base_options(&self) -> Result<ConvertOptions, Error> {
        Ok(ConvertOptions {
            open: self.open_options()?,
            arch: self.arch(),
            cpus: self.cpus()?,
            vmcoreinfo: self.vmcoreinfo()?,
            ..ConvertOptions::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input_args: InputArgs,

    /// Output file, or `-` for standard output (a stream: kdump becomes the flattened
    /// format). Written to a temporary file and renamed when complete.
    #[arg(short, long, value_name = "FILE")]
    pub output: String,

    /// Output format: elf, kdump, raw, lime, avml; default from the output name (.elf
    /// .kdump .raw .lime .avml ..., also under a final .zst or .lz4; a bare X.zst is raw).
    #[arg(short, long, value_name = "FORMAT")]
    pub format: Option<String>,

    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,

    /// First physical address to write.
    #[arg(long, value_parser = parse_num, value_name = "ADDR", help_heading = "Selection")]
    pub begin: Option<u64>,

    /// Bytes of physical address space to write from --begin.
    #[arg(long, value_parser = parse_num, value_name = "LEN", help_heading = "Selection")]
    pub length: Option<u64>,

    /// Walk the guest's page tables and write virtual mappings (ELF p_vaddr), so gdb
    /// can read kernel virtual addresses; all RAM is still written.
    #[arg(long, help_heading = "Paging")]
    pub paging: bool,

    /// CPU whose user-space mappings are kept (kernel mappings come from all CPUs).
    #[arg(long, value_name = "N", help_heading = "Paging")]
    pub cpu: Option<u32>,

    /// `all`: keep user mappings of every CPU, as QEMU does (may contradict each other).
    #[arg(
        long,
        value_name = "all|one",
        default_value = "one",
        help_heading = "Paging"
    )]
    pub paging_cpus: String,

    /// MAXPHYADDR: physical address bits in page-table entries.
    #[arg(long, default_value_t = 52, value_parser = clap::value_parser!(u8).range(32..=52), help_heading = "Paging")]
    pub max_phys_bits: u8,

    /// kdump: page codec, zlib (default), lzo, snappy, zstd or none (Debian's
    /// makedumpfile 1.7.2 reads only zlib and lzo; crash reads all four). raw, elf,
    /// lime: compress the whole output as one stream, zstd or lz4 (what `zstd -d` or
    /// `lz4 -d` reads), or none; an output named X.zst or X.lz4 implies it.
    #[arg(long, value_name = "CODEC", help_heading = "Compression")]
    pub compress: Option<String>,

    /// Compression level: zlib 0-9, zstd 1-22 (whole-output zstd default 3); lz4,
    /// lzo and snappy have none.
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Compression"
    )]
    pub level: Option<i32>,

    /// Compression threads (default: all cores), for kdump pages and zstd output. A
    /// kdump file is identical for any count.
    #[arg(long, value_name = "N", help_heading = "Compression")]
    pub threads: Option<usize>,

    /// Leave all-zero pages out of a kdump file entirely (crash then needs
    /// `--zero_excluded`). By default zero pages share one stored zero block.
    #[arg(long, help_heading = "kdump")]
    pub exclude_zero: bool,

    /// On a write error (full disk), keep the partial kdump file, marked incomplete
    /// (status 0x8) as makedumpfile does; lost pages read as lost, never as zeros.
    #[arg(long, help_heading = "kdump")]
    pub keep_partial: bool,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,

    /// Report what was done (sizes, times, paging statistics).
    #[arg(short, long)]
    pub verbose: bool,
}

impl std::ops::Deref for ConvertArgs {
    type Target = InputArgs;
    fn deref(&self) -> &InputArgs {
        &self.input_args
    }
}

impl ConvertArgs {
    pub fn to_options(&self) -> Result<ConvertOptions, Error> {
        let mut o = self.input_args.base_options()?;
        o.format = self.format.clone();
        o.begin = self.begin;
        o.length = self.length;
        o.force = self.force;
        let all_cpus = match self.paging_cpus.as_str() {
            "all" => true,
            "one" => false,
            other => {
                return Err(Error::invalid(format!(
                    "--paging-cpus {other:?}: expected `all` or `one`"
                )))
            }
        };
        if self.paging {
            o.paging = Some(PagingOptions {
                user_cpu: self.cpu,
                all_cpus,
                max_phys_bits: self.max_phys_bits,
            });
        }
        let mut w = BTreeMap::new();
        if let Some(c) = &self.compress {
            w.insert("compress".into(), c.clone());
        }
        if let Some(l) = self.level {
            w.insert("level".into(), l.to_string());
        }
        if let Some(t) = self.threads {
            w.insert("threads".into(), t.to_string());
        }
        if self.exclude_zero {
            w.insert("exclude-zero".into(), "1".into());
        }
        if self.keep_partial {
            w.insert("keep-partial".into(), "1".into());
        }
        o.writer_options = w;
        Ok(o)
    }
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub input_args: InputArgs,

    /// Print JSON (its "cpus" can be edited and given back with --cpu-state).
    #[arg(long)]
    pub json: bool,

    /// Also walk each CPU's page tables and report mapping statistics.
    #[arg(long)]
    pub paging: bool,
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    #[command(flatten)]
    pub input_args: InputArgs,

    /// Virtual addresses (hex with 0x, or decimal).
    #[arg(required = true, value_parser = parse_num)]
    pub vaddrs: Vec<u64>,

    /// CPU whose page tables are used.
    #[arg(long, default_value_t = 0)]
    pub cpu: u32,

    /// MAXPHYADDR.
    #[arg(long, default_value_t = 52, value_parser = clap::value_parser!(u8).range(32..=52))]
    pub max_phys_bits: u8,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

const BATCH_AFTER_HELP: &str = "\
Inputs: a directory (its files, not recursive), a pattern (`dumps/*.elf`, quoted), a
dump, or a manifest (.csv: input,output,options; .jsonl: {\"input\":..,\"output\":..,
\"options\":..}). Manifest options are convert's flags as words (`format=kdump
compress=zstd paging`) and override the command line's.

Outputs are named by --name in --out-dir; finished ones are recorded in
OUT_DIR/.dumpconv-journal*.jsonl and skipped on a rerun; failed and unfinished ones are
redone. --shard K/N (K from 0) runs every N-th job starting at K, for job arrays.

Examples:
  dumpconv batch dumps/ --out-dir out --format kdump --compress zstd
  dumpconv batch manifest.csv --out-dir out --verify --report report.json
  dumpconv batch manifest.csv --out-dir out --shard \"$JOB_COMPLETION_INDEX/8\"

Exit codes: 0 every job succeeded or was already done, 1 one or more jobs failed (see
the table or --report), 2 bad usage (bad manifest line, two jobs writing one output,
another batch of the same --shard running into the same --out-dir), 3 the out dir, its
journal or the report could not be written.";

/// `dumpconv batch`.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// Directories, patterns, dumps or manifests (.csv, .jsonl).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<String>,

    /// Directory the outputs (and the journal) go to.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,

    /// Output name in --out-dir: {stem} (input name without extension), {name}, {ext}
    /// (the format's extension), {format}, {parent} (input's directory), {index}.
    #[arg(long = "name", value_name = "TEMPLATE", default_value = dumpconv::batch::plan::DEFAULT_TEMPLATE)]
    pub template: String,

    /// Conversions at once (default: the number of cores). kdump compression threads
    /// are shared out so that jobs × threads ≤ cores.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,

    /// Start a job only while the running jobs' memory estimates plus its own fit
    /// (16M, 1G...; see docs/batch.md for the estimate).
    #[arg(long, value_parser = parse_num, value_name = "SIZE")]
    pub max_memory: Option<u64>,

    /// Run only shard K of N (K from 0): the jobs whose place in the plan is K mod N.
    #[arg(long, value_name = "K/N", value_parser = clap::value_parser!(dumpconv::batch::Shard))]
    pub shard: Option<dumpconv::batch::Shard>,

    /// Read every output back and compare a digest of its RAM with the input's; a
    /// mismatch fails the job and removes the output.
    #[arg(long)]
    pub verify: bool,

    /// Replace outputs that exist but are not in the journal.
    #[arg(long)]
    pub force: bool,

    /// On a rerun, skip a finished job only if its output's BLAKE3 still matches the
    /// journal (reads every output), instead of comparing size and mtime.
    #[arg(long)]
    pub rehash: bool,

    /// Do not record the outputs' BLAKE3 (it is taken while writing, but a kdump output
    /// is read back once for it; --rehash then redoes such jobs instead of checking them).
    #[arg(long, conflicts_with = "rehash")]
    pub no_hash: bool,

    /// Write per-job results as JSON.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Print the planned jobs (index, run|skip|refuse, input, output; tab-separated)
    /// and do nothing.
    #[arg(long)]
    pub list: bool,

    /// No progress bars and no summary table.
    #[arg(short, long)]
    pub quiet: bool,

    /// Output format for every job (default: elf); a manifest's format=... wins.
    #[arg(
        short,
        long,
        value_name = "FORMAT",
        help_heading = "Conversion options (as in convert)"
    )]
    pub format: Option<String>,
    #[arg(
        long,
        value_name = "FORMAT",
        help_heading = "Conversion options (as in convert)"
    )]
    pub input_format: Option<String>,
    #[arg(
        long,
        value_name = "RANGES|FILE",
        help_heading = "Conversion options (as in convert)"
    )]
    pub ram_map: Option<String>,
    #[arg(
        long,
        value_name = "DIR",
        help_heading = "Conversion options (as in convert)"
    )]
    pub spill_dir: Option<PathBuf>,
    #[arg(
        long,
        value_name = "SIZE",
        help_heading = "Conversion options (as in convert)"
    )]
    pub max_spill: Option<String>,
    #[arg(
        long,
        value_parser = parse_arch,
        help_heading = "Conversion options (as in convert)"
    )]
    pub arch: Option<Arch>,
    #[arg(
        long,
        value_name = "ADDR",
        help_heading = "Conversion options (as in convert)"
    )]
    pub cr3: Option<String>,
    #[arg(
        long,
        value_parser = parse_mode_name,
        requires = "cr3",
        help_heading = "Conversion options (as in convert)"
    )]
    pub paging_mode: Option<String>,
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "cr3",
        help_heading = "Conversion options (as in convert)"
    )]
    pub cpu_state: Option<PathBuf>,
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "Conversion options (as in convert)"
    )]
    pub vmcoreinfo: Option<PathBuf>,
    #[arg(
        long,
        value_name = "ADDR",
        help_heading = "Conversion options (as in convert)"
    )]
    pub begin: Option<String>,
    #[arg(
        long,
        value_name = "LEN",
        help_heading = "Conversion options (as in convert)"
    )]
    pub length: Option<String>,
    #[arg(long, help_heading = "Conversion options (as in convert)")]
    pub paging: bool,
    #[arg(
        long,
        value_name = "N",
        help_heading = "Conversion options (as in convert)"
    )]
    pub cpu: Option<u32>,
    #[arg(
        long,
        value_name = "all|one",
        help_heading = "Conversion options (as in convert)"
    )]
    pub paging_cpus: Option<String>,
    #[arg(
        long,
        value_name = "BITS",
        help_heading = "Conversion options (as in convert)"
    )]
    pub max_phys_bits: Option<u8>,
    #[arg(
        long,
        value_name = "CODEC",
        help_heading = "Conversion options (as in convert)"
    )]
    pub compress: Option<String>,
    #[arg(
        long,
        value_name = "N",
        help_heading = "Conversion options (as in convert)"
    )]
    pub level: Option<i32>,
    /// Compression threads per job (default: cores / jobs).
    #[arg(
        long,
        value_name = "N",
        help_heading = "Conversion options (as in convert)"
    )]
    pub threads: Option<usize>,
    #[arg(long, help_heading = "Conversion options (as in convert)")]
    pub exclude_zero: bool,
    #[arg(long, help_heading = "Conversion options (as in convert)")]
    pub keep_partial: bool,
}

impl BatchArgs {
    /// The command line's conversion options in the manifest vocabulary, checked by the
    /// same code that checks a manifest line.
    pub fn option_map(&self) -> Result<dumpconv::batch::options::OptionMap, Error> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let flag = |b: bool| b.then(|| "1".to_string());
        let pairs: Vec<(&str, Option<String>)> = vec![
            ("format", self.format.clone()),
            ("input-format", self.input_format.clone()),
            ("ram-map", self.ram_map.clone()),
            ("spill-dir", self.spill_dir.as_ref().map(path)),
            ("max-spill", self.max_spill.clone()),
            ("arch", self.arch.map(|a| a.to_string())),
            ("cr3", self.cr3.clone()),
            ("paging-mode", self.paging_mode.clone()),
            ("cpu-state", self.cpu_state.as_ref().map(path)),
            ("vmcoreinfo", self.vmcoreinfo.as_ref().map(path)),
            ("begin", self.begin.clone()),
            ("length", self.length.clone()),
            ("paging", flag(self.paging)),
            ("cpu", self.cpu.map(|c| c.to_string())),
            ("paging-cpus", self.paging_cpus.clone()),
            ("max-phys-bits", self.max_phys_bits.map(|b| b.to_string())),
            ("compress", self.compress.clone()),
            ("level", self.level.map(|l| l.to_string())),
            ("threads", self.threads.map(|t| t.to_string())),
            ("exclude-zero", flag(self.exclude_zero)),
            ("keep-partial", flag(self.keep_partial)),
        ];
        let mut map = dumpconv::batch::options::OptionMap::new();
        for (k, v) in pairs {
            if let Some(v) = v {
                dumpconv::batch::options::insert(&mut map, k, v).map_err(Error::invalid)?;
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        with_default_subcommand(v.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn default_subcommand_looks_past_plugin_options() {
        assert_eq!(
            args(&["d", "in", "-o", "x"]),
            ["d", "convert", "in", "-o", "x"]
        );
        assert_eq!(
            args(&[
                "d",
                "--plugin",
                "p.so",
                "--plugin-override",
                "--paging",
                "in"
            ]),
            [
                "d",
                "convert",
                "--plugin",
                "p.so",
                "--plugin-override",
                "--paging",
                "in"
            ]
        );
        assert_eq!(
            args(&["d", "--plugin=p.so", "plugins"]),
            ["d", "--plugin=p.so", "plugins"]
        );
        assert_eq!(
            args(&["d", "--plugin", "p.so", "info", "x"]),
            ["d", "--plugin", "p.so", "info", "x"]
        );
        assert_eq!(args(&["d", "--help"]), ["d", "--help"]);
        assert_eq!(args(&["d"]), ["d"]);
    }

    #[test]
    fn plugin_options_are_collected_wherever_they_are() {
        let v = [
            "d",
            "--plugin",
            "a.so",
            "plugins",
            "--plugin=b.so",
            "--plugin-override",
        ];
        let (rest, p) = take_plugin_args(v.iter().map(OsString::from).collect());
        assert_eq!(rest, ["d", "plugins"]);
        assert_eq!(p.paths, [PathBuf::from("a.so"), PathBuf::from("b.so")]);
        assert!(p.plugin_override);
        let v = ["d", "in", "--", "--plugin", "x"];
        let (rest, p) = take_plugin_args(v.iter().map(OsString::from).collect());
        assert_eq!(rest, v);
        assert!(p.paths.is_empty() && !p.plugin_override);
    }

    #[test]
    fn batch_flags_use_the_manifest_vocabulary() {
        let cli = Cli::parse_from(with_default_subcommand(
            [
                "dumpconv",
                "batch",
                "d/",
                "--out-dir",
                "o",
                "--format",
                "kdump",
                "--compress",
                "zstd",
                "--paging",
                "--begin",
                "16M",
                "--cr3",
                "0x1000",
                "--paging-mode",
                "pae",
                "--arch",
                "i386",
                "--exclude-zero",
                "--threads",
                "2",
            ]
            .map(OsString::from)
            .into_iter(),
        ));
        let Command::Batch(b) = cli.command else {
            panic!("not batch")
        };
        let m = b.option_map().unwrap();
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "arch",
                "begin",
                "compress",
                "cr3",
                "exclude-zero",
                "format",
                "paging",
                "paging-mode",
                "threads"
            ]
        );
        let o = dumpconv::batch::options::build(&m).unwrap();
        assert_eq!(o.begin, Some(16 << 20));
        assert_eq!(o.writer_options["threads"], "2");
    }
}
