//! The AArch64 walker (`dumpconv-aarch64`) against the independent reference translator
//! (`dumpconv_tests::reference_arm64`, written from the Arm ARM), on synthetic guests
//! (`dumpconv_tests::synth_arm64`): every granule (4KB, 16KB, 64KB) and VA size (39, 42,
//! 47, 48, and 52 where the granule allows), both TTBR halves, blocks at every legal
//! level, checked page by page (every mapped page, and samples of unmapped addresses);
//! random layouts (proptest); loops, tables outside RAM and garbage descriptors bounded
//! and counted; single-address translation with level names; CPU states from a root and
//! from VMCOREINFO.

use dumpconv_aarch64::Aarch64Walker;
use dumpconv_core::paging::Regime;
use dumpconv_core::{
    build_view, Arch, ArchWalker, CpuState, Mapping, MappingList, ViewPolicy, VmcoreInfo,
    WalkOptions, WalkStats,
};
use dumpconv_tests::reference_arm64::translate as reference;
use dumpconv_tests::synth_arm64::{
    Arm64Guest, Granule, AF, ATTR_NORMAL, CONT, NG, PXN, SW_BITS, TABLE_ATTRS, UXN, VALID,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------
// Helpers

/// xorshift64*: reproducible sampling without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The guest's CPU as the walker sees it: its system registers by name.
fn cpu(g: &Arm64Guest, index: u32) -> CpuState {
    g.cpu(index)
}

fn walk_with(
    g: &Arm64Guest,
    opts: &WalkOptions,
) -> dumpconv_core::Result<(MappingList, WalkStats)> {
    let mut out = MappingList::new();
    let stats = Aarch64Walker.walk(&cpu(g, 0), &g.memory(), opts, &mut out)?;
    Ok((out, stats))
}

fn walk(g: &Arm64Guest) -> (MappingList, WalkStats) {
    walk_with(g, &WalkOptions::default()).expect("walk")
}

fn end(m: &Mapping) -> u128 {
    m.virt as u128 + m.len as u128
}

fn ram_bytes(g: &Arm64Guest, phys: u64, len: u64) -> u64 {
    g.ranges
        .iter()
        .map(|&(s, e)| {
            let (a, b) = (s.max(phys), e.min(phys.saturating_add(len)));
            b.saturating_sub(a)
        })
        .sum()
}

/// Every run the walker emitted agrees with the reference, 4 KiB by 4 KiB (at most
/// `budget` pages, evenly strided beyond that), runs ascending and disjoint.
fn check_runs(g: &Arm64Guest, list: &MappingList, budget: u64) {
    let ram = g.ref_ram();
    let rc = g.ref_cpu();
    for w in list.runs().windows(2) {
        assert!(end(&w[0]) <= w[1].virt as u128, "runs overlap: {w:x?}");
    }
    let total: u64 = list.runs().iter().map(|m| m.len.div_ceil(0x1000)).sum();
    let stride = (total / budget.max(1)).max(1);
    let mut n = 0u64;
    for m in list.runs() {
        let mut off = 0;
        while off < m.len {
            if n.is_multiple_of(stride) {
                for o in [off, (off + 0xFFF).min(m.len - 1)] {
                    assert_eq!(
                        reference(&ram, &rc, m.virt + o),
                        Some(m.phys + o),
                        "walker maps {:#x} -> {:#x}; the reference disagrees",
                        m.virt + o,
                        m.phys + o
                    );
                }
            }
            n += 1;
            off += 0x1000;
        }
    }
}

/// Every page of every intended mapping (in RAM) is in the walker's output, at the
/// reference's address (up to `per_map` pages per mapping, strided), and the total
/// matches the RAM part of the intended mappings.
fn check_complete(g: &Arm64Guest, list: &MappingList, per_map: u64) {
    let ram = g.ref_ram();
    let rc = g.ref_cpu();
    let mut want_total = 0;
    for m in &g.mapped {
        want_total += ram_bytes(g, m.phys, m.len);
        let pages = m.len / 0x1000;
        let stride = (pages / per_map).max(1);
        for p in (0..pages).step_by(stride as usize) {
            let v = m.virt + p * 0x1000 + 0x10;
            assert_eq!(
                list.translate(v),
                reference(&ram, &rc, v),
                "{m:x?} page {p}: walker vs reference"
            );
        }
    }
    assert_eq!(list.mapped_bytes(), want_total, "mapped bytes");
}

/// Random addresses in both halves (and a few outside both): walker and reference
/// agree.
fn check_samples(g: &Arm64Guest, list: &MappingList, seed: u64, n: usize) {
    let ram = g.ref_ram();
    let rc = g.ref_cpu();
    let mut rng = Rng(seed | 1);
    for i in 0..n {
        let r = rng.next() & !0xF;
        let v = match i % 5 {
            0 => g.va(0, r),
            1 | 2 => g.va(1, r),
            // Near something mapped.
            3 if !g.mapped.is_empty() => {
                let m = g.mapped[(r as usize / 16) % g.mapped.len()];
                m.virt.wrapping_add((r >> 20) % (2 * m.len.max(1))) & !0xF
            }
            _ => r,
        };
        assert_eq!(list.translate(v), reference(&ram, &rc, v), "sample {v:#x}");
    }
}

/// The guest's layout for a granule and VA size: pages, blocks at every legal level in
/// both halves, each with different attributes, some in a RAM hole, one not valid.
fn layout(granule: Granule, va: u32) -> Arm64Guest {
    layout_on(Arm64Guest::simple(granule, va))
}

/// [`layout`] in a guest made by the caller (big-endian, other RAM...).
fn layout_on(mut g: Arm64Guest) -> Arm64Guest {
    let granule = g.halves[0].granule;
    let va = g.halves[0].va_bits;
    g.table_bits = TABLE_ATTRS;
    let attrs = [
        ATTR_NORMAL,
        ATTR_NORMAL | UXN | PXN,
        ATTR_NORMAL | NG | SW_BITS,
        ATTR_NORMAL | CONT,
    ];
    for half in 0..2 {
        let sizes = g.leaf_sizes(half);
        let big = sizes[0].1;
        let page = granule.bytes();
        for (i, &(_, len)) in sizes.iter().enumerate() {
            // Each size in its own slot of 4 of the biggest leaves, three leaves per size.
            let base = (i as u64 + 1) * big * 4;
            if (base + 3 * len) >> va != 0 {
                continue;
            }
            for k in 0..3u64 {
                // Physical: inside RAM, or (k == 2, pages only) in the 4 MiB hole.
                // Physical: pages and blocks up to 32 MiB in RAM from 8 MiB on, except
                // the third page, in the RAM hole; bigger blocks at 0 (partly RAM).
                let phys = if len == page && k == 2 {
                    0x40_0000 + page
                } else if len <= 0x200_0000 {
                    (0x80_0000 + k * len).div_ceil(len) * len
                } else {
                    0
                };
                g.map(half, base + k * len, phys, len, attrs[(i + k as usize) % 4])
                    .unwrap_or_else(|e| panic!("{granule:?}/{va}: {e}"));
            }
        }
        // A run of pages right below the top of the half, and a valid-bit-clear page.
        let top = (1u64 << va) - 4 * page;
        for k in 0..3 {
            g.map(
                half,
                top + k * page,
                0x100_0000 - (k + 1) * page,
                page,
                ATTR_NORMAL,
            )
            .expect("top pages");
        }
        g.map_invalid(half, top + 3 * page, 0x80_0000, page, ATTR_NORMAL)
            .expect("invalid page");
    }
    g
}

fn configs() -> Vec<(Granule, u32)> {
    let mut v = Vec::new();
    for g in Granule::ALL {
        for &va in g.va_sizes() {
            v.push((g, va));
        }
    }
    v
}

// ---------------------------------------------------------------------------------
// Hand-written layouts, every granule and VA size

#[test]
fn every_granule_and_va_size_matches_the_reference() {
    for (granule, va) in configs() {
        let g = layout(granule, va);
        let (list, stats) = walk(&g);
        check_runs(&g, &list, 20_000);
        check_complete(&g, &list, 64);
        check_samples(&g, &list, 0x5eed ^ u64::from(va), 3000);
        // One leaf per intended mapping (none of them overlaps).
        assert_eq!(stats.leaves, g.mapped.len() as u64, "{granule:?}/{va}");
        // The pages put in the RAM hole and the blocks bigger than RAM: counted (their
        // RAM part emitted).
        let partial = g
            .mapped
            .iter()
            .filter(|m| ram_bytes(&g, m.phys, m.len) < m.len)
            .count();
        assert!(partial >= 2);
        assert_eq!(stats.leaves_outside_ram, partial as u64, "{granule:?}/{va}");
        assert_eq!(stats.invalid_entries, 0, "{granule:?}/{va}");
        assert_eq!(stats.tables_outside_ram, 0, "{granule:?}/{va}");
        // Both halves are in the output.
        assert!(list.runs().iter().any(|m| m.virt >> 63 == 0));
        assert!(list.runs().iter().any(|m| m.virt >> 63 == 1));
    }
}

#[test]
fn start_levels_and_mode_names() {
    let expect = [
        (Granule::K4, 39, "4k-39", "L1"),
        (Granule::K4, 42, "4k-42", "L0"),
        (Granule::K4, 47, "4k-47", "L0"),
        (Granule::K4, 48, "4k-48", "L0"),
        (Granule::K4, 52, "4k-52", "L-1"),
        (Granule::K16, 39, "16k-39", "L1"),
        (Granule::K16, 42, "16k-42", "L1"),
        (Granule::K16, 47, "16k-47", "L1"),
        (Granule::K16, 48, "16k-48", "L0"),
        (Granule::K16, 52, "16k-52", "L0"),
        (Granule::K64, 39, "64k-39", "L2"),
        (Granule::K64, 42, "64k-42", "L2"),
        (Granule::K64, 47, "64k-47", "L1"),
        (Granule::K64, 48, "64k-48", "L1"),
        (Granule::K64, 52, "64k-52", "L1"),
    ];
    for (granule, va, mode, top) in expect {
        let mut g = Arm64Guest::simple(granule, va);
        g.map(1, 0, 0x80_0000, granule.bytes(), 0).expect("map");
        let c = cpu(&g, 0);
        assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some(mode));
        assert!(Aarch64Walker.modes().contains(&mode), "{mode} listed");
        let Ok(Regime::Paging { spaces, .. }) = Aarch64Walker.regime(&c, &WalkOptions::default())
        else {
            panic!("{mode}: paging")
        };
        assert_eq!(spaces.len(), 2);
        assert_eq!(spaces[1].desc.levels[0].name, top, "{mode}");
        assert_eq!(spaces[1].desc.levels.last().map(|l| l.name), Some("L3"));
        // translate names each level read.
        let t = Aarch64Walker
            .translate(&c, &g.memory(), &WalkOptions::default(), g.va(1, 0) + 0x18)
            .expect("translate");
        assert_eq!(t.phys, Some(0x80_0018), "{mode}");
        let names: Vec<_> = t.steps.iter().map(|s| s.level).collect();
        let want: Vec<_> = spaces[1].desc.levels.iter().map(|l| l.name).collect();
        assert_eq!(names, want, "{mode}");
        assert_eq!(t.page_size, Some(granule.bytes()));
    }
}

