//! ELF core reader: QEMU `dump-guest-memory`, /proc/vmcore, makedumpfile ELF output.
//!
//! Little-endian ELF32 and ELF64, ET_CORE, EM_X86_64, EM_AARCH64 or EM_386 (QEMU writes EM_386 in
//! ELF64 when a 32-bit guest has RAM at or above 4 GiB; even an idle PC qualifies,
//! because its BIOS ROM ends exactly at 4 GiB). Fields are read by hand from byte
//! offsets: no alignment assumptions, and every size, offset and count coming from the
//! file is checked against the file before it is used or allocated.
//!
//! Memory is taken from PT_LOAD `p_paddr`, never `p_vaddr`: the virtual addresses
//! are one producer's view (QEMU paging dumps, the kernel's direct map) and are
//! reported separately ([`load_mappings`]).

use std::path::Path;
use std::sync::Arc;

use dumpconv_core::memory::first_wins;
use dumpconv_core::note::NoteKind;
use dumpconv_core::{
    Arch, Dump, Error, Mapping, MappingList, Note, PhysRange, Result, Segment, SegmentMemory,
    SegmentSource,
};
use object::elf::{
    ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, EM_386, EM_AARCH64, EM_X86_64, ET_CORE, PN_XNUM,
    PT_LOAD, PT_NOTE,
};

use crate::bytes::{le_u16, le_u32, le_u64, ShortRead};
use crate::elf::note::parse_notes;
use crate::input::{fits, Input, MAX_METADATA};
use crate::notes;
use crate::options::OpenOptions;

const FMT: &str = "ELF";

/// Byte positions in `e_ident` (the `object` crate has the values but not these).
const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
#[cfg(test)]
const EI_VERSION: usize = 6;

/// makedumpfile's `e_flags` bit for a dump that stopped early (ENOSPC): PT_LOAD data
/// after the failure is missing and reads as zeros (crash `netdump.h`).
pub const DUMP_ELF_INCOMPLETE: u32 = 1;

/// NT_PRPSINFO and NT_FILE: notes of process cores, which are not memory dumps.
const NT_PRPSINFO: u32 = 3;
const NT_FILE: u32 = 0x4649_4c45;

/// ELF class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

impl ElfClass {
    pub fn name(self) -> &'static str {
        match self {
            ElfClass::Elf32 => "ELF32",
            ElfClass::Elf64 => "ELF64",
        }
    }
    fn ehdr_size(self) -> usize {
        match self {
            ElfClass::Elf32 => 52,
            ElfClass::Elf64 => 64,
        }
    }
    fn phdr_size(self) -> usize {
        match self {
            ElfClass::Elf32 => 32,
            ElfClass::Elf64 => 56,
        }
    }
    fn shdr_size(self) -> usize {
        match self {
            ElfClass::Elf32 => 40,
            ElfClass::Elf64 => 64,
        }
    }
}

/// One PT_LOAD program header, as in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadHeader {
    pub vaddr: u64,
    pub paddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
    pub align: u64,
}

/// One PT_NOTE program header: where its notes are in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteHeader {
    pub offset: u64,
    pub size: u64,
}

/// The validated header-level structure of an ELF core.
#[derive(Debug, Clone)]
pub struct ElfLayout {
    pub class: ElfClass,
    pub machine: u16,
    pub arch: Arch,
    pub e_flags: u32,
    /// As stored; not validated (QEMU ≥ 7.2 writes 8, the size of a pointer).
    pub e_ehsize: u16,
    pub e_phoff: u64,
    /// The real number of program headers (after PN_XNUM).
    pub phnum: u64,
    /// True if e_phnum was PN_XNUM and the count came from section header 0.
    pub pn_xnum: bool,
    pub e_shoff: u64,
    pub e_shnum: u16,
    /// PT_LOAD headers in file order.
    pub loads: Vec<LoadHeader>,
    /// PT_NOTE headers in file order.
    pub notes: Vec<NoteHeader>,
    /// Program headers of other types.
    pub other_phdrs: u64,
    pub file_len: u64,
}

impl ElfLayout {
    pub fn incomplete(&self) -> bool {
        self.e_flags & DUMP_ELF_INCOMPLETE != 0
    }
}

