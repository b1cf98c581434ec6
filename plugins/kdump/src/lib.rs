//! kdump-compressed writer (docs/formats.md#kdump), for seekable files and, on a
//! forward-only sink, in makedumpfile's flattened format
//! (docs/formats.md#kdump-flattened).
//!
//! Policy lives here (threads, codecs, layout choices); the byte layouts come from
//! `dumpconv_formats::kdump` and `dumpconv_formats::flattened`.
//!
//! - Header version 6, `"KDUMP   "`, block size = page size; 64-bit structs for x86_64,
//!   32-bit structs for i386; `utsname` the kernel's own, read from `init_uts_ns` as
//!   makedumpfile does (module `utsname`), `machine` "x86_64" / "i686" (what crash
//!   expects); timestamp from VMCOREINFO `CRASHTIME`.
//! - Both bitmaps, LSB first, block aligned, the 2nd at exactly half of the area; never
//!   held whole (module `bitmap`): made and written 1 MiB at a time, so memory follows
//!   the RAM, not the highest address.
//! - One shared zero block written first; every all-zero page points at it (QEMU's
//!   scheme), unless `exclude-zero` drops zero pages from the 2nd bitmap.
//! - Pages the input cannot supply (excluded from, or lost in, a kdump input) are
//!   marked excluded here, so converting a filtered dump keeps its meaning.
//! - Pages compressed on all cores, output byte-identical for any thread count.
//!
//! Options (`DumpPlan::options`): `compress=zlib|lzo|snappy|zstd|none` (default zlib),
//! `level=N`, `threads=N|auto`, `exclude-zero[=true]`, `keep-partial[=true]`.

mod bitmap;
mod encode;
mod geometry;
mod options;
mod pipeline;
mod utsname;

use dumpconv_core::{
    DumpPlan, DumpWriter, Error, PhysRange, PhysicalMemory, Progress, Result, Sink,
};
use dumpconv_formats::flattened;
use dumpconv_formats::kdump::layout::{PageDesc, DUMP_DH_COMPRESSED_INCOMPLETE, PAGE_DESC_SIZE};
use dumpconv_formats::kdump::Codec;

pub use geometry::machine_name;
pub use options::{default_threads, KdumpOptions, DEFAULT_CODEC, OPTION_KEYS};
pub use utsname::PLACEHOLDER_VERSION;

use bitmap::PageBitmap;
use encode::{PageEncoder, Stored};
use geometry::Geometry;
use pipeline::{Batch, Kind, WorkCtx};

/// Pages per batch: 2 MiB of memory at 4 KiB pages. Fixed, so the output does not
/// depend on the thread count.
const BATCH_BYTES: u64 = 2 << 20;
/// Known-zero pages per batch (nothing to read: descriptors only).
const ZERO_BATCH_BYTES: u64 = 64 << 20;
/// Batches in flight per thread.
const WINDOW_PER_THREAD: usize = 4;
/// Flattened output: data and descriptors are gathered into records of about this
/// size (crash sorts flattened records with a quadratic sort: few, large records).
const FLAT_DATA_RECORD: usize = 4 << 20;
/// Descriptors gathered before one positioned write (seekable: small, so that a disk
/// filling up loses few descriptors) or one flattened record (stream: large, few
/// records).
const DESC_FLUSH_SEEKABLE: usize = 64 << 10;
const DESC_FLUSH_STREAM: usize = 1 << 20;
/// Bytes of a bitmap made and written at a time: the bitmaps (one bit per page up to
/// the highest address, 512 MiB each at 16 TiB) are never held whole.
const BITMAP_BLOCK: u64 = 1 << 20;

/// Store one page the way the writer does: compressed with `codec` when that is
/// smaller than the page, else raw. Returns the stored bytes and the page descriptor's
/// flags. (For tools and tests that build kdump files piecemeal.)
pub fn encode_page(codec: Codec, level: Option<i32>, page: &[u8]) -> Result<(Vec<u8>, u32)> {
    let mut enc = PageEncoder::new(codec, level, page.len())?;
    let mut out = Vec::with_capacity(page.len());
    match enc.store(page, &mut out)? {
        Stored::Data { flags, .. } => Ok((out, flags)),
        other => Err(Error::invalid(format!("kdump: page stored as {other:?}"))),
    }
}

/// The kdump-compressed writer.
#[derive(Debug, Default, Clone, Copy)]
pub struct KdumpWriter;

impl DumpWriter for KdumpWriter {
    fn name(&self) -> &str {
        "kdump"
    }

