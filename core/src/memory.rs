//! Physical memory of a dump: a sorted list of RAM ranges and positioned reads.
//!
//! There is no shared cursor: `read_at` takes `&self`, so any number of threads can read
//! at once. Reading an address outside RAM is an error ([`Error::Hole`]), never zeros:
//! a writer must know holes from zero pages.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The end of the physical address space readers accept: 2^52, the largest
/// MAXPHYADDR x86-64 and AArch64 define. A range claimed beyond it is a lying header
/// (issue #17: one LiME page at 2^56 made the kdump writer allocate 2 TiB of bitmaps).
pub const MAX_PHYS_END: u64 = 1 << 52;

/// A half-open range of physical addresses `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    /// `[start, end)`; an `end` below `start` gives an empty range at `start`.
    pub fn new(start: u64, end: u64) -> Self {
        PhysRange {
            start,
            end: end.max(start),
        }
    }

    /// `[start, start + len)`, saturating at the top of the address space.
    pub fn with_len(start: u64, len: u64) -> Self {
        PhysRange::new(start, start.saturating_add(len))
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The overlap of two ranges, if not empty.
    pub fn intersect(&self, other: &PhysRange) -> Option<PhysRange> {
        let r = PhysRange::new(self.start.max(other.start), self.end.min(other.end));
        (!r.is_empty()).then_some(r)
    }
}

/// Sort ranges and merge the ones that overlap or touch.
pub fn normalize_ranges(mut ranges: Vec<PhysRange>) -> Vec<PhysRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort();
    let mut out: Vec<PhysRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `a` less `b`, both sorted and disjoint (as [`normalize_ranges`] leaves them).
pub fn subtract_ranges(a: &[PhysRange], b: &[PhysRange]) -> Vec<PhysRange> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for r in a {
        let mut start = r.start;
        while j < b.len() && b[j].end <= start {
            j += 1;
        }
        let mut k = j;
        while start < r.end {
            match b.get(k) {
                Some(x) if x.start < r.end => {
                    if x.start > start {
                        out.push(PhysRange::new(start, x.start));
                    }
                    start = start.max(x.end);
                    k += 1;
                }
                _ => {
                    out.push(PhysRange::new(start, r.end));
                    break;
                }
            }
        }
    }
    out
}

/// Intersect a normalized range list with `[begin, begin+len)`.
pub fn clip_ranges(ranges: &[PhysRange], window: PhysRange) -> Vec<PhysRange> {
    ranges.iter().filter_map(|r| r.intersect(&window)).collect()
}

/// Fill `buf` with the bytes from `paddr` on, one piece at a time: `piece(addr, out)`
/// fills the start of `out` (the part of `buf` still to fill, whose first byte is at
/// physical address `addr`) from wherever `addr` lives and returns how many bytes it
/// filled. The loop every chunked [`PhysicalMemory::read_at`] needs, written once: it
/// stops at the top of the address space, and a piece that fills nothing (which would
/// loop for ever) is an internal error.
pub fn read_in_pieces(
    paddr: u64,
    buf: &mut [u8],
    mut piece: impl FnMut(u64, &mut [u8]) -> Result<usize>,
) -> Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let addr = paddr
            .checked_add(done as u64)
            .ok_or(Error::Hole { paddr: u64::MAX })?;
        let n = piece(addr, &mut buf[done..])?;
        if n == 0 {
            return Err(Error::internal(format!(
                "a read of physical address {addr:#x} made no progress"
            )));
        }
        done = done.saturating_add(n);
    }
    Ok(())
}

/// Read exactly `buf.len()` bytes of `file` (named `path` in errors) at `offset`. A file
/// that ends first is a format error of `format` at `offset`, saying `what` was being
/// read; any other failure is an I/O error.
pub fn read_file_at(
    file: &File,
    path: &Path,
    offset: u64,
    buf: &mut [u8],
    format: &'static str,
    what: impl FnOnce() -> String,
) -> Result<()> {
    FILE_BYTES_READ.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::format(
                path.to_path_buf(),
                offset,
                format,
                format!("the file ends inside {} (truncated file?)", what()),
            )
        } else {
            Error::io(path, e)
        }
    })
}

