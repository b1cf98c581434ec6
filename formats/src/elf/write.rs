//! Encoders for the headers of an ELF core, both classes, little-endian only.
//!
//! This is the one place on the write side that knows where ELF header fields sit; the
//! ELF writer plugin decides the layout (what goes where) and calls these to turn it into
//! bytes. The structs come from the `object` crate so the field offsets are not
//! retyped here.
//!
//! Every encoder checks that values fit the class: an ELF32 file cannot hold an offset,
//! address or size above 4 GiB, and the writer must pick ELF64 for those (QEMU does the
//! same, docs/formats.md#elf-class).

use dumpconv_core::{Error, Result};
use object::elf::{
    FileHeader32, FileHeader64, Ident, ProgramHeader32, ProgramHeader64, SectionHeader32,
    SectionHeader64, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, ELFOSABI_NONE, EV_CURRENT,
};
use object::endian::{LittleEndian as LE, U16, U32, U64};
use object::pod::bytes_of;

pub use object::elf::{ET_CORE, PF_R, PF_W, PF_X, PN_XNUM, PT_LOAD, PT_NOTE, SHN_UNDEF, SHT_NULL};

/// The two ELF classes. The byte order is always little-endian (x86).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

impl ElfClass {
    /// `EI_CLASS` value.
    pub fn ident(self) -> u8 {
        match self {
            ElfClass::Elf32 => ELFCLASS32,
            ElfClass::Elf64 => ELFCLASS64,
        }
    }

    /// Size of the ELF header (`e_ehsize`): 52 or 64.
    pub fn ehdr_size(self) -> u64 {
        match self {
            ElfClass::Elf32 => 52,
            ElfClass::Elf64 => 64,
        }
    }

    /// Size of one program header (`e_phentsize`): 32 or 56.
    pub fn phdr_size(self) -> u64 {
        match self {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 56,
        }
    }

    /// Size of one section header (`e_shentsize`): 40 or 64.
    pub fn shdr_size(self) -> u64 {
        match self {
            ElfClass::Elf32 => 40,
            ElfClass::Elf64 => 64,
        }
    }

    /// Largest offset, address or size the class can hold.
    pub fn max_value(self) -> u64 {
        match self {
            ElfClass::Elf32 => u64::from(u32::MAX),
            ElfClass::Elf64 => u64::MAX,
        }
    }

    /// True if every field of `p` fits this class (ELF32 fields are 32 bits wide).
    pub fn fits(self, p: &Phdr) -> bool {
        let m = self.max_value();
        [
            p.p_offset, p.p_vaddr, p.p_paddr, p.p_filesz, p.p_memsz, p.p_align,
        ]
        .iter()
        .all(|&v| v <= m)
    }

    pub fn name(self) -> &'static str {
        match self {
            ElfClass::Elf32 => "ELF32",
            ElfClass::Elf64 => "ELF64",
        }
    }
}

/// A program header with every field widened to 64 bits, whatever the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

/// What a core file's ELF header says. `phnum` is the real number of program headers;
/// when it is `PN_XNUM` (0xffff) or more, the header stores `PN_XNUM` and the count goes
/// into section header 0 (see [`encode_shdr0_xnum`]), which must sit at `shoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreHeader {
    pub class: ElfClass,
    /// `e_machine` (EM_X86_64 = 62, EM_386 = 3).
    pub machine: u16,
    /// Offset of the program header table.
    pub phoff: u64,
    /// Number of program headers, PT_NOTE included.
    pub phnum: u32,
    /// Offset of section header 0; used (and required non-zero) only when
    /// [`needs_xnum`] says so, ignored otherwise.
    pub shoff: u64,
}

/// True when `phnum` program headers do not fit `e_phnum` and the gABI extended
/// numbering (PN_XNUM + section header 0) is needed.
pub fn needs_xnum(phnum: u32) -> bool {
    phnum >= u32::from(PN_XNUM)
}

fn narrow(class: ElfClass, what: &str, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::invalid(format!(
            "{} cannot hold {what} {v:#x} (more than 32 bits)",
            class.name()
        ))
    })
}

fn ident(class: ElfClass) -> Ident {
    Ident {
        magic: ELFMAG,
        class: class.ident(),
        data: ELFDATA2LSB,
        version: EV_CURRENT,
        // SYSV: what the kernel, QEMU and makedumpfile write for cores.
        os_abi: ELFOSABI_NONE,
        abi_version: 0,
        padding: [0; 7],
    }
}