/// Probe for [`crate::detect::PROBES`]: the ELF magic. Class, byte order and machine
/// are checked by [`open`], so an unsupported ELF gets a precise error instead of
/// "unknown format".
pub fn probe(head: &[u8], _file_len: u64) -> bool {
    head.starts_with(&ELFMAG)
}

/// The PT_LOAD headers of an ELF core, in file order, validated like [`open`] does.
/// Tests compare these between QEMU's paging dumps and ours.
pub fn read_load_headers(path: &Path) -> Result<Vec<LoadHeader>> {
    Ok(read_layout(&Input::open(path)?)?.loads)
}

/// The virtual→physical mappings the PT_LOADs describe (p_vaddr → p_paddr, p_memsz
/// bytes), sorted by virtual address and merged where contiguous. Headers with
/// p_memsz 0 are skipped; a run that would wrap past 2^64 is cut at the top.
pub fn load_mappings(loads: &[LoadHeader]) -> MappingList {
    let mut l: MappingList = loads
        .iter()
        .filter(|h| h.memsz > 0)
        .map(|h| Mapping {
            virt: h.vaddr,
            phys: h.paddr,
            len: h.memsz.min(u64::MAX - h.vaddr),
        })
        .collect();
    l.normalize();
    l
}

/// Physical addresses end at or below 2^52 (MAXPHYADDR is at most 52 on x86-64 and
/// AArch64): a PT_LOAD, LiME range or kdump page above that is a lying header, and
/// trusting it would size the output (kdump bitmaps, raw offsets) by it.
pub const MAX_PHYS_END: u64 = dumpconv_core::memory::MAX_PHYS_END;

/// Most bytes of zero fill (p_memsz beyond p_filesz, summed over the PT_LOADs) a file
/// of `file_len` bytes may claim: 1024 times its size, at least 1 GiB. makedumpfile's
/// ELF output leaves filtered pages out this way, so a heavily filtered dump of a big
/// machine claims much more memory than it stores; but a 9 KB file claiming a TiB
/// (issue #17) would make every writer produce a TiB of zeros (kdump descriptors, an
/// AVML or zstd stream): the bound keeps a conversion's time within a small multiple
/// of what reading a real dump of that size takes.
pub fn max_zero_fill(file_len: u64) -> u64 {
    file_len.saturating_mul(1024).max(1 << 30)
}

