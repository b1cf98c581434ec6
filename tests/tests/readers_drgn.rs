//! drgn reads every kdump file we write of the real x86 guests, and reads the same
//! kernel from it as from QEMU's own ELF dump of the guest: the kernel release (drgn's
//! `UTS_RELEASE`, from VMCOREINFO, and `init_uts_ns`), `linux_banner`, every task (pid,
//! comm) and every printk record (seq, timestamp, text). `tests/readers/drgn_facts.py`
//! prints what drgn reads.
//!
//! drgn comes from PyPI (`pip install drgn`; the wheel bundles libkdumpfile, which is
//! what reads kdump files); `scripts/test.sh` installs it. It needs the kernel's debug
//! info: the guest cache's `vmlinux` (x86_64 guests), else the one in the `-dbg` .deb that
//! `ensure-guests.sh` downloaded, extracted once into `~/.cache/dumpconv/tools/vmlinux/`.
//!
//! libkdumpfile takes the architecture from the kdump header's utsname only when sysname,
//! release, version and machine are all filled: what this test guards (issue #18).
//!
//! The reference is QEMU's `phys.elf` on x86_64. drgn 0.3.0 has no i386 page-table
//! walker, so on a physical-only i386 ELF it cannot read kernel addresses ("could not
//! find memory segment"); on i386 the reference is QEMU's `paging.elf`, whose segments
//! carry the virtual addresses. (In a kdump file libkdumpfile translates, on both.)
//!
//! Every codec we write, seekable, and the flattened format on x86_64-4level and
//! i386-pae (one 64-bit and one 32-bit header layout); zlib seekable and zstd flattened
//! on the other guests; `DUMPCONV_DRGN_ALL=1` runs every output on every guest.
//!
//! Skips, saying why, when drgn or a guest is missing; `DUMPCONV_REQUIRE_DRGN=1` (set by
//! `scripts/test.sh`) makes a missing drgn a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use dumpconv::{build_plan, open_input, ConvertOptions, ConvertReport, Registry};
use dumpconv_core::{Arch, DumpWriter, FileSink, Progress, StreamSink, VmcoreInfoFile};
use dumpconv_kdump::KdumpWriter;
use dumpconv_tests::guests::guest;
use dumpconv_tests::reference_tools::vmlinux;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/readers/drgn_facts.py");
const CODECS: &[&str] = &["zlib", "zstd", "snappy", "lzo"];

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

