//! qcow2 disk images holding `savevm` snapshots: the VM state (a QEMU migration stream)
//! of a snapshot, read through the snapshot's own L1/L2 tables and handed to the
//! [`crate::migration`] reader. See docs/formats.md#qcow2-savevm-snapshots.
//!
//! Only what reading a snapshot's VM state needs is read: the header (versions 2 and 3),
//! the snapshot table, a snapshot's L1 table and the L2 tables it points to, and the data
//! clusters (plain, all-zero, unallocated, zlib- or zstd-compressed; extended L2 entries
//! with subclusters). Refcounts, the active L1 table, bitmaps and backing files are not
//! needed: the VM state lives in the guest-offset space after the virtual disk, in the
//! snapshot's own clusters. External data files and encryption are refused.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dumpconv_core::{Dump, Error, Result};

use crate::input::Input;
use crate::options::OpenOptions;

pub(crate) const FMT: &str = "qcow2";

pub const MAGIC: &[u8; 4] = b"QFI\xfb";

// Incompatible feature bits (version 3).
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/// Bits 9-55 of an L1 or standard L2 entry: a host cluster offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// QEMU's own limits: more is a lying header, not an allocation to make.
const MAX_SNAPSHOTS: u32 = 65536;
const MAX_EXTRA: u32 = 1024;
const MAX_L1_BYTES: u64 = 32 << 20;

/// True if the file starts with the qcow2 magic.
pub fn probe(head: &[u8], _file_len: u64) -> bool {
    head.starts_with(MAGIC)
}

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Raw deflate (no zlib header), the default.
    Zlib,
    Zstd,
}

/// The header fields the reader uses.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    /// Virtual disk size.
    pub size: u64,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible: u64,
    pub compression: Compression,
    pub extended_l2: bool,
    pub backing_file: Option<String>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    /// Entries of an L2 table (16 bytes each with extended L2 entries, else 8).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / if self.extended_l2 { 16 } else { 8 }
    }
}

/// One entry of the snapshot table.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// File offset of the entry.
    pub entry_offset: u64,
    pub id: String,
    pub name: String,
    pub l1_offset: u64,
    pub l1_size: u32,
    /// Bytes of VM state (0: a disk-only snapshot).
    pub vm_state_size: u64,
    /// Virtual disk size when the snapshot was taken.
    pub disk_size: u64,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
}

impl Snapshot {
    /// `1 "name"`.
    pub fn label(&self) -> String {
        format!("{} {:?}", self.id, self.name)
    }
}

