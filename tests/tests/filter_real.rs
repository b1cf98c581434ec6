//! Page filtering on the real guests, against tools that know the kernel:
//! - crash (the host's, Debian 12's 8.0.2) reads our `-d 31` kdump as it reads QEMU's
//!   unfiltered ELF: `sys`, `bt -a`, `ps`, `log` identical;
//! - makedumpfile 1.7.6 (Debian 13 root, tests/reference-tools) leaves out exactly the
//!   frames we leave out, level by level, read from both files' bitmaps by the
//!   independent `kdump_excluded.py`;
//! - drgn walking `struct page` with the kernel's own helpers (`drgn_page_classes.py`)
//!   puts every frame we leave out in the same class.
//!
//! Skips, saying why, when a guest or the Debian 13 root is missing
//! (`DUMPCONV_REQUIRE_GUESTS=1` / `DUMPCONV_REQUIRE_REFTOOLS=1` make that a failure).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use dumpconv::output::Output;
use dumpconv::pipeline::convert;
use dumpconv_core::NoProgress;
use dumpconv_tests::guests::{crash_session, guest, guests, Guest, ALL};
use dumpconv_tests::reference_tools::{
    crash_d13, debian13, drgn_page_classes, kdump_excluded, makedumpfile_excluded, merge, subtract,
    Ranges,
};

/// Our kdump of the guest's QEMU ELF at `level`, in `dir`.
fn ours(g: &Guest, level: u32, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}-d{level}.kdump", g.name));
    let mut m = dumpconv::schema::OptionMap::new();
    dumpconv::schema::insert(&mut m, "dump-level", level.to_string()).unwrap();
    let opts = dumpconv::schema::build(&m).unwrap();
    convert(
        &g.file("phys.elf"),
        &Output::Path(out.clone()),
        &opts,
        &NoProgress,
    )
    .unwrap_or_else(|e| panic!("{}: -d {level}: {e}", g.name));
    out
}

fn show(r: &Ranges) -> String {
    let mut s: Vec<String> = r
        .iter()
        .take(8)
        .map(|(a, b)| format!("{a:#x}-{b:#x}"))
        .collect();
    if r.len() > 8 {
        s.push(format!("... ({} ranges)", r.len()));
    }
    s.join(" ")
}

#[test]
fn crash_reads_our_d31_kdump_as_the_unfiltered_dump() {
    const CMDS: &[&str] = &["sys", "bt -a", "ps", "log"];
    for g in guests().into_iter().filter(Guest::is_x86_64) {
        let vmlinux = g.file("vmlinux");
        let tmp = tempfile::tempdir().unwrap();
        let reference = crash_session(&vmlinux, &g.file("phys.elf"), CMDS);
        assert!(reference.contains("RELEASE"), "{}: {reference}", g.name);
        let d31 = ours(&g, 31, tmp.path());
        let filtered = crash_session(&vmlinux, &d31, CMDS);
        assert_eq!(
            filtered, reference,
            "{}: crash differs on our -d 31 kdump",
            g.name
        );
        // The filter did leave pages out: crash sees a partial dump.
        let (level, excluded) = kdump_excluded(&d31).unwrap();
        assert_eq!(level, 31);
        assert!(!excluded.is_empty(), "{}: nothing excluded", g.name);
    }
}