/// Different granules and VA sizes in the two halves (each range starts at its own
/// level).
#[test]
fn halves_with_different_granules() {
    for (lo, hi) in [
        ((Granule::K64, 42), (Granule::K4, 48)),
        ((Granule::K4, 39), (Granule::K16, 47)),
        ((Granule::K16, 48), (Granule::K64, 52)),
    ] {
        let mut g = Arm64Guest::new(
            lo,
            hi,
            &[(0, 0x40_0000), (0x80_0000, 0x800_0000)],
            (0x100_0000, 0x300_0000),
            48,
        )
        .expect("guest");
        for half in 0..2 {
            for (i, (_, len)) in g.leaf_sizes(half).into_iter().enumerate() {
                let v = (i as u64 + 1) << (g.halves[half].va_bits - 3);
                let p = if len > 0x400_0000 { 0 } else { 0x400_0000 };
                g.map(half, v, p, len, ATTR_NORMAL).expect("map");
            }
        }
        let (list, _) = walk(&g);
        check_runs(&g, &list, 5000);
        check_complete(&g, &list, 32);
        check_samples(&g, &list, 7, 2000);
    }
}

/// 52-bit physical addresses: 64KB with OA[51:48] in descriptor bits 15:12 and the
/// TTBR's BADDR[51:48] in bits 5:2; 4KB/16KB with DS (OA[51:50] in bits 9:8). Tables,
/// pages and blocks above 2^48.
#[test]
fn fifty_two_bit_physical_addresses() {
    let hi = 0xF_0000_0000_0000u64;
    for (lo_cfg, hi_cfg) in [
        ((Granule::K64, 48), (Granule::K64, 52)),
        ((Granule::K4, 52), (Granule::K16, 52)),
        ((Granule::K16, 48), (Granule::K4, 52)),
    ] {
        let mut g = Arm64Guest::new(
            lo_cfg,
            hi_cfg,
            &[(0, 0x100_0000), (hi, hi + 0x800_0000)],
            (hi, hi + 0x400_0000),
            52,
        )
        .expect("guest");
        for half in 0..2 {
            let page = g.halves[half].granule.bytes();
            for (i, (_, len)) in g.leaf_sizes(half).into_iter().enumerate() {
                let v = (i as u64 + 1) << (g.halves[half].va_bits - 4);
                let p = if len >= 0x400_0000 {
                    hi
                } else {
                    hi + 0x400_0000
                };
                g.map(half, v, p, len, 0).expect("map");
                // And a page right after it, in its own tables.
                g.map(half, v + len, hi + 0x500_0000 + i as u64 * page, page, 0)
                    .expect("map page");
            }
        }
        let (list, stats) = walk(&g);
        assert!(stats.leaves > 0);
        check_runs(&g, &list, 5000);
        check_complete(&g, &list, 32);
        check_samples(&g, &list, 52, 2000);
        assert!(list
            .runs()
            .iter()
            .all(|m| m.phys >= hi || m.phys < 0x100_0000));
    }
}

