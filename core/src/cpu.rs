//! CPU state per CPU, as far as the dump recorded it, and the paging mode it implies.
//!
//! Every field is optional: NT_PRSTATUS gives general registers only, QEMU's CPU-state
//! note adds control registers, a raw image has nothing until the user supplies it.
//! The JSON form (serde) prints numbers as hex strings and accepts hex strings or plain
//! numbers, so `dumpconv info --json` output can be edited and fed back with
//! `--cpu-state`.

use serde::{Deserialize, Serialize};

/// The architecture of the dumped machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64 (EM_X86_64).
    X86_64,
    /// 32-bit x86 (EM_386).
    X86,
}

impl Arch {
    /// ELF e_machine value.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::X86 => 3,
        }
    }

    pub fn from_elf_machine(m: u16) -> Option<Arch> {
        match m {
            62 => Some(Arch::X86_64),
            3 => Some(Arch::X86),
            _ => None,
        }
    }

    /// Pointer width in bytes.
    pub fn word_size(self) -> usize {
        match self {
            Arch::X86_64 => 8,
            Arch::X86 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::X86 => "i386",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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

    /// Parse the names `--paging-mode` accepts.
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

/// General-purpose registers, x86-64 names. For 32-bit CPUs the low halves hold the
/// e-registers and r8–r15 stay zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneralRegs {
    #[serde(with = "hex")]
    pub rax: u64,
    #[serde(with = "hex")]
    pub rbx: u64,
    #[serde(with = "hex")]
    pub rcx: u64,
    #[serde(with = "hex")]
    pub rdx: u64,
    #[serde(with = "hex")]
    pub rsi: u64,
    #[serde(with = "hex")]
    pub rdi: u64,
    #[serde(with = "hex")]
    pub rbp: u64,
    #[serde(with = "hex")]
    pub rsp: u64,
    #[serde(with = "hex")]
    pub r8: u64,
    #[serde(with = "hex")]
    pub r9: u64,
    #[serde(with = "hex")]
    pub r10: u64,
    #[serde(with = "hex")]
    pub r11: u64,
    #[serde(with = "hex")]
    pub r12: u64,
    #[serde(with = "hex")]
    pub r13: u64,
    #[serde(with = "hex")]
    pub r14: u64,
    #[serde(with = "hex")]
    pub r15: u64,
    #[serde(with = "hex")]
    pub rip: u64,
    #[serde(with = "hex")]
    pub rflags: u64,
    #[serde(with = "hex")]
    pub orig_rax: u64,
    #[serde(with = "hex")]
    pub fs_base: u64,
    #[serde(with = "hex")]
    pub gs_base: u64,
}

/// A segment register as QEMU's CPU-state note records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentReg {
    #[serde(with = "hex")]
    pub selector: u64,
    #[serde(with = "hex")]
    pub limit: u64,
    #[serde(with = "hex")]
    pub flags: u64,
    #[serde(with = "hex")]
    pub base: u64,
}

/// Segment registers in QEMU's order: cs, ds, es, fs, gs, ss, ldt, tr, then gdt, idt
/// (for gdt/idt only base and limit mean anything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentRegs {
    pub cs: SegmentReg,
    pub ds: SegmentReg,
    pub es: SegmentReg,
    pub fs: SegmentReg,
    pub gs: SegmentReg,
    pub ss: SegmentReg,
    pub ldt: SegmentReg,
    pub tr: SegmentReg,
    pub gdt: SegmentReg,
    pub idt: SegmentReg,
}

/// What a dump knows about one CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuState {
    /// Position of the CPU in the dump (0-based).
    pub index: u32,
    /// pr_pid from NT_PRSTATUS (QEMU: cpu index + 1; the kernel: the running task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regs: Option<GeneralRegs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<SegmentRegs>,
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub cr0: Option<u64>,
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub cr2: Option<u64>,
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub cr3: Option<u64>,
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub cr4: Option<u64>,
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub efer: Option<u64>,
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub kernel_gs_base: Option<u64>,
    /// Mask applied to physical addresses of table entries (A20 gate); None = all ones.
    #[serde(with = "hex_opt", skip_serializing_if = "Option::is_none")]
    pub a20_mask: Option<u64>,
}

impl CpuState {
    /// A CPU state made only of a page-table root and a mode, for inputs that have no
    /// CPU state (`--cr3 ADDR --paging-mode MODE`). Control registers are set so that
    /// [`CpuState::paging_mode`] gives `mode` back; 32-bit paging gets CR4.PSE, as every
    /// Linux and Windows kernel sets it.
    pub fn from_root(index: u32, cr3: u64, mode: PagingMode) -> CpuState {
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
        CpuState {
            index,
            cr0: Some(cr0),
            cr3: Some(cr3),
            cr4: Some(cr4),
            efer: Some(efer),
            ..CpuState::default()
        }
    }

    /// The paging mode the control registers select, or None if they were not recorded.
    pub fn paging_mode(&self) -> Option<PagingMode> {
        let cr0 = self.cr0?;
        if cr0 & CR0_PG == 0 {
            return Some(PagingMode::Off);
        }
        let cr4 = self.cr4?;
        if cr4 & CR4_PAE == 0 {
            return Some(PagingMode::Bits32);
        }
        let efer = self.efer.unwrap_or(0);
        Some(if efer & EFER_LMA == 0 {
            PagingMode::Pae
        } else if cr4 & CR4_LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        })
    }

    /// CR4.PSE (4 MiB pages in 32-bit paging).
    pub fn pse(&self) -> bool {
        self.cr4.is_some_and(|c| c & CR4_PSE != 0)
    }
}

/// Serde helpers: u64 as "0x…" strings; accept strings (hex with 0x, or decimal) and
/// plain JSON numbers.
pub mod hex {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(HexVisitor)
    }

    /// Parse "0x1f", "1f" is not accepted (ambiguous): decimal unless 0x-prefixed.
    pub fn parse(s: &str) -> Option<u64> {
        let t = s.trim().replace('_', "");
        if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u64::from_str_radix(h, 16).ok()
        } else {
            t.parse().ok()
        }
    }

    pub(super) struct HexVisitor;

    impl de::Visitor<'_> for HexVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an unsigned integer or a \"0x…\" hex string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("negative value"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse(v).ok_or_else(|| E::custom(format!("not a number: {v:?}")))
        }
    }
}

/// Like [`hex`], for `Option<u64>` (null or absent = None).
pub mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v:#x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::hex")] u64);
        Option::<W>::deserialize(d).map(|o| o.map(|W(v)| v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_through_from_root() {
        for m in [
            PagingMode::Off,
            PagingMode::Bits32,
            PagingMode::Pae,
            PagingMode::Level4,
            PagingMode::Level5,
        ] {
            assert_eq!(CpuState::from_root(0, 0x1000, m).paging_mode(), Some(m));
            assert_eq!(PagingMode::parse(m.name()), Some(m));
        }
        assert_eq!(CpuState::default().paging_mode(), None);
    }

    #[test]
    fn json_is_hex_and_accepts_numbers() {
        let c = CpuState::from_root(1, 0x1234000, PagingMode::Level4);
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains("\"cr3\":\"0x1234000\""), "{j}");
        let back: CpuState = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
        let n: CpuState = serde_json::from_str(r#"{"cr3": 4096, "cr0": "0x80000001"}"#).unwrap();
        assert_eq!(n.cr3, Some(4096));
        assert_eq!(n.cr0, Some(0x8000_0001));
        assert!(serde_json::from_str::<CpuState>(r#"{"cr3": "zz"}"#).is_err());
    }
}
