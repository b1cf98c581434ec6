//! Synthetic AArch64 guests: stage-1 translation tables laid out in code.
//!
//! An [`Arm64Guest`] is sparse guest RAM (RAM ranges with holes, plus the bytes of the
//! pages that were written) in which [`Arm64Guest::map`] builds the tables of either
//! half of the EL1&0 regime (TTBR0_EL1 for the low VA range, TTBR1_EL1 for the high
//! one), each with its own granule (4KB, 16KB, 64KB) and VA size (TnSZ), allocating
//! table pages from a pool. Blocks may be mapped at every level the granule allows.
//! Raw descriptor access ([`Arm64Guest::set_entry`], [`Arm64Guest::table_of`]) and the
//! helpers below build what `map` will not: loops, tables outside RAM, reserved
//! encodings, blocks at levels that have none.
//!
//! The CPU comes out as system registers by name ([`Arm64Guest::regs`]: ttbr0_el1,
//! ttbr1_el1, tcr_el1, sctlr_el1) with an ASID and CnP set in both TTBRs and the usual
//! Linux cacheability/shareability/TBI0/HA/HD bits set in TCR_EL1, and the RAM as a
//! `SegmentMemory` ([`Arm64Guest::memory`]).
//!
//! The builder knows the geometry itself (it shares no code with a walker or with the
//! reference translator), so a mistake in a walker's description is not copied here.

// Test support: a failed temp-file write or an exhausted table pool is a broken test
// setup, and panicking with the reason is the useful answer.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;

use dumpconv_core::{Arch, CpuState, SegmentMemory};

use crate::reference::RefRam;
use crate::reference_arm64::RefArm64Cpu;

/// Descriptor bit 0.
pub const VALID: u64 = 1;
/// Descriptor bit 1: table (levels 0-2) or page (level 3); clear for a block.
pub const TABLE_OR_PAGE: u64 = 1 << 1;
/// Access flag.
pub const AF: u64 = 1 << 10;
/// Not global.
pub const NG: u64 = 1 << 11;
/// AttrIndx = 4 (Linux's MT_NORMAL slot), bits 4:2.
pub const ATTR_NORMAL: u64 = 4 << 2;
/// AP[2:1] = 0b10: read-only at EL1.
pub const AP_RO: u64 = 0b10 << 6;
/// Inner shareable (bits 9:8; not with DS = 1, where those bits are OA[51:50]).
pub const SH_INNER: u64 = 0b11 << 8;
/// Contiguous hint.
pub const CONT: u64 = 1 << 52;
pub const PXN: u64 = 1 << 53;
pub const UXN: u64 = 1 << 54;
/// Software-defined bits 58:55.
pub const SW_BITS: u64 = 0xF << 55;
/// Table-descriptor attribute bits 63:59 (NSTable, APTable, UXNTable, PXNTable).
pub const TABLE_ATTRS: u64 = 0x1F << 59;

/// TCR_EL1 fields.
pub const TCR_EPD0: u64 = 1 << 7;
pub const TCR_EPD1: u64 = 1 << 23;
pub const TCR_A1: u64 = 1 << 22;
pub const TCR_AS: u64 = 1 << 36;
pub const TCR_TBI0: u64 = 1 << 37;
pub const TCR_TBI1: u64 = 1 << 38;
pub const TCR_HA: u64 = 1 << 39;
pub const TCR_HD: u64 = 1 << 40;
pub const TCR_DS: u64 = 1 << 59;
/// IRGN0/ORGN0 write-back, SH0 inner; the same for TTBR1.
pub const TCR_CACHE_BITS: u64 =
    (1 << 8) | (1 << 10) | (3 << 12) | (1 << 24) | (1 << 26) | (3 << 28);
/// SCTLR_EL1.EE: big-endian table walks.
pub const SCTLR_EE: u64 = 1 << 25;
/// SCTLR_EL1 with M (bit 0), C, I and the RES1 bits Linux sets.
pub const SCTLR_MMU_ON: u64 = 0x0000_0000_34d5_d91d;