// ---------------------------------------------------------------------------------
// Registers

#[test]
fn asid_cnp_and_tbi_do_not_matter() {
    let mut g = layout(Granule::K4, 48);
    let (a, _) = walk(&g);
    g.halves[0].asid = 0;
    g.halves[1].asid = 0;
    g.cnp = false;
    g.halves[0].tbi = false;
    g.halves[1].tbi = true;
    let (b, _) = walk(&g);
    assert_eq!(a, b);
}

/// TTBR BADDR bits below the start table's alignment (RES0) are not address bits: set
/// them all and the walk is the same. With a 52-bit PA, bits 5:2 are BADDR[51:48], so
/// only bits from 6 up to the alignment are set.
#[test]
fn ttbr_bits_below_the_table_alignment_are_ignored() {
    for (granule, va) in configs() {
        let g = layout(granule, va);
        let (clean, _) = walk(&g);
        let mut c = cpu(&g, 0);
        for half in 0..2 {
            let x = 3 + g.levels(half)[0].bits;
            let junk = if g.effective_pa_bits(half) == 52 {
                if x <= 6 {
                    continue;
                }
                ((1u64 << x) - 1) & !0x3F
            } else {
                ((1u64 << x) - 1) & !1
            };
            let name = ["ttbr0_el1", "ttbr1_el1"][half];
            c.set_reg(name, g.ttbr(half) | junk);
        }
        let mut out = MappingList::new();
        Aarch64Walker
            .walk(&c, &g.memory(), &WalkOptions::default(), &mut out)
            .expect("walk");
        assert_eq!(out, clean, "{granule:?}/{va}");
    }
}

