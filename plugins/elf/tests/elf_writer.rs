//! ELF writer: headers, bytes, classes, views, sinks, sparseness, PN_XNUM, errors.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use dumpconv_core::{
    Arch, DumpWriter, Error, Mapping, MappingList, NoProgress, PhysRange, PhysicalMemory, Progress,
    Segment, SegmentMemory, SegmentSource, Sink, StreamSink,
};
use dumpconv_elf::{ElfClass, ElfWriter};

/// RAM with an unaligned low range, a mostly-zero middle followed by known-zero memory
/// (one RAM range, two backings), and a small range unaligned at both ends.
fn std_mem() -> SegmentMemory {
    synth(
        &[
            (0x0, 0x9fc00, Piece::Data),
            (0x100000, 0x800000, Piece::Data),
            (0x800000, 0x900000, Piece::Zero),
            (0xa00010, 0xa03456, Piece::Data),
        ],
        |pg| (0x100000..0x800000).contains(&pg) && (pg / 4096) % 16 != 3,
    )
}

fn write_file(
    plan: &dumpconv_core::DumpPlan,
    mem: &dyn PhysicalMemory,
) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.elf");
    let mut sink = open_file_sink(&path);
    ElfWriter::new()
        .write(plan, mem, &mut sink, &NoProgress)
        .unwrap();
    let data = read_file(&path);
    (dir, path, data)
}

fn write_stream(plan: &dumpconv_core::DumpPlan, mem: &dyn PhysicalMemory) -> Vec<u8> {
    let mut sink = StreamSink::new(Vec::new(), "<stream>");
    ElfWriter::new()
        .write(plan, mem, &mut sink, &NoProgress)
        .unwrap();
    sink.into_inner()
}

#[test]
fn physical_elf64_file_and_stream_agree() {
    let mem = std_mem();
    let plan = plan(Arch::X86_64, mem.ranges().to_vec(), None);
    assert_eq!(plan.ranges.len(), 3);
    let (_d, _p, file) = write_file(&plan, &mem);
    let stream = write_stream(&plan, &mem);
    assert!(file == stream, "file and stream outputs differ");
    let p = check_elf(&file, &plan, &mem);
    assert_eq!(p.class, 2);
    assert_eq!(p.phdrs.len(), 1 + plan.ranges.len());
    assert_eq!(p.e_shnum, 0);
    for (ph, r) in p.phdrs[1..].iter().zip(&plan.ranges) {
        assert_eq!((ph.paddr, ph.memsz), (r.start, r.len()));
        // Page congruence keeps zero pages hole-able.
        assert_eq!(ph.offset % 4096, r.start % 4096);
    }
}

#[test]
fn x86_low_ram_is_elf64_em386_and_elf32_on_request() {
    // The default is ELF64 with EM_386 (docs/readers.md#elf-class: Volatility 3 reads
    // no ELF32); ELF32 stays available.
    let mem = std_mem();
    let mut plan = plan(Arch::X86, mem.ranges().to_vec(), None);
    let (_d, _p, file) = write_file(&plan, &mem);
    let p = check_elf(&file, &plan, &mem);
    assert_eq!((p.class, p.machine, p.ehsize), (2, 3, 64));
    assert_eq!(file, write_stream(&plan, &mem));
    plan.options.insert("elf-class".into(), "32".into());
    let (_d, _p, file) = write_file(&plan, &mem);
    let p = check_elf(&file, &plan, &mem);
    assert_eq!((p.class, p.machine, p.ehsize), (1, 3, 52));
    assert_eq!(file, write_stream(&plan, &mem));
}

#[test]
fn elf_class_option() {
    let mem = std_mem();
    let mut pl = plan(Arch::X86, mem.ranges().to_vec(), None);
    pl.options.insert("elf-class".into(), "64".into());
    let (_d, _p, file) = write_file(&pl, &mem);
    let p = check_elf(&file, &pl, &mem);
    assert_eq!((p.class, p.machine), (2, 3));

    pl.options.insert("elf-class".into(), "32".into());
    assert_eq!(
        ElfWriter::new().layout(&pl, &mem).unwrap().class,
        ElfClass::Elf32
    );

    pl.arch = Arch::X86_64;
    assert!(ElfWriter::new().layout(&pl, &mem).is_err());
    pl.options.insert("elf-class".into(), "128".into());
    assert!(ElfWriter::new().layout(&pl, &mem).is_err());
}

