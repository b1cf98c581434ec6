//! Tests of the page-filtering oracles themselves (not of dumpconv): makedumpfile 1.7.6
//! from the Debian 13 root, read by the independent `kdump_excluded.py`, and the drgn
//! walk of the kernel's `struct page` array (`drgn_page_classes.py`) agree where they
//! must. See `tests/reference-tools/README.md`.
//!
//! Skips, saying why, when the Debian 13 root or a guest is missing;
//! `DUMPCONV_REQUIRE_REFTOOLS=1` / `DUMPCONV_REQUIRE_GUESTS=1` (set by `scripts/test.sh`)
//! make that a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dumpconv_tests::guests::guest;
use dumpconv_tests::reference_tools::{
    count, debian13, drgn_page_classes, intersect, kdump_bitmaps, makedumpfile_output, merge,
    subtract, Ranges,
};

const LEVELS: &[u32] = &[1, 2, 4, 8, 16, 31];

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

/// makedumpfile 1.7.6 runs at every level on the guest's QEMU ELF, and what
/// kdump_excluded.py reads from its outputs is consistent: the header says the level it
/// was asked for, the classes nest (every single-bit level's excluded set is inside
/// -d 31's, and together they are -d 31's), a kdump keeps zero pages as shared zero
/// blocks instead of excluding them, and every excluded frame is RAM the guest had.
fn makedumpfile_levels(name: &str) {
    if debian13().is_none() {
        return;
    }
    let Some(g) = guest(name) else { return };
    let ram: Ranges = merge(
        g.ram_ranges()
            .iter()
            .map(|&(s, l)| (s >> 12, (s + l) >> 12))
            .collect(),
    );
    let mut by_level = std::collections::BTreeMap::new();
    for &level in LEVELS {
        let t = Instant::now();
        let out = makedumpfile_output(name, level)
            .unwrap_or_else(|e| panic!("{name}: makedumpfile -d {level}: {e}"));
        let b = &out.bitmaps;
        eprintln!(
            "{name} -d {level}: {} excluded frames in {} ranges, {} zero-block frames; {:.2} s \
             ({})",
            count(&b.excluded),
            b.excluded.len(),
            count(&b.zero),
            t.elapsed().as_secs_f64(),
            out.log.lines().last().unwrap_or("")
        );
        assert_eq!(b.dump_level, level, "{name}: {}", out.kdump.display());
        assert_eq!(b.block_size, 4096);
        assert!(!b.flattened);
        let outside = subtract(&b.excluded, &ram);
        assert!(
            outside.is_empty(),
            "{name} -d {level}: excluded frames outside the guest's RAM: {}",
            show(&outside)
        );
        if level & 1 == 0 {
            assert!(
                b.zero.is_empty(),
                "{name} -d {level}: zero blocks without bit 1"
            );
        }
        by_level.insert(level, b.clone());
    }
    let all = &by_level[&31].excluded;
    // Zero pages: kept in the bitmap with a shared zero block, not excluded.
    assert!(
        by_level[&1].excluded.is_empty(),
        "{name} -d 1 excludes frames"
    );
    assert!(
        count(&by_level[&1].zero) > 0,
        "{name}: -d 1 found no zero page"
    );
    let mut union = Vec::new();
    for level in [2, 4, 8, 16] {
        let e = &by_level[&level].excluded;
        let extra = subtract(e, all);
        assert!(
            extra.is_empty(),
            "{name}: -d {level} excludes frames -d 31 keeps: {}",
            show(&extra)
        );
        union.extend(e.iter().copied());
    }
    // -d 2 (cache without private) is inside -d 4 (all cache).
    let c2 = subtract(&by_level[&2].excluded, &by_level[&4].excluded);
    assert!(c2.is_empty(), "{name}: -d 2 not inside -d 4: {}", show(&c2));
    let union = merge(union);
    let only31 = subtract(all, &union);
    let only_union = subtract(&union, all);
    eprintln!(
        "{name}: -d 31 excludes {} frames, the union of -d 2/4/8/16 {}; only in -d 31: {} \
         ({}), only in the union: {}",
        count(all),
        count(&union),
        count(&only31),
        show(&only31),
        count(&only_union)
    );
    assert!(only_union.is_empty());
    // A page that is zero and also free/user/cache is excluded at -d 31, so -d 31 has
    // fewer zero-block frames than -d 1, and those it has are not excluded.
    assert!(intersect(&by_level[&31].zero, all).is_empty());
    assert!(count(&by_level[&31].zero) <= count(&by_level[&1].zero));
    assert!(
        only31.is_empty(),
        "{name}: -d 31 excludes more than its bits"
    );
}