/// SCTLR_EL1.EE: the tables are read big-endian.
#[test]
fn big_endian_tables() {
    for (granule, va) in [(Granule::K4, 48), (Granule::K16, 47), (Granule::K64, 42)] {
        let mut g = Arm64Guest::simple(granule, va);
        g.big_endian = true;
        let g = layout_on(g);
        let (list, stats) = walk(&g);
        assert_eq!(stats.leaves, g.mapped.len() as u64);
        check_runs(&g, &list, 5000);
        check_complete(&g, &list, 32);
        check_samples(&g, &list, 0xbe, 1000);
    }
}

#[test]
fn epd_disables_a_half_and_mmu_off_is_paging_off() {
    let mut g = layout(Granule::K16, 47);
    g.halves[0].walk_disabled = true;
    let (list, _) = walk(&g);
    assert!(list.runs().iter().all(|m| m.virt >> 63 == 1));
    check_runs(&g, &list, 2000);
    check_samples(&g, &list, 3, 1000);
    g.halves[1].walk_disabled = true;
    assert!(walk_with(&g, &WalkOptions::default()).is_err());
    g.halves[1].walk_disabled = false;
    g.mmu_on = false;
    let c = cpu(&g, 0);
    assert!(!Aarch64Walker.paging_enabled(&c));
    assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some("off"));
    let (list, _) = walk(&g);
    assert!(list.is_empty());
}

