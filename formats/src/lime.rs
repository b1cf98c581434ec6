//! LiME images (`insmod lime.ko format=lime`, `avml --compress` off, `avml convert
//! --format lime`): a sequence of ranges, each a 32-byte header followed by the range's
//! bytes, stored as they are.
//!
//! Header (little-endian, packed):
//! | off | field | value |
//! |---|---|---|
//! | 0 | magic u32 | 0x4C694D45 ("EMiL" on disk) for LiME, 0x4C4D5641 ("AVML") for AVML |
//! | 4 | version u32 | 1 for LiME, 2 for AVML |
//! | 8 | start u64 | first physical byte of the range |
//! | 16 | end u64 | **last** physical byte (inclusive) |
//! | 24 | reserved u64 | zero |
//!
//! See docs/formats.md#lime. The header layout is shared with AVML ([`crate::avml`])
//! and with the LiME and AVML writers (`plugins/lime`); AVML's version-2 ranges hold a
//! snappy stream instead of the bytes. Opening reads one header per range and nothing
//! else: the ranges become file-backed segments, so the cost is O(ranges), not O(file).
//!
//! LiME's `padded` format is a raw image (file offset = physical address) and its `raw`
//! format has no positions at all; neither has a header, so neither is this reader's.

use std::path::Path;
use std::sync::Arc;

use dumpconv_core::{Dump, Error, PhysRange, Result, Segment, SegmentMemory, SegmentSource};

use crate::bytes::{le_u32, le_u64, put_u32, put_u64, ShortRead};
use crate::input::{fits, Input};
use crate::options::OpenOptions;

const FMT: &str = "LiME";

/// Size of a range header.
pub const HEADER_LEN: u64 = 32;
/// "EMiL" read as a little-endian u32.
pub const LIME_MAGIC: u32 = 0x4C69_4D45;
/// "AVML" read as a little-endian u32.
pub const AVML_MAGIC: u32 = 0x4C4D_5641;
pub const LIME_VERSION: u32 = 1;
pub const AVML_VERSION: u32 = 2;

/// One decoded range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeHeader {
    /// [`LIME_VERSION`] (bytes follow) or [`AVML_VERSION`] (a snappy stream follows).
    pub version: u32,
    /// The physical range, end exclusive.
    pub range: PhysRange,
}

impl RangeHeader {
    /// The header of an uncompressed (LiME, version 1) range.
    pub fn lime(range: PhysRange) -> RangeHeader {
        RangeHeader {
            version: LIME_VERSION,
            range,
        }
    }

    /// The header of a snappy-compressed (AVML, version 2) range.
    pub fn avml(range: PhysRange) -> RangeHeader {
        RangeHeader {
            version: AVML_VERSION,
            range,
        }
    }

    /// The 32 bytes on disk: the magic that goes with the version, the version, the
    /// first address, the *inclusive* last address, zero. The range must not be empty
    /// (an inclusive end cannot express one; writers refuse empty ranges first).
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        encode_header(
            self.version,
            self.range.start,
            self.range.end.saturating_sub(1),
        )
    }
}

/// Encode a header from its on-disk fields (`last` inclusive) as they are, even ones
/// no reader accepts (tests build broken files with it).
pub fn encode_header(version: u32, start: u64, last: u64) -> [u8; HEADER_LEN as usize] {
    let magic = if version == AVML_VERSION {
        AVML_MAGIC
    } else {
        LIME_MAGIC
    };
    let mut h = [0u8; HEADER_LEN as usize];
    put_u32(&mut h, 0, magic);
    put_u32(&mut h, 4, version);
    put_u64(&mut h, 8, start);
    put_u64(&mut h, 16, last);
    // 24..32: reserved, zero.
    h
}

/// True if `head` starts with a LiME version-1 header.
pub fn probe(head: &[u8], _file_len: u64) -> bool {
    head.len() >= HEADER_LEN as usize
        && le_u32(head, 0) == Ok(LIME_MAGIC)
        && le_u32(head, 4) == Ok(LIME_VERSION)
}

