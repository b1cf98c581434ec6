//! Byte layouts of the kdump-compressed ("diskdump") format (docs/formats.md#kdump):
//! `disk_dump_header`, `kdump_sub_header` (x86_64 and i386 shapes), `page_desc` and the
//! two PFN bitmaps. Every field is little-endian: dumpconv handles x86 only.
//!
//! The structs here are plain values; `encode` produces exactly the bytes makedumpfile
//! and QEMU write, `decode` reads them back without trusting anything (the reader
//! validates).

/// `"KDUMP   "`: kdump-compressed (makedumpfile, QEMU).
pub const SIG_KDUMP: [u8; 8] = *b"KDUMP   ";
/// `"DISKDUMP"`: the older diskdump format (same layout, different status meaning).
pub const SIG_DISKDUMP: [u8; 8] = *b"DISKDUMP";

/// The header version dumpconv writes (as makedumpfile and QEMU do).
pub const HEADER_VERSION: i32 = 6;

/// `status` bits and per-page `flags` (same constants, docs/formats.md#kdump-codecs and
/// #kdump-status).
pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
pub const DUMP_DH_COMPRESSED_LZO: u32 = 0x2;
pub const DUMP_DH_COMPRESSED_SNAPPY: u32 = 0x4;
/// For `"KDUMP   "` only: the dump was cut short (for `"DISKDUMP"` 0x8 means compressed).
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
pub const DUMP_DH_EXCLUDED_VMEMMAP: u32 = 0x10;
pub const DUMP_DH_COMPRESSED_ZSTD: u32 = 0x20;

/// Size of one page descriptor on every architecture (off_t is 64-bit everywhere).
pub const PAGE_DESC_SIZE: usize = 24;

/// Length of each utsname field including its NUL.
pub const UTS_LEN: usize = 65;

/// Offset of `utsname.machine` in the main header (both layouts).
pub const MACHINE_OFFSET: usize = 12 + 4 * UTS_LEN;

use crate::bytes::{array, le_u32, le_u64, put_u32, put_u64, ShortRead};

/// Which C struct shapes the file uses: the *dumped* machine's
/// (docs/formats.md#kdump-layout-choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// x86_64: 464-byte main header, 104-byte sub header.
    Bits64,
    /// i386: 452-byte main header, 80-byte sub header (4-byte aligned `off_t`).
    Bits32,
}

/// Field offsets inside the main header that differ between the layouts.
struct HeaderOffsets {
    timestamp: usize,
    /// Size of each of tv_sec / tv_usec (a C `long`).
    long: usize,
    status: usize,
    size: usize,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bits64 => "64-bit",
            Layout::Bits32 => "32-bit",
        }
    }

    fn header_offsets(self) -> HeaderOffsets {
        match self {
            Layout::Bits64 => HeaderOffsets {
                timestamp: 408,
                long: 8,
                status: 424,
                size: 464,
            },
            Layout::Bits32 => HeaderOffsets {
                timestamp: 404,
                long: 4,
                status: 412,
                size: 452,
            },
        }
    }

    /// `sizeof(struct disk_dump_header)`.
    pub fn header_size(self) -> usize {
        self.header_offsets().size
    }

    /// Offset of `status`; everything from here on can be rewritten after the fact.
    pub fn status_offset(self) -> usize {
        self.header_offsets().status
    }

    /// `sizeof(struct kdump_sub_header)`.
    pub fn sub_header_size(self) -> usize {
        match self {
            Layout::Bits64 => 104,
            Layout::Bits32 => 80,
        }
    }

    /// Offset of `block_size` in the main header.
    pub fn block_size_offset(self) -> usize {
        self.status_offset() + 4
    }
}

/// The six utsname strings, each stored in 65 bytes (NUL padded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Utsname {
    pub fields: [[u8; UTS_LEN]; 6],
}

impl Default for Utsname {
    fn default() -> Self {
        Utsname {
            fields: [[0; UTS_LEN]; 6],
        }
    }
}

impl Utsname {
    pub const SYSNAME: usize = 0;
    pub const NODENAME: usize = 1;
    pub const RELEASE: usize = 2;
    pub const VERSION: usize = 3;
    pub const MACHINE: usize = 4;
    pub const DOMAINNAME: usize = 5;

