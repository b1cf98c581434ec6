//! kdump writer → reader round trips: every codec, thread counts, streams (flattened),
//! the 32-bit layout, exclude-zero, header contents, and failures mid-write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kdump_util;

use std::sync::atomic::AtomicU64;

use dumpconv_core::{Arch, DumpWriter, Error, NoProgress, PhysRange};
use dumpconv_formats::kdump::layout::{DiskDumpHeader, Layout, SubHeader, Utsname};
use dumpconv_kdump::KdumpWriter;
use kdump_util::*;

/// RAM with holes, like a PC: low memory, a hole, two blocks, a high block.
fn pc_ranges() -> Vec<PhysRange> {
    vec![
        PhysRange::new(0, 0xa0000),
        PhysRange::new(0x10_0000, 0x50_0000),
        PhysRange::new(0x60_0000, 0x62_3000),
        PhysRange::new(0x1_0000_0000, 0x1_0004_0000),
    ]
}

#[test]
fn every_codec_round_trips_and_threads_do_not_change_the_bytes() {
    let ranges = pc_ranges();
    let img = Image::new(&ranges, realistic_page);
    for codec in ["zlib", "zstd", "snappy", "lzo", "none"] {
        let mut files = Vec::new();
        for threads in ["1", "4"] {
            let p = plan(
                Arch::X86_64,
                &ranges,
                notes_with_vmcoreinfo(2),
                &[("compress", codec), ("threads", threads)],
            );
            let path = img.out(&format!("{codec}-{threads}.kdump"));
            files.push(write_file(&p, &img.mem, &path));
            let d = open(&path);
            assert_same_memory(&d, &img.data, &ranges);
            assert_eq!(detail(&d, "codec"), Some(codec));
            assert_eq!(d.arch, Some(Arch::X86_64));
            assert_eq!(d.notes, p.notes);
            assert_eq!(d.vmcoreinfo.as_ref().unwrap().raw(), vmcoreinfo_text());
            assert_eq!(d.cpus.len(), 2);
        }
        assert!(
            files[0] == files[1],
            "{codec}: 1 and 4 threads wrote different files"
        );
    }
}

#[test]
fn header_fields_follow_the_plan() {
    let ranges = pc_ranges();
    let img = Image::new(&ranges, realistic_page);
    let p = plan(Arch::X86_64, &ranges, notes_with_vmcoreinfo(3), &[]);
    let f = write_file(&p, &img.mem, &img.out("h.kdump"));
    let h = DiskDumpHeader::decode(&f, Layout::Bits64).unwrap();
    assert_eq!(&h.signature, b"KDUMP   ");
    assert_eq!(h.header_version, 6);
    assert_eq!(h.block_size, 4096);
    assert_eq!(h.status, 1, "zlib by default, and complete");
    assert_eq!(h.nr_cpus, 3);
    assert_eq!(h.utsname.get(Utsname::MACHINE), "x86_64");
    assert_eq!(h.utsname.get(Utsname::RELEASE), "6.1.0-56-amd64");
    assert_eq!(h.utsname.get(Utsname::SYSNAME), "Linux");
    assert_eq!(h.timestamp_sec, 1_700_000_000);
    let max_mapnr = 0x1_0004_0000u64 / 4096;
    assert_eq!(u64::from(h.max_mapnr), max_mapnr);
    // Each bitmap: ceil(max_mapnr / 8) bytes rounded up to blocks.
    assert_eq!(
        u64::from(h.bitmap_blocks),
        2 * max_mapnr.div_ceil(8).div_ceil(4096)
    );
    let s = SubHeader::decode(&f[4096..], Layout::Bits64).unwrap();
    assert_eq!(s.max_mapnr_64, max_mapnr);
    assert_eq!(s.phys_base, 16_777_216, "NUMBER(phys_base) is decimal");
    assert_eq!(s.offset_note, 4096 + 104);
    let notes = dumpconv_formats::elf::note::encode_notes(&p.notes);
    assert_eq!(s.size_note, notes.len() as u64);
    let o = s.offset_vmcoreinfo as usize;
    assert_eq!(
        &f[o..o + s.size_vmcoreinfo as usize],
        &vmcoreinfo_text()[..]
    );
    assert_eq!(
        h.sub_hdr_size as u64,
        (104 + notes.len() as u64).div_ceil(4096)
    );
    // The zero block comes first in the data area and zero pages point at it: a file
    // of this content is much smaller than the RAM.
    assert!((f.len() as u64) < p.total_bytes() / 2);
}

