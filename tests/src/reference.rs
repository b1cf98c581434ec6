//! An independent reference translator for x86 paging, straight from the Intel SDM
//! (Vol. 3A §4.1.1 mode selection, §4.3 32-bit paging, §4.4 PAE paging, §4.5 4-level
//! and 5-level paging).
//!
//! It translates one linear address at a time, one function per mode written as the
//! SDM's tables read, and shares no code with `dumpconv-x86` (it does not import it, and
//! uses nothing from `dumpconv-core` either): the walker is checked against it page by
//! page. Slow and obvious on purpose.
//!
//! What it models beyond the SDM, to match the documented dump semantics:
//! - the answer is None when any entry or the final byte is outside the RAM ranges
//!   (a dump cannot read it, and the walker emits only RAM);
//! - reserved bits never fault: PS in a PML4E/PML5E is ignored (the entry is followed),
//!   bits above MAXPHYADDR are dropped, PAE PDPTE bit 63 is not an error;
//! - `clear_mask` (the AMD SME C-bit) is cleared from every address taken from CR3 or
//!   an entry;
//! - `a20_mask` is ANDed into the address of every paging-structure entry, not into the
//!   final physical address (QEMU's rule for its dump walker).

use std::collections::BTreeMap;

/// Guest RAM as the reference sees it: RAM ranges `[start, end)`, and the bytes of the
/// pages that hold anything (keyed by page address). A RAM page with no bytes stored
/// reads as zeros.
#[derive(Debug, Clone, Copy)]
pub struct RefRam<'a> {
    pub ranges: &'a [(u64, u64)],
    pub pages: &'a BTreeMap<u64, Box<[u8]>>,
}

impl RefRam<'_> {
    /// True if byte `addr` is RAM.
    pub fn is_ram(&self, addr: u64) -> bool {
        self.ranges.iter().any(|&(s, e)| s <= addr && addr < e)
    }

    fn byte(&self, addr: u64) -> u8 {
        let page = addr & !0xFFF;
        self.pages
            .get(&page)
            .and_then(|p| p.get((addr - page) as usize).copied())
            .unwrap_or(0)
    }

    /// Little-endian read of `n` bytes; None unless every byte is RAM.
    fn read(&self, addr: u64, n: u32) -> Option<u64> {
        let last = addr.checked_add(u64::from(n) - 1)?;
        if !(self.is_ram(addr) && self.is_ram(last))
            || self.ranges.iter().any(|&(s, _)| addr < s && s <= last)
        {
            return None;
        }
        let page = addr & !0xFFF;
        if last & !0xFFF != page {
            // Straddles a page: byte by byte.
            return Some(
                (0..u64::from(n)).fold(0, |v, i| v | u64::from(self.byte(addr + i)) << (8 * i)),
            );
        }
        let Some(p) = self.pages.get(&page) else {
            return Some(0);
        };
        let off = (addr - page) as usize;
        Some((0..n as usize).fold(0, |v, i| {
            v | u64::from(p.get(off + i).copied().unwrap_or(0)) << (8 * i)
        }))
    }
}

/// The control registers and knobs a translation depends on.
#[derive(Debug, Clone, Copy)]
pub struct RefCpu {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// MAXPHYADDR.
    pub max_phys_bits: u32,
    /// Cleared from every address taken from CR3 or an entry.
    pub clear_mask: u64,
    /// ANDed into entry addresses (all ones = A20 enabled).
    pub a20_mask: u64,
}

impl RefCpu {
    pub fn new(cr0: u64, cr3: u64, cr4: u64, efer: u64) -> Self {
        RefCpu {
            cr0,
            cr3,
            cr4,
            efer,
            max_phys_bits: 52,
            clear_mask: 0,
            a20_mask: u64::MAX,
        }
    }
}

fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 == 1
}

/// Bits hi:lo of `v`, shifted down to bit 0.
fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & ((1u64 << (hi - lo + 1)) - 1)
}

/// Bits hi:lo of `v`, in place (others cleared).
fn field(v: u64, hi: u32, lo: u32) -> u64 {
    bits(v, hi, lo) << lo
}

/// The physical address `la` translates to, or None (not present, not canonical, or a
/// structure or the final byte outside RAM). Paging off: `la` itself.
pub fn translate(ram: &RefRam, cpu: &RefCpu, la: u64) -> Option<u64> {
    // §4.1.1: CR0.PG = 0 → no paging; CR4.PAE = 0 → 32-bit; IA32_EFER.LME (with PG
    // set, i.e. LMA) = 0 → PAE; else 4-level, or 5-level with CR4.LA57.
    let pa = if !bit(cpu.cr0, 31) {
        Some(la)
    } else if !bit(cpu.cr4, 5) {
        paging_32(ram, cpu, la)
    } else if !bit(cpu.efer, 10) {
        paging_pae(ram, cpu, la)
    } else {
        paging_ia32e(ram, cpu, la, bit(cpu.cr4, 12))
    }?;
    ram.is_ram(pa).then_some(pa)
}

