//! Architectures as data: an [`Arch`] is an ELF `e_machine` plus a word size, and the
//! [`ArchInfo`] table gives the known ones their names, page size, byte order and the
//! machine string of `uname -m`.
//!
//! Nothing in dumpconv matches on an architecture to decide what to do: readers build an
//! `Arch` from the file's header ([`Arch::from_elf`]), writers take the machine number,
//! word size and machine string from it, and the registry picks a walker by it. An
//! architecture missing from the table still works (it prints as `em<N>/<bits>`); the
//! table only adds names.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The architecture of a dumped machine: ELF `e_machine` and word size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Arch {
    machine: u16,
    word: u8,
}

/// What dumpconv knows about an architecture by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchInfo {
    pub arch: Arch,
    /// Canonical name (`--arch`, JSON).
    pub name: &'static str,
    /// Other names accepted by [`Arch::from_name`].
    pub aliases: &'static [&'static str],
    /// The base page size (the smallest page the MMU maps).
    pub page_size: u64,
    pub big_endian: bool,
    /// `uname -m` of a Linux kernel on it (kdump headers, utsname).
    pub utsname_machine: &'static str,
}

/// ELF machine numbers of the table.
pub const EM_386: u16 = 3;
pub const EM_PPC64: u16 = 21;
pub const EM_S390: u16 = 22;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
pub const EM_RISCV: u16 = 243;

impl Arch {
    /// x86-64 (EM_X86_64, 8-byte words).
    pub const X86_64: Arch = Arch::new(EM_X86_64, 8);
    /// 32-bit x86 (EM_386, 4-byte words).
    pub const I386: Arch = Arch::new(EM_386, 4);
    /// The old name of [`Arch::I386`].
    pub const X86: Arch = Arch::I386;
    /// AArch64 (EM_AARCH64, 8-byte words).
    pub const AARCH64: Arch = Arch::new(EM_AARCH64, 8);
    /// RISC-V 64 (EM_RISCV, 8-byte words).
    pub const RISCV64: Arch = Arch::new(EM_RISCV, 8);
    /// PowerPC 64 little-endian (EM_PPC64).
    pub const PPC64LE: Arch = Arch::new(EM_PPC64, 8);
    /// s390x (EM_S390, 8-byte words).
    pub const S390X: Arch = Arch::new(EM_S390, 8);

    /// What an input is taken to be when nothing says (a raw image without `--arch`):
    /// the first entry of the table, x86_64, as dumpconv always assumed.
    pub const DEFAULT: Arch = Arch::X86_64;

    /// An architecture from its ELF machine number and word size in bytes (4 or 8; any
    /// other value is kept as given).
    pub const fn new(machine: u16, word_size: u8) -> Arch {
        Arch {
            machine,
            word: word_size,
        }
    }

    /// From an ELF header: `e_machine` and whether the class is ELFCLASS64. EM_X86_64
    /// in an ELF32 file (x32) is still x86_64 for a memory dump, and EM_386 in ELF64
    /// (QEMU's i386 dumps of a guest above 4 GiB) is still i386: the machine decides the
    /// word size when the table knows it.
    pub fn from_elf(machine: u16, is_64: bool) -> Arch {
        if let Some(i) = ARCHES.iter().find(|i| i.arch.machine == machine) {
            // One entry per machine in the table: its word size is the machine's.
            return i.arch;
        }
        Arch::new(machine, if is_64 { 8 } else { 4 })
    }

    /// By name (case-insensitive), alias, or the `em<N>/<bits>` form [`Arch::name`]
    /// gives unknown machines.
    pub fn from_name(name: &str) -> Option<Arch> {
        let n = name.trim().to_ascii_lowercase();
        if let Some(i) = ARCHES
            .iter()
            .find(|i| i.name == n || i.aliases.contains(&n.as_str()))
        {
            return Some(i.arch);
        }
        let (m, bits) = n.strip_prefix("em")?.split_once('/')?;
        let machine: u16 = m.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        (bits.is_multiple_of(8) && bits > 0).then(|| Arch::new(machine, bits / 8))
    }

