//! Finding the kernel's VMCOREINFO in a dump's RAM (for inputs that carry no VMCOREINFO
//! note: raw images, LiME, AVML, QEMU dumps without the vmcoreinfo device).
//!
//! Linux keeps its VMCOREINFO twice in RAM, each copy at the start of a page of its
//! own: the text (`vmcoreinfo_data`, one zeroed page, `KEY=value\n` lines, NUL after the
//! last) and the ELF note the kernel exports through `/sys/kernel/vmcoreinfo`
//! (`vmcoreinfo_note`, page-aligned: `n_namesz` 11, `n_descsz`, `n_type` 0,
//! "VMCOREINFO\0" padded to 12 bytes, then the same text). [`scan_ram`] goes through RAM
//! once and looks only at page starts for either form: RAM stored in a file is mapped a
//! window at a time (no copy; holes and known-zero ranges skipped unread), other memory
//! is read in large sequential blocks through [`PhysicalMemory`] (bounded memory: one
//! block). Every candidate is checked as text
//! ([`check_text`]): a truncated or garbled copy is rejected with the reason. Identical
//! texts are one finding with several copies (the note's address first: it is what
//! `/sys/kernel/vmcoreinfo` gives). The number of candidates looked at and of distinct
//! findings is bounded, so RAM full of copies costs bounded time and memory.
//!
//! The same pass records where "Linux version " (the start of `linux_banner`) occurs,
//! for the last-resort root scan ([`crate::ArchWalker::scan_roots`]), unless
//! [`ScanLimits::max_banners`] is 0: finding them means reading every byte, not only
//! page starts.

use std::fs::File;

use crate::error::Result;
use crate::memory::{Backing, Extent, PhysicalMemory};
use crate::vmcoreinfo::VmcoreInfo;

/// How much a scan may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Bytes read at once (rounded to pages).
    pub block: usize,
    /// Candidates (page starts that look like either form) examined; the rest are
    /// counted in [`RamScan::skipped`].
    pub max_candidates: usize,
    /// Distinct VMCOREINFO texts kept.
    pub max_found: usize,
    /// "Linux version " positions kept.
    pub max_banners: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            block: 8 << 20,
            max_candidates: 4096,
            max_found: 16,
            max_banners: 256,
        }
    }
}

/// One distinct VMCOREINFO text found in RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVmcoreinfo {
    /// The physical address that names it: its ELF note's when one was found (what
    /// `/sys/kernel/vmcoreinfo` gives), else the text's.
    pub phys: u64,
    /// True when `phys` is an ELF note, false when it is bare text.
    pub is_note: bool,
    /// Every page start holding this text (note or bare), ascending, at most 16.
    pub copies: Vec<u64>,
    pub info: VmcoreInfo,
}

/// What [`scan_ram`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RamScan {
    /// Distinct valid texts, in order of first address.
    pub found: Vec<FoundVmcoreinfo>,
    /// Candidates rejected: physical address and why (first 32).
    pub rejected: Vec<(u64, String)>,
    /// Candidates rejected in all.
    pub rejected_count: u64,
    /// Candidates examined.
    pub candidates: u64,
    /// Candidates not examined (past [`ScanLimits::max_candidates`] or
    /// [`ScanLimits::max_found`]).
    pub skipped: u64,
    /// Bytes of RAM read.
    pub bytes: u64,
    /// Bytes of RAM known to be zero (holes of the input file, zero segments): not read.
    pub zero_bytes: u64,
    /// Blocks that could not be read (a damaged compressed page...): address and error,
    /// first 8.
    pub unreadable: Vec<(u64, String)>,
    /// Physical addresses of "Linux version " (first [`ScanLimits::max_banners`]).
    pub banners: Vec<u64>,
}

const PAGE: u64 = 4096;
const NOTE_NAME: &[u8; 12] = b"VMCOREINFO\0\0";
const TEXT_START: &[u8] = b"OSRELEASE=";
/// The longest text taken (VMCOREINFO_BYTES is one page; 64 KiB pages exist).
pub const MAX_TEXT: usize = 64 << 10;
const BANNER: &[u8] = b"Linux version ";

/// Which form a page start holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Note { descsz: u32 },
    Text,
}