#[test]
fn makedumpfile_levels_x86_64_4level() {
    makedumpfile_levels("x86_64-4level");
}

#[test]
fn makedumpfile_levels_i386_pae() {
    makedumpfile_levels("i386-pae");
}

/// kdump_excluded.py reads QEMU's flattened kdump exactly as its rearranged copy
/// (`makedumpfile -R`, made by the guest harness), and QEMU's kdump excludes nothing:
/// it stores every RAM page, zero pages as a shared zero block.
#[test]
fn kdump_excluded_reads_qemu_kdump_flattened_and_rearranged() {
    for name in ["x86_64-4level", "i386-pae"] {
        let Some(g) = guest(name) else { return };
        let flat = kdump_bitmaps(&g.file("kdump-zlib.flat")).unwrap();
        let seek = kdump_bitmaps(&g.file("kdump-zlib.rearranged.kdump")).unwrap();
        assert!(flat.flattened && !seek.flattened);
        assert_eq!(
            (&flat.excluded, &flat.zero, flat.max_mapnr, flat.dump_level),
            (&seek.excluded, &seek.zero, seek.max_mapnr, seek.dump_level),
            "{name}"
        );
        assert_eq!(seek.dump_level, 1, "{name}: QEMU writes dump_level 1");
        assert_eq!(seek.layout, 64, "{name}: QEMU writes the 64-bit header");
        assert!(seek.excluded.is_empty(), "{name}: {}", show(&seek.excluded));
        assert!(count(&seek.zero) > 0, "{name}");
    }
}

/// The dump drgn reads for a guest: QEMU's physical ELF on x86_64; on i386 QEMU's paging
/// ELF (drgn 0.3.0 has no i386 page-table walker, so it needs the virtual addresses in
/// the segments, and QEMU's kdump has the empty utsname libkdumpfile refuses, issue 18).
/// The guest was stopped while QEMU wrote both, so their memory is the same.
fn drgn_input(g: &dumpconv_tests::guests::Guest) -> std::path::PathBuf {
    if g.is_x86_64() {
        g.file("phys.elf")
    } else {
        g.file("paging.elf")
    }
}

