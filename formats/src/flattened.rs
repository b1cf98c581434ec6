//! makedumpfile's flattened format (`makedumpfile -F`, QEMU `kdump-*`;
//! docs/formats.md#kdump-flattened):
//! a way to stream a file that would normally be written with seeks.
//!
//! ```text
//! 0     "makedumpfile" + 4 NULs | type = 1 (i64 BE) | version = 1 (i64 BE) | zeros to 4096
//! 4096  { offset: i64 BE, size: i64 BE, size bytes to place at `offset` }...
//!       { -1, -1 }  end marker
//! ```
//!
//! Writers get the framing helpers; readers get [`FlatIndex`], a sorted table of the
//! records that serves positioned reads of the reassembled file without reassembling it
//! (memory is O(records)).

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use dumpconv_core::{Error, Result, Sink};

/// Signature field: "makedumpfile" NUL-padded to 16 bytes (crash compares 13 bytes, so
/// the NUL after the name matters).
pub const FLAT_SIGNATURE: [u8; 16] = *b"makedumpfile\0\0\0\0";
/// Size of the file header (`MAX_SIZE_MDF_HEADER`).
pub const FLAT_HEADER_SIZE: usize = 4096;
pub const TYPE_FLAT_HEADER: i64 = 1;
pub const VERSION_FLAT_HEADER: i64 = 1;
/// Size of one record header.
pub const RECORD_HEADER_SIZE: usize = 16;

const FORMAT: &str = "flattened";

/// Largest reassembled file a record may reach into: a kdump file of the largest
/// physical address space (2^52 bytes of pages, their bitmaps and descriptors) stays
/// below 2^54; a record beyond 2^56 is a lying header.
const MAX_LOGICAL_LEN: u64 = 1 << 56;

/// The 4096-byte file header.
pub fn flat_header() -> Vec<u8> {
    let mut h = vec![0u8; FLAT_HEADER_SIZE];
    h[..16].copy_from_slice(&FLAT_SIGNATURE);
    h[16..24].copy_from_slice(&TYPE_FLAT_HEADER.to_be_bytes());
    h[24..32].copy_from_slice(&VERSION_FLAT_HEADER.to_be_bytes());
    h
}

/// A record header placing `size` bytes at `offset` of the reassembled file.
pub fn record_header(offset: u64, size: u64) -> [u8; RECORD_HEADER_SIZE] {
    let mut h = [0u8; RECORD_HEADER_SIZE];
    h[..8].copy_from_slice(&offset.to_be_bytes());
    h[8..].copy_from_slice(&size.to_be_bytes());
    h
}

/// The end marker: offset and size both −1.
pub fn end_marker() -> [u8; RECORD_HEADER_SIZE] {
    [0xff; RECORD_HEADER_SIZE]
}

/// Append one record (header and payload) to a stream. Empty payloads write nothing.
pub fn write_record(sink: &mut dyn Sink, offset: u64, payload: &[u8]) -> Result<()> {
    if payload.is_empty() {
        return Ok(());
    }
    sink.write_all(&record_header(offset, payload.len() as u64))?;
    sink.write_all(payload)
}

/// True if `head` starts with a flattened-format header (signature and type 1; the
/// version is ignored, as crash does).
pub fn is_flattened(head: &[u8]) -> bool {
    head.len() >= 24
        && head[..13] == FLAT_SIGNATURE[..13]
        && head[16..24] == TYPE_FLAT_HEADER.to_be_bytes()
}

/// The first record's target offset and the first bytes of its payload, if `head`
/// holds them; lets a probe peek at what a flattened file contains.
pub fn first_record(head: &[u8]) -> Option<(u64, &[u8])> {
    let h = head.get(FLAT_HEADER_SIZE..FLAT_HEADER_SIZE + RECORD_HEADER_SIZE)?;
    let offset = i64::from_be_bytes(h[..8].try_into().ok()?);
    let size = i64::from_be_bytes(h[8..].try_into().ok()?);
    if offset < 0 || size < 0 {
        return None;
    }
    let start = FLAT_HEADER_SIZE + RECORD_HEADER_SIZE;
    let end = start
        .saturating_add(usize::try_from(size).ok()?)
        .min(head.len());
    Some((offset as u64, &head[start..end]))
}

