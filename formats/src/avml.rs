//! AVML compressed images (`avml --compress`, `avml convert --format lime_compressed`;
//! docs/formats.md#avml).
//!
//! The file is a sequence of ranges with LiME's 32-byte header ([`crate::lime`]) but
//! magic "AVML" and version 2. Each header is followed by a snappy *framed* stream
//! holding the range's bytes, then a u64 LE with the stream's compressed length. avml
//! cuts ranges into blocks of at most 16 MiB and drops all-zero blocks, so the ranges
//! are discontinuous wherever the RAM was zero: those bytes are holes here, as in the
//! file. Version-1 (uncompressed LiME) ranges may be mixed in; avml reads both kinds.
//!
//! Random access: opening walks the chunk headers of every stream (4 bytes per chunk,
//! plus the uncompressed length at the start of a compressed chunk) without
//! decompressing anything, building a [`ChunkIndex`] from physical address to the
//! chunk's place in the file. A snappy chunk holds at most 64 KiB, so a read decodes
//! only the chunks it touches, and a small [`ChunkCache`] (LRU, bounded) keeps the last
//! few decoded so that many small reads of one chunk decode it once. Every decoded
//! chunk's masked CRC-32C is checked: a corrupt file is an error naming the chunk's
//! file offset, never wrong bytes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dumpconv_core::memory::{normalize_ranges, read_file_at, read_in_pieces};
use dumpconv_core::{Dump, Error, PhysRange, PhysicalMemory, Result};

use crate::bytes::le_u32;
use crate::input::{fits, Input};
use crate::lime::{
    check_order, check_plain_data, read_header, AVML_MAGIC, AVML_VERSION, HEADER_LEN,
};
use crate::options::OpenOptions;

const FMT: &str = "AVML";

/// Largest range avml puts under one header: it cuts each RAM range into blocks of at
/// most this many bytes from the range's start (and leaves out the all-zero ones).
pub const AVML_BLOCK: u64 = 16 << 20;
/// Largest uncompressed chunk the snappy framing format allows.
pub const MAX_CHUNK: u32 = 65536;
/// Decoded chunks kept by default: 64 × 64 KiB = 4 MiB.
pub const CACHE_CHUNKS: usize = 64;

const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_PADDING: u8 = 0xfe;
const CHUNK_STREAM_ID: u8 = 0xff;
const STREAM_ID: &[u8; 6] = b"sNaPpY";

/// True if `head` starts with an AVML version-2 header.
pub fn probe(head: &[u8], _file_len: u64) -> bool {
    head.len() >= HEADER_LEN as usize
        && le_u32(head, 0) == Ok(AVML_MAGIC)
        && le_u32(head, 4) == Ok(AVML_VERSION)
}

/// How a chunk's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// Snappy-compressed, CRC first.
    Snappy,
    /// Stored in a snappy uncompressed chunk, CRC first.
    Stored,
    /// Plain bytes of a version-1 (LiME) range: no CRC, may be longer than 64 KiB.
    Plain,
}

/// One run of physical memory stored in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First physical address.
    pub start: u64,
    /// Uncompressed length (at most [`MAX_CHUNK`] unless `Plain`).
    pub len: u64,
    /// File offset of the chunk's body: its CRC for snappy chunks, its data for `Plain`.
    pub body: u64,
    /// Body length in the file (for snappy chunks, CRC included).
    pub body_len: u32,
    pub kind: ChunkKind,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Chunks sorted by physical address, not overlapping.
#[derive(Debug, Default)]
pub struct ChunkIndex {
    chunks: Vec<Chunk>,
}

impl ChunkIndex {
    /// Append a chunk; it must start at or after the end of the last one.
    pub fn push(&mut self, c: Chunk) {
        debug_assert!(self.chunks.last().is_none_or(|l| l.end() <= c.start));
        self.chunks.push(c);
    }

    /// Index of the chunk holding `paddr`.
    pub fn find(&self, paddr: u64) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.end() <= paddr);
        self.chunks
            .get(i)
            .filter(|c| c.start <= paddr && paddr < c.end())
            .map(|_| i)
    }

    pub fn get(&self, i: usize) -> Option<&Chunk> {
        self.chunks.get(i)
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The physical ranges the chunks cover, merged.
    pub fn ranges(&self) -> Vec<PhysRange> {
        normalize_ranges(
            self.chunks
                .iter()
                .map(|c| PhysRange::new(c.start, c.end()))
                .collect(),
        )
    }
}

