//! Helpers for the kdump tests: memory images, plans, sinks that fail on purpose, and a
//! small hand-written kdump builder (independent of the writer under test) for reader
//! tests of header versions, layouts and split sets.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dumpconv_core::{
    Arch, Dump, DumpPlan, Error, NoProgress, Note, PhysRange, PhysicalMemory, Result, Segment,
    SegmentMemory, SegmentSource, Sink, StreamSink, VmcoreInfo,
};
use dumpconv_formats::kdump::layout::{
    bitmap_len, set_bits, DiskDumpHeader, Layout, PageDesc, SubHeader, Utsname, SIG_KDUMP,
};
use dumpconv_formats::kdump::Codec;
use dumpconv_kdump::KdumpWriter;

pub const PS: u64 = 4096;

/// Deterministic pseudo-random bytes (xorshift).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Page contents like a real guest's: zero pages, text, code-like bytes, page tables,
/// incompressible pages, and pages that are zero but for one byte.
pub fn realistic_page(pfn: u64) -> Vec<u8> {
    let ps = PS as usize;
    match pfn % 11 {
        0 | 3 | 7 => vec![0; ps],
        1 => b"Linux version 6.1.0 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC "
            .iter()
            .cycle()
            .take(ps)
            .copied()
            .collect(),
        2 => {
            let mut p = noise(pfn, ps);
            for (i, b) in p.iter_mut().enumerate() {
                if i % 4 != 0 {
                    *b &= 0x0f;
                }
            }
            p
        }
        4 => (0..ps / 8)
            .flat_map(|i| (((pfn << 12) + (i as u64) * 0x1000) | 0x63).to_le_bytes())
            .collect(),
        5 => noise(pfn * 31 + 7, ps),
        6 => {
            let mut p = vec![0; ps];
            p[(pfn as usize * 37) % ps] = 0x5a;
            p
        }
        _ => (0..ps)
            .map(|i| ((i * 7 + pfn as usize) % 251) as u8)
            .collect(),
    }
}

/// A raw image in a temp file and the memory over its `ranges`.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub mem: SegmentMemory,
    pub data: Vec<u8>,
}