/// A translation granule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granule {
    K4,
    K16,
    K64,
}

impl Granule {
    pub const ALL: [Granule; 3] = [Granule::K4, Granule::K16, Granule::K64];

    /// log2 of the granule.
    pub fn shift(self) -> u32 {
        match self {
            Granule::K4 => 12,
            Granule::K16 => 14,
            Granule::K64 => 16,
        }
    }

    pub fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// VA bits each level resolves (a table holds 2^stride descriptors).
    pub fn stride(self) -> u32 {
        self.shift() - 3
    }

    /// TCR_EL1.TG0 encoding.
    pub fn tg0(self) -> u64 {
        match self {
            Granule::K4 => 0b00,
            Granule::K64 => 0b01,
            Granule::K16 => 0b10,
        }
    }

    /// TCR_EL1.TG1 encoding (not the same as TG0's).
    pub fn tg1(self) -> u64 {
        match self {
            Granule::K16 => 0b01,
            Granule::K4 => 0b10,
            Granule::K64 => 0b11,
        }
    }

    /// VA sizes a guest of this granule can be built with (52 needs DS for 4K/16K, which
    /// `Arm64Guest::new` turns on).
    pub fn va_sizes(self) -> &'static [u32] {
        &[39, 42, 47, 48, 52]
    }
}

/// One level of a half's table tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Architectural level number (-1..=3).
    pub level: i32,
    /// Lowest VA bit this level indexes (the size of what one descriptor maps, log2).
    pub shift: u32,
    /// Index bits at this level (fewer than the stride at the start level).
    pub bits: u32,
}

/// One VA range (TTBR0 = 0, TTBR1 = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Half {
    pub granule: Granule,
    pub va_bits: u32,
    /// Physical address of the start-level table (may be inside a page when the table
    /// is smaller than the granule).
    pub root: u64,
    /// ASID stored in TTBRn bits 63:48.
    pub asid: u16,
    /// TCR_EL1.EPDn: walks through this TTBR disabled.
    pub walk_disabled: bool,
    /// TCR_EL1.TBIn.
    pub tbi: bool,
}

/// An intended mapping made by [`Arm64Guest::map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapped {
    pub half: usize,
    pub virt: u64,
    pub phys: u64,
    pub len: u64,
    pub level: i32,
}

/// A synthetic arm64 guest: RAM and the stage-1 tables of both TTBRs.
#[derive(Debug, Clone)]
pub struct Arm64Guest {
    /// RAM ranges `[start, end)`, sorted.
    pub ranges: Vec<(u64, u64)>,
    /// Bytes of written 4 KiB pages, by page address (tables of bigger granules span
    /// several).
    pub pages: BTreeMap<u64, Box<[u8]>>,
    pub halves: [Half; 2],
    /// TCR_EL1.DS (FEAT_LPA2: 52-bit forms for the 4KB and 16KB granules).
    pub ds: bool,
    /// PA size TCR_EL1.IPS selects (32, 36, 40, 42, 44, 48 or 52).
    pub pa_bits: u32,
    /// CnP bit in both TTBRs.
    pub cnp: bool,
    /// SCTLR_EL1.M.
    pub mmu_on: bool,
    /// SCTLR_EL1.EE: tables are big-endian (set before writing any descriptor).
    pub big_endian: bool,
    /// Bits ORed into every table descriptor `map` creates (TABLE_ATTRS, ...).
    pub table_bits: u64,
    /// What `map` made, in order.
    pub mapped: Vec<Mapped>,
    pool_next: u64,
    pool_end: u64,
}

