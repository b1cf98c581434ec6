//! AArch64 stage-1 translation (EL1&0 regime) as data: what TCR_EL1 says about each VA
//! range, turned into an [`MmuDesc`] for core's walk engine.
//!
//! Register fields used (Arm ARM, D8 and the TCR_EL1/TTBRn_EL1/SCTLR_EL1 descriptions):
//! T0SZ[5:0], EPD0[7], TG0[15:14], T1SZ[21:16], EPD1[23], TG1[31:30], IPS[34:32],
//! DS[59]; TTBRn: ASID[63:48] (ignored), BADDR[47:1] (bits below the start table's size
//! ignored; BADDR[51:48] in bits[5:2] with a 52-bit PA), CnP[0] (ignored); SCTLR_EL1.M[0]
//! (MMU on) and EE[25] (big-endian table walks).
//!
//! How a fault of the architecture shows up in the description (nothing is emitted for
//! it, as the reference translator in `tests/src/reference_arm64.rs` answers None):
//! - invalid descriptor (bit 0 clear): the engine's validity test;
//! - reserved 0b01 at level 3, or a block where the granule allows none: no bit test of
//!   the level accepts it (counted as an invalid entry);
//! - address-size fault (an output or next-table address with bits at or above the PA
//!   size): those address bits must be zero in the table and leaf tests, so such an
//!   entry is counted as invalid too; a TTBR base above the PA size drops the range.

use std::borrow::Cow;

use dumpconv_core::paging::{BitTest, HighBits, Level, MmuDesc, VaForm, VirtRange};

/// TCR_EL1 fields.
pub const TCR_EPD0: u64 = 1 << 7;
pub const TCR_EPD1: u64 = 1 << 23;
pub const TCR_DS: u64 = 1 << 59;
/// SCTLR_EL1.M: stage-1 translation on.
pub const SCTLR_M: u64 = 1;
/// SCTLR_EL1.EE: big-endian data accesses at EL1, including table walks.
pub const SCTLR_EE: u64 = 1 << 25;

/// A translation granule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granule {
    K4,
    K16,
    K64,
}

impl Granule {
    /// log2 of the granule size.
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

    /// VA bits one table level resolves.
    pub fn stride(self) -> u32 {
        self.shift() - 3
    }

    /// "4k", "16k", "64k".
    pub fn name(self) -> &'static str {
        match self {
            Granule::K4 => "4k",
            Granule::K16 => "16k",
            Granule::K64 => "64k",
        }
    }

    pub fn from_name(s: &str) -> Option<Granule> {
        match s {
            "4k" => Some(Granule::K4),
            "16k" => Some(Granule::K16),
            "64k" => Some(Granule::K64),
            _ => None,
        }
    }

    pub fn from_bytes(b: u64) -> Option<Granule> {
        match b {
            0x1000 => Some(Granule::K4),
            0x4000 => Some(Granule::K16),
            0x1_0000 => Some(Granule::K64),
            _ => None,
        }
    }

    /// TCR_EL1.TG0 (0b00 4KB, 0b01 64KB, 0b10 16KB, 0b11 reserved).
    pub fn from_tg0(tg: u64) -> Option<Granule> {
        match tg {
            0b00 => Some(Granule::K4),
            0b01 => Some(Granule::K64),
            0b10 => Some(Granule::K16),
            _ => None,
        }
    }

    /// TCR_EL1.TG1 (0b01 16KB, 0b10 4KB, 0b11 64KB, 0b00 reserved).
    pub fn from_tg1(tg: u64) -> Option<Granule> {
        match tg {
            0b01 => Some(Granule::K16),
            0b10 => Some(Granule::K4),
            0b11 => Some(Granule::K64),
            _ => None,
        }
    }

    pub fn tg0(self) -> u64 {
        match self {
            Granule::K4 => 0b00,
            Granule::K64 => 0b01,
            Granule::K16 => 0b10,
        }
    }

    pub fn tg1(self) -> u64 {
        match self {
            Granule::K16 => 0b01,
            Granule::K4 => 0b10,
            Granule::K64 => 0b11,
        }
    }
}