    fn description(&self) -> &str {
        "kdump-compressed (makedumpfile/crash format; flattened when writing to a stream)"
    }

    fn extensions(&self) -> &[&str] {
        &["kdump"]
    }

    fn compresses_itself(&self) -> bool {
        true
    }

    fn options(&self) -> Option<&[&str]> {
        Some(options::OPTION_KEYS)
    }

    fn write(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<()> {
        let opts = KdumpOptions::from_plan(plan)?;
        write_kdump(plan, mem, sink, progress, &opts)
    }
}

/// Write `plan` as a kdump file with explicit options (the trait method parses them
/// from the plan).
pub fn write_kdump(
    plan: &DumpPlan,
    mem: &dyn PhysicalMemory,
    sink: &mut dyn Sink,
    progress: &dyn Progress,
    opts: &KdumpOptions,
) -> Result<()> {
    if sink.position() != 0 {
        return Err(Error::invalid(
            "kdump: the output must start empty (offsets in the file are absolute)",
        ));
    }
    let mut geo = Geometry::new(plan, opts)?;
    let (utsname, warning) = utsname::header_utsname(plan, mem);
    geo.header.utsname = utsname;
    if let Some(w) = warning {
        progress.warn(&w);
    }
    if plan.mappings.is_some() {
        progress
            .warn("kdump files hold physical memory only: the virtual mappings are not written");
    }
    let bs = geo.bs as usize;
    let threads = opts.threads.max(1);
    let window = threads * WINDOW_PER_THREAD;
    let batch_pages = (BATCH_BYTES / geo.bs).max(1);
    let zero_batch_pages = (ZERO_BATCH_BYTES / geo.bs).max(1);
    let ctx = WorkCtx {
        mem,
        ranges: &plan.ranges,
        bs: geo.bs,
    };
    progress.start("writing kdump", plan.total_bytes());
    // Which pages are known zero without reading (holes of the input, zero fill).
    let spans = match pipeline::spans(mem, &plan.ranges, &geo.page_runs, geo.bs) {
        Ok(s) => s,
        Err(e) => {
            progress.finish();
            return Err(e);
        }
    };
    // Pages that leave the 2nd bitmap before any is compressed, so that the descriptor
    // table holds exactly the dumpable pages and the data follows it: pages the input
    // does not hold (known without reading), and with exclude-zero, found by a first
    // pass, known zeros (without reading) and the pages of the rest that are all zero.
    let total: u64 = geo.page_runs.iter().map(|(s, e)| e - s).sum();
    let mut unavailable = 0u64;
    for &(s, e, _) in spans.iter().filter(|s| s.2 == Kind::Missing) {
        geo.data_bitmap.clear_range(s, e);
        unavailable += e - s;
        progress.advance(ctx.bytes_in(PhysRange::new(s * geo.bs, e * geo.bs)));
    }
    let mut dropped = unavailable;
    if opts.exclude_zero {
        let bm = &mut geo.data_bitmap;
        let r = pipeline::run(
            pipeline::jobs(spans.iter().copied(), batch_pages, zero_batch_pages),
            vec![Vec::new(); threads],
            window,
            |buf: &mut Vec<u8>, job| ctx.scan(job, buf),
            |scan| {
                for (s, e) in scan.dropped {
                    bm.clear_range(s, e);
                    dropped += e - s;
                }
                unavailable += scan.unavailable;
                progress.advance(scan.dropped_bytes);
                Ok(())
            },
        );
        if let Err(e) = r {
            progress.finish();
            return Err(e);
        }
    }
    if let Err(e) = geo.place(total - dropped) {
        progress.finish();
        return Err(e);
    }
    let encoders = (0..threads)
        .map(|_| PageEncoder::new(opts.codec, opts.level, bs).map(|e| (e, Vec::new())))
        .collect::<Result<Vec<_>>>()?;

    let geo = &geo;
    let mut out = Output::new(geo, sink, opts);
    out.unavailable = unavailable;
    let mut result = out.begin();
    if result.is_ok() {
        // With exclude-zero: the pages the first pass kept. Else every page, the known
        // zeros without reading.
        let main: Box<dyn Iterator<Item = pipeline::Span>> = if opts.exclude_zero {
            Box::new(
                spans
                    .iter()
                    .filter(|s| s.2 == Kind::Data)
                    .flat_map(|&(s, e, _)| geo.data_bitmap.set_runs(s, e))
                    .map(|(s, e)| (s, e, Kind::Data)),
            )
        } else {
            Box::new(spans.iter().copied())
        };
        result = pipeline::run(
            pipeline::jobs(main, batch_pages, zero_batch_pages),
            encoders,
            window,
            |(enc, buf): &mut (PageEncoder, Vec<u8>), job| ctx.process(job, enc, buf),
            |batch| {
                let n = batch.bytes;
                out.consume(batch)?;
                progress.advance(n);
                Ok(())
            },
        );
    }
    if out.unavailable > 0 {
        progress.warn(&format!(
            "{} pages could not be read from the input (excluded from it, or lost in an \
             incomplete dump); they are marked excluded in the output",
            out.unavailable
        ));
    }
    let result = result.and_then(|()| out.finish(false));
    progress.finish();
    if let Err(e) = result {
        if opts.keep_partial {
            let stream = out.stream;
            match (out.salvage(), stream) {
                (Ok(()), _) => progress.warn(
                    "kdump: kept the partial output, marked incomplete (status 0x8); pages \
                     not written read as lost",
                ),
                // The header went out marked incomplete at the start.
                (Err(_), false) => progress.warn(
                    "kdump: kept the partial output, marked incomplete (status 0x8); the \
                     last descriptors could not be written, so their pages read as lost too",
                ),
                (Err(_), true) => progress.warn(
                    "kdump: the stream was cut inside a record: it cannot be completed or \
                     marked incomplete",
                ),
            }
        }
        return Err(e);
    }
    Ok(())
}

/// The output file as it is being written: positioned writes on a seekable sink,
/// flattened records on a stream.
struct Output<'a> {
    geo: &'a Geometry,
    sink: &'a mut dyn Sink,
    stream: bool,
    exclude_zero: bool,
    status: u32,
    /// Pages that left the 2nd bitmap while writing (the file's 2nd bitmap is
    /// `geo.data_bitmap` less these).
    cleared: PageBitmap,
    /// Descriptors committed so far (= next descriptor index).
    desc_count: u64,
    /// Descriptors not yet written, starting at index `desc_count - len/24`.
    desc_buf: Vec<u8>,
    /// Offset of the next page data byte.
    data_pos: u64,
    /// Stream only: data not yet written, starting at `data_pos - data_buf.len()`.
    data_buf: Vec<u8>,
    /// Pages the input could not supply.
    unavailable: u64,
    /// Stream only: a failed write left a partial record, so nothing more can follow.
    broken: bool,
    /// Stream only: the 2nd bitmap and header tail records went out (final or salvage).
    tail_written: bool,
}

