//! The x86 walker against the independent reference translator, on synthetic guests in
//! every paging mode: hand-written layouts (every page of every run checked, and
//! exhaustive sweeps of the 32-bit spaces), random layouts (proptest), loops, bad CR3,
//! MAXPHYADDR and SME masking, the per-CPU view and single-address translation.

use std::time::{Duration, Instant};

use dumpconv_core::{
    build_view, Arch, ArchWalker, CpuState, Error, Mapping, MappingList, PhysicalMemory, Result,
    ViewPolicy, WalkOptions, WalkStats,
};
use dumpconv_tests::reference;
use dumpconv_tests::synth::{
    pkey, Guest, PageSize, G, GIB1, KIB4, MIB2, MIB4, NX, PAT_LARGE, PS, RW, SW_HIGH, SW_LOW, US,
};
use dumpconv_x86::{PagingMode, X86Walker};
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

fn walk_mem(
    cpu: &CpuState,
    mem: &dyn PhysicalMemory,
    opts: &WalkOptions,
) -> Result<(MappingList, WalkStats)> {
    let mut out = MappingList::new();
    let stats = X86Walker.walk(cpu, mem, opts, &mut out)?;
    Ok((out, stats))
}

fn walk(g: &Guest, opts: &WalkOptions) -> (MappingList, WalkStats) {
    walk_mem(&g.cpu(0), &g.memory(), opts).expect("walk")
}

fn end(m: &Mapping) -> u128 {
    m.virt as u128 + m.len as u128
}

/// A random address in the mode's space; canonical unless `raw` (IA-32e).
fn random_virt(mode: PagingMode, rng: &mut Rng, raw: bool) -> u64 {
    let r = rng.next();
    let v = match mode {
        PagingMode::Bits32 | PagingMode::Pae | PagingMode::Off => r & 0xFFFF_FFFF,
        PagingMode::Level4 if !raw => (((r << 16) as i64) >> 16) as u64,
        PagingMode::Level5 if !raw => (((r << 7) as i64) >> 7) as u64,
        _ => r,
    };
    // Keep clear of u64::MAX: MappingList::translate cannot see the very last byte.
    v & !0xF
}

/// Check every run against the reference: runs ascending and disjoint, and each page
/// (up to `budget` pages, evenly strided beyond that) translates to the run's address.
fn check_runs(g: &Guest, cpu: &CpuState, opts: &WalkOptions, list: &MappingList, budget: u64) {
    let ram = g.ref_ram();
    let rc = Guest::ref_cpu(cpu, opts);
    for w in list.runs().windows(2) {
        assert!(
            end(&w[0]) <= w[1].virt as u128,
            "runs out of order or overlapping: {:x?}",
            w
        );
    }
    let total: u64 = list.runs().iter().map(|m| m.len / KIB4).sum();
    let stride = (total / budget.max(1)).max(1);
    for m in list.runs() {
        assert_eq!(m.virt % KIB4, 0, "{m:x?}");
        assert_eq!(m.phys % KIB4, 0, "{m:x?}");
        assert_eq!(m.len % KIB4, 0, "{m:x?}");
        let pages = m.len / KIB4;
        let mut k = 0;
        while k < pages {
            let v = m.virt + k * KIB4;
            let off = (k * 0x1A8) & 0xFF8;
            assert_eq!(
                reference::translate(&ram, &rc, v + off),
                Some(m.phys + k * KIB4 + off),
                "walker maps {:#x} -> {:#x} (run {m:x?}); the reference disagrees",
                v + off,
                m.phys + k * KIB4 + off
            );
            k = if k + 1 < pages && k + stride >= pages {
                pages - 1
            } else {
                k + stride
            };
        }
    }
}

/// For each address: the walker's list and the reference agree (both None, or the
/// same physical address).
fn check_virts(
    g: &Guest,
    cpu: &CpuState,
    opts: &WalkOptions,
    list: &MappingList,
    virts: impl IntoIterator<Item = u64>,
) {
    let ram = g.ref_ram();
    let rc = Guest::ref_cpu(cpu, opts);
    for v in virts {
        assert_eq!(
            list.translate(v),
            reference::translate(&ram, &rc, v),
            "virtual {v:#x}: walker (left) and reference (right) disagree"
        );
    }
}

/// Random addresses plus addresses around every `interesting` one.
fn sample_virts(mode: PagingMode, seed: u64, n: usize, interesting: &[u64]) -> Vec<u64> {
    let mut rng = Rng(seed | 1);
    let mut v: Vec<u64> = (0..n)
        .map(|i| random_virt(mode, &mut rng, i % 8 == 0))
        .collect();
    for &x in interesting {
        for d in [0u64, 0x10, 0xFF8, 0x1000, 0x1FF8, 0x20_0000, 0x40_0000] {
            v.push(x.wrapping_add(d));
            v.push(x.wrapping_sub(d.max(0x10)));
        }
        v.push(x.wrapping_add(rng.next() % GIB1) & !0xF);
    }
    v.retain(|&x| x != u64::MAX);
    v
}

/// Every 4 KiB page of a 32-bit space, at a varying offset.
fn check_all_32bit_pages(g: &Guest, cpu: &CpuState, opts: &WalkOptions, list: &MappingList) {
    check_virts(
        g,
        cpu,
        opts,
        list,
        (0..1u64 << 20).map(|p| (p << 12) | ((p * 0x38) & 0xFF8)),
    );
}

fn find(list: &MappingList, virt: u64) -> Option<Mapping> {
    list.runs()
        .iter()
        .copied()
        .find(|m| m.virt <= virt && (virt as u128) < end(m))
}

// ---------------------------------------------------------------------------------
// Hand-written layouts