/// makedumpfile 1.7.6 and the drgn walk of `struct page` agree class by class:
/// -d 16 excludes exactly drgn's free frames (buddy blocks, whole order), -d 8 the
/// user (anonymous) frames, -d 2 the page cache without private data, -d 4 all of the
/// page cache, -d 31 their union; -d 1's zero pages are drgn's all-zero frames. Frames
/// without a struct page (RAM the kernel does not manage, e.g. i386's top 128 KiB) are
/// outside drgn's view and reported separately. Every difference is printed.
fn oracles_agree(name: &str) {
    let Some(_d) = debian13() else { return };
    let Some(g) = guest(name) else { return };
    if dumpconv_tests::reference_tools::vmlinux(&g).is_none() {
        let msg = format!("{name}: no debug vmlinux (guest cache or -dbg .deb)");
        assert!(
            !std::env::var("DUMPCONV_REQUIRE_REFTOOLS").is_ok_and(|v| v == "1"),
            "{msg}"
        );
        eprintln!("SKIP: {msg}");
        return;
    }
    let t = Instant::now();
    let input = drgn_input(&g);
    let classes = drgn_page_classes(&input, &g)
        .unwrap_or_else(|e| panic!("{name}: drgn_page_classes.py on {}: {e}", input.display()));
    eprintln!(
        "{name}: drgn page classes of {} in {:.1} s",
        input.display(),
        t.elapsed().as_secs_f64()
    );
    let class = |c: &str| merge(classes.get(c).cloned().unwrap_or_default());
    let memmap = class("memmap");
    assert!(count(&memmap) > 0, "{name}: drgn found no struct page");
    let mdf = |level: u32| {
        makedumpfile_output(name, level)
            .unwrap_or_else(|e| panic!("{name}: makedumpfile -d {level}: {e}"))
            .bitmaps
    };
    let cache_all = merge([class("cache"), class("cache-private")].concat());
    let union31 = merge([class("free"), class("user"), cache_all.clone()].concat());
    let d31 = mdf(31);
    let expectations: Vec<(String, Ranges, Ranges)> = vec![
        (
            "-d 16 excluded vs drgn free".into(),
            mdf(16).excluded,
            class("free"),
        ),
        (
            "-d 8 excluded vs drgn user".into(),
            mdf(8).excluded,
            class("user"),
        ),
        (
            "-d 2 excluded vs drgn cache".into(),
            mdf(2).excluded,
            class("cache"),
        ),
        (
            "-d 4 excluded vs drgn cache + cache-private".into(),
            mdf(4).excluded,
            cache_all,
        ),
        (
            "-d 31 excluded vs drgn free + user + cache + cache-private".into(),
            d31.excluded.clone(),
            union31,
        ),
        (
            "-d 1 zero blocks (frames with a struct page) vs drgn zero".into(),
            intersect(&mdf(1).zero, &memmap),
            class("zero"),
        ),
        (
            "-d 31 zero blocks (frames with a struct page) vs drgn zero not excluded".into(),
            intersect(&d31.zero, &memmap),
            subtract(&class("zero"), &d31.excluded),
        ),
    ];
    let mut bad = Vec::new();
    for (what, m, d) in &expectations {
        let (only_m, only_d) = (subtract(m, d), subtract(d, m));
        eprintln!(
            "{name}: {what}: makedumpfile {} frames, drgn {}; only makedumpfile: {} [{}], \
             only drgn: {} [{}]",
            count(m),
            count(d),
            count(&only_m),
            show(&only_m),
            count(&only_d),
            show(&only_d)
        );
        if !only_m.is_empty() || !only_d.is_empty() {
            bad.push(what.clone());
        }
    }
    // What lies outside drgn's view: makedumpfile's excluded frames must all have a
    // struct page (it decides from struct page too); its zero blocks may not.
    let outside = subtract(&mdf(1).zero, &memmap);
    eprintln!(
        "{name}: -d 1 zero blocks without a struct page (not classified by drgn): {} [{}]",
        count(&outside),
        show(&outside)
    );
    assert!(
        subtract(&d31.excluded, &memmap).is_empty(),
        "{name}: makedumpfile excluded frames without a struct page"
    );
    assert!(bad.is_empty(), "{name}: the oracles disagree on {bad:?}");
}

#[test]
fn oracles_agree_x86_64_4level() {
    oracles_agree("x86_64-4level");
}

#[test]
fn oracles_agree_i386_pae() {
    oracles_agree("i386-pae");
}

/// The other guests when `DUMPCONV_REFTOOLS_ALL=1` (the highmem guest alone takes ~3 min
/// of makedumpfile runs and ~30 s of drgn the first time; results are cached).
#[test]
fn oracles_agree_all_guests_on_request() {
    if !std::env::var("DUMPCONV_REFTOOLS_ALL").is_ok_and(|v| v == "1") {
        eprintln!("SKIP: set DUMPCONV_REFTOOLS_ALL=1 to check every x86 guest");
        return;
    }
    for name in [
        "x86_64-kaslr",
        "x86_64-la57",
        "x86_64-highmem",
        "i386-2level",
    ] {
        makedumpfile_levels(name);
        oracles_agree(name);
    }
}