/// Where the bytes at a physical address come from, for writers that can copy without
/// reading (`copy_file_range`) or skip known zeros.
#[derive(Debug, Clone, Copy)]
pub enum Backing<'a> {
    /// `len` bytes stored in `file` at `offset`.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
    /// `len` bytes known to be zero without reading anything.
    Zero { len: u64 },
}

/// What the memory knows about the bytes from an address on, without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// The next `len` bytes are known to be zero: a hole of a sparse input file, an ELF
    /// `p_filesz < p_memsz` tail. Writers skip them without reading.
    Zero(u64),
    /// The next `len` bytes must be read (they may still be zeros).
    Data(u64),
    /// The input does not hold the next `len` bytes (pages a filtered kdump excluded):
    /// reading them fails with [`Error::PageUnavailable`]. Writers that mark such pages
    /// (kdump) need not read them; the others read and fail as before.
    Missing(u64),
}

impl Extent {
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Zero(n) | Extent::Data(n) | Extent::Missing(n) => n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes read from input files by [`read_file_at`] since the process started: a
/// counter for tests that prove holes are not read (a relaxed atomic add per read,
/// reads being kilobytes to megabytes).
pub fn file_bytes_read() -> u64 {
    FILE_BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

static FILE_BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where the next hole or data starts in `file` from `offset`, as the file system
/// reports it (`SEEK_DATA`/`SEEK_HOLE`): `Some(Extent::Zero(n))` when `offset` is in a
/// hole of `n` bytes, `Some(Extent::Data(n))` when `n` bytes of data (or of a file
/// system that reports no holes) start there. `None` at or past the end of the file, or
/// when the file cannot be asked (a pipe): callers then read.
pub fn file_extent(file: &File, offset: u64) -> Option<Extent> {
    use rustix::fs::{seek, SeekFrom};
    let data = match seek(file, SeekFrom::Data(offset)) {
        Ok(d) => d,
        // No data from `offset` to the end: a hole up to the end, if `offset` is
        // inside the file.
        Err(rustix::io::Errno::NXIO) => {
            let len = file.metadata().ok()?.len();
            return (offset < len).then(|| Extent::Zero(len - offset));
        }
        Err(_) => return None,
    };
    if data > offset {
        return Some(Extent::Zero(data - offset));
    }
    let hole = seek(file, SeekFrom::Hole(offset)).ok()?;
    (hole > offset).then(|| Extent::Data(hole - offset))
}

/// Walk the extents of `[start, end)` of `mem` in order: `f(addr, extent)` for each,
/// clipped to the range. Memory that cannot tell gives one `Data` extent.
pub fn for_each_extent(
    mem: &dyn PhysicalMemory,
    range: PhysRange,
    mut f: impl FnMut(u64, Extent) -> Result<()>,
) -> Result<()> {
    let mut addr = range.start;
    while addr < range.end {
        let left = range.end - addr;
        let e = match mem.extent(addr, left) {
            Extent::Zero(n) => Extent::Zero(n.clamp(1, left)),
            Extent::Data(n) => Extent::Data(n.clamp(1, left)),
            Extent::Missing(n) => Extent::Missing(n.clamp(1, left)),
        };
        f(addr, e)?;
        addr += e.len();
    }
    Ok(())
}

/// The physical memory of a dump.
pub trait PhysicalMemory: Send + Sync {
    /// RAM ranges, sorted, non-overlapping, non-adjacent.
    fn ranges(&self) -> &[PhysRange];

    /// Fill `buf` with the bytes at `paddr..paddr+buf.len()`. Errors if any byte is
    /// outside RAM or unavailable.
    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()>;

    /// Where the bytes starting at `paddr` live, as far as they stay contiguous in one
    /// backing. `None` when the memory cannot tell (compressed pages, for instance).
    fn backing(&self, _paddr: u64) -> Option<Backing<'_>> {
        None
    }

    /// What is known of the bytes at `paddr..paddr+max` without reading them: a run of
    /// known zeros (a hole of the input file, zero fill) or of data to read, from
    /// `paddr` on, at most `max` bytes and at least one. The default asks
    /// [`Self::backing`]; memory that cannot tell says `Data(max)`. Known zeros are an
    /// optimisation only: reading them gives zeros, so writers produce the same output
    /// whichever way they learn it.
    fn extent(&self, paddr: u64, max: u64) -> Extent {
        match self.backing(paddr) {
            Some(Backing::Zero { len }) => Extent::Zero(len.min(max)),
            Some(Backing::File { len, .. }) => Extent::Data(len.min(max)),
            None => Extent::Data(max),
        }
    }

    /// Total RAM bytes.
    fn total_bytes(&self) -> u64 {
        self.ranges().iter().map(PhysRange::len).sum()
    }

    /// True if every byte of `[paddr, paddr+len)` is RAM.
    fn is_ram(&self, paddr: u64, len: u64) -> bool {
        let end = match paddr.checked_add(len) {
            Some(e) => e,
            None => return false,
        };
        let ranges = self.ranges();
        let i = ranges.partition_point(|r| r.end <= paddr);
        ranges
            .get(i)
            .is_some_and(|r| r.start <= paddr && end <= r.end)
    }
}

/// Where one segment's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentSource {
    /// In source file number `file`, starting at byte `offset`.
    File { file: usize, offset: u64 },
    /// All zeros (an ELF `p_filesz < p_memsz` tail, for instance).
    Zero,
}