#[test]
fn bits32_4k_4m_pse36_aliases_holes() {
    // RAM below 4 GiB with the VGA hole, and 8 MiB above 4 GiB for PSE-36.
    let mut g = Guest::new(
        PagingMode::Bits32,
        &[
            (0, 0xA_0000),
            (0x10_0000, 0x400_0000),
            (0x1_0000_0000, 0x1_0080_0000),
        ],
        (0x100_0000, 0x120_0000),
    );
    // User 4 KiB pages with software bits 11:9, global.
    for i in 0..8 {
        g.map(
            0x0804_8000 + i * KIB4,
            0x20_0000 + i * KIB4,
            PageSize::K4,
            RW | SW_LOW | G,
        )
        .unwrap();
    }
    // Alias: a second virtual address for the same physical pages.
    for i in 0..2 {
        g.map(
            0x4000_0000 + i * KIB4,
            0x20_0000 + i * KIB4,
            PageSize::K4,
            RW,
        )
        .unwrap();
    }
    // Kernel direct map with 4 MiB pages (PAT bit set on one).
    g.map(0xC000_0000, 0, PageSize::M4, RW | G).unwrap();
    g.map(0xC040_0000, MIB4, PageSize::M4, RW | G | PAT_LARGE)
        .unwrap();
    // PSE-36: 4 MiB at 4 GiB + 4 MiB; PDE bits 20:13 carry physical bits 39:32.
    g.map(0xE000_0000, 0x1_0040_0000, PageSize::M4, RW).unwrap();
    // Holes: a 4 KiB page in the VGA hole and a 4 MiB page beyond RAM. (The 4 MiB page
    // at physical 0 above straddles the VGA hole: only its RAM parts are kept.)
    g.map(0x0900_0000, 0xB_0000, PageSize::K4, RW).unwrap();
    g.map(0xE040_0000, 0x2_0000_0000, PageSize::M4, RW).unwrap();
    // A non-present PTE and PDE full of junk.
    g.map_not_present(0x0805_0000, 0x30_0000, PageSize::K4, RW)
        .unwrap();
    g.map_not_present(0xD000_0000, 0x80_0000, PageSize::M4, RW)
        .unwrap();
    // Top of the space.
    g.map(0xFFFF_F000, 0x21_0000, PageSize::K4, RW).unwrap();

    let opts = WalkOptions::default();
    let (list, stats) = walk(&g, &opts);
    let cpu = g.cpu(0);
    check_runs(&g, &cpu, &opts, &list, u64::MAX);
    check_all_32bit_pages(&g, &cpu, &opts, &list);

    assert_eq!(
        find(&list, 0xE000_0000),
        Some(Mapping {
            virt: 0xE000_0000,
            phys: 0x1_0040_0000,
            len: MIB4
        })
    );
    // Both 4 MiB kernel pages merge into one run; the alias stays separate.
    assert_eq!(
        find(&list, 0xC000_0000),
        Some(Mapping {
            virt: 0xC000_0000,
            phys: 0,
            len: 0xA_0000
        })
    );
    assert_eq!(list.translate(0x4000_0010), Some(0x20_0010));
    assert_eq!(list.translate(0x0804_8010), Some(0x20_0010));
    assert_eq!(list.translate(0x0900_0000), None);
    assert_eq!(list.translate(0xE040_0000), None);
    assert_eq!(list.translate(0xFFFF_FFF0), Some(0x21_0FF0));
    // Two skipped leaves (VGA-hole page, 4 MiB beyond RAM) and the 4 MiB page at
    // physical 0 that straddles the VGA hole, kept in two parts.
    assert_eq!(stats.leaves_outside_ram, 3, "{stats:?}");
    assert_eq!(list.translate(0xC00A_0000), None);
    assert_eq!(list.translate(0xC010_0000), Some(0x10_0000));
    assert_eq!(stats.tables_outside_ram, 0);
}

#[test]
fn bits32_without_pse_follows_ps_entries_as_tables() {
    let mut g = Guest::simple(PagingMode::Bits32);
    g.pse = false;
    g.map(0x1000, 0x50_0000, PageSize::K4, RW).unwrap();
    // A PDE with PS set: without CR4.PSE it is a page-table pointer. (The table sits
    // where PDE bits 20:13 are zero, so that with PSE the same PDE is a 4 MiB page in
    // RAM.)
    let pt = 0x200_0000;
    g.set_entry(pt, 3, 0x60_0000 | 3);
    let root = g.root;
    g.set_entry(root, 0x300, pt | 0x83);
    let opts = WalkOptions::default();
    let (list, _) = walk(&g, &opts);
    let cpu = g.cpu(0);
    assert_eq!(list.translate(0xC000_3000), Some(0x60_0000));
    assert_eq!(list.translate(0xC000_0000), None);
    check_runs(&g, &cpu, &opts, &list, u64::MAX);
    check_all_32bit_pages(&g, &cpu, &opts, &list);

    // The same tables with PSE: now a 4 MiB page at physical (pt & 0xFFC00000).
    g.pse = true;
    let cpu = g.cpu(0);
    let (list, _) = walk_mem(&cpu, &g.memory(), &opts).unwrap();
    assert_eq!(list.translate(0xC000_3000), Some(pt + 0x3000));
    check_all_32bit_pages(&g, &cpu, &opts, &list);
}

#[test]
fn pae_2m_4k_tables_above_4g_and_high_bits() {
    let mut g = Guest::new(
        PagingMode::Pae,
        &[
            (0, 0xA_0000),
            (0x10_0000, 0x400_0000),
            (0x1_0000_0000, 0x1_0100_0000),
        ],
        (0x100_0000, 0x120_0000),
    );
    // NX and software bits on table pointers (PDPTEs included).
    g.table_bits = NX | SW_HIGH;
    for i in 0..16 {
        g.map(
            0x0040_0000 + i * KIB4,
            0x30_0000 + i * KIB4,
            PageSize::K4,
            RW | NX | SW_HIGH,
        )
        .unwrap();
    }
    g.map(0xC000_0000, 0, PageSize::M2, RW | G).unwrap();
    g.map(0xC020_0000, MIB2, PageSize::M2, RW | G | PAT_LARGE | NX)
        .unwrap();
    // Pages above 4 GiB are reachable through PAE entries.
    g.map(0xD000_0000, 0x1_0000_0000, PageSize::M2, RW).unwrap();
    g.map(0x8000_0000, 0x1_00A0_0000, PageSize::K4, RW).unwrap();
    // A page table that itself lives above 4 GiB.
    let high_pt = 0x1_00F0_0000;
    g.set_entry(high_pt, 7, 0x31_0000 | 3 | NX);
    let pd = g.table_of(0xE000_0000, 1).unwrap();
    g.set_entry(pd, g.index(0xE000_0000, 1), high_pt | 3);
    // Hole and non-present entries.
    g.map(0xC040_0000, 0xC000_0000, PageSize::M2, RW).unwrap();
    g.map_not_present(0xC060_0000, 0x60_0000, PageSize::M2, RW)
        .unwrap();

    let opts = WalkOptions::default();
    let (list, stats) = walk(&g, &opts);
    let cpu = g.cpu(0);
    assert_eq!(
        g.cpu(0).reg("cr3").unwrap() & 0xFFF,
        0x60,
        "PDPT is not page-aligned"
    );
    check_runs(&g, &cpu, &opts, &list, u64::MAX);
    check_all_32bit_pages(&g, &cpu, &opts, &list);
    assert_eq!(list.translate(0xE000_7008), Some(0x31_0008));
    assert_eq!(list.translate(0xD01F_FFF0), Some(0x1_001F_FFF0));
    assert_eq!(list.translate(0x0040_F000), Some(0x30_F000));
    assert_eq!(list.translate(0xC000_0000), Some(0));
    assert_eq!(list.translate(0xC020_1000), Some(MIB2 + 0x1000));
    assert_eq!(list.translate(0xC040_0000), None);
    assert_eq!(list.translate(0xC060_0000), None);
    assert!(stats.leaves_outside_ram >= 1);
}

