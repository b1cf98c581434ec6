//! An independent reference translator for AArch64 stage-1 translation in the EL1&0
//! regime, written from the Arm Architecture Reference Manual (Armv8-A/Armv9-A), chapter
//! D8 "The AArch64 Virtual Memory System Architecture": the VA ranges of TTBR0_EL1 and
//! TTBR1_EL1, the 4KB/16KB/64KB granules, the start level implied by TnSZ, the VMSAv8-64
//! table/block/page descriptor formats (including the 52-bit forms: FEAT_LPA's 64KB
//! OA[51:48] in bits[15:12], FEAT_LPA2's OA[51:50] in bits[9:8] when TCR_EL1.DS = 1), and
//! the register fields TCR_EL1.{T0SZ,T1SZ,TG0,TG1,EPD0,EPD1,TBI0,TBI1,IPS,DS},
//! TTBRn_EL1.{ASID,BADDR,CnP} and SCTLR_EL1.{M,EE} (EE: table walks are big-endian).
//!
//! It translates one virtual address at a time in one slow, obvious function, and shares
//! no code with any walker: it does not import `dumpconv-core` or an aarch64 plugin. Only
//! the RAM model ([`RefRam`]) is shared with the x86 reference.
//!
//! Choices where the architecture leaves room (documented so a walker can match them):
//! - The answer is None when a descriptor or the final byte is outside RAM (a dump cannot
//!   read it), as in the x86 reference.
//! - Any fault gives None: invalid descriptor (bit 0 clear), the reserved level-3
//!   encoding 0b01, a block descriptor at a level where the granule has no blocks, an
//!   address-size fault (table base, next-level table or output address above the PA size),
//!   a VA outside both ranges, a disabled walk (EPDn = 1), reserved TGn encodings and TnSZ
//!   outside [min, 39] (min = 12 for 64KB or DS = 1, otherwise 16; this models a CPU
//!   with FEAT_LVA/FEAT_LPA2 but without FEAT_TTST).
//! - The PA size is TCR_EL1.IPS (0b111 read as 52 bits) and the CPU is taken to implement
//!   exactly that (so FEAT_LPA is present iff IPS = 0b110: only then do 64KB descriptors
//!   carry OA[51:48] and a 64KB level-1 block exist). As the architecture says, IPS = 52
//!   bits with a 4KB/16KB granule and DS = 0 acts as 48 bits.
//! - TTBRn.BADDR bits below the start table's size (and the CnP bit, and the ASID) are
//!   ignored rather than used (a misaligned base is CONSTRAINED UNPREDICTABLE).
//! - Access flag, permissions, contiguous hint and attribute bits never fault: a dump
//!   reads memory the tables map, whatever the access would be.
//! - SCTLR_EL1.M = 0: the MMU is off and the VA is the PA.

use crate::reference::RefRam;

/// The system registers a stage-1 EL1&0 translation depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefArm64Cpu {
    pub ttbr0_el1: u64,
    pub ttbr1_el1: u64,
    pub tcr_el1: u64,
    pub sctlr_el1: u64,
}

fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 == 1
}

/// Bits hi:lo of `v`, shifted down to bit 0.
fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

/// Bits hi:lo of `v`, in place (others cleared).
fn field(v: u64, hi: u32, lo: u32) -> u64 {
    bits(v, hi, lo) << lo
}

/// The 64-bit descriptor at `addr` (8-byte aligned), little- or big-endian, None unless
/// all of it is RAM. Reads the pages of [`RefRam`] directly.
fn read_descriptor(ram: &RefRam, addr: u64, big_endian: bool) -> Option<u64> {
    if !addr.is_multiple_of(8) || !ram.is_ram(addr) || !ram.is_ram(addr.checked_add(7)?) {
        return None;
    }
    let page = addr & !0xFFF;
    let off = (addr - page) as usize;
    let Some(p) = ram.pages.get(&page) else {
        return Some(0);
    };
    let mut v = 0u64;
    for i in 0..8 {
        v |= u64::from(p.get(off + i).copied().unwrap_or(0)) << (8 * i);
    }
    Some(if big_endian { v.swap_bytes() } else { v })
}

