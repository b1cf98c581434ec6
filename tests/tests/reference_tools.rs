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
    count, debian13, intersect, kdump_bitmaps, makedumpfile_output, merge, subtract, Ranges,
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