/// A 4-level or 5-level layout with everything: returns the guest and the addresses
/// worth sampling.
fn ia32e_layout(mode: PagingMode) -> (Guest, Vec<u64>) {
    let mut g = Guest::new(
        mode,
        &[
            (0, 0xA_0000),
            (0x10_0000, 0xC000_0000),
            (0x1_0000_0000, 0x1_4000_0000),
        ],
        (0x100_0000, 0x140_0000),
    );
    g.cr3_extra = 0x5; // a PCID in CR3 bits 11:0
    g.table_bits = NX | (0x15 << 52);
    let five = mode == PagingMode::Level5;
    // Kernel and user bases that are canonical in the mode (a PML5 index >= 256 in
    // 5-level paging).
    let kbase: u64 = if five {
        0xFF11_0000_0000_0000
    } else {
        0xFFFF_8880_0000_0000
    };
    let ktext: u64 = 0xFFFF_FFFF_8100_0000;
    let mut interesting = vec![kbase, ktext, 0x40_0000, 0x7FFF_FFFF_F000];
    // Direct map with 1 GiB pages (PAT on one), then 2 MiB, then 4 KiB.
    g.map(kbase, 0, PageSize::G1, RW | G | NX).unwrap();
    g.map(kbase + GIB1, GIB1, PageSize::G1, RW | G | NX | PAT_LARGE)
        .unwrap();
    // 1 GiB page over the PCI hole at 3..4 GiB: all outside RAM.
    g.map(kbase + 3 * GIB1, 3 * GIB1, PageSize::G1, RW).unwrap();
    // 1 GiB page at 4 GiB: RAM.
    g.map(kbase + 4 * GIB1, 4 * GIB1, PageSize::G1, RW).unwrap();
    // Kernel text: 2 MiB pages, then 4 KiB pages with protection keys / software bits.
    for i in 0..4 {
        g.map(
            ktext + i * MIB2,
            0x100_0000 + 0x40_0000 + i * MIB2,
            PageSize::M2,
            G,
        )
        .unwrap();
    }
    for i in 0..32 {
        g.map(
            ktext + 4 * MIB2 + i * KIB4,
            0x200_0000 + i * KIB4,
            PageSize::K4,
            RW | pkey(i) | SW_HIGH | SW_LOW | NX,
        )
        .unwrap();
    }
    // User pages, and an alias of the kernel's 4 KiB pages.
    for i in 0..8 {
        g.map(
            0x40_0000 + i * KIB4,
            0x300_0000 + i * KIB4,
            PageSize::K4,
            RW,
        )
        .unwrap();
        g.map(
            0x7FFF_FFFF_F000 - i * KIB4,
            0x200_0000 + i * KIB4,
            PageSize::K4,
            RW,
        )
        .unwrap();
    }
    g.map(0x6000_0000, 0x400_0000, PageSize::M2, RW).unwrap();
    if five {
        // Lower half beyond 48 bits: canonical 0x0001_... in 5-level paging.
        g.map(0x0001_0000_0000_0000, 0x500_0000, PageSize::M2, RW)
            .unwrap();
        interesting.push(0x0001_0000_0000_0000);
    }
    // Holes: leaves beyond RAM and in the VGA hole, a non-present PDE and PTE.
    g.map(0x7000_0000, 0x2_0000_0000, PageSize::M2, RW).unwrap();
    g.map(0x7020_0000, 0xB_0000, PageSize::K4, RW).unwrap();
    g.map_not_present(0x7040_0000, 0x60_0000, PageSize::M2, RW)
        .unwrap();
    g.map_not_present(0x7060_0000, 0x60_0000, PageSize::K4, RW)
        .unwrap();
    // A 2 MiB page straddling the VGA hole: only its RAM parts survive.
    g.map(0x7080_0000, 0, PageSize::M2, RW).unwrap();
    interesting.extend([
        0x7000_0000,
        0x7020_0000,
        0x7040_0000,
        0x7080_0000,
        0x6000_0000,
    ]);
    // PS in a PML5E / PML4E is not a page size: the entry is still a table pointer.
    let root = g.root;
    let e = g.entry(root, 0);
    g.set_entry(root, 0, e | PS);
    if five {
        let pml4 = g.table_of(0x40_0000, 1).unwrap();
        let e = g.entry(pml4, 0);
        g.set_entry(pml4, 0, e | PS);
    }
    interesting.extend([kbase + GIB1, kbase + 3 * GIB1, kbase + 4 * GIB1]);
    (g, interesting)
}

fn check_ia32e(mode: PagingMode) {
    let (g, interesting) = ia32e_layout(mode);
    let opts = WalkOptions::default();
    let (list, stats) = walk(&g, &opts);
    let cpu = g.cpu(0);
    // Every page of every run (2.5 GiB of 1 GiB pages included).
    check_runs(&g, &cpu, &opts, &list, u64::MAX);
    check_virts(
        &g,
        &cpu,
        &opts,
        &list,
        sample_virts(mode, 7, 20_000, &interesting),
    );
    // Canonical: user runs below the hole, kernel runs above it; nothing in between.
    let (lo_max, hi_min) = if mode == PagingMode::Level5 {
        (1u64 << 56, 0xFF00_0000_0000_0000)
    } else {
        (1u64 << 47, 0xFFFF_8000_0000_0000)
    };
    for m in list.runs() {
        assert!(
            (end(m) <= lo_max as u128) || m.virt >= hi_min,
            "non-canonical run {m:x?}"
        );
    }
    assert_eq!(list.translate(0x40_0123), Some(0x300_0123));
    assert_eq!(list.translate(0x7FFF_FFFF_F010), Some(0x200_0010));
    assert_eq!(list.translate(0xFFFF_FFFF_8180_0000), Some(0x200_0000));
    let kbase = interesting[0];
    assert_eq!(list.translate(kbase + 0x1234_5678), Some(0x1234_5678));
    assert_eq!(list.translate(kbase + 3 * GIB1), None);
    assert_eq!(list.translate(kbase + 4 * GIB1 + 8), Some(4 * GIB1 + 8));
    // The 2 MiB page over the VGA hole: two RAM parts.
    assert_eq!(list.translate(0x7080_0000), Some(0));
    assert_eq!(list.translate(0x708A_0000), None);
    assert_eq!(list.translate(0x7090_0000), Some(0x10_0000));
    // Leaves not (wholly) in RAM: 1 GiB over the PCI hole, 2 MiB beyond RAM, 4 KiB in
    // the VGA hole, and the 1 GiB and 2 MiB pages at physical 0 (kept in part).
    assert_eq!(stats.leaves_outside_ram, 5, "{stats:?}");
    assert!(stats
        .warnings
        .iter()
        .any(|w| w.contains("only partly in RAM")));
}

#[test]
fn level4_layout_agrees_with_reference() {
    check_ia32e(PagingMode::Level4);
}

#[test]
fn level5_layout_agrees_with_reference() {
    check_ia32e(PagingMode::Level5);
}

// ---------------------------------------------------------------------------------
// Loops and bounds