#[test]
fn missing_registers() {
    let g = layout(Granule::K4, 39);
    let mut c = CpuState::new(0, Some(Arch::AARCH64));
    c.set_reg("pc", 0xffff_8000_1000_0000);
    assert!(Aarch64Walker.regime(&c, &WalkOptions::default()).is_err());
    assert!(!Aarch64Walker.paging_enabled(&c));
    // TTBR1 only: the kernel half.
    c.set_reg("tcr_el1", g.tcr());
    c.set_reg("ttbr1_el1", g.ttbr(1));
    let mut out = MappingList::new();
    Aarch64Walker
        .walk(&c, &g.memory(), &WalkOptions::default(), &mut out)
        .expect("walk");
    assert!(!out.is_empty());
    assert!(out.runs().iter().all(|m| m.virt >> 63 == 1));
}

#[test]
fn reserved_tcr_values_fault_like_the_reference() {
    let g = layout(Granule::K4, 48);
    let mem = g.memory();
    for (what, tcr) in [
        ("TG1 reserved", g.tcr() & !(0b11 << 30)),
        ("T1SZ 40", (g.tcr() & !(0x3F << 16)) | (40 << 16)),
        ("T1SZ 12 without DS", (g.tcr() & !(0x3F << 16)) | (12 << 16)),
    ] {
        let mut c = cpu(&g, 0);
        c.set_reg("tcr_el1", tcr);
        let mut rc = g.ref_cpu();
        rc.tcr_el1 = tcr;
        let mut out = MappingList::new();
        Aarch64Walker
            .walk(&c, &mem, &WalkOptions::default(), &mut out)
            .expect(what);
        // Only the TTBR0 half is left, and the reference agrees nothing high maps.
        assert!(out.runs().iter().all(|m| m.virt >> 63 == 0), "{what}");
        for m in &g.mapped {
            assert_eq!(
                out.translate(m.virt),
                reference(&g.ref_ram(), &rc, m.virt),
                "{what}"
            );
        }
    }
}

/// IPS smaller than an output address: an address-size fault, not a truncated address.
#[test]
fn addresses_above_ips_are_skipped() {
    let mut g = Arm64Guest::new(
        (Granule::K4, 39),
        (Granule::K64, 42),
        &[(0, 0x800_0000)],
        (0x100_0000, 0x300_0000),
        40,
    )
    .expect("guest");
    g.map(0, 0x1000, 0x5000, 0x1000, 0).expect("map");
    g.map(1, 0x1_0000, 0x50_0000, 0x1_0000, 0).expect("map");
    // Descriptors whose addresses have bit 40 or 44 set.
    g.raw_at(0, 0x2000, 3, (1 << 40) | 0x6000 | 0b11 | AF)
        .expect("raw");
    g.raw_at(0, 0x4000_0000, 1, (1 << 44) | 0b01 | AF)
        .expect("raw");
    g.raw_at(1, 0x2000_0000, 2, (1 << 41) | 0x4_0000 | 0b11)
        .expect("raw");
    let (list, stats) = walk(&g);
    check_runs(&g, &list, 1000);
    check_samples(&g, &list, 40, 1000);
    assert_eq!(stats.invalid_entries, 3);
    assert_eq!(list.mapped_bytes(), 0x1000 + 0x1_0000);
}

// ---------------------------------------------------------------------------------
// Broken tables

/// Reserved encodings and blocks where the granule has none: skipped and counted,
/// never followed, as the reference faults on them. They go in the empty middle of each
/// half (the layout uses its bottom and top): the reserved 0b01 at level 3, a block at
/// every level below the start level that has none, each on a path of its own, and one
/// at the start level itself (except with a two-entry start table, which the layout
/// fills).
#[test]
fn garbage_descriptors_are_counted() {
    for (granule, va) in configs() {
        let mut g = layout(granule, va);
        let mut made = 0;
        for half in 0..2 {
            let levels = g.levels(half);
            let start = levels[0];
            let unit = 1u64 << levels[1].shift;
            let mid = 1u64 << (va - 1);
            g.raw_at(half, mid + unit, 3, 0x80_0000 | 0b01 | AF)
                .expect("reserved");
            made += 1;
            let blocks = g.block_levels(half);
            for (j, l) in levels.iter().enumerate().skip(1) {
                if l.level < 3 && !blocks.contains(&l.level) {
                    let v = mid + (j as u64 + 2) * 2 * unit;
                    g.raw_at(half, v, l.level, 0b01 | AF).expect("bad block");
                    made += 1;
                }
            }
            if !blocks.contains(&start.level) && start.bits >= 2 {
                let v = mid - (1u64 << start.shift);
                g.raw_at(half, v, start.level, 0b01 | AF)
                    .expect("bad block at the start level");
                made += 1;
            }
        }
        let (list, stats) = walk(&g);
        assert_eq!(stats.invalid_entries, made, "{granule:?}/{va}");
        check_runs(&g, &list, 5000);
        check_complete(&g, &list, 16);
        check_samples(&g, &list, 99, 1000);
    }
}