/// Read and validate the ELF header and program headers of `input`.
pub fn read_layout(input: &Input) -> Result<ElfLayout> {
    let path = &input.path;
    let ferr = |off: u64, msg: String| Error::format(path.clone(), off, FMT, msg);
    let ident_len = input.len.min(64) as usize;
    let mut eh = vec![0u8; ident_len];
    input.read_exact_at(&mut eh, 0, FMT, "ELF header")?;
    if !eh.starts_with(&ELFMAG) {
        return Err(ferr(0, "no ELF magic (7f 45 4c 46)".into()));
    }
    if eh.len() < 16 {
        return Err(ferr(
            0,
            format!(
                "file is {} bytes, too short for an ELF header (truncated?)",
                input.len
            ),
        ));
    }
    let class = match eh[EI_CLASS] {
        ELFCLASS32 => ElfClass::Elf32,
        ELFCLASS64 => ElfClass::Elf64,
        c => return Err(ferr(EI_CLASS as u64, format!("invalid ELF class {c}"))),
    };
    if eh[EI_DATA] != ELFDATA2LSB {
        return Err(ferr(
            EI_DATA as u64,
            format!(
                "ELF data encoding {} is not little-endian; only little-endian (x86) \
                 dumps are supported",
                eh[EI_DATA]
            ),
        ));
    }
    if eh.len() < class.ehdr_size() {
        return Err(ferr(
            0,
            format!(
                "file is {} bytes, too short for an {} header ({} bytes; truncated?)",
                input.len,
                class.name(),
                class.ehdr_size()
            ),
        ));
    }
    let fields = || -> Result<_, ShortRead> {
        let head = (le_u16(&eh, 16)?, le_u16(&eh, 18)?);
        Ok((
            head,
            match class {
                ElfClass::Elf32 => (
                    u64::from(le_u32(&eh, 28)?),
                    u64::from(le_u32(&eh, 32)?),
                    le_u32(&eh, 36)?,
                    le_u16(&eh, 40)?,
                    le_u16(&eh, 42)?,
                    le_u16(&eh, 44)?,
                    le_u16(&eh, 46)?,
                    le_u16(&eh, 48)?,
                ),
                ElfClass::Elf64 => (
                    le_u64(&eh, 32)?,
                    le_u64(&eh, 40)?,
                    le_u32(&eh, 48)?,
                    le_u16(&eh, 52)?,
                    le_u16(&eh, 54)?,
                    le_u16(&eh, 56)?,
                    le_u16(&eh, 58)?,
                    le_u16(&eh, 60)?,
                ),
            },
        ))
    };
    let (
        (e_type, machine),
        (e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum),
    ) = fields().map_err(|e| e.at(&input.path, 0, FMT))?;
    if e_type != ET_CORE {
        let what = match e_type {
            1 => " (ET_REL, an object file)",
            2 => " (ET_EXEC, an executable: vmlinux instead of the dump?)",
            3 => " (ET_DYN, a shared object or PIE)",
            _ => "",
        };
        return Err(ferr(
            16,
            format!("ELF type {e_type}{what} is not a core dump (ET_CORE, 4)"),
        ));
    }
    if machine != EM_X86_64 && machine != EM_386 && machine != EM_AARCH64 {
        return Err(ferr(
            18,
            format!(
                "unsupported machine {machine} (supported: EM_X86_64 {EM_X86_64}, \
                 EM_386 {EM_386}, EM_AARCH64 {EM_AARCH64})"
            ),
        ));
    }
    let arch = Arch::from_elf(machine, class == ElfClass::Elf64);

    // PN_XNUM: the real count is in section header 0's sh_info.
    let (phnum, pn_xnum) = if e_phnum == PN_XNUM {
        if e_shoff == 0 {
            return Err(ferr(
                0,
                "e_phnum is PN_XNUM (0xffff) but there is no section header 0 to hold \
                 the real count (e_shoff = 0)"
                    .into(),
            ));
        }
        if usize::from(e_shentsize) < class.shdr_size() {
            return Err(ferr(
                0,
                format!(
                    "e_phnum is PN_XNUM but e_shentsize {e_shentsize} is too small for a \
                     section header ({})",
                    class.shdr_size()
                ),
            ));
        }
        let sh0 = input.read_vec(
            e_shoff,
            class.shdr_size() as u64,
            FMT,
            "section header 0 (holds the program header count, e_phnum = PN_XNUM)",
        )?;
        let info = match class {
            ElfClass::Elf32 => le_u32(&sh0, 28),
            ElfClass::Elf64 => le_u32(&sh0, 44),
        }
        .map_err(|e| e.at(&input.path, e_shoff, FMT))?;
        // PN_XNUM exists for counts that do not fit in e_phnum: a smaller count (or 0)
        // there is a header that lies about where its count is.
        if info < u32::from(PN_XNUM) {
            let sh_info_at = e_shoff + if class == ElfClass::Elf32 { 28 } else { 44 };
            return Err(ferr(
                sh_info_at,
                format!(
                    "e_phnum is PN_XNUM (0xffff), so section header 0's sh_info must hold \
                     the real count, 65535 or more; it holds {info} (corrupt header)"
                ),
            ));
        }
        (u64::from(info), true)
    } else {
        (u64::from(e_phnum), false)
    };
    let e_phnum_at: u64 = if class == ElfClass::Elf32 { 0x2c } else { 0x38 };
    if phnum == 0 {
        return Err(ferr(
            e_phnum_at,
            "e_phnum is 0: no program headers, so no PT_LOAD and no memory (a core dump \
             has at least one)"
                .into(),
        ));
    }

    let mut layout = ElfLayout {
        class,
        machine,
        arch,
        e_flags,
        e_ehsize,
        e_phoff,
        phnum,
        pn_xnum,
        e_shoff,
        e_shnum,
        loads: Vec::new(),
        notes: Vec::new(),
        other_phdrs: 0,
        file_len: input.len,
    };
    let phsz = class.phdr_size();
    if usize::from(e_phentsize) != phsz {
        return Err(ferr(
            0,
            format!(
                "e_phentsize is {e_phentsize}; {} program headers are {phsz} bytes",
                class.name()
            ),
        ));
    }
    if e_phoff == 0 {
        return Err(ferr(
            0,
            format!("{phnum} program headers, but e_phoff is 0"),
        ));
    }
    let table_len = phnum
        .checked_mul(phsz as u64)
        .filter(|&n| n <= MAX_METADATA)
        .ok_or_else(|| {
            ferr(
                e_phoff,
                format!("{phnum} program headers: implausibly many (corrupt header?)"),
            )
        })?;
    if !fits(e_phoff, table_len, input.len) {
        return Err(ferr(
            e_phoff,
            format!(
                "program header table ({phnum} × {phsz} bytes) runs past the end of the \
                 file ({:#x} bytes; truncated?)",
                input.len
            ),
        ));
    }
    let table = input.read_vec(e_phoff, table_len, FMT, "program header table")?;
    let incomplete = e_flags & DUMP_ELF_INCOMPLETE != 0;
    let mut zero_fill = 0u64;
    for (i, ph) in table.chunks_exact(phsz).enumerate() {
        let at = e_phoff + (i * phsz) as u64;
        let fields = || -> Result<_, ShortRead> {
            Ok((
                le_u32(ph, 0)?,
                match class {
                    ElfClass::Elf32 => LoadHeader {
                        offset: u64::from(le_u32(ph, 4)?),
                        vaddr: u64::from(le_u32(ph, 8)?),
                        paddr: u64::from(le_u32(ph, 12)?),
                        filesz: u64::from(le_u32(ph, 16)?),
                        memsz: u64::from(le_u32(ph, 20)?),
                        flags: le_u32(ph, 24)?,
                        align: u64::from(le_u32(ph, 28)?),
                    },
                    ElfClass::Elf64 => LoadHeader {
                        flags: le_u32(ph, 4)?,
                        offset: le_u64(ph, 8)?,
                        vaddr: le_u64(ph, 16)?,
                        paddr: le_u64(ph, 24)?,
                        filesz: le_u64(ph, 32)?,
                        memsz: le_u64(ph, 40)?,
                        align: le_u64(ph, 48)?,
                    },
                },
            ))
        };
        let (p_type, h) = fields().map_err(|e| e.at(&input.path, at, FMT))?;
        match p_type {
            PT_LOAD => {
                if h.filesz > h.memsz {
                    return Err(ferr(
                        at,
                        format!(
                            "PT_LOAD {i}: p_filesz {:#x} is larger than p_memsz {:#x}",
                            h.filesz, h.memsz
                        ),
                    ));
                }
                if h.paddr.checked_add(h.memsz).is_none() {
                    return Err(ferr(
                        at,
                        format!(
                            "PT_LOAD {i}: p_paddr {:#x} + p_memsz {:#x} overflows",
                            h.paddr, h.memsz
                        ),
                    ));
                }
                if h.memsz > 0 && h.paddr + h.memsz > MAX_PHYS_END {
                    return Err(ferr(
                        at,
                        format!(
                            "PT_LOAD {i}: p_paddr {:#x} + p_memsz {:#x} ends above 2^52, \
                             the highest physical address x86-64 and AArch64 define \
                             (corrupt header?)",
                            h.paddr, h.memsz
                        ),
                    ));
                }
                // What the file does not hold reads as zeros: the p_memsz tail, and in
                // an incomplete dump the p_filesz bytes past its end.
                let in_file = if fits(h.offset, h.filesz, input.len) {
                    h.filesz
                } else {
                    input.len.saturating_sub(h.offset).min(h.filesz)
                };
                zero_fill = zero_fill.saturating_add(h.memsz - in_file);
                if zero_fill > max_zero_fill(input.len) {
                    return Err(ferr(
                        at,
                        format!(
                            "PT_LOAD {i}: p_memsz {:#x} exceeds p_filesz {:#x}; with the \
                             PT_LOADs before it the file claims {zero_fill:#x} bytes of \
                             zero fill (memory not stored in the file), more than \
                             {:#x} for a {:#x}-byte file: a corrupt p_memsz?",
                            h.memsz,
                            h.filesz,
                            max_zero_fill(input.len),
                            input.len
                        ),
                    ));
                }
                // p_filesz 0 means "no bytes in the file": QEMU then writes p_offset
                // all-ones (memory it filtered out), so the offset is not checked.
                if h.filesz > 0 && !fits(h.offset, h.filesz, input.len) && !incomplete {
                    return Err(ferr(
                        at,
                        format!(
                            "PT_LOAD {i} (physical {:#x}): data at offset {:#x}, {:#x} \
                             bytes, runs past the end of the file ({:#x} bytes; \
                             truncated?)",
                            h.paddr, h.offset, h.filesz, input.len
                        ),
                    ));
                }
                layout.loads.push(h);
            }
            PT_NOTE => {
                if h.filesz == 0 {
                    continue;
                }
                if !fits(h.offset, h.filesz, input.len) {
                    return Err(ferr(
                        at,
                        format!(
                            "PT_NOTE {i}: notes at offset {:#x}, {:#x} bytes, run past the \
                             end of the file ({:#x} bytes)",
                            h.offset, h.filesz, input.len
                        ),
                    ));
                }
                layout.notes.push(NoteHeader {
                    offset: h.offset,
                    size: h.filesz,
                });
            }
            _ => layout.other_phdrs += 1,
        }
    }
    let note_total: u64 = layout.notes.iter().map(|n| n.size).sum();
    if note_total > MAX_METADATA {
        return Err(ferr(
            e_phoff,
            format!("PT_NOTE segments total {note_total:#x} bytes: implausibly large"),
        ));
    }
    Ok(layout)
}