impl Arm64Guest {
    /// A guest whose TTBR0 half uses `low` (granule, VA bits) and TTBR1 half `high`, with
    /// RAM `ranges` and tables allocated from `pool` (inside RAM). DS is turned on when a
    /// 4KB/16KB half has 52 VA bits; `pa_bits` is the IPS size.
    pub fn new(
        low: (Granule, u32),
        high: (Granule, u32),
        ranges: &[(u64, u64)],
        pool: (u64, u64),
        pa_bits: u32,
    ) -> Result<Arm64Guest, String> {
        let ds = [low, high]
            .iter()
            .any(|&(g, va)| va == 52 && g != Granule::K64);
        for (g, va) in [low, high] {
            if !(25..=48).contains(&va) && va != 52 {
                return Err(format!("{va}-bit VA is not supported"));
            }
            if va == 52 && g != Granule::K64 && pa_bits != 52 {
                return Err(format!("{g:?} with 52-bit VA needs DS and a 52-bit PA"));
            }
        }
        if ![32, 36, 40, 42, 44, 48, 52].contains(&pa_bits) {
            return Err(format!("{pa_bits}-bit PA is not an IPS size"));
        }
        let mut ranges = ranges.to_vec();
        ranges.sort_unstable();
        let half = |(granule, va_bits): (Granule, u32), asid| Half {
            granule,
            va_bits,
            root: 0,
            asid,
            walk_disabled: false,
            tbi: false,
        };
        let mut g = Arm64Guest {
            ranges,
            pages: BTreeMap::new(),
            halves: [half(low, 0x1234), half(high, 0xBEEF)],
            ds,
            pa_bits,
            cnp: true,
            mmu_on: true,
            big_endian: false,
            table_bits: 0,
            mapped: Vec::new(),
            pool_next: pool.0,
            pool_end: pool.1,
        };
        // Linux sets TBI0 (user pointers may carry tags).
        g.halves[0].tbi = true;
        for h in 0..2 {
            g.halves[h].root = g.alloc_root(h);
        }
        Ok(g)
    }

    /// Both halves with `granule` and `va_bits`: 128 MiB of RAM at 0 with a 4 MiB hole at
    /// 4 MiB, tables from a 32 MiB pool at 16 MiB. A 52-bit VA with 4KB/16KB gets DS and
    /// a 52-bit PA; otherwise the PA is 48 bits.
    pub fn simple(granule: Granule, va_bits: u32) -> Arm64Guest {
        let pa = if va_bits == 52 && granule != Granule::K64 {
            52
        } else {
            48
        };
        Arm64Guest::new(
            (granule, va_bits),
            (granule, va_bits),
            &[(0, 0x40_0000), (0x80_0000, 0x800_0000)],
            (0x100_0000, 0x300_0000),
            pa,
        )
        .expect("simple arm64 guest")
    }

    /// Whether a half's descriptors use the FEAT_LPA2 format (DS = 1 and not 64KB).
    fn lpa2(&self, half: usize) -> bool {
        self.ds && self.halves[half].granule != Granule::K64
    }

    /// Whether a half's 64KB descriptors carry OA[51:48] in bits 15:12 (FEAT_LPA).
    fn lpa64(&self, half: usize) -> bool {
        self.pa_bits == 52 && self.halves[half].granule == Granule::K64
    }

    /// The effective PA size of a half (IPS 52 with 4KB/16KB and DS = 0 acts as 48).
    pub fn effective_pa_bits(&self, half: usize) -> u32 {
        if self.pa_bits == 52 && !self.lpa2(half) && !self.lpa64(half) {
            48
        } else {
            self.pa_bits
        }
    }

    /// The levels of `half`, start level first.
    pub fn levels(&self, half: usize) -> Vec<Level> {
        let h = &self.halves[half];
        let g = h.granule;
        let mut out = Vec::new();
        // Level 3 indexes the bits just above the page offset; each level up adds a
        // stride, until the VA size is covered.
        let mut level = 3;
        let mut shift = g.shift();
        loop {
            let bits = g.stride().min(h.va_bits - shift);
            out.push(Level { level, shift, bits });
            if shift + bits >= h.va_bits {
                break;
            }
            shift += g.stride();
            level -= 1;
        }
        out.reverse();
        out
    }

    /// The architectural level a walk of `half` starts at.
    pub fn start_level(&self, half: usize) -> i32 {
        self.levels(half)[0].level
    }

