//! The x86 paging modes described as data for the engine in `dumpconv_core::paging`
//! (DESIGN.md, "Paging modes as data, one walk engine"), and how the control registers
//! choose one.
//!
//! Entries are interpreted as the CPU would, except that reserved bits are not checked
//! (a real CPU would fault on them): PS in a PML4E or PML5E is ignored and the entry
//! followed as a table pointer, as QEMU does, and bits above MAXPHYADDR are dropped
//! rather than turned into a fault, because a dump tool must not lose a mapping to a
//! feature (PKU, SME) the walk does not model.

use std::borrow::Cow;

use dumpconv_core::paging::{BitTest, HighBits, Level, MmuDesc, VaForm};
use dumpconv_core::CpuState;
use serde::{Deserialize, Serialize};

/// x86 paging modes, from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagingMode {
    /// Paging disabled (CR0.PG = 0): virtual = physical.
    Off,
    /// 32-bit paging, two levels of 1024 4-byte entries (4 MiB pages with CR4.PSE).
    #[serde(rename = "32bit")]
    Bits32,
    /// PAE: 4 PDPTEs, then 512-entry tables of 8-byte entries.
    Pae,
    /// IA-32e 4-level paging.
    #[serde(rename = "4level")]
    Level4,
    /// IA-32e 5-level paging (CR4.LA57).
    #[serde(rename = "5level")]
    Level5,
}

impl PagingMode {
    pub fn name(self) -> &'static str {
        match self {
            PagingMode::Off => "off",
            PagingMode::Bits32 => "32bit",
            PagingMode::Pae => "pae",
            PagingMode::Level4 => "4level",
            PagingMode::Level5 => "5level",
        }
    }

    /// Parse the names `--paging-mode` accepts (aliases included).
    pub fn parse(s: &str) -> Option<PagingMode> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" | "none" => PagingMode::Off,
            "32bit" | "32-bit" | "2level" | "x86" => PagingMode::Bits32,
            "pae" => PagingMode::Pae,
            "4level" | "4-level" | "ia32e" | "x86_64" => PagingMode::Level4,
            "5level" | "5-level" | "la57" => PagingMode::Level5,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PagingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_LA57: u64 = 1 << 12;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// The paging mode `cpu`'s control registers select, or None if CR0 (or, with paging
/// on, CR4) was not recorded. EFER missing counts as 0.
pub fn paging_mode(cpu: &CpuState) -> Option<PagingMode> {
    let cr0 = cpu.reg("cr0")?;
    if cr0 & CR0_PG == 0 {
        return Some(PagingMode::Off);
    }
    let cr4 = cpu.reg("cr4")?;
    if cr4 & CR4_PAE == 0 {
        return Some(PagingMode::Bits32);
    }
    let efer = cpu.reg("efer").unwrap_or(0);
    Some(if efer & EFER_LMA == 0 {
        PagingMode::Pae
    } else if cr4 & CR4_LA57 != 0 {
        PagingMode::Level5
    } else {
        PagingMode::Level4
    })
}

/// CR4.PSE (4 MiB pages in 32-bit paging).
pub fn pse(cpu: &CpuState) -> bool {
    cpu.reg("cr4").is_some_and(|c| c & CR4_PSE != 0)
}

/// A CPU state made only of a page-table root and a mode, for inputs that have no CPU
/// state (`--cr3 ADDR --paging-mode MODE`). Control registers are set so that
/// [`paging_mode`] gives `mode` back; 32-bit paging gets CR4.PSE, as every Linux and
/// Windows kernel sets it.
pub fn cpu_from_root(index: u32, cr3: u64, mode: PagingMode) -> CpuState {
    let (cr0, cr4, efer) = match mode {
        PagingMode::Off => (CR0_PE, 0, 0),
        PagingMode::Bits32 => (CR0_PE | CR0_PG, CR4_PSE, 0),
        PagingMode::Pae => (CR0_PE | CR0_PG, CR4_PSE | CR4_PAE, 0),
        PagingMode::Level4 => (CR0_PE | CR0_PG, CR4_PSE | CR4_PAE, EFER_LME | EFER_LMA),
        PagingMode::Level5 => (
            CR0_PE | CR0_PG,
            CR4_PSE | CR4_PAE | CR4_LA57,
            EFER_LME | EFER_LMA,
        ),
    };
    CpuState::new(index, None)
        .with_reg("cr0", cr0)
        .with_reg("cr3", cr3)
        .with_reg("cr4", cr4)
        .with_reg("efer", efer)
}