#[test]
fn windows_style_self_map_is_walked_and_agrees() {
    let (mut g, mut interesting) = ia32e_layout(PagingMode::Level4);
    // PML4[0x1ED] points at the PML4 itself (Windows' self-map slot).
    let root = g.root;
    g.set_entry(root, 0x1ED, root | 0x63 | NX);
    // A PD entry pointing back up at its own PDPT.
    let pdpt = g.table_of(0x40_0000, 1).unwrap();
    let pd = g.table_of(0x40_0000, 2).unwrap();
    g.set_entry(pd, 100, pdpt | 3);
    let opts = WalkOptions::default();
    let t = Instant::now();
    let (list, stats) = walk(&g, &opts);
    assert!(t.elapsed() < Duration::from_secs(10));
    let cpu = g.cpu(0);
    // The self-map's PML4-maps-itself page: virtual 0xFFFF_F6FB_7DBE_D000.
    let selfmap: u64 =
        0xFFFF_0000_0000_0000 | (0x1ED << 39) | (0x1ED << 30) | (0x1ED << 21) | (0x1ED << 12);
    assert_eq!(list.translate(selfmap), Some(root));
    // Through the PD loop, PD index 100 of 0x40_0000's PD maps the PDPT's entries as
    // page tables: 2 MiB of virtual space at 0x0C80_0000 whose PTEs are PDPTEs.
    interesting.extend([selfmap, 100 << 21, 0xFFFF_F680_0000_0000]);
    check_runs(&g, &cpu, &opts, &list, 50_000);
    check_virts(
        &g,
        &cpu,
        &opts,
        &list,
        sample_virts(PagingMode::Level4, 11, 20_000, &interesting),
    );
    assert!(stats.table_pages < 10_000, "{stats:?}");
}

#[test]
fn fully_self_referencing_tables_stop_at_the_budget() {
    // Every PML4 entry points at the PML4: 512^4 leaves if followed blindly.
    let mut g = Guest::simple(PagingMode::Level4);
    let root = g.root;
    for i in 0..512 {
        g.set_entry(root, i, root | 3);
    }
    // Each visit of the PML4 as a page table emits 512 runs (all to one page), so the
    // budget bounds memory too: 2,000 visits, about a million runs.
    let opts = WalkOptions {
        max_table_pages: 2_000,
        ..WalkOptions::default()
    };
    let mem = g.memory();
    let mut out = MappingList::new();
    let t = Instant::now();
    let r = X86Walker.walk(&g.cpu(0), &mem, &opts, &mut out);
    let took = t.elapsed();
    match r {
        Err(Error::Walk { cpu: 0, msg }) => assert!(msg.contains("max_table_pages"), "{msg}"),
        other => panic!("expected a walk error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // What was found before the stop is kept, and it is right.
    assert!(!out.is_empty());
    check_runs(&g, &g.cpu(0), &opts, &out, 10_000);

    // 32-bit: a PDE pointing at the PD is bounded by depth alone.
    let mut g = Guest::simple(PagingMode::Bits32);
    let root = g.root;
    for i in 0..1024 {
        g.set_entry(root, i, root | 3);
    }
    let (list, stats) = walk(&g, &WalkOptions::default());
    assert_eq!(stats.table_pages, 1 + 1024);
    assert_eq!(list.mapped_bytes(), 1 << 32);
}

#[test]
fn cr3_outside_ram_is_a_clear_error() {
    for mode in [
        PagingMode::Bits32,
        PagingMode::Pae,
        PagingMode::Level4,
        PagingMode::Level5,
    ] {
        let g = Guest::simple(mode);
        let mem = g.memory();
        let cpu = dumpconv_x86::cpu_from_root(2, 0x8000_0000, mode);
        let mut out = MappingList::new();
        let e = X86Walker
            .walk(&cpu, &mem, &WalkOptions::default(), &mut out)
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Walk { cpu: 2, .. }), "{msg}");
        assert!(
            msg.contains("not in the dump's RAM") && msg.contains("0x80000000"),
            "{msg}"
        );
        // translate() answers with a fault instead.
        let t = X86Walker
            .translate(&cpu, &mem, &WalkOptions::default(), 0x1000)
            .unwrap();
        assert_eq!(t.phys, None);
        assert!(t.fault.unwrap().contains("not in the dump's RAM"));
    }
    // No control registers, or paging on without CR3.
    let g = Guest::simple(PagingMode::Level4);
    let mem = g.memory();
    let mut out = MappingList::new();
    let none = CpuState::default();
    assert!(matches!(
        X86Walker.walk(&none, &mem, &WalkOptions::default(), &mut out),
        Err(Error::Walk { .. })
    ));
    let mut no_cr3 = g.cpu(0);
    no_cr3.regs.remove("cr3");
    assert!(X86Walker
        .walk(&no_cr3, &mem, &WalkOptions::default(), &mut out)
        .is_err());
    // Paging off: nothing, no error.
    let off = dumpconv_x86::cpu_from_root(0, 0, PagingMode::Off);
    let s = X86Walker
        .walk(&off, &mem, &WalkOptions::default(), &mut out)
        .unwrap();
    assert!(out.is_empty());
    assert_eq!(s, WalkStats::default());
}