/// crash 8.0.6 (Debian 13 root) too: `sys`, `bt -a`, `log` of our `-d 31` kdump equal
/// its view of QEMU's unfiltered ELF (one guest: the root costs a namespace per run).
#[test]
fn crash_8_0_6_reads_our_d31_kdump_as_the_unfiltered_dump() {
    if debian13().is_none() {
        return;
    }
    let Some(g) = guest("x86_64-4level") else {
        return;
    };
    let cmds = ["sys", "bt -a", "log"];
    let strip = |t: String| {
        t.lines()
            .filter(|l| !l.trim_start().starts_with("DUMPFILE:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let vmlinux = g.file("vmlinux");
    let reference = strip(crash_d13(&g.file("phys.elf"), &vmlinux, &cmds).unwrap());
    assert!(reference.contains("RELEASE"), "{reference}");
    let tmp = tempfile::tempdir().unwrap();
    let d31 = ours(&g, 31, tmp.path());
    let filtered = strip(crash_d13(&d31, &vmlinux, &cmds).unwrap());
    assert_eq!(
        filtered, reference,
        "crash 8.0.6 differs on our -d 31 kdump"
    );
}

#[test]
fn excluded_frames_equal_makedumpfile_1_7_6_level_by_level() {
    if debian13().is_none() {
        return;
    }
    for name in ALL {
        let Some(g) = guest(name) else { continue };
        let tmp = tempfile::tempdir().unwrap();
        for level in [2, 4, 8, 16, 31] {
            let theirs = makedumpfile_excluded(name, level)
                .unwrap_or_else(|e| panic!("{name}: makedumpfile -d {level}: {e}"));
            let path = ours(&g, level, tmp.path());
            let (got_level, mine) = kdump_excluded(&path).unwrap();
            assert_eq!(got_level, level);
            let only_theirs = subtract(&theirs, &mine);
            let only_ours = subtract(&mine, &theirs);
            assert!(
                only_theirs.is_empty() && only_ours.is_empty(),
                "{name} -d {level}: only makedumpfile excludes {}; only we exclude {}",
                show(&only_theirs),
                show(&only_ours)
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// Each class we leave out (read back from single-level kdumps) is drgn's class of the
/// same name. drgn's `cache` does not ask for PG_lru (ours does, and keeps a file page
/// off the LRU): the guests have no such page (the script's `#` line says 0), so the
/// sets are equal; a difference there would be exactly such pages.
#[test]
fn excluded_classes_equal_drgn_page_classes() {
    let drgn_ok = Command::new("python3")
        .args(["-c", "import drgn"])
        .status()
        .is_ok_and(|s| s.success());
    if !drgn_ok {
        eprintln!("SKIP: python3 cannot import drgn (pip install drgn)");
        return;
    }
    for name in ["x86_64-4level", "x86_64-kaslr", "i386-pae"] {
        let Some(g) = guest(name) else { continue };
        if dumpconv_tests::reference_tools::vmlinux(&g).is_none() {
            eprintln!("SKIP: {name}: no debug vmlinux");
            continue;
        }
        // drgn 0.3.0 walks no i386 page tables: it reads QEMU's paging ELF there (the
        // virtual addresses are in its segments), the physical one on x86_64.
        let dump = if g.is_x86_64() {
            g.file("phys.elf")
        } else {
            g.file("paging.elf")
        };
        let classes = drgn_page_classes(&dump, &g)
            .unwrap_or_else(|e| panic!("{name}: drgn_page_classes.py: {e}"));
        let class = |c: &str| classes.get(c).cloned().unwrap_or_default();
        let tmp = tempfile::tempdir().unwrap();
        let excl = |level: u32| kdump_excluded(&ours(&g, level, tmp.path())).unwrap().1;
        let cache_all = excl(4);
        let cache = excl(2);
        let expect = [
            (
                "free",
                excl(16),
                merge([class("free"), class("offline")].concat()),
            ),
            ("user", excl(8), class("user")),
            ("cache", cache.clone(), class("cache")),
            (
                "cache-private",
                subtract(&cache_all, &cache),
                class("cache-private"),
            ),
        ];
        for (what, mine, theirs) in expect {
            let only_theirs = subtract(&theirs, &mine);
            let only_ours = subtract(&mine, &theirs);
            assert!(
                only_theirs.is_empty() && only_ours.is_empty(),
                "{name} {what}: only drgn says {}; only we say {}",
                show(&only_theirs),
                show(&only_ours)
            );
        }
    }
}

/// A raw image has no VMCOREINFO note: `-d 31` with no other flag finds the kernel's copy
/// in RAM and leaves out exactly what makedumpfile 1.7.6 leaves out of QEMU's ELF of the
/// same guest (x86_64 and i386 sampled; no `--arch`, no `--vmcoreinfo`), and the kdump
/// carries that VMCOREINFO.
#[test]
fn d31_of_a_raw_image_finds_vmcoreinfo_in_ram_and_equals_makedumpfile() {
    if debian13().is_none() {
        return;
    }
    for name in ["x86_64-4level", "i386-pae"] {
        let Some(g) = guest(name) else { continue };
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("raw-d31.kdump");
        let mut m = dumpconv::schema::OptionMap::new();
        dumpconv::schema::insert(&mut m, "dump-level", "31".to_string()).unwrap();
        let opts = dumpconv::schema::build(&m).unwrap();
        convert(
            &g.file("ram.raw"),
            &Output::Path(out.clone()),
            &opts,
            &NoProgress,
        )
        .unwrap_or_else(|e| panic!("{name}: ram.raw -d 31: {e}"));
        let theirs = makedumpfile_excluded(name, 31)
            .unwrap_or_else(|e| panic!("{name}: makedumpfile -d 31: {e}"));
        let (level, mine) = kdump_excluded(&out).unwrap();
        assert_eq!(level, 31);
        let only_theirs = subtract(&theirs, &mine);
        let only_ours = subtract(&mine, &theirs);
        assert!(
            only_theirs.is_empty() && only_ours.is_empty(),
            "{name} ram.raw -d 31: only makedumpfile excludes {}; only we exclude {}",
            show(&only_theirs),
            show(&only_ours)
        );
        // The same bytes whatever the number of threads classifying and compressing.
        let mut first: Option<Vec<u8>> = None;
        for threads in ["1", "3"] {
            let again = tmp.path().join(format!("raw-d31-t{threads}.kdump"));
            let mut m = dumpconv::schema::OptionMap::new();
            dumpconv::schema::insert(&mut m, "dump-level", "31".to_string()).unwrap();
            dumpconv::schema::insert(&mut m, "threads", threads.to_string()).unwrap();
            let opts = dumpconv::schema::build(&m).unwrap();
            convert(
                &g.file("ram.raw"),
                &Output::Path(again.clone()),
                &opts,
                &NoProgress,
            )
            .unwrap_or_else(|e| panic!("{name}: ram.raw -d 31 --threads {threads}: {e}"));
            let bytes = std::fs::read(&again).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(
                    *f == bytes,
                    "{name}: -d 31 --threads {threads} differs from --threads 1"
                ),
            }
        }
        let dump = dumpconv_formats::open(&out, &Default::default()).unwrap();
        let v = dump
            .vmcoreinfo
            .as_ref()
            .expect("the kdump carries VMCOREINFO");
        let qemu = dumpconv_formats::open(&g.file("phys.elf"), &Default::default()).unwrap();
        assert_eq!(
            v.osrelease(),
            qemu.vmcoreinfo.as_ref().and_then(|q| q.osrelease()),
            "{name}: the VMCOREINFO found in RAM is the guest kernel's"
        );
    }
}