/// Address bits 51:12 of an 8-byte entry (`PG_ADDRESS_MASK` in QEMU). NX (63),
/// protection keys (62:59) and the software-available bits (58:52) are outside it.
pub(crate) const ADDR_51_12: u64 = 0x000F_FFFF_FFFF_F000;
/// Address bits 31:12 of a 4-byte entry.
const ADDR_31_12: u64 = 0xFFFF_F000;
/// Present bit.
const P: u64 = 1;
/// Page-size bit: set in a PDPTE or PDE, the entry maps a large page.
const PS: u64 = 1 << 7;

/// A level whose entries always point at tables (PML5E, PML4E: PS is reserved there;
/// QEMU and we ignore it and follow the pointer; PAE PDPTE).
const fn table(name: &'static str, bits: u32, shift: u32) -> Level {
    Level::new(name, bits, shift)
}

/// A level where PS = 1 maps a page of `1 << shift` bytes at entry bits (M-1):shift
/// (PAE PDE 2 MiB, IA-32e PDPTE 1 GiB and PDE 2 MiB; bit 12, PAT, is below `shift`
/// and so dropped), and PS = 0 points at a table.
const fn large(name: &'static str, bits: u32, shift: u32) -> Level {
    Level::new(name, bits, shift).with_leaf(Some(BitTest::set(PS)))
}

/// The last level: every present entry maps a 4 KiB page.
const fn pt(bits: u32) -> Level {
    Level::new("PT", bits, 12)
        .with_table(None)
        .with_leaf(Some(BitTest::ALWAYS))
}

const fn desc(
    name: &'static str,
    entry_bytes: u8,
    levels: &'static [Level],
    root_mask: u64,
    addr_mask: u64,
    va_form: VaForm,
) -> MmuDesc {
    MmuDesc {
        name,
        entry_bytes,
        big_endian: false,
        levels: Cow::Borrowed(levels),
        valid: BitTest::set(P),
        root_mask,
        table_mask: addr_mask,
        leaf_mask: addr_mask,
        va_form,
    }
}

/// 32-bit paging with CR4.PSE: [10, 10, 12]. PS = 1 in a PDE maps 4 MiB: address bits
/// 31:22 from PDE bits 31:22, bits 39:32 from PDE bits 20:13 (PSE-36); MAXPHYADDR then
/// trims to min(M, 40) bits.
pub static BITS32_PSE: MmuDesc = desc(
    "32bit",
    4,
    &[
        large("PD", 10, 22).with_leaf_high(HighBits {
            from: 13,
            width: 8,
            to: 32,
        }),
        pt(10),
    ],
    ADDR_31_12,
    ADDR_31_12,
    VaForm::Zero,
);

/// 32-bit paging without CR4.PSE: PS is ignored, every PDE points at a page table.
pub static BITS32: MmuDesc = desc(
    "32bit",
    4,
    &[table("PD", 10, 22), pt(10)],
    ADDR_31_12,
    ADDR_31_12,
    VaForm::Zero,
);

/// PAE paging: [2, 9, 9, 12]; the root is four PDPTEs at CR3 bits 31:5.
pub static PAE: MmuDesc = desc(
    "pae",
    8,
    &[table("PDPT", 2, 30), large("PD", 9, 21), pt(9)],
    0xFFFF_FFE0,
    ADDR_51_12,
    VaForm::Zero,
);

