//! The conversion options, each defined once.
//!
//! Every option a conversion takes is one [`OptDef`] in [`OPTIONS`]: its name (the long
//! flag of `convert` and `batch` without the dashes, and the manifest key), its kind of
//! value, default, help, and the output formats it concerns. From this one table come
//!
//! - the flags of `dumpconv convert`, `info`, `translate` and `batch` (the binary turns
//!   each definition into a clap argument; so `--help`, the shell completions and the
//!   man page),
//! - the manifest vocabulary of `dumpconv batch` ([`insert`], [`parse_words`]), checked
//!   by the same [`check_value`] as the flags,
//! - and [`ConvertOptions`], built in one place ([`build`]) from the option map that a
//!   command line, a manifest line or both together give.
//!
//! A writer option (`writer: true`) needs nothing but its line here: [`build`] hands it
//! to the writer in `DumpPlan::options`, and the writer declares that it takes it
//! (`DumpWriter::options`). Options with meanings of their own (`cr3`, `paging`...) are
//! read by name in [`build`].
//!
//! `--arch` values are parsed only by [`parse_arch`]; `cr3` + `paging-mode` become a
//! [`RootRequest`] that the registry's walkers (plugins included) turn into a CPU.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dumpconv_core::numbers::{parse_bool, BOOL_WORDS};
use dumpconv_core::{Arch, Error, Result, VmcoreInfoFile};

use crate::numbers::parse_u64;
use crate::pipeline::{read_cpu_state_file, ConvertOptions, PagingOptions, RootRequest};
use crate::roots::{KernelPick, RootSource};

/// Option name → value, sorted (so its JSON form is canonical and can be hashed). A
/// flag from a command line is `"1"` when on and absent when off; from a manifest it is
/// as written (`paging=yes`, `paging=no`): read flags with [`flag`].
pub type OptionMap = BTreeMap<String, String>;

/// What an option's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On or off: a bare flag on the command line; in a manifest a bare word, or
    /// `key=` one of [`BOOL_WORDS`].
    Flag,
    /// An address or size: decimal, `0x` hex, or with a K/M/G/T suffix.
    Number,
    /// A signed integer (negative zstd levels exist).
    Int,
    /// An integer within these bounds (inclusive).
    Range(i64, i64),
    /// A count of threads, 1 or more, or `auto`.
    Threads,
    /// One of the words in [`OptDef::values`].
    Choice,
    /// An architecture name of core's table ([`parse_arch`]), so plugins' and core's
    /// architectures are listed without the command line naming any.
    Arch,
    /// A file or directory name (a relative one in a manifest is relative to it).
    Path,
    /// Text checked where it is used (format and codec names: plugins add formats).
    Text,
}

/// Which commands take an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// How to read the input: `convert`, `batch`, `info`, `translate`.
    Input,
    /// What to write: `convert` and `batch`.
    Output,
}

/// One option.
#[derive(Debug, Clone, Copy)]
pub struct OptDef {
    /// Long flag without `--`, manifest key.
    pub name: &'static str,
    pub short: Option<char>,
    pub kind: Kind,
    /// Placeholder in `--help` (`ADDR`, `FILE`); empty for flags.
    pub value_name: &'static str,
    /// The words it takes (a [`Kind::Choice`]), or suggests (shell completion of a
    /// [`Kind::Text`]).
    pub values: &'static [&'static str],
    /// The value when it is not given, as `--help` shows it (None: nothing/automatic).
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// `--help` section.
    pub heading: &'static str,
    pub scope: Scope,
    /// Output formats (built-in writers) it concerns; empty: any.
    pub formats: &'static [&'static str],
    /// Handed to the writer in `DumpPlan::options` (the writer must declare it).
    pub writer: bool,
    /// Names a file: in a manifest, relative to the manifest's directory (`ram-map` only
    /// when it names an existing file).
    pub file: bool,
    /// Does not change the output's bytes: left out of a batch job's options hash.
    pub neutral: bool,
    /// Needs this other option (clap `requires`).
    pub requires: Option<&'static str>,
    /// Excludes this other option.
    pub conflicts: Option<&'static str>,
}