    /// The table entry, when the architecture is known.
    pub fn info(self) -> Option<&'static ArchInfo> {
        ARCHES.iter().find(|i| i.arch == self)
    }

    /// Canonical name, or `em<N>/<bits>` for a machine the table lacks.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self.info() {
            Some(i) => i.name.into(),
            None => format!("em{}/{}", self.machine, u32::from(self.word) * 8).into(),
        }
    }

    /// ELF `e_machine`.
    pub const fn elf_machine(self) -> u16 {
        self.machine
    }

    /// Pointer width in bytes.
    pub const fn word_size(self) -> usize {
        self.word as usize
    }

    /// True for 8-byte words (ELFCLASS64 notes, kdump's 64-bit header layout).
    pub const fn is_64(self) -> bool {
        self.word == 8
    }

    /// The base page size: the table's, else 4 KiB.
    pub fn page_size(self) -> u64 {
        self.info().map_or(4096, |i| i.page_size)
    }

    /// Byte order of the table's entry (little-endian when unknown).
    pub fn big_endian(self) -> bool {
        self.info().is_some_and(|i| i.big_endian)
    }

    /// `uname -m`: the table's, else the name.
    pub fn utsname_machine(self) -> std::borrow::Cow<'static, str> {
        match self.info() {
            Some(i) => i.utsname_machine.into(),
            None => self.name(),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        Arch::from_name(s).ok_or_else(|| {
            format!(
                "unknown architecture {s:?} (known: {}; or em<N>/<bits>)",
                known_names().join(", ")
            )
        })
    }
}

impl Serialize for Arch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The architecture table.
pub static ARCHES: &[ArchInfo] = &[
    ArchInfo {
        arch: Arch::X86_64,
        name: "x86_64",
        aliases: &["amd64", "x86-64"],
        page_size: 4096,
        big_endian: false,
        utsname_machine: "x86_64",
    },
    ArchInfo {
        arch: Arch::I386,
        name: "i386",
        aliases: &["x86", "i686", "ia32"],
        page_size: 4096,
        big_endian: false,
        utsname_machine: "i686",
    },
    ArchInfo {
        arch: Arch::AARCH64,
        name: "aarch64",
        aliases: &["arm64"],
        page_size: 4096,
        big_endian: false,
        utsname_machine: "aarch64",
    },
    ArchInfo {
        arch: Arch::RISCV64,
        name: "riscv64",
        aliases: &[],
        page_size: 4096,
        big_endian: false,
        utsname_machine: "riscv64",
    },
    ArchInfo {
        arch: Arch::PPC64LE,
        name: "ppc64le",
        aliases: &["powerpc64le"],
        page_size: 65536,
        big_endian: false,
        utsname_machine: "ppc64le",
    },
    ArchInfo {
        arch: Arch::S390X,
        name: "s390x",
        aliases: &[],
        page_size: 4096,
        big_endian: true,
        utsname_machine: "s390x",
    },
];

/// The canonical names of the table, in order.
pub fn known_names() -> Vec<&'static str> {
    ARCHES.iter().map(|i| i.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_machines_print_as_em() {
        for i in ARCHES {
            assert_eq!(Arch::from_name(i.name), Some(i.arch));
            for a in i.aliases {
                assert_eq!(Arch::from_name(a), Some(i.arch));
            }
            assert_eq!(Arch::from_elf(i.arch.elf_machine(), i.arch.is_64()), i.arch);
        }
        assert_eq!(Arch::from_name("X86"), Some(Arch::I386));
        assert_eq!(Arch::from_name("arm64"), Some(Arch::AARCH64));
        let odd = Arch::from_elf(4242, true);
        assert_eq!(odd.name(), "em4242/64");
        assert_eq!(Arch::from_name("em4242/64"), Some(odd));
        assert_eq!(odd.word_size(), 8);
        assert_eq!(odd.page_size(), 4096);
        assert_eq!(Arch::from_name("em1/12"), None);
        assert_eq!(Arch::from_name("vax"), None);
        // EM_386 in an ELF64 file is i386.
        assert_eq!(Arch::from_elf(EM_386, true), Arch::I386);
        assert_eq!(Arch::I386.utsname_machine(), "i686");
        assert_eq!(Arch::X86_64.word_size(), 8);
    }

    #[test]
    fn serde_is_the_name() {
        let j = serde_json::to_string(&Arch::AARCH64).unwrap();
        assert_eq!(j, "\"aarch64\"");
        let back: Arch = serde_json::from_str("\"i386\"").unwrap();
        assert_eq!(back, Arch::I386);
        let odd: Arch = serde_json::from_str("\"em99/32\"").unwrap();
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"em99/32\"");
        assert!(serde_json::from_str::<Arch>("\"nope\"").is_err());
    }
}