#[test]
fn garbage_tables_never_panic() {
    // Every table entry random: the walker must finish (or stop at its budget) without
    // panicking, and whatever it emits must agree with the reference.
    for mode in [
        PagingMode::Bits32,
        PagingMode::Pae,
        PagingMode::Level4,
        PagingMode::Level5,
    ] {
        for seed in 1..6u64 {
            let mut g = Guest::simple(mode);
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut tables = vec![g.root & !0xFFF];
            for _ in 0..6 {
                tables.push(g.alloc_table());
            }
            for &t in &tables {
                for i in 0..(if mode == PagingMode::Bits32 {
                    1024
                } else {
                    512
                }) {
                    let r = rng.next();
                    // Mostly pointers to our tables, sometimes anything at all.
                    let v = if r.is_multiple_of(4) {
                        rng.next()
                    } else {
                        tables[(r >> 8) as usize % tables.len()] | (r & 0x8000_0000_0000_0FFF)
                    };
                    g.set_entry(t, i, v);
                }
            }
            let opts = WalkOptions {
                max_table_pages: 1_000,
                ..WalkOptions::default()
            };
            let cpu = g.cpu(0);
            let mem = g.memory();
            let mut out = MappingList::new();
            let _ = X86Walker.walk(&cpu, &mem, &opts, &mut out);
            check_runs(&g, &cpu, &opts, &out, 2_000);
            for v in sample_virts(mode, seed, 300, &[]) {
                let _ = X86Walker.translate(&cpu, &mem, &opts, v).unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Masks

#[test]
fn max_phys_bits_and_sme_clear_mask() {
    const C_BIT: u64 = 1 << 47;
    let mut g = Guest::simple(PagingMode::Level4);
    // SME: the C-bit in every table pointer, in leaves and in CR3.
    g.table_bits = C_BIT;
    g.cr3_extra = C_BIT;
    g.map(0xFFFF_8880_0000_0000, 0, PageSize::M2, RW | C_BIT)
        .unwrap();
    g.map(0xFFFF_8880_0020_0000, MIB2, PageSize::M2, RW | C_BIT)
        .unwrap();
    g.map(0x1000, 0x30_0000, PageSize::K4, RW | C_BIT | pkey(5))
        .unwrap();
    let cpu = g.cpu(0);
    let mem = g.memory();

    // Without clear_mask the C-bit is an address bit: CR3 points outside RAM.
    let plain = WalkOptions::default();
    assert!(walk_mem(&cpu, &mem, &plain).is_err());

    let sme = WalkOptions {
        clear_mask: C_BIT,
        ..WalkOptions::default()
    };
    let (list, stats) = walk_mem(&cpu, &mem, &sme).unwrap();
    assert_eq!(
        list.runs(),
        &[
            Mapping {
                virt: 0x1000,
                phys: 0x30_0000,
                len: KIB4
            },
            Mapping {
                virt: 0xFFFF_8880_0000_0000,
                phys: 0,
                len: 0xA_0000
            },
            Mapping {
                virt: 0xFFFF_8880_0010_0000,
                phys: 0x10_0000,
                len: 0x30_0000
            },
        ]
    );
    assert_eq!(stats.leaves, 3);
    check_runs(&g, &cpu, &sme, &list, u64::MAX);

    // MAXPHYADDR = 46 drops bit 47 as well, with no clear_mask.
    let m46 = WalkOptions {
        max_phys_bits: 46,
        ..WalkOptions::default()
    };
    let (list46, _) = walk_mem(&cpu, &mem, &m46).unwrap();
    assert_eq!(list46, list);
    check_runs(&g, &cpu, &m46, &list46, u64::MAX);

    // MAXPHYADDR = 48 keeps bit 47: nothing is in RAM.
    let m48 = WalkOptions {
        max_phys_bits: 48,
        ..WalkOptions::default()
    };
    assert!(walk_mem(&cpu, &mem, &m48).is_err());

    // Leaves only: C-bit in leaves, pointers clean; default options count them.
    let mut g = Guest::simple(PagingMode::Level4);
    g.map(0x1000, 0x30_0000, PageSize::K4, RW | C_BIT).unwrap();
    g.map(
        0x2000,
        0x31_0000,
        PageSize::K4,
        RW | SW_HIGH | pkey(15) | NX,
    )
    .unwrap();
    let (list, stats) = walk(&g, &WalkOptions::default());
    assert_eq!(list.translate(0x1000), None);
    assert_eq!(list.translate(0x2008), Some(0x31_0008));
    assert_eq!(stats.leaves_outside_ram, 1);
}

#[test]
fn a20_mask_applies_to_table_addresses() {
    let mut g = Guest::simple(PagingMode::Level4);
    g.map(0x40_0000, 0x30_0000, PageSize::K4, RW).unwrap();
    // Point the PML4 entry at the PDPT with bit 20 set: only A20 masking finds it.
    let root = g.root;
    let e = g.entry(root, 0);
    g.set_entry(root, 0, e | (1 << 20));
    let mut cpu = g.cpu(0);
    let mem = g.memory();
    let opts = WalkOptions::default();
    let (list, _) = walk_mem(&cpu, &mem, &opts).unwrap();
    assert_eq!(list.translate(0x40_0000), None);
    cpu.set_reg("a20_mask", !(1u64 << 20));
    let (list, _) = walk_mem(&cpu, &mem, &opts).unwrap();
    assert_eq!(list.translate(0x40_0000), Some(0x30_0000));
    check_runs(&g, &cpu, &opts, &list, u64::MAX);
}

// ---------------------------------------------------------------------------------
// The per-CPU view

/// Three paging CPUs sharing the kernel half, plus one with paging off.
fn multi_cpu_guest() -> (Guest, Vec<CpuState>) {
    let mut g = Guest::simple(PagingMode::Level4);
    let ktext = 0xFFFF_FFFF_8100_0000u64;
    let kdirect = 0xFFFF_8880_0000_0000u64;
    // CPU 0: kernel (direct map, text) and its process's user pages.
    for i in 0..8 {
        g.map(kdirect + i * MIB2, i * MIB2, PageSize::M2, RW)
            .unwrap();
    }
    for i in 0..4 {
        g.map(ktext + i * KIB4, 0x280_0000 + i * KIB4, PageSize::K4, RW)
            .unwrap();
    }
    g.map(0x40_0000, 0x200_0000, PageSize::K4, RW).unwrap();
    let root0 = g.root;

    // CPU 1: another process: same kernel tables, its own user page, and a kernel
    // mapping of its own in a PML4 slot CPU 0 does not use.
    let root1 = g.alloc_root();
    for i in 256..512 {
        let e = g.entry(root0, i);
        g.set_entry(root1, i, e);
    }
    g.switch_root(root1);
    g.map(0x40_0000, 0x210_0000, PageSize::K4, RW).unwrap();
    g.map(0xFFFF_9600_0000_0000, 0x220_0000, PageSize::K4, RW)
        .unwrap();

    // CPU 2: shares the direct map, but its text slot maps one page elsewhere.
    let root2 = g.alloc_root();
    for i in 256..511 {
        let e = g.entry(root0, i);
        g.set_entry(root2, i, e);
    }
    g.switch_root(root2);
    g.map(ktext, 0x230_0000, PageSize::K4, RW).unwrap();
    g.map(ktext + 0x10_0000, 0x240_0000, PageSize::K4, RW)
        .unwrap();
    g.map(0x50_0000, 0x250_0000, PageSize::K4, RW).unwrap();

    let mut cpus = Vec::new();
    for (i, r) in [root0, root1, root2].into_iter().enumerate() {
        g.switch_root(r);
        cpus.push(g.cpu(i as u32));
    }
    cpus.push(dumpconv_x86::cpu_from_root(3, 0, PagingMode::Off));
    g.switch_root(root0);
    (g, cpus)
}

/// A walker that is not the built-in one (as a plugin would be): `build_view` must
/// drive it through the trait and come to the same view.
struct Wrapped;

impl ArchWalker for Wrapped {
    fn name(&self) -> &str {
        "wrapped-x86"
    }
    fn arches(&self) -> &[Arch] {
        &[Arch::X86_64]
    }
    fn modes(&self) -> &[&str] {
        &["4level"]
    }
    // A walker that walks by itself says which CPUs page and where their kernel half
    // starts (the view asks).
    fn paging_enabled(&self, cpu: &CpuState) -> bool {
        X86Walker.paging_enabled(cpu)
    }
    fn kernel_start(&self, cpu: &CpuState) -> u64 {
        X86Walker.kernel_start(cpu)
    }
    fn walk(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        out: &mut MappingList,
    ) -> Result<WalkStats> {
        X86Walker.walk(cpu, mem, opts, out)
    }
}

#[test]
fn build_view_user_half_from_one_cpu_kernel_half_merged() {
    let (g, cpus) = multi_cpu_guest();
    let mem = g.memory();
    let opts = WalkOptions::default();
    let ktext = 0xFFFF_FFFF_8100_0000u64;

    let (view, stats) = build_view(&X86Walker, &cpus, &mem, &opts, ViewPolicy::default()).unwrap();
    // User half: CPU 0 only.
    assert_eq!(view.translate(0x40_0000), Some(0x200_0000));
    assert_eq!(view.translate(0x50_0000), None);
    // Kernel half: shared, plus CPU 1's own mapping, plus CPU 2's non-conflicting one.
    assert_eq!(view.translate(0xFFFF_8880_0000_1000), Some(0x1000));
    assert_eq!(view.translate(0xFFFF_9600_0000_0000), Some(0x220_0000));
    assert_eq!(view.translate(ktext + 0x10_0000), Some(0x240_0000));
    // Conflict on ktext: CPU 0 wins, and it is reported.
    assert_eq!(view.translate(ktext), Some(0x280_0000));
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("cpu 2") && w.contains("contradict")),
        "{:?}",
        stats.warnings
    );
    // Never two mappings for one virtual address.
    for w in view.runs().windows(2) {
        assert!(end(&w[0]) <= w[1].virt as u128, "{w:x?}");
    }
    // The shared kernel subtrees were walked once: fewer table visits than three
    // separate walks.
    let separate: u64 = cpus[..3]
        .iter()
        .map(|c| walk_mem(c, &mem, &opts).unwrap().1.table_pages)
        .sum();
    assert!(
        stats.table_pages < separate,
        "{} vs {separate}",
        stats.table_pages
    );

    // Every mapping in the view is one the reference gives for some CPU: user half for
    // CPU 0, kernel half for the first CPU that maps it.
    let ram = g.ref_ram();
    for m in view.runs() {
        let mut k = 0;
        while k < m.len {
            let v = m.virt + k;
            let owner = if v < 1 << 63 {
                &cpus[0]
            } else {
                cpus[..3]
                    .iter()
                    .find(|c| reference::translate(&ram, &Guest::ref_cpu(c, &opts), v).is_some())
                    .unwrap()
            };
            assert_eq!(
                reference::translate(&ram, &Guest::ref_cpu(owner, &opts), v),
                Some(m.phys + k),
                "{v:#x}"
            );
            k += KIB4;
        }
    }

    // Another user CPU.
    let p1 = ViewPolicy {
        user_cpu: Some(1),
        all_cpus: false,
    };
    let (v1, _) = build_view(&X86Walker, &cpus, &mem, &opts, p1).unwrap();
    assert_eq!(v1.translate(0x40_0000), Some(0x210_0000));
    assert_eq!(v1.translate(ktext), Some(0x280_0000));
    let p2 = ViewPolicy {
        user_cpu: Some(2),
        all_cpus: false,
    };
    let (v2, _) = build_view(&X86Walker, &cpus, &mem, &opts, p2).unwrap();
    assert_eq!(v2.translate(0x50_0000), Some(0x250_0000));
    assert_eq!(v2.translate(0x40_0000), None);
    // The user CPU's kernel half wins its conflicts.
    assert_eq!(v2.translate(ktext), Some(0x230_0000));

    // QEMU's union: both user pages at 0x40_0000, and the conflicting text page twice.
    let all = ViewPolicy {
        user_cpu: None,
        all_cpus: true,
    };
    let (u, us) = build_view(&X86Walker, &cpus, &mem, &opts, all).unwrap();
    let at = |v: u64| -> Vec<u64> {
        u.runs()
            .iter()
            .filter(|m| m.virt <= v && (v as u128) < end(m))
            .map(|m| m.phys + (v - m.virt))
            .collect()
    };
    assert_eq!(at(0x40_0000), vec![0x200_0000, 0x210_0000]);
    assert_eq!(at(0x50_0000), vec![0x250_0000]);
    assert_eq!(at(ktext), vec![0x230_0000, 0x280_0000]);
    assert_eq!(at(0xFFFF_8880_0000_1000), vec![0x1000]);
    assert!(us.warnings.iter().any(|w| w.contains("different CPUs")));

    // A walker driven through the trait gives the same views.
    for p in [ViewPolicy::default(), p1, p2, all] {
        let a = build_view(&X86Walker, &cpus, &mem, &opts, p).unwrap().0;
        let b = build_view(&Wrapped, &cpus, &mem, &opts, p).unwrap().0;
        let dynw: &dyn ArchWalker = &X86Walker;
        let c = build_view(dynw, &cpus, &mem, &opts, p).unwrap().0;
        assert_eq!(a, b, "{p:?}");
        assert_eq!(a, c, "{p:?}");
    }

    // Errors: unknown CPU, CPU with paging off, no paging CPU at all.
    for bad in [Some(9), Some(3)] {
        let p = ViewPolicy {
            user_cpu: bad,
            all_cpus: false,
        };
        assert!(matches!(
            build_view(&X86Walker, &cpus, &mem, &opts, p),
            Err(Error::Invalid(_))
        ));
    }
    let e = build_view(&X86Walker, &cpus[3..], &mem, &opts, ViewPolicy::default()).unwrap_err();
    assert!(e.to_string().contains("no CPU has paging"), "{e}");
    assert!(!X86Walker.paging_enabled(&cpus[3]));
}

#[test]
fn build_view_survives_a_broken_secondary_cpu() {
    let (g, mut cpus) = multi_cpu_guest();
    cpus[1].set_reg("cr3", 0x9000_0000); // outside RAM
    let mem = g.memory();
    let (v, s) = build_view(
        &X86Walker,
        &cpus,
        &mem,
        &WalkOptions::default(),
        ViewPolicy::default(),
    )
    .unwrap();
    assert_eq!(v.translate(0x40_0000), Some(0x200_0000));
    assert_eq!(v.translate(0xFFFF_9600_0000_0000), None);
    assert!(
        s.warnings.iter().any(|w| w.contains("cpu 1")),
        "{:?}",
        s.warnings
    );
    // ...but a broken user CPU is an error.
    let p = ViewPolicy {
        user_cpu: Some(1),
        all_cpus: false,
    };
    assert!(build_view(&X86Walker, &cpus, &mem, &WalkOptions::default(), p).is_err());
}

#[test]
fn build_view_forgets_subtrees_of_a_failed_cpu() {
    // CPU 1 walks subtree X (PML4 slot 300), then runs out of budget in subtree Y (slot
    // 400) and is dropped. CPU 2 shares X: X must be walked again for CPU 2, not
    // skipped as "already seen".
    let mut g = Guest::simple(PagingMode::Level4);
    g.map(0xFFFF_8880_0000_0000, 0, PageSize::M2, RW).unwrap();
    let root0 = g.root;
    let root1 = g.alloc_root();
    g.set_entry(root1, 273, g.entry(root0, 273));
    g.switch_root(root1);
    let x = 0xFFFF_9600_0000_0000u64;
    g.map(x, 0x220_0000, PageSize::K4, RW).unwrap();
    for i in 0..20 {
        g.map(
            0xFFFF_C800_0000_0000 + i * MIB2,
            0x230_0000,
            PageSize::K4,
            RW,
        )
        .unwrap();
    }
    let root2 = g.alloc_root();
    for i in [273, 300] {
        g.set_entry(root2, i, g.entry(root1, i));
    }
    let cpus: Vec<CpuState> = [root0, root1, root2]
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            g.switch_root(r);
            g.cpu(i as u32)
        })
        .collect();
    let opts = WalkOptions {
        max_table_pages: 12,
        ..WalkOptions::default()
    };
    let mem = g.memory();
    let (v, s) = build_view(&X86Walker, &cpus, &mem, &opts, ViewPolicy::default()).unwrap();
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("cpu 1") && w.contains("max_table_pages")),
        "{:?}",
        s.warnings
    );
    assert_eq!(v.translate(x), Some(0x220_0000));
    assert_eq!(v.translate(0xFFFF_C800_0000_0000), None);
}

