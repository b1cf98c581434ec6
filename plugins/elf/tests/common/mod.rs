//! Synthetic physical memory for writer tests, and an independent ELF reader (the
//! `object` crate) to check the output.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dumpconv_core::{
    Arch, DumpPlan, MappingList, Note, PhysRange, PhysicalMemory, Segment, SegmentMemory,
    SegmentSource,
};
use object::elf::{FileHeader32, FileHeader64, PT_LOAD, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian as LE;

/// The byte a data page holds at `paddr`: never zero, depends on the address.
pub fn pattern(paddr: u64) -> u8 {
    let x = paddr.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) as u8) | 1
}

/// A piece of synthetic RAM.
#[derive(Clone, Copy)]
pub enum Piece {
    /// Bytes in the backing file; pages whose address satisfies the zero rule are zero.
    Data,
    /// A `SegmentSource::Zero` segment (known zeros, no file bytes).
    Zero,
}

/// Build memory from `(start, end, piece)` triples; in Data pieces, 4 KiB pages for
/// which `zero_page(page_addr)` is true hold zeros.
pub fn synth(pieces: &[(u64, u64, Piece)], zero_page: impl Fn(u64) -> bool) -> SegmentMemory {
    synth_with(pieces, zero_page, &[])
}

/// Like [`synth`], then overwrite bytes at physical addresses (inside Data pieces).
pub fn synth_with(
    pieces: &[(u64, u64, Piece)],
    zero_page: impl Fn(u64) -> bool,
    patches: &[(u64, &[u8])],
) -> SegmentMemory {
    let f = tempfile::tempfile().unwrap();
    let mut segs = Vec::new();
    let mut file_off = 0u64;
    for &(start, end, kind) in pieces {
        match kind {
            Piece::Zero => segs.push(Segment {
                range: PhysRange::new(start, end),
                source: SegmentSource::Zero,
            }),
            Piece::Data => {
                // Page by page; zero pages stay holes of the (sparse) input file.
                let mut a = start;
                while a < end {
                    let next = ((a & !0xfff) + 0x1000).min(end);
                    if !zero_page(a & !0xfff) {
                        let page: Vec<u8> = (a..next).map(pattern).collect();
                        f.write_all_at(&page, file_off + (a - start)).unwrap();
                    }
                    a = next;
                }
                f.set_len(file_off + (end - start)).unwrap();
                for &(at, bytes) in patches {
                    if start <= at && at + bytes.len() as u64 <= end {
                        f.write_all_at(bytes, file_off + (at - start)).unwrap();
                    }
                }
                segs.push(Segment {
                    range: PhysRange::new(start, end),
                    source: SegmentSource::File {
                        file: 0,
                        offset: file_off,
                    },
                });
                file_off += end - start;
            }
        }
    }
    SegmentMemory::new(vec![(PathBuf::from("synth"), Arc::new(f))], segs).unwrap()
}

pub fn plan(arch: Arch, ranges: Vec<PhysRange>, mappings: Option<MappingList>) -> DumpPlan {
    DumpPlan {
        filter: None,
        arch,
        page_size: 4096,
        ranges,
        mappings,
        notes: vec![
            Note::new(
                "CORE",
                1,
                vec![0; if arch == Arch::X86 { 144 } else { 336 }],
            ),
            Note::new(
                "VMCOREINFO",
                0,
                b"OSRELEASE=6.1.0\nPAGESIZE=4096\n".to_vec(),
            ),
        ],
        cpus: vec![],
        vmcoreinfo: None,
        options: BTreeMap::new(),
    }
}

/// A program header, widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ph {
    pub p_type: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
    pub align: u64,
}

/// What the ELF header says, widened.
#[derive(Debug)]
pub struct Parsed {
    pub class: u8,
    pub osabi: u8,
    pub e_type: u16,
    pub machine: u16,
    pub version: u32,
    pub phoff: u64,
    pub ehsize: u16,
    pub e_phnum: u16,
    pub e_shnum: u16,
    pub phdrs: Vec<Ph>,
}