const fn def(name: &'static str, kind: Kind, scope: Scope, heading: &'static str) -> OptDef {
    OptDef {
        name,
        short: None,
        kind,
        value_name: "",
        values: &[],
        default: None,
        help: "",
        heading,
        scope,
        formats: &[],
        writer: false,
        file: false,
        neutral: false,
        requires: None,
        conflicts: None,
    }
}

const INPUT: &str = "Input";
const CPU: &str = "CPU state";
const OUTPUT: &str = "Output";
const SELECTION: &str = "Selection";
const PAGING: &str = "Paging";
const COMPRESSION: &str = "Compression";
const FILTERING: &str = "Page filtering";
const KDUMP: &str = "kdump";
const ELF: &str = "ELF";

/// The built-in output formats, for help and completion (plugins may add more).
pub const BUILTIN_FORMATS: &[&str] = &["elf", "kdump", "raw", "lime", "avml"];

/// Every conversion option. Order: as `--help` lists them within a heading.
pub const OPTIONS: &[OptDef] = &[
    // ---- Input
    OptDef {
        value_name: "FORMAT",
        values: &["raw"],
        help: "Read the input as this format instead of detecting it (raw).",
        ..def("input-format", Kind::Text, Scope::Input, INPUT)
    },
    OptDef {
        value_name: "RANGES|FILE",
        help: "RAM ranges of a raw image, inclusive: `0-0x9ffff,0x100000-0xbfffffff`, or a \
               file holding a copy of /proc/iomem (\"System RAM\" lines are used). On a VM \
               save file whose machine type has no known layout: where its largest RAM \
               block goes, laid across the ranges in order.",
        file: true,
        ..def("ram-map", Kind::Text, Scope::Input, INPUT)
    },
    OptDef {
        value_name: "DIR",
        help: "Directory for the temporary decompressed copy of a compressed or streamed \
               input (default $DUMPCONV_SPILL_DIR, else $TMPDIR); needs up to the \
               decompressed size.",
        file: true,
        neutral: true,
        ..def("spill-dir", Kind::Path, Scope::Input, INPUT)
    },
    OptDef {
        value_name: "SIZE",
        help: "Refuse a compressed or streamed input once its decompressed size passes SIZE \
               (16M, 1G, 4T...; all-zero pages included, though they cost no disk). Default \
               $DUMPCONV_MAX_SPILL, else no limit; a guard against decompression bombs.",
        neutral: true,
        ..def("max-spill", Kind::Number, Scope::Input, INPUT)
    },
    OptDef {
        value_name: "NAME|ID",
        help: "The `savevm` snapshot of a qcow2 image to read, by name or ID (default: the \
               only one with VM state, else the newest; `dumpconv info IMAGE` lists them).",
        ..def("snapshot", Kind::Text, Scope::Input, INPUT)
    },
    OptDef {
        value_name: "ARCH",
        help: "Architecture of a raw image, by its `uname -m` name (ELF and kdump inputs say \
               it themselves); `dumpconv plugins` lists the architectures the walkers handle.",
        ..def("arch", Kind::Arch, Scope::Input, INPUT)
    },
    OptDef {
        value_name: "FILE",
        help: "VMCOREINFO to use when the input has none: its text (KEY=value lines, with \
               OSRELEASE=), or a copy of the dumped machine's /sys/kernel/vmcoreinfo (\"ADDR \
               SIZE\": the note is then read from the dump's memory). Anything else is refused.",
        file: true,
        ..def("vmcoreinfo", Kind::Path, Scope::Input, INPUT)
    },
    // ---- CPU state
    OptDef {
        value_name: "ADDR",
        help: "Page-table root for inputs without CPU state (with --paging-mode).",
        ..def("cr3", Kind::Number, Scope::Input, CPU)
    },
    OptDef {
        value_name: "MODE",
        help: "Paging mode that goes with --cr3 or --root ADDR, as the architecture's walker \
               names it (`dumpconv plugins` lists each walker's modes).",
        ..def("paging-mode", Kind::Text, Scope::Input, CPU)
    },
    OptDef {
        value_name: "cpu|vmcoreinfo|scan|ADDR",
        values: &["cpu", "vmcoreinfo", "scan"],
        help: "Where --paging takes the page-table root from: a CPU's state, the kernel's \
               VMCOREINFO (the input's note, --vmcoreinfo, or found in RAM), a scan of RAM \
               for a table that maps a Linux banner (a guess), or this address (with \
               --paging-mode, like --cr3). Default: the order of docs/roots.md. --cr3 and \
               --cpu-state win over it.",
        ..def("root", Kind::Text, Scope::Input, CPU)
    },
    OptDef {
        value_name: "crashed|running|N",
        values: &["crashed", "running"],
        help: "Which kernel --paging walks when the dump holds several (a kdump capture \
               kernel beside the crashed one; `dumpconv info` lists them): the one whose \
               VMCOREINFO has CRASHTIME=, the one a CPU runs, or kernel N. Default: the \
               crashed kernel, else the running one.",
        ..def("kernel", Kind::Text, Scope::Input, CPU)
    },
    OptDef {
        value_name: "FILE",
        help: "CPU states as JSON: an array of CPU objects, or the output of `dumpconv info \
               --json` (its \"cpus\"). Registers are hex strings (\"0x1000\") or numbers.",
        file: true,
        conflicts: Some("cr3"),
        ..def("cpu-state", Kind::Path, Scope::Input, CPU)
    },
    // ---- Output
    OptDef {
        short: Some('f'),
        value_name: "FORMAT",
        values: BUILTIN_FORMATS,
        help: "Output format: elf, kdump, raw, lime, avml, or a plugin writer's name. \
               Default: from the output name (.elf .kdump .raw .lime .avml ..., also under \
               a final .zst or .lz4; a bare X.zst is raw); a batch job without an output \
               name is elf.",
        ..def("format", Kind::Text, Scope::Output, OUTPUT)
    },
    // ---- Selection
    OptDef {
        value_name: "ADDR",
        help: "First physical address to write.",
        ..def("begin", Kind::Number, Scope::Output, SELECTION)
    },
    OptDef {
        value_name: "LEN",
        help: "Bytes of physical address space to write from --begin.",
        ..def("length", Kind::Number, Scope::Output, SELECTION)
    },
    // ---- Paging
    OptDef {
        help: "Walk the guest's page tables and write virtual mappings (ELF p_vaddr), so gdb \
               can read kernel virtual addresses; all RAM is still written.",
        ..def("paging", Kind::Flag, Scope::Output, PAGING)
    },
    OptDef {
        value_name: "N",
        help: "CPU whose user-space mappings are kept (kernel mappings come from all CPUs); \
               default the first with paging on.",
        ..def(
            "cpu",
            Kind::Range(0, u32::MAX as i64),
            Scope::Output,
            PAGING,
        )
    },
    OptDef {
        value_name: "all|one",
        values: &["one", "all"],
        default: Some("one"),
        help: "`all`: keep user mappings of every CPU, as QEMU does (may contradict each \
               other).",
        ..def("paging-cpus", Kind::Choice, Scope::Output, PAGING)
    },
    OptDef {
        value_name: "BITS",
        default: Some("52"),
        help: "MAXPHYADDR: physical address bits in page-table entries (32..52).",
        ..def("max-phys-bits", Kind::Range(32, 52), Scope::Output, PAGING)
    },
    OptDef {
        help: "When --paging finds no page-table root, or the root found fails its checks or \
               maps nothing, write the physical view with a warning instead of failing \
               (exit 1).",
        ..def("paging-fallback", Kind::Flag, Scope::Output, PAGING)
    },
    // ---- Compression
    OptDef {
        value_name: "CODEC",
        values: &["zlib", "lzo", "snappy", "zstd", "lz4", "none"],
        help: "kdump: page codec, zlib (default), lzo, snappy, zstd or none (Debian's \
               makedumpfile 1.7.2 reads only zlib and lzo; crash reads all four). raw, elf, \
               lime: compress the whole output as one stream, zstd or lz4 (what `zstd -d` \
               or `lz4 -d` reads), or none; an output named X.zst or X.lz4 implies it.",
        formats: &["kdump", "elf", "raw", "lime"],
        writer: true,
        ..def("compress", Kind::Text, Scope::Output, COMPRESSION)
    },
    OptDef {
        value_name: "N",
        help: "Compression level: zlib 0-9, zstd 1-22 (whole-output zstd default 3); lz4, \
               lzo and snappy have none.",
        formats: &["kdump", "elf", "raw", "lime"],
        writer: true,
        ..def("level", Kind::Int, Scope::Output, COMPRESSION)
    },
    OptDef {
        value_name: "N|auto",
        default: Some("auto"),
        help: "Compression threads, for kdump pages and zstd output: auto is all cores (in \
               a batch, the cores shared out among the jobs). A kdump file is identical \
               for any count.",
        formats: &["kdump", "elf", "raw", "lime"],
        writer: true,
        neutral: true,
        ..def("threads", Kind::Threads, Scope::Output, COMPRESSION)
    },
    // ---- kdump
    // ---- Page filtering
    OptDef {
        short: Some('d'),
        value_name: "N",
        help: "Leave out pages by makedumpfile's dump level, a sum of 1 zero pages, 2 page \
               cache, 4 page cache with private data (and swap cache), 8 user data, 16 free \
               pages (31: all of them). Classes other than zero are read from the kernel's \
               struct page array through VMCOREINFO (docs/filtering.md). kdump: the pages are \
               marked excluded (crash then reads them as excluded, never as zeros); ELF: left \
               out of the PT_LOAD segments; raw and LiME: holes.",
        ..def("dump-level", Kind::Range(0, 31), Scope::Output, FILTERING)
    },
    OptDef {
        value_name: "CLASSES",
        values: &["zero", "cache", "cache-private", "user", "free"],
        help: "Leave out these page classes, comma separated: zero, cache, cache-private, \
               user, free (the names of --dump-level's bits; both together add up).",
        ..def("exclude", Kind::Text, Scope::Output, FILTERING)
    },
    OptDef {
        help: "kdump: leave all-zero pages out of the file entirely (crash then needs \
               `--zero_excluded`); implies dump level bit 1. Without it a kdump file stores \
               zero pages once, as one shared zero block, at any dump level (what \
               makedumpfile does for bit 1); other formats leave zero pages out with \
               --exclude zero.",
        formats: &["kdump"],
        writer: true,
        ..def("exclude-zero", Kind::Flag, Scope::Output, FILTERING)
    },
    OptDef {
        help: "When the dump's struct pages cannot be read (no VMCOREINFO, a kernel layout \
               dumpconv does not know, an array that reads as garbage), write every page \
               (dump level 0) with a warning instead of failing.",
        ..def("filter-fallback", Kind::Flag, Scope::Output, FILTERING)
    },
    // ---- kdump
    OptDef {
        help: "On a write error (full disk), keep the partial kdump file, marked incomplete \
               (status 0x8) as makedumpfile does; lost pages read as lost, never as zeros.",
        formats: &["kdump"],
        writer: true,
        ..def("keep-partial", Kind::Flag, Scope::Output, KDUMP)
    },
    // ---- ELF
    OptDef {
        value_name: "32|64|auto",
        values: &["auto", "32", "64"],
        default: Some("auto"),
        help: "ELF class: auto and 64 write ELF64 (EM_386 for 32-bit x86, as QEMU writes \
               such guests: gdb, drgn, makedumpfile and Volatility 3 read it); 32 demands \
               ELF32 for a 32-bit dump (gdb, drgn and makedumpfile read it, Volatility 3 \
               does not), an error if the dump does not fit.",
        formats: &["elf"],
        writer: true,
        ..def("elf-class", Kind::Choice, Scope::Output, ELF)
    },
    OptDef {
        value_name: "standard|physical-first",
        values: &["standard", "physical-first"],
        default: Some("standard"),
        help: "Order of a --paging ELF's program headers. standard: the mappings by \
               physical address, RAM no mapping reaches last (gdb, crash, drgn). \
               physical-first: all RAM once, by physical address, never overlapping, then \
               PT_NULL entries up to header 65,535, then the other mappings (aliases): for \
               readers that key segments by p_paddr and stop at 65,535 headers (Volatility \
               3); gdb, crash and drgn read it too. Always ELF64 when there are aliases.",
        formats: &["elf"],
        writer: true,
        ..def("elf-layout", Kind::Choice, Scope::Output, ELF)
    },
];

