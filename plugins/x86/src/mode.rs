//! The four x86 paging modes described as data (docs/formats.md#x86-modes), so that one
//! walk engine serves every mode. The walk engine in `engine.rs` knows nothing
//! mode-specific beyond what is written here: index bits per level, entry size, where a
//! large page may end the walk, and how the root is found in CR3.

use dumpconv_core::PagingMode;

/// Whether the PS bit (bit 7) of an entry at a level ends the walk with a large page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Large {
    /// PS is not a page-size bit here: PML5E and PML4E (reserved; QEMU and we ignore it
    /// and follow the pointer), PAE PDPTE. The entry always points at a table.
    Never,
    /// PS = 1 maps a page of `1 << shift` bytes at entry bits (M-1):shift (PAE PDE 2 MiB,
    /// IA-32e PDPTE 1 GiB and PDE 2 MiB). Bit 12 (PAT) is below `shift` and so dropped.
    Always,
    /// 32-bit PDE: PS = 1 maps 4 MiB only when CR4.PSE = 1. Address bits 31:22 come from
    /// PDE bits 31:22 and bits 39:32 from PDE bits 20:13 (PSE-36).
    Pse36,
}

/// One level of the table tree, top first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Level {
    /// Name of the table read at this level ("PML4", "PD", ...), for `translate`.
    pub name: &'static str,
    /// Number of virtual-address bits that index this table.
    pub bits: u32,
    /// Lowest virtual-address bit of the index; one entry covers `1 << shift` bytes.
    pub shift: u32,
    pub large: Large,
}

/// Everything the engine needs to know about one mode.
#[derive(Debug)]
pub(crate) struct ModeDesc {
    pub mode: PagingMode,
    /// 4 (32-bit paging) or 8 bytes.
    pub entry_bytes: usize,
    pub levels: &'static [Level],
    /// Bits of CR3 that hold the root table's address (before MAXPHYADDR).
    pub root_mask: u64,
    /// Bytes of the root table: a page, except the 32-byte PAE PDPT.
    pub root_bytes: usize,
    /// Entry bits that can hold an address (before MAXPHYADDR): 31:12 for 4-byte
    /// entries, 51:12 for 8-byte ones. NX (63), protection keys (62:59) and the
    /// software-available bits (58:52) are outside it.
    pub addr_mask: u64,
    /// IA-32e: virtual addresses are canonical, sign-extended from bit `va_bits - 1`.
    /// Legacy modes: plain 32-bit addresses.
    pub va_bits: u32,
    pub sign_extend: bool,
}

/// Address bits 51:12 of an 8-byte entry (`PG_ADDRESS_MASK` in QEMU).
pub(crate) const ADDR_51_12: u64 = 0x000F_FFFF_FFFF_F000;
/// Present bit.
pub(crate) const P: u64 = 1;
/// Page-size bit.
pub(crate) const PS: u64 = 1 << 7;

const fn lvl(name: &'static str, bits: u32, shift: u32, large: Large) -> Level {
    Level {
        name,
        bits,
        shift,
        large,
    }
}

/// 32-bit paging: [10, 10, 12].
pub(crate) static BITS32: ModeDesc = ModeDesc {
    mode: PagingMode::Bits32,
    entry_bytes: 4,
    levels: &[
        lvl("PD", 10, 22, Large::Pse36),
        lvl("PT", 10, 12, Large::Never),
    ],
    root_mask: 0xFFFF_F000,
    root_bytes: 4096,
    addr_mask: 0xFFFF_F000,
    va_bits: 32,
    sign_extend: false,
};

/// PAE paging: [2, 9, 9, 12]; the root is four PDPTEs at CR3 bits 31:5.
pub(crate) static PAE: ModeDesc = ModeDesc {
    mode: PagingMode::Pae,
    entry_bytes: 8,
    levels: &[
        lvl("PDPT", 2, 30, Large::Never),
        lvl("PD", 9, 21, Large::Always),
        lvl("PT", 9, 12, Large::Never),
    ],
    root_mask: 0xFFFF_FFE0,
    root_bytes: 32,
    addr_mask: ADDR_51_12,
    va_bits: 32,
    sign_extend: false,
};