impl<'a> Output<'a> {
    fn new(geo: &'a Geometry, sink: &'a mut dyn Sink, opts: &KdumpOptions) -> Output<'a> {
        let stream = !sink.is_seekable();
        Output {
            geo,
            sink,
            stream,
            exclude_zero: opts.exclude_zero,
            status: opts.codec.flag(),
            cleared: PageBitmap::default(),
            desc_count: 0,
            desc_buf: Vec::new(),
            data_pos: geo.data_off,
            data_buf: Vec::new(),
            unavailable: 0,
            broken: false,
            tail_written: false,
        }
    }

    /// A stream record; a failure marks the stream broken.
    fn record(&mut self, offset: u64, payload: &[u8]) -> Result<()> {
        let r = flattened::write_record(self.sink, offset, payload);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<()> {
        let r = self.sink.write_all(bytes);
        if r.is_err() && self.stream {
            self.broken = true;
        }
        r
    }

    /// Everything before the page data.
    fn begin(&mut self) -> Result<()> {
        let g = self.geo;
        let header = g.header_block(self.status);
        let zero = vec![0u8; g.bs as usize];
        if self.stream {
            self.raw(&flattened::flat_header())?;
            // The header up to `status` first (so a reader peeking at the start sees the
            // signature); `status` and the rest last, once the outcome is known, so
            // keep-partial works on a stream without overlapping records.
            let cut = g.layout.status_offset();
            self.record(0, &header[..cut])?;
            self.record(g.bs, &g.sub_blocks)?;
            self.raw(&flattened::record_header(g.bitmap_off, g.bitmap_len))?;
            self.write_bitmap(&g.ram_bitmap, &PageBitmap::default(), None)?;
            if !self.exclude_zero {
                self.record(g.zero_off, &zero)?;
            }
        } else {
            // Marked incomplete until `finish` rewrites it: a file cut short by a full
            // disk or a killed process says so even if nothing can be rewritten then.
            let header = g.header_block(self.status | DUMP_DH_COMPRESSED_INCOMPLETE);
            self.sink.write_all(&header)?;
            self.sink.write_all(&g.sub_blocks)?;
            let none = PageBitmap::default();
            self.write_bitmap(&g.ram_bitmap, &none, None)?;
            // Every page of the plan's ranges dumpable until a page says otherwise;
            // rewritten at the end where one does.
            self.write_bitmap(&g.data_bitmap, &none, None)?;
            self.sink.skip(g.zero_off - g.desc_off)?;
            if !self.exclude_zero {
                self.sink.write_all(&zero)?;
            }
            if self.sink.position() != g.data_off {
                return Err(Error::internal(format!(
                    "kdump: sink is at {:#x} after the headers, expected {:#x}",
                    self.sink.position(),
                    g.data_off
                )));
            }
        }
        Ok(())
    }

    /// Write `bm` less the bits of `less` (`bitmap_len` bytes) a block at a time:
    /// appended at the current position (on a stream, the payload of a record whose
    /// header went out), or with `at`, over the bitmap written at that offset, only the
    /// blocks where `less` has a bit.
    fn write_bitmap(&mut self, bm: &PageBitmap, less: &PageBitmap, at: Option<u64>) -> Result<()> {
        let len = self.geo.bitmap_len;
        let mut block = vec![0u8; BITMAP_BLOCK.min(len) as usize];
        let mut done = 0u64;
        while done < len {
            let n = BITMAP_BLOCK.min(len - done);
            if at.is_none() || less.touches(done, n) {
                let b = &mut block[..n as usize];
                bm.render(done, b);
                less.clear_from(done, b);
                match at {
                    Some(off) => self.sink.write_at(off + done, b)?,
                    None => self.raw(b)?,
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Write one batch: its data, then (buffered) its descriptors. Nothing of a batch is
    /// recorded unless its data was written, so a failure leaves whole batches only.
    fn consume(&mut self, batch: Batch) -> Result<()> {
        let g = self.geo;
        let zero_desc = PageDesc {
            offset: g.zero_off as i64,
            size: g.bs as u32,
            flags: 0,
            page_flags: 0,
        };
        let npages: u64 = batch.runs.iter().map(|(s, e)| e - s).sum();
        let mut descs = Vec::with_capacity(npages as usize * PAGE_DESC_SIZE);
        let mut cleared = Vec::new();
        let mut at = self.data_pos;
        let pfns = batch.runs.iter().flat_map(|&(s, e)| s..e);
        let mut stored = batch.pages.iter().copied();
        for pfn in pfns {
            // A known-zero batch has no per-page entries: every page is zero.
            let page = if batch.known_zero {
                Stored::Zero
            } else {
                match stored.next() {
                    Some(p) => p,
                    None => break,
                }
            };
            match page {
                Stored::Zero if !self.exclude_zero => descs.extend_from_slice(&zero_desc.encode()),
                Stored::Zero => cleared.push(pfn),
                Stored::Unavailable => {
                    cleared.push(pfn);
                    self.unavailable += 1;
                }
                Stored::Data { size, flags } => {
                    let d = PageDesc {
                        offset: at as i64,
                        size,
                        flags,
                        page_flags: 0,
                    };
                    descs.extend_from_slice(&d.encode());
                    at += u64::from(size);
                }
            }
        }
        if self.stream {
            self.data_buf.extend_from_slice(&batch.data);
            self.data_pos = at;
            if self.data_buf.len() >= FLAT_DATA_RECORD {
                self.flush_data()?;
            }
        } else {
            self.sink.write_all(&batch.data)?;
            self.data_pos = at;
        }
        for pfn in cleared {
            self.cleared.set_range(pfn, pfn + 1);
        }
        let new_descs = (descs.len() / PAGE_DESC_SIZE) as u64;
        if self.desc_count + new_descs > g.desc_slots {
            // The first pass counted fewer dumpable pages than there are: only if the
            // input changed between the passes.
            return Err(Error::internal(format!(
                "kdump: more dumpable pages than the {} descriptor slots counted before                  writing (did the input change while it was read?)",
                g.desc_slots
            )));
        }
        self.desc_count += new_descs;
        self.desc_buf.extend_from_slice(&descs);
        let limit = if self.stream {
            DESC_FLUSH_STREAM
        } else {
            DESC_FLUSH_SEEKABLE
        };
        if self.desc_buf.len() >= limit {
            self.flush_descs()?;
        }
        Ok(())
    }

    fn flush_data(&mut self) -> Result<()> {
        if self.data_buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.data_buf);
        let at = self.data_pos - buf.len() as u64;
        let r = self.record(at, &buf);
        self.data_buf = buf;
        r?;
        self.data_buf.clear();
        Ok(())
    }

    fn flush_descs(&mut self) -> Result<()> {
        if self.desc_buf.is_empty() {
            return Ok(());
        }
        let first = self.desc_count - (self.desc_buf.len() / PAGE_DESC_SIZE) as u64;
        let at = self.geo.desc_off + first * PAGE_DESC_SIZE as u64;
        let buf = std::mem::take(&mut self.desc_buf);
        let r = if self.stream {
            // Data first: a reader of a cut stream then never finds a descriptor whose
            // data is missing.
            self.flush_data().and_then(|()| self.record(at, &buf))
        } else {
            self.sink.write_at(at, &buf)
        };
        self.desc_buf = buf;
        r?;
        self.desc_buf.clear();
        Ok(())
    }

    /// Write what is still pending and close the file. `incomplete` sets status 0x8.
    fn finish(&mut self, incomplete: bool) -> Result<()> {
        if incomplete {
            self.status |= DUMP_DH_COMPRESSED_INCOMPLETE;
        }
        let g = self.geo;
        self.flush_descs()?;
        let bm2_off = g.bitmap_off + g.bitmap_len;
        if self.stream {
            self.flush_data()?;
            if !self.tail_written {
                let cleared = std::mem::take(&mut self.cleared);
                let r = self
                    .raw(&flattened::record_header(bm2_off, g.bitmap_len))
                    .and_then(|()| self.write_bitmap(&g.data_bitmap, &cleared, None));
                self.cleared = cleared;
                r?;
                let header = g.header_block(self.status);
                let cut = g.layout.status_offset();
                self.record(cut as u64, &header[cut..])?;
                self.raw(&flattened::end_marker())?;
                self.tail_written = true;
            }
        } else {
            if !self.cleared.is_empty() {
                let cleared = std::mem::take(&mut self.cleared);
                let r = self.write_bitmap(&g.data_bitmap, &cleared, Some(bm2_off));
                self.cleared = cleared;
                r?;
            }
            let header = g.header_block(self.status);
            self.sink.write_at(0, &header)?;
        }
        self.sink.finish()
    }

    /// keep-partial: make what was written a valid dump marked incomplete. Pages whose
    /// descriptors never went out read back as lost (descriptor offset 0).
    fn salvage(&mut self) -> Result<()> {
        if self.stream && (self.broken || self.tail_written) {
            return Err(Error::invalid(
                "kdump: the stream is cut inside a record; nothing can follow",
            ));
        }
        self.finish(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_core::{Arch, NoProgress, PhysRange, StreamSink};
    use std::collections::BTreeMap;

    /// Memory backed by a Vec, page-aligned ranges.
    struct VecMem {
        ranges: Vec<PhysRange>,
        data: Vec<u8>,
    }

    impl PhysicalMemory for VecMem {
        fn ranges(&self) -> &[PhysRange] {
            &self.ranges
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            if !self.is_ram(paddr, buf.len() as u64) {
                return Err(Error::Hole { paddr });
            }
            let a = paddr as usize;
            buf.copy_from_slice(&self.data[a..a + buf.len()]);
            Ok(())
        }
    }

    fn plan(ranges: Vec<PhysRange>, opts: &[(&str, &str)]) -> DumpPlan {
        DumpPlan {
            filter: None,
            arch: Arch::X86_64,
            page_size: 4096,
            ranges,
            mappings: None,
            notes: vec![],
            cpus: vec![],
            vmcoreinfo: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn stream_output_is_flattened_and_deterministic() {
        let mut data = vec![0u8; 64 * 4096];
        for (i, b) in data.iter_mut().enumerate().skip(4096) {
            *b = (i / 4096) as u8 ^ (i % 13) as u8;
        }
        let mem = VecMem {
            ranges: vec![PhysRange::new(0, 64 * 4096)],
            data,
        };
        let mut outs = Vec::new();
        for t in ["1", "2"] {
            let p = plan(mem.ranges.clone(), &[("threads", t)]);
            let mut s = StreamSink::new(Vec::new(), "<mem>");
            KdumpWriter.write(&p, &mem, &mut s, &NoProgress).unwrap();
            outs.push(s.into_inner());
        }
        assert_eq!(outs[0], outs[1]);
        assert!(flattened::is_flattened(&outs[0]));
        assert!(outs[0].ends_with(&[0xff; 16]));
    }
}