impl OptDef {
    /// A value this option takes (its first listed word, or one of its kind), for tests
    /// and examples.
    pub fn sample_value(&self) -> String {
        match self.kind {
            Kind::Flag => "1".into(),
            Kind::Number => "0x1000".into(),
            Kind::Int => "3".into(),
            Kind::Range(lo, _) => lo.to_string(),
            Kind::Threads => "2".into(),
            Kind::Choice | Kind::Text => self.values.first().copied().unwrap_or("x").to_string(),
            Kind::Arch => dumpconv_core::arch::known_names()
                .first()
                .copied()
                .unwrap_or("x")
                .to_string(),
            Kind::Path => "/nonexistent/file".into(),
        }
    }
}

/// The definition of `name`, if it is one.
pub fn find(name: &str) -> Option<&'static OptDef> {
    OPTIONS.iter().find(|d| d.name == name)
}

/// The options a command of `scope` takes.
pub fn in_scope(scope: Scope) -> impl Iterator<Item = &'static OptDef> {
    OPTIONS.iter().filter(move |d| d.scope == scope)
}

/// The one parser of `--arch` / `arch=` values: a name of core's architecture table
/// (or `em<N>/<bits>` for a machine it does not name).
pub fn parse_arch(v: &str) -> Option<Arch> {
    Arch::from_name(v)
}