/// Open an ELF core.
pub fn open(path: &Path, _opts: &OpenOptions) -> Result<Dump> {
    let input = Input::open(path)?;
    let layout = read_layout(&input)?;

    // Notes: every PT_NOTE, concatenated in file order.
    let mut all_notes: Vec<Note> = Vec::new();
    for nh in &layout.notes {
        let blob = input.read_vec(nh.offset, nh.size, FMT, "PT_NOTE segment")?;
        all_notes.extend(parse_notes(&blob, &input.path, nh.offset)?);
    }

    let mut warnings: Vec<String> = Vec::new();
    let (segments, missing) = build_segments(&layout);
    if layout.incomplete() {
        warnings.push(format!(
            "dump is marked incomplete (e_flags DUMP_ELF_INCOMPLETE, makedumpfile ran out \
             of space?): {missing:#x} bytes of PT_LOAD data are missing from the file and \
             read as zeros"
        ));
    }
    if layout.loads.len() >= 2 && layout.loads.iter().all(|h| h.paddr == 0) {
        return Err(Error::format(
            input.path.clone(),
            layout.e_phoff,
            FMT,
            "every PT_LOAD has p_paddr 0: this looks like a process core (gcore, a \
             crashed program), not a physical memory dump",
        ));
    }
    let memory = SegmentMemory::new(
        vec![(input.path.clone(), Arc::clone(&input.file))],
        segments,
    )?;

    let (cpus, cpu_warnings) = notes::decode_cpus(&all_notes, layout.arch);
    warnings.extend(cpu_warnings);
    let vmcoreinfo = notes::vmcoreinfo_from_notes(&all_notes);

    let count = |k: NoteKind| all_notes.iter().filter(|n| n.kind() == k).count();
    let (n_pr, n_qemu, n_vmci) = (
        count(NoteKind::PrStatus),
        count(NoteKind::QemuCpuState),
        count(NoteKind::VmcoreInfo),
    );
    let process_core = all_notes
        .iter()
        .any(|n| n.name == b"CORE" && (n.n_type == NT_PRPSINFO || n.n_type == NT_FILE));
    let producer = if n_qemu > 0 {
        "QEMU dump-guest-memory"
    } else if layout.e_ehsize == 8 && n_pr > 0 {
        // QEMU 7.2 and later write e_ehsize 8 (docs/formats.md#elf-header-quirks); on
        // architectures without QEMU's CPU-state note (arm64) that is what tells it.
        "QEMU dump-guest-memory (no QEMU CPU-state note)"
    } else if layout.incomplete() {
        "makedumpfile (ELF output)"
    } else if n_vmci > 0 && n_pr > 0 {
        "kdump /proc/vmcore (or makedumpfile ELF output)"
    } else if process_core {
        warnings.push(
            "notes include NT_PRPSINFO/NT_FILE: this looks like a process core, whose \
             p_paddr values are not physical addresses"
                .into(),
        );
        "process core (not a memory dump)"
    } else if n_pr > 0 {
        "unknown (NT_PRSTATUS notes, no VMCOREINFO)"
    } else if n_vmci > 0 {
        "unknown (VMCOREINFO, no CPU notes)"
    } else {
        "unknown (no notes)"
    };
    if layout.loads.is_empty() {
        warnings.push("no PT_LOAD program headers: the dump holds no memory".into());
    }

    let mut details: Vec<(String, String)> = vec![
        ("class".into(), layout.class.name().into()),
        (
            "machine".into(),
            format!(
                "{} ({})",
                layout.machine,
                match layout.machine {
                    EM_X86_64 => "EM_X86_64".to_string(),
                    EM_386 => "EM_386".to_string(),
                    EM_AARCH64 => "EM_AARCH64".to_string(),
                    _ => layout.arch.name().into_owned(),
                }
            ),
        ),
        ("e_flags".into(), format!("{:#x}", layout.e_flags)),
        (
            "program headers".into(),
            if layout.pn_xnum {
                format!("{} (PN_XNUM: count from section header 0)", layout.phnum)
            } else {
                layout.phnum.to_string()
            },
        ),
        ("PT_LOAD".into(), layout.loads.len().to_string()),
        ("PT_NOTE".into(), layout.notes.len().to_string()),
        (
            "notes".into(),
            format!(
                "{} ({n_pr} NT_PRSTATUS, {n_qemu} QEMU, {n_vmci} VMCOREINFO)",
                all_notes.len()
            ),
        ),
        ("producer".into(), producer.into()),
        (
            "virtual addresses".into(),
            describe_vaddrs(&layout.loads, n_qemu > 0),
        ),
    ];
    if usize::from(layout.e_ehsize) != layout.class.ehdr_size() {
        details.push((
            "e_ehsize".into(),
            format!(
                "{} (not {}; QEMU 7.2 and later write 8, the size of a pointer; ignored)",
                layout.e_ehsize,
                layout.class.ehdr_size()
            ),
        ));
    }
    details.extend(warnings.into_iter().map(|w| ("warning".to_string(), w)));

    Ok(Dump {
        path: input.path.clone(),
        format: "elf",
        details,
        arch: Some(layout.arch),
        memory: Arc::new(memory),
        cpus,
        notes: all_notes,
        vmcoreinfo,
    })
}