// ---------------------------------------------------------------------------------
// translate()

#[test]
fn translate_records_every_step() {
    let (g, _) = ia32e_layout(PagingMode::Level4);
    let cpu = g.cpu(0);
    let mem = g.memory();
    let opts = WalkOptions::default();
    let v = 0x40_0123u64;
    let t = X86Walker.translate(&cpu, &mem, &opts, v).unwrap();
    assert_eq!(t.virt, v);
    assert_eq!(t.phys, Some(0x300_0123));
    assert_eq!(t.page_size, Some(KIB4));
    assert_eq!(t.fault, None);
    let names: Vec<&str> = t.steps.iter().map(|s| s.level).collect();
    assert_eq!(names, ["PML4", "PDPT", "PD", "PT"]);
    // Entry addresses and raw entries as the builder laid them out.
    let mut table = g.root;
    for (l, s) in t.steps.iter().enumerate() {
        let idx = g.index(v, l);
        assert_eq!(s.entry_addr, table + idx * 8);
        assert_eq!(s.entry, g.entry(table, idx));
        table = s.entry & 0x000F_FFFF_FFFF_F000;
    }

    // 1 GiB page: two steps; 2 MiB page: three.
    let t = X86Walker
        .translate(&cpu, &mem, &opts, 0xFFFF_8880_4000_0010)
        .unwrap();
    assert_eq!(
        (t.steps.len(), t.phys, t.page_size),
        (2, Some(GIB1 + 0x10), Some(GIB1))
    );
    let t = X86Walker.translate(&cpu, &mem, &opts, 0x6000_1234).unwrap();
    assert_eq!(
        (t.steps.len(), t.phys, t.page_size),
        (3, Some(0x400_1234), Some(MIB2))
    );
    // Not present, at the PT level.
    let t = X86Walker.translate(&cpu, &mem, &opts, 0x7060_0000).unwrap();
    assert_eq!((t.steps.len(), t.phys), (4, None));
    assert!(t.fault.unwrap().contains("PT entry not present"));
    // Not canonical.
    let t = X86Walker
        .translate(&cpu, &mem, &opts, 0xFFFF_0000_0040_0000)
        .unwrap();
    assert!(t.steps.is_empty() && t.phys.is_none());
    assert!(t.fault.unwrap().contains("not canonical"));
    // Outside RAM: the physical address is still given, with a note.
    let t = X86Walker
        .translate(&cpu, &mem, &opts, 0xFFFF_8880_C000_0000)
        .unwrap();
    assert_eq!(t.phys, Some(0xC000_0000));
    assert!(t.fault.unwrap().contains("not in the dump's RAM"));

    // 5-level: five names; 32-bit: PD/PT and a 4 MiB page; paging off: identity.
    let (g5, _) = ia32e_layout(PagingMode::Level5);
    let t = X86Walker
        .translate(&g5.cpu(0), &g5.memory(), &opts, 0x40_0000)
        .unwrap();
    let names: Vec<&str> = t.steps.iter().map(|s| s.level).collect();
    assert_eq!(names, ["PML5", "PML4", "PDPT", "PD", "PT"]);
    let mut g32 = Guest::simple(PagingMode::Bits32);
    g32.map(0xC000_0000, MIB4, PageSize::M4, RW).unwrap();
    let t = X86Walker
        .translate(&g32.cpu(0), &g32.memory(), &opts, 0xC000_0042)
        .unwrap();
    assert_eq!(
        (t.steps.len(), t.phys, t.page_size),
        (1, Some(MIB4 + 0x42), Some(MIB4))
    );
    assert_eq!(t.steps[0].level, "PD");
    let t = X86Walker
        .translate(&g32.cpu(0), &g32.memory(), &opts, 1 << 32)
        .unwrap();
    assert!(t.fault.unwrap().contains("beyond 4 GiB"));
    let off = dumpconv_x86::cpu_from_root(0, 0, PagingMode::Off);
    let t = X86Walker
        .translate(&off, &g32.memory(), &opts, 0x1234)
        .unwrap();
    assert_eq!(t.phys, Some(0x1234));

    // translate() and walk() agree everywhere the reference says anything.
    let (list, _) = walk(&g, &opts);
    for v in sample_virts(PagingMode::Level4, 3, 3_000, &[0x40_0000, 0x7080_0000]) {
        let t = X86Walker.translate(&cpu, &mem, &opts, v).unwrap();
        let in_ram = t.phys.filter(|_| t.fault.is_none());
        assert_eq!(in_ram, list.translate(v), "{v:#x}");
    }
}