#[test]
fn stream_output_is_flattened_and_reassembles_to_the_seekable_file() {
    let ranges = pc_ranges();
    let img = Image::new(&ranges, realistic_page);
    for opts in [
        &[("compress", "zlib")][..],
        &[("compress", "zstd"), ("exclude-zero", "true")],
    ] {
        let p = plan(Arch::X86_64, &ranges, notes_with_vmcoreinfo(1), opts);
        let seek = write_file(&p, &img.mem, &img.out("s.kdump"));
        let flat = write_stream(&p, &img.mem);
        assert_eq!(&flat[..13], b"makedumpfile\0");
        assert_eq!(&flat[flat.len() - 16..], &[0xff; 16]);
        assert!(
            reassemble(&flat) == seek,
            "{opts:?}: reassembled != seekable"
        );
        let fp = img.out("s.flat");
        std::fs::write(&fp, &flat).unwrap();
        assert!(dumpconv_formats::kdump::probe(&flat[..4096]));
        let d = open(&fp);
        assert!(detail(&d, "container").unwrap().contains("flattened"));
        // Content detection finds both forms.
        for path in [&fp, &img.out("s.kdump")] {
            let det = dumpconv_formats::detect(path).unwrap();
            assert_eq!(det.format, "kdump", "{}", path.display());
        }
        if opts.len() == 1 {
            assert_same_memory(&d, &img.data, &ranges);
        }
    }
}

#[test]
fn large_stream_spans_many_records() {
    // 176 MiB, mostly zero pages: over 1 MiB of descriptors and many 4 MiB data
    // records, so the flattened writer splits both.
    let ranges = vec![PhysRange::new(0, 176 << 20)];
    let img = Image::new(&ranges, |pfn| {
        if pfn % 16 == 0 {
            noise(pfn, 4096)
        } else {
            vec![0; 4096]
        }
    });
    let p = plan(
        Arch::X86_64,
        &ranges,
        vec![],
        &[("compress", "none"), ("threads", "2")],
    );
    let seek = write_file(&p, &img.mem, &img.out("big.kdump"));
    let flat = write_stream(&p, &img.mem);
    let records = {
        let fp = img.out("big.flat");
        std::fs::write(&fp, &flat).unwrap();
        let m = dumpconv_formats::flattened::MaybeFlat::open(&fp).unwrap();
        m.flat.unwrap().records().len()
    };
    assert!(records > 8, "{records} records");
    assert!(reassemble(&flat) == seek);
    let d = open(&img.out("big.flat"));
    assert_same_memory(&d, &img.data, &ranges);
}

#[test]
fn bit32_layout_round_trip() {
    let ranges = vec![
        PhysRange::new(0, 0x9f000),
        PhysRange::new(0x10_0000, 0x80_0000),
    ];
    let img = Image::new(&ranges, realistic_page);
    let mut notes = notes_with_vmcoreinfo(0);
    notes.insert(0, dumpconv_core::Note::new("CORE", 1, noise(5, 144)));
    let p = plan(Arch::X86, &ranges, notes, &[("threads", "2")]);
    let f = write_file(&p, &img.mem, &img.out("x86.kdump"));
    let h = DiskDumpHeader::decode(&f, Layout::Bits32).unwrap();
    assert_eq!(h.block_size, 4096, "block_size at the i386 offset (416)");
    assert_eq!(h.utsname.get(Utsname::MACHINE), "i686");
    let s = SubHeader::decode(&f[4096..], Layout::Bits32).unwrap();
    assert_eq!(s.offset_note, 4096 + 80);
    assert_eq!(s.max_mapnr_64, 0x800);
    let d = open(&img.out("x86.kdump"));
    assert_eq!(d.arch, Some(Arch::X86));
    assert_eq!(detail(&d, "layout"), Some("32-bit"));
    assert_same_memory(&d, &img.data, &ranges);
    assert_eq!(d.notes, p.notes);
}

