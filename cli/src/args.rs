//! Command-line arguments. `dumpconv INPUT -o OUTPUT` is short for
//! `dumpconv convert INPUT -o OUTPUT`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand, ValueHint};
use dumpconv::numbers::parse_u64;
use dumpconv::schema::{self, Kind, OptDef, OptionMap, Scope};
use dumpconv::ConvertOptions;
use dumpconv_core::Error;

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
  dumpconv vmcore.1 vmcore.2 vmcore.3 -o v.elf     a kdump split set (makedumpfile --split)
  dumpconv qemu.elf --format raw --compress zstd -o - | ssh host 'zstd -d > ram.raw'
  dumpconv vmcore.elf --format kdump -o - | ssh host 'cat > vmcore.flat'
  dumpconv info --json qemu.elf > state.json       CPU state, editable, reusable with --cpu-state

Input formats are detected by content: ELF cores (QEMU dump-guest-memory, virsh dump
--memory-only, /proc/vmcore, makedumpfile -E), kdump-compressed (seekable or flattened),
LiME (lime.ko format=lime, avml convert --format lime), AVML (avml --compress, snappy
per range), QEMU migration streams (migrate to a file, virsh save, virsh dump without
--memory-only; x86 pc/q35 and arm64 virt machines; CPU state and VMCOREINFO
included), QEMU >= 9 mapped-ram files (migrate file: with multifd + mapped-ram), libvirt
save files, savevm snapshots in qcow2 images (--snapshot NAME|ID; default the newest;
`dumpconv info IMAGE` lists them), raw images (file offset = physical address; give
--ram-map to declare holes; LiME format=padded is one).

Any of these may be wrapped in gzip, zlib, lz4, zstd, xz, bzip2 or lzop (one level), and
INPUT may be `-` (standard input) or a named pipe. Such inputs are first
decompressed/copied as a stream into an unlinked temporary file in --spill-dir ($DUMPCONV_SPILL_DIR, else
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
written (nothing is left behind), 4 plugin error, 5 internal error (a bug in dumpconv).";

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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell); see
    /// README.md for where to install it.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one per subcommand with --dir.
    Man(ManArgs),
}

const SUBCOMMANDS: &[&str] = &[
    "convert",
    "info",
    "translate",
    "plugins",
    "batch",
    "completions",
    "man",
    "help",
];

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

/// The options of [`schema::OPTIONS`] for one scope, as clap arguments (so they are in
/// `--help`, the completions and the man page), parsed into an option map that
/// [`schema::build`] turns into [`ConvertOptions`]. `OUTPUT`: the output options, else
/// the input options.
#[derive(Debug, Clone, Default)]
pub struct SchemaFlags<const OUTPUT: bool> {
    pub map: OptionMap,
}

fn scope(output: bool) -> Scope {
    if output {
        Scope::Output
    } else {
        Scope::Input
    }
}

/// A schema option's value parser: [`schema::check_value`], and its words for help and
/// completion.
#[derive(Clone)]
struct SchemaValue(&'static OptDef);

impl TypedValueParser for SchemaValue {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let v = value
            .to_str()
            .ok_or_else(|| clap::Error::new(ErrorKind::InvalidUtf8).with_cmd(cmd))?;
        schema::check_value(self.0, v).map_err(|e| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value '{v}' for '--{}': {e}\n", self.0.name),
            )
            .with_cmd(cmd)
        })?;
        Ok(v.to_string())
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        if self.0.kind == Kind::Arch {
            let names = dumpconv_core::arch::known_names();
            return Some(Box::new(names.into_iter().map(PossibleValue::new)));
        }
        if self.0.values.is_empty() {
            return None;
        }
        Some(Box::new(self.0.values.iter().map(PossibleValue::new)))
    }
}

/// The clap argument of one schema option.
fn schema_arg(d: &'static OptDef) -> Arg {
    // As clap's derive does with doc comments: no final period.
    let mut help = d.help.strip_suffix('.').unwrap_or(d.help).to_string();
    if let Some(v) = d.default {
        help.push_str(&format!(" [default: {v}]"));
    }
    if !d.formats.is_empty() {
        help.push_str(&format!(" [formats: {}]", d.formats.join(", ")));
    }
    let mut a = Arg::new(d.name)
        .long(d.name)
        .help(help)
        .help_heading(d.heading);
    if let Some(c) = d.short {
        a = a.short(c);
    }
    if let Some(r) = d.requires {
        a = a.requires(r);
    }
    if let Some(c) = d.conflicts {
        a = a.conflicts_with(c);
    }
    if d.kind == Kind::Flag {
        return a.action(ArgAction::SetTrue);
    }
    a = a
        .action(ArgAction::Set)
        .value_name(d.value_name)
        .value_parser(SchemaValue(d));
    match d.kind {
        Kind::Int => a.allow_negative_numbers(true),
        Kind::Path => a.value_hint(ValueHint::AnyPath),
        // Suggestions only (plugins add formats): not listed as the only values.
        Kind::Text => a.hide_possible_values(true),
        _ => a,
    }
}

