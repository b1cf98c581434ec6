//! Synthetic guests: page tables laid out in code from a list of intended mappings.
//!
//! A [`Guest`] is sparse guest RAM (RAM ranges, with holes between them, plus the bytes
//! of the pages that were written) in which [`Guest::map`] builds the page tables of one
//! paging mode, allocating table pages from a pool. Raw entry access
//! ([`Guest::set_entry`], [`Guest::table_of`]) builds what `map` will not: loops,
//! self-references, non-present entries with junk in them.
//!
//! The builder knows the modes' geometry itself (it does not use `dumpconv-x86`), so a
//! mistake in the walker's mode description is not copied here.

// Test support: a failed temp-file write or an exhausted table pool is a broken test
// setup, and panicking with the reason is the useful answer.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;

use dumpconv_core::{CpuState, SegmentMemory, WalkOptions};
use dumpconv_x86::{PagingMode, CR4_PSE};

use crate::reference::{RefCpu, RefRam};

pub const KIB4: u64 = 0x1000;
pub const MIB2: u64 = 0x20_0000;
pub const MIB4: u64 = 0x40_0000;
pub const GIB1: u64 = 0x4000_0000;

/// Entry bits, named as in the SDM.
pub const P: u64 = 1;
pub const RW: u64 = 1 << 1;
pub const US: u64 = 1 << 2;
pub const PS: u64 = 1 << 7;
pub const G: u64 = 1 << 8;
/// PAT bit of a 2 MiB / 1 GiB / 4 MiB leaf (bit 12: inside the address field of a 4 KiB
/// one).
pub const PAT_LARGE: u64 = 1 << 12;
pub const NX: u64 = 1 << 63;
/// Protection key `k` (bits 62:59).
pub const fn pkey(k: u64) -> u64 {
    (k & 0xF) << 59
}
/// Software-available bits 58:52 (all of them).
pub const SW_HIGH: u64 = 0x7F << 52;
/// Software-available bits 11:9.
pub const SW_LOW: u64 = 0x7 << 9;

/// Page sizes a leaf may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    K4,
    M2,
    M4,
    G1,
}

impl PageSize {
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::K4 => KIB4,
            PageSize::M2 => MIB2,
            PageSize::M4 => MIB4,
            PageSize::G1 => GIB1,
        }
    }

    /// Sizes a mode can map.
    pub fn for_mode(mode: PagingMode) -> &'static [PageSize] {
        match mode {
            PagingMode::Bits32 => &[PageSize::K4, PageSize::M4],
            PagingMode::Pae => &[PageSize::K4, PageSize::M2],
            PagingMode::Level4 | PagingMode::Level5 => &[PageSize::K4, PageSize::M2, PageSize::G1],
            PagingMode::Off => &[],
        }
    }
}

/// Geometry of a mode: (lowest index bit, index bits) per level, top first.
fn geometry(mode: PagingMode) -> (&'static [(u32, u32)], u64) {
    match mode {
        PagingMode::Bits32 => (&[(22, 10), (12, 10)], 4),
        PagingMode::Pae => (&[(30, 2), (21, 9), (12, 9)], 8),
        PagingMode::Level4 => (&[(39, 9), (30, 9), (21, 9), (12, 9)], 8),
        PagingMode::Level5 => (&[(48, 9), (39, 9), (30, 9), (21, 9), (12, 9)], 8),
        PagingMode::Off => (&[], 8),
    }
}

/// A synthetic guest: RAM and the page tables of one mode.
#[derive(Debug, Clone)]
pub struct Guest {
    pub mode: PagingMode,
    /// CR4.PSE (matters in 32-bit paging only).
    pub pse: bool,
    /// RAM ranges `[start, end)`, sorted, page-aligned.
    pub ranges: Vec<(u64, u64)>,
    /// Bytes of written pages, by page address.
    pub pages: BTreeMap<u64, Box<[u8]>>,
    /// Root table (the 32-byte PDPT in PAE, not page-aligned on purpose).
    pub root: u64,
    /// Bits ORed into CR3 besides the root (PCID, PWT/PCD, an SME C-bit...).
    pub cr3_extra: u64,
    /// Bits ORed into every table-pointer entry `map` creates (NX, software bits...).
    pub table_bits: u64,
    pool_next: u64,
    pool_end: u64,
}

impl Guest {
    /// A guest in `mode` with RAM `ranges` (page-aligned `[start, end)`) whose tables
    /// are allocated from `pool` (inside RAM; below 4 GiB for 32-bit paging and, for
    /// the root, for PAE).
    pub fn new(mode: PagingMode, ranges: &[(u64, u64)], pool: (u64, u64)) -> Guest {
        let mut ranges = ranges.to_vec();
        ranges.sort_unstable();
        let mut g = Guest {
            mode,
            pse: true,
            ranges,
            pages: BTreeMap::new(),
            root: 0,
            cr3_extra: 0,
            table_bits: 0,
            pool_next: pool.0,
            pool_end: pool.1,
        };
        g.root = g.alloc_root();
        g
    }