    /// Set a field, truncated to 64 bytes so a NUL always ends it.
    pub fn set(&mut self, which: usize, value: &str) {
        let mut f = [0u8; UTS_LEN];
        let b = value.as_bytes();
        let n = b.len().min(UTS_LEN - 1);
        f[..n].copy_from_slice(&b[..n]);
        if let Some(slot) = self.fields.get_mut(which) {
            *slot = f;
        }
    }

    /// A field up to its first NUL, lossily decoded.
    pub fn get(&self, which: usize) -> String {
        let f = self.fields.get(which).map(|f| &f[..]).unwrap_or(&[]);
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    }
}

/// `struct disk_dump_header` (docs/formats.md#kdump-header). Integer fields keep their C
/// signedness.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskDumpHeader {
    pub signature: [u8; 8],
    pub header_version: i32,
    pub utsname: Utsname,
    pub timestamp_sec: i64,
    pub timestamp_usec: i64,
    pub status: u32,
    pub block_size: i32,
    /// Sub header + notes, in blocks.
    pub sub_hdr_size: i32,
    /// Both bitmaps together, in blocks.
    pub bitmap_blocks: u32,
    /// Obsolete 32-bit copy of the PFN count (clamped); v6 readers use `max_mapnr_64`.
    pub max_mapnr: u32,
    pub total_ram_blocks: u32,
    pub device_blocks: u32,
    pub written_blocks: u32,
    pub current_cpu: u32,
    pub nr_cpus: i32,
}

impl DiskDumpHeader {
    /// Encode into `layout.header_size()` bytes.
    pub fn encode(&self, layout: Layout) -> Vec<u8> {
        let o = layout.header_offsets();
        let mut b = vec![0u8; o.size];
        b[0..8].copy_from_slice(&self.signature);
        put_u32(&mut b, 8, self.header_version as u32);
        for (i, f) in self.utsname.fields.iter().enumerate() {
            let at = 12 + i * UTS_LEN;
            b[at..at + UTS_LEN].copy_from_slice(f);
        }
        if o.long == 8 {
            put_u64(&mut b, o.timestamp, self.timestamp_sec as u64);
            put_u64(&mut b, o.timestamp + 8, self.timestamp_usec as u64);
        } else {
            put_u32(&mut b, o.timestamp, self.timestamp_sec as u32);
            put_u32(&mut b, o.timestamp + 4, self.timestamp_usec as u32);
        }
        let s = o.status;
        put_u32(&mut b, s, self.status);
        put_u32(&mut b, s + 4, self.block_size as u32);
        put_u32(&mut b, s + 8, self.sub_hdr_size as u32);
        put_u32(&mut b, s + 12, self.bitmap_blocks);
        put_u32(&mut b, s + 16, self.max_mapnr);
        put_u32(&mut b, s + 20, self.total_ram_blocks);
        put_u32(&mut b, s + 24, self.device_blocks);
        put_u32(&mut b, s + 28, self.written_blocks);
        put_u32(&mut b, s + 32, self.current_cpu);
        put_u32(&mut b, s + 36, self.nr_cpus as u32);
        b
    }

    /// Decode from the first bytes of a file; fewer than `layout.header_size()` bytes
    /// is an error.
    pub fn decode(b: &[u8], layout: Layout) -> Result<DiskDumpHeader, ShortRead> {
        let o = layout.header_offsets();
        // The last field first: past it, every read below fits.
        le_u32(b, o.size - 4)?;
        let mut utsname = Utsname::default();
        for (i, f) in utsname.fields.iter_mut().enumerate() {
            *f = array(b, 12 + i * UTS_LEN)?;
        }
        let (timestamp_sec, timestamp_usec) = if o.long == 8 {
            (
                le_u64(b, o.timestamp)? as i64,
                le_u64(b, o.timestamp + 8)? as i64,
            )
        } else {
            (
                i64::from(le_u32(b, o.timestamp)? as i32),
                i64::from(le_u32(b, o.timestamp + 4)? as i32),
            )
        };
        let s = o.status;
        Ok(DiskDumpHeader {
            signature: array(b, 0)?,
            header_version: le_u32(b, 8)? as i32,
            utsname,
            timestamp_sec,
            timestamp_usec,
            status: le_u32(b, s)?,
            block_size: le_u32(b, s + 4)? as i32,
            sub_hdr_size: le_u32(b, s + 8)? as i32,
            bitmap_blocks: le_u32(b, s + 12)?,
            max_mapnr: le_u32(b, s + 16)?,
            total_ram_blocks: le_u32(b, s + 20)?,
            device_blocks: le_u32(b, s + 24)?,
            written_blocks: le_u32(b, s + 28)?,
            current_cpu: le_u32(b, s + 32)?,
            nr_cpus: le_u32(b, s + 36)? as i32,
        })
    }