impl<const OUTPUT: bool> FromArgMatches for SchemaFlags<OUTPUT> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut map = OptionMap::new();
        for d in schema::in_scope(scope(OUTPUT)) {
            if d.kind == Kind::Flag {
                if m.get_flag(d.name) {
                    map.insert(d.name.to_string(), "1".to_string());
                }
            } else if let Some(v) = m.get_one::<String>(d.name) {
                map.insert(d.name.to_string(), v.clone());
            }
        }
        Ok(SchemaFlags { map })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<const OUTPUT: bool> Args for SchemaFlags<OUTPUT> {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        schema::in_scope(scope(OUTPUT)).fold(cmd, |c, d| c.arg(schema_arg(d)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// How to read the input: format, RAM map, and CPU state for inputs that lack it.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Input dump (format detected by content); `-` reads standard input.
    pub input: PathBuf,

    #[command(flatten)]
    pub options: SchemaFlags<false>,
}

impl InputArgs {
    /// The options shared by every command that opens an input.
    pub fn base_options(&self) -> Result<ConvertOptions, Error> {
        schema::build(&self.options.map)
    }
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input_args: InputArgs,

    /// The other files of a kdump split set (makedumpfile --split) whose first file is
    /// INPUT, in any order; every part must be given.
    #[arg(value_name = "PART")]
    pub parts: Vec<PathBuf>,

    /// Output file, or `-` for standard output (a stream: kdump becomes the flattened
    /// format). Written to a temporary file and renamed when complete.
    #[arg(short, long, value_name = "FILE")]
    pub output: String,

    #[command(flatten)]
    pub options: SchemaFlags<true>,

    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,

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
    /// The command line's options as one map, as a manifest line would give them.
    pub fn option_map(&self) -> OptionMap {
        let mut m = self.input_args.options.map.clone();
        m.extend(self.options.map.clone());
        m
    }

    pub fn to_options(&self) -> Result<ConvertOptions, Error> {
        let mut o = schema::build(&self.option_map())?;
        o.force = self.force;
        o.parts = self.parts.clone();
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
\"options\":..}). Manifest options are the conversion options above as words, without
the dashes (`format=kdump compress=zstd paging`), and override the command line's. A
manifest input may be a kdump split set: `part1|part2|part3` in CSV, an array in JSON.

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
journal or the report could not be written, 5 internal error (a bug in dumpconv).";

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

    /// Conversion options for every job (a manifest line's override them).
    #[command(flatten)]
    pub input_options: SchemaFlags<false>,

    #[command(flatten)]
    pub output_options: SchemaFlags<true>,
}

impl BatchArgs {
    /// The command line's conversion options in the manifest vocabulary (checked by the
    /// same [`schema::check_value`] as a manifest line).
    pub fn option_map(&self) -> OptionMap {
        let mut m = self.input_options.map.clone();
        m.extend(self.output_options.map.clone());
        m
    }
}

/// `dumpconv completions SHELL`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `dumpconv man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write dumpconv.1 and one page per subcommand (dumpconv-convert.1 ...) into DIR
    /// instead of printing dumpconv.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn convert_flags_build_the_options_as_a_manifest_line_does() {
        let cli = Cli::parse_from(with_default_subcommand(
            [
                "dumpconv",
                "in.raw",
                "p2",
                "p3",
                "-o",
                "out.elf",
                "--arch",
                "i386",
                "--elf-class",
                "64",
                "--paging",
                "--max-phys-bits",
                "40",
                "--level",
                "-5",
            ]
            .map(OsString::from)
            .into_iter(),
        ));
        let Command::Convert(c) = cli.command else {
            panic!("not convert")
        };
        let from_flags = c.to_options().unwrap();
        assert_eq!(from_flags.parts, [PathBuf::from("p2"), PathBuf::from("p3")]);
        let words = "arch=i386 elf-class=64 paging max-phys-bits=40 level=-5";
        let from_words = schema::build(&schema::parse_words(words).unwrap()).unwrap();
        assert_eq!(from_flags.arch, from_words.arch);
        assert_eq!(from_flags.paging, from_words.paging);
        assert_eq!(from_flags.writer_options, from_words.writer_options);
        assert_eq!(from_flags.paging.unwrap().max_phys_bits, 40);
        assert_eq!(from_flags.writer_options["level"], "-5");
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
        let m = b.option_map();
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
