//! Tests of the ELF core reader, on files made by a small builder here (independent
//! of the ELF writer, so a bug cannot hide by being in both) and on the header bytes
//! of real QEMU 7.2 dumps.

use std::io::Write;
use std::path::Path;

use dumpconv_core::Backing;
use dumpconv_x86::{paging_mode, PagingMode};
use proptest::prelude::*;

use super::*;
use crate::elf::note::encode_notes;
use crate::notes::{prstatus, prstatus_note, qemu_note};

/// Where a PT_LOAD's file bytes come from.
#[derive(Clone)]
enum Data {
    /// Appended after the notes; p_filesz = len.
    Bytes(Vec<u8>),
    /// The same p_offset/p_filesz as load `i` (a QEMU alias).
    SameAs(usize),
    /// Exactly this p_offset and p_filesz.
    At { offset: u64, filesz: u64 },
}

#[derive(Clone)]
struct L {
    vaddr: u64,
    paddr: u64,
    memsz: u64,
    data: Data,
}

/// A minimal ELF core builder: ELF header, [section header 0 when PN_XNUM], program
/// headers (PT_NOTEs first), note blobs, load data.
#[derive(Clone)]
struct Elf {
    class: ElfClass,
    machine: u16,
    e_type: u16,
    e_flags: u32,
    notes: Vec<Vec<u8>>,
    loads: Vec<L>,
}

impl Elf {
    fn new(class: ElfClass, machine: u16) -> Self {
        Elf {
            class,
            machine,
            e_type: ET_CORE,
            e_flags: 0,
            notes: Vec::new(),
            loads: Vec::new(),
        }
    }

    fn note(mut self, notes: &[Note]) -> Self {
        self.notes.push(encode_notes(notes));
        self
    }

    fn load(mut self, vaddr: u64, paddr: u64, memsz: u64, data: Data) -> Self {
        self.loads.push(L {
            vaddr,
            paddr,
            memsz,
            data,
        });
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let c = self.class;
        let (eh, ph, sh) = (c.ehdr_size(), c.phdr_size(), c.shdr_size());
        let phnum = self.notes.len() + self.loads.len();
        let xnum = phnum >= PN_XNUM as usize;
        let shoff = if xnum { eh } else { 0 };
        let phoff = eh + if xnum { sh } else { 0 };
        let mut off = phoff + phnum * ph;
        let mut note_hdrs = Vec::new();
        for n in &self.notes {
            note_hdrs.push((off as u64, n.len() as u64));
            off += n.len();
        }
        let mut load_pos: Vec<(u64, u64)> = Vec::new();
        for l in &self.loads {
            let pos = match &l.data {
                Data::Bytes(b) => {
                    let p = (off as u64, b.len() as u64);
                    off += b.len();
                    p
                }
                Data::SameAs(i) => load_pos[*i],
                Data::At { offset, filesz } => (*offset, *filesz),
            };
            load_pos.push(pos);
        }
        let mut out = vec![0u8; off];
        let p16 =
            |o: &mut Vec<u8>, at: usize, v: u16| o[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let p32 =
            |o: &mut Vec<u8>, at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let p64 =
            |o: &mut Vec<u8>, at: usize, v: u64| o[at..at + 8].copy_from_slice(&v.to_le_bytes());
        out[..4].copy_from_slice(&ELFMAG);
        out[EI_CLASS] = if c == ElfClass::Elf64 {
            ELFCLASS64
        } else {
            ELFCLASS32
        };
        out[EI_DATA] = ELFDATA2LSB;
        out[EI_VERSION] = 1;
        p16(&mut out, 16, self.e_type);
        p16(&mut out, 18, self.machine);
        p32(&mut out, 20, 1);
        let e_phnum = if xnum { PN_XNUM } else { phnum as u16 };
        match c {
            ElfClass::Elf32 => {
                p32(&mut out, 28, phoff as u32);
                p32(&mut out, 32, shoff as u32);
                p32(&mut out, 36, self.e_flags);
                p16(&mut out, 40, eh as u16);
                p16(&mut out, 42, ph as u16);
                p16(&mut out, 44, e_phnum);
                p16(&mut out, 46, sh as u16);
                p16(&mut out, 48, u16::from(xnum));
                if xnum {
                    p32(&mut out, shoff + 28, phnum as u32);
                }
            }
            ElfClass::Elf64 => {
                p64(&mut out, 32, phoff as u64);
                p64(&mut out, 40, shoff as u64);
                p32(&mut out, 48, self.e_flags);
                p16(&mut out, 52, eh as u16);
                p16(&mut out, 54, ph as u16);
                p16(&mut out, 56, e_phnum);
                p16(&mut out, 58, sh as u16);
                p16(&mut out, 60, u16::from(xnum));
                if xnum {
                    p32(&mut out, shoff + 44, phnum as u32);
                }
            }
        }
        let mut at = phoff;
        let mut phdr =
            |out: &mut Vec<u8>, t: u32, off: u64, va: u64, pa: u64, fsz: u64, msz: u64| {
                match c {
                    ElfClass::Elf32 => {
                        p32(out, at, t);
                        p32(out, at + 4, off as u32);
                        p32(out, at + 8, va as u32);
                        p32(out, at + 12, pa as u32);
                        p32(out, at + 16, fsz as u32);
                        p32(out, at + 20, msz as u32);
                    }
                    ElfClass::Elf64 => {
                        p32(out, at, t);
                        p64(out, at + 8, off);
                        p64(out, at + 16, va);
                        p64(out, at + 24, pa);
                        p64(out, at + 32, fsz);
                        p64(out, at + 40, msz);
                    }
                }
                at += ph;
            };
        for &(o, n) in &note_hdrs {
            phdr(&mut out, PT_NOTE, o, 0, 0, n, n);
        }
        for (l, &(o, fsz)) in self.loads.iter().zip(&load_pos) {
            phdr(&mut out, PT_LOAD, o, l.vaddr, l.paddr, fsz, l.memsz);
        }
        for (n, &(o, _)) in self.notes.iter().zip(&note_hdrs) {
            out[o as usize..o as usize + n.len()].copy_from_slice(n);
        }
        for (l, &(o, _)) in self.loads.iter().zip(&load_pos) {
            if let Data::Bytes(b) = &l.data {
                out[o as usize..o as usize + b.len()].copy_from_slice(b);
            }
        }
        out
    }
}

fn write_tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

fn open_bytes(bytes: &[u8]) -> (tempfile::NamedTempFile, Result<Dump>) {
    let f = write_tmp(bytes);
    let d = crate::open(f.path(), &OpenOptions::default());
    (f, d)
}

fn read(d: &Dump, paddr: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0xEE; len];
    d.memory.read_at(paddr, &mut b).unwrap();
    b
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn detail<'a>(d: &'a Dump, key: &str) -> Vec<&'a str> {
    d.details
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn cpu(index: u32, rip: u64, cr3: u64) -> CpuState {
    let mut c = dumpconv_x86::cpu_from_root(index, cr3, PagingMode::Level4)
        .with_reg("rip", rip)
        .with_reg("rsp", rip - 0x100)
        .with_reg("rax", u64::from(index));
    c.pid = Some(index + 1);
    c
}