/// Table descriptors pointing outside RAM (past its end, into a hole, far above):
/// skipped and counted.
#[test]
fn tables_outside_ram_are_counted() {
    for (granule, va) in configs() {
        let mut g = layout(granule, va);
        let page = granule.bytes();
        let base = 1u64 << (va - 2);
        let mut made = 0;
        for (k, addr) in [0x40_0000, 0x800_0000, 0x10_0000_0000]
            .into_iter()
            .enumerate()
        {
            let v = base + k as u64 * (1 << (va - 3));
            let level = g.start_level(1).clamp(1, 2);
            g.table_at(1, v & !(page - 1), level, addr)
                .expect("table_at");
            made += 1;
        }
        let (list, stats) = walk(&g);
        assert_eq!(stats.tables_outside_ram, made, "{granule:?}/{va}");
        check_runs(&g, &list, 5000);
        check_complete(&g, &list, 16);
    }
}

/// A table pointing at itself or an ancestor: the walk is bounded by depth, and what it
/// emits still agrees with the reference (which follows such tables the same way).
#[test]
fn loops_are_bounded_and_agree() {
    for (granule, va) in configs() {
        let mut g = layout(granule, va);
        let start = g.start_level(1);
        let v = g
            .mapped
            .iter()
            .rev()
            .find(|m| m.half == 1 && m.level == 3)
            .map(|m| m.virt);
        let v = v.expect("a page in the high half");
        // Level-2 entry pointing at its own table, and a level-3 entry at the root.
        let spare = v ^ (1u64 << (g.levels(1)[g.levels(1).len() - 2].shift + 1));
        g.make_loop(1, spare, 2, 0).expect("self loop");
        if start < 2 {
            let spare0 = v ^ (1u64 << (g.levels(1)[0].shift));
            g.make_loop(1, spare0, start + 1, 1).expect("ancestor loop");
        }
        let (list, stats) = walk(&g);
        assert!(stats.table_pages < 100_000, "{granule:?}/{va}: {stats:?}");
        check_runs(&g, &list, 20_000);
        check_samples(&g, &list, 1234, 2000);
    }
}

/// A table whose every entry points back at itself: the table-visit budget stops the
/// walk with an error instead of running (nearly) forever.
#[test]
fn table_bomb_hits_the_budget() {
    let mut g = Arm64Guest::simple(Granule::K4, 48);
    let t = g.table_of(1, 0, 1).expect("table");
    for i in 0..512 {
        let d = g.table_desc(1, t);
        g.set_entry(t, i, d);
    }
    // 1,000 visits emit at most 512,000 leaves: the table budget, not the mapping bound
    // (2^22 runs, which a larger budget reaches first), is what stops this walk.
    let opts = WalkOptions {
        max_table_pages: 1_000,
        ..WalkOptions::default()
    };
    let err = walk_with(&g, &opts).expect_err("budget");
    assert!(err.to_string().contains("table pages"), "{err}");
}

/// The root table outside RAM is an error naming the register.
#[test]
fn root_outside_ram_is_an_error() {
    let mut g = Arm64Guest::simple(Granule::K64, 42);
    g.halves[1].root = 0x4000_0000;
    let err = walk_with(&g, &WalkOptions::default()).expect_err("root");
    assert!(err.to_string().contains("TTBR1_EL1"), "{err}");
}

// ---------------------------------------------------------------------------------
// Random layouts