// ---------------------------------------------------------------------------------
// Random layouts

#[derive(Debug, Clone)]
struct Spec {
    top: u64,
    low: u64,
    size: usize,
    phys: u64,
    alias_of: Option<usize>,
    bits: u64,
    present: bool,
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<u64>(),
        any::<u64>(),
        0usize..3,
        any::<u64>(),
        prop::option::weighted(0.15, 0usize..64),
        any::<u64>(),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(top, low, size, phys, alias_of, bits, present)| Spec {
            top,
            low,
            size,
            phys,
            alias_of,
            bits,
            present,
        })
}

#[derive(Debug, Clone)]
struct Layout {
    specs: Vec<Spec>,
    table_bits: u64,
    cr3_extra: u64,
    pse: bool,
    /// 0: none; 1: a root entry points at the root; 2: a level-1 table entry points
    /// back at the root; 3: a last-level table entry points at its parent.
    loop_kind: u8,
    loop_index: u64,
    max_phys_bits: u8,
    seed: u64,
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    (
        prop::collection::vec(spec_strategy(), 1..48),
        any::<u64>(),
        0u64..0x1000,
        any::<bool>(),
        0u8..4,
        any::<u64>(),
        prop::sample::select(vec![52u8, 52, 46, 40, 36]),
        any::<u64>(),
    )
        .prop_map(
            |(specs, table_bits, cr3_extra, pse, loop_kind, loop_index, max_phys_bits, seed)| {
                Layout {
                    specs,
                    table_bits,
                    cr3_extra,
                    pse,
                    loop_kind,
                    loop_index,
                    max_phys_bits,
                    seed,
                }
            },
        )
}