/// A run of physical memory stored contiguously in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub range: PhysRange,
    pub source: SegmentSource,
}

/// Physical memory made of segments stored uncompressed in files: raw images, ELF
/// cores, LiME. Overlaps are resolved at build time: the first segment added wins.
#[derive(Debug)]
pub struct SegmentMemory {
    files: Vec<(PathBuf, Arc<File>)>,
    segments: Vec<Segment>,
    ranges: Vec<PhysRange>,
}

impl SegmentMemory {
    /// Build from source files and segments in any order. Parts of a segment that
    /// overlap an earlier one are dropped (the earlier segment wins), as /proc/vmcore's
    /// kernel-text PT_LOAD overlaps a RAM PT_LOAD holding the same bytes.
    pub fn new(files: Vec<(PathBuf, Arc<File>)>, segments: Vec<Segment>) -> Result<Self> {
        for s in &segments {
            if let SegmentSource::File { file, .. } = s.source {
                if file >= files.len() {
                    return Err(Error::internal(format!(
                        "segment at {:#x} names source file {file}, but there are {}",
                        s.range.start,
                        files.len()
                    )));
                }
            }
        }
        let kept = first_wins(segments);
        let ranges = normalize_ranges(kept.iter().map(|s| s.range).collect());
        Ok(SegmentMemory {
            files,
            segments: kept,
            ranges,
        })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    fn segment_index(&self, paddr: u64) -> Option<usize> {
        let i = self.segments.partition_point(|s| s.range.end <= paddr);
        self.segments
            .get(i)
            .filter(|s| s.range.contains(paddr))
            .map(|_| i)
    }
}

/// Resolve overlaps between segments, the first one (in `segments` order) winning each
/// byte: the parts of a segment that an earlier one covers are dropped. The result is
/// sorted by address and disjoint (touching pieces are not merged).
///
/// O(n log n) whatever the overlaps: `covered` holds the union of what is kept so far as
/// disjoint intervals (start -> end); a new segment keeps the gaps between the intervals
/// it meets, which then merge into one, so each interval is removed at most once
/// (issue #17: 65,534 ELF program headers took 39 s with pairwise cutting).
pub fn first_wins(segments: Vec<Segment>) -> Vec<Segment> {
    let mut covered: BTreeMap<u64, u64> = BTreeMap::new();
    let mut kept: Vec<Segment> = Vec::with_capacity(segments.len());
    for seg in segments.into_iter().filter(|s| !s.range.is_empty()) {
        let (start, end) = (seg.range.start, seg.range.end);
        // Intervals that overlap or touch [start, end): the one starting at or
        // before `start` (if it reaches `start`), then those starting inside.
        let mut hit: Vec<(u64, u64)> = Vec::new();
        if let Some((&s, &e)) = covered.range(..=start).next_back() {
            if e >= start {
                hit.push((s, e));
            }
        }
        hit.extend(
            covered
                .range((
                    std::ops::Bound::Excluded(start),
                    std::ops::Bound::Included(end),
                ))
                .map(|(&s, &e)| (s, e)),
        );
        let mut cur = start;
        for &(s, e) in &hit {
            if s > cur {
                kept.push(sub_segment(&seg, PhysRange::new(cur, s.min(end))));
            }
            cur = cur.max(e);
            if cur >= end {
                break;
            }
        }
        if cur < end {
            kept.push(sub_segment(&seg, PhysRange::new(cur, end)));
        }
        let mut merged = (start, end);
        for (s, e) in hit {
            covered.remove(&s);
            merged = (merged.0.min(s), merged.1.max(e));
        }
        covered.insert(merged.0, merged.1);
    }
    kept.sort_by_key(|s| s.range.start);
    kept
}

fn sub_segment(seg: &Segment, range: PhysRange) -> Segment {
    let source = match seg.source {
        SegmentSource::File { file, offset } => SegmentSource::File {
            file,
            offset: offset + (range.start - seg.range.start),
        },
        SegmentSource::Zero => SegmentSource::Zero,
    };
    Segment { range, source }
}

impl PhysicalMemory for SegmentMemory {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        read_in_pieces(paddr, buf, |addr, out| {
            let seg = self
                .segment_index(addr)
                .and_then(|i| self.segments.get(i))
                .ok_or(Error::Hole { paddr: addr })?;
            let n = (seg.range.end - addr).min(out.len() as u64) as usize;
            let out = &mut out[..n];
            match seg.source {
                SegmentSource::Zero => out.fill(0),
                SegmentSource::File { file, offset } => {
                    let (path, f) = self.files.get(file).ok_or_else(|| {
                        Error::internal(format!("segment names source file {file}"))
                    })?;
                    let off = offset + (addr - seg.range.start);
                    read_file_at(f, path, off, out, "input", || {
                        format!("the data of physical address {addr:#x}")
                    })?;
                }
            }
            Ok(n)
        })
    }

