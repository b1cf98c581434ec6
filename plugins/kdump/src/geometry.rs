//! Where everything goes in the output file, decided before any page is read, and the
//! header blocks themselves.
//!
//! ```text
//! 0                    main header (1 block)
//! bs                   sub header + note blob (sub_hdr_size blocks)
//! bitmap_off           1st bitmap (RAM) | 2nd bitmap (dumpable), each block aligned
//! desc_off             one 24-byte descriptor per dumpable page, in PFN order
//! zero_off             the shared zero block (not written with exclude-zero)
//! data_off             page data, in PFN order
//! ```
//! The descriptor table has exactly one slot per page of the 2nd bitmap as it is known
//! before compression ([`Geometry::place`]): every page of the plan, less the pages known
//! to drop out before any is compressed (with exclude-zero: holes of the input and zero
//! pages, found by a first pass). So the data follows the table and the file has no
//! hole. Only a page that drops out later (one the input cannot supply after all) leaves
//! a slot unused at the table's end; readers find descriptors by counting 2nd-bitmap
//! bits and data by each descriptor's offset, so that stays a valid file.

use dumpconv_core::note::NoteKind;
use dumpconv_core::{Arch, DumpPlan, Error, Result};
use dumpconv_formats::elf::note::{encode_notes, note_size};
use dumpconv_formats::kdump::layout::{
    bitmap_len, DiskDumpHeader, Layout, SubHeader, Utsname, HEADER_VERSION, PAGE_DESC_SIZE,
    SIG_KDUMP,
};

use crate::bitmap::PageBitmap;
use crate::options::KdumpOptions;
use crate::utsname::plan_vmcoreinfo;

/// The machine name crash expects for each arch: the architecture table's `uname -m`
/// (docs/formats.md#kdump-crash: crash recognises only the exact "i686" prefix for 32-bit x86).
pub fn machine_name(arch: Arch) -> std::borrow::Cow<'static, str> {
    arch.utsname_machine()
}

/// Bitmap size (each) above which sparse RAM is refused; see [`Geometry::new`].
const MAX_SPARSE_BITMAP: u64 = 8 << 20;

pub(crate) struct Geometry {
    pub layout: Layout,
    pub bs: u64,
    /// Merged runs of PFNs `[start, end)` touched by the plan's ranges.
    pub page_runs: Vec<(u64, u64)>,
    pub bitmap_off: u64,
    /// Bytes of one bitmap (block aligned).
    pub bitmap_len: u64,
    pub desc_off: u64,
    /// Descriptor slots in the table (set by [`Geometry::place`]).
    pub desc_slots: u64,
    pub zero_off: u64,
    /// Where the first page's data goes.
    pub data_off: u64,
    pub header: DiskDumpHeader,
    /// Sub header and notes, padded to whole blocks.
    pub sub_blocks: Vec<u8>,
    /// The 1st bitmap (`bitmap_len` bytes in the file): the plan's ranges and the pages
    /// its filter left out.
    pub ram_bitmap: PageBitmap,
    /// The 2nd bitmap before any page drops out while writing: the plan's ranges.
    pub data_bitmap: PageBitmap,
    exclude_zero: bool,
}

impl Geometry {
    pub(crate) fn new(plan: &DumpPlan, opts: &KdumpOptions) -> Result<Geometry> {
        let bs = plan.page_size;
        if !bs.is_power_of_two() || !(512..=1 << 24).contains(&bs) {
            return Err(Error::invalid(format!(
                "kdump: page size {bs} is not a power of two between 512 and 16 MiB"
            )));
        }
        let layout = if plan.arch.is_64() {
            Layout::Bits64
        } else {
            Layout::Bits32
        };
        if plan.ranges.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(Error::invalid(
                "kdump: the plan's ranges must be sorted and must not overlap",
            ));
        }
        let mut page_runs: Vec<(u64, u64)> = Vec::new();
        for r in plan.ranges.iter().filter(|r| !r.is_empty()) {
            let (s, e) = (r.start / bs, r.end.div_ceil(bs));
            match page_runs.last_mut() {
                // A page shared by two ranges (one ends, the next starts inside it).
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => page_runs.push((s, e)),
            }
        }
        let total_pages: u64 = page_runs.iter().map(|(s, e)| e - s).sum();
        // Pages a filter left out: RAM in the 1st bitmap, not dumpable in the 2nd.
        let mut excluded_runs: Vec<(u64, u64)> = Vec::new();
        let mut dump_level = 0u8;
        if let Some(f) = &plan.filter {
            dump_level = f.dump_level;
            for r in f.excluded.iter().filter(|r| !r.is_empty()) {
                let (s, e) = (r.start / bs, r.end.div_ceil(bs));
                match excluded_runs.last_mut() {
                    Some(last) if s <= last.1 => last.1 = last.1.max(e),
                    _ => excluded_runs.push((s, e)),
                }
            }
        }
        let max_mapnr = page_runs
            .last()
            .map_or(0, |r| r.1)
            .max(excluded_runs.last().map_or(0, |r| r.1));

