//! Reader for kdump-compressed files: seekable or flattened, single or split sets,
//! header versions 0–6, 64- and 32-bit layouts, every codec crash knows.
//!
//! What the reader keeps in memory: the RAM ranges (runs of the 1st bitmap), each part's
//! slice of the 2nd bitmap with a prefix count per 4096 PFNs (as crash does), the
//! flattened record tables, and a 64-page cache of decoded pages. Page descriptors are
//! read on demand.
//!
//! Pages that are RAM but whose contents the file does not hold are reported, never
//! faked: [`Error::PageUnavailable`] with "excluded from the dump" (1st bit set, 2nd
//! clear) or "lost (incomplete dump)" (descriptor never written: offset 0, or past the
//! end of a dump marked incomplete).
//!
//! ## Choosing the 32- or 64-bit layout
//! The layout follows the *dumped* machine and the file does not say which it is: QEMU
//! writes its own target's name in `utsname.machine` ("x86_64" from qemu-system-x86_64
//! even for a 32-bit guest) and takes the layout from its ELF class, which is 64-bit for
//! every PC guest: a qemu-system-i386 kdump says "i686" with the 64-bit layout
//! (docs/formats.md#kdump-layout-choice). So the machine string only sets the order in
//! which both layouts are tried ("i?86" → 32-bit first), and a layout is
//! accepted only if its fields are plausible: `block_size` a power of two between 512
//! and 16 MiB, `bitmap_blocks` > 0, and `sub_hdr_size` > 0 for header versions ≥ 1. The
//! two layouts disagree on where those fields are (they move by 12 bytes), and the bytes
//! each layout sees in the other's place are zeros or timestamps in practice, so at most
//! one passes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dumpconv_core::memory::read_in_pieces;
use dumpconv_core::{Arch, Dump, Error, Extent, PhysRange, PhysicalMemory, Result, VmcoreInfo};

use super::codec::{decompress_page, Codec};
use super::layout::{
    bit, DiskDumpHeader, Layout, PageDesc, SubHeader, Utsname, DUMP_DH_COMPRESSED_INCOMPLETE,
    DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_SNAPPY, DUMP_DH_COMPRESSED_ZLIB,
    DUMP_DH_COMPRESSED_ZSTD, DUMP_DH_EXCLUDED_VMEMMAP, MACHINE_OFFSET, PAGE_DESC_SIZE,
    SIG_DISKDUMP, SIG_KDUMP,
};
use crate::elf::note::parse_notes;
use crate::flattened::{self, MaybeFlat};

const FORMAT: &str = "kdump";

/// PFNs per prefix-count section (crash's `BITMAP_SECT_LEN`).
const SECT_BITS: u64 = 4096;
const SECT_BYTES: usize = (SECT_BITS / 8) as usize;

/// Decoded pages kept per dump (direct-mapped by PFN).
const CACHE_SLOTS: usize = 64;

const WHY_EXCLUDED: &str = "excluded from the dump";
const WHY_LOST: &str = "lost (incomplete dump)";
const WHY_NO_PART: &str = "in no file of the split set (a part is missing)";

/// Machine names of architectures whose dumps dumpconv cannot interpret (their layout
/// or byte order differs). Empty or unknown names are not rejected (QEMU, old tools).
const FOREIGN_MACHINES: &[&str] = &[
    "arm",
    "ppc",
    "s390",
    "mips",
    "riscv",
    "sparc",
    "loongarch",
    "ia64",
    "alpha",
];

/// Does the start of a file look like a kdump-compressed file? True for the
/// `"KDUMP   "` and `"DISKDUMP"` signatures, and for a flattened file unless its first
/// record is an ELF header (makedumpfile -F -E writes flattened ELF).
pub fn probe(head: &[u8]) -> bool {
    if head.starts_with(&SIG_KDUMP) || head.starts_with(&SIG_DISKDUMP) {
        return true;
    }
    if flattened::is_flattened(head) {
        return match flattened::first_record(head) {
            Some((0, payload)) if payload.len() >= 4 => !payload.starts_with(b"\x7fELF"),
            _ => true,
        };
    }
    false
}

/// [`probe`] in the shape `detect::PROBES` wants.
pub fn probe_head(head: &[u8], _file_len: u64) -> bool {
    probe(head)
}

/// [`open_kdump`] for one path, in the shape `detect::PROBES` wants (a split set needs
/// all its files: call [`open_kdump`] with every path).
pub fn open(path: &Path, _opts: &crate::options::OpenOptions) -> Result<Dump> {
    open_kdump(&[path.to_path_buf()])
}