impl Image {
    /// `ranges` are byte ranges; the image is as long as the last one.
    pub fn new(ranges: &[PhysRange], page: impl Fn(u64) -> Vec<u8>) -> Image {
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        let mut data = vec![0u8; end as usize];
        for r in ranges {
            let mut a = r.start;
            while a < r.end {
                let pfn = a / PS;
                let p = page(pfn);
                let off = (a % PS) as usize;
                let n = ((PS - a % PS).min(r.end - a)) as usize;
                data[a as usize..a as usize + n].copy_from_slice(&p[off..off + n]);
                a += n as u64;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.raw");
        // Only the ranges are written: the gaps stay holes (pc_ranges reaches 4 GiB).
        {
            use std::os::unix::fs::FileExt;
            let f = File::create(&path).unwrap();
            for r in ranges {
                f.write_all_at(&data[r.start as usize..r.end as usize], r.start)
                    .unwrap();
            }
            f.set_len(end).unwrap();
        }
        let f = Arc::new(File::open(&path).unwrap());
        let segments = ranges
            .iter()
            .map(|r| Segment {
                range: *r,
                source: SegmentSource::File {
                    file: 0,
                    offset: r.start,
                },
            })
            .collect();
        let mem = SegmentMemory::new(vec![(path.clone(), f)], segments).unwrap();
        Image {
            dir,
            path,
            mem,
            data,
        }
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn vmcoreinfo_text() -> Vec<u8> {
    b"OSRELEASE=6.1.0-56-amd64\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a0a000\n\
NUMBER(phys_base)=16777216\nKERNELOFFSET=0\nCRASHTIME=1700000000\n"
        .to_vec()
}

pub fn notes_with_vmcoreinfo(cpus: usize) -> Vec<Note> {
    let mut n: Vec<Note> = (0..cpus)
        .map(|i| Note::new("CORE", 1, noise(i as u64 + 100, 336)))
        .collect();
    n.push(Note::new("VMCOREINFO", 0, vmcoreinfo_text()));
    n
}

pub fn plan(arch: Arch, ranges: &[PhysRange], notes: Vec<Note>, opts: &[(&str, &str)]) -> DumpPlan {
    let vmcoreinfo = notes
        .iter()
        .find(|n| n.name == b"VMCOREINFO")
        .map(|n| VmcoreInfo::parse(&n.desc));
    DumpPlan {
        filter: None,
        arch,
        page_size: PS,
        ranges: ranges.to_vec(),
        mappings: None,
        notes,
        cpus: vec![],
        vmcoreinfo,
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Write to a seekable file; returns its bytes.
pub fn write_file(plan: &DumpPlan, mem: &dyn PhysicalMemory, path: &Path) -> Vec<u8> {
    let f = File::create(path).unwrap();
    let mut sink = dumpconv_core::FileSink::new(f, path);
    dumpconv_core::DumpWriter::write(&KdumpWriter, plan, mem, &mut sink, &NoProgress).unwrap();
    std::fs::read(path).unwrap()
}

/// Write to a stream (flattened); returns the bytes.
pub fn write_stream(plan: &DumpPlan, mem: &dyn PhysicalMemory) -> Vec<u8> {
    let mut sink = StreamSink::new(Vec::new(), "<stream>");
    dumpconv_core::DumpWriter::write(&KdumpWriter, plan, mem, &mut sink, &NoProgress).unwrap();
    sink.into_inner()
}

pub fn open(path: &Path) -> Dump {
    dumpconv_formats::kdump::open_kdump(&[path.to_path_buf()]).unwrap()
}

pub fn detail<'a>(d: &'a Dump, key: &str) -> Option<&'a str> {
    d.details
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Assert every byte of `ranges` reads the same from `dump` as from `image`.
pub fn assert_same_memory(dump: &Dump, image: &[u8], ranges: &[PhysRange]) {
    assert_eq!(dump.memory.ranges(), ranges);
    for r in ranges {
        let mut a = r.start;
        while a < r.end {
            let n = (r.end - a).min(256 * 1024);
            let mut buf = vec![0u8; n as usize];
            dump.memory.read_at(a, &mut buf).unwrap();
            assert!(
                buf == image[a as usize..(a + n) as usize],
                "bytes differ in {a:#x}..{:#x}",
                a + n
            );
            a += n;
        }
    }
}

/// Reassemble a flattened file (as `makedumpfile -R` would), independently of the
/// reader's index.
pub fn reassemble(flat: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 4096;
    loop {
        let off = i64::from_be_bytes(flat[pos..pos + 8].try_into().unwrap());
        let size = i64::from_be_bytes(flat[pos + 8..pos + 16].try_into().unwrap());
        pos += 16;
        if off == -1 && size == -1 {
            break;
        }
        let (off, size) = (off as usize, size as usize);
        if out.len() < off + size {
            out.resize(off + size, 0);
        }
        out[off..off + size].copy_from_slice(&flat[pos..pos + size]);
        pos += size;
    }
    assert_eq!(pos, flat.len(), "bytes after the end marker");
    out
}

/// A seekable sink over a Vec that fails appends once `limit` bytes are reached
/// (like ENOSPC), while rewriting bytes that exist still works.
pub struct FailingSink {
    pub data: Vec<u8>,
    pub pos: u64,
    pub limit: u64,
    pub seekable: bool,
}

impl FailingSink {
    pub fn new(limit: u64, seekable: bool) -> Self {
        FailingSink {
            data: Vec::new(),
            pos: 0,
            limit,
            seekable,
        }
    }

    fn enospc(&self) -> Error {
        Error::Output {
            path: "failing-sink".into(),
            offset: self.pos,
            source: std::io::Error::other("no space left on device"),
        }
    }
}

impl Sink for FailingSink {
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        if self.pos + buf.len() as u64 > self.limit {
            // Write what fits, as a real short write would.
            let n = self.limit.saturating_sub(self.pos) as usize;
            let _ = self.write_at(self.pos, &buf[..n]);
            self.pos += n as u64;
            return Err(self.enospc());
        }
        let p = self.pos;
        self.write_at(p, buf)?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        if self.pos + len > self.limit {
            return Err(self.enospc());
        }
        self.pos += len;
        Ok(())
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn is_seekable(&self) -> bool {
        self.seekable
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let end = offset as usize + buf.len();
        if end as u64 > self.limit.max(self.data.len() as u64) {
            return Err(self.enospc());
        }
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let p = self.pos as usize;
        if self.data.len() < p {
            self.data.resize(p, 0);
        }
        Ok(())
    }
}

/// Memory that fails with an I/O-like error once `budget` reads have been made.
pub struct FailingMemory<'a> {
    pub inner: &'a dyn PhysicalMemory,
    pub budget: AtomicU64,
}

impl PhysicalMemory for FailingMemory<'_> {
    fn ranges(&self) -> &[PhysRange] {
        self.inner.ranges()
    }
    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        if self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_err()
        {
            return Err(Error::format(
                PathBuf::from("input.raw"),
                paddr,
                "raw",
                "simulated read failure",
            ));
        }
        self.inner.read_at(paddr, buf)
    }
}

/// A kdump file written by hand, for reader tests independent of the writer.
pub struct Build {
    pub layout: Layout,
    pub hv: i32,
    pub max_mapnr: u64,
    /// RAM PFN runs (1st bitmap).
    pub ram: Vec<(u64, u64)>,
    /// PFNs excluded (2nd bitmap clear).
    pub excluded: Vec<u64>,
    /// Split part `[start, end)`, or None for a whole dump.
    pub split: Option<(u64, u64)>,
    pub notes: Vec<Note>,
    pub signature: [u8; 8],
    pub status: u32,
    /// Compress with zlib (else raw pages).
    pub zlib: bool,
    /// Use a single bitmap (old diskdump style).
    pub single_bitmap: bool,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            layout: Layout::Bits64,
            hv: 6,
            max_mapnr: 40,
            ram: vec![(0, 10), (16, 40)],
            excluded: vec![],
            split: None,
            notes: vec![],
            signature: SIG_KDUMP,
            status: 0,
            zlib: false,
            single_bitmap: false,
        }
    }
}