    /// Zero segments, and the holes of a sparse source file (`SEEK_HOLE`), are
    /// [`Backing::Zero`]; file data runs up to the next hole or the segment's end.
    fn backing(&self, paddr: u64) -> Option<Backing<'_>> {
        let seg = self.segments.get(self.segment_index(paddr)?)?;
        let len = seg.range.end - paddr;
        Some(match seg.source {
            SegmentSource::Zero => Backing::Zero { len },
            SegmentSource::File { file, offset } => {
                let f = &self.files.get(file)?.1;
                let offset = offset + (paddr - seg.range.start);
                match file_extent(f, offset) {
                    Some(Extent::Zero(n)) => Backing::Zero { len: n.min(len) },
                    Some(Extent::Data(n) | Extent::Missing(n)) => Backing::File {
                        file: f,
                        offset,
                        len: n.min(len),
                    },
                    // Past the end of the file (a truncated input: reading says so) or
                    // a file that cannot tell.
                    None => Backing::File {
                        file: f,
                        offset,
                        len,
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem_with(data: &[u8], segs: Vec<Segment>) -> SegmentMemory {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        SegmentMemory::new(vec![(PathBuf::from("t"), Arc::new(f))], segs).unwrap()
    }

    /// Against a per-address reference over a small space: every pair of lists cut
    /// from a few patterns, edges touching, overlapping and inside one another.
    #[test]
    fn subtract_ranges_matches_a_per_address_reference() {
        let lists: Vec<Vec<PhysRange>> = vec![
            vec![],
            vec![PhysRange::new(0, 40)],
            vec![
                PhysRange::new(2, 5),
                PhysRange::new(5, 9),
                PhysRange::new(20, 30),
            ],
            vec![
                PhysRange::new(0, 1),
                PhysRange::new(8, 21),
                PhysRange::new(29, 35),
            ],
            vec![
                PhysRange::new(3, 4),
                PhysRange::new(10, 12),
                PhysRange::new(39, 40),
            ],
        ];
        let set = |l: &[PhysRange]| {
            (0..40u64)
                .filter(|&a| l.iter().any(|r| r.contains(a)))
                .collect::<Vec<_>>()
        };
        for a in &lists {
            for b in &lists {
                let a = normalize_ranges(a.clone());
                let b = normalize_ranges(b.clone());
                let got = subtract_ranges(&a, &b);
                let want: Vec<u64> = set(&a)
                    .into_iter()
                    .filter(|x| !set(&b).contains(x))
                    .collect();
                assert_eq!(set(&got), want, "{a:?} less {b:?}");
                assert_eq!(
                    normalize_ranges(got.clone()),
                    got,
                    "sorted, disjoint, not empty"
                );
            }
        }
    }

    #[test]
    fn normalize_merges_touching_and_overlapping() {
        let r = normalize_ranges(vec![
            PhysRange::new(10, 20),
            PhysRange::new(0, 5),
            PhysRange::new(20, 25),
            PhysRange::new(22, 30),
            PhysRange::new(40, 40),
        ]);
        assert_eq!(r, vec![PhysRange::new(0, 5), PhysRange::new(10, 30)]);
    }

    #[test]
    fn reads_span_segments_and_holes_error() {
        let data: Vec<u8> = (0..=255).collect();
        let m = mem_with(
            &data,
            vec![
                Segment {
                    range: PhysRange::new(0x1000, 0x1010),
                    source: SegmentSource::File {
                        file: 0,
                        offset: 16,
                    },
                },
                Segment {
                    range: PhysRange::new(0x1010, 0x1020),
                    source: SegmentSource::Zero,
                },
                Segment {
                    range: PhysRange::new(0x2000, 0x2004),
                    source: SegmentSource::File { file: 0, offset: 0 },
                },
            ],
        );
        assert_eq!(
            m.ranges(),
            &[
                PhysRange::new(0x1000, 0x1020),
                PhysRange::new(0x2000, 0x2004)
            ]
        );
        let mut b = [0xAAu8; 20];
        m.read_at(0x100c, &mut b).unwrap();
        assert_eq!(&b[..4], &[28, 29, 30, 31]);
        assert!(b[4..].iter().all(|&x| x == 0));
        let mut b = [0u8; 4];
        m.read_at(0x2000, &mut b).unwrap();
        assert_eq!(b, [0, 1, 2, 3]);
        assert!(matches!(
            m.read_at(0x1ffe, &mut b),
            Err(Error::Hole { paddr: 0x1ffe })
        ));
        assert!(matches!(
            m.read_at(0x2002, &mut b),
            Err(Error::Hole { paddr: 0x2004 })
        ));
        assert!(m.is_ram(0x1000, 0x20));
        assert!(!m.is_ram(0x1000, 0x21));
    }

    #[test]
    fn earlier_segment_wins_overlap() {
        let data: Vec<u8> = (0..=255).collect();
        let m = mem_with(
            &data,
            vec![
                Segment {
                    range: PhysRange::new(100, 200),
                    source: SegmentSource::File { file: 0, offset: 0 },
                },
                // Overlaps the middle of the first; only [80,100) and [200,220) survive.
                Segment {
                    range: PhysRange::new(80, 220),
                    source: SegmentSource::Zero,
                },
            ],
        );
        assert_eq!(m.segments().len(), 3);
        let mut b = [0xFFu8; 1];
        m.read_at(150, &mut b).unwrap();
        assert_eq!(b[0], 50);
        m.read_at(90, &mut b).unwrap();
        assert_eq!(b[0], 0);
        assert_eq!(m.ranges(), &[PhysRange::new(80, 220)]);
    }

    #[test]
    fn truncated_file_is_a_format_error() {
        let m = mem_with(
            &[1, 2, 3],
            vec![Segment {
                range: PhysRange::new(0, 10),
                source: SegmentSource::File { file: 0, offset: 0 },
            }],
        );
        let mut b = [0u8; 10];
        let e = m.read_at(0, &mut b).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