fn granule_of(i: u8) -> Granule {
    Granule::ALL[usize::from(i % 3)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn random_layouts_match_the_reference(
        g0 in 0u8..3, g1 in 0u8..3,
        v0 in 0usize..5, v1 in 0usize..5,
        maps in proptest::collection::vec((0usize..2, 0usize..4, any::<u64>(), 0u64..0x800, any::<u8>()), 1..40),
        junk in proptest::collection::vec((0usize..2, any::<u64>(), any::<u64>()), 0..6),
        seed in any::<u64>(),
    ) {
        let sizes = [39u32, 42, 47, 48, 52];
        let (g0, g1) = (granule_of(g0), granule_of(g1));
        let (mut va0, mut va1) = (sizes[v0], sizes[v1]);
        let pa = if (va0 == 52 && g0 != Granule::K64) || (va1 == 52 && g1 != Granule::K64) { 52 } else { 48 };
        if va0 == 52 && pa != 52 && g0 != Granule::K64 { va0 = 48; }
        if va1 == 52 && pa != 52 && g1 != Granule::K64 { va1 = 48; }
        let mut g = Arm64Guest::new(
            (g0, va0), (g1, va1),
            &[(0, 0x40_0000), (0x80_0000, 0x1000_0000), (0x1100_0000, 0x1200_0000)],
            (0x100_0000, 0x400_0000),
            pa,
        ).expect("guest");
        for (half, which, virt, pfn, attr) in maps {
            let sizes = g.leaf_sizes(half);
            let (_, len) = sizes[which % sizes.len()];
            let va_bits = g.halves[half].va_bits;
            let virt = (virt & ((1u64 << va_bits) - 1)) & !(len - 1);
            // Physical: anywhere in the low 512 MiB (holes and beyond RAM included).
            let phys = (pfn * 0x4_0000) & !(len - 1) & 0x1FFF_FFFF;
            let attr = [ATTR_NORMAL, UXN | PXN, NG, SW_BITS][usize::from(attr % 4)];
            let _ = g.map(half, virt, phys, len, attr); // overlaps refused: fine
        }
        for (half, virt, desc) in junk {
            // Raw garbage at the last level of some path (valid bit forced on).
            let virt = virt & ((1u64 << g.halves[half].va_bits) - 1);
            let _ = g.raw_at(half, virt, 3, desc | VALID);
        }
        let (list, _) = walk(&g);
        check_runs(&g, &list, 3000);
        check_samples(&g, &list, seed, 400);
    }
}

// ---------------------------------------------------------------------------------
// CPU states from a root and from VMCOREINFO; the multi-CPU view

#[test]
fn cpu_from_root_walks_the_kernel_half() {
    for (granule, va) in configs() {
        let g = layout(granule, va);
        let mode = format!(
            "{}-{va}",
            match granule {
                Granule::K4 => "4k",
                Granule::K16 => "16k",
                Granule::K64 => "64k",
            }
        );
        let c = Aarch64Walker
            .cpu_from_root(Arch::AARCH64, &mode, g.halves[1].root)
            .expect("cpu_from_root");
        let mut out = MappingList::new();
        Aarch64Walker
            .walk(&c, &g.memory(), &WalkOptions::default(), &mut out)
            .expect("walk");
        // Exactly the high half of the guest's own walk.
        let (full, _) = walk(&g);
        let high: MappingList = full
            .runs()
            .iter()
            .filter(|m| m.virt >> 63 == 1)
            .copied()
            .collect();
        assert_eq!(out, high, "{mode}");
        assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some(mode.as_str()));
    }
    assert!(Aarch64Walker
        .cpu_from_root(Arch::AARCH64, "8k-48", 0)
        .is_err());
    assert!(Aarch64Walker
        .cpu_from_root(Arch::AARCH64, "4k-53", 0)
        .is_err());
    assert_eq!(
        Aarch64Walker.parse_mode("16K-47bit").as_deref(),
        Some("16k-47")
    );
    assert_eq!(Aarch64Walker.parse_mode("4k-40").as_deref(), Some("4k-40"));
}