/// Physical segments of the PT_LOADs, overlaps resolved, plus how many bytes of an
/// incomplete dump are missing from the file.
///
/// Order decides who wins an overlap (first wins, as in [`SegmentMemory`]): every
/// load's file-backed part first, in file order, then the zero parts (p_filesz <
/// p_memsz tails, p_filesz 0 loads, data lost in an incomplete dump). So the zero tail
/// QEMU gives a paging-mode mapping that runs past its RAM block never hides real
/// bytes another PT_LOAD holds for the same physical address, and aliases (several
/// PT_LOADs for one physical range) collapse to the first. /proc/vmcore's kernel-text
/// PT_LOAD, first in the file, overlaps a RAM PT_LOAD holding the same bytes; either
/// may win.
///
/// Overlaps are cut by [`first_wins`] (O(n log n)) and contiguous pieces are merged, so SegmentMemory gets a few disjoint segments even from a QEMU paging dump
/// with 10^5 PT_LOADs.
fn build_segments(layout: &ElfLayout) -> (Vec<Segment>, u64) {
    let mut file_parts: Vec<Segment> = Vec::with_capacity(layout.loads.len());
    let mut zero_parts: Vec<Segment> = Vec::new();
    let mut missing = 0u64;
    for h in &layout.loads {
        // read_layout checked paddr + memsz; filesz <= memsz.
        let in_file = if fits(h.offset, h.filesz, layout.file_len) {
            h.filesz
        } else {
            // Incomplete dump: only what the file still has.
            layout.file_len.saturating_sub(h.offset).min(h.filesz)
        };
        // Saturating: 65,535 headers of up to 2^52 bytes each overflow 64 bits.
        missing = missing.saturating_add(h.filesz - in_file);
        if in_file > 0 {
            file_parts.push(Segment {
                range: PhysRange::with_len(h.paddr, in_file),
                source: SegmentSource::File {
                    file: 0,
                    offset: h.offset,
                },
            });
        }
        if in_file < h.memsz {
            zero_parts.push(Segment {
                range: PhysRange::new(h.paddr + in_file, h.paddr + h.memsz),
                source: SegmentSource::Zero,
            });
        }
    }
    file_parts.extend(zero_parts);
    let mut out: Vec<Segment> = Vec::with_capacity(file_parts.len());
    for seg in first_wins(file_parts) {
        if let Some(last) = out.last_mut() {
            let continues = last.range.end == seg.range.start
                && match (last.source, seg.source) {
                    (SegmentSource::Zero, SegmentSource::Zero) => true,
                    (
                        SegmentSource::File {
                            file: f1,
                            offset: o1,
                        },
                        SegmentSource::File {
                            file: f2,
                            offset: o2,
                        },
                    ) => f1 == f2 && o1.checked_add(last.range.len()) == Some(o2),
                    _ => false,
                };
            if continues {
                last.range.end = seg.range.end;
                continue;
            }
        }
        out.push(seg);
    }
    (out, missing)
}