/// The mode names listed by `dumpconv plugins` and accepted by `--paging-mode`:
/// `<granule>-<VA bits>`, the granule and VA size of the kernel's (TTBR1) range. These are
/// the layouts Linux builds (4k-39, 4k-48, 4k-52, 16k-36, 16k-47, 16k-48, 16k-52, 64k-42,
/// 64k-48, 64k-52) and the other sizes the tests use; `--paging-mode` accepts any VA size
/// from 25 to 48 bits, or 52 (see [`parse_mode`]).
pub static MODE_NAMES: [&str; 16] = [
    "4k-39", "4k-42", "4k-47", "4k-48", "4k-52", "16k-36", "16k-39", "16k-42", "16k-47", "16k-48",
    "16k-52", "64k-39", "64k-42", "64k-47", "64k-48", "64k-52",
];

/// The mode name of a granule and VA size (static when listed).
pub fn mode_name(g: Granule, va_bits: u32) -> Cow<'static, str> {
    let name = format!("{}-{va_bits}", g.name());
    match MODE_NAMES.iter().find(|m| **m == name) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(name),
    }
}

/// Parse a mode name: `4k-48`, `16K-47bit`, `64k-52-bit`... (granule 4k, 16k or 64k; VA
/// bits 25 to 48, or 52). "off" is paging off.
pub fn parse_mode(s: &str) -> Option<(Granule, u32)> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_prefix("aarch64-").unwrap_or(&s);
    let (g, va) = s.split_once('-')?;
    let va = va
        .strip_suffix("bits")
        .or_else(|| va.strip_suffix("bit"))
        .unwrap_or(va)
        .trim_end_matches('-');
    let g = Granule::from_name(g)?;
    let va: u32 = va.parse().ok()?;
    ((25..=48).contains(&va) || va == 52).then_some((g, va))
}

fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

/// Bits hi..=lo set.
fn mask(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & !((1u64 << lo) - 1)
}

/// Level names, by level number + 1 (level -1 exists with 4KB and 52-bit VAs).
static LEVEL_NAMES: [&str; 5] = ["L-1", "L0", "L1", "L2", "L3"];

/// Why a VA range is not translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HalfState {
    /// TCR_EL1.EPDn = 1: walks disabled.
    Disabled,
    /// Registers that select no valid layout (the reason).
    Invalid(String),
    Enabled(Half),
}

/// One VA range of the EL1&0 regime, decoded from TCR_EL1 (and SCTLR_EL1.EE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Half {
    /// TTBR1 (the high range) or TTBR0.
    pub upper: bool,
    pub granule: Granule,
    /// 64 - TnSZ.
    pub va_bits: u32,
    /// Effective PA size: IPS (0b111 read as 52), and 48 for 4KB/16KB with DS = 0.
    pub pa_bits: u32,
    /// FEAT_LPA2 descriptor format (DS = 1 with 4KB/16KB): OA[51:50] in bits[9:8].
    pub lpa2: bool,
    pub big_endian: bool,
}