#[test]
fn roots_from_vmcoreinfo() {
    let vi = |s: &str| VmcoreInfo::parse(s.as_bytes());
    // Debian 12 style: 4K pages, 48-bit VA, KASLR'd image.
    let v = vi("OSRELEASE=6.1.0-28-arm64\nPAGESIZE=4096\n\
                SYMBOL(swapper_pg_dir)=ffffa3c1a2f4b000\n\
                NUMBER(kimage_voffset)=0xffffa3c0e1e00000\n\
                NUMBER(PHYS_OFFSET)=0x40000000\nNUMBER(VA_BITS)=48\n\
                NUMBER(TCR_EL1_T1SZ)=16\nKERNELOFFSET=23c121e00000\n");
    let c = Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &v)
        .expect("root");
    let root = 0xffffa3c1a2f4b000u64 - 0xffffa3c0e1e00000;
    assert_eq!(c.reg("ttbr1_el1"), Some(root));
    assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some("4k-48"));
    assert!(Aarch64Walker
        .roots_from_vmcoreinfo(Arch::X86_64, &v)
        .is_none());
    // 64K pages, 52-bit kernel on a 48-bit CPU: TTBR1 points into the top table.
    let v = vi("PAGESIZE=65536\nSYMBOL(swapper_pg_dir)=ffff800011230000\n\
                NUMBER(kimage_voffset)=0xffff7fffd0000000\nNUMBER(VA_BITS)=52\n\
                NUMBER(TCR_EL1_T1SZ)=16\n");
    let c = Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &v)
        .expect("root");
    assert_eq!(c.reg("ttbr1_el1"), Some(0x4123_0000 + 0x1E00));
    assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some("64k-48"));
    // 16K, VA_BITS only.
    let v = vi("PAGESIZE=16384\nSYMBOL(swapper_pg_dir)=ffff800009000000\n\
                NUMBER(kimage_voffset)=0xffff7fffc8000000\nNUMBER(VA_BITS)=47\n");
    let c = Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &v)
        .expect("root");
    assert_eq!(Aarch64Walker.mode_of(&c).as_deref(), Some("16k-47"));
    assert_eq!(c.reg("ttbr1_el1"), Some(0x4100_0000));
    // Pre-4.6: no kimage_voffset, the image in the linear map at PAGE_OFFSET.
    let v = vi("PAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffc000a3a000\n\
                NUMBER(PHYS_OFFSET)=0x80000000\nNUMBER(VA_BITS)=39\n");
    let c = Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &v)
        .expect("root");
    assert_eq!(c.reg("ttbr1_el1"), Some(0x80a3_a000));
    // Nothing to go on.
    assert!(Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &vi("PAGESIZE=4096\n"))
        .is_none());
    // A damaged text (fuzz finding): a VA_BITS no kernel has, with the VA size from
    // T1SZ, gives no pre-4.6 root (it used to shift by VA_BITS - 1: an overflow).
    for bits in ["96", "65", "0"] {
        let v = vi(&format!(
            "PAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffa4b5e6c58000\n\
             NUMBER(PHYS_OFFSET)=0x40000000\nNUMBER(TCR_EL1_T1SZ)=0x10\n\
             NUMBER(VA_BITS)={bits}\n"
        ));
        assert!(
            Aarch64Walker
                .roots_from_vmcoreinfo(Arch::AARCH64, &v)
                .is_none(),
            "VA_BITS={bits}"
        );
    }
    // A 52-bit kernel on a 48-bit CPU whose root would pass 2^64: none.
    let v = vi("PAGESIZE=65536\nSYMBOL(swapper_pg_dir)=ffffffffffffff00\n\
                NUMBER(kimage_voffset)=0x0\nNUMBER(VA_BITS)=52\nNUMBER(TCR_EL1_T1SZ)=16\n");
    assert!(Aarch64Walker
        .roots_from_vmcoreinfo(Arch::AARCH64, &v)
        .is_none());
}

/// Two CPUs sharing the kernel half (TTBR1) with different processes (TTBR0): the
/// default view keeps the first CPU's user half and the kernel half once.
#[test]
fn multi_cpu_view() {
    let mut g = layout(Granule::K4, 48);
    let c0 = cpu(&g, 0);
    let user0 = g.halves[0].root;
    let user1 = g.alloc_root(0);
    g.switch_root(0, user1);
    g.map(0, 0x7000_0000, 0x90_0000, 0x1000, 0).expect("map");
    g.halves[0].asid = 0x42;
    let c1 = cpu(&g, 1);
    let mem = g.memory();
    let (view, _) = build_view(
        &Aarch64Walker,
        &[c0.clone(), c1.clone()],
        &mem,
        &WalkOptions::default(),
        ViewPolicy::default(),
    )
    .expect("view");
    g.switch_root(0, user0);
    let (alone, _) = walk(&g);
    assert_eq!(view, alone);
}
