//! kdump output and input against the real tools: makedumpfile (`-R`, `--dump-dmesg`,
//! re-filtering) and crash, on synthetic memory and on the real QEMU guests of
//! `tests/real-guests/` (QEMU's own `kdump-*.flat` read back against `phys.elf`).
//!
//! Every test skips, saying why, when a tool or the guest cache is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kdump_util;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dumpconv_core::{
    Arch, Dump, DumpPlan, DumpWriter, FileSink, NoProgress, PhysRange, StreamSink,
};
use dumpconv_formats::OpenOptions;
use dumpconv_kdump::KdumpWriter;
use dumpconv_tests::guests::{guests, Guest};
use kdump_util::*;

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIP: {tool} is not installed (apt-get install {tool})");
    }
    found
}

fn sh(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `makedumpfile -R out < flat`.
fn rearrange(flat: &Path, out: &Path) {
    // makedumpfile refuses to overwrite.
    let _ = std::fs::remove_file(out);
    let (ok, text) = sh(Command::new("makedumpfile")
        .arg("-R")
        .arg(out)
        .stdin(File::open(flat).unwrap()));
    assert!(ok, "makedumpfile -R {}: {text}", flat.display());
}

#[test]
fn makedumpfile_rearranges_our_stream_into_our_seekable_file() {
    if !have("makedumpfile") {
        return;
    }
    let ranges = vec![
        PhysRange::new(0, 0x9f000),
        PhysRange::new(0x10_0000, 0x90_0000),
    ];
    let img = Image::new(&ranges, realistic_page);
    for (arch, opts) in [
        (Arch::X86_64, &[("compress", "zlib")][..]),
        (Arch::X86_64, &[("compress", "zstd"), ("exclude-zero", "1")]),
        (Arch::X86, &[("compress", "lzo")]),
    ] {
        let p = plan(arch, &ranges, notes_with_vmcoreinfo(2), opts);
        let seek = write_file(&p, &img.mem, &img.out("seek.kdump"));
        std::fs::write(img.out("s.flat"), write_stream(&p, &img.mem)).unwrap();
        rearrange(&img.out("s.flat"), &img.out("r.kdump"));
        let r = std::fs::read(img.out("r.kdump")).unwrap();
        assert_eq!(r.len(), seek.len(), "{opts:?}");
        assert!(
            r == seek,
            "{opts:?}: makedumpfile -R output differs from ours"
        );
    }
}

#[test]
fn crash_reads_our_headers_without_vmlinux() {
    if !have("crash") {
        return;
    }
    let ranges = vec![
        PhysRange::new(0, 0x9f000),
        PhysRange::new(0x10_0000, 0x40_0000),
    ];
    let img = Image::new(&ranges, realistic_page);
    for (codec, stream) in [
        ("zlib", false),
        ("zstd", true),
        ("snappy", false),
        ("lzo", false),
    ] {
        let p = plan(
            Arch::X86_64,
            &ranges,
            notes_with_vmcoreinfo(2),
            &[("compress", codec)],
        );
        let path = img.out(&format!("{codec}.kdump"));
        if stream {
            std::fs::write(&path, write_stream(&p, &img.mem)).unwrap();
        } else {
            write_file(&p, &img.mem, &path);
        }
        let (ok, text) = sh(Command::new("crash").arg("--osrelease").arg(&path));
        assert!(
            ok && text.trim() == "6.1.0-56-amd64",
            "{codec}: crash --osrelease: {text}"
        );
    }
}

/// Build the plan the CLI would for a whole-memory conversion.
fn plan_for(d: &Dump, opts: &[(&str, &str)]) -> DumpPlan {
    let arch = d.arch.unwrap_or(Arch::X86_64);
    DumpPlan {
        filter: None,
        arch,
        page_size: 4096,
        ranges: d.memory.ranges().to_vec(),
        mappings: None,
        notes: dumpconv_formats::notes::plan_notes(&d.notes, &d.cpus, d.vmcoreinfo.as_ref(), arch),
        cpus: d.cpus.clone(),
        vmcoreinfo: d.vmcoreinfo.clone(),
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn convert(input: &Path, out: &Path, opts: &[(&str, &str)], stream: bool) -> DumpPlan {
    let d = dumpconv_formats::open(input, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", input.display()));
    let p = plan_for(&d, opts);
    let f = File::create(out).unwrap();
    if stream {
        let mut s = StreamSink::new(std::io::BufWriter::new(f), out);
        KdumpWriter
            .write(&p, d.memory.as_ref(), &mut s, &NoProgress)
            .unwrap();
    } else {
        let mut s = FileSink::new(f, out);
        KdumpWriter
            .write(&p, d.memory.as_ref(), &mut s, &NoProgress)
            .unwrap();
    }
    p
}

/// Every byte of `want`'s RAM reads the same from `got` (pages `got` lacks are errors).
fn assert_same_bytes(want: &Dump, got: &Dump, what: &str) {
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    for r in want.memory.ranges() {
        let mut at = r.start;
        while at < r.end {
            let n = ((r.end - at).min(1 << 20)) as usize;
            want.memory.read_at(at, &mut a[..n]).unwrap();
            got.memory
                .read_at(at, &mut b[..n])
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(a[..n] == b[..n], "{what}: bytes differ in {at:#x}..+{n:#x}");
            at += n as u64;
        }
    }
}

#[test]
fn sample_qemu_elf_converts_and_reads_back() {
    // samples/tiny-x86_64.elf: a real QEMU 7.2 ELF dump, kept in git (no cache needed).
    let elf_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/tiny-x86_64.elf");
    let elf = dumpconv_formats::open(&elf_path, &OpenOptions::default()).unwrap();
    let dir = scratch();
    for (codec, stream) in [("zlib", false), ("zstd", true), ("lzo", false)] {
        let out = dir.path().join(format!("tiny-{codec}.kdump"));
        let plan = convert(&elf_path, &out, &[("compress", codec)], stream);
        let d = dumpconv_formats::open(&out, &OpenOptions::default()).unwrap();
        assert_eq!(d.format, "kdump");
        assert_same_bytes(&elf, &d, &out.display().to_string());
        assert_eq!(d.notes, plan.notes);
        assert_eq!(d.cpus.len(), elf.cpus.len());
        assert_eq!(
            d.cpus.iter().map(|c| c.regs.clone()).collect::<Vec<_>>(),
            elf.cpus.iter().map(|c| c.regs.clone()).collect::<Vec<_>>()
        );
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn vmlinux(g: &Guest) -> Option<PathBuf> {
    let v = g.file("vmlinux");
    v.exists().then_some(v)
}

#[test]
fn qemu_kdump_files_read_like_phys_elf() {
    for g in guests() {
        let elf = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
        let mut found = 0;
        for entry in std::fs::read_dir(&g.dir).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if !(name.starts_with("kdump-")
                && (name.ends_with(".flat") || name.ends_with(".kdump")))
            {
                continue;
            }
            found += 1;
            let d = dumpconv_formats::kdump::open_kdump(std::slice::from_ref(&p))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            eprintln!("{}: {:?}", p.display(), d.details);
            assert_same_bytes(&elf, &d, &p.display().to_string());
            assert_eq!(d.arch, elf.arch, "{}", p.display());
            assert!(d.vmcoreinfo.is_some(), "{}: no VMCOREINFO", p.display());
            assert_eq!(d.cpus.len(), elf.cpus.len(), "{}", p.display());
        }
        if found == 0 {
            eprintln!("SKIP: {}: no QEMU kdump files", g.name);
        }
    }
}

/// Every page of `got`'s RAM equals `want` or is reported excluded; returns the number
/// of excluded pages.
fn assert_same_or_excluded(want: &Dump, got: &Dump, what: &str) -> u64 {
    let mut excluded = 0;
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    for r in got.memory.ranges() {
        for at in (r.start..r.end).step_by(4096) {
            match got.memory.read_at(at, &mut b) {
                Ok(()) => {
                    want.memory.read_at(at, &mut a).unwrap();
                    assert!(a == b, "{what}: page {at:#x} differs");
                }
                Err(dumpconv_core::Error::PageUnavailable {
                    why: "excluded from the dump",
                    ..
                }) => excluded += 1,
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
    excluded
}

#[test]
fn makedumpfile_outputs_read_like_its_input() {
    if !have("makedumpfile") {
        return;
    }
    // makedumpfile 1.7.2 rejects QEMU 7.2's ELF ("Can't get the number of PT_LOAD") but
    // takes dumpconv's ELF of it; its kdump output (zlib, lzo, filtered, flattened,
    // split) must then read back through our reader as the ELF reads.
    for g in guests().into_iter().filter(|g| g.is_x86_64()).take(2) {
        let dir = scratch();
        let elf_path = dir.path().join("in.elf");
        let d = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
        let p = plan_for(&d, &[]);
        let mut sink = FileSink::new(File::create(&elf_path).unwrap(), &elf_path);
        dumpconv_elf::ElfWriter
            .write(&p, d.memory.as_ref(), &mut sink, &NoProgress)
            .unwrap();
        let elf = dumpconv_formats::open(&elf_path, &OpenOptions::default()).unwrap();
        let mdf = |args: &[&str], outs: &[&str]| -> Vec<PathBuf> {
            let outs: Vec<PathBuf> = outs.iter().map(|o| dir.path().join(o)).collect();
            let (ok, text) = sh(Command::new("makedumpfile")
                .args(args)
                .arg(&elf_path)
                .args(&outs));
            assert!(ok, "{}: makedumpfile {args:?}: {text}", g.name);
            outs
        };
        for (args, codec) in [
            (&["-c", "-d", "0"][..], "zlib"),
            (&["-l", "-d", "0"], "lzo"),
        ] {
            let out = mdf(args, &["o.kdump"]);
            let k = dumpconv_formats::kdump::open_kdump(&out).unwrap();
            assert_eq!(detail(&k, "codec"), Some(codec));
            assert_eq!(assert_same_or_excluded(&elf, &k, codec), 0);
            std::fs::remove_file(&out[0]).unwrap();
        }
        let out = mdf(&["-c", "-d", "31"], &["d31.kdump"]);
        let k = dumpconv_formats::kdump::open_kdump(&out).unwrap();
        assert!(assert_same_or_excluded(&elf, &k, "-d 31") > 1000);
        let parts = mdf(&["-c", "-d", "0", "--split"], &["s1", "s2", "s3"]);
        let k = dumpconv_formats::kdump::open_kdump(&[
            parts[2].clone(),
            parts[0].clone(),
            parts[1].clone(),
        ])
        .unwrap();
        assert!(detail(&k, "split").is_some());
        assert_eq!(assert_same_or_excluded(&elf, &k, "--split"), 0);
        // -F writes the flattened format to stdout.
        let flat = dir.path().join("f.flat");
        let (ok, text) = sh(Command::new("makedumpfile")
            .args(["-F", "-c", "-d", "0"])
            .arg(&elf_path)
            .stdout(File::create(&flat).unwrap()));
        assert!(ok, "makedumpfile -F: {text}");
        let k = dumpconv_formats::kdump::open_kdump(&[flat]).unwrap();
        assert!(detail(&k, "container").unwrap().contains("flattened"));
        assert_eq!(assert_same_or_excluded(&elf, &k, "-F"), 0);
    }
}

#[test]
fn i386_crash_reads_our_32bit_headers() {
    // crash here is an x86_64 build; an i386 build (e.g. Debian's crash:i386 unpacked
    // with its libraries) can be named by DUMPCONV_CRASH32, a command taking crash's
    // arguments. QEMU's kdump of these guests uses the 64-bit layout, which crash i386
    // cannot read ("cannot malloc block_size buffer"); ours uses the 32-bit one.
    let Some(crash32) = std::env::var_os("DUMPCONV_CRASH32") else {
        eprintln!("SKIP: DUMPCONV_CRASH32 is not set (an i386 crash command)");
        return;
    };
    for g in guests().into_iter().filter(|g| !g.is_x86_64()) {
        let dir = scratch();
        for (codec, stream) in [("zlib", false), ("lzo", true), ("zstd", false)] {
            let out = dir.path().join(format!("{codec}.kdump"));
            let plan = convert(&g.file("phys.elf"), &out, &[("compress", codec)], stream);
            let release = plan
                .vmcoreinfo
                .as_ref()
                .and_then(|v| v.osrelease())
                .unwrap_or_default();
            let (ok, text) = sh(Command::new(&crash32).arg("--osrelease").arg(&out));
            assert!(
                ok && text.trim() == release,
                "{}: crash i386 --osrelease: {text}",
                g.name
            );
        }
    }
}

/// The commands `tests/real-guests/ensure-guests.sh` runs for `crash-ref.txt`.
const CRASH_REF_CMDS: &[&str] = &[
    "sys",
    "bt -a",
    "ps",
    "log",
    "kmem -i",
    "list task_struct.tasks -h init_task -s task_struct.pid,comm",
    "quit",
];

/// crash's output on `dump` with the reference commands, run next to the guest's
/// vmlinux as the reference run was; the DUMPFILE line is normalised.
fn crash_output(g: &Guest, dump: &Path, extra: &[&str]) -> String {
    let dir = scratch();
    std::os::unix::fs::symlink(g.file("vmlinux"), dir.path().join("vmlinux")).unwrap();
    std::os::unix::fs::symlink(dump, dir.path().join("dump")).unwrap();
    std::fs::write(dir.path().join("cmds"), CRASH_REF_CMDS.join("\n") + "\n").unwrap();
    let out = Command::new("timeout")
        .args(["300", "crash"])
        .args(extra)
        .args(["-s", "vmlinux", "dump", "-i", "cmds"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    normalise_crash(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn normalise_crash(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("DUMPFILE:") {
                "    DUMPFILE: (dump)"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn crash_and_makedumpfile_read_our_kdump_of_real_guests() {
    let tools = have("crash") && have("makedumpfile");
    for g in guests() {
        let dir = scratch();
        let ours = dir.path().join("ours.kdump");
        let flat = dir.path().join("ours.flat");
        let plan = convert(&g.file("phys.elf"), &ours, &[], false);
        convert(&g.file("phys.elf"), &flat, &[], true);
        let zstd = dir.path().join("ours-zstd.flat");
        convert(&g.file("phys.elf"), &zstd, &[("compress", "zstd")], true);
        // Our reader: the same bytes as the ELF.
        let elf = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
        for p in [&ours, &flat, &zstd] {
            let d = dumpconv_formats::kdump::open_kdump(std::slice::from_ref(p)).unwrap();
            assert_same_bytes(&elf, &d, &p.display().to_string());
            assert_eq!(d.notes, plan.notes);
        }
        if !tools {
            continue;
        }
        // makedumpfile -R of our stream is our seekable file.
        let r = dir.path().join("r.kdump");
        rearrange(&flat, &r);
        assert!(
            std::fs::read(&r).unwrap() == std::fs::read(&ours).unwrap(),
            "{}: makedumpfile -R differs from our seekable output",
            g.name
        );
        if !g.is_x86_64() {
            // crash and makedumpfile here are x86_64 builds: they refuse i386 dumps
            // ("machine type mismatch"), ours and QEMU's alike.
            eprintln!(
                "SKIP: {}: crash/makedumpfile here are x86_64 builds",
                g.name
            );
            continue;
        }
        let release = plan
            .vmcoreinfo
            .as_ref()
            .and_then(|v| v.osrelease())
            .unwrap_or_default()
            .to_string();
        // crash --osrelease works without vmlinux.
        let (ok, text) = sh(Command::new("crash").arg("--osrelease").arg(&ours));
        assert!(
            ok && text.trim() == release,
            "{}: crash --osrelease: {text}",
            g.name
        );
        // makedumpfile reads the kernel log through our VMCOREINFO.
        let dmesg = dir.path().join("dmesg.txt");
        let (ok, text) = sh(Command::new("makedumpfile")
            .arg("--dump-dmesg")
            .arg(&ours)
            .arg(&dmesg));
        assert!(ok, "{}: makedumpfile --dump-dmesg: {text}", g.name);
        let log = std::fs::read_to_string(&dmesg).unwrap_or_default();
        assert!(log.contains("Linux version"), "{}: dmesg", g.name);
        // Re-filtering: makedumpfile must treat our file as it treats QEMU's kdump of
        // the same guest (makedumpfile 1.7.2 refuses to filter 6.1 kernels either way).
        let qemu = g.file("kdump-zlib.rearranged.kdump");
        if qemu.exists() {
            let run = |input: &Path, name: &str| {
                let out = dir.path().join(name);
                let (ok, text) = sh(Command::new("makedumpfile")
                    .args(["-c", "-d", "1"])
                    .arg(input)
                    .arg(&out));
                (ok, text, out)
            };
            let (qok, qtext, _) = run(&qemu, "qemu-refiltered");
            let (ok, text, out) = run(&ours, "refiltered");
            assert_eq!(ok, qok, "{}: ours: {text}\nQEMU's: {qtext}", g.name);
            if ok {
                let d = dumpconv_formats::kdump::open_kdump(&[out]).unwrap();
                assert_eq!(d.memory.ranges(), plan.ranges.as_slice());
            } else {
                eprintln!(
                    "SKIP: {}: makedumpfile -c -d 1 fails on QEMU's kdump too: {}",
                    g.name,
                    qtext.lines().last().unwrap_or("")
                );
            }
        }
        // crash with vmlinux says exactly what it says about QEMU's phys.elf.
        let reference = std::fs::read_to_string(g.file("crash-ref.txt"));
        match (vmlinux(&g), reference) {
            (Some(_), Ok(reference)) if g.is_x86_64() => {
                let want = normalise_crash(&reference);
                // The flattened zstd file on one guest only: each crash run takes a while.
                let files = if g.name == "x86_64-4level" {
                    vec![&ours, &zstd]
                } else {
                    vec![&ours]
                };
                for p in files {
                    let got = crash_output(&g, p, &[]);
                    assert!(
                        got.contains(&release),
                        "{}: crash on {}: {got}",
                        g.name,
                        p.display()
                    );
                    assert_eq!(
                        got,
                        want,
                        "{}: crash on {} differs from crash on phys.elf",
                        g.name,
                        p.display()
                    );
                }
            }
            (Some(_), Ok(_)) => eprintln!("SKIP: {}: crash here is an x86_64 build", g.name),
            _ => eprintln!("SKIP: {}: no vmlinux or crash-ref.txt for crash", g.name),
        }
    }
}

/// Issue #19: a real guest's 512 MiB of RAM placed at the start of a 16 GiB sparse raw
/// image (the rest a hole), converted with the guest's notes. The kdump files are
/// compact (apparent size within 5% of the allocated size), read back byte for byte,
/// and crash and makedumpfile read them as they read QEMU's phys.elf of the guest.
#[test]
fn crash_and_makedumpfile_read_our_kdump_of_a_sparse_16g_image() {
    use std::os::unix::fs::MetadataExt;
    let Some(g) = guests().into_iter().find(|g| g.name == "x86_64-4level") else {
        eprintln!("SKIP: no x86_64-4level guest");
        return;
    };
    let dir = scratch();
    let sparse = dir.path().join("sparse16.raw");
    let (ok, text) = sh(Command::new("cp")
        .arg("--sparse=always")
        .arg(g.file("ram.raw"))
        .arg(&sparse));
    assert!(ok, "cp: {text}");
    File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let elf = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
    let raw = dumpconv_formats::open(&sparse, &OpenOptions::default()).unwrap();
    assert_eq!(raw.memory.ranges(), &[PhysRange::new(0, 16 << 30)]);
    let write = |name: &str, opts: &[(&str, &str)], stream: bool| -> PathBuf {
        let mut p = plan_for(&elf, opts);
        p.ranges = raw.memory.ranges().to_vec();
        let out = dir.path().join(name);
        let f = File::create(&out).unwrap();
        if stream {
            let mut s = StreamSink::new(std::io::BufWriter::new(f), &out);
            KdumpWriter
                .write(&p, raw.memory.as_ref(), &mut s, &NoProgress)
                .unwrap();
        } else {
            let mut s = FileSink::new(f, &out);
            KdumpWriter
                .write(&p, raw.memory.as_ref(), &mut s, &NoProgress)
                .unwrap();
        }
        out
    };
    let ours = write("ours.kdump", &[], false);
    let ez = write("ez.kdump", &[("exclude-zero", "1")], false);
    let zstd = write("zstd.kdump", &[("compress", "zstd")], false);
    let flat = write("zstd.flat", &[("compress", "zstd")], true);
    for p in [&ours, &ez, &zstd] {
        let m = std::fs::metadata(p).unwrap();
        let allocated = m.blocks() * 512;
        eprintln!(
            "{}: {} bytes apparent, {allocated} allocated",
            p.display(),
            m.len()
        );
        assert!(
            m.len() as f64 <= 1.05 * allocated as f64,
            "{}: {} bytes apparent, {allocated} allocated",
            p.display(),
            m.len()
        );
    }
    // Our reader: the guest's RAM as in its pmemsave image, and zeros above it.
    let d = dumpconv_formats::kdump::open_kdump(std::slice::from_ref(&ours)).unwrap();
    let pmemsave = dumpconv_formats::open(&g.file("ram.raw"), &OpenOptions::default()).unwrap();
    assert_same_bytes(&pmemsave, &d, "sparse16 kdump");
    let mut page = vec![0xaau8; 4096];
    d.memory.read_at((16 << 30) - 4096, &mut page).unwrap();
    assert!(page.iter().all(|&b| b == 0));
    let dz = dumpconv_formats::kdump::open_kdump(std::slice::from_ref(&ez)).unwrap();
    assert_eq!(dz.memory.ranges(), &[PhysRange::new(0, 16 << 30)]);
    if !(have("crash") && have("makedumpfile")) {
        return;
    }
    rearrange(&flat, &dir.path().join("r.kdump"));
    assert!(
        std::fs::read(dir.path().join("r.kdump")).unwrap() == std::fs::read(&zstd).unwrap(),
        "makedumpfile -R of the sparse image's stream differs from the seekable file"
    );
    let release = elf
        .vmcoreinfo
        .as_ref()
        .and_then(|v| v.osrelease())
        .unwrap_or_default()
        .to_string();
    for p in [&ours, &ez] {
        let (ok, text) = sh(Command::new("crash").arg("--osrelease").arg(p));
        assert!(ok && text.trim() == release, "crash --osrelease: {text}");
    }
    // makedumpfile reads the log of the default file (it stops at the first excluded
    // page it reads, and with exclude-zero the log ring's zero pages are excluded).
    let dmesg = dir.path().join("dmesg.txt");
    let (ok, text) = sh(Command::new("makedumpfile")
        .arg("--dump-dmesg")
        .arg(&ours)
        .arg(&dmesg));
    assert!(ok, "makedumpfile --dump-dmesg: {text}");
    let log = std::fs::read_to_string(&dmesg).unwrap_or_default();
    assert!(log.contains("Linux version"), "dmesg: {log}");
    let reference = std::fs::read_to_string(g.file("crash-ref.txt"));
    match (vmlinux(&g), reference) {
        (Some(_), Ok(reference)) => {
            let want = normalise_crash(&reference);
            // The compact file (the default one has the same layout as before, every
            // page dumpable); each crash run takes a while.
            let got = crash_output(&g, &ez, &["--zero_excluded"]);
            assert_eq!(
                got,
                want,
                "crash on {} differs from crash on phys.elf",
                ez.display()
            );
        }
        _ => eprintln!("SKIP: no vmlinux or crash-ref.txt for crash"),
    }
}