impl Half {
    /// Decode the range selected by `upper` from TCR_EL1 (and SCTLR_EL1 for the byte
    /// order).
    pub fn decode(tcr: u64, sctlr: u64, upper: bool) -> HalfState {
        let (tsz, epd, granule) = if upper {
            (
                bits(tcr, 21, 16) as u32,
                tcr & TCR_EPD1 != 0,
                Granule::from_tg1(bits(tcr, 31, 30)),
            )
        } else {
            (
                bits(tcr, 5, 0) as u32,
                tcr & TCR_EPD0 != 0,
                Granule::from_tg0(bits(tcr, 15, 14)),
            )
        };
        let n = if upper { 1 } else { 0 };
        if epd {
            return HalfState::Disabled;
        }
        let Some(granule) = granule else {
            return HalfState::Invalid(format!("TCR_EL1.TG{n} is a reserved encoding"));
        };
        let lpa2 = tcr & TCR_DS != 0 && granule != Granule::K64;
        let min = if granule == Granule::K64 || lpa2 {
            12
        } else {
            16
        };
        if !(min..=39).contains(&tsz) {
            return HalfState::Invalid(format!(
                "TCR_EL1.T{n}SZ = {tsz} is outside {min}..=39 for the {} granule",
                granule.name()
            ));
        }
        let mut pa_bits = match bits(tcr, 34, 32) {
            0b000 => 32,
            0b001 => 36,
            0b010 => 40,
            0b011 => 42,
            0b100 => 44,
            0b101 => 48,
            _ => 52,
        };
        if pa_bits == 52 && granule != Granule::K64 && !lpa2 {
            pa_bits = 48;
        }
        HalfState::Enabled(Half {
            upper,
            granule,
            va_bits: 64 - tsz,
            pa_bits,
            lpa2,
            big_endian: sctlr & SCTLR_EE != 0,
        })
    }

    pub fn mode_name(&self) -> Cow<'static, str> {
        mode_name(self.granule, self.va_bits)
    }

    /// The register this range's root comes from.
    pub fn ttbr_name(&self) -> &'static str {
        if self.upper {
            "TTBR1_EL1"
        } else {
            "TTBR0_EL1"
        }
    }

    /// The architectural level a walk starts at: the one holding VA bit va_bits-1.
    pub fn start_level(&self) -> i32 {
        let (g, s) = (self.granule.shift(), self.granule.stride());
        let mut level = 3;
        while g + (3 - level) as u32 * s + s < self.va_bits {
            level -= 1;
        }
        level
    }

    /// Index bits of the start-level table.
    fn start_bits(&self) -> u32 {
        let (g, s) = (self.granule.shift(), self.granule.stride());
        self.va_bits - (g + (3 - self.start_level()) as u32 * s)
    }

    /// Levels where a block descriptor is allowed: 4KB at 1 and 2 (0 with DS); 16KB at 2
    /// (1 with DS); 64KB at 2 (1 with a 52-bit PA, FEAT_LPA).
    pub fn block_allowed(&self, level: i32) -> bool {
        match self.granule {
            Granule::K4 => level == 1 || level == 2 || (level == 0 && self.lpa2),
            Granule::K16 => level == 2 || (level == 1 && self.lpa2),
            Granule::K64 => level == 2 || (level == 1 && self.pa_bits == 52),
        }
    }

    /// The start-level table's physical address from TTBRn_EL1, None when it is above
    /// the PA size (an address-size fault on every walk).
    pub fn root(&self, ttbr: u64) -> Option<u64> {
        let mut x = 3 + self.start_bits();
        let base = if self.pa_bits == 52 {
            x = x.max(6);
            (ttbr & mask(47, x)) | (bits(ttbr, 5, 2) << 48)
        } else {
            ttbr & mask(47, x)
        };
        (base >> self.pa_bits == 0).then_some(base)
    }

    /// Descriptor bits that hold output-address bits at or above the PA size (they must
    /// be zero, or the walk takes an address-size fault).
    fn oversize_bits(&self) -> u64 {
        let mut m = 0;
        for b in self.pa_bits..52 {
            if self.lpa2 {
                // OA[49:g] in place, OA[51:50] in bits 9:8.
                m |= 1 << if b <= 49 { b } else { b - 42 };
            } else if b < 48 {
                m |= 1 << b;
            }
        }
        m
    }

    /// The virtual range this half translates.
    pub fn range(&self) -> VirtRange {
        if self.upper {
            VirtRange::from(u64::MAX << self.va_bits)
        } else {
            VirtRange::new(0, 1u128 << self.va_bits)
        }
    }

    /// The MMU description of this range for core's engine.
    pub fn desc(&self) -> MmuDesc {
        let g = self.granule.shift();
        let stride = self.granule.stride();
        let bad = self.oversize_bits();
        // Bit 1: table (levels 0-2) or page (level 3); clear for a block.
        let table = BitTest::new(0b10 | bad, 0b10);
        let block = BitTest::new(0b10 | bad, 0);
        let high = if self.lpa2 {
            Some(HighBits {
                from: 8,
                width: 2,
                to: 50,
            })
        } else if self.granule == Granule::K64 && self.pa_bits == 52 {
            Some(HighBits {
                from: 12,
                width: 4,
                to: 48,
            })
        } else {
            None
        };
        let start = self.start_level();
        let levels: Vec<Level> = (start..=3)
            .map(|level| {
                let shift = g + (3 - level) as u32 * stride;
                let bits = if level == start {
                    self.start_bits()
                } else {
                    stride
                };
                let name = LEVEL_NAMES[(level + 1) as usize];
                let mut l = Level::new(name, bits, shift);
                if level == 3 {
                    l = l.with_table(None).with_leaf(Some(table));
                } else {
                    l = l
                        .with_table(Some(table))
                        .with_leaf(self.block_allowed(level).then_some(block));
                }
                if let Some(h) = high {
                    l = l.with_leaf_high(h).with_table_high(h);
                }
                l
            })
            .collect();
        let addr = if self.lpa2 { mask(49, g) } else { mask(47, g) };
        MmuDesc {
            name: match self.mode_name() {
                Cow::Borrowed(n) => n,
                Cow::Owned(_) => self.granule.name(),
            },
            entry_bytes: 8,
            big_endian: self.big_endian,
            levels: Cow::Owned(levels),
            valid: BitTest::set(1),
            // `root` is already the decoded table address.
            root_mask: u64::MAX,
            table_mask: addr,
            leaf_mask: addr,
            va_form: if self.upper {
                VaForm::Ones
            } else {
                VaForm::Zero
            },
        }
    }
}