/// Check a value's syntax for `d` (what the option means is checked by [`build`] and
/// the writer).
pub fn check_value(d: &OptDef, v: &str) -> std::result::Result<(), String> {
    let key = d.name;
    let bad = |what: String| Err(format!("option {key}={v:?}: {what}"));
    match d.kind {
        Kind::Flag => match parse_bool(v) {
            Some(_) => Ok(()),
            None => bad(format!("expected {BOOL_WORDS}")),
        },
        Kind::Number => parse_u64(v).map(drop).map_err(|e| format!("{key}: {e}")),
        Kind::Int => match v.trim().parse::<i64>() {
            Ok(_) => Ok(()),
            Err(_) => bad("expected an integer".into()),
        },
        Kind::Range(lo, hi) => match v.trim().parse::<i64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(()),
            _ => bad(format!("expected {lo}..{hi}")),
        },
        Kind::Threads => {
            if v.trim() == "auto" || v.trim().parse::<usize>().is_ok_and(|n| n > 0) {
                Ok(())
            } else {
                bad("expected a count of 1 or more, or auto".into())
            }
        }
        Kind::Choice => {
            if d.values.contains(&v) {
                Ok(())
            } else {
                bad(format!("expected {}", d.values.join(", ")))
            }
        }
        Kind::Arch => match parse_arch(v) {
            Some(_) => Ok(()),
            None => bad(format!(
                "expected an architecture name ({})",
                dumpconv_core::arch::known_names().join(", ")
            )),
        },
        Kind::Path | Kind::Text if v.is_empty() => bad("empty value".into()),
        Kind::Path | Kind::Text => Ok(()),
    }
}