/// One record: `len` bytes for reassembled offset `offset`, found at `file_pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlatRecord {
    pub offset: u64,
    pub len: u64,
    pub file_pos: u64,
}

impl FlatRecord {
    fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Sorted, non-overlapping records of a flattened file, for positioned reads of the
/// reassembled file. Bytes no record covers read as zeros (makedumpfile leaves them as
/// holes when it reassembles).
#[derive(Debug, Clone)]
pub struct FlatIndex {
    records: Vec<FlatRecord>,
    /// Size of the reassembled file: the end of the furthest record.
    logical_len: u64,
    /// Payload bytes present in the flattened file (bounds what a reader may allocate).
    payload_len: u64,
    /// False if the file ended before the end marker (a cut stream).
    complete: bool,
}

impl FlatIndex {
    /// Scan every record header once. A file that stops before the end marker is
    /// accepted with `complete() == false` (a partial record keeps the bytes present);
    /// a record with a negative offset or size, or one whose end overflows, is an error.
    pub fn scan(file: &File, path: &Path) -> Result<FlatIndex> {
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; 32];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| Error::format(path.to_path_buf(), 0u64, FORMAT, "file too short"))?;
        if !is_flattened(&head) {
            return Err(Error::format(
                path.to_path_buf(),
                0u64,
                FORMAT,
                "no \"makedumpfile\" signature with type 1",
            ));
        }
        // Record payloads are skipped with seek_relative, which keeps the buffer when
        // the next header is already in it: one pass, few system calls.
        let mut rd = BufReader::with_capacity(64 * 1024, file);
        rd.seek(std::io::SeekFrom::Start(FLAT_HEADER_SIZE as u64))
            .map_err(|e| Error::io(path, e))?;
        let mut pos = FLAT_HEADER_SIZE as u64;
        let mut records = Vec::new();
        let mut complete = false;
        let mut overlaps = false;
        let mut last_end = 0u64;
        let mut sorted = true;
        let mut payload_len = 0u64;
        loop {
            let mut h = [0u8; RECORD_HEADER_SIZE];
            if pos + RECORD_HEADER_SIZE as u64 > file_len {
                break;
            }
            rd.read_exact(&mut h).map_err(|e| Error::io(path, e))?;
            let offset = i64::from_be_bytes(h[..8].try_into().unwrap_or_default());
            let size = i64::from_be_bytes(h[8..].try_into().unwrap_or_default());
            if offset == -1 {
                // makedumpfile -R wants both fields −1; crash looks at the offset only.
                complete = true;
                break;
            }
            let bad = |msg: String| Error::format(path.to_path_buf(), pos, FORMAT, msg);
            if offset < 0 || size < 0 {
                return Err(bad(format!(
                    "record header with negative offset {offset} or size {size}"
                )));
            }
            let (offset, mut len) = (offset as u64, size as u64);
            if offset
                .checked_add(len)
                .is_none_or(|end| end > MAX_LOGICAL_LEN)
            {
                return Err(bad(format!(
                    "record at offset {offset:#x} with size {len:#x} overflows or ends \
                     past 2^56, beyond any dump file (corrupt record header)"
                )));
            }
            let file_pos = pos + RECORD_HEADER_SIZE as u64;
            let avail = file_len - file_pos;
            let truncated = len > avail;
            len = len.min(avail);
            if len > 0 {
                let r = FlatRecord {
                    offset,
                    len,
                    file_pos,
                };
                if r.offset < last_end {
                    sorted = false;
                }
                last_end = last_end.max(r.end());
                records.push(r);
                payload_len += len;
            }
            if truncated {
                break;
            }
            pos = file_pos + len;
            rd.seek_relative(len as i64)
                .map_err(|e| Error::io(path, e))?;
        }
        if !sorted {
            records.sort_by_key(|r| r.offset);
            overlaps = records.windows(2).any(|w| w[0].end() > w[1].offset);
        }
        if overlaps {
            // Rare (dumpconv and makedumpfile never emit overlaps): resolve them as a
            // reassembly would, the record later in the file winning.
            records.sort_by_key(|r| r.file_pos);
            records = resolve_overlaps(records);
        }
        Ok(FlatIndex {
            records,
            logical_len: last_end,
            payload_len,
            complete,
        })
    }

    pub fn records(&self) -> &[FlatRecord] {
        &self.records
    }

    /// Size of the reassembled file.
    pub fn logical_len(&self) -> u64 {
        self.logical_len
    }

    /// Payload bytes actually present.
    pub fn payload_len(&self) -> u64 {
        self.payload_len
    }

    /// True if the end marker was found.
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Read `buf.len()` bytes of the reassembled file at `offset`. Gaps read as zeros;
    /// reading past `logical_len` is an `UnexpectedEof` error.
    pub fn read_exact_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.logical_len)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of the reassembled file",
                )
            })?;
        let mut i = self.records.partition_point(|r| r.end() <= offset);
        let mut at = offset;
        while at < end {
            let done = (at - offset) as usize;
            match self.records.get(i) {
                Some(r) if r.offset <= at => {
                    let n = (r.end().min(end) - at) as usize;
                    file.read_exact_at(&mut buf[done..done + n], r.file_pos + (at - r.offset))?;
                    at += n as u64;
                    i += 1;
                }
                next => {
                    let gap_end = next.map_or(end, |r| r.offset.min(end));
                    let n = (gap_end - at) as usize;
                    buf[done..done + n].fill(0);
                    at += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Make records disjoint, later records (in `records` order) winning. Builds the result
/// in a map of disjoint intervals, cutting what each new record covers.
fn resolve_overlaps(records: Vec<FlatRecord>) -> Vec<FlatRecord> {
    use std::collections::BTreeMap;
    let mut map: BTreeMap<u64, FlatRecord> = BTreeMap::new();
    for r in records {
        let (s, e) = (r.offset, r.end());
        // Everything that starts before `e` and ends after `s` overlaps.
        let hit: Vec<FlatRecord> = map
            .range(..e)
            .rev()
            .take_while(|(_, x)| x.end() > s)
            .map(|(_, x)| *x)
            .collect();
        for x in hit {
            map.remove(&x.offset);
            if x.offset < s {
                map.insert(
                    x.offset,
                    FlatRecord {
                        offset: x.offset,
                        len: s - x.offset,
                        file_pos: x.file_pos,
                    },
                );
            }
            if x.end() > e {
                map.insert(
                    e,
                    FlatRecord {
                        offset: e,
                        len: x.end() - e,
                        file_pos: x.file_pos + (e - x.offset),
                    },
                );
            }
        }
        map.insert(s, r);
    }
    map.into_values().collect()
}

/// A file that may be flattened: reads go through the index when it is.
#[derive(Debug)]
pub struct MaybeFlat {
    pub path: PathBuf,
    pub file: File,
    pub flat: Option<FlatIndex>,
    file_len: u64,
}

impl MaybeFlat {
    /// Open `path`, detecting the flattened header.
    pub fn open(path: &Path) -> Result<MaybeFlat> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; 32];
        let n = read_up_to(&file, 0, &mut head).map_err(|e| Error::io(path, e))?;
        let flat = if is_flattened(&head[..n]) {
            Some(FlatIndex::scan(&file, path)?)
        } else {
            None
        };
        Ok(MaybeFlat {
            path: path.to_path_buf(),
            file,
            flat,
            file_len,
        })
    }

    /// Length of the (reassembled) file.
    pub fn len(&self) -> u64 {
        self.flat
            .as_ref()
            .map_or(self.file_len, FlatIndex::logical_len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes really stored (for a flattened file, payload bytes): an upper bound for
    /// any table a reader allocates from the file's own numbers.
    pub fn stored_len(&self) -> u64 {
        self.flat
            .as_ref()
            .map_or(self.file_len, FlatIndex::payload_len)
    }

    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match &self.flat {
            Some(ix) => ix.read_exact_at(&self.file, offset, buf),
            None => self.file.read_exact_at(buf, offset),
        }
    }
}

/// `read_at` until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn read_up_to(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn flat_file(records: &[(u64, &[u8])], end: bool) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&flat_header()).unwrap();
        for (off, data) in records {
            f.write_all(&record_header(*off, data.len() as u64))
                .unwrap();
            f.write_all(data).unwrap();
        }
        if end {
            f.write_all(&end_marker()).unwrap();
        }
        f.flush().unwrap();
        f
    }

    #[test]
    fn header_layout() {
        let h = flat_header();
        assert_eq!(h.len(), 4096);
        assert_eq!(&h[..13], b"makedumpfile\0");
        assert_eq!(h[23], 1);
        assert_eq!(h[31], 1);
        assert!(is_flattened(&h));
        assert_eq!(record_header(0x102, 3), {
            let mut x = [0u8; 16];
            x[6] = 1;
            x[7] = 2;
            x[15] = 3;
            x
        });
    }

    #[test]
    fn reads_out_of_order_records_with_gaps() {
        let f = flat_file(&[(10, b"world"), (0, b"hello"), (20, b"!")], true);
        let m = MaybeFlat::open(f.path()).unwrap();
        let ix = m.flat.as_ref().unwrap();
        assert!(ix.complete());
        assert_eq!(m.len(), 21);
        let mut b = vec![0xaa; 21];
        m.read_exact_at(0, &mut b).unwrap();
        assert_eq!(&b, b"hello\0\0\0\0\0world\0\0\0\0\0!");
        let mut b = [0u8; 4];
        m.read_exact_at(3, &mut b).unwrap();
        assert_eq!(&b, b"lo\0\0");
        assert!(m.read_exact_at(20, &mut b).is_err());
        assert_eq!(
            first_record(&std::fs::read(f.path()).unwrap()),
            Some((10, &b"world"[..]))
        );
    }

    #[test]
    fn later_record_wins_an_overlap() {
        let f = flat_file(&[(0, b"aaaaaaaaaa"), (3, b"BBB"), (8, b"CCCC")], true);
        let m = MaybeFlat::open(f.path()).unwrap();
        let mut b = vec![0; 12];
        m.read_exact_at(0, &mut b).unwrap();
        assert_eq!(&b, b"aaaBBBaaCCCC");
        let recs = m.flat.as_ref().unwrap().records();
        assert!(recs
            .windows(2)
            .all(|w| w[0].offset + w[0].len <= w[1].offset));
    }

    #[test]
    fn cut_stream_is_incomplete_not_an_error() {
        let mut f = flat_file(&[(0, b"hello"), (100, b"0123456789")], false);
        let len = f.as_file().metadata().unwrap().len();
        f.as_file_mut().set_len(len - 4).unwrap();
        let m = MaybeFlat::open(f.path()).unwrap();
        let ix = m.flat.as_ref().unwrap();
        assert!(!ix.complete());
        assert_eq!(m.len(), 106);
        let mut b = [0u8; 6];
        m.read_exact_at(100, &mut b).unwrap();
        assert_eq!(&b, b"012345");
    }

    #[test]
    fn negative_sizes_are_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&flat_header()).unwrap();
        let mut h = record_header(0, 0);
        h[8..].copy_from_slice(&(-5i64).to_be_bytes());
        f.write_all(&h).unwrap();
        let e = MaybeFlat::open(f.path()).unwrap_err().to_string();
        assert!(e.contains("0x1000") && e.contains("negative"), "{e}");
    }
}