/// Read and check the range header at `offset`. `format` names the reader in errors.
pub fn read_header(input: &Input, offset: u64, format: &'static str) -> Result<RangeHeader> {
    let err = |msg: String| Error::format(input.path.clone(), offset, format, msg);
    let left = input.len.saturating_sub(offset);
    if left < HEADER_LEN {
        return Err(err(format!(
            "{left} trailing byte(s) after the last range: too short for a range header \
             ({HEADER_LEN} bytes; truncated file?)"
        )));
    }
    let mut b = [0u8; HEADER_LEN as usize];
    input.read_exact_at(&mut b, offset, format, "range header")?;
    let fields = || -> std::result::Result<_, ShortRead> {
        Ok((
            (le_u32(&b, 0)?, le_u32(&b, 4)?),
            (le_u64(&b, 8)?, le_u64(&b, 16)?, le_u64(&b, 24)?),
        ))
    };
    let ((magic, version), (start, last, reserved)) =
        fields().map_err(|e| e.at(&input.path, offset, format))?;
    match (magic, version) {
        (LIME_MAGIC, LIME_VERSION) | (AVML_MAGIC, AVML_VERSION) => {}
        (LIME_MAGIC | AVML_MAGIC, v) => {
            return Err(err(format!(
                "range header version {v} is not one this reader knows (LiME 1, AVML 2)"
            )))
        }
        _ => {
            return Err(err(format!(
                "expected a range header (magic {LIME_MAGIC:#010x} \"EMiL\" or \
                 {AVML_MAGIC:#010x} \"AVML\"), found {magic:#010x}: corrupt file, or data \
                 longer than its header said"
            )))
        }
    }
    if reserved != 0 {
        return Err(err(format!(
            "reserved field of the range header is {reserved:#x}, must be 0 (corrupt header)"
        )));
    }
    if last < start {
        return Err(err(format!(
            "range header end {last:#x} is below its start {start:#x} (the end is the \
             last byte, inclusive)"
        )));
    }
    let end = last
        .checked_add(1)
        .ok_or_else(|| err(format!("range {start:#x}-{last:#x} reaches past 2^64")))?;
    if end > dumpconv_core::memory::MAX_PHYS_END {
        return Err(err(format!(
            "range {start:#x}-{last:#x} ends above 2^52, the highest physical address \
             x86-64 and AArch64 define (corrupt header?)"
        )));
    }
    Ok(RangeHeader {
        version,
        range: PhysRange::new(start, end),
    })
}

/// Check that `range` comes after `prev` (the previous range's end), as LiME and AVML
/// write them: ascending and not overlapping.
pub fn check_order(
    input: &Input,
    offset: u64,
    format: &'static str,
    prev_end: Option<u64>,
    range: PhysRange,
) -> Result<()> {
    match prev_end {
        Some(p) if range.start < p => Err(Error::format(
            input.path.clone(),
            offset,
            format,
            format!(
                "range {:#x}-{:#x} starts before the previous range ends ({p:#x}): ranges \
                 must be ascending and must not overlap",
                range.start,
                range.end - 1
            ),
        )),
        _ => Ok(()),
    }
}

/// Check that the plain (version-1) data of `range`, starting at file offset `data`, is
/// all in the file.
pub fn check_plain_data(
    input: &Input,
    data: u64,
    format: &'static str,
    range: PhysRange,
) -> Result<()> {
    let len = range.len();
    if fits(data, len, input.len) {
        return Ok(());
    }
    Err(Error::format(
        input.path.clone(),
        data,
        format,
        format!(
            "the data of range {:#x}-{:#x} ({len:#x} bytes) runs past the end of the file \
             ({:#x} bytes; truncated file?)",
            range.start,
            range.end - 1,
            input.len
        ),
    ))
}