pub fn parse(data: &[u8]) -> Parsed {
    match data[4] {
        1 => {
            let h = FileHeader32::<LE>::parse(data).unwrap();
            let phdrs = h
                .program_headers(LE, data)
                .unwrap()
                .iter()
                .map(|p| Ph {
                    p_type: p.p_type(LE),
                    offset: p.p_offset(LE).into(),
                    vaddr: p.p_vaddr(LE).into(),
                    paddr: p.p_paddr(LE).into(),
                    filesz: p.p_filesz(LE).into(),
                    memsz: p.p_memsz(LE).into(),
                    flags: p.p_flags(LE),
                    align: p.p_align(LE).into(),
                })
                .collect();
            Parsed {
                class: 1,
                osabi: h.e_ident.os_abi,
                e_type: h.e_type(LE),
                machine: h.e_machine(LE),
                version: h.e_version(LE),
                phoff: h.e_phoff(LE).into(),
                ehsize: h.e_ehsize(LE),
                e_phnum: h.e_phnum(LE),
                e_shnum: h.e_shnum(LE),
                phdrs,
            }
        }
        2 => {
            let h = FileHeader64::<LE>::parse(data).unwrap();
            let phdrs = h
                .program_headers(LE, data)
                .unwrap()
                .iter()
                .map(|p| Ph {
                    p_type: p.p_type(LE),
                    offset: p.p_offset(LE),
                    vaddr: p.p_vaddr(LE),
                    paddr: p.p_paddr(LE),
                    filesz: p.p_filesz(LE),
                    memsz: p.p_memsz(LE),
                    flags: p.p_flags(LE),
                    align: p.p_align(LE),
                })
                .collect();
            Parsed {
                class: 2,
                osabi: h.e_ident.os_abi,
                e_type: h.e_type(LE),
                machine: h.e_machine(LE),
                version: h.e_version(LE),
                phoff: h.e_phoff(LE),
                ehsize: h.e_ehsize(LE),
                e_phnum: h.e_phnum(LE),
                e_shnum: h.e_shnum(LE),
                phdrs,
            }
        }
        c => panic!("bad class {c}"),
    }
}