/// One file of the dump (a whole dump, or one part of a split set).
#[derive(Debug)]
struct Part {
    src: MaybeFlat,
    /// PFNs `[start_pfn, end_pfn)` whose descriptors this file holds.
    start_pfn: u64,
    end_pfn: u64,
    /// 2nd-bitmap bits for `start_pfn..end_pfn`, re-based so bit 0 is `start_pfn`.
    dumpable: Vec<u8>,
    /// Set bits of `dumpable` before each 4096-bit section.
    prefix: Vec<u64>,
    /// File offset of the first page descriptor.
    desc_off: u64,
    /// Header says incomplete, or the flattened stream has no end marker.
    incomplete: bool,
}

impl Part {
    /// Index of `rel`'s descriptor: set bits before it.
    fn desc_index(&self, rel: u64) -> u64 {
        let sect = (rel / SECT_BITS) as usize;
        let base = self.prefix.get(sect).copied().unwrap_or(0);
        let first = sect * SECT_BYTES;
        let byte = (rel / 8) as usize;
        let whole: u64 = self
            .dumpable
            .get(first..byte)
            .unwrap_or(&[])
            .iter()
            .map(|b| u64::from(b.count_ones()))
            .sum();
        let partial = self.dumpable.get(byte).map_or(0, |b| {
            u64::from((b & ((1u8 << (rel % 8)) - 1)).count_ones())
        });
        base + whole + partial
    }
}

/// One cached page: its PFN and decoded bytes.
type CacheSlot = Option<(u64, Box<[u8]>)>;

/// The physical memory of an opened kdump file or split set.
pub struct KdumpMemory {
    parts: Vec<Part>,
    ranges: Vec<PhysRange>,
    block_size: u64,
    cache: Vec<Mutex<CacheSlot>>,
}

impl std::fmt::Debug for KdumpMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KdumpMemory")
            .field("parts", &self.parts.len())
            .field("ranges", &self.ranges.len())
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl KdumpMemory {
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Decode page `pfn` into `out` (one block), through the cache.
    fn page(&self, pfn: u64, out: &mut [u8]) -> Result<()> {
        let slot = &self.cache[(pfn % CACHE_SLOTS as u64) as usize];
        if let Ok(g) = slot.lock() {
            if let Some((p, data)) = g.as_ref() {
                if *p == pfn {
                    out.copy_from_slice(data);
                    return Ok(());
                }
            }
        }
        // Decode without holding the lock so other threads keep going.
        self.load_page(pfn, out)?;
        if let Ok(mut g) = slot.lock() {
            match g.as_mut() {
                // Reuse the slot's buffer: no allocation per page on sequential reads.
                Some((p, data)) if data.len() == out.len() => {
                    *p = pfn;
                    data.copy_from_slice(out);
                }
                _ => *g = Some((pfn, out.to_vec().into_boxed_slice())),
            }
        }
        Ok(())
    }

    fn load_page(&self, pfn: u64, out: &mut [u8]) -> Result<()> {
        let bs = self.block_size;
        let paddr = pfn * bs;
        let i = self.parts.partition_point(|p| p.end_pfn <= pfn);
        let part = match self.parts.get(i) {
            Some(p) if p.start_pfn <= pfn => p,
            _ => {
                return Err(Error::PageUnavailable {
                    paddr,
                    why: WHY_NO_PART,
                })
            }
        };
        let rel = pfn - part.start_pfn;
        if !bit(&part.dumpable, rel) {
            return Err(Error::PageUnavailable {
                paddr,
                why: WHY_EXCLUDED,
            });
        }
        let path = &part.src.path;
        let lost = Error::PageUnavailable {
            paddr,
            why: WHY_LOST,
        };
        let desc_at = part
            .desc_index(rel)
            .checked_mul(PAGE_DESC_SIZE as u64)
            .and_then(|o| o.checked_add(part.desc_off))
            .ok_or_else(|| {
                Error::format(path.clone(), None, FORMAT, "descriptor offset overflows")
            })?;
        let mut raw = [0u8; PAGE_DESC_SIZE];
        if let Err(e) = part.src.read_exact_at(desc_at, &mut raw) {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(Error::io(path.clone(), e));
            }
            if part.incomplete {
                return Err(lost);
            }
            return Err(Error::format(
                path.clone(),
                desc_at,
                FORMAT,
                format!(
                    "the descriptor of physical page {paddr:#x} lies past the end of the \
                     file ({} bytes; truncated file?)",
                    part.src.len()
                ),
            ));
        }
        let d = PageDesc::decode(&raw).map_err(|e| e.at(path, desc_at, FORMAT))?;
        let bad = |msg: String| Error::format(path.clone(), desc_at, FORMAT, msg);
        if d.offset == 0 {
            // makedumpfile writes descriptor and data in pairs: a descriptor left as
            // zeros was never written. That happens in a dump cut short; in one that
            // says it is complete, it is a lie (issue #17).
            if part.incomplete {
                return Err(lost);
            }
            return Err(bad(format!(
                "page {paddr:#x}: the descriptor has data offset 0 (never written), but \
                 the dump is not marked incomplete (corrupt descriptor)"
            )));
        }
        if d.offset < 0 {
            return Err(bad(format!(
                "page {paddr:#x}: descriptor has a negative data offset {}",
                d.offset
            )));
        }
        if d.size == 0 {
            return Err(bad(format!(
                "page {paddr:#x}: descriptor has a zero data size"
            )));
        }
        if u64::from(d.size) > bs {
            return Err(bad(format!(
                "page {paddr:#x}: descriptor data size {} is larger than a block ({bs})",
                d.size
            )));
        }
        let data_at = d.offset as u64;
        // Page data follows the headers, bitmaps and the descriptors before this one
        // (makedumpfile and dumpconv write the data after the whole table).
        if data_at < desc_at.saturating_add(PAGE_DESC_SIZE as u64) {
            return Err(bad(format!(
                "page {paddr:#x}: the descriptor puts the data at offset {data_at:#x}, \
                 inside the headers, bitmaps or descriptor table (page data starts after \
                 the descriptors, at {:#x} or later): corrupt descriptor",
                desc_at + PAGE_DESC_SIZE as u64
            )));
        }
        let codec_bits = d.flags
            & (DUMP_DH_COMPRESSED_ZLIB
                | DUMP_DH_COMPRESSED_LZO
                | DUMP_DH_COMPRESSED_SNAPPY
                | DUMP_DH_COMPRESSED_ZSTD);
        if codec_bits.count_ones() > 1 {
            return Err(bad(format!(
                "page {paddr:#x}: the descriptor's flags {:#x} name more than one codec \
                 (corrupt descriptor)",
                d.flags
            )));
        }
        let mut data = vec![0u8; d.size as usize];
        if let Err(e) = part.src.read_exact_at(data_at, &mut data) {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                return Err(Error::io(path.clone(), e));
            }
            if part.incomplete {
                return Err(lost);
            }
            return Err(bad(format!(
                "page {paddr:#x}: data at offset {data_at:#x} ({} bytes) runs past the end \
                 of the file ({} bytes)",
                d.size,
                part.src.len()
            )));
        }
        let codec = Codec::from_page_flags(d.flags);
        decompress_page(codec, &data, out).map_err(|m| {
            Error::format(
                path.clone(),
                data_at,
                FORMAT,
                format!("page {paddr:#x}: {m}"),
            )
        })
    }
}