/// A small least-recently-used cache of decoded chunks, keyed by chunk index. Bounded
/// by a chunk count; lookups scan the few slots (cheaper than hashing at this size).
#[derive(Debug)]
pub struct ChunkCache {
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    tick: u64,
    /// (chunk index, bytes, last use).
    slots: Vec<(usize, Arc<[u8]>, u64)>,
    hits: u64,
    misses: u64,
}

impl ChunkCache {
    pub fn new(capacity: usize) -> Self {
        ChunkCache {
            capacity: capacity.max(1),
            state: Mutex::new(CacheState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding the lock leaves the slots consistent (each update is one
        // push or one assignment), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached bytes of chunk `key`, marking them used.
    pub fn get(&self, key: usize) -> Option<Arc<[u8]>> {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        let found = s.slots.iter_mut().find(|(k, _, _)| *k == key).map(|slot| {
            slot.2 = tick;
            Arc::clone(&slot.1)
        });
        if found.is_some() {
            s.hits += 1;
        } else {
            s.misses += 1;
        }
        found
    }

    /// Keep `data` as chunk `key`, evicting the least recently used when full.
    pub fn insert(&self, key: usize, data: Arc<[u8]>) {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        if let Some(slot) = s.slots.iter_mut().find(|(k, _, _)| *k == key) {
            *slot = (key, data, tick);
            return;
        }
        if s.slots.len() < self.capacity {
            s.slots.push((key, data, tick));
        } else if let Some(oldest) = s.slots.iter_mut().min_by_key(|(_, _, used)| *used) {
            *oldest = (key, data, tick);
        }
    }

    /// Chunk indexes currently cached.
    pub fn keys(&self) -> Vec<usize> {
        self.lock().slots.iter().map(|(k, _, _)| *k).collect()
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        let s = self.lock();
        (s.hits, s.misses)
    }
}

/// Snappy's masked CRC-32C of `data`.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// The physical memory of an AVML file.
#[derive(Debug)]
pub struct AvmlMemory {
    path: PathBuf,
    file: Arc<File>,
    index: ChunkIndex,
    ranges: Vec<PhysRange>,
    cache: ChunkCache,
}

impl AvmlMemory {
    pub fn index(&self) -> &ChunkIndex {
        &self.index
    }

    pub fn cache(&self) -> &ChunkCache {
        &self.cache
    }

    fn corrupt(&self, c: &Chunk, msg: String) -> Error {
        Error::format(
            self.path.clone(),
            c.body.saturating_sub(4),
            FMT,
            format!(
                "snappy chunk holding physical {:#x}-{:#x}: {msg}",
                c.start,
                c.end() - 1
            ),
        )
    }

    /// Decode snappy chunk `c` into `out` (exactly `c.len` bytes) and check its CRC.
    fn decode_into(&self, c: &Chunk, out: &mut [u8]) -> Result<()> {
        let mut body = vec![0u8; c.body_len as usize];
        read_file_at(&self.file, &self.path, c.body, &mut body, FMT, || {
            format!(
                "the snappy chunk of physical {:#x}-{:#x}",
                c.start,
                c.end() - 1
            )
        })?;
        let stored_crc = le_u32(&body, 0).map_err(|e| e.at(&self.path, c.body, FMT))?;
        let data = body.get(4..).unwrap_or(&[]);
        match c.kind {
            ChunkKind::Snappy => {
                let n = snap::raw::Decoder::new()
                    .decompress(data, out)
                    .map_err(|e| self.corrupt(c, format!("corrupt snappy data: {e}")))?;
                if n as u64 != c.len {
                    return Err(self.corrupt(
                        c,
                        format!("decoded {n:#x} bytes, its header said {:#x}", c.len),
                    ));
                }
            }
            ChunkKind::Stored | ChunkKind::Plain => {
                if data.len() != out.len() {
                    return Err(self.corrupt(c, "stored chunk has the wrong length".into()));
                }
                out.copy_from_slice(data);
            }
        }
        let crc = masked_crc32c(out);
        if crc != stored_crc {
            return Err(self.corrupt(
                c,
                format!(
                    "CRC mismatch (stored {stored_crc:#010x}, computed {crc:#010x}): corrupt data"
                ),
            ));
        }
        Ok(())
    }

    /// The decoded bytes of snappy chunk `i`, from the cache or decoded now.
    fn decoded(&self, i: usize, c: &Chunk) -> Result<Arc<[u8]>> {
        if let Some(d) = self.cache.get(i) {
            return Ok(d);
        }
        let mut out = vec![0u8; c.len as usize];
        self.decode_into(c, &mut out)?;
        let out: Arc<[u8]> = out.into();
        self.cache.insert(i, Arc::clone(&out));
        Ok(out)
    }
}

impl PhysicalMemory for AvmlMemory {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
        read_in_pieces(paddr, buf, |addr, out| {
            let i = self.index.find(addr).ok_or(Error::Hole { paddr: addr })?;
            let c = self.index.get(i).ok_or(Error::Hole { paddr: addr })?;
            let skip = addr - c.start;
            let n = (c.len - skip).min(out.len() as u64) as usize;
            let out = &mut out[..n];
            match c.kind {
                ChunkKind::Plain => {
                    read_file_at(&self.file, &self.path, c.body + skip, out, FMT, || {
                        "a range's data".into()
                    })?;
                }
                // A whole chunk wanted: decode straight into the caller's buffer, past
                // the cache (a sequential reader would only evict useful entries).
                _ if skip == 0 && n as u64 == c.len && self.cache.get(i).is_none() => {
                    self.decode_into(c, out)?;
                }
                _ => {
                    let d = self.decoded(i, c)?;
                    let src = d.get(skip as usize..skip as usize + n).ok_or_else(|| {
                        self.corrupt(c, "decoded chunk shorter than indexed".into())
                    })?;
                    out.copy_from_slice(src);
                }
            }
            Ok(n)
        })
    }
}

/// Walk the snappy stream of the version-2 range `range` whose stream starts at
/// `stream`, appending its chunks to `index`. Returns the file offset just past the
/// stream (where the compressed-length trailer is).
fn index_stream(
    input: &Input,
    range: PhysRange,
    stream: u64,
    index: &mut ChunkIndex,
) -> Result<u64> {
    let want = range.len();
    let mut produced = 0u64;
    let mut p = stream;
    let mut first = true;
    let err = |off: u64, msg: String| {
        Error::format(
            input.path.clone(),
            off,
            FMT,
            format!(
                "snappy stream of range {:#x}-{:#x}: {msg}",
                range.start,
                range.end - 1
            ),
        )
    };
    while produced < want {
        if !fits(p, 4, input.len) {
            return Err(err(
                p,
                format!(
                    "the file ends after {produced:#x} of {want:#x} bytes \
                     (truncated file, or a lying header)"
                ),
            ));
        }
        let mut h = [0u8; 4];
        input.read_exact_at(&mut h, p, FMT, "snappy chunk header")?;
        let kind = h[0];
        let len = u32::from(h[1]) | u32::from(h[2]) << 8 | u32::from(h[3]) << 16;
        let body = p + 4;
        if !fits(body, u64::from(len), input.len) {
            return Err(err(
                p,
                format!("chunk of {len:#x} bytes runs past the end of the file (truncated?)"),
            ));
        }
        if first && kind != CHUNK_STREAM_ID {
            return Err(err(
                p,
                format!("does not start with a snappy stream identifier (chunk type {kind:#04x})"),
            ));
        }
        first = false;
        match kind {
            CHUNK_STREAM_ID => {
                let mut id = [0u8; 6];
                if len != 6 {
                    return Err(err(p, format!("stream identifier of length {len}, not 6")));
                }
                input.read_exact_at(&mut id, body, FMT, "snappy stream identifier")?;
                if &id != STREAM_ID {
                    return Err(err(p, "bad snappy stream identifier".into()));
                }
            }
            CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                if len < 5 {
                    return Err(err(p, format!("data chunk of only {len} bytes")));
                }
                let n = if kind == CHUNK_UNCOMPRESSED {
                    len - 4
                } else {
                    // The uncompressed length is a varint right after the CRC.
                    let mut v = [0u8; 9];
                    let take = (len as usize).min(9);
                    input.read_exact_at(&mut v[..take], body, FMT, "snappy chunk")?;
                    let mut n = 0u64;
                    let mut ok = false;
                    for (shift, b) in v[4..take].iter().enumerate() {
                        n |= u64::from(b & 0x7f) << (7 * shift);
                        if b & 0x80 == 0 {
                            ok = true;
                            break;
                        }
                    }
                    if !ok || n > u64::from(MAX_CHUNK) {
                        return Err(err(p, "corrupt snappy chunk length".into()));
                    }
                    n as u32
                };
                if n == 0 || n > MAX_CHUNK {
                    return Err(err(p, format!("chunk of {n:#x} uncompressed bytes")));
                }
                if produced + u64::from(n) > want {
                    return Err(err(
                        p,
                        format!(
                            "holds more than the range's {want:#x} bytes (corrupt stream or \
                             lying header)"
                        ),
                    ));
                }
                index.push(Chunk {
                    start: range.start + produced,
                    len: u64::from(n),
                    body,
                    body_len: len,
                    kind: if kind == CHUNK_COMPRESSED {
                        ChunkKind::Snappy
                    } else {
                        ChunkKind::Stored
                    },
                });
                produced += u64::from(n);
            }
            CHUNK_PADDING | 0x80..=0xfd => {}
            _ => {
                return Err(err(
                    p,
                    format!("reserved unskippable chunk type {kind:#04x} (corrupt stream)"),
                ))
            }
        }
        p = body + u64::from(len);
    }
    Ok(p)
}

/// Open an AVML file (version-1 ranges mixed in are read too).
pub fn open(path: &Path, _opts: &OpenOptions) -> Result<Dump> {
    let input = Input::open(path)?;
    let mut index = ChunkIndex::default();
    let mut offset = 0u64;
    let mut prev_end = None;
    let (mut headers, mut compressed) = (0usize, 0u64);
    while offset < input.len {
        let h = read_header(&input, offset, FMT)?;
        check_order(&input, offset, FMT, prev_end, h.range)?;
        let data = offset + HEADER_LEN;
        headers += 1;
        if h.version == AVML_VERSION {
            let end = index_stream(&input, h.range, data, &mut index)?;
            let mut t = [0u8; 8];
            if !fits(end, 8, input.len) {
                return Err(Error::format(
                    input.path.clone(),
                    end,
                    FMT,
                    "the file ends before the compressed-length field of a range \
                     (truncated file?)",
                ));
            }
            input.read_exact_at(&mut t, end, FMT, "compressed length")?;
            let stated = u64::from_le_bytes(t);
            let actual = end - data;
            if stated != actual {
                return Err(Error::format(
                    input.path.clone(),
                    end,
                    FMT,
                    format!(
                        "range {:#x}-{:#x}: the compressed-length field says {stated:#x} \
                         bytes, but its snappy stream is {actual:#x} bytes (corrupt file)",
                        h.range.start,
                        h.range.end - 1
                    ),
                ));
            }
            compressed += actual;
            offset = end + 8;
        } else {
            let len = h.range.len();
            check_plain_data(&input, data, FMT, h.range)?;
            index.push(Chunk {
                start: h.range.start,
                len,
                body: data,
                body_len: 0,
                kind: ChunkKind::Plain,
            });
            offset = data + len;
        }
        prev_end = Some(h.range.end);
    }
    let ranges = index.ranges();
    let ram: u64 = ranges.iter().map(PhysRange::len).sum();
    let details = vec![
        ("file size".into(), format!("{:#x}", input.len)),
        ("range headers".into(), headers.to_string()),
        ("snappy chunks".into(), index.len().to_string()),
        ("compressed bytes".into(), format!("{compressed:#x}")),
        ("RAM bytes".into(), format!("{ram:#x}")),
        (
            "note".into(),
            "avml drops all-zero blocks: zero RAM shows as holes. No CPU state, no \
             VMCOREINFO (give --cr3/--cpu-state, --vmcoreinfo)"
                .into(),
        ),
    ];
    let memory = AvmlMemory {
        path: input.path.clone(),
        file: Arc::clone(&input.file),
        index,
        ranges,
        cache: ChunkCache::new(CACHE_CHUNKS),
    };
    Ok(input.memory_only_dump("avml", details, Arc::new(memory)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::le_u64;
    use crate::lime::tests::{file, ranges_file};
    use std::io::Write;

    /// An AVML file made with the snap crate's frame encoder, as avml does.
    fn avml(ranges: &[(u64, &[u8])]) -> Vec<u8> {
        ranges_file(AVML_VERSION, ranges, |data| {
            let mut enc = snap::write::FrameEncoder::new(Vec::new());
            enc.write_all(data).unwrap();
            let mut s = enc.into_inner().unwrap();
            let len = s.len() as u64;
            s.extend_from_slice(&len.to_le_bytes());
            s
        })
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn chunk_index_finds_chunks_and_holes() {
        let mut ix = ChunkIndex::default();
        for (i, start) in [0u64, 0x10000, 0x30000].iter().enumerate() {
            ix.push(Chunk {
                start: *start,
                len: 0x10000,
                body: i as u64 * 100,
                body_len: 10,
                kind: ChunkKind::Snappy,
            });
        }
        assert_eq!(ix.find(0), Some(0));
        assert_eq!(ix.find(0xffff), Some(0));
        assert_eq!(ix.find(0x10000), Some(1));
        assert_eq!(ix.find(0x20000), None);
        assert_eq!(ix.find(0x3ffff), Some(2));
        assert_eq!(ix.find(0x40000), None);
        assert_eq!(
            ix.ranges(),
            vec![PhysRange::new(0, 0x20000), PhysRange::new(0x30000, 0x40000)]
        );
    }

    #[test]
    fn lru_cache_evicts_least_recently_used() {
        let c = ChunkCache::new(2);
        let d = |b: u8| -> Arc<[u8]> { vec![b; 4].into() };
        c.insert(1, d(1));
        c.insert(2, d(2));
        assert_eq!(c.get(1).unwrap()[0], 1); // 1 is now the most recent
        c.insert(3, d(3)); // evicts 2
        let mut k = c.keys();
        k.sort();
        assert_eq!(k, vec![1, 3]);
        assert!(c.get(2).is_none());
        c.insert(3, d(33)); // replace in place
        assert_eq!(c.get(3).unwrap()[0], 33);
        assert_eq!(c.keys().len(), 2);
        assert_eq!(c.stats(), (2, 1));
    }

    #[test]
    fn random_reads_match_and_decode_one_chunk_each() {
        let a = pattern(0x30000, 1);
        let b = pattern(0x12345 & !0xfff, 2);
        let f = file(&avml(&[(0x1000, &a), (0x100000, &b)]));
        let d = open(f.path(), &OpenOptions::default()).unwrap();
        assert_eq!(d.format, "avml");
        assert_eq!(
            d.memory.ranges(),
            &[
                PhysRange::new(0x1000, 0x31000),
                PhysRange::new(0x100000, 0x100000 + b.len() as u64)
            ]
        );
        let mut whole = vec![0u8; a.len()];
        d.memory.read_at(0x1000, &mut whole).unwrap();
        assert_eq!(whole, a);
        // Unaligned reads across chunk boundaries and ranges' ends.
        for (addr, len) in [
            (0x1000 + 0xfff0, 0x20),
            (0x100000 + 3, 0x10001),
            (0x30fff, 1),
        ] {
            let mut buf = vec![0u8; len];
            d.memory.read_at(addr, &mut buf).unwrap();
            let (base, src) = if addr >= 0x100000 {
                (0x100000, &b)
            } else {
                (0x1000, &a)
            };
            let o = (addr - base) as usize;
            assert_eq!(buf, src[o..o + len], "{addr:#x}");
        }
        let mut one = [0u8; 1];
        assert!(matches!(
            d.memory.read_at(0x31000, &mut one),
            Err(Error::Hole { paddr: 0x31000 })
        ));
    }

    #[test]
    fn small_reads_hit_the_cache() {
        let a = pattern(0x20000, 3);
        let f = file(&avml(&[(0, &a)]));
        // Build the memory by hand to look at its cache.
        let input = Input::open(f.path()).unwrap();
        let mut index = ChunkIndex::default();
        let end = index_stream(&input, PhysRange::new(0, a.len() as u64), 32, &mut index).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(
            le_u64(&std::fs::read(f.path()).unwrap(), end as usize).unwrap(),
            end - 32
        );
        let m = AvmlMemory {
            path: input.path.clone(),
            file: Arc::clone(&input.file),
            ranges: index.ranges(),
            index,
            cache: ChunkCache::new(4),
        };
        let mut page = [0u8; 4096];
        for p in 0..32u64 {
            m.read_at(p * 4096, &mut page).unwrap();
            assert_eq!(page[..], a[p as usize * 4096..][..4096]);
        }
        // 32 page reads of two chunks: two decodes, 30 hits.
        assert_eq!(m.cache().stats(), (30, 2));
    }

    #[test]
    fn corrupt_streams_are_errors_with_offsets() {
        let a = pattern(0x20000, 4);
        let good = avml(&[(0, &a)]);
        let open_err = |bytes: &[u8]| {
            let f = file(bytes);
            let e = open(f.path(), &OpenOptions::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&f.path().display().to_string()), "{e}");
            e
        };
        // Lying compressed length.
        let mut v = good.clone();
        let n = v.len();
        v[n - 8] ^= 1;
        let e = open_err(&v);
        assert!(e.contains("compressed-length field"), "{e}");
        // Truncated.
        let e = open_err(&good[..good.len() - 100]);
        assert!(e.contains("truncated"), "{e}");
        // Corrupt data: detected when read, with the chunk's offset.
        let mut v = good.clone();
        let mid = 32 + 10 + 4 + 200; // inside the first data chunk
        v[mid] ^= 0x55;
        let f = file(&v);
        let d = open(f.path(), &OpenOptions::default()).unwrap();
        let mut buf = vec![0u8; a.len()];
        let e = d.memory.read_at(0, &mut buf).unwrap_err().to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        assert!(e.contains("at offset 0x2a"), "{e}");
    }
}