    /// Levels where `half` may hold a block descriptor.
    pub fn block_levels(&self, half: usize) -> Vec<i32> {
        let mut v = match self.halves[half].granule {
            Granule::K4 => vec![1, 2],
            Granule::K16 => vec![2],
            Granule::K64 => vec![2],
        };
        if self.lpa2(half) {
            v.insert(0, v[0] - 1);
        }
        if self.lpa64(half) {
            v.insert(0, 1);
        }
        let start = self.start_level(half);
        v.retain(|&l| l >= start);
        v
    }

    /// Leaf sizes `half` can map: (level, bytes), the level-3 page last.
    pub fn leaf_sizes(&self, half: usize) -> Vec<(i32, u64)> {
        let levels = self.levels(half);
        let mut v: Vec<(i32, u64)> = self
            .block_levels(half)
            .into_iter()
            .filter_map(|l| levels.iter().find(|x| x.level == l))
            .map(|x| (x.level, 1u64 << x.shift))
            .collect();
        v.push((3, self.halves[half].granule.bytes()));
        v
    }

    fn level_info(&self, half: usize, level: i32) -> Result<Level, String> {
        self.levels(half)
            .into_iter()
            .find(|l| l.level == level)
            .ok_or_else(|| format!("half {half} has no level {level}"))
    }

    /// A fresh zeroed table of `granule` from the pool, granule-aligned.
    pub fn alloc_table(&mut self, granule: Granule) -> u64 {
        let size = granule.bytes();
        let p = self.pool_next.div_ceil(size) * size;
        assert!(
            p + size <= self.pool_end,
            "synthetic arm64 guest: table pool exhausted"
        );
        self.pool_next = p + size;
        for page in (p..p + size).step_by(0x1000) {
            self.pages
                .insert(page, vec![0u8; 0x1000].into_boxed_slice());
        }
        p
    }

    /// A new, empty start-level table for `half` (for another process); `switch_root`
    /// makes `map` build under it. A start table smaller than the granule is put at an
    /// offset inside its page (aligned to its size, at least 64 bytes), so the TTBR's
    /// low BADDR bits matter.
    pub fn alloc_root(&mut self, half: usize) -> u64 {
        let g = self.halves[half].granule;
        let page = self.alloc_table(g);
        let size = 8u64 << self.levels(half)[0].bits;
        if size < g.bytes() {
            page + size.max(64)
        } else {
            page
        }
    }

    pub fn switch_root(&mut self, half: usize, root: u64) {
        self.halves[half].root = root;
    }