/// One line for `dumpconv info` on what the PT_LOAD virtual addresses look like.
fn describe_vaddrs(loads: &[LoadHeader], qemu: bool) -> String {
    let loads: Vec<&LoadHeader> = loads.iter().filter(|h| h.memsz > 0).collect();
    if loads.is_empty() {
        return "none".into();
    }
    let virtual_loads = loads
        .iter()
        .filter(|h| h.vaddr != h.paddr && h.vaddr != 0)
        .count();
    if virtual_loads == 0 {
        return if loads.iter().all(|h| h.vaddr == 0) {
            "physical view (p_vaddr 0)".into()
        } else {
            "physical view (p_vaddr = p_paddr)".into()
        };
    }
    // Aliases: physical ranges shared by several PT_LOADs.
    let mut phys: Vec<(u64, u64)> = loads.iter().map(|h| (h.paddr, h.paddr + h.memsz)).collect();
    phys.sort_unstable();
    let mut aliases = 0usize;
    let mut max_end = 0u64;
    for (i, &(s, e)) in phys.iter().enumerate() {
        if i > 0 && s < max_end {
            aliases += 1;
        }
        max_end = max_end.max(e);
    }
    // One offset for every virtual PT_LOAD, no physical overlap, and RAM outside the
    // linear map with p_vaddr 0 or p_paddr: RAM once, with its direct-map addresses in
    // p_vaddr where it has one, as our i386 physical ELF writes it. Not a paging dump.
    let offsets: Vec<u64> = loads
        .iter()
        .filter(|h| h.vaddr != h.paddr && h.vaddr != 0)
        .map(|h| h.vaddr.wrapping_sub(h.paddr))
        .collect();
    let physical_loads = loads.len() - virtual_loads;
    if aliases == 0 && physical_loads > 0 && offsets.windows(2).all(|w| w[0] == w[1]) {
        if let Some(off) = offsets.first() {
            return format!(
                "physical view with direct-map p_vaddr ({virtual_loads} of {} PT_LOADs at \
                 p_paddr + {off:#x})",
                loads.len()
            );
        }
    }
    // QEMU's walker sets bits 63:48 for lower-half (user) addresses too
    // (docs/formats.md#elf-paging-mappings): 0xffff0xxx… in 4-level mode, 0xfe… in
    // 5-level mode.
    let noncanonical = loads
        .iter()
        .filter(|h| (h.vaddr >> 48 == 0xffff && h.vaddr & (1 << 47) == 0) || h.vaddr >> 56 == 0xfe)
        .count();
    let mut s = format!(
        "virtual ({virtual_loads} of {} PT_LOADs have p_vaddr != p_paddr{}",
        loads.len(),
        if qemu {
            ": a QEMU paging dump"
        } else {
            ": kernel mappings"
        }
    );
    if aliases > 0 {
        s.push_str(&format!("; {aliases} overlap others physically (aliases)"));
    }
    if noncanonical > 0 {
        s.push_str(&format!(
            "; {noncanonical} non-canonical, QEMU's lower-half address bug"
        ));
    }
    s.push(')');
    s
}

#[cfg(test)]
mod tests;