    /// True for the `"KDUMP   "` signature, where status 0x8 means incomplete.
    pub fn is_kdump(&self) -> bool {
        self.signature == SIG_KDUMP
    }

    pub fn is_incomplete(&self) -> bool {
        self.is_kdump() && self.status & DUMP_DH_COMPRESSED_INCOMPLETE != 0
    }
}

/// `struct kdump_sub_header` (docs/formats.md#kdump-sub-header), all versions; fields a
/// version lacks are 0. The 32-bit shape stores some of these in 4 bytes (truncated on
/// encode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubHeader {
    pub phys_base: u64,
    pub dump_level: i32,
    pub split: i32,
    pub start_pfn: u64,
    pub end_pfn: u64,
    pub offset_vmcoreinfo: u64,
    pub size_vmcoreinfo: u64,
    pub offset_note: u64,
    pub size_note: u64,
    pub offset_eraseinfo: u64,
    pub size_eraseinfo: u64,
    pub start_pfn_64: u64,
    pub end_pfn_64: u64,
    pub max_mapnr_64: u64,
}

/// Where each sub-header field sits, and whether it is 4 or 8 bytes wide.
struct SubOffsets {
    /// (offset, width) per field in declaration order.
    fields: [(usize, usize); 14],
}

fn sub_offsets(layout: Layout) -> SubOffsets {
    match layout {
        Layout::Bits64 => SubOffsets {
            fields: [
                (0, 8),
                (8, 4),
                (12, 4),
                (16, 8),
                (24, 8),
                (32, 8),
                (40, 8),
                (48, 8),
                (56, 8),
                (64, 8),
                (72, 8),
                (80, 8),
                (88, 8),
                (96, 8),
            ],
        },
        Layout::Bits32 => SubOffsets {
            fields: [
                (0, 4),
                (4, 4),
                (8, 4),
                (12, 4),
                (16, 4),
                (20, 8),
                (28, 4),
                (32, 8),
                (40, 4),
                (44, 8),
                (52, 4),
                (56, 8),
                (64, 8),
                (72, 8),
            ],
        },
    }
}

impl SubHeader {
    fn values(&self) -> [u64; 14] {
        [
            self.phys_base,
            self.dump_level as u32 as u64,
            self.split as u32 as u64,
            self.start_pfn,
            self.end_pfn,
            self.offset_vmcoreinfo,
            self.size_vmcoreinfo,
            self.offset_note,
            self.size_note,
            self.offset_eraseinfo,
            self.size_eraseinfo,
            self.start_pfn_64,
            self.end_pfn_64,
            self.max_mapnr_64,
        ]
    }

    /// Encode the full (version 6) struct; 4-byte fields of the 32-bit shape keep the
    /// low 32 bits, as the C writers' assignments do.
    pub fn encode(&self, layout: Layout) -> Vec<u8> {
        let mut b = vec![0u8; layout.sub_header_size()];
        for ((off, width), v) in sub_offsets(layout).fields.iter().zip(self.values()) {
            if *width == 8 {
                put_u64(&mut b, *off, v);
            } else {
                put_u32(&mut b, *off, v as u32);
            }
        }
        b
    }