/// Check everything a core reader relies on, and every PT_LOAD's bytes against `mem`.
pub fn check_elf(data: &[u8], plan: &DumpPlan, mem: &dyn PhysicalMemory) -> Parsed {
    let p = parse(data);
    let ehsize = if p.class == 1 { 52 } else { 64 };
    assert_eq!(p.e_type, object::elf::ET_CORE);
    assert_eq!(p.version, 1);
    assert_eq!(p.osabi, 0);
    assert_eq!(p.machine, plan.arch.elf_machine());
    assert_eq!(p.ehsize, ehsize);
    assert_eq!(p.phoff, u64::from(ehsize));
    assert!(p.phoff <= 192);
    // PT_NOTE first, holding the plan's notes.
    let note = p.phdrs[0];
    assert_eq!(note.p_type, PT_NOTE);
    let blob = &data[note.offset as usize..(note.offset + note.filesz) as usize];
    let notes =
        dumpconv_formats::elf::note::parse_notes(blob, Path::new("out"), note.offset).unwrap();
    assert_eq!(notes, plan.notes);
    // Loads: kdump style, bytes equal to memory, all within the file.
    let mut min_load_off = u64::MAX;
    for ph in &p.phdrs[1..] {
        assert_eq!(ph.p_type, PT_LOAD);
        assert_eq!(ph.align, 0);
        assert_eq!(ph.filesz, ph.memsz);
        assert_eq!(ph.flags, 7);
        assert!(ph.offset + ph.filesz <= data.len() as u64);
        min_load_off = min_load_off.min(ph.offset);
        let mut want = vec![0u8; ph.filesz as usize];
        mem.read_at(ph.paddr, &mut want).unwrap();
        assert!(
            data[ph.offset as usize..(ph.offset + ph.filesz) as usize] == want[..],
            "bytes of load {ph:x?}"
        );
        if plan.mappings.is_none() {
            assert_eq!(ph.vaddr, ph.paddr);
        }
    }
    // Notes sit before every load (crash reads headers up to the first load).
    if p.phdrs.len() > 1 {
        assert!(note.offset + note.filesz <= min_load_off);
        // phdr[1] holds the lowest file offset (old crash's header size) when the
        // lowest RAM byte is mapped (always in the physical view).
        let lowest = plan.ranges.first().map(|r| r.start);
        if p.phdrs[1].paddr == lowest.unwrap_or(0) {
            assert_eq!(p.phdrs[1].offset, min_load_off);
        }
        if plan.mappings.is_none() {
            assert_eq!(Some(p.phdrs[1].paddr), lowest);
        }
        // Mapped loads by physical address, then the vaddr-0 fillers.
        let loads = &p.phdrs[1..];
        // The fillers are the trailing vaddr-0 loads (a real mapping may sit at 0 too).
        let first_filler = if plan.mappings.is_some() {
            loads
                .iter()
                .rposition(|l| l.vaddr != 0)
                .map_or(0, |i| i + 1)
        } else {
            loads.len()
        };
        let (mapped, fillers) = loads.split_at(first_filler);
        assert!(mapped
            .windows(2)
            .all(|w| (w[0].paddr, w[0].vaddr) <= (w[1].paddr, w[1].vaddr)));
        assert!(fillers.iter().all(|l| l.vaddr == 0));
        assert!(fillers
            .windows(2)
            .all(|w| w[0].paddr + w[0].memsz <= w[1].paddr));
    }
    // Every plan byte is reachable by physical address.
    let mut by_paddr: Vec<(u64, u64)> = p.phdrs[1..]
        .iter()
        .map(|ph| (ph.paddr, ph.paddr + ph.memsz))
        .collect();
    by_paddr.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in by_paddr {
        match merged.last_mut() {
            Some(l) if s <= l.1 => l.1 = l.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    for r in &plan.ranges {
        assert!(
            merged.iter().any(|&(s, e)| s <= r.start && r.end <= e),
            "range {r:x?} not covered by loads {merged:x?}"
        );
    }
    p
}

pub fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

pub fn open_file_sink(p: &Path) -> dumpconv_core::FileSink {
    dumpconv_core::FileSink::new(File::create(p).unwrap(), p)
}

/// `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Read bytes through gdb: `x/Nxb addr` for each address; returns one Vec per address.
pub fn gdb_read(core: &Path, addrs: &[u64], n: usize) -> Vec<Vec<u8>> {
    let mut cmd = std::process::Command::new("gdb");
    cmd.args(["-nx", "-batch", "-ex", "set pagination off"]);
    cmd.arg("-ex").arg(format!("core-file {}", core.display()));
    for a in addrs {
        cmd.arg("-ex").arg(format!("x/{n}xb {a:#x}"));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut res = Vec::new();
    for a in addrs {
        let mut bytes = Vec::new();
        for line in text.lines() {
            let Some((head, rest)) = line.split_once(':') else {
                continue;
            };
            let head = head.split_whitespace().next().unwrap_or("");
            let Ok(at) = u64::from_str_radix(head.trim_start_matches("0x"), 16) else {
                continue;
            };
            if at >= *a && at < *a + n as u64 && at == *a + bytes.len() as u64 {
                bytes.extend(
                    rest.split_whitespace()
                        .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap()),
                );
            }
        }
        assert_eq!(
            bytes.len(),
            n,
            "gdb did not print {n} bytes at {a:#x}\nstdout:\n{text}\nstderr:\n{err}"
        );
        res.push(bytes);
    }
    res
}

pub fn expect(mem: &dyn PhysicalMemory, paddr: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    mem.read_at(paddr, &mut b).unwrap();
    b
}