/// `2026-12-05 14:41:02 UTC` from seconds since 1970 (the proleptic Gregorian calendar,
/// days to a date by the usual era arithmetic).
pub fn utc(secs: u32) -> String {
    let days = i64::from(secs / 86400);
    let rem = secs % 86400;
    // days since 1970-01-01 -> civil date, counting from 0000-03-01 in 400-year eras
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// An opened qcow2 image: header and snapshot table.
#[derive(Debug)]
pub struct Image {
    pub input: Input,
    pub header: Header,
    pub snapshots: Vec<Snapshot>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Image {
    fn err(&self, offset: u64, msg: impl Into<String>) -> Error {
        Error::format(self.input.path.clone(), offset, FMT, msg)
    }

    /// Read the header and the snapshot table.
    pub fn open(input: Input) -> Result<Image> {
        let path = input.path.clone();
        let err = |offset: u64, msg: String| Error::format(path.clone(), offset, FMT, msg);
        let h = input.read_vec(0, 72.min(input.len), FMT, "the header")?;
        if h.len() < 72 {
            return Err(err(
                0,
                format!("the header needs 72 bytes; the file has {}", input.len),
            ));
        }
        if &h[..4] != MAGIC {
            return Err(err(0, "no qcow2 magic \"QFI\\xfb\"".into()));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(err(
                4,
                format!("header field version: {version}; this reader knows versions 2 and 3"),
            ));
        }
        let backing_offset = be64(&h, 8);
        let backing_size = be32(&h, 16);
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(err(
                20,
                format!(
                    "header field cluster_bits: {cluster_bits} (clusters of 512 bytes to 2 MiB \
                     have 9 to 21)"
                ),
            ));
        }
        let size = be64(&h, 24);
        let crypt = be32(&h, 32);
        if crypt != 0 {
            return Err(err(
                32,
                format!(
                    "header field crypt_method: {crypt} ({}): an encrypted image; decrypt it \
                     with `qemu-img convert` first (which keeps no snapshots) or read it with \
                     QEMU",
                    if crypt == 1 { "AES" } else { "LUKS" }
                ),
            ));
        }
        let nb_snapshots = be32(&h, 60);
        let snapshots_offset = be64(&h, 64);
        let mut header = Header {
            version,
            cluster_bits,
            size,
            nb_snapshots,
            snapshots_offset,
            incompatible: 0,
            compression: Compression::Zlib,
            extended_l2: false,
            backing_file: None,
        };
        let mut header_length = 72u64;
        if version == 3 {
            let v3 = input.read_vec(72, 32, FMT, "the version 3 header fields")?;
            let incompat = be64(&v3, 0);
            header_length = u64::from(be32(&v3, 28));
            if header_length < 104 || header_length > header.cluster_size() {
                return Err(err(
                    100,
                    format!(
                        "header field header_length: {header_length} (104 to the cluster size)"
                    ),
                ));
            }
            let unknown = incompat & !INCOMPAT_KNOWN;
            if unknown != 0 {
                return Err(err(
                    72,
                    format!(
                        "header field incompatible_features: unknown bits {unknown:#x}; this \
                         reader cannot read the image safely"
                    ),
                ));
            }
            if incompat & INCOMPAT_DATA_FILE != 0 {
                return Err(err(
                    72,
                    "header field incompatible_features: the image keeps its data in an \
                     external data file; not supported (the snapshot's VM state is not in \
                     this file)"
                        .into(),
                ));
            }
            header.incompatible = incompat;
            header.extended_l2 = incompat & INCOMPAT_EXTL2 != 0;
            if incompat & INCOMPAT_COMPRESSION != 0 {
                if header_length < 105 {
                    return Err(err(
                        100,
                        format!(
                            "header field header_length: {header_length}, too short for the \
                             compression_type field the incompatible features announce"
                        ),
                    ));
                }
                let t = input.read_vec(104, 1, FMT, "header field compression_type")?;
                header.compression = match t[0] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => {
                        return Err(err(
                            104,
                            format!("header field compression_type: {t} (known: 0 zlib, 1 zstd)"),
                        ))
                    }
                };
            }
        }
        let _ = header_length;
        if backing_offset != 0 && backing_size > 0 && backing_size <= 1023 {
            if let Ok(b) = input.read_vec(
                backing_offset,
                u64::from(backing_size),
                FMT,
                "the backing file name",
            ) {
                header.backing_file = Some(String::from_utf8_lossy(&b).into_owned());
            }
        }
        let mut img = Image {
            input,
            header,
            snapshots: Vec::new(),
        };
        img.read_snapshots()?;
        Ok(img)
    }

    fn read_snapshots(&mut self) -> Result<()> {
        let n = self.header.nb_snapshots;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_SNAPSHOTS {
            return Err(self.err(
                60,
                format!(
                    "header field nb_snapshots: {n}, more than QEMU's limit of {MAX_SNAPSHOTS}"
                ),
            ));
        }
        let mut at = self.header.snapshots_offset;
        if !at.is_multiple_of(8) || at >= self.input.len {
            return Err(self.err(
                64,
                format!(
                    "header field snapshots_offset: {at:#x} is {} the {:#x}-byte file",
                    if !at.is_multiple_of(8) {
                        "not 8-byte aligned in"
                    } else {
                        "past the end of"
                    },
                    self.input.len
                ),
            ));
        }
        for i in 0..n {
            let what = format!("snapshot table entry {i}");
            let e = self.input.read_vec(at, 40, FMT, &what)?;
            let l1_offset = be64(&e, 0);
            let l1_size = be32(&e, 8);
            let id_len = u64::from(u16::from_be_bytes([e[12], e[13]]));
            let name_len = u64::from(u16::from_be_bytes([e[14], e[15]]));
            let extra_len = be32(&e, 36);
            if extra_len > MAX_EXTRA {
                return Err(self.err(
                    at + 36,
                    format!(
                        "{what}: field extra_data_size {extra_len}, more than QEMU's limit of \
                         {MAX_EXTRA}"
                    ),
                ));
            }
            let rest = self.input.read_vec(
                at + 40,
                u64::from(extra_len) + id_len + name_len,
                FMT,
                &format!("{what}: its extra data, ID and name"),
            )?;
            let extra = &rest[..extra_len as usize];
            let mut vm_state_size = u64::from(be32(&e, 32));
            if extra.len() >= 8 {
                vm_state_size = be64(extra, 0);
            }
            let disk_size = if extra.len() >= 16 {
                be64(extra, 8)
            } else {
                self.header.size
            };
            let id = &rest[extra_len as usize..extra_len as usize + id_len as usize];
            let name = &rest[extra_len as usize + id_len as usize..];
            self.snapshots.push(Snapshot {
                entry_offset: at,
                id: String::from_utf8_lossy(id).into_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
                l1_offset,
                l1_size,
                vm_state_size,
                disk_size,
                date_sec: be32(&e, 16),
                date_nsec: be32(&e, 20),
                vm_clock_nsec: be64(&e, 24),
            });
            at = (at + 40 + rest.len() as u64).next_multiple_of(8);
        }
        Ok(())
    }

    /// `1 "before-upgrade" (VM state 0x4cbdda8 bytes, taken 1764945662 s)`, one per line.
    pub fn snapshot_list(&self) -> String {
        if self.snapshots.is_empty() {
            return "(none)".into();
        }
        self.snapshots
            .iter()
            .map(|s| {
                format!(
                    "{} (VM state {}, taken {}, VM clock {:.3} s)",
                    s.label(),
                    if s.vm_state_size == 0 {
                        "none: a disk-only snapshot".to_string()
                    } else {
                        format!("{:#x} bytes", s.vm_state_size)
                    },
                    utc(s.date_sec),
                    s.vm_clock_nsec as f64 / 1e9
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The snapshot `want` names (an ID or a name), or by default the only snapshot
    /// with VM state, or the newest one.
    pub fn select(&self, want: Option<&str>) -> Result<&Snapshot> {
        let list = self.snapshot_list();
        let path = self.input.path.clone();
        if self.snapshots.is_empty() {
            return Err(Error::format(
                path,
                60,
                FMT,
                "the image has no snapshots (nb_snapshots is 0): a qcow2 disk without a \
                 `savevm` snapshot holds no memory",
            ));
        }
        let s = match want {
            Some(w) => {
                let by_id: Vec<&Snapshot> = self.snapshots.iter().filter(|s| s.id == w).collect();
                let by_name: Vec<&Snapshot> =
                    self.snapshots.iter().filter(|s| s.name == w).collect();
                match (by_id.as_slice(), by_name.as_slice()) {
                    ([s], []) | ([], [s]) => *s,
                    ([a], [b]) if std::ptr::eq(*a, *b) => *a,
                    ([], []) => {
                        return Err(Error::invalid(format!(
                            "{}: no snapshot has the ID or name {w:?}; its snapshots: {list}",
                            path.display()
                        )))
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "{}: {w:?} names more than one snapshot (as an ID and as a \
                             name, or a name used twice); its snapshots: {list}",
                            path.display()
                        )))
                    }
                }
            }
            None => {
                let with_state: Vec<&Snapshot> = self
                    .snapshots
                    .iter()
                    .filter(|s| s.vm_state_size > 0)
                    .collect();
                // newest: latest date, the later entry on a tie (max_by_key keeps the last)
                match with_state
                    .into_iter()
                    .max_by_key(|s| (s.date_sec, s.date_nsec))
                {
                    Some(s) => s,
                    None => {
                        return Err(Error::format(
                            path,
                            self.header.snapshots_offset,
                            FMT,
                            format!(
                                "no snapshot of the image has VM state (all are disk-only \
                                 snapshots, as `qemu-img snapshot -c` makes them); its \
                                 snapshots: {list}"
                            ),
                        ))
                    }
                }
            }
        };
        if s.vm_state_size == 0 {
            return Err(Error::format(
                path,
                s.entry_offset + 32,
                FMT,
                format!(
                    "snapshot {} has no VM state (a disk-only snapshot): nothing to convert",
                    s.label()
                ),
            ));
        }
        Ok(s)
    }

    /// A reader of snapshot `s`'s VM state.
    pub fn vmstate<'a>(&'a self, s: &'a Snapshot) -> Result<VmState<'a>> {
        let what = format!("snapshot {}", s.label());
        let l1_bytes = u64::from(s.l1_size) * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(self.err(
                s.entry_offset + 8,
                format!(
                    "{what}: field l1_size {} (more than QEMU's 32 MiB L1 limit)",
                    s.l1_size
                ),
            ));
        }
        if !s.l1_offset.is_multiple_of(self.header.cluster_size()) {
            return Err(self.err(
                s.entry_offset,
                format!(
                    "{what}: field l1_table_offset {:#x} is not cluster-aligned",
                    s.l1_offset
                ),
            ));
        }
        let raw = self
            .input
            .read_vec(
                s.l1_offset,
                l1_bytes,
                FMT,
                &format!("the L1 table of {what}"),
            )
            .map_err(|_| {
                self.err(
                    s.entry_offset,
                    format!(
                        "{what}: field l1_table_offset {:#x} + {} entries runs past the end of \
                         the {:#x}-byte file",
                        s.l1_offset, s.l1_size, self.input.len
                    ),
                )
            })?;
        let l1: Vec<u64> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let per_l1 = self.header.cluster_size() * self.header.l2_entries();
        let base = s
            .disk_size
            .div_ceil(per_l1)
            .checked_mul(per_l1)
            .ok_or_else(|| {
                self.err(
                    s.entry_offset + 48,
                    format!("{what}: disk size {:#x}", s.disk_size),
                )
            })?;
        let end_index = base
            .checked_add(s.vm_state_size)
            .map(|e| e.div_ceil(per_l1))
            .unwrap_or(u64::MAX);
        if end_index > l1.len() as u64 {
            return Err(self.err(
                s.entry_offset + 8,
                format!(
                    "{what}: field l1_size: its L1 table has {} entries, but its VM state ({:#x} bytes after \
                     the disk's {:#x}) needs {end_index}",
                    l1.len(),
                    s.vm_state_size,
                    s.disk_size
                ),
            ));
        }
        Ok(VmState {
            img: self,
            snap: s,
            l1,
            base,
            pos: 0,
            l2: None,
            cluster: None,
        })
    }
}