#[test]
fn x86_ram_above_4g_is_elf64_em386() {
    let mem = synth(
        &[
            (0x0, 0x10000, Piece::Data),
            (0x1_0000_0000, 0x1_0000_3000, Piece::Data),
        ],
        |_| false,
    );
    let mut pl = plan(Arch::X86, mem.ranges().to_vec(), None);
    let (_d, _p, file) = write_file(&pl, &mem);
    let p = check_elf(&file, &pl, &mem);
    assert_eq!((p.class, p.machine), (2, 3));
    // Forcing ELF32 cannot work.
    pl.options.insert("elf-class".into(), "32".into());
    let e = ElfWriter::new().layout(&pl, &mem).unwrap_err().to_string();
    assert!(e.contains("ELF32"), "{e}");
    // --begin/--length below 4 GiB of the same guest: still ELF64, like QEMU (the
    // class follows the guest's RAM, not the window).
    pl.options.clear();
    pl.ranges = vec![PhysRange::new(0, 0x10000)];
    assert_eq!(
        ElfWriter::new().layout(&pl, &mem).unwrap().class,
        ElfClass::Elf64
    );
}

const DIRECT: u64 = 0xffff_8880_0000_0000;

/// Mappings: direct map of [0x100000, 0x800000), an alias of page 0x1000, a run across
/// the 0x9fc00..0x100000 hole, a run onto MMIO (not RAM).
fn paging_list() -> MappingList {
    let mut l = MappingList::new();
    l.push(Mapping {
        virt: 0xffff_c900_0000_0000,
        phys: 0x9e000,
        len: 0x64000,
    });
    l.push(Mapping {
        virt: 0xffff_ffff_8100_0000,
        phys: 0x1000,
        len: 0x1000,
    });
    l.push(Mapping {
        virt: 0xffff_ffff_8200_0000,
        phys: 0xfee0_0000,
        len: 0x1000,
    });
    l.push(Mapping {
        virt: DIRECT + 0x100000,
        phys: 0x100000,
        len: 0x700000,
    });
    l.push(Mapping {
        virt: 0x40_0000,
        phys: 0x1000,
        len: 0x2000,
    });
    l.normalize();
    l
}

#[test]
fn paging_view_splits_aliases_and_fills() {
    let mem = std_mem();
    let pl = plan(Arch::X86_64, mem.ranges().to_vec(), Some(paging_list()));
    let (_d, _p, file) = write_file(&pl, &mem);
    assert_eq!(file, write_stream(&pl, &mem));
    let p = check_elf(&file, &pl, &mem);
    let loads = &p.phdrs[1..];

    // No load crosses out of a RAM range.
    for l in loads {
        assert!(mem.is_ram(l.paddr, l.memsz), "{l:x?}");
    }
    // The run across the hole became two loads with consecutive virtual addresses.
    let hole_run: Vec<_> = loads
        .iter()
        .filter(|l| l.vaddr >= 0xffff_c900_0000_0000 && l.vaddr < 0xffff_c900_1000_0000)
        .collect();
    assert_eq!(hole_run.len(), 2);
    assert_eq!((hole_run[0].paddr, hole_run[0].memsz), (0x9e000, 0x1c00));
    assert_eq!(
        (hole_run[1].paddr, hole_run[1].vaddr),
        (0x100000, 0xffff_c900_0000_0000 + 0x62000)
    );
    // MMIO mapping dropped.
    assert!(!loads.iter().any(|l| l.vaddr == 0xffff_ffff_8200_0000));
    // Aliases of physical 0x1000 share one file offset.
    let at_1000: Vec<_> = loads
        .iter()
        .filter(|l| l.paddr <= 0x1000 && 0x1000 < l.paddr + l.memsz)
        .map(|l| l.offset + (0x1000 - l.paddr))
        .collect();
    assert_eq!(at_1000.len(), 2, "{at_1000:x?}");
    assert!(at_1000.iter().all(|&o| o == at_1000[0]));
    // Uncovered RAM: vaddr-0 loads, e.g. page 0 and the known-zero tail.
    let zeros: Vec<_> = loads.iter().filter(|l| l.vaddr == 0).collect();
    assert!(zeros.iter().any(|l| l.paddr == 0 && l.memsz == 0x1000));
    assert!(zeros
        .iter()
        .any(|l| l.paddr == 0x3000 && l.memsz == 0x9e000 - 0x3000));
    assert!(zeros
        .iter()
        .any(|l| l.paddr == 0x800000 && l.memsz == 0x100000));
    assert!(zeros.iter().any(|l| l.paddr == 0xa00010));
    // Memory stored once: the file is headers + RAM + under 4 KiB padding per range.
    let ram = mem.total_bytes();
    let header = p.phdrs[1..].iter().map(|l| l.offset).min().unwrap();
    assert!(
        (file.len() as u64) < header + ram + 4096 * 3,
        "{} vs {}",
        file.len(),
        ram
    );
}

