//! Raw writer: offset == physical address, holes sparse, streams and files agree.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;

use dumpconv_core::{
    Arch, DumpPlan, DumpWriter, Error, FileSink, Mapping, MappingList, NoProgress, PhysRange,
    PhysicalMemory, Progress, Segment, SegmentMemory, SegmentSource, Sink, StreamSink,
};
use dumpconv_raw::RawWriter;

fn pattern(paddr: u64) -> u8 {
    ((paddr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8) | 1
}

/// File-backed RAM pieces (`zero` = known-zero segment); data pages for which
/// `zero_page` holds are zeros (holes in the sparse input file).
fn synth(pieces: &[(u64, u64, bool)], zero_page: impl Fn(u64) -> bool) -> SegmentMemory {
    let f = tempfile::tempfile().unwrap();
    let mut segs = Vec::new();
    let mut off = 0;
    for &(start, end, zero) in pieces {
        if zero {
            segs.push(Segment {
                range: PhysRange::new(start, end),
                source: SegmentSource::Zero,
            });
            continue;
        }
        let mut a = start;
        while a < end {
            let next = ((a & !0xfff) + 0x1000).min(end);
            if !zero_page(a & !0xfff) {
                let page: Vec<u8> = (a..next).map(pattern).collect();
                f.write_all_at(&page, off + (a - start)).unwrap();
            }
            a = next;
        }
        f.set_len(off + end - start).unwrap();
        segs.push(Segment {
            range: PhysRange::new(start, end),
            source: SegmentSource::File {
                file: 0,
                offset: off,
            },
        });
        off += end - start;
    }
    SegmentMemory::new(vec![(PathBuf::from("synth"), Arc::new(f))], segs).unwrap()
}

fn plan(ranges: Vec<PhysRange>) -> DumpPlan {
    DumpPlan {
        filter: None,
        arch: Arch::X86_64,
        page_size: 4096,
        ranges,
        mappings: None,
        notes: vec![],
        cpus: vec![],
        vmcoreinfo: None,
        options: BTreeMap::new(),
    }
}

fn std_mem() -> SegmentMemory {
    synth(
        &[
            (0x0, 0x9fc00, false),
            (0x100000, 0x800000, false),
            (0x800000, 0x900000, true),
            (0xa00010, 0xa03456, false),
        ],
        |pg| (0x100000..0x800000).contains(&pg) && (pg / 4096) % 16 != 3 || pg == 0xa03000,
    )
}

/// Every byte of the image: RAM of the plan as the source, zeros elsewhere.
fn check_image(img: &[u8], pl: &DumpPlan, mem: &dyn PhysicalMemory) {
    assert_eq!(img.len() as u64, pl.ranges.last().map_or(0, |r| r.end));
    let mut at = 0u64;
    for r in &pl.ranges {
        assert!(
            img[at as usize..r.start as usize].iter().all(|&b| b == 0),
            "gap before {:#x}",
            r.start
        );
        let mut want = vec![0; r.len() as usize];
        mem.read_at(r.start, &mut want).unwrap();
        assert!(
            img[r.start as usize..r.end as usize] == want[..],
            "range {r:x?}"
        );
        at = r.end;
    }
}

fn write_file(pl: &DumpPlan, mem: &dyn PhysicalMemory) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.raw");
    let mut sink = FileSink::new(File::create(&path).unwrap(), &path);
    RawWriter::new()
        .write(pl, mem, &mut sink, &NoProgress)
        .unwrap();
    (dir, path)
}

#[test]
fn image_matches_source_file_and_stream() {
    let mem = std_mem();
    let pl = plan(mem.ranges().to_vec());
    let (_d, path) = write_file(&pl, &mem);
    let img = std::fs::read(&path).unwrap();
    check_image(&img, &pl, &mem);
    let mut s = StreamSink::new(Vec::new(), "s");
    RawWriter::new()
        .write(&pl, &mem, &mut s, &NoProgress)
        .unwrap();
    assert!(s.into_inner() == img);
}

#[test]
fn begin_window_keeps_physical_offsets() {
    // --begin 0x180000 --length 0x100000: the file still starts at physical 0.
    let mem = std_mem();
    let ranges =
        dumpconv_core::memory::clip_ranges(mem.ranges(), PhysRange::new(0x180000, 0x280000));
    let pl = plan(ranges);
    let (_d, path) = write_file(&pl, &mem);
    let img = std::fs::read(&path).unwrap();
    assert_eq!(img.len(), 0x280000);
    check_image(&img, &pl, &mem);
    // The leading 1.5 MiB is a hole, not written zeros.
    let md = std::fs::metadata(&path).unwrap();
    assert!(
        md.blocks() * 512 < 0x100000,
        "{} bytes allocated",
        md.blocks() * 512
    );
}