impl PhysicalMemory for KdumpMemory {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// Pages the 2nd bitmap leaves out are [`Extent::Missing`] (reading them fails with
    /// "excluded from the dump"); the others are data, read from the descriptors.
    fn extent(&self, paddr: u64, max: u64) -> Extent {
        let bs = self.block_size;
        let pfn = paddr / bs;
        let i = self.parts.partition_point(|p| p.end_pfn <= pfn);
        let part = match self.parts.get(i) {
            Some(p) if p.start_pfn <= pfn => p,
            // In no part of a split set: reading says so.
            _ => return Extent::Data(max),
        };
        let rel = pfn - part.start_pfn;
        let pages = ((paddr % bs).saturating_add(max))
            .div_ceil(bs)
            .min(part.end_pfn - pfn);
        let dumpable = bit(&part.dumpable, rel);
        let uniform = if dumpable { 0xff } else { 0 };
        let mut n = 1u64;
        while n < pages {
            let at = rel + n;
            if at.is_multiple_of(8)
                && pages - n >= 8
                && part.dumpable.get((at / 8) as usize) == Some(&uniform)
            {
                n += 8;
            } else if bit(&part.dumpable, at) == dumpable {
                n += 1;
            } else {
                break;
            }
        }
        let len = (n * bs - paddr % bs).min(max);
        if dumpable {
            Extent::Data(len)
        } else {
            Extent::Missing(len)
        }
    }

    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        let bs = self.block_size;
        let mut page = Vec::new();
        read_in_pieces(paddr, buf, |addr, out| {
            if !self.is_ram(addr, 1) {
                return Err(Error::Hole { paddr: addr });
            }
            let pfn = addr / bs;
            let off = (addr % bs) as usize;
            let n = (bs as usize - off).min(out.len());
            if n == bs as usize {
                // A whole page: decode straight into the caller's buffer.
                self.page(pfn, &mut out[..n])?;
            } else {
                page.resize(bs as usize, 0);
                self.page(pfn, &mut page)?;
                out[..n].copy_from_slice(&page[off..off + n]);
            }
            Ok(n)
        })
    }
}