    /// 64 MiB of RAM at 0 with a 1 MiB hole at 0xA0000 (legacy VGA), tables from 16 MiB.
    pub fn simple(mode: PagingMode) -> Guest {
        Guest::new(
            mode,
            &[(0, 0xA_0000), (0x10_0000, 0x400_0000)],
            (0x100_0000, 0x200_0000),
        )
    }

    fn levels(&self) -> &'static [(u32, u32)] {
        geometry(self.mode).0
    }

    fn entry_bytes(&self) -> u64 {
        geometry(self.mode).1
    }

    /// A fresh zeroed table page from the pool.
    pub fn alloc_table(&mut self) -> u64 {
        let p = self.pool_next;
        assert!(
            p + KIB4 <= self.pool_end,
            "synthetic guest: table pool exhausted"
        );
        self.pool_next += KIB4;
        self.pages
            .insert(p, vec![0u8; KIB4 as usize].into_boxed_slice());
        p
    }

    /// A new, empty root table (for another CPU or process); `switch_root` makes
    /// `map` build under it.
    pub fn alloc_root(&mut self) -> u64 {
        let page = self.alloc_table();
        // PAE: CR3 bits 31:5 locate the PDPT, so put it off the page start.
        if self.mode == PagingMode::Pae {
            page + 0x60
        } else {
            page
        }
    }

    /// Make `root` the table `map`, `table_of` and `cpu` use.
    pub fn switch_root(&mut self, root: u64) {
        self.root = root;
    }

    /// Table pages allocated so far.
    pub fn tables_allocated(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Index of `virt` in the table at `level` (0 = top).
    pub fn index(&self, virt: u64, level: usize) -> u64 {
        let (shift, bits) = self.levels()[level];
        (virt >> shift) & ((1 << bits) - 1)
    }

    /// Raw entry `index` of the table at `table`.
    pub fn entry(&self, table: u64, index: u64) -> u64 {
        let eb = self.entry_bytes();
        let addr = table + index * eb;
        let page = addr & !0xFFF;
        let off = (addr - page) as usize;
        let mut v = [0u8; 8];
        if let Some(p) = self.pages.get(&page) {
            v[..eb as usize].copy_from_slice(&p[off..off + eb as usize]);
        }
        u64::from_le_bytes(v)
    }

    /// Write raw entry `index` of the table at `table` (the page need not come from the
    /// pool; it is created zeroed if new). 32-bit paging keeps the low 32 bits.
    pub fn set_entry(&mut self, table: u64, index: u64, value: u64) {
        let eb = self.entry_bytes();
        let addr = table + index * eb;
        let page = addr & !0xFFF;
        let off = (addr - page) as usize;
        let p = self
            .pages
            .entry(page)
            .or_insert_with(|| vec![0u8; KIB4 as usize].into_boxed_slice());
        p[off..off + eb as usize].copy_from_slice(&value.to_le_bytes()[..eb as usize]);
    }

    /// Flags of a table-pointer entry this builder creates.
    fn pointer_flags(&self, level: usize) -> u64 {
        if self.mode == PagingMode::Pae && level == 0 {
            // PAE PDPTEs: bits 2:1 are reserved; only P (and what the test asks for).
            P | self.table_bits
        } else {
            P | RW | US | self.table_bits
        }
    }

    /// Level whose entries map pages of `size`, if the mode has one.
    fn leaf_level(&self, size: PageSize) -> Option<usize> {
        let shift = size.bytes().trailing_zeros();
        let l = self.levels().iter().position(|&(s, _)| s == shift)?;
        // 4 MiB is only a 32-bit PDE; 2 MiB and 1 GiB only in 8-byte modes.
        let ok = match size {
            PageSize::K4 => true,
            PageSize::M4 => self.mode == PagingMode::Bits32 && self.pse,
            PageSize::M2 => matches!(
                self.mode,
                PagingMode::Pae | PagingMode::Level4 | PagingMode::Level5
            ),
            PageSize::G1 => matches!(self.mode, PagingMode::Level4 | PagingMode::Level5),
        };
        ok.then_some(l)
    }

    /// The table at `level` on the path of `virt` (level 0 is the root), creating
    /// missing tables. Errors if a large page is in the way.
    pub fn table_of(&mut self, virt: u64, level: usize) -> Result<u64, String> {
        let mut table = self.root;
        for l in 0..level {
            let idx = self.index(virt, l);
            let e = self.entry(table, idx);
            if e & P == 0 {
                let t = self.alloc_table();
                let ptr = t | self.pointer_flags(l);
                self.set_entry(table, idx, ptr);
                table = t;
            } else if e & PS != 0 && self.large_level(l) {
                return Err(format!("{virt:#x}: a large page is mapped at level {l}"));
            } else {
                table = self.pointer_address(e);
            }
        }
        Ok(table)
    }

    fn large_level(&self, l: usize) -> bool {
        match self.mode {
            PagingMode::Bits32 => l == 0 && self.pse,
            PagingMode::Pae => l == 1,
            PagingMode::Level4 => l == 1 || l == 2,
            PagingMode::Level5 => l == 2 || l == 3,
            PagingMode::Off => false,
        }
    }

    /// Where a pointer entry this builder wrote points (its own `table_bits` removed,
    /// so tests may set address bits above MAXPHYADDR there).
    fn pointer_address(&self, e: u64) -> u64 {
        let e = e & !self.table_bits;
        if self.entry_bytes() == 4 {
            e & 0xFFFF_F000
        } else {
            e & 0x000F_FFFF_FFFF_F000
        }
    }

    /// The leaf entry for `phys` at `size`.
    fn leaf_entry(&self, phys: u64, size: PageSize, bits: u64) -> Result<u64, String> {
        if self.entry_bytes() == 4 {
            if bits > 0xFFFF_FFFF {
                return Err(format!("bits {bits:#x} do not fit a 4-byte entry"));
            }
            return Ok(match size {
                PageSize::M4 => {
                    if phys >= 1 << 40 {
                        return Err(format!("{phys:#x} is beyond PSE-36's 40 bits"));
                    }
                    (phys & 0xFFC0_0000) | (((phys >> 32) & 0xFF) << 13) | PS | bits
                }
                _ => {
                    if phys >= 1 << 32 {
                        return Err(format!("{phys:#x} is beyond a 4 KiB 32-bit PTE"));
                    }
                    phys | bits
                }
            });
        }
        let ps = if size == PageSize::K4 { 0 } else { PS };
        Ok(phys | ps | bits)
    }

    /// Map `virt` to `phys` with one leaf of `size`. `bits` is ORed into the leaf (P and
    /// PS are added here; pass RW, NX, pkey(), SW_HIGH, PAT_LARGE, G...). `virt` may be
    /// canonical or not; only its index bits are used.
    pub fn map(&mut self, virt: u64, phys: u64, size: PageSize, bits: u64) -> Result<(), String> {
        self.put_leaf(virt, phys, size, bits | P)
    }

    /// Write a leaf entry with P clear but everything else set (address, RW, ...): a
    /// walker must ignore it.
    pub fn map_not_present(
        &mut self,
        virt: u64,
        phys: u64,
        size: PageSize,
        bits: u64,
    ) -> Result<(), String> {
        self.put_leaf(virt, phys, size, bits & !P)
    }

    fn put_leaf(&mut self, virt: u64, phys: u64, size: PageSize, bits: u64) -> Result<(), String> {
        let level = self
            .leaf_level(size)
            .ok_or_else(|| format!("{:?} paging cannot map a {size:?} page", self.mode))?;
        let len = size.bytes();
        if !virt.is_multiple_of(len) || !phys.is_multiple_of(len) {
            return Err(format!("{virt:#x} -> {phys:#x} is not {size:?}-aligned"));
        }
        if matches!(self.mode, PagingMode::Bits32 | PagingMode::Pae) && virt >= 1 << 32 {
            return Err(format!("{virt:#x} is beyond 4 GiB"));
        }
        let table = self.table_of(virt, level)?;
        let idx = self.index(virt, level);
        if self.entry(table, idx) & P != 0 {
            return Err(format!("{virt:#x} is already mapped"));
        }
        let e = self.leaf_entry(phys, size, bits)?;
        self.set_entry(table, idx, e);
        Ok(())
    }

    /// CR3 as the CPU holds it.
    pub fn cr3(&self) -> u64 {
        self.root | self.cr3_extra
    }

    /// A CPU state selecting this guest's mode and tables.
    pub fn cpu(&self, index: u32) -> CpuState {
        let mut c = dumpconv_x86::cpu_from_root(index, self.cr3(), self.mode);
        if let Some(cr4) = c.reg("cr4") {
            c.set_reg(
                "cr4",
                if self.pse {
                    cr4 | CR4_PSE
                } else {
                    cr4 & !CR4_PSE
                },
            );
        }
        c
    }

    /// The reference translator's view of this guest's RAM.
    pub fn ref_ram(&self) -> RefRam<'_> {
        RefRam {
            ranges: &self.ranges,
            pages: &self.pages,
        }
    }

    /// The reference translator's view of `cpu` with `opts`.
    pub fn ref_cpu(cpu: &CpuState, opts: &WalkOptions) -> RefCpu {
        let mut r = RefCpu::new(
            cpu.reg("cr0").unwrap_or(0),
            cpu.reg("cr3").unwrap_or(0),
            cpu.reg("cr4").unwrap_or(0),
            cpu.reg("efer").unwrap_or(0),
        );
        r.max_phys_bits = u32::from(opts.max_phys_bits);
        r.clear_mask = opts.clear_mask;
        r.a20_mask = cpu.reg("a20_mask").unwrap_or(u64::MAX);
        r
    }

    /// The guest as a `SegmentMemory`: written pages go to an anonymous temp file,
    /// the rest of RAM is zero segments (so a guest with gigabytes of RAM costs only
    /// its tables).
    pub fn memory(&self) -> SegmentMemory {
        crate::sparse::segment_memory("synthetic-guest", &self.ranges, &self.pages)
    }
}