#[test]
fn trailing_zero_page_gives_full_length() {
    let mem = synth(&[(0, 0x3000, false)], |pg| pg == 0x2000);
    let pl = plan(mem.ranges().to_vec());
    let (_d, path) = write_file(&pl, &mem);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0x3000);
    check_image(&std::fs::read(&path).unwrap(), &pl, &mem);
}

#[test]
fn mostly_zero_image_is_sparse() {
    // 256 MiB address space: 128 MiB mostly-zero RAM, a 64 MiB hole, 64 MiB known zeros.
    let mem = synth(
        &[(0, 0x800_0000, false), (0xc00_0000, 0x1000_0000, true)],
        |pg| pg % 0x20_0000 != 0x1000,
    );
    let pl = plan(mem.ranges().to_vec());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.raw");
    let mut sink = FileSink::new(File::create(&path).unwrap(), &path);
    let stats = RawWriter::new()
        .write_with_stats(&pl, &mem, &mut sink, &NoProgress)
        .unwrap();
    assert_eq!(stats.written, 64 * 4096);
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.len(), 0x1000_0000);
    assert!(
        md.blocks() * 512 < 2 << 20,
        "{} bytes allocated",
        md.blocks() * 512
    );
    // Spot checks rather than reading it all back.
    let f = File::open(&path).unwrap();
    for a in [
        0x1000u64, 0x20_1000, 0x7e0_1ff0, 0x2000, 0x900_0000, 0xfff_fff0,
    ] {
        let mut got = [0u8; 16];
        f.read_exact_at(&mut got, a).unwrap();
        let mut want = [0u8; 16];
        if mem.is_ram(a, 16) {
            mem.read_at(a, &mut want).unwrap();
        }
        assert_eq!(got, want, "at {a:#x}");
    }
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<(u64, u64, usize)>);

impl Progress for Recorder {
    fn start(&self, _: &str, total: u64) {
        self.0.lock().unwrap().0 = total;
    }
    fn advance(&self, n: u64) {
        self.0.lock().unwrap().1 += n;
    }
    fn warn(&self, _: &str) {
        self.0.lock().unwrap().2 += 1;
    }
}

#[test]
fn progress_and_paging_warning() {
    let mem = std_mem();
    let mut pl = plan(mem.ranges().to_vec());
    pl.mappings = Some(
        [Mapping {
            virt: 0xffff_8880_0000_0000,
            phys: 0,
            len: 0x1000,
        }]
        .into_iter()
        .collect::<MappingList>(),
    );
    let rec = Recorder::default();
    let mut s = StreamSink::new(io::sink(), "null");
    RawWriter::new().write(&pl, &mem, &mut s, &rec).unwrap();
    let (total, done, warns) = rec.0.into_inner().unwrap();
    assert_eq!(
        (total, done, warns),
        (mem.total_bytes(), mem.total_bytes(), 1)
    );
}

struct FailingSink(u64);

impl Sink for FailingSink {
    fn write_all(&mut self, b: &[u8]) -> dumpconv_core::Result<()> {
        self.skip(b.len() as u64)
    }
    fn skip(&mut self, n: u64) -> dumpconv_core::Result<()> {
        if self.0 < n {
            return Err(Error::Output {
                path: "full".into(),
                offset: 0,
                source: io::Error::other("no space"),
            });
        }
        self.0 -= n;
        Ok(())
    }
    fn position(&self) -> u64 {
        0
    }
    fn is_seekable(&self) -> bool {
        false
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> dumpconv_core::Result<()> {
        unreachable!()
    }
    fn finish(&mut self) -> dumpconv_core::Result<()> {
        Ok(())
    }
}

#[test]
fn errors_propagate() {
    let mem = std_mem();
    let pl = plan(mem.ranges().to_vec());
    let e = RawWriter::new()
        .write(&pl, &mem, &mut FailingSink(0x50000), &NoProgress)
        .unwrap_err();
    assert!(matches!(e, Error::Output { .. }));
    // Not RAM.
    let pl = plan(vec![PhysRange::new(0x9f000, 0xa0000)]);
    assert!(RawWriter::new()
        .write(&pl, &mem, &mut FailingSink(u64::MAX), &NoProgress)
        .is_err());
}

#[test]
fn writer_identity() {
    let w = RawWriter::new();
    assert_eq!(w.name(), "raw");
    assert_eq!(w.extensions(), &["raw", "img", "bin", "mem"]);
}