/// Encode the ELF header of a core file (ET_CORE, e_version 1, e_entry 0, e_flags 0).
///
/// Without extended numbering there are no section headers: e_shoff, e_shnum and
/// e_shentsize are 0. With it (the Linux kernel's `fill_extnum_info` does the same)
/// e_phnum = PN_XNUM, e_shoff = `shoff`, e_shnum = 1, e_shstrndx = SHN_UNDEF.
pub fn encode_ehdr(h: &CoreHeader) -> Result<Vec<u8>> {
    let e = LE;
    let xnum = needs_xnum(h.phnum);
    if xnum && h.shoff == 0 {
        return Err(Error::invalid(
            "extended program header numbering needs a section header offset",
        ));
    }
    let e_phnum = if xnum { PN_XNUM } else { h.phnum as u16 };
    let (shoff, shnum, shentsize) = if xnum {
        (h.shoff, 1u16, h.class.shdr_size() as u16)
    } else {
        (0, 0, 0)
    };
    // Truncation is impossible: sizes are 32..64 and phnum < PN_XNUM here.
    let ehsize = h.class.ehdr_size() as u16;
    let phentsize = h.class.phdr_size() as u16;
    Ok(match h.class {
        ElfClass::Elf64 => bytes_of(&FileHeader64::<LE> {
            e_ident: ident(h.class),
            e_type: U16::new(e, ET_CORE),
            e_machine: U16::new(e, h.machine),
            e_version: U32::new(e, u32::from(EV_CURRENT)),
            e_entry: U64::new(e, 0),
            e_phoff: U64::new(e, h.phoff),
            e_shoff: U64::new(e, shoff),
            e_flags: U32::new(e, 0),
            e_ehsize: U16::new(e, ehsize),
            e_phentsize: U16::new(e, phentsize),
            e_phnum: U16::new(e, e_phnum),
            e_shentsize: U16::new(e, shentsize),
            e_shnum: U16::new(e, shnum),
            e_shstrndx: U16::new(e, SHN_UNDEF),
        })
        .to_vec(),
        ElfClass::Elf32 => bytes_of(&FileHeader32::<LE> {
            e_ident: ident(h.class),
            e_type: U16::new(e, ET_CORE),
            e_machine: U16::new(e, h.machine),
            e_version: U32::new(e, u32::from(EV_CURRENT)),
            e_entry: U32::new(e, 0),
            e_phoff: U32::new(e, narrow(h.class, "e_phoff", h.phoff)?),
            e_shoff: U32::new(e, narrow(h.class, "e_shoff", shoff)?),
            e_flags: U32::new(e, 0),
            e_ehsize: U16::new(e, ehsize),
            e_phentsize: U16::new(e, phentsize),
            e_phnum: U16::new(e, e_phnum),
            e_shentsize: U16::new(e, shentsize),
            e_shnum: U16::new(e, shnum),
            e_shstrndx: U16::new(e, SHN_UNDEF),
        })
        .to_vec(),
    })
}

/// Append one encoded program header to `out` (avoids an allocation per header when
/// encoding tens of thousands of them).
pub fn encode_phdr_into(class: ElfClass, p: &Phdr, out: &mut Vec<u8>) -> Result<()> {
    let e = LE;
    match class {
        ElfClass::Elf64 => out.extend_from_slice(bytes_of(&ProgramHeader64::<LE> {
            p_type: U32::new(e, p.p_type),
            p_flags: U32::new(e, p.p_flags),
            p_offset: U64::new(e, p.p_offset),
            p_vaddr: U64::new(e, p.p_vaddr),
            p_paddr: U64::new(e, p.p_paddr),
            p_filesz: U64::new(e, p.p_filesz),
            p_memsz: U64::new(e, p.p_memsz),
            p_align: U64::new(e, p.p_align),
        })),
        ElfClass::Elf32 => {
            let h = ProgramHeader32::<LE> {
                p_type: U32::new(e, p.p_type),
                p_offset: U32::new(e, narrow(class, "p_offset", p.p_offset)?),
                p_vaddr: U32::new(e, narrow(class, "p_vaddr", p.p_vaddr)?),
                p_paddr: U32::new(e, narrow(class, "p_paddr", p.p_paddr)?),
                p_filesz: U32::new(e, narrow(class, "p_filesz", p.p_filesz)?),
                p_memsz: U32::new(e, narrow(class, "p_memsz", p.p_memsz)?),
                p_flags: U32::new(e, p.p_flags),
                p_align: U32::new(e, narrow(class, "p_align", p.p_align)?),
            };
            out.extend_from_slice(bytes_of(&h));
        }
    }
    Ok(())
}

/// Encode one program header.
pub fn encode_phdr(class: ElfClass, p: &Phdr) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(class.phdr_size() as usize);
    encode_phdr_into(class, p, &mut v)?;
    Ok(v)
}