#[test]
fn unaligned_ranges_are_padded_to_pages() {
    let ranges = vec![
        PhysRange::new(0x1000, 0x1800),
        PhysRange::new(0x1c00, 0x3100),
    ];
    let img = Image::new(&ranges, |pfn| noise(pfn, 4096));
    let p = plan(Arch::X86_64, &ranges, vec![], &[]);
    write_file(&p, &img.mem, &img.out("u.kdump"));
    let d = open(&img.out("u.kdump"));
    assert_eq!(d.memory.ranges(), &[PhysRange::new(0x1000, 0x4000)]);
    let mut b = vec![0u8; 0x3000];
    d.memory.read_at(0x1000, &mut b).unwrap();
    assert_eq!(&b[..0x800], &img.data[0x1000..0x1800]);
    assert!(
        b[0x800..0xc00].iter().all(|&x| x == 0),
        "gap is zero padding"
    );
    assert_eq!(&b[0xc00..0x2100], &img.data[0x1c00..0x3100]);
    assert!(b[0x2100..].iter().all(|&x| x == 0));
}

#[test]
fn exclude_zero_reports_zero_pages_as_excluded() {
    let ranges = vec![PhysRange::new(0, 0x40000)];
    let img = Image::new(&ranges, realistic_page);
    let p = plan(
        Arch::X86_64,
        &ranges,
        vec![],
        &[("exclude-zero", "true"), ("threads", "3")],
    );
    let f = write_file(&p, &img.mem, &img.out("ez.kdump"));
    let s = SubHeader::decode(&f[4096..], Layout::Bits64).unwrap();
    assert_eq!(s.dump_level, 1);
    let d = open(&img.out("ez.kdump"));
    assert_eq!(
        d.memory.ranges(),
        &ranges[..],
        "zero pages stay RAM (1st bitmap)"
    );
    for pfn in 0..0x40u64 {
        let mut b = vec![0u8; 4096];
        let r = d.memory.read_at(pfn * 4096, &mut b);
        let page = realistic_page(pfn);
        if page.iter().all(|&x| x == 0) {
            match r {
                Err(Error::PageUnavailable { paddr, why }) => {
                    assert_eq!(paddr, pfn * 4096);
                    assert_eq!(why, "excluded from the dump");
                }
                other => panic!("pfn {pfn}: {other:?}"),
            }
        } else {
            r.unwrap();
            assert_eq!(b, page);
        }
    }
    // Converting that dump again keeps the excluded pages excluded.
    let p2 = plan(Arch::X86_64, d.memory.ranges(), vec![], &[]);
    write_file(&p2, d.memory.as_ref(), &img.out("again.kdump"));
    let d2 = open(&img.out("again.kdump"));
    let mut b = vec![0u8; 4096];
    assert!(matches!(
        d2.memory.read_at(0, &mut b),
        Err(Error::PageUnavailable {
            why: "excluded from the dump",
            ..
        })
    ));
    d2.memory.read_at(4096, &mut b).unwrap();
    assert_eq!(b, realistic_page(1));
}

/// Reads every page and sorts them into (ok, lost).
fn census(d: &dumpconv_core::Dump) -> (u64, u64) {
    let (mut ok, mut lost) = (0, 0);
    for r in d.memory.ranges() {
        for a in (r.start..r.end).step_by(4096) {
            let mut b = vec![0u8; 4096];
            match d.memory.read_at(a, &mut b) {
                Ok(()) => ok += 1,
                Err(Error::PageUnavailable {
                    why: "lost (incomplete dump)",
                    ..
                }) => lost += 1,
                Err(e) => panic!("{a:#x}: {e}"),
            }
        }
    }
    (ok, lost)
}