    /// Decode every field; fields beyond `header_version` must be ignored by the caller
    /// (use [`SubHeader::for_version`]). Fewer than `layout.sub_header_size()` bytes is
    /// an error.
    pub fn decode(b: &[u8], layout: Layout) -> Result<SubHeader, ShortRead> {
        let mut v = [0u64; 14];
        for (slot, (off, width)) in v.iter_mut().zip(sub_offsets(layout).fields.iter()) {
            *slot = if *width == 8 {
                le_u64(b, *off)?
            } else {
                u64::from(le_u32(b, *off)?)
            };
        }
        Ok(SubHeader {
            phys_base: v[0],
            dump_level: v[1] as u32 as i32,
            split: v[2] as u32 as i32,
            start_pfn: v[3],
            end_pfn: v[4],
            offset_vmcoreinfo: v[5],
            size_vmcoreinfo: v[6],
            offset_note: v[7],
            size_note: v[8],
            offset_eraseinfo: v[9],
            size_eraseinfo: v[10],
            start_pfn_64: v[11],
            end_pfn_64: v[12],
            max_mapnr_64: v[13],
        })
    }

    /// Clear the fields a header version does not have (docs/formats.md#kdump-sub-header,
    /// "since version").
    pub fn for_version(mut self, hv: i32) -> SubHeader {
        if hv < 1 {
            self.dump_level = 0;
        }
        if hv < 2 {
            self.split = 0;
            self.start_pfn = 0;
            self.end_pfn = 0;
        }
        if hv < 3 {
            self.offset_vmcoreinfo = 0;
            self.size_vmcoreinfo = 0;
        }
        if hv < 4 {
            self.offset_note = 0;
            self.size_note = 0;
        }
        if hv < 5 {
            self.offset_eraseinfo = 0;
            self.size_eraseinfo = 0;
        }
        if hv < 6 {
            self.start_pfn_64 = 0;
            self.end_pfn_64 = 0;
            self.max_mapnr_64 = 0;
        }
        self
    }
}

/// `struct page_desc` (docs/formats.md#kdump-page-descriptors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageDesc {
    /// Absolute file offset of the page data; 0 = never written (incomplete dump).
    pub offset: i64,
    /// Stored bytes (compressed size, or block_size for a raw page).
    pub size: u32,
    /// Compression of this page (`DUMP_DH_COMPRESSED_*`), 0 = raw.
    pub flags: u32,
    pub page_flags: u64,
}

impl PageDesc {
    pub fn encode(&self) -> [u8; PAGE_DESC_SIZE] {
        let mut b = [0u8; PAGE_DESC_SIZE];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.page_flags.to_le_bytes());
        b
    }

    /// Decode the descriptor at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<PageDesc, ShortRead> {
        Ok(PageDesc {
            offset: le_u64(b, 0)? as i64,
            size: le_u32(b, 8)?,
            flags: le_u32(b, 12)?,
            page_flags: le_u64(b, 16)?,
        })
    }
}

/// Bytes one bitmap needs for `max_mapnr` PFNs, rounded up to whole blocks (both
/// bitmaps must be block aligned; crash requires it). At least one block.
pub fn bitmap_len(max_mapnr: u64, block_size: u64) -> u64 {
    let bytes = max_mapnr.div_ceil(8);
    bytes.div_ceil(block_size).max(1) * block_size
}

/// Test bit `n` of an LSB-first bitmap; bits past the end read as clear.
pub fn bit(bitmap: &[u8], n: u64) -> bool {
    usize::try_from(n / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|b| b & (1 << (n % 8)) != 0)
}

/// Set or clear bit `n` (the bitmap must be long enough).
pub fn set_bit(bitmap: &mut [u8], n: u64, value: bool) {
    if let Some(b) = usize::try_from(n / 8).ok().and_then(|i| bitmap.get_mut(i)) {
        if value {
            *b |= 1 << (n % 8);
        } else {
            *b &= !(1 << (n % 8));
        }
    }
}