/// IA-32e 4-level paging: [9, 9, 9, 9, 12]. CR3 bits 11:0 are PCID or PWT/PCD, bit 63
/// is "no flush", 62:61 are LAM: none is part of the address.
pub static LEVEL4: MmuDesc = desc(
    "4level",
    8,
    &[
        table("PML4", 9, 39),
        large("PDPT", 9, 30),
        large("PD", 9, 21),
        pt(9),
    ],
    ADDR_51_12,
    ADDR_51_12,
    VaForm::SignExtend,
);

/// IA-32e 5-level paging (CR4.LA57): [9, 9, 9, 9, 9, 12].
pub static LEVEL5: MmuDesc = desc(
    "5level",
    8,
    &[
        table("PML5", 9, 48),
        table("PML4", 9, 39),
        large("PDPT", 9, 30),
        large("PD", 9, 21),
        pt(9),
    ],
    ADDR_51_12,
    ADDR_51_12,
    VaForm::SignExtend,
);

/// The description of a paging mode (`pse`: CR4.PSE, for 32-bit paging); None for
/// `Off`.
pub fn describe(mode: PagingMode, pse: bool) -> Option<&'static MmuDesc> {
    match mode {
        PagingMode::Off => None,
        PagingMode::Bits32 if pse => Some(&BITS32_PSE),
        PagingMode::Bits32 => Some(&BITS32),
        PagingMode::Pae => Some(&PAE),
        PagingMode::Level4 => Some(&LEVEL4),
        PagingMode::Level5 => Some(&LEVEL5),
    }
}

/// First virtual address of the upper ("kernel") half of a mode: bit 63 after sign
/// extension in IA-32e modes, bit 31 in 32-bit and PAE paging.
pub fn kernel_start(d: &MmuDesc) -> u64 {
    match d.va_form {
        VaForm::SignExtend => 1 << 63,
        _ => 1 << (d.va_bits().clamp(1, 64) - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_sound() {
        for d in [&BITS32_PSE, &BITS32, &PAE, &LEVEL4, &LEVEL5] {
            d.check().unwrap();
        }
        assert_eq!(BITS32.va_bits(), 32);
        assert_eq!(PAE.va_bits(), 32);
        assert_eq!(LEVEL4.va_bits(), 48);
        assert_eq!(LEVEL5.va_bits(), 57);
    }

    #[test]
    fn modes_round_trip_through_cpu_from_root() {
        for m in [
            PagingMode::Off,
            PagingMode::Bits32,
            PagingMode::Pae,
            PagingMode::Level4,
            PagingMode::Level5,
        ] {
            assert_eq!(paging_mode(&cpu_from_root(0, 0x1000, m)), Some(m));
            assert_eq!(PagingMode::parse(m.name()), Some(m));
        }
        assert_eq!(paging_mode(&CpuState::default()), None);
    }

    #[test]
    fn canonical_sign_extends_only_long_modes() {
        assert_eq!(LEVEL4.extend(0x0000_8000_0000_0000), 0xFFFF_8000_0000_0000);
        assert_eq!(LEVEL4.extend(0x0000_7FFF_FFFF_F000), 0x0000_7FFF_FFFF_F000);
        assert_eq!(LEVEL5.extend(0x0100_0000_0000_0000), 0xFF00_0000_0000_0000);
        assert_eq!(LEVEL5.extend(0x0080_0000_0000_0000), 0x0080_0000_0000_0000);
        assert_eq!(BITS32.extend(0xC000_0000), 0xC000_0000);
        assert!(!LEVEL4.valid_virt(0xFFFF_0000_0000_0000));
        assert!(!PAE.valid_virt(1 << 32));
        assert_eq!(kernel_start(&LEVEL4), 1 << 63);
        assert_eq!(kernel_start(&PAE), 1 << 31);
    }
}