fn form_at(p: &[u8]) -> Option<Form> {
    if p.len() < 24 {
        return None;
    }
    if p.starts_with(TEXT_START) {
        return Some(Form::Text);
    }
    if &p[12..24] != NOTE_NAME || p[8..12] != [0; 4] {
        return None;
    }
    let w = |i: usize, big: bool| {
        let b = [p[i], p[i + 1], p[i + 2], p[i + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    [false, true]
        .into_iter()
        .find(|&big| w(0, big) == 11)
        .map(|big| Form::Note { descsz: w(4, big) })
}

/// Check VMCOREINFO text as the kernel writes it: printable `KEY=value` lines, each
/// ending in a newline, `OSRELEASE=` and `PAGESIZE=` among them, at least one
/// `SYMBOL(..)`. The text ends at the first NUL. The error says what is wrong.
pub fn check_text(raw: &[u8]) -> std::result::Result<VmcoreInfo, String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = &raw[..end];
    if text.is_empty() {
        return Err("empty text".into());
    }
    if let Some(i) = text
        .iter()
        .position(|&c| c != b'\n' && !(0x20..0x7f).contains(&c))
    {
        return Err(format!(
            "byte {:#04x} at offset {i} is not text (garbage or another structure)",
            text[i]
        ));
    }
    if text.last() != Some(&b'\n') {
        let last = text.rsplit(|&c| c == b'\n').next().unwrap_or(text);
        let shown = String::from_utf8_lossy(&last[..last.len().min(40)]).into_owned();
        return Err(format!(
            "truncated: the text ends inside a line ({shown:?}, no newline after it)"
        ));
    }
    for (n, line) in text.split(|&c| c == b'\n').enumerate() {
        if !line.is_empty() && !line.contains(&b'=') {
            let shown = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
            return Err(format!("line {} ({shown:?}) is not KEY=value", n + 1));
        }
    }
    let v = VmcoreInfo::parse(text);
    match v.osrelease() {
        Some(r) if !r.is_empty() => {}
        _ => return Err("no OSRELEASE= value".into()),
    }
    if !v
        .page_size()
        .is_some_and(|p| p.is_power_of_two() && p >= 1024)
    {
        return Err("no PAGESIZE= power of two".into());
    }
    if !v.entries().iter().any(|(k, _)| k.starts_with("SYMBOL(")) {
        return Err("no SYMBOL(..) line".into());
    }
    Ok(VmcoreInfo::parse(raw.get(..end).unwrap_or(raw)))
}

/// Read the candidate's text at `page` (its descriptor for a note). Never more than
/// [`MAX_TEXT`] bytes; a read past RAM's end takes what RAM has.
fn read_candidate(
    mem: &dyn PhysicalMemory,
    page: u64,
    form: Form,
) -> std::result::Result<Vec<u8>, String> {
    let (start, len) = match form {
        Form::Note { descsz } => {
            if descsz == 0 || descsz as usize > MAX_TEXT {
                return Err(format!(
                    "ELF note with n_descsz {descsz:#x} (expected 1 to {MAX_TEXT:#x})"
                ));
            }
            (page + 24, descsz as usize)
        }
        Form::Text => (page, MAX_TEXT),
    };
    let mut out = Vec::new();
    let mut at = start;
    while out.len() < len {
        let want = (len - out.len()).min((PAGE - at % PAGE) as usize);
        let mut buf = vec![0u8; want];
        if mem.read_at(at, &mut buf).is_err() {
            if let Form::Note { descsz } = form {
                return Err(format!(
                    "ELF note with n_descsz {descsz:#x} runs past RAM at {at:#x} (truncated)"
                ));
            }
            break;
        }
        let nul = buf.iter().position(|&b| b == 0);
        out.extend_from_slice(&buf[..nul.unwrap_or(buf.len())]);
        if nul.is_some() {
            break;
        }
        at += want as u64;
    }
    if matches!(form, Form::Text) && out.len() >= len {
        return Err(format!("no end of text within {MAX_TEXT:#x} bytes"));
    }
    Ok(out)
}

/// Look through the RAM of `mem` for VMCOREINFO (see the module documentation).
/// Errors only if nothing at all can be read; unreadable blocks are listed.
///
/// RAM stored in a file is mapped (a window of at most `limits.block` x 8 at a time) and
/// only page starts are touched, unless banners are wanted ([`ScanLimits::max_banners`]
/// not 0): no copy through a buffer, and holes in the file (`SEEK_DATA`) and known-zero
/// ranges are skipped without reading (neither can hold a candidate or a banner). Other
/// memory (compressed pages...) is read in blocks of `limits.block`.
pub fn scan_ram(mem: &dyn PhysicalMemory, limits: &ScanLimits) -> Result<RamScan> {
    let block = (limits.block as u64).max(PAGE) / PAGE * PAGE;
    let window = block.saturating_mul(8);
    let mut scan = RamScan::default();
    let mut buf = Vec::new();
    let finder = memchr::memmem::Finder::new(BANNER);
    for r in mem.ranges().to_vec() {
        let mut at = r.start.next_multiple_of(PAGE);
        while at < r.end {
            let left = r.end - at;
            // Known zeros (holes of a sparse image, zero fill) hold no candidate and no
            // banner: skipped without reading. A page that is zero only in part is looked
            // at. Reads stop where a hole starts (rounded up to a page).
            let mut len = block.min(left);
            match mem.extent(at, left) {
                Extent::Zero(n) if n >= PAGE => {
                    let skip = n.min(left) / PAGE * PAGE;
                    scan.zero_bytes += skip;
                    at += skip;
                    continue;
                }
                Extent::Data(n) => {
                    let data = n.next_multiple_of(PAGE).max(PAGE).min(left);
                    if let Some(Backing::File {
                        file,
                        offset,
                        len: flen,
                    }) = mem.backing(at)
                    {
                        // Whole pages, unless this is the end of the range.
                        let len = flen.min(data).min(window);
                        let len = if len == left { len } else { len / PAGE * PAGE };
                        if let Some(map) = map_file(file, offset, len).filter(|_| len > 0) {
                            scan.bytes += len;
                            look_at(mem, at, map.bytes(), limits, &finder, &mut scan);
                            at += len;
                            continue;
                        }
                    }
                    len = len.min(data);
                }
                Extent::Missing(n) => {
                    len = len.min(n.next_multiple_of(PAGE).max(PAGE)).min(left);
                }
                // Zero only in part (a hole that starts or ends inside the page, as
                // in an ELF whose segment offsets are not page-aligned): this one page
                // is read, not a whole block that would run into the hole after it.
                Extent::Zero(_) => len = len.min(PAGE),
            }
            buf.resize(len as usize, 0);
            if let Err(e) = mem.read_at(at, &mut buf) {
                if scan.unreadable.len() < 8 {
                    scan.unreadable.push((at, e.to_string()));
                }
                at += len;
                continue;
            }
            scan.bytes += len;
            look_at(mem, at, &buf, limits, &finder, &mut scan);
            at += len;
        }
    }
    Ok(scan)
}

/// Look for banners (if wanted) and candidates in `bytes`, the RAM at `at` (a page
/// start).
fn look_at(
    mem: &dyn PhysicalMemory,
    at: u64,
    bytes: &[u8],
    limits: &ScanLimits,
    finder: &memchr::memmem::Finder<'_>,
    scan: &mut RamScan,
) {
    if scan.banners.len() < limits.max_banners {
        for i in finder.find_iter(bytes) {
            if scan.banners.len() >= limits.max_banners {
                break;
            }
            scan.banners.push(at + i as u64);
        }
    }
    for (i, p) in bytes.chunks(PAGE as usize).enumerate() {
        let Some(form) = form_at(p) else { continue };
        let page = at + i as u64 * PAGE;
        take_candidate(mem, page, form, limits, scan);
    }
}

/// A read-only mapping of part of an input file.
struct FileWindow {
    map: memmap2::Mmap,
    skip: usize,
    len: usize,
}

impl FileWindow {
    fn bytes(&self) -> &[u8] {
        self.map.get(self.skip..self.skip + self.len).unwrap_or(&[])
    }
}

/// Map `len` bytes of `file` at `offset`, or None (the caller reads instead) when the
/// file is shorter or the mapping fails.
fn map_file(file: &File, offset: u64, len: u64) -> Option<FileWindow> {
    let end = offset.checked_add(len)?;
    if file.metadata().ok()?.len() < end {
        return None;
    }
    let start = offset / MAP_ALIGN * MAP_ALIGN;
    let skip = usize::try_from(offset - start).ok()?;
    let len = usize::try_from(len).ok()?;
    let map_len = skip.checked_add(len)?;
    // SAFETY: the mapping is read-only and private to this function's caller, and lies
    // within the file's current size (checked above). The input files are opened
    // read-only and dumpconv never writes them; as with any mapped file, another process
    // truncating the input while it is scanned would fault (SIGBUS), which is the one
    // risk taken for not copying RAM through a buffer.
    #[allow(unsafe_code)]
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(map_len)
            .map(file)
    }
    .ok()?;
    Some(FileWindow { map, skip, len })
}

/// Mapping offsets are rounded down to this (a multiple of any host page size).
const MAP_ALIGN: u64 = 64 << 10;

fn take_candidate(
    mem: &dyn PhysicalMemory,
    page: u64,
    form: Form,
    limits: &ScanLimits,
    scan: &mut RamScan,
) {
    if scan.candidates >= limits.max_candidates as u64 {
        scan.skipped += 1;
        return;
    }
    scan.candidates += 1;
    let is_note = matches!(form, Form::Note { .. });
    let checked = read_candidate(mem, page, form).and_then(|t| check_text(&t));
    let info = match checked {
        Ok(v) => v,
        Err(why) => {
            scan.rejected_count += 1;
            if scan.rejected.len() < 32 {
                let what = if is_note { "note" } else { "text" };
                scan.rejected.push((page, format!("{what}: {why}")));
            }
            return;
        }
    };
    if let Some(f) = scan.found.iter_mut().find(|f| f.info.raw() == info.raw()) {
        if f.copies.len() < 16 {
            f.copies.push(page);
        }
        if is_note && !f.is_note {
            f.is_note = true;
            f.phys = page;
        }
        return;
    }
    if scan.found.len() >= limits.max_found {
        scan.skipped += 1;
        return;
    }
    scan.found.push(FoundVmcoreinfo {
        phys: page,
        is_note,
        copies: vec![page],
        info,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::memory::PhysRange;

    struct VecMem(Vec<u8>, Vec<PhysRange>);
    impl PhysicalMemory for VecMem {
        fn ranges(&self) -> &[PhysRange] {
            &self.1
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            let end = paddr as usize + buf.len();
            if end > self.0.len() {
                return Err(Error::Hole { paddr });
            }
            buf.copy_from_slice(&self.0[paddr as usize..end]);
            Ok(())
        }
    }

    const TEXT: &[u8] =
        b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\nSYMBOL(_stext)=ffffffff81000000\n";

    fn note(desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&11u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&0u32.to_le_bytes());
        n.extend_from_slice(b"VMCOREINFO\0\0");
        n.extend_from_slice(desc);
        n
    }

    #[test]
    fn finds_note_and_text_copies_and_rejects_garbage() {
        let mut m = vec![0u8; 64 * 4096];
        let put = |m: &mut Vec<u8>, at: usize, b: &[u8]| m[at..at + b.len()].copy_from_slice(b);
        put(&mut m, 3 * 4096, TEXT);
        put(&mut m, 9 * 4096, &note(TEXT));
        // Not page aligned: not looked at.
        put(&mut m, 10 * 4096 + 8, TEXT);
        // Truncated, garbage, a note with a huge size.
        put(&mut m, 12 * 4096, b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=40");
        put(&mut m, 13 * 4096, b"OSRELEASE=6.1\x01\x02\n");
        let mut big = note(b"x");
        big[4..8].copy_from_slice(&0x100_0000u32.to_le_bytes());
        put(&mut m, 14 * 4096, &big);
        put(&mut m, 20 * 4096 + 100, b"Linux version 6.1.0 (x)");
        let mem = VecMem(m, vec![PhysRange::new(0, 64 * 4096)]);
        let s = scan_ram(
            &mem,
            &ScanLimits {
                block: 16 * 4096,
                ..ScanLimits::default()
            },
        )
        .unwrap();
        assert_eq!(s.found.len(), 1);
        assert_eq!(s.found[0].phys, 9 * 4096);
        assert!(s.found[0].is_note);
        assert_eq!(s.found[0].copies, vec![3 * 4096, 9 * 4096]);
        assert_eq!(s.found[0].info.raw(), TEXT);
        assert_eq!(s.rejected_count, 3);
        assert!(s.rejected[0].1.contains("truncated"), "{:?}", s.rejected);
        assert!(s.rejected[1].1.contains("not text"), "{:?}", s.rejected);
        assert!(s.rejected[2].1.contains("n_descsz"), "{:?}", s.rejected);
        assert_eq!(s.banners, vec![20 * 4096 + 100]);
        assert_eq!(s.bytes, 64 * 4096);
    }

    #[test]
    fn many_copies_cost_bounded_work() {
        let pages = 2048;
        let mut m = vec![0u8; pages * 4096];
        for p in 0..pages {
            let t =
                format!("OSRELEASE=6.1.0-{p}\nPAGESIZE=4096\nSYMBOL(_stext)=ffffffff81000000\n");
            m[p * 4096..p * 4096 + t.len()].copy_from_slice(t.as_bytes());
        }
        let mem = VecMem(m, vec![PhysRange::new(0, (pages * 4096) as u64)]);
        let s = scan_ram(
            &mem,
            &ScanLimits {
                max_candidates: 100,
                max_found: 8,
                ..ScanLimits::default()
            },
        )
        .unwrap();
        assert_eq!(s.found.len(), 8);
        assert_eq!(s.candidates, 100);
        assert_eq!(s.skipped, pages as u64 - 8);
    }

    /// The mapped path (RAM in a file, with holes and a zero segment) finds what the
    /// placement says, as the buffered path does for the same bytes.
    #[test]
    fn file_backed_ram_with_holes_and_unaligned_offset() {
        use crate::memory::{Segment, SegmentMemory, SegmentSource};
        use std::io::{Seek, SeekFrom, Write};
        use std::path::PathBuf;
        use std::sync::Arc;

        // The file: 100 bytes of header, then 3 MiB of "RAM" at file offset 100 (not
        // page aligned): text at page 2, a hole of 1 MiB from page 16, the note at page
        // 300, a banner inside page 400, the rest a hole to the end.
        let pages = 768u64;
        let off = 100u64;
        let mut f = tempfile::tempfile().unwrap();
        let mut put = |at: u64, b: &[u8]| {
            f.seek(SeekFrom::Start(off + at)).unwrap();
            f.write_all(b).unwrap();
        };
        put(0, &[0x55; 16 * 4096]);
        put(2 * 4096, TEXT);
        put(2 * 4096 + TEXT.len() as u64, &[0]);
        put(300 * 4096 - 8192, &[0x55; 8192]);
        put(300 * 4096, &note(TEXT));
        put(400 * 4096 + 1000, b"Linux version 6.1.0 (x)");
        f.set_len(off + pages * 4096).unwrap();
        let mut whole = vec![0u8; (pages * 4096) as usize];
        f.seek(SeekFrom::Start(off)).unwrap();
        std::io::Read::read_exact(&mut f, &mut whole).unwrap();
        // Physical layout: the file's RAM at 1 MiB, a zero segment of 2 MiB after it.
        let base = 1 << 20;
        let mem = SegmentMemory::new(
            vec![(PathBuf::from("t"), Arc::new(f))],
            vec![
                Segment {
                    range: PhysRange::with_len(base, pages * 4096),
                    source: SegmentSource::File {
                        file: 0,
                        offset: off,
                    },
                },
                Segment {
                    range: PhysRange::with_len(base + pages * 4096, 2 << 20),
                    source: SegmentSource::Zero,
                },
            ],
        )
        .unwrap();
        // Small blocks: several windows, a window boundary inside the data.
        let limits = ScanLimits {
            block: 32 * 4096,
            ..ScanLimits::default()
        };
        let s = scan_ram(&mem, &limits).unwrap();
        assert_eq!(s.found.len(), 1, "{s:?}");
        assert_eq!(s.found[0].phys, base + 300 * 4096);
        assert!(s.found[0].is_note);
        assert_eq!(s.found[0].copies, vec![base + 2 * 4096, base + 300 * 4096]);
        assert_eq!(s.banners, vec![base + 400 * 4096 + 1000]);
        assert_eq!(s.rejected_count, 0);
        assert_eq!(s.bytes + s.zero_bytes, pages * 4096 + (2 << 20));
        assert!(s.zero_bytes >= 2 << 20, "the zero segment is not read");
        if s.zero_bytes > 2 << 20 {
            // The file system reports holes: only the pages holding data are read (21
            // pages of data, each straddling two file blocks at offset 100), not a whole
            // block after each page that is zero in part.
            assert!(s.bytes <= 40 * 4096, "{} bytes read", s.bytes);
        }

        // The same bytes through the buffered path.
        let mut all = vec![0u8; (base + pages * 4096 + (2 << 20)) as usize];
        all[base as usize..(base + pages * 4096) as usize].copy_from_slice(&whole);
        let vm = VecMem(
            all,
            vec![PhysRange::with_len(base, pages * 4096 + (2 << 20))],
        );
        let r = scan_ram(&vm, &limits).unwrap();
        assert_eq!(r.found, s.found);
        assert_eq!(r.banners, s.banners);

        // Without banners wanted, none are looked for.
        let s = scan_ram(
            &mem,
            &ScanLimits {
                max_banners: 0,
                ..limits
            },
        )
        .unwrap();
        assert!(s.banners.is_empty());
        assert_eq!(s.found.len(), 1);
    }

    #[test]
    fn text_checks() {
        assert!(check_text(TEXT).is_ok());
        assert!(check_text(b"").unwrap_err().contains("empty"));
        assert!(check_text(b"OSRELEASE=x\nPAGESIZE=4096\n")
            .unwrap_err()
            .contains("SYMBOL"));
        assert!(check_text(b"OSRELEASE=x\nSYMBOL(a)=1\n")
            .unwrap_err()
            .contains("PAGESIZE"));
        assert!(check_text(b"OSRELEASE=x\nhello\nPAGESIZE=4096\n")
            .unwrap_err()
            .contains("line 2"));
    }
}