/// TCR_EL1 for a kernel-only CPU state: TTBR1 with granule `g` and `va_bits`, TTBR0
/// disabled (EPD0) but given the same layout so the register is well formed, IPS 52 bits
/// (read as 48 with 4KB/16KB unless DS), DS for 4KB/16KB with 52-bit VAs.
pub fn kernel_tcr(g: Granule, va_bits: u32) -> u64 {
    let tsz = u64::from(64 - va_bits);
    let mut tcr = tsz | (g.tg0() << 14) | (tsz << 16) | (g.tg1() << 30) | (0b110 << 32) | TCR_EPD0;
    if va_bits == 52 && g != Granule::K64 {
        tcr |= TCR_DS;
    }
    tcr
}

/// TTBRn_EL1 holding table address `root` (BADDR[51:48] in bits 5:2 when it is above
/// 2^48).
pub fn ttbr_for(root: u64) -> u64 {
    (root & mask(47, 1)) | (bits(root, 51, 48) << 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(tcr: u64, upper: bool) -> Half {
        match Half::decode(tcr, SCTLR_M, upper) {
            HalfState::Enabled(h) => h,
            other => panic!("{tcr:#x}: {other:?}"),
        }
    }

    #[test]
    fn linux_tcr_values() {
        // A 4K/48-bit Linux TCR_EL1: T0SZ = T1SZ = 16, TG0 4K, TG1 4K, IPS 48 bits, TBI0,
        // A1, AS, HA, HD, cacheability bits.
        let tcr: u64 = 16
            | (0b01 << 8)
            | (0b01 << 10)
            | (0b11 << 12)
            | (16 << 16)
            | (1 << 22)
            | (0b01 << 24)
            | (0b01 << 26)
            | (0b11 << 28)
            | (0b10 << 30)
            | (0b101 << 32)
            | (1 << 36)
            | (1 << 37)
            | (1 << 39)
            | (1 << 40);
        let h1 = half(tcr, true);
        assert_eq!((h1.granule, h1.va_bits, h1.pa_bits), (Granule::K4, 48, 48));
        assert_eq!(h1.start_level(), 0);
        assert_eq!(h1.mode_name(), "4k-48");
        let h0 = half(tcr, false);
        assert_eq!((h0.granule, h0.va_bits), (Granule::K4, 48));
        // EPD0.
        assert_eq!(
            Half::decode(tcr | TCR_EPD0, SCTLR_M, false),
            HalfState::Disabled
        );
        // 64K/42: T1SZ = 22, TG1 = 0b11: start level 2.
        let tcr = (22 << 16) | (0b11 << 30) | 22 | (0b01 << 14) | (0b101 << 32);
        let h = half(tcr, true);
        assert_eq!(
            (h.granule, h.va_bits, h.start_level()),
            (Granule::K64, 42, 2)
        );
        assert!(!h.block_allowed(1) && h.block_allowed(2));
        // IPS 52 with 4K and no DS acts as 48; with 64K it is 52 and L1 blocks exist.
        let h = half(kernel_tcr(Granule::K4, 48), true);
        assert_eq!((h.pa_bits, h.lpa2), (48, false));
        let h = half(kernel_tcr(Granule::K64, 48), true);
        assert_eq!(h.pa_bits, 52);
        assert!(h.block_allowed(1));
        let h = half(kernel_tcr(Granule::K4, 52), true);
        assert_eq!((h.pa_bits, h.lpa2, h.start_level()), (52, true, -1));
        assert!(h.block_allowed(0));
        // Reserved granule, TnSZ out of range.
        assert!(matches!(
            Half::decode(kernel_tcr(Granule::K4, 48) & !(0b11 << 30), SCTLR_M, true),
            HalfState::Invalid(_)
        ));
        assert!(matches!(
            Half::decode(
                (kernel_tcr(Granule::K4, 48) & !(0x3F << 16)) | (12 << 16),
                SCTLR_M,
                true
            ),
            HalfState::Invalid(_)
        ));
    }

    #[test]
    fn mode_names() {
        assert_eq!(parse_mode("4k-48"), Some((Granule::K4, 48)));
        assert_eq!(parse_mode("16K-47bit"), Some((Granule::K16, 47)));
        assert_eq!(parse_mode("64k-52-bit"), Some((Granule::K64, 52)));
        assert_eq!(parse_mode("aarch64-4k-39"), Some((Granule::K4, 39)));
        assert_eq!(parse_mode("4k-49"), None);
        assert_eq!(parse_mode("4k-24"), None);
        assert_eq!(parse_mode("8k-48"), None);
        assert_eq!(parse_mode("4level"), None);
        for m in MODE_NAMES {
            let (g, va) = parse_mode(m).expect(m);
            assert_eq!(mode_name(g, va), m);
        }
    }

    #[test]
    fn roots_and_oversize_bits() {
        // 16K/48: a 2-entry start table, 16-byte aligned; ASID and CnP dropped.
        let h = half(kernel_tcr(Granule::K16, 48), true);
        assert_eq!(h.root(0xABCD_0000_0004_0011), Some(0x4_0010));
        // 64K with a 52-bit PA: BADDR[51:48] from bits 5:2.
        let h = half(kernel_tcr(Granule::K64, 48), true);
        assert_eq!(
            h.root(ttbr_for(0x3_0000_1234_0000)),
            Some(0x3_0000_1234_0000)
        );
        // IPS 40: bits 47:40 of an address field must be zero; a TTBR above is refused.
        let tcr = (kernel_tcr(Granule::K4, 39) & !(7 << 32)) | (0b010 << 32);
        let h = half(tcr, true);
        assert_eq!(h.oversize_bits(), 0xFF << 40);
        assert_eq!(h.root(1 << 40), None);
        // DS with IPS 48: OA[49:48] in place and OA[51:50] in bits 9:8.
        let tcr = (kernel_tcr(Granule::K4, 52) & !(7 << 32)) | (0b101 << 32);
        assert_eq!(half(tcr, true).oversize_bits(), (0b11 << 48) | (0b11 << 8));
    }
}