    /// Table bytes allocated so far (4 KiB pages).
    pub fn pages_written(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Index of `virt` in the table at `level` of `half`.
    pub fn index(&self, half: usize, virt: u64, level: i32) -> Result<u64, String> {
        let l = self.level_info(half, level)?;
        Ok((virt >> l.shift) & ((1u64 << l.bits) - 1))
    }

    /// Raw descriptor `index` of the table at `table`.
    pub fn entry(&self, table: u64, index: u64) -> u64 {
        let addr = table + index * 8;
        let page = addr & !0xFFF;
        let off = (addr - page) as usize;
        self.pages.get(&page).map_or(0, |p| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&p[off..off + 8]);
            if self.big_endian {
                u64::from_be_bytes(v)
            } else {
                u64::from_le_bytes(v)
            }
        })
    }

    /// Write raw descriptor `index` of the table at `table` (the page is created zeroed
    /// if new; it need not be RAM or come from the pool).
    pub fn set_entry(&mut self, table: u64, index: u64, value: u64) {
        let addr = table + index * 8;
        let page = addr & !0xFFF;
        let off = (addr - page) as usize;
        let p = self
            .pages
            .entry(page)
            .or_insert_with(|| vec![0u8; 0x1000].into_boxed_slice());
        let bytes = if self.big_endian {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        p[off..off + 8].copy_from_slice(&bytes);
    }

    /// The address field of a descriptor of `half` for output address `addr`
    /// (granule-aligned at least).
    pub fn encode_address(&self, half: usize, addr: u64) -> u64 {
        let g = self.halves[half].granule.shift();
        let low = |hi: u32| addr & (u64::MAX >> (63 - hi)) & !((1u64 << g) - 1);
        if self.lpa2(half) {
            // OA[49:g] in place, OA[51:50] in bits 9:8.
            low(49) | (((addr >> 50) & 0b11) << 8)
        } else if self.lpa64(half) {
            // OA[47:16] in place, OA[51:48] in bits 15:12.
            low(47) | (((addr >> 48) & 0xF) << 12)
        } else {
            low(47)
        }
    }

    /// The address a descriptor of `half` holds (the inverse of `encode_address`).
    pub fn decode_address(&self, half: usize, desc: u64) -> u64 {
        let g = self.halves[half].granule.shift();
        if self.lpa2(half) {
            (desc & (u64::MAX >> 14) & !((1u64 << g) - 1)) | (((desc >> 8) & 0b11) << 50)
        } else if self.lpa64(half) {
            (desc & 0xFFFF_FFFF_0000) | (((desc >> 12) & 0xF) << 48)
        } else {
            desc & 0xFFFF_FFFF_FFFF & !((1u64 << g) - 1)
        }
    }

    /// A table descriptor of `half` pointing at `table`.
    pub fn table_desc(&self, half: usize, table: u64) -> u64 {
        self.encode_address(half, table) | TABLE_OR_PAGE | VALID | self.table_bits
    }

    /// A leaf descriptor of `half` at `level` for `phys` with `attrs` (VALID, the page
    /// bit at level 3, and AF are added here).
    pub fn leaf_desc(&self, half: usize, level: i32, phys: u64, attrs: u64) -> u64 {
        let t = if level == 3 { TABLE_OR_PAGE } else { 0 };
        self.encode_address(half, phys) | attrs | AF | t | VALID
    }

    /// The table at `level` on the path of `virt` in `half`, creating missing tables.
    /// Errors if a block is in the way.
    pub fn table_of(&mut self, half: usize, virt: u64, level: i32) -> Result<u64, String> {
        let levels = self.levels(half);
        let mut table = self.halves[half].root;
        for l in levels.iter().take_while(|l| l.level < level) {
            let idx = (virt >> l.shift) & ((1u64 << l.bits) - 1);
            let e = self.entry(table, idx);
            if e & VALID == 0 {
                let t = self.alloc_table(self.halves[half].granule);
                let d = self.table_desc(half, t);
                self.set_entry(table, idx, d);
                table = t;
            } else if e & TABLE_OR_PAGE == 0 {
                return Err(format!("{virt:#x}: a block is mapped at level {}", l.level));
            } else {
                table = self.decode_address(half, e);
            }
        }
        if !levels.iter().any(|l| l.level == level) {
            return Err(format!("half {half} has no level {level}"));
        }
        Ok(table)
    }

    /// The canonical VA of `offset` in `half` (the high half sets every bit above the
    /// VA size).
    pub fn va(&self, half: usize, offset: u64) -> u64 {
        let va_bits = self.halves[half].va_bits;
        let low = offset & ((1u64 << va_bits) - 1);
        if half == 1 {
            low | !((1u64 << va_bits) - 1)
        } else {
            low
        }
    }

    /// Map `virt` in `half` to `phys` with one leaf of `len` bytes (a page or a block at
    /// a level that allows it). `attrs` is ORed into the descriptor (VALID, AF and the
    /// page bit are added; pass ATTR_NORMAL, UXN, PXN, NG, CONT, SW_BITS...).
    pub fn map(
        &mut self,
        half: usize,
        virt: u64,
        phys: u64,
        len: u64,
        attrs: u64,
    ) -> Result<(), String> {
        let level = self.put_leaf(half, virt, phys, len, attrs | VALID)?;
        self.mapped.push(Mapped {
            half,
            virt: self.va(half, virt),
            phys,
            len,
            level,
        });
        Ok(())
    }

    /// Write a leaf with VALID clear but an address and attributes: a walker must
    /// ignore it.
    pub fn map_invalid(
        &mut self,
        half: usize,
        virt: u64,
        phys: u64,
        len: u64,
        attrs: u64,
    ) -> Result<(), String> {
        let level = self.put_leaf(half, virt, phys, len, attrs)?;
        let table = self.table_of(half, virt, level)?;
        let idx = self.index(half, virt, level)?;
        let e = self.entry(table, idx);
        self.set_entry(table, idx, e & !VALID);
        Ok(())
    }

    fn put_leaf(
        &mut self,
        half: usize,
        virt: u64,
        phys: u64,
        len: u64,
        attrs: u64,
    ) -> Result<i32, String> {
        let level = self
            .leaf_sizes(half)
            .into_iter()
            .find(|&(_, b)| b == len)
            .map(|(l, _)| l)
            .ok_or_else(|| format!("half {half} cannot map a {len:#x}-byte leaf"))?;
        if !virt.is_multiple_of(len) || !phys.is_multiple_of(len) {
            return Err(format!("{virt:#x} -> {phys:#x} is not {len:#x}-aligned"));
        }
        if phys >> self.effective_pa_bits(half) != 0 {
            return Err(format!("{phys:#x} is beyond the PA size"));
        }
        if self.lpa2(half) && attrs & SH_INNER != 0 {
            return Err("with DS = 1, bits 9:8 are address bits".to_string());
        }
        let table = self.table_of(half, virt, level)?;
        let idx = self.index(half, virt, level)?;
        if self.entry(table, idx) & VALID != 0 {
            return Err(format!("{virt:#x} is already mapped"));
        }
        let d = self.leaf_desc(half, level, phys, attrs);
        self.set_entry(table, idx, d);
        Ok(level)
    }

    // --- Broken tables -----------------------------------------------------------

    /// Make the descriptor for `virt` at `level` of `half` point (as a table) at the
    /// table `up` levels above it on the same path (0 = itself): a loop.
    pub fn make_loop(&mut self, half: usize, virt: u64, level: i32, up: i32) -> Result<(), String> {
        let table = self.table_of(half, virt, level)?;
        let target = self.table_of(half, virt, level - up)?;
        let idx = self.index(half, virt, level)?;
        // A start table inside its page is reached at the page start (a table
        // descriptor's address is granule-aligned).
        let d = self.table_desc(half, target);
        self.set_entry(table, idx, d);
        Ok(())
    }

    /// Point the descriptor for `virt` at `level` of `half` at a table at `addr`
    /// (typically outside RAM, or in a hole).
    pub fn table_at(
        &mut self,
        half: usize,
        virt: u64,
        level: i32,
        addr: u64,
    ) -> Result<(), String> {
        let table = self.table_of(half, virt, level)?;
        let idx = self.index(half, virt, level)?;
        let d = self.table_desc(half, addr);
        self.set_entry(table, idx, d);
        Ok(())
    }

    /// Write a raw descriptor for `virt` at `level` of `half` (garbage: the reserved
    /// 0b01 at level 3, a block at a level without blocks, a descriptor with address
    /// bits above the PA size...).
    pub fn raw_at(&mut self, half: usize, virt: u64, level: i32, desc: u64) -> Result<(), String> {
        let table = self.table_of(half, virt, level)?;
        let idx = self.index(half, virt, level)?;
        self.set_entry(table, idx, desc);
        Ok(())
    }

    // --- The CPU ------------------------------------------------------------------

    /// TCR_EL1.
    pub fn tcr(&self) -> u64 {
        let [h0, h1] = &self.halves;
        let ips: u64 = match self.pa_bits {
            32 => 0b000,
            36 => 0b001,
            40 => 0b010,
            42 => 0b011,
            44 => 0b100,
            48 => 0b101,
            _ => 0b110,
        };
        let mut t = u64::from(64 - h0.va_bits)
            | (h0.granule.tg0() << 14)
            | (u64::from(64 - h1.va_bits) << 16)
            | (h1.granule.tg1() << 30)
            | (ips << 32)
            | TCR_CACHE_BITS
            | TCR_A1
            | TCR_AS
            | TCR_HA
            | TCR_HD;
        if h0.walk_disabled {
            t |= TCR_EPD0;
        }
        if h1.walk_disabled {
            t |= TCR_EPD1;
        }
        if h0.tbi {
            t |= TCR_TBI0;
        }
        if h1.tbi {
            t |= TCR_TBI1;
        }
        if self.ds {
            t |= TCR_DS;
        }
        t
    }

    /// TTBRn_EL1: ASID in 63:48, BADDR (with BADDR[51:48] in bits 5:2 when the PA is
    /// 52 bits), CnP.
    pub fn ttbr(&self, half: usize) -> u64 {
        let h = &self.halves[half];
        let mut v = (u64::from(h.asid) << 48) | (h.root & 0xFFFF_FFFF_FFFF);
        if self.effective_pa_bits(half) == 52 {
            v |= ((h.root >> 48) & 0xF) << 2;
        }
        if self.cnp {
            v |= 1;
        }
        v
    }

    /// SCTLR_EL1.
    pub fn sctlr(&self) -> u64 {
        let ee = if self.big_endian { SCTLR_EE } else { 0 };
        if self.mmu_on {
            SCTLR_MMU_ON | ee
        } else {
            (SCTLR_MMU_ON & !1) | ee
        }
    }

    /// The system registers by the names the CPU state uses.
    pub fn regs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("ttbr0_el1", self.ttbr(0)),
            ("ttbr1_el1", self.ttbr(1)),
            ("tcr_el1", self.tcr()),
            ("sctlr_el1", self.sctlr()),
        ]
    }

    /// A CPU state (arch aarch64) holding [`Arm64Guest::regs`].
    pub fn cpu(&self, index: u32) -> CpuState {
        let mut c = CpuState::new(index, Some(Arch::AARCH64));
        for (name, v) in self.regs() {
            c.set_reg(name, v);
        }
        c
    }

    /// The reference translator's view of the CPU.
    pub fn ref_cpu(&self) -> RefArm64Cpu {
        RefArm64Cpu {
            ttbr0_el1: self.ttbr(0),
            ttbr1_el1: self.ttbr(1),
            tcr_el1: self.tcr(),
            sctlr_el1: self.sctlr(),
        }
    }

    /// The reference translator's view of RAM.
    pub fn ref_ram(&self) -> RefRam<'_> {
        RefRam {
            ranges: &self.ranges,
            pages: &self.pages,
        }
    }

    /// The guest as a `SegmentMemory`: written pages (in RAM) go to an anonymous temp
    /// file, the rest of RAM is zero segments.
    pub fn memory(&self) -> SegmentMemory {
        crate::sparse::segment_memory("synthetic-arm64-guest", &self.ranges, &self.pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference_arm64::translate;

    #[test]
    fn geometry_per_granule_and_va_size() {
        let start = |g, va| Arm64Guest::simple(g, va).start_level(0);
        assert_eq!(start(Granule::K4, 39), 1);
        assert_eq!(start(Granule::K4, 42), 0);
        assert_eq!(start(Granule::K4, 48), 0);
        assert_eq!(start(Granule::K4, 52), -1);
        assert_eq!(start(Granule::K16, 39), 1);
        assert_eq!(start(Granule::K16, 47), 1);
        assert_eq!(start(Granule::K16, 48), 0);
        assert_eq!(start(Granule::K16, 52), 0);
        assert_eq!(start(Granule::K64, 39), 2);
        assert_eq!(start(Granule::K64, 42), 2);
        assert_eq!(start(Granule::K64, 48), 1);
        assert_eq!(start(Granule::K64, 52), 1);
        let g = Arm64Guest::simple(Granule::K16, 48);
        assert_eq!(g.levels(0)[0].bits, 1);
        assert_eq!(g.block_levels(0), vec![2]);
        let g = Arm64Guest::simple(Granule::K4, 52);
        assert_eq!(g.block_levels(0), vec![0, 1, 2]);
        assert_eq!(g.levels(0)[0].bits, 4);
    }

    /// Every leaf size of every granule and VA size, in both halves, agrees with the
    /// reference translator at a few offsets.
    #[test]
    fn maps_agree_with_reference() {
        for g in Granule::ALL {
            for &va in g.va_sizes() {
                let mut guest = Arm64Guest::simple(g, va);
                for half in 0..2 {
                    let sizes = guest.leaf_sizes(half);
                    for (i, &(_, len)) in sizes.iter().enumerate() {
                        // Blocks bigger than RAM map a RAM-sized window's worth only
                        // where their start is RAM; put every leaf at phys 0.
                        let virt = (i as u64 + 1) * sizes[0].1.max(len);
                        if virt >> va != 0 {
                            continue;
                        }
                        guest
                            .map(half, virt, 0, len, ATTR_NORMAL)
                            .unwrap_or_else(|e| panic!("{g:?}/{va} half {half}: {e}"));
                    }
                }
                assert_eq!(
                    guest.mapped.len(),
                    guest.leaf_sizes(0).len() + guest.leaf_sizes(1).len(),
                    "{g:?}/{va}"
                );
                let cpu = guest.ref_cpu();
                for m in &guest.mapped {
                    for off in [0, 0x123, m.len / 2, m.len - 8] {
                        let want = (m.phys + off < 0x40_0000).then_some(m.phys + off);
                        let want = want.or(((0x80_0000..0x800_0000).contains(&(m.phys + off)))
                            .then_some(m.phys + off));
                        assert_eq!(
                            translate(&guest.ref_ram(), &cpu, m.virt + off),
                            want,
                            "{g:?}/{va} {m:x?} +{off:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn high_pa_encodings() {
        // 64KB with a 52-bit PA: tables and pages above 2^48.
        let hi = 0xA_0000_0000_0000u64;
        let mut g = Arm64Guest::new(
            (Granule::K64, 48),
            (Granule::K64, 52),
            &[(0, 0x100_0000), (hi, hi + 0x400_0000)],
            (hi, hi + 0x400_0000),
            52,
        )
        .expect("guest");
        assert_eq!(g.block_levels(1), vec![1, 2]);
        g.map(1, 0x1_0000, hi + 0x300_0000, 0x1_0000, 0)
            .expect("map");
        g.map(0, 1 << 42, 0, 1 << 42, 0).expect("4TB block");
        let cpu = g.ref_cpu();
        let va = g.va(1, 0x1_0000) + 0x42;
        assert_eq!(translate(&g.ref_ram(), &cpu, va), Some(hi + 0x300_0042));
        assert_eq!(
            translate(&g.ref_ram(), &cpu, (1 << 42) + 0x1234),
            Some(0x1234)
        );
        // 4KB with DS.
        let mut g = Arm64Guest::new(
            (Granule::K4, 52),
            (Granule::K16, 52),
            &[(0, 0x100_0000), (hi, hi + 0x400_0000)],
            (hi, hi + 0x400_0000),
            52,
        )
        .expect("guest");
        assert!(g.ds);
        g.map(0, 0x000F_0000_0000_0000, hi + 0x200_0000, 0x20_0000, 0)
            .expect("map");
        g.map(1, 0x4000, hi + 0x8000, 0x4000, 0).expect("map");
        let cpu = g.ref_cpu();
        assert_eq!(
            translate(&g.ref_ram(), &cpu, 0x000F_0000_0001_2345),
            Some(hi + 0x201_2345)
        );
        assert_eq!(
            translate(&g.ref_ram(), &cpu, g.va(1, 0x4000) | 0x10),
            Some(hi + 0x8010)
        );
    }

    #[test]
    fn memory_covers_ram_exactly() {
        use dumpconv_core::PhysicalMemory;
        let mut g = Arm64Guest::simple(Granule::K64, 42);
        g.map(0, 0x10_0000, 0x90_0000, 0x1_0000, 0).expect("map");
        let mem = g.memory();
        let total: u64 = mem.ranges().iter().map(|r| r.end - r.start).sum();
        assert_eq!(total, 0x40_0000 + 0x780_0000);
    }
}