#[test]
fn paging_view_elf32() {
    let mem = std_mem();
    let mut l = MappingList::new();
    l.push(Mapping {
        virt: 0xc000_0000,
        phys: 0,
        len: 0x9f000,
    });
    l.push(Mapping {
        virt: 0xc010_0000,
        phys: 0x100000,
        len: 0x800000,
    });
    l.push(Mapping {
        virt: 0x0804_8000,
        phys: 0x5000,
        len: 0x1000,
    });
    let mut pl = plan(Arch::X86, mem.ranges().to_vec(), Some(l));
    pl.options.insert("elf-class".into(), "32".into());
    let (_d, _p, file) = write_file(&pl, &mem);
    let p = check_elf(&file, &pl, &mem);
    assert_eq!(p.class, 1);
    assert!(p
        .phdrs
        .iter()
        .any(|l| l.vaddr == 0x0804_8000 && l.paddr == 0x5000));
}

/// 70,000 non-mergeable 4 KiB runs aliasing 16 pages: PN_XNUM.
fn xnum_case() -> (SegmentMemory, dumpconv_core::DumpPlan) {
    let mem = synth(&[(0x0, 0x10000, Piece::Data)], |_| false);
    let mut l = MappingList::new();
    for i in 0..70_000u64 {
        l.push(Mapping {
            virt: 0xffff_c900_0000_0000 + i * 0x2000,
            phys: (i % 16) * 0x1000,
            len: 0x1000,
        });
    }
    assert_eq!(l.len(), 70_000);
    let pl = plan(Arch::X86_64, mem.ranges().to_vec(), Some(l));
    (mem, pl)
}

#[test]
fn pn_xnum() {
    let (mem, pl) = xnum_case();
    let (_d, _p, file) = write_file(&pl, &mem);
    let p = check_elf(&file, &pl, &mem);
    assert_eq!(p.e_phnum, 0xffff);
    assert_eq!(p.e_shnum, 1);
    assert_eq!(p.phdrs.len(), 70_001);
    // Bounded by the header table: 16 pages of memory stored once.
    assert!(file.len() < 70_001 * 56 + 64 + 64 + 0x10000 + 2 * 4096);
    // 32-bit x86 with this many headers goes ELF64 (crash reads PN_XNUM only there).
    let mut pl32 = pl.clone();
    pl32.arch = Arch::X86;
    let mut runs = MappingList::new();
    for i in 0..70_000u64 {
        runs.push(Mapping {
            virt: i * 0x2000,
            phys: (i % 16) * 0x1000,
            len: 0x1000,
        });
    }
    pl32.mappings = Some(runs);
    assert_eq!(
        ElfWriter::new().layout(&pl32, &mem).unwrap().class,
        ElfClass::Elf64
    );
    let p32 = check_elf(&write_stream(&pl32, &mem), &pl32, &mem);
    assert_eq!((p32.class, p32.machine, p32.e_phnum), (2, 3, 0xffff));
}

#[test]
fn mostly_zero_image_is_sparse() {
    // 256 MiB, one data page per MiB, plus 64 MiB of known zeros.
    let mem = synth(
        &[
            (0x0, 0x1000_0000, Piece::Data),
            (0x1000_0000, 0x1400_0000, Piece::Zero),
        ],
        |pg| pg % 0x10_0000 != 0x5000,
    );
    let pl = plan(Arch::X86_64, mem.ranges().to_vec(), None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.elf");
    let mut sink = open_file_sink(&path);
    let stats = ElfWriter::new()
        .write_with_stats(&pl, &mem, &mut sink, &NoProgress)
        .unwrap();
    assert_eq!(stats.memory.written, 256 * 4096);
    assert_eq!(
        stats.memory.written + stats.memory.skipped,
        mem.total_bytes()
    );
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.len(), stats.file_size);
    let allocated = md.blocks() * 512;
    assert!(
        allocated < md.len() / 50,
        "allocated {allocated} of {}",
        md.len()
    );
    check_elf(&read_file(&path), &pl, &mem);
}

#[derive(Default)]
struct Recorder(std::sync::Mutex<(u64, u64, Vec<String>)>);

impl Progress for Recorder {
    fn start(&self, _what: &str, total: u64) {
        self.0.lock().unwrap().0 = total;
    }
    fn advance(&self, n: u64) {
        self.0.lock().unwrap().1 += n;
    }
    fn warn(&self, msg: &str) {
        self.0.lock().unwrap().2.push(msg.to_string());
    }
}