/// Build a guest from a random layout: virtual addresses are drawn from a few top-level
/// slots (so tables are shared), physical ones from RAM and the holes around it.
fn build_random(mode: PagingMode, l: &Layout) -> (Guest, Vec<u64>) {
    // 3 GiB + 1 GiB of RAM with the VGA and PCI holes (zero segments: free).
    let mut g = Guest::new(
        mode,
        &[
            (0, 0xA_0000),
            (0x10_0000, 0xC000_0000),
            (0x1_0000_0000, 0x1_4000_0000),
        ],
        (0x100_0000, 0x180_0000),
    );
    g.pse = l.pse || mode != PagingMode::Bits32;
    let eight = mode != PagingMode::Bits32;
    if eight {
        // Ignored pointer bits: NX, 62:52, 11:9 (A, PWT, PCD don't matter either).
        g.table_bits = l.table_bits & (NX | (0x7FF << 52) | SW_LOW | 0x78);
        if l.table_bits & 0xF == 0 {
            // Table pointers with address bits 51:40 set: tables outside RAM unless
            // MAXPHYADDR drops those bits.
            g.table_bits |= l.table_bits & (0xFFF << 40);
        }
    } else {
        g.table_bits = l.table_bits & (SW_LOW | 0x78);
    }
    if matches!(mode, PagingMode::Level4 | PagingMode::Level5) {
        g.cr3_extra = l.cr3_extra;
    }
    let sizes = PageSize::for_mode(mode);
    let mut phys_used: Vec<u64> = Vec::new();
    let mut interesting = Vec::new();
    for s in &l.specs {
        let size = sizes[s.size % sizes.len()];
        let len = size.bytes();
        let virt = match mode {
            PagingMode::Bits32 | PagingMode::Pae => {
                // Four 1 GiB regions, concentrated at their start.
                ((s.top % 4) << 30) | (s.low % (64 << 20))
            }
            PagingMode::Level4 => {
                let top = [0u64, 1, 255, 256, 273, 511][(s.top % 6) as usize];
                let raw = (top << 39) | (s.low % (8 << 30));
                (((raw << 16) as i64) >> 16) as u64
            }
            _ => {
                let top = [0u64, 1, 255, 256, 300, 511][(s.top % 6) as usize];
                let second = [0u64, 1, 511][((s.top >> 8) % 3) as usize];
                let raw = (top << 48) | (second << 39) | (s.low % (8 << 30));
                (((raw << 7) as i64) >> 7) as u64
            }
        } & !(len - 1);
        let phys_space: u64 = match (mode, size) {
            (PagingMode::Bits32, PageSize::K4) => 1 << 32,
            _ => 0x1_8000_0000,
        };
        let phys = match s.alias_of.and_then(|i| phys_used.get(i)) {
            Some(&p) if p % len == 0 => p,
            _ => (s.phys % phys_space) & !(len - 1),
        };
        let mut bits = s.bits & (RW | US | 0x18 | 0x60 | G | SW_LOW);
        if size != PageSize::K4 {
            bits |= s.bits & PAT_LARGE;
        }
        if eight {
            bits |= s.bits & (NX | (0x7FF << 52));
            // Now and then address bits 51:40: above MAXPHYADDR when it is below 52
            // (masked away), else a leaf outside RAM.
            if (s.bits >> 20) & 7 == 0 {
                bits |= s.bits & (0xFFF << 40);
            }
        }
        let r = if s.present {
            g.map(virt, phys, size, bits)
        } else {
            g.map_not_present(virt, phys, size, bits)
        };
        if r.is_ok() {
            phys_used.push(phys);
            interesting.push(virt);
        }
    }
    if matches!(mode, PagingMode::Level4 | PagingMode::Level5) && l.table_bits & 0x100 != 0 {
        // PS set in every PML5E/PML4E: ignored, as the reference ignores it.
        let top_levels = if mode == PagingMode::Level5 { 2 } else { 1 };
        for &v in &interesting {
            for lv in 0..top_levels {
                if let Ok(t) = g.table_of(v, lv) {
                    let i = g.index(v, lv);
                    let e = g.entry(t, i);
                    if e & 1 != 0 {
                        g.set_entry(t, i, e | PS);
                    }
                }
            }
        }
    }
    match (l.loop_kind, interesting.first()) {
        (1, _) => {
            let top = g.index(l.loop_index, 0);
            let root = g.root & !0xFFF;
            if mode != PagingMode::Pae {
                g.set_entry(root, top, root | 3);
            }
        }
        (2, Some(&v)) => {
            if let Ok(t) = g.table_of(v, 1) {
                let root = g.root & !0xFFF;
                let idx = l.loop_index % 512;
                if g.entry(t, idx) & 1 == 0 {
                    g.set_entry(t, idx, root | 3);
                }
            }
        }
        (3, Some(&v)) => {
            let levels = match mode {
                PagingMode::Bits32 => 2,
                PagingMode::Pae => 3,
                PagingMode::Level4 => 4,
                _ => 5,
            };
            if let (Ok(parent), Ok(t)) = (g.table_of(v, levels - 2), g.table_of(v, levels - 1)) {
                let idx = l.loop_index % 512;
                if g.entry(t, idx) & 1 == 0 {
                    g.set_entry(t, idx, parent | 3);
                }
            }
        }
        _ => {}
    }
    (g, interesting)
}

fn check_random(mode: PagingMode, l: &Layout) {
    let (g, interesting) = build_random(mode, l);
    let opts = WalkOptions {
        max_phys_bits: l.max_phys_bits,
        ..WalkOptions::default()
    };
    let cpu = g.cpu(0);
    let (list, _) = walk_mem(&cpu, &g.memory(), &opts).expect("walk");
    check_runs(&g, &cpu, &opts, &list, 3_000);
    check_virts(
        &g,
        &cpu,
        &opts,
        &list,
        sample_virts(mode, l.seed, 1_000, &interesting),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_layouts_bits32(l in layout_strategy()) {
        check_random(PagingMode::Bits32, &l);
    }

    #[test]
    fn random_layouts_pae(l in layout_strategy()) {
        check_random(PagingMode::Pae, &l);
    }

    #[test]
    fn random_layouts_level4(l in layout_strategy()) {
        check_random(PagingMode::Level4, &l);
    }

    #[test]
    fn random_layouts_level5(l in layout_strategy()) {
        check_random(PagingMode::Level5, &l);
    }
}

// ---------------------------------------------------------------------------------
// Speed (a measurement, not a timed test): `cargo test --release -p dumpconv-tests
// --test walker_synthetic -- --ignored --nocapture walk_speed`

fn speed_guest(gib: u64, scatter: bool) -> Guest {
    let pages = gib * (GIB1 / KIB4);
    let tables = pages / 512 + 64;
    let pool = (0x100_0000, 0x100_0000 + tables * KIB4);
    let mut g = Guest::new(
        PagingMode::Level4,
        &[(0, 0x100_0000 + tables * KIB4 + (gib + 1) * GIB1)],
        pool,
    );
    let data = (pool.1 + GIB1 - 1) & !(GIB1 - 1);
    let base = 0xFFFF_C900_0000_0000u64; // vmalloc-like
    for i in 0..pages {
        // Scattered: a page permutation (odd multiplier mod 2^k), so no two neighbours
        // are physically contiguous and every leaf is its own run.
        let p = if scatter {
            (i.wrapping_mul(0x9E37_79B1)) % pages
        } else {
            i
        };
        g.map(base + i * KIB4, data + p * KIB4, PageSize::K4, RW | NX)
            .unwrap();
    }
    g
}

#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn walk_speed() {
    for (gib, scatter) in [(1, false), (1, true), (16, true)] {
        let g = speed_guest(gib, scatter);
        let mem = g.memory();
        let cpu = g.cpu(0);
        let opts = WalkOptions::default();
        let mut best = Duration::MAX;
        let mut result = None;
        for _ in 0..5 {
            let t = Instant::now();
            let r = walk_mem(&cpu, &mem, &opts).unwrap();
            best = best.min(t.elapsed());
            result = Some(r);
        }
        let (list, stats) = result.unwrap();
        assert_eq!(list.mapped_bytes(), gib * GIB1);
        println!(
            "walk_speed: {gib} GiB of 4 KiB pages ({}): {} leaves, {} table pages, {} runs \
             in {:.2} ms ({:.1} M leaves/s)",
            if scatter { "scattered" } else { "contiguous" },
            stats.leaves,
            stats.table_pages,
            list.len(),
            best.as_secs_f64() * 1e3,
            stats.leaves as f64 / best.as_secs_f64() / 1e6
        );
    }
}