/// Where the bytes of one guest cluster are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// Unallocated or all-zero.
    Zero,
    /// Plain data at this host offset.
    Data(u64),
    /// Compressed: host offset and the most bytes the compressed data can take.
    Compressed(u64, u64),
}

/// A snapshot's VM state, read through its L1/L2 tables. Implements [`Read`]; errors
/// name the image, the offset and the table entry.
pub struct VmState<'a> {
    img: &'a Image,
    snap: &'a Snapshot,
    l1: Vec<u64>,
    /// Guest offset of the VM state's first byte.
    base: u64,
    pos: u64,
    /// (host offset, entries) of the last L2 table read.
    l2: Option<(u64, Vec<u64>)>,
    /// (host offset, bytes) of the last compressed cluster read.
    cluster: Option<(u64, Vec<u8>)>,
}

impl VmState<'_> {
    /// Bytes of VM state.
    pub fn len(&self) -> u64 {
        self.snap.vm_state_size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn err(&self, offset: u64, msg: impl std::fmt::Display) -> Error {
        self.img.err(
            offset,
            format!("VM state of snapshot {}: {msg}", self.snap.label()),
        )
    }

    /// The mapping of the subcluster or cluster holding guest offset `g`, and how many
    /// bytes from `g` on it covers.
    fn map(&mut self, g: u64) -> Result<(Mapping, u64)> {
        let h = &self.img.header;
        let cs = h.cluster_size();
        let per_l1 = cs * h.l2_entries();
        let l1i = g / per_l1;
        let in_cluster = g % cs;
        let cluster_left = cs - in_cluster;
        let l1e = *self.l1.get(l1i as usize).ok_or_else(|| {
            self.err(
                self.snap.entry_offset + 8,
                format!("guest offset {g:#x} is past its L1 table"),
            )
        })?;
        let l1_at = self.snap.l1_offset + l1i * 8;
        let l2_off = l1e & OFFSET_MASK;
        if l2_off == 0 {
            // no L2 table: zeros to the end of this L1 entry's range
            return Ok((Mapping::Zero, per_l1 - g % per_l1));
        }
        let file_len = self.img.input.len;
        if !l2_off.is_multiple_of(cs) || l2_off.checked_add(cs).is_none_or(|e| e > file_len) {
            return Err(self.err(
                l1_at,
                format!(
                    "L1 entry {l1i} ({l1e:#x}): its L2 table at {l2_off:#x} is {} the \
                     {file_len:#x}-byte file",
                    if !l2_off.is_multiple_of(cs) {
                        "not cluster-aligned in"
                    } else {
                        "past the end of"
                    }
                ),
            ));
        }
        if self.l2.as_ref().map(|(o, _)| *o) != Some(l2_off) {
            let raw = self.img.input.read_vec(l2_off, cs, FMT, "an L2 table")?;
            let entries = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
            self.l2 = Some((l2_off, entries));
        }
        let width = if h.extended_l2 { 2 } else { 1 };
        let l2i = (g / cs) % h.l2_entries();
        let (entry, bitmap) = match &self.l2 {
            Some((_, e)) => (
                e[(l2i * width) as usize],
                if h.extended_l2 {
                    e[(l2i * 2 + 1) as usize]
                } else {
                    0
                },
            ),
            None => (0, 0),
        };
        let l2_at = l2_off + l2i * 8 * width;
        if entry & L2_COMPRESSED != 0 {
            let x = 62 - (h.cluster_bits - 8);
            let off = entry & ((1u64 << x) - 1);
            let sectors = (entry >> x) & ((1u64 << (62 - x)) - 1);
            let max = (sectors + 1) * 512 - (off % 512);
            if off >= file_len {
                return Err(self.err(
                    l2_at,
                    format!(
                        "L2 entry {l2i} ({entry:#x}): compressed data at {off:#x}, past the end \
                         of the {file_len:#x}-byte file"
                    ),
                ));
            }
            return Ok((Mapping::Compressed(off, max), cluster_left));
        }
        let host = entry & OFFSET_MASK;
        let outside = |at: u64| {
            self.err(
                l2_at,
                format!(
                    "L2 entry {l2i} ({entry:#x}): data cluster at {host:#x}, past the end of the \
                     {file_len:#x}-byte file (byte {at:#x} is needed)"
                ),
            )
        };
        if h.extended_l2 {
            let sub = cs / 32;
            let si = in_cluster / sub;
            let left = sub - in_cluster % sub;
            if bitmap & (1 << si) != 0 {
                if host == 0 || !host.is_multiple_of(cs) {
                    return Err(self.err(
                        l2_at,
                        format!(
                            "L2 entry {l2i} ({entry:#x}, bitmap {bitmap:#x}): subcluster {si} \
                             is allocated but the cluster offset is {host:#x}"
                        ),
                    ));
                }
                let at = host + si * sub + in_cluster % sub;
                if at >= file_len {
                    return Err(outside(at));
                }
                return Ok((Mapping::Data(at), left));
            }
            return Ok((Mapping::Zero, left));
        }
        if (h.version >= 3 && entry & L2_ZERO != 0) || host == 0 {
            return Ok((Mapping::Zero, cluster_left));
        }
        if !host.is_multiple_of(cs) {
            return Err(self.err(
                l2_at,
                format!(
                    "L2 entry {l2i} ({entry:#x}): data cluster {host:#x} is not cluster-aligned"
                ),
            ));
        }
        if host + in_cluster >= file_len {
            return Err(outside(host + in_cluster));
        }
        Ok((Mapping::Data(host + in_cluster), cluster_left))
    }

    fn decompress(&mut self, off: u64, max: u64) -> Result<&[u8]> {
        if self.cluster.as_ref().map(|(o, _)| *o) != Some(off) {
            let cs = self.img.header.cluster_size() as usize;
            let n = max.min(self.img.input.len - off);
            let data = self
                .img
                .input
                .read_vec(off, n, FMT, "a compressed cluster")?;
            let mut out = vec![0u8; cs];
            let ok = match self.img.header.compression {
                Compression::Zlib => {
                    let mut d = flate2::Decompress::new(false);
                    match d.decompress(&data, &mut out, flate2::FlushDecompress::Finish) {
                        Ok(_) => d.total_out() == cs as u64,
                        Err(_) => false,
                    }
                }
                Compression::Zstd => {
                    // the data may be followed by padding: read one frame
                    match zstd::stream::read::Decoder::with_buffer(&data[..]) {
                        Ok(d) => {
                            let mut d = d.single_frame();
                            d.read_exact(&mut out).is_ok()
                        }
                        Err(_) => false,
                    }
                }
            };
            if !ok {
                return Err(self.err(
                    off,
                    format!(
                        "the compressed cluster at {off:#x} ({:?}, at most {n:#x} bytes) does \
                         not decompress to {cs:#x} bytes",
                        self.img.header.compression
                    ),
                ));
            }
            self.cluster = Some((off, out));
        }
        Ok(self.cluster.as_ref().map_or(&[][..], |(_, b)| b.as_slice()))
    }

    /// Read `buf.len()` bytes of VM state at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len())
        {
            return Err(self.err(
                self.snap.entry_offset + 32,
                format!(
                    "read of {:#x} bytes at {offset:#x}, past the {:#x}-byte VM state",
                    buf.len(),
                    self.len()
                ),
            ));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let g = self.base + offset + done as u64;
            let (m, avail) = self.map(g)?;
            let n = (avail.min((buf.len() - done) as u64)) as usize;
            let out = &mut buf[done..done + n];
            match m {
                Mapping::Zero => out.fill(0),
                Mapping::Data(at) => {
                    if at
                        .checked_add(n as u64)
                        .is_none_or(|e| e > self.img.input.len)
                    {
                        return Err(self.err(
                            at,
                            format!(
                                "data of guest offset {g:#x} at {at:#x}: past the end of the \
                                 {:#x}-byte file (truncated image?)",
                                self.img.input.len
                            ),
                        ));
                    }
                    self.img
                        .input
                        .read_exact_at(out, at, FMT, "a data cluster")?;
                }
                Mapping::Compressed(off, max) => {
                    let cs = self.img.header.cluster_size();
                    let in_cluster = (g % cs) as usize;
                    let c = self.decompress(off, max)?;
                    out.copy_from_slice(&c[in_cluster..in_cluster + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Copy the whole VM state into `dest` (an empty file), leaving zero pages as holes.
    pub fn copy_to(&mut self, dest: &File, dest_path: &Path) -> Result<()> {
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; CHUNK];
        let len = self.len();
        let mut at = 0u64;
        while at < len {
            // unallocated and zero clusters are skipped, not read: they stay holes
            let (m, avail) = self.map(self.base + at)?;
            if m == Mapping::Zero {
                at = at.saturating_add(avail);
                continue;
            }
            let n = (len - at).min(CHUNK as u64).min(avail) as usize;
            self.read_at(at, &mut buf[..n])?;
            for (i, page) in buf[..n].chunks(4096).enumerate() {
                if !dumpconv_core::is_zero(page) {
                    dest.write_all_at(page, at + (i * 4096) as u64)
                        .map_err(|e| Error::io(dest_path, e))?;
                }
            }
            at += n as u64;
        }
        dest.set_len(len).map_err(|e| Error::io(dest_path, e))
    }
}

impl Read for VmState<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let pos = self.pos;
        self.read_at(pos, &mut buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Open a qcow2 image's snapshot (`opts.snapshot`, else the default) as a dump.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Dump> {
    let img = Image::open(Input::open(path)?)?;
    let snap = img.select(opts.snapshot.as_deref())?;
    let mut vm = img.vmstate(snap)?;
    if let Some(limit) = crate::wrapped::max_spill(opts)?.filter(|&l| vm.len() > l) {
        return Err(Error::format(
            path.to_path_buf(),
            snap.entry_offset + 32,
            FMT,
            format!(
                "snapshot {}: its VM state of {:#x} bytes is larger than the --max-spill \
                 limit of {limit:#x} bytes",
                snap.label(),
                vm.len()
            ),
        ));
    }
    let mut magic = [0u8; 4];
    vm.read_at(0, &mut magic[..vm.len().min(4) as usize])?;
    if &magic != crate::migration::MAGIC {
        return Err(Error::format(
            path.to_path_buf(),
            snap.entry_offset,
            FMT,
            format!(
                "snapshot {}: its VM state does not start with the migration stream's \
                 \"QEVM\" magic (it starts {magic:02x?}): not a QEMU savevm snapshot, or \
                 its tables are wrong",
                snap.label()
            ),
        ));
    }
    let dir = crate::wrapped::spill_dir(opts);
    let tmp = tempfile::tempfile_in(&dir).map_err(|e| {
        Error::io(
            &dir,
            io::Error::new(
                e.kind(),
                format!(
                    "creating the temporary copy of the VM state of {}: {e} (set \
                     --spill-dir or $DUMPCONV_SPILL_DIR to use another directory)",
                    path.display()
                ),
            ),
        )
    })?;
    vm.copy_to(&tmp, &dir)?;
    let disk =
        std::os::unix::fs::MetadataExt::blocks(&tmp.metadata().map_err(|e| Error::io(&dir, e))?)
            * 512;
    let inner = Input {
        path: PathBuf::from(format!(
            "{} (VM state of snapshot {})",
            path.display(),
            snap.label()
        )),
        file: Arc::new(tmp),
        len: vm.len(),
    };
    let mut dump = crate::migration::open_input(&inner, 0, opts)?;
    let h = &img.header;
    let mut details = vec![
        (
            "qcow2".to_string(),
            format!(
                "version {}, {}-byte clusters, virtual disk {:#x} bytes, {} compression{}{}",
                h.version,
                h.cluster_size(),
                h.size,
                match h.compression {
                    Compression::Zlib => "zlib",
                    Compression::Zstd => "zstd",
                },
                if h.extended_l2 {
                    ", extended L2 entries"
                } else {
                    ""
                },
                match &h.backing_file {
                    Some(b) => format!(", backing file {b:?} (not needed for the VM state)"),
                    None => String::new(),
                }
            ),
        ),
        ("snapshots".into(), img.snapshot_list()),
        (
            "snapshot".into(),
            format!(
                "{} (VM state of {:#x} bytes at guest offset {:#x}{})",
                snap.label(),
                vm.len(),
                vm.base,
                if opts.snapshot.is_some() {
                    ", chosen with --snapshot"
                } else if img.snapshots.len() > 1 {
                    ", the newest; choose another with --snapshot NAME|ID"
                } else {
                    ", the only one"
                }
            ),
        ),
        (
            "VM state copy".into(),
            format!(
                "unlinked temporary file in {}, {disk:#x} bytes on disk (zero pages left \
                 sparse)",
                dir.display()
            ),
        ),
    ];
    if h.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT) != 0 {
        details.push((
            "warning".into(),
            "the image is marked dirty or corrupt (its refcounts may be stale; the snapshot \
             tables are read as they are)"
                .into(),
        ));
    }
    details.append(&mut dump.details);
    dump.details = details;
    dump.path = path.to_path_buf();
    dump.format = "qcow2-savevm";
    Ok(dump)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::io::Write;

    /// An image with 16 KiB clusters and extended L2 entries (32 subclusters of 512
    /// bytes), built here from the qcow2 specification: clusters 0 header, 1 active L1,
    /// 2 an active L2 full of garbage pointers (never to be used), 3 the snapshot's L1,
    /// 4 its L2, 5 and 6 data. The VM state (3 clusters after a 16 KiB disk, so at guest
    /// offset 16 MiB, L1 index 1): cluster A all allocated, cluster B with subclusters
    /// 0-15 allocated and 16-31 marked zero, cluster C unallocated.
    fn extl2_image() -> (tempfile::NamedTempFile, Vec<u8>) {
        let cs = 16384usize;
        let mut f = vec![0u8; 7 * cs];
        let put = |f: &mut Vec<u8>, at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
        let vm_len = 3 * cs - 100;
        let mut want = vec![0u8; vm_len];
        for (i, b) in want.iter_mut().enumerate().take(cs + cs / 2) {
            *b = (i % 251) as u8 | 1;
        }
        // header
        put(&mut f, 0, b"QFI\xfb");
        put(&mut f, 4, &3u32.to_be_bytes());
        put(&mut f, 20, &14u32.to_be_bytes());
        put(&mut f, 24, &(cs as u64).to_be_bytes()); // disk size
        put(&mut f, 36, &2u32.to_be_bytes()); // active l1_size
        put(&mut f, 40, &(cs as u64).to_be_bytes());
        put(&mut f, 60, &1u32.to_be_bytes()); // one snapshot
        let snap_at = 7 * cs;
        put(&mut f, 64, &(snap_at as u64).to_be_bytes());
        put(&mut f, 72, &INCOMPAT_EXTL2.to_be_bytes());
        put(&mut f, 96, &4u32.to_be_bytes());
        put(&mut f, 100, &112u32.to_be_bytes());
        // active L1 -> active L2 of garbage
        put(
            &mut f,
            cs + 8,
            &((1u64 << 63) | (2 * cs as u64)).to_be_bytes(),
        );
        for i in 0..cs / 8 {
            put(
                &mut f,
                2 * cs + i * 8,
                &((1u64 << 63) | 0xdead_0000).to_be_bytes(),
            );
        }
        // snapshot L1 -> snapshot L2
        put(
            &mut f,
            3 * cs + 8,
            &((1u64 << 63) | (4 * cs as u64)).to_be_bytes(),
        );
        let l2 = 4 * cs;
        put(&mut f, l2, &((1u64 << 63) | (5 * cs as u64)).to_be_bytes());
        put(&mut f, l2 + 8, &0xffff_ffffu64.to_be_bytes());
        put(
            &mut f,
            l2 + 16,
            &((1u64 << 63) | (6 * cs as u64)).to_be_bytes(),
        );
        put(
            &mut f,
            l2 + 24,
            &(0xffffu64 | (0xffff_0000u64 << 32)).to_be_bytes(),
        );
        // cluster C: entry 0, bitmap 0 (unallocated)
        put(&mut f, 5 * cs, &want[..cs]);
        put(&mut f, 6 * cs, &want[cs..cs + cs / 2]);
        // garbage where subclusters 16-31 of B would be: the zero bits win
        for b in &mut f[6 * cs + cs / 2..7 * cs] {
            *b = 0xee;
        }
        // snapshot table entry
        let mut e = Vec::new();
        e.extend_from_slice(&(3 * cs as u64).to_be_bytes());
        e.extend_from_slice(&2u32.to_be_bytes());
        e.extend_from_slice(&1u16.to_be_bytes());
        e.extend_from_slice(&4u16.to_be_bytes());
        e.extend_from_slice(&[0; 16]);
        e.extend_from_slice(&(vm_len as u32).to_be_bytes());
        e.extend_from_slice(&16u32.to_be_bytes());
        e.extend_from_slice(&(vm_len as u64).to_be_bytes());
        e.extend_from_slice(&(cs as u64).to_be_bytes());
        e.extend_from_slice(b"1snap");
        f.extend_from_slice(&e);
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(&f).unwrap();
        (t, want)
    }

    #[test]
    fn snapshot_dates_in_utc() {
        // checked with `date -u -d @SECS`
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(u32::MAX), "2106-02-07 06:28:15 UTC");
    }

    #[test]
    fn extended_l2_subclusters_and_the_snapshots_own_tables() {
        let (t, want) = extl2_image();
        let img = Image::open(Input::open(t.path()).unwrap()).unwrap();
        assert!(img.header.extended_l2);
        assert_eq!(img.header.l2_entries(), 1024);
        let s = img.select(Some("snap")).unwrap();
        let mut vm = img.vmstate(s).unwrap();
        assert_eq!(vm.base, 16 << 20);
        let mut got = vec![0u8; want.len()];
        vm.read_at(0, &mut got).unwrap();
        assert!(got == want, "VM state differs");
        // reads across subcluster and cluster boundaries
        let mut part = vec![0u8; 1000];
        vm.read_at(16384 - 300, &mut part).unwrap();
        assert!(part[..] == want[16384 - 300..16384 + 700]);
        assert!(vm.read_at(want.len() as u64 - 10, &mut part).is_err());
    }

    #[test]
    fn an_allocated_subcluster_of_an_unallocated_cluster_is_an_error() {
        let (t, _) = extl2_image();
        let mut f = std::fs::read(t.path()).unwrap();
        // cluster C: bitmap says subcluster 0 is allocated, but the entry has no offset
        let at = 4 * 16384 + 32 + 8;
        f[at..at + 8].copy_from_slice(&1u64.to_be_bytes());
        std::fs::write(t.path(), &f).unwrap();
        let img = Image::open(Input::open(t.path()).unwrap()).unwrap();
        let s = img.select(None).unwrap();
        let mut vm = img.vmstate(s).unwrap();
        let mut buf = vec![0u8; 16];
        let e = vm.read_at(2 * 16384, &mut buf).unwrap_err().to_string();
        assert!(
            e.contains("L2 entry 2") && e.contains("subcluster 0"),
            "{e}"
        );
    }
}