/// Section header 0 for extended numbering: SHT_NULL with sh_info = the real program
/// header count, sh_size = 1 (the real e_shnum, as the kernel writes it) and sh_link =
/// SHN_UNDEF (the real e_shstrndx).
pub fn encode_shdr0_xnum(class: ElfClass, phnum: u32) -> Vec<u8> {
    let e = LE;
    match class {
        ElfClass::Elf64 => bytes_of(&SectionHeader64::<LE> {
            sh_name: U32::new(e, 0),
            sh_type: U32::new(e, SHT_NULL),
            sh_flags: U64::new(e, 0),
            sh_addr: U64::new(e, 0),
            sh_offset: U64::new(e, 0),
            sh_size: U64::new(e, 1),
            sh_link: U32::new(e, u32::from(SHN_UNDEF)),
            sh_info: U32::new(e, phnum),
            sh_addralign: U64::new(e, 0),
            sh_entsize: U64::new(e, 0),
        })
        .to_vec(),
        ElfClass::Elf32 => bytes_of(&SectionHeader32::<LE> {
            sh_name: U32::new(e, 0),
            sh_type: U32::new(e, SHT_NULL),
            sh_flags: U32::new(e, 0),
            sh_addr: U32::new(e, 0),
            sh_offset: U32::new(e, 0),
            sh_size: U32::new(e, 1),
            sh_link: U32::new(e, u32::from(SHN_UNDEF)),
            sh_info: U32::new(e, phnum),
            sh_addralign: U32::new(e, 0),
            sh_entsize: U32::new(e, 0),
        })
        .to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::read::elf::{FileHeader, ProgramHeader};

    fn le16(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes([b[o], b[o + 1]])
    }

    #[test]
    fn sizes_match_the_structs() {
        for c in [ElfClass::Elf32, ElfClass::Elf64] {
            let h = encode_ehdr(&CoreHeader {
                class: c,
                machine: 3,
                phoff: c.ehdr_size(),
                phnum: 2,
                shoff: 0,
            })
            .unwrap();
            assert_eq!(h.len() as u64, c.ehdr_size());
            let p = encode_phdr(c, &Phdr::default()).unwrap();
            assert_eq!(p.len() as u64, c.phdr_size());
            assert_eq!(encode_shdr0_xnum(c, 70_000).len() as u64, c.shdr_size());
        }
    }

    #[test]
    fn ehdr64_fields() {
        let h = encode_ehdr(&CoreHeader {
            class: ElfClass::Elf64,
            machine: 62,
            phoff: 64,
            phnum: 3,
            shoff: 0,
        })
        .unwrap();
        assert_eq!(&h[..8], &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        assert_eq!(le16(&h, 16), ET_CORE);
        assert_eq!(le16(&h, 18), 62);
        assert_eq!(u32::from_le_bytes(h[20..24].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(h[32..40].try_into().unwrap()), 64);
        assert_eq!(le16(&h, 52), 64); // e_ehsize
        assert_eq!(le16(&h, 54), 56); // e_phentsize
        assert_eq!(le16(&h, 56), 3); // e_phnum
        assert_eq!(le16(&h, 60), 0); // e_shnum
        let parsed = FileHeader64::<LE>::parse(&h[..]).unwrap();
        assert_eq!(parsed.e_machine(LE), 62);
    }

    #[test]
    fn xnum_goes_to_section_zero() {
        for c in [ElfClass::Elf32, ElfClass::Elf64] {
            let phnum = 70_001u32;
            let phoff = c.ehdr_size();
            let shoff = phoff + u64::from(phnum) * c.phdr_size();
            let mut f = encode_ehdr(&CoreHeader {
                class: c,
                machine: 3,
                phoff,
                phnum,
                shoff,
            })
            .unwrap();
            let off = c.ehdr_size() as usize;
            assert_eq!(le16(&f, off - 8), PN_XNUM); // e_phnum
            assert_eq!(le16(&f, off - 4), 1); // e_shnum
            for i in 0..phnum {
                encode_phdr_into(
                    c,
                    &Phdr {
                        p_type: PT_LOAD,
                        p_paddr: u64::from(i) * 4096,
                        ..Phdr::default()
                    },
                    &mut f,
                )
                .unwrap();
            }
            f.extend_from_slice(&encode_shdr0_xnum(c, phnum));
            match c {
                ElfClass::Elf64 => {
                    let h = FileHeader64::<LE>::parse(&f[..]).unwrap();
                    assert_eq!(h.phnum(LE, &f[..]).unwrap(), phnum as usize);
                    let ph = h.program_headers(LE, &f[..]).unwrap();
                    assert_eq!(ph[69_999].p_paddr(LE), 69_999 * 4096);
                }
                ElfClass::Elf32 => {
                    let h = FileHeader32::<LE>::parse(&f[..]).unwrap();
                    assert_eq!(h.phnum(LE, &f[..]).unwrap(), phnum as usize);
                }
            }
        }
    }

    #[test]
    fn xnum_without_shoff_is_refused() {
        assert!(encode_ehdr(&CoreHeader {
            class: ElfClass::Elf64,
            machine: 62,
            phoff: 64,
            phnum: 0xffff,
            shoff: 0,
        })
        .is_err());
        assert!(!needs_xnum(0xfffe) && needs_xnum(0xffff));
    }

    #[test]
    fn elf32_refuses_wide_values() {
        let p = Phdr {
            p_type: PT_LOAD,
            p_paddr: 1 << 32,
            ..Phdr::default()
        };
        assert!(!ElfClass::Elf32.fits(&p));
        assert!(ElfClass::Elf64.fits(&p));
        let e = encode_phdr(ElfClass::Elf32, &p).unwrap_err().to_string();
        assert!(e.contains("p_paddr"), "{e}");
        assert!(encode_phdr(ElfClass::Elf64, &p).is_ok());
    }
}