/// §4.3, Tables 4-4 to 4-6.
fn paging_32(ram: &RefRam, cpu: &RefCpu, la: u64) -> Option<u64> {
    if la > 0xFFFF_FFFF {
        return None;
    }
    let m = cpu.max_phys_bits.min(40);
    let cl = !cpu.clear_mask;
    // PDE: bits 31:12 from CR3, bits 11:2 are linear-address bits 31:22.
    let pde_addr = ((field(cpu.cr3, 31, 12) & cl) | (bits(la, 31, 22) << 2)) & cpu.a20_mask;
    let pde = ram.read(pde_addr, 4)?;
    if !bit(pde, 0) {
        return None;
    }
    if bit(cpu.cr4, 4) && bit(pde, 7) {
        // Table 4-4: bits (M-1):32 of the address are PDE bits (M-33):13; bits 31:22 are
        // PDE bits 31:22; bits 21:0 come from the linear address.
        let high = if m > 32 {
            bits(pde, m - 33 + 13, 13)
        } else {
            0
        };
        let base = ((high << 32) | field(pde, 31, 22)) & cl;
        return Some(base | bits(la, 21, 0));
    }
    // Table 4-5: a PDE that references a page table; PTE address bits 11:2 are
    // linear-address bits 21:12.
    let pte_addr = ((field(pde, 31, 12) & cl) | (bits(la, 21, 12) << 2)) & cpu.a20_mask;
    let pte = ram.read(pte_addr, 4)?;
    if !bit(pte, 0) {
        return None;
    }
    Some((field(pte, 31, 12) & cl) | bits(la, 11, 0))
}

/// §4.4, Tables 4-8 to 4-11. The PDPTEs are read from memory at CR3 bits 31:5 (a CPU
/// would use the copies it loaded with CR3; a dump has only memory).
fn paging_pae(ram: &RefRam, cpu: &RefCpu, la: u64) -> Option<u64> {
    if la > 0xFFFF_FFFF {
        return None;
    }
    let m = cpu.max_phys_bits;
    let cl = !cpu.clear_mask;
    let pdpte_addr = ((field(cpu.cr3, 31, 5) & cl) | (bits(la, 31, 30) << 3)) & cpu.a20_mask;
    let pdpte = ram.read(pdpte_addr, 8)?;
    if !bit(pdpte, 0) {
        return None;
    }
    let pde_addr = ((field(pdpte, m - 1, 12) & cl) | (bits(la, 29, 21) << 3)) & cpu.a20_mask;
    let pde = ram.read(pde_addr, 8)?;
    if !bit(pde, 0) {
        return None;
    }
    if bit(pde, 7) {
        // Table 4-9: 2-MByte page at PDE bits (M-1):21.
        return Some((field(pde, m - 1, 21) & cl) | bits(la, 20, 0));
    }
    let pte_addr = ((field(pde, m - 1, 12) & cl) | (bits(la, 20, 12) << 3)) & cpu.a20_mask;
    let pte = ram.read(pte_addr, 8)?;
    if !bit(pte, 0) {
        return None;
    }
    Some((field(pte, m - 1, 12) & cl) | bits(la, 11, 0))
}

/// §4.5, Tables 4-14 to 4-20 (4-level), plus Table 4-13 for the PML5E (5-level).
fn paging_ia32e(ram: &RefRam, cpu: &RefCpu, la: u64, la57: bool) -> Option<u64> {
    // Canonical: bits 63:47 (63:56 with LA57) all equal.
    let top = if la57 { 56 } else { 47 };
    let upper = la >> top;
    if upper != 0 && upper != (u64::MAX >> top) {
        return None;
    }
    let m = cpu.max_phys_bits;
    let cl = !cpu.clear_mask;
    let read_entry = |table: u64, index: u64| -> Option<u64> {
        let addr = ((table & cl) | (index << 3)) & cpu.a20_mask;
        let e = ram.read(addr, 8)?;
        bit(e, 0).then_some(e)
    };
    let root = field(cpu.cr3, m - 1, 12);
    let pml4 = if la57 {
        // PML5E: bits 56:48 select it; bits (M-1):12 locate the PML4 table.
        let pml5e = read_entry(root, bits(la, 56, 48))?;
        field(pml5e, m - 1, 12)
    } else {
        root
    };
    // PML4E: bits 47:39. Its PS bit is reserved: ignored here, the entry is followed.
    let pml4e = read_entry(pml4, bits(la, 47, 39))?;
    let pdpte = read_entry(field(pml4e, m - 1, 12), bits(la, 38, 30))?;
    if bit(pdpte, 7) {
        // Table 4-16: 1-GByte page at PDPTE bits (M-1):30.
        return Some((field(pdpte, m - 1, 30) & cl) | bits(la, 29, 0));
    }
    let pde = read_entry(field(pdpte, m - 1, 12), bits(la, 29, 21))?;
    if bit(pde, 7) {
        // Table 4-18: 2-MByte page at PDE bits (M-1):21.
        return Some((field(pde, m - 1, 21) & cl) | bits(la, 20, 0));
    }
    let pte = read_entry(field(pde, m - 1, 12), bits(la, 20, 12))?;
    Some((field(pte, m - 1, 12) & cl) | bits(la, 11, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_4level_entry_chain() {
        // PML4 at 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000 → page 0x7000.
        let mut pages = BTreeMap::new();
        let mut put = |page: u64, idx: usize, v: u64| {
            let p = pages
                .entry(page)
                .or_insert_with(|| vec![0u8; 4096].into_boxed_slice());
            p[idx * 8..idx * 8 + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(0x1000, 0, 0x2003);
        put(0x2000, 0, 0x3003);
        put(0x3000, 0, 0x4003);
        put(0x4000, 1, 0x8000_0000_0000_7003); // NX set
        let ranges = [(0, 0x10000)];
        let ram = RefRam {
            ranges: &ranges,
            pages: &pages,
        };
        let cpu = RefCpu::new(1 << 31, 0x1000, 1 << 5, 1 << 10);
        assert_eq!(translate(&ram, &cpu, 0x1234), Some(0x7234));
        assert_eq!(translate(&ram, &cpu, 0x0234), None);
        assert_eq!(translate(&ram, &cpu, 0xFFFF_0000_0000_1234), None);
    }
}