/// Set bits `[start, end)`.
pub fn set_bits(bitmap: &mut [u8], start: u64, end: u64) {
    let mut n = start;
    while n < end {
        if n.is_multiple_of(8) && end - n >= 8 {
            // Whole bytes at a time for the long runs RAM is made of.
            let first = (n / 8) as usize;
            let count = ((end - n) / 8) as usize;
            if let Some(s) = bitmap.get_mut(first..first + count) {
                s.fill(0xff);
            }
            n += count as u64 * 8;
        } else {
            set_bit(bitmap, n, true);
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_offsets_match_the_c_structs() {
        for layout in [Layout::Bits64, Layout::Bits32] {
            let mut h = DiskDumpHeader {
                signature: SIG_KDUMP,
                header_version: 6,
                timestamp_sec: 0x1122_3344,
                timestamp_usec: 5,
                status: 0x21,
                block_size: 4096,
                sub_hdr_size: 2,
                bitmap_blocks: 8,
                max_mapnr: 0x2_0000,
                nr_cpus: 3,
                ..Default::default()
            };
            h.utsname.set(Utsname::MACHINE, "x86_64");
            let b = h.encode(layout);
            assert_eq!(b.len(), layout.header_size());
            assert_eq!(&b[MACHINE_OFFSET..MACHINE_OFFSET + 6], b"x86_64");
            let (status, nr_cpus) = match layout {
                Layout::Bits64 => (424, 460),
                Layout::Bits32 => (412, 448),
            };
            assert_eq!(le_u32(&b, status).unwrap(), 0x21);
            assert_eq!(le_u32(&b, status + 4).unwrap(), 4096);
            assert_eq!(le_u32(&b, nr_cpus).unwrap(), 3);
            assert_eq!(DiskDumpHeader::decode(&b, layout).unwrap(), h);
            let short = DiskDumpHeader::decode(&b[..b.len() - 1], layout).unwrap_err();
            assert_eq!(short.offset, layout.header_size() - 4);
        }
    }

    #[test]
    fn sub_header_round_trips_and_truncates_32bit_fields() {
        let s = SubHeader {
            phys_base: 0x1_0000_0000 + 7,
            dump_level: 1,
            split: 1,
            start_pfn: 10,
            end_pfn: 20,
            offset_vmcoreinfo: 0x0012_3456_789a,
            size_vmcoreinfo: 99,
            offset_note: 4200,
            size_note: 1000,
            offset_eraseinfo: 0,
            size_eraseinfo: 0,
            start_pfn_64: 10,
            end_pfn_64: 20,
            max_mapnr_64: 0x1_0000_0001,
        };
        let b = s.encode(Layout::Bits64);
        assert_eq!(b.len(), 104);
        assert_eq!(SubHeader::decode(&b, Layout::Bits64).unwrap(), s);
        let b = s.encode(Layout::Bits32);
        assert_eq!(b.len(), 80);
        let d = SubHeader::decode(&b, Layout::Bits32).unwrap();
        assert_eq!(d.phys_base, 7);
        assert_eq!(d.offset_vmcoreinfo, 0x0012_3456_789a);
        assert_eq!(le_u64(&b, 72).unwrap(), 0x1_0000_0001);
        assert_eq!(d.max_mapnr_64, s.max_mapnr_64);
        let v3 = s.clone().for_version(3);
        assert_eq!(v3.offset_note, 0);
        assert_eq!(v3.offset_vmcoreinfo, s.offset_vmcoreinfo);
        assert_eq!(v3.max_mapnr_64, 0);
    }

    #[test]
    fn bitmaps_are_lsb_first_and_block_aligned() {
        let mut bm = vec![0u8; 4];
        set_bits(&mut bm, 3, 21);
        assert_eq!(bm, [0xf8, 0xff, 0x1f, 0]);
        assert!(bit(&bm, 3) && !bit(&bm, 2) && bit(&bm, 20) && !bit(&bm, 21));
        assert!(!bit(&bm, 1 << 40));
        set_bit(&mut bm, 8, false);
        assert_eq!(bm[1], 0xfe);
        assert_eq!(bitmap_len(0, 4096), 4096);
        assert_eq!(bitmap_len(4096 * 8, 4096), 4096);
        assert_eq!(bitmap_len(4096 * 8 + 1, 4096), 8192);
    }

    #[test]
    fn page_desc_round_trip() {
        let d = PageDesc {
            offset: 0x1234,
            size: 77,
            flags: DUMP_DH_COMPRESSED_ZSTD,
            page_flags: 0,
        };
        assert_eq!(PageDesc::decode(&d.encode()).unwrap(), d);
        assert!(PageDesc::decode(&d.encode()[..23]).is_err());
    }
}