impl Build {
    pub fn page(pfn: u64) -> Vec<u8> {
        realistic_page(pfn + 1)
    }

    pub fn is_ram(&self, pfn: u64) -> bool {
        self.ram.iter().any(|&(s, e)| s <= pfn && pfn < e)
    }

    pub fn bytes(&self) -> Vec<u8> {
        let bs = PS;
        let notes = dumpconv_formats::elf::note::encode_notes(&self.notes);
        let sub_size = self.layout.sub_header_size() as u64;
        let sub_blocks = (sub_size + notes.len() as u64).div_ceil(bs).max(1);
        let bml = bitmap_len(self.max_mapnr, bs);
        let nbm = if self.single_bitmap { 1 } else { 2 };
        let bitmap_off = (1 + sub_blocks) * bs;
        let desc_off = bitmap_off + nbm * bml;
        let mut bm1 = vec![0u8; bml as usize];
        for &(s, e) in &self.ram {
            set_bits(&mut bm1, s, e);
        }
        let mut bm2 = bm1.clone();
        for &p in &self.excluded {
            dumpconv_formats::kdump::layout::set_bit(&mut bm2, p, false);
        }
        let (start, end) = self.split.unwrap_or((0, self.max_mapnr));
        let dumpable: Vec<u64> = (start..end)
            .filter(|&p| dumpconv_formats::kdump::layout::bit(&bm2, p))
            .collect();
        let mut data_at = desc_off + 24 * dumpable.len() as u64;
        let mut descs = Vec::new();
        let mut data = Vec::new();
        for &p in &dumpable {
            let page = Self::page(p);
            let codec = if self.zlib { Codec::Zlib } else { Codec::None };
            let (stored, flags) = dumpconv_kdump::encode_page(codec, None, &page).unwrap();
            let d = PageDesc {
                offset: data_at as i64,
                size: stored.len() as u32,
                flags,
                page_flags: 0,
            };
            descs.extend_from_slice(&d.encode());
            data_at += stored.len() as u64;
            data.extend_from_slice(&stored);
        }
        let mut u = Utsname::default();
        u.set(
            Utsname::MACHINE,
            if self.layout == Layout::Bits32 {
                "i686"
            } else {
                "x86_64"
            },
        );
        let h = DiskDumpHeader {
            signature: self.signature,
            header_version: self.hv,
            utsname: u,
            status: self.status,
            block_size: bs as i32,
            sub_hdr_size: sub_blocks as i32,
            bitmap_blocks: (nbm * bml / bs) as u32,
            max_mapnr: self.max_mapnr.min(u32::MAX as u64) as u32,
            nr_cpus: 1,
            ..Default::default()
        };
        let offset_note = bs + sub_size;
        let vmci = self
            .notes
            .iter()
            .position(|n| n.name == b"VMCOREINFO")
            .map(|i| {
                let before: usize = self.notes[..i]
                    .iter()
                    .map(dumpconv_formats::elf::note::note_size)
                    .sum();
                (
                    offset_note + before as u64 + 12 + 12,
                    self.notes[i].desc.len() as u64,
                )
            })
            .unwrap_or((0, 0));
        let sub = SubHeader {
            phys_base: 0x100_0000,
            dump_level: 31,
            split: i32::from(self.split.is_some()),
            start_pfn: start,
            end_pfn: end,
            offset_vmcoreinfo: vmci.0,
            size_vmcoreinfo: vmci.1,
            offset_note: if notes.is_empty() { 0 } else { offset_note },
            size_note: notes.len() as u64,
            start_pfn_64: start,
            end_pfn_64: end,
            max_mapnr_64: self.max_mapnr,
            ..Default::default()
        }
        .for_version(self.hv);
        let mut f = h.encode(self.layout);
        f.resize(bs as usize, 0);
        if self.hv >= 1 {
            f.extend_from_slice(&sub.encode(self.layout));
            f.extend_from_slice(&notes);
        }
        f.resize(bitmap_off as usize, 0);
        f.extend_from_slice(&bm1);
        if !self.single_bitmap {
            f.extend_from_slice(&bm2);
        }
        f.extend_from_slice(&descs);
        f.extend_from_slice(&data);
        f
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.bytes()).unwrap();
        p
    }
}