#[test]
fn failing_sink_errors_and_keep_partial_marks_the_dump_incomplete() {
    let ranges = vec![PhysRange::new(0, 0x80_0000)];
    let img = Image::new(&ranges, |pfn| noise(pfn, 4096));
    for keep in [false, true] {
        let opts: &[(&str, &str)] = if keep {
            &[
                ("keep-partial", "true"),
                ("threads", "2"),
                ("compress", "none"),
            ]
        } else {
            &[("threads", "2"), ("compress", "none")]
        };
        let p = plan(Arch::X86_64, &ranges, notes_with_vmcoreinfo(1), opts);
        let mut sink = FailingSink::new(3 << 20, true);
        let e = KdumpWriter
            .write(&p, &img.mem, &mut sink, &NoProgress)
            .unwrap_err();
        assert!(matches!(e, Error::Output { .. }), "{e}");
        assert!(e.to_string().contains("no space left"), "{e}");
        // The header says incomplete from the start until the end rewrites it, so a
        // cut file is marked whether or not keep-partial could rewrite anything.
        let h = DiskDumpHeader::decode(&sink.data, Layout::Bits64).unwrap();
        assert_eq!(h.status, 0x8, "status {:#x}", h.status);
        if keep {
            let path = img.out("partial.kdump");
            std::fs::write(&path, &sink.data).unwrap();
            let d = open(&path);
            assert!(detail(&d, "status").unwrap().contains("INCOMPLETE"));
            let (ok, lost) = census(&d);
            assert!(ok > 100 && lost > 1000, "ok {ok}, lost {lost}");
            // The pages that made it are intact.
            let mut b = vec![0u8; 4096];
            d.memory.read_at(0x1000, &mut b).unwrap();
            assert_eq!(b, noise(1, 4096));
        }
    }
}

#[test]
fn keep_partial_on_a_stream_after_an_input_failure() {
    let ranges = vec![PhysRange::new(0, 0x100_0000)];
    let img = Image::new(&ranges, realistic_page);
    let mem = FailingMemory {
        inner: &img.mem,
        budget: AtomicU64::new(3),
    };
    let p = plan(
        Arch::X86_64,
        &ranges,
        vec![],
        &[("keep-partial", "yes"), ("threads", "1")],
    );
    let mut sink = dumpconv_core::StreamSink::new(Vec::new(), "<stream>");
    let e = KdumpWriter
        .write(&p, &mem, &mut sink, &NoProgress)
        .unwrap_err();
    assert!(e.to_string().contains("simulated read failure"), "{e}");
    let flat = sink.into_inner();
    assert_eq!(&flat[flat.len() - 16..], &[0xff; 16], "end marker written");
    let path = img.out("partial.flat");
    std::fs::write(&path, &flat).unwrap();
    let d = open(&path);
    assert!(detail(&d, "status").unwrap().contains("INCOMPLETE"));
    let (ok, lost) = census(&d);
    // Three 2 MiB batches were read before the failure.
    assert_eq!(ok, 3 * 512);
    assert_eq!(lost, 4096 - 3 * 512);
}

#[test]
fn failing_stream_sink_is_an_error_with_the_offset() {
    let ranges = vec![PhysRange::new(0, 0x40_0000)];
    let img = Image::new(&ranges, |pfn| noise(pfn, 4096));
    let p = plan(Arch::X86_64, &ranges, vec![], &[("keep-partial", "1")]);
    let mut sink = FailingSink::new(1 << 20, false);
    let e = KdumpWriter
        .write(&p, &img.mem, &mut sink, &NoProgress)
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("no space left") && msg.contains("0x"), "{msg}");
}

#[test]
fn empty_plan_and_bad_page_size() {
    let img = Image::new(&[], realistic_page);
    let p = plan(Arch::X86_64, &[], vec![], &[]);
    write_file(&p, &img.mem, &img.out("empty.kdump"));
    let d = open(&img.out("empty.kdump"));
    assert!(d.memory.ranges().is_empty());
    let mut p = plan(Arch::X86_64, &[], vec![], &[]);
    p.page_size = 3000;
    let mut sink = dumpconv_core::StreamSink::new(Vec::new(), "<s>");
    let e = KdumpWriter
        .write(&p, &img.mem, &mut sink, &NoProgress)
        .unwrap_err();
    assert!(e.to_string().contains("page size"), "{e}");
}

#[test]
fn concurrent_reads_agree() {
    let ranges = vec![PhysRange::new(0, 0x100_0000)];
    let img = Image::new(&ranges, realistic_page);
    let p = plan(Arch::X86_64, &ranges, vec![], &[("compress", "zstd")]);
    write_file(&p, &img.mem, &img.out("c.kdump"));
    let d = open(&img.out("c.kdump"));
    let mem = d.memory.clone();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let mem = mem.clone();
            let data = &img.data;
            s.spawn(move || {
                for i in 0..2000u64 {
                    let a = ((i * 7919 + t * 104_729) % 0xfff0) * 0x100;
                    let mut b = vec![0u8; 0x1234];
                    mem.read_at(a, &mut b).unwrap();
                    assert!(b == data[a as usize..a as usize + 0x1234]);
                }
            });
        }
    });
}