#[test]
fn progress_counts_every_byte() {
    let mem = std_mem();
    let pl = plan(Arch::X86_64, mem.ranges().to_vec(), Some(paging_list()));
    let rec = Recorder::default();
    let mut sink = StreamSink::new(io::sink(), "null");
    ElfWriter::new().write(&pl, &mem, &mut sink, &rec).unwrap();
    let (total, done, _) = rec.0.into_inner().unwrap();
    assert_eq!(total, mem.total_bytes());
    assert_eq!(done, total);
}

/// A sink that fails once `limit` bytes have gone through it.
struct FailingSink {
    pos: u64,
    limit: u64,
}

impl Sink for FailingSink {
    fn write_all(&mut self, buf: &[u8]) -> dumpconv_core::Result<()> {
        self.skip(buf.len() as u64)
    }
    fn skip(&mut self, len: u64) -> dumpconv_core::Result<()> {
        if self.pos + len > self.limit {
            return Err(Error::Output {
                path: "full".into(),
                offset: self.pos,
                source: io::Error::other("no space"),
            });
        }
        self.pos += len;
        Ok(())
    }
    fn position(&self) -> u64 {
        self.pos
    }
    fn is_seekable(&self) -> bool {
        false
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> dumpconv_core::Result<()> {
        panic!("the ELF writer must never seek")
    }
    fn finish(&mut self) -> dumpconv_core::Result<()> {
        Ok(())
    }
}

#[test]
fn errors_propagate() {
    let mem = std_mem();
    // Sink failures, at the header and in the middle of memory.
    for limit in [10, 0x20_0000] {
        let pl = plan(Arch::X86_64, mem.ranges().to_vec(), Some(paging_list()));
        let mut s = FailingSink { pos: 0, limit };
        let e = ElfWriter::new()
            .write(&pl, &mem, &mut s, &NoProgress)
            .unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e}");
    }
    // A plan range that is not RAM: refused before anything is written.
    let pl = plan(Arch::X86_64, vec![PhysRange::new(0x9f000, 0xa0000)], None);
    let mut s = FailingSink {
        pos: 0,
        limit: u64::MAX,
    };
    assert!(ElfWriter::new()
        .write(&pl, &mem, &mut s, &NoProgress)
        .is_err());
    assert_eq!(s.pos, 0);
    // Unsorted ranges.
    let pl = plan(
        Arch::X86_64,
        vec![
            PhysRange::new(0x100000, 0x200000),
            PhysRange::new(0, 0x1000),
        ],
        None,
    );
    assert!(ElfWriter::new()
        .write(&pl, &mem, &mut s, &NoProgress)
        .is_err());
    // A memory read error (input file shorter than its segment).
    let f = tempfile::tempfile().unwrap();
    f.set_len(0x1000).unwrap();
    let bad = SegmentMemory::new(
        vec![(PathBuf::from("short"), Arc::new(f))],
        vec![Segment {
            range: PhysRange::new(0, 0x10000),
            source: SegmentSource::File { file: 0, offset: 0 },
        }],
    )
    .unwrap();
    let pl = plan(Arch::X86_64, bad.ranges().to_vec(), None);
    let mut s = FailingSink {
        pos: 0,
        limit: u64::MAX,
    };
    let e = ElfWriter::new()
        .write(&pl, &bad, &mut s, &NoProgress)
        .unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn clipped_window() {
    // --begin/--length cuts ranges: loads follow the plan, not the RAM.
    let mem = std_mem();
    let win = PhysRange::new(0x9f000, 0x180123);
    let ranges = dumpconv_core::memory::clip_ranges(mem.ranges(), win);
    let pl = plan(Arch::X86_64, ranges, Some(paging_list()));
    let (_d, _p, file) = write_file(&pl, &mem);
    let p = check_elf(&file, &pl, &mem);
    for l in &p.phdrs[1..] {
        assert!(
            l.paddr >= 0x9f000 && l.paddr + l.memsz <= 0x180123,
            "{l:x?}"
        );
    }
}

#[test]
fn empty_plan_is_notes_only() {
    let mem = std_mem();
    let pl = plan(Arch::X86_64, vec![], None);
    let rec = Recorder::default();
    let mut sink = StreamSink::new(Vec::new(), "x");
    ElfWriter::new().write(&pl, &mem, &mut sink, &rec).unwrap();
    let data = sink.into_inner();
    let p = parse(&data);
    assert_eq!(p.phdrs.len(), 1);
    assert_eq!(rec.0.into_inner().unwrap().2.len(), 1);
}

#[test]
fn writer_identity() {
    let w = ElfWriter::new();
    assert_eq!(w.name(), "elf");
    assert_eq!(w.extensions(), &["elf", "core", "vmcore"]);
}