/// Everything read from one file's headers.
struct Parsed {
    part: Part,
    header: DiskDumpHeader,
    sub: SubHeader,
    layout: Layout,
    max_mapnr: u64,
    /// The 1st bitmap (RAM), `ceil(max_mapnr / 8)` bytes.
    ram_bitmap: Vec<u8>,
    split: bool,
    notes: Vec<dumpconv_core::Note>,
    vmcoreinfo: Option<VmcoreInfo>,
    flat_records: Option<(usize, bool)>,
}

fn fmt_err(path: &Path, offset: impl Into<Option<u64>>, msg: impl Into<String>) -> Error {
    Error::format(path.to_path_buf(), offset, FORMAT, msg)
}

fn read_exact(src: &MaybeFlat, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let end = offset.checked_add(len).filter(|&e| e <= src.len());
    if end.is_none() || len > src.stored_len() {
        return Err(fmt_err(
            &src.path,
            offset,
            format!(
                "{what} ({len} bytes at offset {offset:#x}) runs past the end of the file \
                 ({} bytes)",
                src.len()
            ),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    src.read_exact_at(offset, &mut buf)
        .map_err(|e| Error::io(src.path.clone(), e))?;
    Ok(buf)
}

fn plausible(h: &DiskDumpHeader) -> bool {
    let bs = h.block_size;
    (512..=1 << 24).contains(&bs)
        && (bs as u32).is_power_of_two()
        && h.bitmap_blocks > 0
        && h.sub_hdr_size >= 0
        && (h.header_version < 1 || h.sub_hdr_size > 0)
}

fn machine_of(head: &[u8]) -> String {
    let mut u = Utsname::default();
    if let Some(s) = head.get(MACHINE_OFFSET..MACHINE_OFFSET + 65) {
        u.fields[Utsname::MACHINE].copy_from_slice(s);
    }
    u.get(Utsname::MACHINE)
}

/// Whether the notes hold an NT_PRSTATUS of the aarch64 `elf_prstatus` size.
fn looks_aarch64(notes: &[dumpconv_core::Note]) -> bool {
    notes.iter().any(|n| {
        n.kind() == dumpconv_core::note::NoteKind::PrStatus
            && n.desc.len() == crate::notes::prstatus::SIZE_AARCH64
    })
}

fn is_i386_name(m: &str) -> bool {
    let b = m.as_bytes();
    b.len() == 4 && b[0] == b'i' && b[2..] == *b"86" && (b'3'..=b'6').contains(&b[1])
}

/// Pick the layout (see the module comment).
fn pick_layout(head: &[u8], path: &Path) -> Result<(Layout, DiskDumpHeader)> {
    let machine = machine_of(head);
    let order = if is_i386_name(&machine) {
        [Layout::Bits32, Layout::Bits64]
    } else {
        [Layout::Bits64, Layout::Bits32]
    };
    for layout in order {
        // A file too short for one layout's header may still hold the other's.
        if let Ok(h) = DiskDumpHeader::decode(head, layout) {
            if plausible(&h) {
                return Ok((layout, h));
            }
        }
    }
    let fields = |layout: Layout| match DiskDumpHeader::decode(head, layout) {
        Ok(h) => format!(
            "block_size {}, sub_hdr_size {}, bitmap_blocks {}",
            h.block_size, h.sub_hdr_size, h.bitmap_blocks
        ),
        Err(e) => e.to_string(),
    };
    Err(fmt_err(
        path,
        0u64,
        format!(
            "header fields are not plausible in either layout (64-bit: {}; 32-bit: {})",
            fields(Layout::Bits64),
            fields(Layout::Bits32)
        ),
    ))
}

/// Copy bits `[start, end)` of `bm` into a new bitmap starting at bit 0.
fn slice_bits(bm: &[u8], start: u64, end: u64) -> Vec<u8> {
    let n = end.saturating_sub(start);
    let mut out = vec![0u8; n.div_ceil(8) as usize];
    let shift = (start % 8) as u32;
    let first = (start / 8) as usize;
    for (i, o) in out.iter_mut().enumerate() {
        let lo = bm.get(first + i).copied().unwrap_or(0);
        let hi = bm.get(first + i + 1).copied().unwrap_or(0);
        *o = if shift == 0 {
            lo
        } else {
            (lo >> shift) | (hi << (8 - shift))
        };
    }
    // Bits past `n` belong to the next part.
    if !n.is_multiple_of(8) {
        if let Some(last) = out.last_mut() {
            *last &= (1u8 << (n % 8)) - 1;
        }
    }
    out
}

fn prefix_counts(bm: &[u8]) -> Vec<u64> {
    let mut acc = 0u64;
    bm.chunks(SECT_BYTES)
        .map(|c| {
            let before = acc;
            acc += c.iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
            before
        })
        .collect()
}

/// Runs of set bits as byte ranges.
fn ram_ranges(bm: &[u8], max_mapnr: u64, bs: u64) -> Vec<PhysRange> {
    let mut out = Vec::new();
    let mut run: Option<u64> = None;
    let mut pfn = 0u64;
    while pfn < max_mapnr {
        // Skip whole 0x00 / 0xff bytes quickly; dumps are mostly long runs.
        if pfn.is_multiple_of(8) && pfn + 8 <= max_mapnr {
            let b = bm.get((pfn / 8) as usize).copied().unwrap_or(0);
            if b == 0 && run.is_none() || b == 0xff && run.is_some() {
                pfn += 8;
                continue;
            }
        }
        let set = bit(bm, pfn);
        match (set, run) {
            (true, None) => run = Some(pfn),
            (false, Some(s)) => {
                out.push(PhysRange::new(s * bs, pfn * bs));
                run = None;
            }
            _ => {}
        }
        pfn += 1;
    }
    if let Some(s) = run {
        out.push(PhysRange::new(s * bs, max_mapnr * bs));
    }
    out
}

fn parse_file(path: &Path) -> Result<Parsed> {
    let src = MaybeFlat::open(path)?;
    let len = src.len();
    let flat_records = src
        .flat
        .as_ref()
        .map(|ix| (ix.records().len(), ix.complete()));
    let head_len = len.min(4096);
    let head = read_exact(&src, 0, head_len, "main header")?;
    if !(head.starts_with(&SIG_KDUMP) || head.starts_with(&SIG_DISKDUMP)) {
        let what = if src.flat.is_some() && head.starts_with(b"\x7fELF") {
            "flattened ELF file (makedumpfile -F -E): reassemble it with \
             `makedumpfile -R out < file`, then open the result"
        } else if flat_records.is_some_and(|(_, complete)| !complete) {
            "flattened stream has no end marker and no kdump header at offset 0: it was \
             cut short before the records that hold the header"
        } else if src.flat.is_some() {
            "flattened file does not hold a kdump file at offset 0"
        } else {
            "no \"KDUMP   \" or \"DISKDUMP\" signature"
        };
        return Err(fmt_err(path, 0u64, what));
    }
    if head.len() < Layout::Bits32.header_size() {
        return Err(fmt_err(
            path,
            0u64,
            format!("file has {} bytes, too few for a kdump header", head.len()),
        ));
    }
    let (layout, header) = pick_layout(&head, path).map_err(|e| match e {
        Error::Format { location, msg, .. }
            if flat_records.is_some_and(|(_, complete)| !complete) =>
        {
            fmt_err(
                path,
                location.offset,
                format!(
                    "{msg} (the flattened stream has no end marker: cut short before \
                         the records that hold the header?)"
                ),
            )
        }
        e => e,
    })?;
    let machine = header.utsname.get(Utsname::MACHINE);
    if let Some(m) = FOREIGN_MACHINES.iter().find(|m| machine.starts_with(*m)) {
        return Err(Error::Unsupported(format!(
            "{}: kdump file of a {machine} machine ({m}); dumpconv reads x86 and aarch64 \
             dumps only",
            path.display()
        )));
    }
    let hv = header.header_version;
    if hv < 0 {
        return Err(fmt_err(path, 8u64, format!("negative header version {hv}")));
    }
    let bs = header.block_size as u64;
    if len < bs {
        return Err(fmt_err(
            path,
            0u64,
            format!("file has {len} bytes, less than one block ({bs})"),
        ));
    }
    let sub = if hv >= 1 {
        let raw = read_exact(&src, bs, layout.sub_header_size() as u64, "sub header")?;
        SubHeader::decode(&raw, layout)
            .map_err(|e| e.at(path, bs, FORMAT))?
            .for_version(hv)
    } else {
        SubHeader::default()
    };
    let max_mapnr = if hv >= 6 && sub.max_mapnr_64 != 0 {
        sub.max_mapnr_64
    } else {
        u64::from(header.max_mapnr)
    };
    if max_mapnr.checked_mul(bs).is_none() {
        return Err(fmt_err(
            path,
            None,
            format!("max_mapnr {max_mapnr:#x} pages of {bs} bytes overflows 64 bits"),
        ));
    }
    let split = hv >= 2 && sub.split != 0;
    let (start_pfn, end_pfn) = if split {
        if hv >= 6 {
            (sub.start_pfn_64, sub.end_pfn_64)
        } else {
            (sub.start_pfn, sub.end_pfn)
        }
    } else {
        (0, max_mapnr)
    };
    let end_pfn = end_pfn.min(max_mapnr);
    if start_pfn > end_pfn {
        return Err(fmt_err(
            path,
            bs,
            format!("split range starts at PFN {start_pfn:#x}, after its end {end_pfn:#x}"),
        ));
    }

    // Bitmaps (docs/formats.md#kdump-bitmaps): crash takes two bitmaps iff bitmap_blocks
    // covers two block-aligned copies, the 2nd at exactly half of the area.
    let bitmap_off = (1 + header.sub_hdr_size as u64) * bs;
    let area = u64::from(header.bitmap_blocks) * bs;
    if bitmap_off
        .checked_add(area)
        .is_none_or(|e| e > len || area > src.stored_len())
    {
        return Err(fmt_err(
            path,
            bitmap_off,
            format!(
                "bitmap area ({} blocks at offset {bitmap_off:#x}) runs past the end of the \
                 file ({len} bytes)",
                header.bitmap_blocks
            ),
        ));
    }
    let need = max_mapnr.div_ceil(8);
    let two = u64::from(header.bitmap_blocks) >= 2 * need.div_ceil(bs);
    if !two && area < need {
        return Err(fmt_err(
            path,
            bitmap_off,
            format!(
                "bitmap_blocks {} is too small for max_mapnr {max_mapnr} ({need} bytes per \
                 bitmap)",
                header.bitmap_blocks
            ),
        ));
    }
    let ram_bitmap = read_exact(&src, bitmap_off, need, "1st bitmap")?;
    let dumpable_full = if two {
        read_exact(&src, bitmap_off + area / 2, need, "2nd bitmap")?
    } else {
        ram_bitmap.clone()
    };
    let dumpable = slice_bits(&dumpable_full, start_pfn, end_pfn);
    drop(dumpable_full);
    let prefix = prefix_counts(&dumpable);
    let desc_off = bitmap_off + area;

    // Notes and VMCOREINFO.
    let mut notes = Vec::new();
    if hv >= 4 && sub.offset_note != 0 && sub.size_note != 0 {
        let blob = read_exact(&src, sub.offset_note, sub.size_note, "note area")?;
        notes = parse_notes(&blob, path, sub.offset_note)?;
    }
    let vmcoreinfo = if hv >= 3 && sub.offset_vmcoreinfo != 0 && sub.size_vmcoreinfo != 0 {
        let raw = read_exact(
            &src,
            sub.offset_vmcoreinfo,
            sub.size_vmcoreinfo,
            "VMCOREINFO",
        )?;
        Some(VmcoreInfo::parse(&raw))
    } else {
        notes
            .iter()
            .find(|n| n.kind() == dumpconv_core::note::NoteKind::VmcoreInfo)
            .map(|n| VmcoreInfo::parse(&n.desc))
    };

    let incomplete = header.is_incomplete() || flat_records.is_some_and(|(_, c)| !c);
    Ok(Parsed {
        part: Part {
            src,
            start_pfn,
            end_pfn,
            dumpable,
            prefix,
            desc_off,
            incomplete,
        },
        header,
        sub,
        layout,
        max_mapnr,
        ram_bitmap,
        split,
        notes,
        vmcoreinfo,
        flat_records,
    })
}

fn status_words(status: u32, kdump: bool) -> String {
    let mut w = Vec::new();
    for (bitv, name) in [
        (super::layout::DUMP_DH_COMPRESSED_ZLIB, "zlib"),
        (super::layout::DUMP_DH_COMPRESSED_LZO, "lzo"),
        (super::layout::DUMP_DH_COMPRESSED_SNAPPY, "snappy"),
        (super::layout::DUMP_DH_COMPRESSED_ZSTD, "zstd"),
        (DUMP_DH_EXCLUDED_VMEMMAP, "excluded-vmemmap"),
    ] {
        if status & bitv != 0 {
            w.push(name);
        }
    }
    if status & DUMP_DH_COMPRESSED_INCOMPLETE != 0 {
        w.push(if kdump { "INCOMPLETE" } else { "compressed" });
    }
    format!("{status:#x} ({})", w.join(", "))
}

/// Open a kdump-compressed dump: one file, or every file of a split set (any order).
pub fn open_kdump(paths: &[PathBuf]) -> Result<Dump> {
    let first_path = paths
        .first()
        .ok_or_else(|| Error::invalid("no kdump file given"))?;
    let mut parsed = paths
        .iter()
        .map(|p| parse_file(p))
        .collect::<Result<Vec<_>>>()?;
    let first = &parsed[0];
    let (bs, max_mapnr, layout, split) = (
        first.header.block_size as u64,
        first.max_mapnr,
        first.layout,
        first.split,
    );
    for p in &parsed[1..] {
        let path = &p.part.src.path;
        if !split || !p.split {
            return Err(Error::invalid(format!(
                "{}: several kdump files were given, but not all are parts of a split \
                 dump (split flag in the sub header)",
                path.display()
            )));
        }
        if p.header.block_size as u64 != bs || p.max_mapnr != max_mapnr || p.layout != layout {
            return Err(fmt_err(
                path,
                0u64,
                format!(
                    "split part does not match {} (block size, max_mapnr or layout \
                     differ): parts of different dumps?",
                    first_path.display()
                ),
            ));
        }
    }
    parsed.sort_by_key(|p| p.part.start_pfn);
    for w in parsed.windows(2) {
        if w[0].part.end_pfn > w[1].part.start_pfn {
            return Err(fmt_err(
                &w[1].part.src.path,
                None,
                format!(
                    "split part covers PFNs {:#x}..{:#x}, overlapping {} ({:#x}..{:#x})",
                    w[1].part.start_pfn,
                    w[1].part.end_pfn,
                    w[0].part.src.path.display(),
                    w[0].part.start_pfn,
                    w[0].part.end_pfn
                ),
            ));
        }
    }

    // Metadata comes from the file the user named first (all parts carry the same).
    let lead = parsed
        .iter()
        .position(|p| p.part.src.path == *first_path)
        .unwrap_or(0);
    let ranges = ram_ranges(&parsed[lead].ram_bitmap, max_mapnr, bs);
    let h = parsed[lead].header.clone();
    let sub = parsed[lead].sub.clone();
    let notes = std::mem::take(&mut parsed[lead].notes);
    let vmcoreinfo = parsed[lead].vmcoreinfo.take();
    let machine = h.utsname.get(Utsname::MACHINE);
    let arch = if layout == Layout::Bits32 || is_i386_name(&machine) {
        Arch::I386
    } else if machine == "aarch64" || (!machine.starts_with("x86") && looks_aarch64(&notes)) {
        // QEMU writes "Unknown" for arm64 guests: its NT_PRSTATUS notes have the
        // aarch64 size.
        Arch::AARCH64
    } else {
        Arch::X86_64
    };

    let mut details: Vec<(String, String)> = Vec::new();
    let mut d = |k: &str, v: String| details.push((k.to_string(), v));
    d(
        "signature",
        String::from_utf8_lossy(&h.signature).trim_end().to_string(),
    );
    d("header version", h.header_version.to_string());
    d("layout", layout.name().to_string());
    d(
        "machine",
        if machine.is_empty() {
            "(empty)".to_string()
        } else {
            machine.clone()
        },
    );
    let release = h.utsname.get(Utsname::RELEASE);
    if !release.is_empty() {
        d("release", release);
    }
    d("codec", Codec::from_status(h.status).name().to_string());
    d("block size", bs.to_string());
    d("max_mapnr", format!("{max_mapnr} ({max_mapnr:#x})"));
    d("status", status_words(h.status, h.is_kdump()));
    if h.nr_cpus != 0 {
        d("nr_cpus", h.nr_cpus.to_string());
    }
    if h.header_version >= 1 {
        d("dump level", sub.dump_level.to_string());
        d("phys_base", format!("{:#x}", sub.phys_base));
    }
    if h.header_version >= 5 && sub.size_eraseinfo != 0 {
        d(
            "eraseinfo",
            format!(
                "{} bytes at {:#x} (not applied)",
                sub.size_eraseinfo, sub.offset_eraseinfo
            ),
        );
    }
    if h.timestamp_sec != 0 {
        d("timestamp", format!("{} s", h.timestamp_sec));
    }
    for p in &parsed {
        let name = p.part.src.path.display();
        if split {
            d(
                "split",
                format!(
                    "{name}: PFNs {:#x}..{:#x}",
                    p.part.start_pfn, p.part.end_pfn
                ),
            );
        }
        if let Some((n, complete)) = p.flat_records {
            d(
                "container",
                format!(
                    "{name}: flattened, {n} records{}",
                    if complete {
                        ""
                    } else {
                        ", no end marker (cut stream: treated as incomplete)"
                    }
                ),
            );
        }
        if p.part.incomplete {
            d(
                "incomplete",
                format!("{name}: pages whose descriptors were never written read as lost"),
            );
            // Said on every conversion, not only by `info`: the output lacks pages.
            d(
                "warning",
                if p.flat_records.is_some_and(|(_, complete)| !complete) {
                    format!(
                        "{name}: the flattened stream has no end marker (offset -1, size \
                         -1): it was cut short; pages whose records are missing are lost \
                         and the output lacks them"
                    )
                } else {
                    format!(
                        "{name}: the dump is marked incomplete (status \
                         DUMP_DH_COMPRESSED_INCOMPLETE): pages never written are lost and \
                         the output lacks them"
                    )
                },
            );
        }
    }
    if split {
        let mut at = 0;
        for p in &parsed {
            if p.part.start_pfn > at {
                d(
                    "missing part",
                    format!("no file holds PFNs {at:#x}..{:#x}", p.part.start_pfn),
                );
            }
            at = at.max(p.part.end_pfn);
        }
        if at < max_mapnr {
            d(
                "missing part",
                format!("no file holds PFNs {at:#x}..{max_mapnr:#x}"),
            );
        }
    }
    let dumpable: u64 = parsed
        .iter()
        .flat_map(|p| p.part.dumpable.iter())
        .map(|b| u64::from(b.count_ones()))
        .sum();
    d("dumpable pages", dumpable.to_string());
    // RAM pages (1st bitmap) without data: left out by a filter (dump level), or lost.
    let ram_pages: u64 = ranges.iter().map(|r| r.len() / bs).sum();
    if ram_pages > dumpable {
        d("excluded pages", (ram_pages - dumpable).to_string());
    }

    let (cpus, warnings) = crate::notes::decode_cpus(&notes, arch);
    for w in warnings {
        details.push(("warning".to_string(), w));
    }

    let memory = KdumpMemory {
        parts: parsed.into_iter().map(|p| p.part).collect(),
        ranges,
        block_size: bs,
        cache: (0..CACHE_SLOTS).map(|_| Mutex::new(None)).collect(),
    };
    Ok(Dump {
        path: first_path.clone(),
        format: FORMAT,
        details,
        arch: Some(arch),
        memory: Arc::new(memory),
        cpus,
        notes,
        vmcoreinfo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_bits_at_any_offset() {
        let bm = [0b1011_0110u8, 0b0000_1111, 0xff];
        let s = slice_bits(&bm, 3, 13);
        // bits 3..13 of bm: 0,1,1,0,1 (bits 3-7 of byte 0) then 1,1,1,1,0 (bits 0-4 of byte 1)
        assert_eq!(s, vec![0b1111_0110, 0b0000_0001]);
        assert_eq!(slice_bits(&bm, 8, 24), vec![0b0000_1111, 0xff]);
        assert_eq!(slice_bits(&bm, 8, 8), Vec::<u8>::new());
    }

    #[test]
    fn runs_of_set_bits_become_ranges() {
        let mut bm = vec![0u8; 4];
        super::super::layout::set_bits(&mut bm, 1, 3);
        super::super::layout::set_bits(&mut bm, 8, 30);
        assert_eq!(
            ram_ranges(&bm, 32, 4096),
            vec![
                PhysRange::new(4096, 3 * 4096),
                PhysRange::new(8 * 4096, 30 * 4096)
            ]
        );
        assert_eq!(ram_ranges(&[0xff], 5, 10), vec![PhysRange::new(0, 50)]);
    }

    #[test]
    fn descriptor_index_counts_earlier_bits() {
        let mut bm = vec![0u8; 1200];
        super::super::layout::set_bits(&mut bm, 0, 9000);
        let prefix = prefix_counts(&bm);
        assert_eq!(prefix, vec![0, 4096, 8192]);
        let part = Part {
            src: MaybeFlat::open(Path::new("/dev/null")).unwrap(),
            start_pfn: 0,
            end_pfn: 9600,
            dumpable: bm,
            prefix,
            desc_off: 0,
            incomplete: false,
        };
        assert_eq!(part.desc_index(0), 0);
        assert_eq!(part.desc_index(4097), 4097);
        assert_eq!(part.desc_index(8999), 8999);
    }

    #[test]
    fn probe_accepts_signatures_and_rejects_flattened_elf() {
        assert!(probe(b"KDUMP   \x06\0\0\0"));
        assert!(probe(b"DISKDUMP"));
        assert!(!probe(b"\x7fELF"));
        let mut f = flattened::flat_header();
        f.extend_from_slice(&flattened::record_header(0, 8));
        f.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
        assert!(!probe(&f));
        let mut f = flattened::flat_header();
        f.extend_from_slice(&flattened::record_header(0, 8));
        f.extend_from_slice(b"KDUMP   ");
        assert!(probe(&f));
    }
}