use dumpconv_core::CpuState;

fn x86_64_notes() -> Vec<Note> {
    let (c0, c1) = (
        cpu(0, 0xffff_ffff_8100_0000, 0x10_0000),
        cpu(1, 0xffff_ffff_8100_2000, 0x20_0000),
    );
    vec![
        prstatus_note(&c0, Arch::X86_64).unwrap(),
        prstatus_note(&c1, Arch::X86_64).unwrap(),
        qemu_note(&c0),
        qemu_note(&c1),
        Note::new(
            "VMCOREINFO",
            0,
            b"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n".to_vec(),
        ),
    ]
}

#[test]
fn elf64_x86_64_layout_memory_and_notes() {
    let notes = x86_64_notes();
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .note(&notes)
        .load(
            0xffff_8880_0000_0000,
            0,
            0x1000,
            Data::Bytes(pattern(1, 0x1000)),
        )
        .load(
            0xffff_8880_0010_0000,
            0x10_0000,
            0x2000,
            Data::Bytes(pattern(7, 0x2000)),
        );
    let (f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    assert_eq!(d.format, "elf");
    assert_eq!(d.arch, Some(Arch::X86_64));
    assert_eq!(
        d.memory.ranges(),
        &[
            PhysRange::new(0, 0x1000),
            PhysRange::new(0x10_0000, 0x10_2000)
        ]
    );
    assert_eq!(read(&d, 0xff0, 0x10), pattern(1, 0x1000)[0xff0..].to_vec());
    assert_eq!(
        read(&d, 0x10_1000, 4),
        pattern(7, 0x2000)[0x1000..0x1004].to_vec()
    );
    assert_eq!(d.notes, notes);
    assert_eq!(d.cpus.len(), 2);
    assert_eq!(d.cpus[1].reg("cr3"), Some(0x20_0000));
    assert_eq!(d.cpus[1].reg("rip"), Some(0xffff_ffff_8100_2000));
    assert_eq!(paging_mode(&d.cpus[0]), Some(PagingMode::Level4));
    assert_eq!(d.cpus[0].pid, Some(1));
    let v = d.vmcoreinfo.as_ref().unwrap();
    assert_eq!(v.symbol("init_top_pgt"), Some(0xffff_ffff_82a0_a000));
    assert_eq!(detail(&d, "class"), ["ELF64"]);
    assert_eq!(detail(&d, "PT_LOAD"), ["2"]);
    assert_eq!(detail(&d, "producer"), ["QEMU dump-guest-memory"]);
    assert!(detail(&d, "virtual addresses")[0].starts_with("virtual (2 of 2"));
    assert!(detail(&d, "warning").is_empty(), "{:?}", d.details);

    let loads = read_load_headers(f.path()).unwrap();
    assert_eq!(loads.len(), 2);
    assert_eq!(loads[1].vaddr, 0xffff_8880_0010_0000);
    assert_eq!(loads[1].paddr, 0x10_0000);
    assert_eq!((loads[1].filesz, loads[1].memsz), (0x2000, 0x2000));
    let m = load_mappings(&loads);
    assert_eq!(m.translate(0xffff_8880_0010_1234), Some(0x10_1234));
    assert_eq!(m.len(), 2);
}

#[test]
fn direct_map_p_vaddr_is_a_physical_view_and_aliases_are_not() {
    // RAM once, low memory at PAGE_OFFSET + p_paddr (as /proc/vmcore and our i386
    // physical ELF), the rest with p_vaddr 0.
    let elf = Elf::new(ElfClass::Elf64, EM_386)
        .load(0xc000_0000, 0, 0x1000, Data::Bytes(pattern(1, 0x1000)))
        .load(0xc000_2000, 0x2000, 0x1000, Data::Bytes(pattern(2, 0x1000)))
        .load(0, 0x4000_0000, 0x1000, Data::Bytes(pattern(3, 0x1000)));
    let (_f, d) = open_bytes(&elf.bytes());
    assert_eq!(
        detail(&d.unwrap(), "virtual addresses"),
        ["physical view with direct-map p_vaddr (2 of 3 PT_LOADs at p_paddr + 0xc0000000)"]
    );
    // The same offset, but one physical page mapped twice: a paging view.
    let elf = Elf::new(ElfClass::Elf64, EM_386)
        .load(0xc000_1000, 0x1000, 0x1000, Data::Bytes(pattern(1, 0x1000)))
        .load(0xc000_1000, 0x1000, 0x1000, Data::Bytes(pattern(1, 0x1000)))
        .load(0, 0x4000_0000, 0x1000, Data::Bytes(pattern(3, 0x1000)));
    let (_f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    let v = detail(&d, "virtual addresses");
    assert!(v[0].starts_with("virtual (2 of 3 PT_LOADs"), "{v:?}");
    // Two different offsets: kernel mappings, not a linear map.
    let elf = Elf::new(ElfClass::Elf64, EM_386)
        .load(0xc000_0000, 0, 0x1000, Data::Bytes(pattern(1, 0x1000)))
        .load(0xd000_2000, 0x2000, 0x1000, Data::Bytes(pattern(2, 0x1000)))
        .load(0, 0x4000_0000, 0x1000, Data::Bytes(pattern(3, 0x1000)));
    let (_f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    let v = detail(&d, "virtual addresses");
    assert!(v[0].starts_with("virtual (2 of 3 PT_LOADs"), "{v:?}");
}

#[test]
fn elf32_i386_layout_memory_and_notes() {
    let mut c = CpuState::new(0, None)
        .with_reg("rip", 0xc100_0000)
        .with_reg("rsp", 0xc1ff_0000)
        .with_reg("cr0", 0x8000_0011)
        .with_reg("cr3", 0x1a_0000)
        .with_reg("cr4", 0x10);
    let notes = vec![prstatus_note(&c, Arch::X86).unwrap(), qemu_note(&c)];
    let elf = Elf::new(ElfClass::Elf32, EM_386)
        .note(&notes)
        .load(0, 0, 0x800, Data::Bytes(pattern(3, 0x800)))
        .load(0, 0x1000, 0x800, Data::Bytes(pattern(9, 0x800)));
    let (f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    assert_eq!(d.arch, Some(Arch::X86));
    assert_eq!(detail(&d, "class"), ["ELF32"]);
    assert_eq!(
        detail(&d, "virtual addresses"),
        ["physical view (p_vaddr 0)"]
    );
    assert_eq!(read(&d, 0x1000, 3), pattern(9, 3));
    assert_eq!(d.cpus.len(), 1);
    assert_eq!(paging_mode(&d.cpus[0]), Some(PagingMode::Bits32));
    c.pid = Some(1);
    // Every register given comes back (the notes add the ones they hold as zeros).
    for (n, v) in c.regs.iter() {
        assert_eq!(d.cpus[0].reg(n), Some(v), "{n}");
    }
    for (n, v) in d.cpus[0].regs.iter() {
        assert_eq!(v, c.reg(n).unwrap_or(0), "{n}");
    }
    assert_eq!(d.cpus[0].pid, c.pid);
    assert_eq!(read_load_headers(f.path()).unwrap().len(), 2);
}

#[test]
fn pn_xnum_reads_the_count_from_section_header_0() {
    for class in [ElfClass::Elf64, ElfClass::Elf32] {
        let n = 0x1_0005u64;
        let mut elf = Elf::new(class, EM_386).note(&[Note::new("CORE", 1, vec![0; 144])]);
        // 16 bytes per load, physically and file-contiguous: merges into one segment.
        for i in 0..n {
            elf = elf.load(0, i * 16, 16, Data::Bytes(vec![(i % 251) as u8; 16]));
        }
        let bytes = elf.bytes();
        let phnum_at = if class == ElfClass::Elf64 { 56 } else { 44 };
        assert_eq!(le_u16(&bytes, phnum_at), Ok(PN_XNUM));
        let (f, d) = open_bytes(&bytes);
        let d = d.unwrap();
        assert_eq!(detail(&d, "PT_LOAD"), [(n).to_string()]);
        assert!(detail(&d, "program headers")[0].contains("PN_XNUM"));
        assert_eq!(d.memory.ranges(), &[PhysRange::new(0, n * 16)]);
        assert_eq!(read(&d, (n - 1) * 16, 1), [((n - 1) % 251) as u8]);
        assert_eq!(read_load_headers(f.path()).unwrap().len() as u64, n);
    }
}

#[test]
fn pn_xnum_without_section_headers_is_an_error() {
    let mut bytes = Elf::new(ElfClass::Elf64, EM_X86_64)
        .load(0, 0, 16, Data::Bytes(vec![1; 16]))
        .bytes();
    bytes[56..58].copy_from_slice(&PN_XNUM.to_le_bytes());
    let (f, d) = open_bytes(&bytes);
    let e = d.unwrap_err().to_string();
    assert!(
        e.contains("PN_XNUM") && e.contains(&f.path().display().to_string()),
        "{e}"
    );
}

#[test]
fn zero_tails_read_as_zeros() {
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .load(0, 0x2000, 0x1000, Data::Bytes(pattern(5, 0x100)))
        // p_filesz 0 with a nowhere offset, as QEMU writes for filtered memory.
        .load(
            0,
            0x8000,
            0x1000,
            Data::At {
                offset: u64::MAX,
                filesz: 0,
            },
        );
    let (_f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    assert_eq!(
        d.memory.ranges(),
        &[
            PhysRange::new(0x2000, 0x3000),
            PhysRange::new(0x8000, 0x9000)
        ]
    );
    let b = read(&d, 0x20f0, 0x20);
    assert_eq!(&b[..0x10], &pattern(5, 0x100)[0xf0..]);
    assert!(b[0x10..].iter().all(|&x| x == 0));
    assert!(read(&d, 0x8000, 0x1000).iter().all(|&x| x == 0));
    assert!(matches!(
        d.memory.backing(0x2100),
        Some(Backing::Zero { len: 0xf00 })
    ));
    assert!(matches!(
        d.memory.backing(0x2000),
        Some(Backing::File { len: 0x100, .. })
    ));
}

#[test]
fn overlapping_loads_first_file_bytes_win_and_zeros_never_shadow_data() {
    // /proc/vmcore: kernel text PT_LOAD (same bytes) before the RAM PT_LOAD.
    let ram = pattern(11, 0x4000);
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .note(&[Note::new("VMCOREINFO", 0, b"OSRELEASE=6.1\n".to_vec())])
        .load(
            0xffff_ffff_8100_0000,
            0x1000,
            0x1000,
            Data::Bytes(ram[0x1000..0x2000].to_vec()),
        )
        .load(0xffff_8880_0000_0000, 0, 0x4000, Data::Bytes(ram.clone()))
        // A QEMU paging-style mapping whose file part ends early: the zero tail over
        // [0x5800, 0x6000) must not hide the next load's real bytes.
        .load(
            0xffff_c900_0000_0000,
            0x5000,
            0x1000,
            Data::Bytes(vec![0xAA; 0x800]),
        )
        .load(
            0xffff_c900_0001_0000,
            0x5800,
            0x800,
            Data::Bytes(vec![0xBB; 0x800]),
        );
    let (_f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    assert_eq!(
        d.memory.ranges(),
        &[PhysRange::new(0, 0x4000), PhysRange::new(0x5000, 0x6000)]
    );
    assert_eq!(read(&d, 0, 0x4000), ram);
    let b = read(&d, 0x57ff, 2);
    assert_eq!(b, [0xAA, 0xBB]);
    assert!(read(&d, 0x5800, 0x800).iter().all(|&x| x == 0xBB));
    assert!(detail(&d, "virtual addresses")[0].contains("aliases"));
}

#[test]
fn qemu_paging_aliases_share_offsets() {
    let data = pattern(42, 0x2000);
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .note(&[qemu_note(&cpu(0, 0xffff_ffff_8100_0000, 0x1000))])
        .load(
            0xffff_8880_0010_0000,
            0x10_0000,
            0x2000,
            Data::Bytes(data.clone()),
        )
        .load(0xffff_ffff_8100_0000, 0x10_0000, 0x2000, Data::SameAs(0))
        // The lower-half address bug: user space written as 0xffff0000_0040_0000.
        .load(
            0xffff_0000_0040_0000,
            0x10_1000,
            0x1000,
            Data::At {
                offset: 0,
                filesz: 0,
            },
        );
    let (f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    assert_eq!(d.memory.ranges(), &[PhysRange::new(0x10_0000, 0x10_2000)]);
    assert_eq!(read(&d, 0x10_0000, 0x2000), data);
    let v = detail(&d, "virtual addresses")[0];
    assert!(
        v.contains("QEMU paging dump") && v.contains("non-canonical"),
        "{v}"
    );
    let m = load_mappings(&read_load_headers(f.path()).unwrap());
    assert_eq!(m.translate(0xffff_ffff_8100_1000), Some(0x10_1000));
    assert_eq!(m.translate(0xffff_8880_0010_1000), Some(0x10_1000));
    assert_eq!(m.len(), 3);
}

#[test]
fn multiple_pt_notes_are_concatenated_in_order() {
    let a = Note::new(
        "CORE",
        1,
        prstatus::encode(&cpu(0, 0x1000, 0), Arch::X86_64).unwrap(),
    );
    let b = Note::new(
        "CORE",
        1,
        prstatus::encode(&cpu(1, 0x2000, 0), Arch::X86_64).unwrap(),
    );
    let v = Note::new("VMCOREINFO", 0, b"PAGESIZE=4096\n".to_vec());
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .note(std::slice::from_ref(&a))
        .note(std::slice::from_ref(&b))
        .note(std::slice::from_ref(&v))
        .load(0xffff_8880_0000_0000, 0, 16, Data::Bytes(vec![0; 16]));
    let (_f, d) = open_bytes(&elf.bytes());
    let d = d.unwrap();
    assert_eq!(d.notes, vec![a, b, v]);
    assert_eq!(d.cpus.len(), 2);
    assert_eq!(d.cpus[1].reg("rip"), Some(0x2000));
    assert_eq!(
        detail(&d, "producer"),
        ["kdump /proc/vmcore (or makedumpfile ELF output)"]
    );
    assert_eq!(detail(&d, "PT_NOTE"), ["3"]);
}

#[test]
fn incomplete_makedumpfile_dump_reads_missing_data_as_zeros() {
    let mut elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .load(0, 0, 0x1000, Data::Bytes(pattern(1, 0x1000)))
        .load(0, 0x1000, 0x1000, Data::Bytes(pattern(2, 0x1000)));
    elf.e_flags = DUMP_ELF_INCOMPLETE;
    let mut bytes = elf.bytes();
    bytes.truncate(bytes.len() - 0x800);
    let (_f, d) = open_bytes(&bytes);
    let d = d.unwrap();
    let b = read(&d, 0x17ff, 2);
    assert_eq!(b, [pattern(2, 0x1000)[0x7ff], 0]);
    let w = detail(&d, "warning");
    assert!(
        w.iter()
            .any(|w| w.contains("incomplete") && w.contains("0x800")),
        "{w:?}"
    );
    // Without the flag the same truncation is an error naming the load and offset.
    elf.e_flags = 0;
    let mut bytes = elf.bytes();
    bytes.truncate(bytes.len() - 0x800);
    let (f, d) = open_bytes(&bytes);
    let e = d.unwrap_err().to_string();
    assert!(
        e.contains(&f.path().display().to_string()) && e.contains("PT_LOAD 1"),
        "{e}"
    );
}

/// The header, program headers and notes of a real dump (the bytes before the first
/// PT_LOAD's data), put back into a sparse file of the real length with the reset
/// vector the real BIOS ROM has at 0xfffffff0.
fn real_qemu_file(head: &[u8], file_len: u64, bios_tail_offset: u64) -> tempfile::NamedTempFile {
    const RESET_VECTOR: [u8; 16] = [
        0xea, 0x5b, 0xe0, 0x00, 0xf0, 0x30, 0x36, 0x2f, 0x32, 0x33, 0x2f, 0x39, 0x39, 0x00, 0xfc,
        0x00,
    ];
    let f = write_tmp(head);
    f.as_file().set_len(file_len).unwrap();
    use std::os::unix::fs::FileExt;
    f.as_file()
        .write_all_at(&RESET_VECTOR, bios_tail_offset)
        .unwrap();
    f
}

#[test]
fn real_qemu_7_2_dump_two_cpus() {
    // qemu-system-x86_64 (QEMU 7.2, Debian) -m 64 -smp 2 -S, never booted,
    // dump-guest-memory paging=false. The CPUs are in real mode, so QEMU wrote
    // EM_386 and 144-byte NT_PRSTATUS notes; and because the BIOS ROM ends exactly at
    // 4 GiB, it chose ELF64 (docs/formats.md#elf-class). e_ehsize is 8.
    let head = include_bytes!("testdata/qemu-7.2-x64-2.head");
    let f = real_qemu_file(head, 67_372_795, 0x400_06f0 + 0x3_fff0);
    let d = crate::open(f.path(), &OpenOptions::default()).unwrap();
    assert_eq!(d.arch, Some(Arch::X86));
    assert_eq!(detail(&d, "class"), ["ELF64"]);
    assert!(detail(&d, "e_ehsize")[0].starts_with("8 "));
    assert_eq!(detail(&d, "producer"), ["QEMU dump-guest-memory"]);
    assert_eq!(
        detail(&d, "virtual addresses"),
        ["physical view (p_vaddr = p_paddr)"]
    );
    assert_eq!(
        d.memory.ranges(),
        &[
            PhysRange::new(0, 0x400_0000),
            PhysRange::new(0xfffc_0000, 0x1_0000_0000)
        ]
    );
    assert_eq!(read(&d, 0xffff_fff0, 5), [0xea, 0x5b, 0xe0, 0x00, 0xf0]);
    let kinds: Vec<NoteKind> = d.notes.iter().map(Note::kind).collect();
    assert_eq!(
        kinds,
        [
            NoteKind::PrStatus,
            NoteKind::PrStatus,
            NoteKind::QemuCpuState,
            NoteKind::QemuCpuState
        ]
    );
    assert_eq!(d.notes[0].desc.len(), 144);
    assert_eq!(d.cpus.len(), 2);
    for (i, c) in d.cpus.iter().enumerate() {
        assert_eq!(c.pid, Some(i as u32 + 1)); // QEMU: cpu_index + 1
        assert_eq!(paging_mode(c), Some(PagingMode::Off));
        assert_eq!(c.reg("cr0"), Some(0x6000_0010));
        assert_eq!(c.reg("cs.base"), Some(0xffff_0000));
        assert_eq!(c.reg("rip"), Some(0xfff0));
    }
    // The NT_PRSTATUS registers agree with the QEMU note (the CPUID signature in edx).
    assert_eq!(d.cpus[0].reg("rdx"), Some(0x60fb1));
    // The QEMU note is byte-identical to the one checked in notes::qemu.
    assert_eq!(
        d.notes[2].desc,
        crate::notes::qemu::tests::real_note_bytes()
    );
    let loads = read_load_headers(f.path()).unwrap();
    assert_eq!(loads.len(), 5);
    assert_eq!(loads[0].offset, 0x6f0);
    assert!(loads.iter().all(|l| l.align == 0 && l.flags == 0));
}

#[test]
fn real_qemu_7_2_i386_binary_dump() {
    // qemu-system-i386 -m 64 -S: the same ELF64/EM_386 shape, one CPU.
    let head = include_bytes!("testdata/qemu-7.2-i386-1.head");
    let f = real_qemu_file(head, 67_372_171, 0x400_0480 + 0x3_fff0);
    let d = crate::open(f.path(), &OpenOptions::default()).unwrap();
    assert_eq!(d.arch, Some(Arch::X86));
    assert_eq!(d.cpus.len(), 1);
    assert_eq!(d.cpus[0].reg("rdx"), Some(0x663));
    assert_eq!(read(&d, 0xffff_fff0, 1), [0xea]);
}

// ---- bad input: each must be an Err naming the path (and offset), never a panic ----

fn expect_err(bytes: &[u8], needles: &[&str]) -> String {
    let (f, d) = open_bytes(bytes);
    let e = d.unwrap_err().to_string();
    assert!(
        e.contains(&f.path().display().to_string()),
        "no path in: {e}"
    );
    for n in needles {
        assert!(e.contains(n), "{n:?} not in: {e}");
    }
    e
}

fn small_elf64() -> Vec<u8> {
    Elf::new(ElfClass::Elf64, EM_X86_64)
        .note(&x86_64_notes())
        .load(0, 0, 0x100, Data::Bytes(pattern(1, 0x100)))
        .bytes()
}

#[test]
fn truncated_elf_header() {
    let b = small_elf64();
    expect_err(&b[..40], &["too short", "ELF64", "offset 0x0"]);
    expect_err(&b[..10], &["too short"]);
}

#[test]
fn program_headers_past_eof() {
    let mut b = small_elf64();
    let near_end = b.len() as u64 - 20;
    b[32..40].copy_from_slice(&near_end.to_le_bytes());
    expect_err(&b, &["program header table", "past the end", "offset 0x"]);
    // An e_phoff whose table end overflows.
    let mut b = small_elf64();
    b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(&b, &["program header table"]);
}

#[test]
fn pt_load_offset_past_eof() {
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64).load(
        0,
        0,
        0x1000,
        Data::At {
            offset: 0x10_0000,
            filesz: 0x1000,
        },
    );
    let e = expect_err(&elf.bytes(), &["PT_LOAD 0", "0x100000", "past the end"]);
    assert!(e.contains("at offset 0x40"), "{e}"); // the program header's offset
                                                  // Offset + size overflowing u64.
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64).load(
        0,
        0,
        u64::MAX,
        Data::At {
            offset: u64::MAX - 4,
            filesz: 0x1000,
        },
    );
    expect_err(&elf.bytes(), &["PT_LOAD 0"]);
    // Physical end overflowing.
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64).load(
        0,
        u64::MAX - 10,
        0x1000,
        Data::At {
            offset: 0,
            filesz: 0,
        },
    );
    expect_err(&elf.bytes(), &["overflows"]);
}

#[test]
fn note_sizes_that_overflow() {
    let mut b = small_elf64();
    // The first note's n_descsz, right after the program headers.
    let notes_at = 64 + 2 * 56;
    b[notes_at + 4..notes_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_err(
        &b,
        &[
            "descriptor size",
            "ELF note",
            &format!("offset {notes_at:#x}"),
        ],
    );
    let mut b = small_elf64();
    b[notes_at..notes_at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    expect_err(&b, &["name size"]);
    // A PT_NOTE whose own size runs past the file.
    let mut b = small_elf64();
    b[64 + 32..64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
    expect_err(&b, &["PT_NOTE 0"]);
}

#[test]
fn unsupported_elf_variants() {
    let mut b = small_elf64();
    // EM_RISCV (EM_AARCH64, 183, is read since the aarch64 support).
    b[18..20].copy_from_slice(&243u16.to_le_bytes());
    expect_err(&b, &["unsupported machine 243", "offset 0x12"]);
    let mut b = small_elf64();
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    expect_err(&b, &["ET_EXEC", "not a core dump"]);
    let mut b = small_elf64();
    b[EI_DATA] = 2;
    expect_err(&b, &["little-endian"]);
    let mut b = small_elf64();
    b[EI_CLASS] = 9;
    expect_err(&b, &["class 9"]);
    let mut b = small_elf64();
    b[54..56].copy_from_slice(&57u16.to_le_bytes());
    expect_err(&b, &["e_phentsize"]);
}

#[test]
fn process_core_is_refused() {
    let elf = Elf::new(ElfClass::Elf64, EM_X86_64)
        .load(0x40_0000, 0, 16, Data::Bytes(vec![1; 16]))
        .load(0x60_0000, 0, 16, Data::Bytes(vec![2; 16]));
    expect_err(&elf.bytes(), &["process core"]);
}

#[test]
fn e_ehsize_is_not_validated() {
    let mut b = small_elf64();
    b[52..54].copy_from_slice(&8u16.to_le_bytes());
    let (_f, d) = open_bytes(&b);
    assert!(d.is_ok());
}

#[test]
fn first_wins_cuts_gaps() {
    let f = |offset| SegmentSource::File { file: 0, offset };
    let seg = |s, e, source| Segment {
        range: PhysRange::new(s, e),
        source,
    };
    let kept = first_wins(vec![
        seg(10, 20, f(0)),
        seg(30, 40, f(100)),
        seg(0, 50, f(1000)),
        seg(12, 18, SegmentSource::Zero),
    ]);
    let got: Vec<(u64, u64, SegmentSource)> = kept
        .into_iter()
        .map(|s| (s.range.start, s.range.end, s.source))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 10, f(1000)),
            (10, 20, f(0)),
            (20, 30, f(1020)),
            (30, 40, f(100)),
            (40, 50, f(1040)),
        ]
    );
}

fn assert_open_never_panics(bytes: &[u8]) {
    let f = write_tmp(bytes);
    if let Ok(d) = crate::open(f.path(), &OpenOptions::default()) {
        // Reading what it claims to have must not panic either (errors are fine).
        for r in d.memory.ranges().iter().take(8) {
            let mut b = vec![0u8; r.len().min(64) as usize];
            let _ = d.memory.read_at(r.start, &mut b);
            let _ = d
                .memory
                .read_at(r.end.saturating_sub(b.len() as u64), &mut b);
        }
        let _ = crate::notes::plan_notes(
            &d.notes,
            &d.cpus,
            d.vmcoreinfo.as_ref(),
            d.arch.unwrap_or(Arch::X86_64),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_elf_never_panics(
        class64 in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut b = if class64 {
            small_elf64()
        } else {
            Elf::new(ElfClass::Elf32, EM_386)
                .note(&[prstatus_note(&cpu(0, 0x1000, 0), Arch::X86).unwrap()])
                .load(0, 0x1000, 0x200, Data::Bytes(pattern(3, 0x100)))
                .load(0, 0x1000, 0x80, Data::SameAs(0))
                .bytes()
        };
        // Mutations are concentrated on the headers, where they matter most.
        let hot = b.len().min(0x200);
        for (i, v) in edits {
            let at = i.index(hot);
            b[at] = v;
        }
        if truncate {
            let keep = cut.index(b.len()) + 1;
            b.truncate(keep);
        }
        assert_open_never_panics(&b);
    }

    #[test]
    fn random_bytes_never_panic(mut b in prop::collection::vec(any::<u8>(), 1..600), elf in any::<bool>()) {
        if elf && b.len() >= 4 {
            b[..4].copy_from_slice(&ELFMAG);
        }
        assert_open_never_panics(&b);
    }
}

#[test]
fn builder_output_is_what_readelf_would_parse() {
    // Self-check of the builder against the reader's own header view.
    let b = small_elf64();
    let f = write_tmp(&b);
    let l = read_layout(&Input::open(f.path()).unwrap()).unwrap();
    assert_eq!(
        (l.class, l.machine, l.phnum),
        (ElfClass::Elf64, EM_X86_64, 2)
    );
    assert_eq!(l.notes.len(), 1);
    assert_eq!(l.e_phoff, 64);
    let _ = Path::new("");
}

/// Checks a whole real dump when one is named in `DUMPCONV_REAL_ELF` (a file from
/// `dump-guest-memory`, or any ELF core): every PT_LOAD's first and last bytes read
/// through the model equal the file's bytes at p_offset, for loads not shadowed by an
/// earlier one. Skipped (passes) without the variable; the files are too big for git.
#[test]
fn real_dump_from_env() {
    let Some(path) = std::env::var_os("DUMPCONV_REAL_ELF") else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let d = crate::open(&path, &OpenOptions::default()).unwrap();
    eprintln!("{d:?}\n{:#?}", d.details);
    let file = std::fs::File::open(&path).unwrap();
    use std::os::unix::fs::FileExt;
    let loads = read_load_headers(&path).unwrap();
    let mut seen: Vec<PhysRange> = Vec::new();
    for h in loads.iter().filter(|h| h.filesz > 0) {
        let r = PhysRange::with_len(h.paddr, h.filesz);
        if seen.iter().any(|s| s.intersect(&r).is_some()) {
            continue;
        }
        seen.push(r);
        let n = h.filesz.min(4096);
        for at in [0, h.filesz - n] {
            let mut want = vec![0u8; n as usize];
            file.read_exact_at(&mut want, h.offset + at).unwrap();
            assert_eq!(
                read(&d, h.paddr + at, n as usize),
                want,
                "load at {:#x}",
                h.paddr
            );
        }
    }
    for c in &d.cpus {
        eprintln!("{}", serde_json::to_string(c).unwrap());
    }
}