/// IA-32e 4-level paging: [9, 9, 9, 9, 12].
pub(crate) static LEVEL4: ModeDesc = ModeDesc {
    mode: PagingMode::Level4,
    entry_bytes: 8,
    levels: &[
        lvl("PML4", 9, 39, Large::Never),
        lvl("PDPT", 9, 30, Large::Always),
        lvl("PD", 9, 21, Large::Always),
        lvl("PT", 9, 12, Large::Never),
    ],
    // CR3 bits 11:0 are PCID or PWT/PCD, bit 63 is "no flush", 62:61 are LAM: none is
    // part of the address.
    root_mask: ADDR_51_12,
    root_bytes: 4096,
    addr_mask: ADDR_51_12,
    va_bits: 48,
    sign_extend: true,
};

/// IA-32e 5-level paging (CR4.LA57): [9, 9, 9, 9, 9, 12].
pub(crate) static LEVEL5: ModeDesc = ModeDesc {
    mode: PagingMode::Level5,
    entry_bytes: 8,
    levels: &[
        lvl("PML5", 9, 48, Large::Never),
        lvl("PML4", 9, 39, Large::Never),
        lvl("PDPT", 9, 30, Large::Always),
        lvl("PD", 9, 21, Large::Always),
        lvl("PT", 9, 12, Large::Never),
    ],
    root_mask: ADDR_51_12,
    root_bytes: 4096,
    addr_mask: ADDR_51_12,
    va_bits: 57,
    sign_extend: true,
};

/// The description of a paging mode; None for `Off`.
pub(crate) fn describe(mode: PagingMode) -> Option<&'static ModeDesc> {
    match mode {
        PagingMode::Off => None,
        PagingMode::Bits32 => Some(&BITS32),
        PagingMode::Pae => Some(&PAE),
        PagingMode::Level4 => Some(&LEVEL4),
        PagingMode::Level5 => Some(&LEVEL5),
    }
}

impl ModeDesc {
    /// The canonical form of a virtual address built from table indices.
    pub fn canonical(&self, raw: u64) -> u64 {
        if self.sign_extend {
            let unused = 64 - self.va_bits;
            (((raw << unused) as i64) >> unused) as u64
        } else {
            raw
        }
    }

    /// Whether `virt` can be translated at all in this mode (canonical, or below 4 GiB
    /// for the 32-bit modes).
    pub fn valid_virt(&self, virt: u64) -> bool {
        if self.sign_extend {
            self.canonical(virt) == virt
        } else {
            virt >> self.va_bits == 0
        }
    }

    /// First virtual address of the upper ("kernel") half: the top bit of the mode's
    /// address width, after sign extension.
    pub fn kernel_start(&self) -> u64 {
        if self.sign_extend {
            1 << 63
        } else {
            1 << (self.va_bits - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_follow_index_bits() {
        for d in [&BITS32, &PAE, &LEVEL4, &LEVEL5] {
            let mut shift = 12;
            for l in d.levels.iter().rev() {
                assert_eq!(l.shift, shift, "{:?} {}", d.mode, l.name);
                shift += l.bits;
            }
            assert_eq!(shift, d.va_bits, "{:?}", d.mode);
            // One table of 2^bits entries fills the table size (the PAE root is 32 bytes).
            let top = d.levels[0];
            assert_eq!((1usize << top.bits) * d.entry_bytes, d.root_bytes);
            for l in &d.levels[1..] {
                assert_eq!((1usize << l.bits) * d.entry_bytes, 4096);
            }
        }
    }

    #[test]
    fn canonical_sign_extends_only_long_modes() {
        assert_eq!(
            LEVEL4.canonical(0x0000_8000_0000_0000),
            0xFFFF_8000_0000_0000
        );
        assert_eq!(
            LEVEL4.canonical(0x0000_7FFF_FFFF_F000),
            0x0000_7FFF_FFFF_F000
        );
        assert_eq!(
            LEVEL5.canonical(0x0100_0000_0000_0000),
            0xFF00_0000_0000_0000
        );
        assert_eq!(
            LEVEL5.canonical(0x0080_0000_0000_0000),
            0x0080_0000_0000_0000
        );
        assert_eq!(BITS32.canonical(0xC000_0000), 0xC000_0000);
        assert!(!LEVEL4.valid_virt(0xFFFF_0000_0000_0000));
        assert!(!PAE.valid_virt(1 << 32));
    }
}