        let notes = encode_notes(&plan.notes);
        let sub_size = layout.sub_header_size() as u64;
        let offset_note = bs + sub_size;
        let sub_hdr_blocks = (sub_size + notes.len() as u64).div_ceil(bs);
        let bitmap_len = bitmap_len(max_mapnr, bs);
        // The bitmaps span every page up to the highest address. They are not held in
        // memory (crate::bitmap keeps the chunks with RAM, the file gets them a block at
        // a time), but the file holds them whole: bound them by the RAM they describe
        // (issue #17: one LiME page at 2^48 asked for 16 GiB of bitmaps). A real
        // machine's RAM fills a good part of its address span; RAM spread 64 times
        // thinner than that, past 8 MiB of bitmap, is refused.
        let ram_bits_len = total_pages.div_ceil(8);
        if bitmap_len > MAX_SPARSE_BITMAP && bitmap_len / 64 > ram_bits_len {
            return Err(Error::invalid(format!(
                "kdump: the input's highest RAM address {:#x} needs two bitmaps of \
                 {bitmap_len:#x} bytes each for {total_pages} pages of RAM: kdump cannot \
                 store memory this sparse without writing mostly empty bitmaps; write \
                 ELF or LiME instead (-o OUT.elf), which store only the ranges",
                max_mapnr.saturating_mul(bs).saturating_sub(1)
            )));
        }
        let bitmap_blocks = 2 * bitmap_len / bs;
        let bitmap_off = (1 + sub_hdr_blocks) * bs;
        let desc_off = bitmap_off + 2 * bitmap_len;

        // VMCOREINFO: point into the note blob at the descriptor of the first
        // VMCOREINFO note, as makedumpfile and QEMU do.
        let (mut offset_vmcoreinfo, mut size_vmcoreinfo) = (0, 0);
        let mut at = offset_note;
        for n in &plan.notes {
            if n.kind() == NoteKind::VmcoreInfo {
                offset_vmcoreinfo = at + 12 + (n.name.len() as u64 + 1).next_multiple_of(4);
                size_vmcoreinfo = n.desc.len() as u64;
                break;
            }
            at += note_size(n) as u64;
        }
        let vmci = plan_vmcoreinfo(plan);
        // NUMBER(phys_base) is decimal (the kernel prints %ld); QEMU misreads it as hex.
        let phys_base = vmci.as_ref().and_then(|v| v.phys_base()).unwrap_or(0);

        let sub = SubHeader {
            phys_base,
            dump_level: i32::from(dump_level | u8::from(opts.exclude_zero)),
            offset_vmcoreinfo,
            size_vmcoreinfo,
            offset_note: if notes.is_empty() { 0 } else { offset_note },
            size_note: notes.len() as u64,
            max_mapnr_64: max_mapnr,
            ..Default::default()
        };
        let mut sub_blocks = sub.encode(layout);
        sub_blocks.extend_from_slice(&notes);
        sub_blocks.resize((sub_hdr_blocks * bs) as usize, 0);

        let prstatus = plan
            .notes
            .iter()
            .filter(|n| n.kind() == NoteKind::PrStatus)
            .count();
        // crash only warns about nr_cpus <= 0, but every machine has a CPU.
        let nr_cpus = if prstatus > 0 {
            prstatus
        } else {
            plan.cpus.len().max(1)
        };
        // Filled from memory by the writer (crate::utsname); the machine alone here.
        let mut utsname = Utsname::default();
        utsname.set(Utsname::MACHINE, &machine_name(plan.arch));
        // The time of the crash when the kernel recorded one (kdump kernels do; a live
        // guest dumped by QEMU has none), else 0 as QEMU writes.
        let crashtime = vmci
            .as_ref()
            .and_then(|v| v.get("CRASHTIME"))
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0);
        let header = DiskDumpHeader {
            signature: SIG_KDUMP,
            header_version: HEADER_VERSION,
            utsname,
            timestamp_sec: crashtime,
            timestamp_usec: 0,
            status: opts.codec.flag(),
            block_size: bs as i32,
            sub_hdr_size: i32::try_from(sub_hdr_blocks)
                .map_err(|_| Error::invalid("kdump: notes too large for the sub header"))?,
            bitmap_blocks: u32::try_from(bitmap_blocks).map_err(|_| {
                Error::invalid(format!(
                    "kdump: {max_mapnr} pages need more bitmap blocks than the header holds"
                ))
            })?,
            max_mapnr: u32::try_from(max_mapnr).unwrap_or(u32::MAX),
            nr_cpus: i32::try_from(nr_cpus).unwrap_or(i32::MAX),
            ..Default::default()
        };
        let data_bitmap = PageBitmap::from_runs(&page_runs);
        let mut ram_bitmap = data_bitmap.clone();
        for &(s, e) in &excluded_runs {
            ram_bitmap.set_range(s, e);
        }
        let mut geo = Geometry {
            layout,
            bs,
            page_runs,
            bitmap_off,
            bitmap_len,
            desc_off,
            desc_slots: 0,
            zero_off: 0,
            data_off: 0,
            header,
            sub_blocks,
            ram_bitmap,
            data_bitmap,
            exclude_zero: opts.exclude_zero,
        };
        geo.place(total_pages)?;
        Ok(geo)
    }

    /// Size the descriptor table for `dumpable` pages and put the zero block and the data
    /// right after it.
    pub(crate) fn place(&mut self, dumpable: u64) -> Result<()> {
        self.desc_slots = dumpable;
        self.zero_off = self
            .desc_off
            .checked_add(dumpable.saturating_mul(PAGE_DESC_SIZE as u64))
            .ok_or_else(|| Error::invalid("kdump: descriptor table overflows 64 bits"))?;
        self.data_off = if self.exclude_zero {
            self.zero_off
        } else {
            self.zero_off + self.bs
        };
        Ok(())
    }

    /// The main header block with `status` (bs bytes).
    pub(crate) fn header_block(&self, status: u32) -> Vec<u8> {
        let mut h = self.header.clone();
        h.status = status;
        let mut b = h.encode(self.layout);
        b.resize(self.bs as usize, 0);
        b
    }
}