/// Memory of noise pages where reading some PFNs fails as a lost page would, though
/// nothing says so beforehand (their extent is data): the writer finds out while
/// compressing, after the 2nd bitmap went out (with exclude-zero, in the first pass).
struct LosingMemory {
    ranges: Vec<PhysRange>,
    lost: Vec<u64>,
}

impl dumpconv_core::PhysicalMemory for LosingMemory {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }
    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> dumpconv_core::Result<()> {
        let (first, last) = (paddr / 4096, (paddr + buf.len() as u64 - 1) / 4096);
        if self.lost.iter().any(|p| (first..=last).contains(p)) {
            return Err(Error::PageUnavailable {
                paddr,
                why: "lost (incomplete dump)",
            });
        }
        let mut at = paddr;
        let mut rest = &mut buf[..];
        while !rest.is_empty() {
            let o = (at % 4096) as usize;
            let n = (4096 - o).min(rest.len());
            let (now, later) = rest.split_at_mut(n);
            now.copy_from_slice(&noise(at / 4096, 4096)[o..o + n]);
            (at, rest) = (at + n as u64, later);
        }
        Ok(())
    }
}

/// Issue #19: the bitmaps are written a block (1 MiB) at a time, and pages that drop out
/// while compressing are cleared afterwards in the blocks holding them only. RAM at 0 and
/// at 64 GiB makes bitmaps of 2 MiB (two blocks each); a page lost in each block, and
/// with exclude-zero too. Both bitmaps are checked against bitmaps set by hand (the
/// format crate's `set_bits`), seekable and flattened (reassembled) alike.
#[test]
fn pages_lost_while_writing_leave_the_2nd_bitmap_block_by_block() {
    use dumpconv_formats::kdump::layout::set_bits;
    let hi = 64u64 << 30;
    let ranges = vec![
        PhysRange::new(0, 0x40 * 4096),
        PhysRange::new(hi, hi + 0x40 * 4096),
    ];
    let lost = vec![5, hi / 4096 + 0x21];
    let mem = LosingMemory {
        ranges: ranges.clone(),
        lost: lost.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let bitmap_len = ((hi / 4096 + 0x40) / 8).next_multiple_of(4096) as usize;
    assert!(bitmap_len > 1 << 20);
    let mut ram = vec![0u8; bitmap_len];
    set_bits(&mut ram, 0, 0x40);
    set_bits(&mut ram, hi / 4096, hi / 4096 + 0x40);
    let mut dumpable = ram.clone();
    for &p in &lost {
        dumpable[(p / 8) as usize] &= !(1 << (p % 8));
    }
    for opts in [&[][..], &[("exclude-zero", "true"), ("threads", "2")][..]] {
        let p = plan(Arch::X86_64, &ranges, vec![], opts);
        let path = dir.path().join("lost.kdump");
        let f = write_file(&p, &mem, &path);
        let flat = reassemble(&write_stream(&p, &mem));
        assert!(f == flat, "{opts:?}: the stream reassembles to the file");
        let h = DiskDumpHeader::decode(&f, Layout::Bits64).unwrap();
        let off = (1 + h.sub_hdr_size as usize) * 4096;
        assert_eq!(h.bitmap_blocks as usize * 4096, 2 * bitmap_len, "{opts:?}");
        assert!(f[off..off + bitmap_len] == ram[..], "{opts:?}: 1st bitmap");
        assert!(
            f[off + bitmap_len..off + 2 * bitmap_len] == dumpable[..],
            "{opts:?}: 2nd bitmap"
        );
        let d = open(&path);
        let mut b = vec![0u8; 4096];
        for &p in &lost {
            assert!(
                matches!(
                    d.memory.read_at(p * 4096, &mut b),
                    Err(Error::PageUnavailable { .. })
                ),
                "{opts:?}: pfn {p:#x}"
            );
        }
        d.memory.read_at(hi + 0x20 * 4096, &mut b).unwrap();
        assert_eq!(b, noise(hi / 4096 + 0x20, 4096));
    }
}