/// The physical address `va` translates to through stage 1 of the EL1&0 regime, or None
/// (a fault of any kind, or a descriptor or the final byte outside RAM).
pub fn translate(ram: &RefRam, cpu: &RefArm64Cpu, va: u64) -> Option<u64> {
    let tcr = cpu.tcr_el1;

    // SCTLR_EL1.M = 0: stage 1 disabled, flat.
    if !bit(cpu.sctlr_el1, 0) {
        return ram.is_ram(va).then_some(va);
    }

    // D8.2 (VA ranges): VA[55] selects the range, TTBR0_EL1 for 0 and TTBR1_EL1 for 1, in
    // both cases whatever the top byte holds.
    let upper = bit(va, 55);
    let (tsz, epd, tbi, ttbr) = if upper {
        (
            bits(tcr, 21, 16) as u32,
            bit(tcr, 23),
            bit(tcr, 38),
            cpu.ttbr1_el1,
        )
    } else {
        (
            bits(tcr, 5, 0) as u32,
            bit(tcr, 7),
            bit(tcr, 37),
            cpu.ttbr0_el1,
        )
    };
    // TG0: 0b00 4KB, 0b01 64KB, 0b10 16KB. TG1: 0b01 16KB, 0b10 4KB, 0b11 64KB. Others
    // reserved. The value is log2 of the granule.
    let granule_shift: u32 = if upper {
        match bits(tcr, 31, 30) {
            0b01 => 14,
            0b10 => 12,
            0b11 => 16,
            _ => return None,
        }
    } else {
        match bits(tcr, 15, 14) {
            0b00 => 12,
            0b01 => 16,
            0b10 => 14,
            _ => return None,
        }
    };
    // TCR_EL1.DS (FEAT_LPA2) changes the 4KB and 16KB descriptor formats only.
    let ds = bit(tcr, 59) && granule_shift != 16;

    // TnSZ: the range is 2^(64-TnSZ) bytes.
    let min_tsz = if granule_shift == 16 || ds { 12 } else { 16 };
    if !(min_tsz..=39).contains(&tsz) {
        return None;
    }
    let va_bits = 64 - tsz;

    // Every VA bit from va_bits up to 63 (55 with top-byte-ignore) must equal VA[55].
    let top = if tbi { 55 } else { 63 };
    let expect = if upper { u64::MAX } else { 0 };
    if bits(va, top, va_bits) != bits(expect, top, va_bits) {
        return None;
    }
    // EPDn = 1: a walk through TTBRn faults.
    if epd {
        return None;
    }

    // Output (physical) address size from TCR_EL1.IPS.
    let mut pa_bits: u32 = match bits(tcr, 34, 32) {
        0b000 => 32,
        0b001 => 36,
        0b010 => 40,
        0b011 => 42,
        0b100 => 44,
        0b101 => 48,
        _ => 52,
    };
    if pa_bits == 52 && granule_shift != 16 && !ds {
        pa_bits = 48;
    }
    let pa_limit = 1u64 << pa_bits;

    // Each level resolves `stride` VA bits; level 3 resolves the bits just above the page
    // offset, so level n's lowest index bit is granule_shift + (3 - n) * stride. The walk
    // starts at the level holding VA bit va_bits-1 (level -1 only for 4KB with 52 bits).
    let stride = granule_shift - 3;
    let shift_of = |level: i32| -> u32 { granule_shift + (3 - level) as u32 * stride };
    let mut start = 3i32;
    while shift_of(start) + stride < va_bits {
        start -= 1;
    }

    // Where a descriptor's address field is (used for table and block/page descriptors):
    // OA[47:granule] in bits[47:granule]; with DS = 1, OA[49:granule] in bits[49:granule]
    // and OA[51:50] in bits[9:8]; with the 64KB granule and a 52-bit PA, OA[51:48] in
    // bits[15:12].
    let address_field = |desc: u64| -> u64 {
        if ds {
            field(desc, 49, granule_shift) | (bits(desc, 9, 8) << 50)
        } else if granule_shift == 16 && pa_bits == 52 {
            field(desc, 47, 16) | (bits(desc, 15, 12) << 48)
        } else {
            field(desc, 47, granule_shift)
        }
    };

    // Block descriptors: 4KB at levels 1 and 2 (and 0 with DS = 1); 16KB at level 2 (and 1
    // with DS = 1); 64KB at level 2 (and 1 with a 52-bit PA, FEAT_LPA).
    let block_allowed = |level: i32| -> bool {
        match granule_shift {
            12 => level == 1 || level == 2 || (level == 0 && ds),
            14 => level == 2 || (level == 1 && ds),
            _ => level == 2 || (level == 1 && pa_bits == 52),
        }
    };

    // TTBRn_EL1: ASID in bits[63:48], BADDR in bits[47:1] of which bits[x-1:1] are below
    // the start table's alignment x = log2(table size), CnP in bit 0. With a 52-bit PA,
    // BADDR[51:48] sits in bits[5:2] and the table is at least 64-byte aligned.
    let start_index_bits = va_bits - shift_of(start);
    let mut x = 3 + start_index_bits;
    let mut table = if pa_bits == 52 {
        x = x.max(6);
        field(ttbr, 47, x) | (bits(ttbr, 5, 2) << 48)
    } else {
        field(ttbr, 47, x)
    };
    if table >= pa_limit {
        return None;
    }

    let mut level = start;
    loop {
        let lo = shift_of(level);
        let hi = (lo + stride).min(va_bits) - 1;
        let desc = read_descriptor(ram, table + bits(va, hi, lo) * 8, bit(cpu.sctlr_el1, 25))?;
        if !bit(desc, 0) {
            return None; // invalid
        }
        let is_table_or_page = bit(desc, 1);
        if level == 3 {
            if !is_table_or_page {
                return None; // 0b01 at level 3 is reserved
            }
            let oa = address_field(desc) | bits(va, granule_shift - 1, 0);
            if oa >= pa_limit {
                return None;
            }
            return ram.is_ram(oa).then_some(oa);
        }
        if is_table_or_page {
            // Table descriptor: the next-level table, granule-aligned.
            let next = address_field(desc);
            if next >= pa_limit {
                return None;
            }
            table = next;
            level += 1;
            continue;
        }
        // Block descriptor.
        if !block_allowed(level) {
            return None;
        }
        let oa = (address_field(desc) & !((1u64 << lo) - 1)) | bits(va, lo - 1, 0);
        if oa >= pa_limit {
            return None;
        }
        return ram.is_ram(oa).then_some(oa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Descriptors written by hand into sparse RAM.
    struct Mem {
        pages: BTreeMap<u64, Box<[u8]>>,
        ranges: Vec<(u64, u64)>,
    }

    impl Mem {
        fn new(ranges: &[(u64, u64)]) -> Mem {
            Mem {
                pages: BTreeMap::new(),
                ranges: ranges.to_vec(),
            }
        }
        fn put(&mut self, addr: u64, v: u64) {
            let page = addr & !0xFFF;
            let p = self
                .pages
                .entry(page)
                .or_insert_with(|| vec![0u8; 4096].into_boxed_slice());
            let off = (addr - page) as usize;
            p[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        fn ram(&self) -> RefRam<'_> {
            RefRam {
                ranges: &self.ranges,
                pages: &self.pages,
            }
        }
    }

    const M: u64 = 1; // SCTLR_EL1.M
    const AF: u64 = 1 << 10;
    const TABLE: u64 = 0b11;
    const PAGE: u64 = 0b11 | AF;
    const BLOCK: u64 = 0b01 | AF;
    const IPS48: u64 = 0b101 << 32;
    const IPS52: u64 = 0b110 << 32;
    const IPS40: u64 = 0b010 << 32;
    const DS: u64 = 1 << 59;

    /// TCR with TTBR0: `tg0` granule bytes, `va0` bits; TTBR1 likewise.
    fn tcr(tg0: u64, va0: u32, tg1: u64, va1: u32) -> u64 {
        let tg0 = match tg0 {
            0x1000 => 0b00,
            0x4000 => 0b10,
            _ => 0b01,
        };
        let tg1 = match tg1 {
            0x1000 => 0b10,
            0x4000 => 0b01,
            _ => 0b11,
        };
        u64::from(64 - va0) | (tg0 << 14) | (u64::from(64 - va1) << 16) | (tg1 << 30)
    }

    #[test]
    fn k4_48_ttbr1_four_levels_and_asid_cnp() {
        // VA 0xffff_8000_1234_5678 (48-bit, upper range). Index bits: L0 47:39 = 0x100,
        // L1 38:30 = 0, L2 29:21 = 0x91, L3 20:12 = 0x145, offset 0x678.
        let va = 0xffff_8000_1234_5678u64;
        let mut m = Mem::new(&[(0, 0x100_0000)]);
        m.put(0x10000 + 0x100 * 8, 0x11000 | TABLE);
        m.put(0x11000, 0x12000 | TABLE);
        m.put(0x12000 + 0x91 * 8, 0x13000 | TABLE);
        m.put(0x13000 + 0x145 * 8, 0x0060_0000_0077_7000 | PAGE); // UXN/PXN set
        let cpu = RefArm64Cpu {
            ttbr0_el1: 0,
            ttbr1_el1: 0xABCD << 48 | 0x10000 | 1, // ASID, CnP
            tcr_el1: tcr(0x1000, 48, 0x1000, 48) | IPS48,
            sctlr_el1: M,
        };
        assert_eq!(translate(&m.ram(), &cpu, va), Some(0x777678));
        // Top byte not all ones: outside both ranges (no TBI).
        assert_eq!(translate(&m.ram(), &cpu, va & !(1 << 60)), None);
        // With TBI1 the top byte is ignored.
        let tbi = RefArm64Cpu {
            tcr_el1: cpu.tcr_el1 | 1 << 38,
            ..cpu
        };
        assert_eq!(translate(&m.ram(), &tbi, va & !(1 << 60)), Some(0x777678));
        // A bit between 55 and 48 differing: never translated.
        assert_eq!(translate(&m.ram(), &tbi, va & !(1 << 50)), None);
        // EPD1 disables the walk.
        let epd = RefArm64Cpu {
            tcr_el1: cpu.tcr_el1 | 1 << 23,
            ..cpu
        };
        assert_eq!(translate(&m.ram(), &epd, va), None);
        // The same VA with bit 55 clear goes through TTBR0 (empty: root 0, entries zero).
        assert_eq!(translate(&m.ram(), &cpu, 0x0000_8000_1234_5678), None);
        // MMU off: flat.
        let off = RefArm64Cpu {
            sctlr_el1: 0,
            ..cpu
        };
        assert_eq!(translate(&m.ram(), &off, 0x5000), Some(0x5000));
        assert_eq!(translate(&m.ram(), &off, va), None);
    }

    #[test]
    fn k4_39_start_level_1_blocks_and_reserved_l3() {
        // 39-bit TTBR0: start at level 1 (VA[38:30]), then level 2 (29:21), level 3
        // (20:12).
        let mut m = Mem::new(&[(0, 0x1_0000_0000)]);
        let cpu = RefArm64Cpu {
            ttbr0_el1: 0x20000,
            ttbr1_el1: 0,
            tcr_el1: tcr(0x1000, 39, 0x1000, 39) | IPS40,
            sctlr_el1: M,
        };
        // L1 entry 0: a 1GB block at 0x4000_0000.
        m.put(0x20000, 0x4000_0000 | BLOCK | (0x1FF << 12)); // RES0 bits ignored
        assert_eq!(
            translate(&m.ram(), &cpu, 0x1234_5678),
            Some(0x4000_0000 + 0x1234_5678)
        );
        // L1 entry 1 → L2 table 0x21000; L2 entry 0: a 2MB block; entry 1 → L3 table.
        m.put(0x20008, 0x21000 | TABLE);
        m.put(0x21000, 0x60_0000 | BLOCK);
        assert_eq!(translate(&m.ram(), &cpu, 0x4001_2345), Some(0x61_2345));
        m.put(0x21008, 0x22000 | TABLE);
        m.put(0x22000 + 0x101 * 8, 0x9000 | PAGE);
        assert_eq!(translate(&m.ram(), &cpu, 0x4030_1abc), Some(0x9abc));
        // 0b01 at level 3 is reserved.
        m.put(0x22000 + 0x101 * 8, 0x9000 | BLOCK);
        assert_eq!(translate(&m.ram(), &cpu, 0x4030_1abc), None);
        // Invalid descriptor.
        m.put(0x22000 + 0x101 * 8, 0x9000 | 0b10);
        assert_eq!(translate(&m.ram(), &cpu, 0x4030_1abc), None);
        // Above 2^39: outside TTBR0's range.
        assert_eq!(translate(&m.ram(), &cpu, 0x80_0000_0000), None);
        // Output address above the 40-bit PA size: address-size fault.
        m.put(0x20000, 0x100_4000_0000 | BLOCK);
        assert_eq!(translate(&m.ram(), &cpu, 0x1234_5678), None);
        // A table outside RAM.
        m.put(0x20008, 0x2_0000_0000 | TABLE);
        assert_eq!(translate(&m.ram(), &cpu, 0x4001_2345), None);
    }

    #[test]
    fn k4_level0_block_only_with_ds() {
        // 48-bit 4KB: a level-0 block descriptor faults (DS = 0).
        let mut m = Mem::new(&[(0, 0x100_0000), (0x80_0000_0000, 0x80_0100_0000)]);
        m.put(0x10000 + 8, 0x80_0000_0000 | BLOCK);
        let cpu = RefArm64Cpu {
            ttbr0_el1: 0x10000,
            ttbr1_el1: 0,
            tcr_el1: tcr(0x1000, 48, 0x1000, 48) | IPS48,
            sctlr_el1: M,
        };
        assert_eq!(translate(&m.ram(), &cpu, 0x80_0000_1000), None);
        // With DS = 1 and 48-bit VA (start level 0), a 512GB block maps.
        let ds = RefArm64Cpu {
            tcr_el1: cpu.tcr_el1 | DS | IPS52,
            ..cpu
        };
        assert_eq!(
            translate(&m.ram(), &ds, 0x80_0000_1000),
            Some(0x80_0000_1000)
        );
    }

    #[test]
    fn k4_52_ds_level_minus_one_and_high_oa() {
        // 52-bit 4KB with DS: level -1 indexes VA[51:48]. VA 0x000a_0080_0000_2345: L-1 =
        // 0xa, L0 = 1 (47:39), L1 = 0, L2 = 0, L3 = 2.
        let hi = 0xC_0000_0000_0000u64; // PA bits 51:50 = 0b11
        let mut m = Mem::new(&[(0, 0x100_0000), (hi, hi + 0x100_0000)]);
        let root = 0x10080; // 16 entries = 128 bytes, aligned to its size
        let ttbr0 = root | ((hi >> 48) << 2) | 0x77 << 48; // BADDR[51:48] in bits 5:2
        let tab = |a: u64| (a & 0x3_FFFF_FFFF_F000) | ((a >> 50) << 8) | TABLE;
        m.put(hi + root + 0xa * 8, tab(hi + 0x20000));
        m.put(hi + 0x20000 + 8, tab(hi + 0x21000));
        m.put(hi + 0x21000, tab(hi + 0x22000));
        m.put(hi + 0x22000, tab(hi + 0x23000));
        let page = 0x1_0000_0000_0000u64 | hi; // OA bit 48 in desc bit 48, 51:50 in 9:8
        m.put(
            hi + 0x23000 + 16,
            (page & 0x3_FFFF_FFFF_F000) | (0b11 << 8) | PAGE,
        );
        let mut cpu = RefArm64Cpu {
            ttbr0_el1: ttbr0,
            ttbr1_el1: 0,
            tcr_el1: tcr(0x1000, 52, 0x1000, 52) | IPS52 | DS,
            sctlr_el1: M,
        };
        let va = 0x000a_0080_0000_2345u64;
        // The page is not RAM (only 16 MiB at `hi` is): None, then with that RAM added.
        assert_eq!(translate(&m.ram(), &cpu, va), None);
        m.ranges.push((page, page + 0x1000));
        assert_eq!(translate(&m.ram(), &cpu, va), Some(page | 0x345));
        // IPS 48 with DS: TTBR0 bits[5:2] are not address bits, so the walk starts at
        // 0x10080, where nothing is mapped.
        cpu.tcr_el1 = (cpu.tcr_el1 & !(7 << 32)) | IPS48;
        assert_eq!(translate(&m.ram(), &cpu, va), None);
        // DS = 0: T0SZ 12 is out of range for 4KB.
        cpu.tcr_el1 = tcr(0x1000, 52, 0x1000, 52) | IPS52;
        assert_eq!(translate(&m.ram(), &cpu, va), None);
    }

    #[test]
    fn k16_47_and_48() {
        // 16KB, 47-bit TTBR1: start level 1 (VA[46:36], 11 bits), L2 25 bits (35:25), L3
        // (24:14). VA = 0xffff_8000_0000_0000 | (3 << 36) | (5 << 25) | (7 << 14) | 0x123.
        let mut m = Mem::new(&[(0, 0x1000_0000)]);
        let cpu = RefArm64Cpu {
            ttbr0_el1: 0,
            ttbr1_el1: 0x40000,
            tcr_el1: tcr(0x4000, 47, 0x4000, 47) | IPS48,
            sctlr_el1: M,
        };
        let va = 0xffff_8000_0000_0000u64 | (3 << 36) | (5 << 25) | (7 << 14) | 0x123;
        m.put(0x40000 + 3 * 8, 0x44000 | TABLE);
        m.put(0x44000 + 5 * 8, 0x48000 | TABLE);
        m.put(0x48000 + 7 * 8, 0x8c000 | PAGE);
        assert_eq!(translate(&m.ram(), &cpu, va), Some(0x8c123));
        // A 32MB block at level 2.
        m.put(0x44000 + 5 * 8, 0x600_0000 | BLOCK);
        assert_eq!(
            translate(&m.ram(), &cpu, va),
            Some(0x600_0000 | (7 << 14) | 0x123)
        );
        // A level-1 block needs DS.
        m.put(0x40000 + 3 * 8, BLOCK);
        assert_eq!(translate(&m.ram(), &cpu, va), None);
        // 48-bit: level 0 has one index bit (47); the 16-byte root is 16-byte aligned.
        let cpu48 = RefArm64Cpu {
            ttbr1_el1: 0x50010 | 0x7 << 48,
            tcr_el1: tcr(0x4000, 48, 0x4000, 48) | IPS48,
            ..cpu
        };
        m.put(0x50010 + 8, 0x54000 | TABLE); // VA bit 47 = 1 → entry 1
        m.put(0x54000 + 2 * 8, 0x58000 | TABLE);
        m.put(0x58000 + 4 * 8, 0x200_0000 | BLOCK);
        let va48 = 0xffff_8000_0000_0000u64 | (2 << 36) | (4 << 25) | 0x12_3456;
        assert_eq!(translate(&m.ram(), &cpu48, va48), Some(0x212_3456));
    }

    #[test]
    fn k64_42_48_and_52_bit_pa() {
        // 64KB, 42-bit TTBR0: start level 2 (VA[41:29], 13 bits), L3 (28:16).
        let mut m = Mem::new(&[(0, 0x4000_0000)]);
        let mut cpu = RefArm64Cpu {
            ttbr0_el1: 0x10000,
            ttbr1_el1: 0,
            tcr_el1: tcr(0x10000, 42, 0x10000, 42) | IPS48,
            sctlr_el1: M,
        };
        m.put(0x10000, 0x2000_0000 | BLOCK); // 512MB block
        assert_eq!(translate(&m.ram(), &cpu, 0x123_4567), Some(0x2123_4567));
        m.put(0x10008, 0x20000 | TABLE);
        m.put(0x20000 + 3 * 8, 0x70000 | PAGE | (0xF << 12)); // bits 15:12 RES0 at 48-bit
        assert_eq!(
            translate(&m.ram(), &cpu, 0x2000_0000 | (3 << 16) | 0xbeef),
            Some(0x7beef)
        );
        // 48-bit: start level 1 (VA[47:42], 6 bits); a level-1 block needs a 52-bit PA.
        cpu.tcr_el1 = tcr(0x10000, 48, 0x10000, 48) | IPS48;
        m.put(0x10000 + 8, BLOCK); // 4TB block at 0 for VA[47:42] = 1
        assert_eq!(translate(&m.ram(), &cpu, 0x400_0000_1234), None);
        cpu.tcr_el1 |= IPS52;
        assert_eq!(translate(&m.ram(), &cpu, 0x400_0000_1234), Some(0x1234));
        // 52-bit PA: OA[51:48] in bits 15:12 of a page descriptor.
        m.put(0x10000 + 16, 0x30000 | TABLE);
        m.put(0x30000, 0x40000 | TABLE);
        m.put(0x40000 + 8, 0x50000 | (0x9 << 12) | PAGE);
        let va = (2 << 42) | (1 << 16) | 0x42;
        assert_eq!(translate(&m.ram(), &cpu, va), None); // 0x9_0000_0005_0042 not RAM
        m.ranges.push((0x9_0000_0005_0000, 0x9_0000_0006_0000));
        assert_eq!(translate(&m.ram(), &cpu, va), Some(0x9_0000_0005_0042));
        // 52-bit VA with 64KB (FEAT_LVA): level 1 indexes VA[51:42], 10 bits; TTBR1.
        let cpu52 = RefArm64Cpu {
            ttbr0_el1: 0,
            ttbr1_el1: 0x60000,
            tcr_el1: tcr(0x10000, 52, 0x10000, 52) | IPS48,
            sctlr_el1: M,
        };
        m.put(0x60000 + 0x3FF * 8, 0x70000 | TABLE);
        m.put(0x70000 + 0x1FFF * 8, 0x2000_0000 | BLOCK);
        assert_eq!(
            translate(&m.ram(), &cpu52, 0xffff_ffff_ffff_fff0),
            Some(0x3fff_fff0)
        );
    }

    #[test]
    fn reserved_granule_and_tsz() {
        let mut m = Mem::new(&[(0, 0x100_0000)]);
        m.put(0x10000, 0x20_0000 | BLOCK);
        let ok = RefArm64Cpu {
            ttbr0_el1: 0x10000,
            ttbr1_el1: 0,
            tcr_el1: tcr(0x1000, 39, 0x1000, 39) | IPS48,
            sctlr_el1: M,
        };
        // A 1GB block at level 1: the descriptor's bits below 30 are not address bits.
        assert_eq!(translate(&m.ram(), &ok, 0x1234), Some(0x1234));
        let tg_reserved = RefArm64Cpu {
            tcr_el1: ok.tcr_el1 | 0b11 << 14,
            ..ok
        };
        assert_eq!(translate(&m.ram(), &tg_reserved, 0x1234), None);
        let tsz_big = RefArm64Cpu {
            tcr_el1: (ok.tcr_el1 & !0x3F) | 40,
            ..ok
        };
        assert_eq!(translate(&m.ram(), &tsz_big, 0x1234), None);
    }
}