/// The Python that has drgn (`DUMPCONV_PYTHON`, else python3), or None (skip).
fn python() -> Option<String> {
    let py = std::env::var("DUMPCONV_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import drgn"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    let msg = format!("drgn is not importable by {py} (pip install drgn)");
    assert!(!env_is("DUMPCONV_REQUIRE_DRGN", "1"), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

/// What drgn reads from `core`.
fn facts(py: &str, core: &Path, vmlinux: &Path) -> Result<Value, String> {
    let out = Command::new(py)
        .arg(SCRIPT)
        .arg(core)
        .arg(vmlinux)
        .output()
        .map_err(|e| format!("cannot run {py}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("bad JSON from {SCRIPT}: {e}"))
}

/// Warnings a conversion gave.
#[derive(Default)]
struct Warnings(Mutex<Vec<String>>);

impl Progress for Warnings {
    fn warn(&self, msg: &str) {
        self.0.lock().unwrap().push(msg.to_string());
    }
}

/// Convert `input` to a kdump file with `codec`, flattened (a stream) or seekable, the
/// way `dumpconv convert` does. Returns the warnings.
fn write_kdump(input: &Path, out: &Path, codec: &str, flattened: bool) -> Vec<String> {
    write_kdump_with(input, out, codec, flattened, ConvertOptions::default())
}

fn write_kdump_with(
    input: &Path,
    out: &Path,
    codec: &str,
    flattened: bool,
    opts: ConvertOptions,
) -> Vec<String> {
    let opts = ConvertOptions {
        writer_options: BTreeMap::from([("compress".to_string(), codec.to_string())]),
        ..opts
    };
    let progress = Warnings::default();
    let dump = open_input(input, &opts).unwrap();
    let mut report = ConvertReport::default();
    let plan = build_plan(&dump, &opts, &Registry::builtin(), &progress, &mut report).unwrap();
    let file = File::create(out).unwrap();
    if flattened {
        let mut sink = StreamSink::new(BufWriter::new(file), out);
        KdumpWriter
            .write(&plan, dump.memory.as_ref(), &mut sink, &progress)
            .unwrap();
    } else {
        let mut sink = FileSink::new(file, out);
        KdumpWriter
            .write(&plan, dump.memory.as_ref(), &mut sink, &progress)
            .unwrap();
    }
    let w = progress.0.lock().unwrap().clone();
    w
}

/// Where the kernel's VMCOREINFO note is in a RAM image (what /sys/kernel/vmcoreinfo
/// would have said): an ELF note header with namesz 11, then "VMCOREINFO\0", padding and
/// "OSRELEASE=".
fn find_vmcoreinfo_note(ram: &Path) -> Option<u64> {
    let bytes = std::fs::read(ram).ok()?;
    let pat = b"VMCOREINFO\0\0OSRELEASE=";
    let at = bytes.windows(pat.len()).position(|w| w == pat)?;
    let hdr = at.checked_sub(12)?;
    (bytes[hdr..hdr + 4] == 11u32.to_le_bytes()).then_some(hdr as u64)
}

/// The keys compared; `seconds` and `drgn` are not.
const KEYS: &[&str] = &[
    "arch",
    "uts_release",
    "release",
    "version",
    "banner",
    "tasks",
    "printk",
];

fn assert_same(what: &str, reference: &Value, got: &Value) {
    for k in KEYS {
        let (r, g) = (&reference[*k], &got[*k]);
        if r == g {
            continue;
        }
        if let (Some(ra), Some(ga)) = (r.as_array(), g.as_array()) {
            let first = ra.iter().zip(ga).position(|(a, b)| a != b);
            panic!(
                "{what}: {k} differs from QEMU's dump: {} vs {} entries, first difference at \
                 {first:?}: {:?} vs {:?}",
                ra.len(),
                ga.len(),
                first.and_then(|i| ra.get(i)),
                first.and_then(|i| ga.get(i)),
            );
        }
        panic!("{what}: {k} differs from QEMU's dump: {r} vs {g}");
    }
}

fn drgn_reads_our_kdump_files(name: &str) {
    let Some(py) = python() else { return };
    let Some(g) = guest(name) else { return };
    let all = env_is("DUMPCONV_DRGN_ALL", "1");
    let Some(vmlinux) = vmlinux(&g) else {
        let msg = format!("{name}: no debug vmlinux (guest cache or -dbg .deb)");
        assert!(!env_is("DUMPCONV_REQUIRE_DRGN", "1"), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    };
    let input = g.file("phys.elf");
    let reference_file = if g.is_x86_64() {
        input.clone()
    } else {
        g.file("paging.elf")
    };
    let t = Instant::now();
    let reference = facts(&py, &reference_file, &vmlinux)
        .unwrap_or_else(|e| panic!("{name}: drgn on QEMU's {}: {e}", reference_file.display()));
    eprintln!(
        "{name}: drgn on QEMU's {}: {:.2} s ({})",
        reference_file.file_name().unwrap().to_string_lossy(),
        t.elapsed().as_secs_f64(),
        reference["seconds"]
    );
    // The reference itself is what the guest ran.
    assert_eq!(
        reference["uts_release"], g.meta["kernel_release"],
        "{name}: QEMU's dump"
    );
    assert!(
        reference["tasks"].as_array().is_some_and(|t| t.len() > 10),
        "{name}: {}",
        reference["tasks"]
    );
    assert!(
        reference["printk"]
            .as_array()
            .is_some_and(|p| p.len() > 100),
        "{name}: few printk records"
    );

    let full = all || name == "x86_64-4level" || name == "i386-pae";
    let mut outputs: Vec<(&str, bool)> = Vec::new();
    if full {
        outputs.extend(CODECS.iter().map(|c| (*c, false)));
        outputs.push(("zlib", true));
    } else {
        outputs.extend([("zlib", false), ("zstd", true)]);
    }
    let dir = tempfile::tempdir().unwrap();
    for (codec, flattened) in outputs {
        let form = if flattened { "flattened" } else { "seekable" };
        let what = format!("{name}: kdump {codec} {form}");
        let out = dir.path().join(format!(
            "{codec}.{}",
            if flattened { "flat" } else { "kdump" }
        ));
        let t = Instant::now();
        let warnings = write_kdump(&input, &out, codec, flattened);
        let convert_s = t.elapsed().as_secs_f64();
        assert!(
            !warnings.iter().any(|w| w.contains("utsname")),
            "{what}: {warnings:?}"
        );
        let t = Instant::now();
        let got = facts(&py, &out, &vmlinux)
            .unwrap_or_else(|e| panic!("{what}: drgn cannot open it: {e}"));
        eprintln!(
            "{what}: convert {convert_s:.2} s, drgn {:.2} s ({}), {} tasks, {} printk records",
            t.elapsed().as_secs_f64(),
            got["seconds"],
            got["tasks"].as_array().map_or(0, Vec::len),
            got["printk"].as_array().map_or(0, Vec::len),
        );
        assert_same(&what, &reference, &got);
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn drgn_x86_64_4level() {
    drgn_reads_our_kdump_files("x86_64-4level");
}

#[test]
fn drgn_x86_64_kaslr() {
    drgn_reads_our_kdump_files("x86_64-kaslr");
}

#[test]
fn drgn_x86_64_la57() {
    drgn_reads_our_kdump_files("x86_64-la57");
}

#[test]
fn drgn_x86_64_highmem() {
    drgn_reads_our_kdump_files("x86_64-highmem");
}

#[test]
fn drgn_i386_pae() {
    drgn_reads_our_kdump_files("i386-pae");
}

#[test]
fn drgn_i386_2level() {
    drgn_reads_our_kdump_files("i386-2level");
}

/// A raw image (no VMCOREINFO of its own) with a copy of the guest's
/// `/sys/kernel/vmcoreinfo` ("ADDR SIZE"): the note is read from the image, and drgn reads
/// the kdump file made of it as it reads QEMU's ELF.
#[test]
fn drgn_reads_a_raw_image_given_sys_kernel_vmcoreinfo() {
    let name = "x86_64-4level";
    let Some(py) = python() else { return };
    let Some(g) = guest(name) else { return };
    let Some(vmlinux) = vmlinux(&g) else { return };
    let raw = g.file("ram.raw");
    let t = Instant::now();
    let paddr = find_vmcoreinfo_note(&raw).expect("the kernel's VMCOREINFO note in ram.raw");
    eprintln!(
        "{name}: VMCOREINFO note at {paddr:#x} in ram.raw (searched in {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("vmcoreinfo");
    // As the kernel prints it ("%pa %x").
    std::fs::write(&sys, format!("0x{paddr:016x} 1024\n")).unwrap();
    let file = VmcoreInfoFile::read(&sys).unwrap();
    assert_eq!(
        file,
        VmcoreInfoFile::Address {
            paddr,
            size: 0x1024
        }
    );
    let opts = ConvertOptions {
        arch: Some(Arch::X86_64),
        vmcoreinfo: Some(file),
        ..ConvertOptions::default()
    };
    let out = dir.path().join("raw.kdump");
    let warnings = write_kdump_with(&raw, &out, "zstd", false, opts);
    assert!(
        !warnings.iter().any(|w| w.contains("utsname")),
        "{warnings:?}"
    );
    let reference = facts(&py, &g.file("phys.elf"), &vmlinux).unwrap();
    let got = facts(&py, &out, &vmlinux)
        .unwrap_or_else(|e| panic!("{name}: drgn cannot open the kdump of ram.raw: {e}"));
    assert_same(
        &format!("{name}: ram.raw + /sys/kernel/vmcoreinfo"),
        &reference,
        &got,
    );
}

/// When memory cannot give the utsname (here VMCOREINFO without `SYMBOL(init_uts_ns)`),
/// the header's placeholder version still lets drgn open the file, with a warning.
#[test]
fn drgn_reads_a_kdump_with_the_placeholder_utsname() {
    let name = "x86_64-4level";
    let Some(py) = python() else { return };
    let Some(g) = guest(name) else { return };
    let Some(vmlinux) = vmlinux(&g) else { return };
    let text = std::fs::read_to_string(g.file("vmcoreinfo.txt")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("SYMBOL(init_uts_ns)="))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let vi = dir.path().join("vmcoreinfo.txt");
    std::fs::write(&vi, text).unwrap();
    let opts = ConvertOptions {
        arch: Some(Arch::X86_64),
        vmcoreinfo: Some(VmcoreInfoFile::read(&vi).unwrap()),
        ..ConvertOptions::default()
    };
    let out = dir.path().join("raw.kdump");
    let warnings = write_kdump_with(&g.file("ram.raw"), &out, "zlib", false, opts);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("utsname") && w.contains("init_uts_ns")),
        "{warnings:?}"
    );
    let b = std::fs::read(&out).unwrap();
    let version = &b[12 + 3 * 65..12 + 3 * 65 + dumpconv_kdump::PLACEHOLDER_VERSION.len()];
    assert_eq!(version, dumpconv_kdump::PLACEHOLDER_VERSION.as_bytes());
    let reference = facts(&py, &g.file("phys.elf"), &vmlinux).unwrap();
    let got = facts(&py, &out, &vmlinux)
        .unwrap_or_else(|e| panic!("{name}: drgn cannot open the placeholder header: {e}"));
    assert_same(&format!("{name}: placeholder utsname"), &reference, &got);
}