/// Open a LiME file. A file whose ranges turn out to be AVML-compressed goes to
/// [`crate::avml`], which reads both kinds.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dump> {
    let input = Input::open(path)?;
    let mut segments = Vec::new();
    let mut offset = 0u64;
    let mut prev_end = None;
    while offset < input.len {
        let h = read_header(&input, offset, FMT)?;
        if h.version == AVML_VERSION {
            return crate::avml::open(path, opts);
        }
        check_order(&input, offset, FMT, prev_end, h.range)?;
        let data = offset + HEADER_LEN;
        let len = h.range.len();
        check_plain_data(&input, data, FMT, h.range)?;
        segments.push(Segment {
            range: h.range,
            source: SegmentSource::File {
                file: 0,
                offset: data,
            },
        });
        prev_end = Some(h.range.end);
        offset = data + len;
    }
    let count = segments.len();
    let memory = SegmentMemory::new(
        vec![(input.path.clone(), Arc::clone(&input.file))],
        segments,
    )?;
    let ram: u64 = memory.segments().iter().map(|s| s.range.len()).sum();
    let details = vec![
        ("file size".into(), format!("{:#x}", input.len)),
        ("range headers".into(), count.to_string()),
        ("RAM bytes".into(), format!("{ram:#x}")),
        (
            "note".into(),
            "LiME has no CPU state and no VMCOREINFO (give --cr3/--cpu-state, --vmcoreinfo)".into(),
        ),
    ];
    Ok(input.memory_only_dump("lime", details, Arc::new(memory)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A file of ranges with headers of `version`, each followed by `body(data)`.
    pub(crate) fn ranges_file(
        version: u32,
        ranges: &[(u64, &[u8])],
        body: impl Fn(&[u8]) -> Vec<u8>,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        for (start, data) in ranges {
            v.extend_from_slice(&encode_header(
                version,
                *start,
                start + data.len() as u64 - 1,
            ));
            v.extend_from_slice(&body(data));
        }
        v
    }

    fn lime(ranges: &[(u64, &[u8])]) -> Vec<u8> {
        ranges_file(LIME_VERSION, ranges, <[u8]>::to_vec)
    }

    pub(crate) fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn reads_ranges_with_gaps() {
        let a = vec![1u8; 0x1000];
        let b: Vec<u8> = (0..0x2000).map(|i| (i % 251) as u8).collect();
        let f = file(&lime(&[(0x1000, &a), (0x10000, &b)]));
        assert!(probe(&std::fs::read(f.path()).unwrap(), 0));
        let d = open(f.path(), &OpenOptions::default()).unwrap();
        assert_eq!(d.format, "lime");
        assert_eq!(
            d.memory.ranges(),
            &[
                PhysRange::new(0x1000, 0x2000),
                PhysRange::new(0x10000, 0x12000)
            ]
        );
        let mut buf = vec![0u8; 0x2000];
        d.memory.read_at(0x10000, &mut buf).unwrap();
        assert_eq!(buf, b);
        assert!(d.memory.read_at(0x2000, &mut buf[..1]).is_err());
    }

    fn open_err(bytes: &[u8]) -> String {
        let f = file(bytes);
        let e = open(f.path(), &OpenOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        e
    }

    #[test]
    fn bad_headers_are_errors_with_offsets() {
        let page = [7u8; 0x1000];
        // end below start
        let mut v = lime(&[(0, &page)]);
        v.extend_from_slice(&encode_header(1, 0x5000, 0x4fff - 1));
        let e = open_err(&v);
        assert!(
            e.contains("at offset 0x1020") && e.contains("below its start"),
            "{e}"
        );
        // reserved non-zero
        let mut v = lime(&[(0, &page)]);
        v[31] = 1;
        assert!(open_err(&v).contains("reserved"));
        // truncated data
        let v = lime(&[(0, &page)]);
        let e = open_err(&v[..v.len() - 1]);
        assert!(
            e.contains("at offset 0x20") && e.contains("truncated"),
            "{e}"
        );
        // overlapping / unsorted
        let e = open_err(&lime(&[(0x2000, &page), (0x2800, &page)]));
        assert!(
            e.contains("at offset 0x1020") && e.contains("ascending"),
            "{e}"
        );
        let e = open_err(&lime(&[(0x2000, &page), (0x0, &page)]));
        assert!(e.contains("ascending"), "{e}");
        // trailing junk
        let mut v = lime(&[(0, &page)]);
        v.extend_from_slice(&[0u8; 5]);
        assert!(open_err(&v).contains("trailing"));
        // junk instead of a header
        let mut v = lime(&[(0, &page)]);
        v.extend_from_slice(&[0xAAu8; 32]);
        assert!(open_err(&v).contains("expected a range header"));
        // range reaching past 2^64
        let mut v = encode_header(1, 0, u64::MAX).to_vec();
        v.extend_from_slice(&page);
        assert!(open_err(&v).contains("2^64"));
    }
}