/// Check a key and its value and add it. A flag may be turned off (`paging=no`), which
/// overrides a command line's `--paging` for one manifest line.
pub fn insert(map: &mut OptionMap, key: &str, value: String) -> std::result::Result<(), String> {
    let key = key.trim_start_matches('-').to_ascii_lowercase();
    let d = find(&key).ok_or_else(|| {
        format!(
            "unknown option {key:?} (known: {})",
            OPTIONS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    check_value(d, &value)?;
    // Kept as written (`paging=yes`), so the options hash of a journal written by an
    // earlier build still matches; [`flag`] reads it.
    map.insert(key, value);
    Ok(())
}

/// Parse `key=value key2=value2 flag` (a bare key means on). Leading dashes are accepted
/// (`--paging`) so a line can be pasted from a command.
pub fn parse_words(text: &str) -> std::result::Result<OptionMap, String> {
    let mut map = OptionMap::new();
    for word in text.split_whitespace() {
        let word = word.trim_start_matches('-');
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, v),
            None => (word, "1"),
        };
        insert(&mut map, k, v.to_string())?;
    }
    Ok(map)
}

/// True if flag `key` is on in `map`.
pub fn flag(map: &OptionMap, key: &str) -> bool {
    map.get(key).and_then(|v| parse_bool(v)) == Some(true)
}

/// The writer options of `map`: every `writer: true` option given, flags only when on.
pub fn writer_options(map: &OptionMap) -> BTreeMap<String, String> {
    OPTIONS
        .iter()
        .filter(|d| d.writer)
        .filter_map(|d| {
            let v = map.get(d.name)?;
            match d.kind {
                Kind::Flag => flag(map, d.name).then(|| (d.name.to_string(), "1".to_string())),
                _ => Some((d.name.to_string(), v.clone())),
            }
        })
        .collect()
}

/// `dump-level`, `exclude`, `exclude-zero` and `filter-fallback` together; None when
/// none is given.
fn filter_options(map: &OptionMap) -> Result<Option<crate::filter::FilterOptions>> {
    use dumpconv_filter::{Class, DumpLevel};
    let mut level = DumpLevel::default();
    if let Some(v) = map.get("dump-level") {
        let n = v
            .trim()
            .parse::<u8>()
            .ok()
            .and_then(DumpLevel::new)
            .ok_or_else(|| Error::invalid(format!("option dump-level={v:?}: expected 0..31")))?;
        level = level.union(n);
    }
    if let Some(v) = map.get("exclude") {
        level = level.union(
            DumpLevel::parse_list(v).map_err(|e| Error::invalid(format!("option exclude: {e}")))?,
        );
    }
    if flag(map, "exclude-zero") {
        level = level.with(Class::Zero);
    }
    let fallback = flag(map, "filter-fallback");
    if level.bits() == 0 && !fallback && !map.contains_key("dump-level") {
        return Ok(None);
    }
    Ok(Some(crate::filter::FilterOptions { level, fallback }))
}

/// Read the file `vmcoreinfo=` names. The one place it is read.
fn read_vmcoreinfo(path: &Path) -> Result<VmcoreInfoFile> {
    VmcoreInfoFile::read(path)
}

/// Build the options of one conversion from an option map: the one builder of
/// [`ConvertOptions`], for `convert`, `info`, `translate`, the batch command line and
/// every manifest line. Files named by options are read here (so in a batch a missing
/// one fails that job only). `force` and split-set `parts` are the caller's.
pub fn build(map: &OptionMap) -> Result<ConvertOptions> {
    let get = |k: &str| map.get(k).map(String::as_str);
    let num = |k: &str| -> Result<Option<u64>> {
        get(k)
            .map(|v| parse_u64(v).map_err(|e| Error::invalid(format!("option {k}: {e}"))))
            .transpose()
    };
    let int = |k: &str| get(k).and_then(|v| v.trim().parse::<i64>().ok());
    let mut o = ConvertOptions {
        format: get("format").map(str::to_string),
        begin: num("begin")?,
        length: num("length")?,
        arch: get("arch").and_then(parse_arch),
        ..ConvertOptions::default()
    };
    o.open.input_format = get("input-format").map(str::to_string);
    o.open.spill_dir = get("spill-dir").map(PathBuf::from);
    o.open.max_spill = num("max-spill")?;
    o.open.snapshot = get("snapshot").map(str::to_string);
    if let Some(m) = get("ram-map") {
        let p = Path::new(m);
        o.open.ram_map = Some(if p.is_file() {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            // Name the file: "line 2" alone does not say of what.
            dumpconv_formats::raw::parse_ram_map(&text)
                .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?
        } else {
            dumpconv_formats::raw::parse_ram_map(m)?
        });
    }
    let root_word = get("root").map(str::trim);
    let root_addr = match root_word {
        None | Some("cpu" | "vmcoreinfo" | "scan") => None,
        Some(w) => Some(parse_u64(w).map_err(|e| {
            Error::invalid(format!(
                "option root: {w:?} is neither cpu, vmcoreinfo, scan nor an address ({e})"
            ))
        })?),
    };
    o.root_source = match root_word {
        Some("cpu") => Some(RootSource::Cpu),
        Some("vmcoreinfo") => Some(RootSource::Vmcoreinfo),
        Some("scan") => Some(RootSource::Scan),
        _ => None,
    };
    if let Some(k) = get("kernel") {
        o.kernel = Some(KernelPick::parse(k).ok_or_else(|| {
            Error::invalid(format!(
                "option kernel: {k:?}: expected crashed, running or a kernel number"
            ))
        })?);
    }
    if get("paging-mode").is_some() && num("cr3")?.is_none() && root_addr.is_none() {
        return Err(Error::invalid(
            "option paging-mode goes with cr3 or root ADDR (the root it describes)",
        ));
    }
    if let Some(cr3) = num("cr3")?.or(root_addr) {
        if map.contains_key("cpu-state") {
            return Err(Error::invalid(
                "options cr3 and cpu-state exclude each other",
            ));
        }
        let mode = get("paging-mode").ok_or_else(|| {
            Error::invalid(format!(
                "option cr3 (or root ADDR) needs paging-mode (a mode name of the walkers: {}, or of a \
                 walker plugin)",
                crate::Registry::builtin().mode_names().join(", ")
            ))
        })?;
        // The mode name is resolved when the walkers (plugins included) are known:
        // `pipeline::effective_cpus`.
        o.root = Some(RootRequest {
            arch: get("arch").and_then(parse_arch),
            mode: mode.to_string(),
            root: cr3,
        });
    } else if let Some(p) = get("cpu-state") {
        o.cpus = Some(read_cpu_state_file(Path::new(p))?);
    }
    if let Some(p) = get("vmcoreinfo") {
        o.vmcoreinfo = Some(read_vmcoreinfo(Path::new(p))?);
    }
    if flag(map, "paging") {
        let defaults = PagingOptions::default();
        o.paging = Some(PagingOptions {
            user_cpu: int("cpu").and_then(|c| u32::try_from(c).ok()),
            all_cpus: get("paging-cpus") == Some("all"),
            max_phys_bits: int("max-phys-bits")
                .and_then(|b| u8::try_from(b).ok())
                .unwrap_or(defaults.max_phys_bits),
            fallback: flag(map, "paging-fallback"),
        });
    }
    o.writer_options = writer_options(map);
    o.filter = filter_options(map)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_is_a_manifest_key() {
        for d in OPTIONS {
            let mut m = OptionMap::new();
            insert(&mut m, d.name, d.sample_value()).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert!(!d.help.is_empty(), "{} has no help", d.name);
            if d.kind != Kind::Flag {
                assert!(!d.value_name.is_empty(), "{} has no value name", d.name);
            }
            if let Some(def) = d.default {
                check_value(d, def).unwrap_or_else(|e| panic!("{} default: {e}", d.name));
            }
            for other in d.requires.iter().chain(d.conflicts.iter()) {
                assert!(find(other).is_some(), "{}: {other}", d.name);
            }
        }
        let mut names: Vec<_> = OPTIONS.iter().map(|d| d.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), OPTIONS.len(), "an option is defined twice");
    }

    #[test]
    fn words_build_options() {
        let m = parse_words("format=kdump --compress=zstd paging elf-class=32").unwrap();
        assert_eq!(m["paging"], "1");
        let o = build(&m).unwrap();
        assert_eq!(o.format.as_deref(), Some("kdump"));
        assert!(o.paging.is_some());
        assert_eq!(o.writer_options["compress"], "zstd");
        assert_eq!(o.writer_options["elf-class"], "32");
        assert!(!o.writer_options.contains_key("paging"));
        // A flag turned off stays off.
        let m = parse_words("paging=no exclude-zero=off").unwrap();
        let o = build(&m).unwrap();
        assert!(o.paging.is_none());
        assert!(o.writer_options.is_empty());
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(parse_words("colour=blue")
            .unwrap_err()
            .contains("unknown option"));
        for bad in [
            "begin=zz",
            "max-phys-bits=60",
            "paging=maybe",
            "threads=0",
            "arch=sparc",
            "paging-cpus=some",
            "elf-class=16",
            "cpu=-1",
            "format=",
        ] {
            assert!(parse_words(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arch_and_paging_mode_names_parse() {
        for n in dumpconv_core::arch::known_names() {
            assert!(parse_arch(n).is_some(), "{n}");
        }
        assert!(parse_words("arch=vax").is_err());
        let registry = crate::Registry::builtin();
        let resolve = |m: &OptionMap| -> Result<dumpconv_core::CpuState> {
            let r = build(m)?.root.ok_or_else(|| Error::invalid("no root"))?;
            registry.cpu_from_root(r.arch, &r.mode, r.root)
        };
        for n in registry.mode_names() {
            let m = parse_words(&format!("cr3=0x1000 paging-mode={n}")).unwrap();
            assert!(resolve(&m).is_ok(), "{n}");
        }
        // A mode no walker knows is refused when the registry (with the plugins, which
        // may know more modes than the built-ins) resolves it.
        let m = parse_words("cr3=0x1000 paging-mode=6level").unwrap();
        let e = resolve(&m).unwrap_err().to_string();
        assert!(e.contains("unknown paging mode \"6level\""), "{e}");
    }

    #[test]
    fn cr3_needs_mode() {
        let m = parse_words("cr3=0x1000").unwrap();
        assert!(build(&m).is_err());
        let m = parse_words("cr3=0x1000 paging-mode=pae").unwrap();
        let o = build(&m).unwrap();
        assert_eq!(
            o.root,
            Some(RootRequest {
                arch: None,
                mode: "pae".into(),
                root: 0x1000
            })
        );
        assert!(o.cpus.is_none());
    }

    /// The formats each writer option concerns are what the built-in writers declare
    /// (plus whole-output compression for the formats that do not compress themselves).
    #[test]
    fn writer_options_match_the_writers_declarations() {
        let r = crate::Registry::builtin();
        for f in BUILTIN_FORMATS {
            let w = r.writer(f).unwrap();
            let mut takes: Vec<&str> = w.options().unwrap().to_vec();
            if !w.compresses_itself() {
                takes.extend(crate::pipeline::STREAM_KEYS);
            }
            takes.sort();
            let mut schema: Vec<&str> = OPTIONS
                .iter()
                .filter(|d| d.writer && d.formats.contains(f))
                .map(|d| d.name)
                .collect();
            schema.sort();
            assert_eq!(takes, schema, "{f}");
        }
    }
}
