//! Sparse inputs (issue #19): the holes of an input file are found with
//! `SEEK_DATA`/`SEEK_HOLE` and never read, every writer gives the same bytes as from a
//! dense copy of the same image, and kdump files are compact (the descriptor table holds
//! exactly the dumpable pages, the data follows it).
//!
//! Reads are counted with `dumpconv_core::memory::file_bytes_read` (every positioned
//! read of an input file adds to it); the tests of this file take a lock so that they do
//! not count each other's reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;
mod kdump_util;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dumpconv_core::memory::file_bytes_read;
use dumpconv_core::{
    Arch, DumpPlan, DumpWriter, FileSink, NoProgress, PhysRange, PhysicalMemory, StreamSink,
};
use dumpconv_formats::kdump::layout::{DiskDumpHeader, Layout, PageDesc, PAGE_DESC_SIZE};
use dumpconv_formats::OpenOptions;
use kdump_util::noise;

static LOCK: Mutex<()> = Mutex::new(());

const MIB: u64 = 1 << 20;
/// Apparent size of the synthetic image.
const SIZE: u64 = 64 * MIB;

/// Data of the synthetic image, by offset: pages of noise and of text, one page of
/// zeros written as data (a zero page in a data region), a piece that straddles page
/// boundaries, and the rest a hole.
fn pieces() -> Vec<(u64, Vec<u8>)> {
    let mut text = Vec::new();
    while text.len() < (256 << 10) {
        text.extend_from_slice(b"sparse inputs cost what their data costs. ");
    }
    text.truncate(256 << 10);
    vec![
        (MIB, noise(1, 512 << 10)),
        (MIB + (512 << 10), vec![0u8; 4096]),
        (MIB + (512 << 10) + 4096, text),
        (32 * MIB + 0x800, noise(2, 0x1800)),
        (SIZE - 4096, noise(3, 4096)),
    ]
}

fn data_bytes() -> u64 {
    pieces().iter().map(|(_, d)| d.len() as u64).sum()
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// The image as a sparse file (holes where there is no piece) and as a dense one (every
/// byte written). None when the file system keeps no holes.
fn images(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let sparse = dir.join("sparse.raw");
    let f = File::create(&sparse).unwrap();
    f.set_len(SIZE).unwrap();
    for (at, d) in pieces() {
        f.write_all_at(&d, at).unwrap();
    }
    f.sync_all().unwrap();
    let allocated = std::fs::metadata(&sparse).unwrap().blocks() * 512;
    if allocated > SIZE / 2 {
        eprintln!("SKIP: this file system keeps no holes ({allocated} bytes allocated)");
        return None;
    }
    let dense = dir.join("dense.raw");
    let mut all = vec![0u8; SIZE as usize];
    for (at, d) in pieces() {
        all[at as usize..at as usize + d.len()].copy_from_slice(&d);
    }
    std::fs::write(&dense, &all).unwrap();
    Some((sparse, dense))
}

fn plan(ranges: &[PhysRange], opts: &[(&str, &str)]) -> DumpPlan {
    DumpPlan {
        filter: None,
        arch: Arch::X86_64,
        page_size: 4096,
        ranges: ranges.to_vec(),
        mappings: None,
        notes: vec![],
        cpus: vec![],
        vmcoreinfo: None,
        options: opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Write `mem` with `writer` to `out` (a stream when `stream`); returns the bytes of
/// the input read and the output.
fn convert(
    writer: &dyn DumpWriter,
    mem: &dyn PhysicalMemory,
    opts: &[(&str, &str)],
    out: &Path,
    stream: bool,
) -> (u64, Vec<u8>) {
    let p = plan(mem.ranges(), opts);
    let before = file_bytes_read();
    let f = File::create(out).unwrap();
    if stream {
        let mut s = StreamSink::new(std::io::BufWriter::new(f), out);
        writer.write(&p, mem, &mut s, &NoProgress).unwrap();
    } else {
        let mut s = FileSink::new(f, out);
        writer.write(&p, mem, &mut s, &NoProgress).unwrap();
    }
    let read = file_bytes_read() - before;
    (read, std::fs::read(out).unwrap())
}

fn open(path: &Path) -> dumpconv_core::Dump {
    dumpconv_formats::open(path, &OpenOptions::default()).unwrap()
}

/// Name, writer, options, stream, passes over the data (exclude-zero's first pass
/// reads the data once more to count the dumpable pages).
type Case = (
    &'static str,
    Box<dyn DumpWriter>,
    &'static [(&'static str, &'static str)],
    bool,
    u64,
);

fn cases() -> Vec<Case> {
    vec![
        ("raw", Box::new(dumpconv_raw::RawWriter), &[], false, 1),
        ("elf", Box::new(dumpconv_elf::ElfWriter), &[], false, 1),
        ("lime", Box::new(dumpconv_lime::LimeWriter), &[], false, 1),
        ("avml", Box::new(dumpconv_lime::AvmlWriter), &[], false, 1),
        (
            "kdump",
            Box::new(dumpconv_kdump::KdumpWriter),
            &[("threads", "2")],
            false,
            1,
        ),
        (
            "kdump-ez",
            Box::new(dumpconv_kdump::KdumpWriter),
            &[("exclude-zero", "1"), ("threads", "2")],
            false,
            2,
        ),
        (
            "kdump-flat",
            Box::new(dumpconv_kdump::KdumpWriter),
            &[("compress", "zstd")],
            true,
            1,
        ),
    ]
}

/// Most bytes a conversion of the sparse image may read: its data, plus a page at each
/// edge of each piece (reads are rounded to pages where a writer works by pages).
fn read_budget() -> u64 {
    data_bytes() + pieces().len() as u64 * 2 * 4096
}

#[test]
fn holes_are_not_read_and_outputs_match_a_dense_copy() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let Some((sparse, dense)) = images(dir.path()) else {
        return;
    };
    let s = open(&sparse);
    let d = open(&dense);
    assert_eq!(s.memory.ranges(), &[PhysRange::new(0, SIZE)]);
    for (name, w, opts, stream, passes) in cases() {
        let (read, got) = convert(
            w.as_ref(),
            s.memory.as_ref(),
            opts,
            &dir.path().join(format!("s.{name}")),
            stream,
        );
        assert!(
            read <= passes * read_budget(),
            "{name}: read {read:#x} bytes of a {SIZE:#x}-byte image holding {:#x} bytes \
             of data",
            data_bytes()
        );
        let (dread, want) = convert(
            w.as_ref(),
            d.memory.as_ref(),
            opts,
            &dir.path().join(format!("d.{name}")),
            stream,
        );
        assert!(
            dread >= SIZE / 2,
            "{name}: the dense copy was read ({dread:#x})"
        );
        assert!(got == want, "{name}: output differs from the dense copy's");
        eprintln!(
            "{name}: read {read:#x} (dense: {dread:#x}), output {:#x}",
            got.len()
        );
    }
}

/// The image converted to ELF, LiME and (compressed) zstd, read back: the ELF's and
/// LiME's PT_LOAD/range data are sparse regions of those files, the zstd's spill is a
/// sparse temporary file. None of the holes is read.
#[test]
fn holes_of_elf_lime_and_spilled_inputs_are_not_read() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let Some((sparse, dense)) = images(dir.path()) else {
        return;
    };
    let s = open(&sparse);
    let elf = dir.path().join("in.elf");
    let lime = dir.path().join("in.lime");
    convert(
        &dumpconv_elf::ElfWriter,
        s.memory.as_ref(),
        &[],
        &elf,
        false,
    );
    convert(
        &dumpconv_lime::LimeWriter,
        s.memory.as_ref(),
        &[],
        &lime,
        false,
    );
    let zst = dir.path().join("in.raw.zst");
    {
        let mut enc = zstd::stream::write::Encoder::new(File::create(&zst).unwrap(), 1).unwrap();
        std::io::copy(&mut File::open(&dense).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
    }
    let reference = {
        let d = open(&dense);
        convert(
            &dumpconv_kdump::KdumpWriter,
            d.memory.as_ref(),
            &[],
            &dir.path().join("ref.kdump"),
            false,
        )
        .1
    };
    for input in [&elf, &lime, &zst] {
        let opts = OpenOptions {
            spill_dir: Some(dir.path().to_path_buf()),
            ..OpenOptions::default()
        };
        let d = dumpconv_formats::open(input, &opts).unwrap();
        assert_eq!(
            d.memory.ranges(),
            &[PhysRange::new(0, SIZE)],
            "{}",
            input.display()
        );
        let (read, got) = convert(
            &dumpconv_kdump::KdumpWriter,
            d.memory.as_ref(),
            &[],
            &dir.path().join("out.kdump"),
            false,
        );
        assert!(
            read <= read_budget(),
            "{}: read {read:#x} bytes for {:#x} bytes of data",
            input.display(),
            data_bytes()
        );
        assert!(
            got == reference,
            "{}: differs from the dense image's",
            input.display()
        );
    }
}

#[test]
fn kdump_output_is_the_same_for_any_thread_count() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let Some((sparse, _)) = images(dir.path()) else {
        return;
    };
    let s = open(&sparse);
    for base in [&[][..], &[("exclude-zero", "1")][..]] {
        for stream in [false, true] {
            let outs: Vec<Vec<u8>> = ["1", "2", "4"]
                .iter()
                .map(|t| {
                    let mut opts = base.to_vec();
                    opts.push(("threads", t));
                    convert(
                        &dumpconv_kdump::KdumpWriter,
                        s.memory.as_ref(),
                        &opts,
                        &dir.path().join("t.kdump"),
                        stream,
                    )
                    .1
                })
                .collect();
            assert!(
                outs[0] == outs[1],
                "{base:?} stream={stream}: 1 vs 2 threads"
            );
            assert!(
                outs[0] == outs[2],
                "{base:?} stream={stream}: 1 vs 4 threads"
            );
        }
    }
}

/// The descriptors of a seekable kdump file: table offset, and each dumpable page's
/// descriptor in order.
fn descriptors(f: &[u8], dumpable: u64) -> (u64, Vec<PageDesc>) {
    let h = DiskDumpHeader::decode(f, Layout::Bits64).unwrap();
    let bs = h.block_size as u64;
    let desc_off = (1 + h.sub_hdr_size as u64 + u64::from(h.bitmap_blocks)) * bs;
    let descs = (0..dumpable)
        .map(|i| {
            let at = (desc_off + i * PAGE_DESC_SIZE as u64) as usize;
            PageDesc::decode(&f[at..at + PAGE_DESC_SIZE]).unwrap()
        })
        .collect();
    (desc_off, descs)
}

/// The compact layout, against what the image holds (counted here from the pieces, not
/// from the writer): with exclude-zero the table has one descriptor per non-zero page
/// and the first page's data starts right after it; without, one per page of RAM, then
/// the shared zero block, then the data. Either way the file ends with the last page's
/// data and has no hole.
#[test]
fn kdump_descriptor_table_holds_exactly_the_dumpable_pages() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let Some((sparse, _)) = images(dir.path()) else {
        return;
    };
    let mut nonzero = std::collections::BTreeSet::new();
    for (at, d) in pieces() {
        for (i, b) in d.iter().enumerate() {
            if *b != 0 {
                nonzero.insert((at + i as u64) / 4096);
            }
        }
    }
    let s = open(&sparse);
    for (ez, dumpable) in [(true, nonzero.len() as u64), (false, SIZE / 4096)] {
        let opts: &[(&str, &str)] = if ez { &[("exclude-zero", "1")] } else { &[] };
        let out = dir.path().join("c.kdump");
        let (_, f) = convert(
            &dumpconv_kdump::KdumpWriter,
            s.memory.as_ref(),
            opts,
            &out,
            false,
        );
        let (desc_off, descs) = descriptors(&f, dumpable);
        let table_end = desc_off + dumpable * PAGE_DESC_SIZE as u64;
        // Without exclude-zero, zero pages point at the shared zero block at table_end.
        let data: Vec<&PageDesc> = descs
            .iter()
            .filter(|d| ez || d.offset as u64 != table_end)
            .collect();
        let first = data.iter().map(|d| d.offset as u64).min().unwrap();
        let want_first = if ez { table_end } else { table_end + 4096 };
        assert_eq!(
            first, want_first,
            "exclude-zero={ez}: data starts after the table"
        );
        assert_eq!(data.len() as u64, nonzero.len() as u64, "exclude-zero={ez}");
        if !ez {
            // Every other descriptor is the shared zero block's, right after the table.
            assert_eq!(
                descs.len() - data.len(),
                (SIZE / 4096) as usize - nonzero.len()
            );
        }
        let end = data
            .iter()
            .map(|d| d.offset as u64 + u64::from(d.size))
            .max()
            .unwrap();
        assert_eq!(
            f.len() as u64,
            end,
            "exclude-zero={ez}: the file ends with the data"
        );
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated >= f.len() as u64 - 4096,
            "exclude-zero={ez}: {} bytes apparent, {allocated} allocated",
            f.len()
        );
    }
}

/// A kdump input that left pages out (here: exclude-zero) converted again without
/// exclude-zero: its excluded pages are known missing without reading them, so they
/// stay excluded and take no descriptor slot; the new file is as compact as the input.
#[test]
fn kdump_of_a_filtered_kdump_is_compact() {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch();
    let Some((sparse, _)) = images(dir.path()) else {
        return;
    };
    let mut nonzero = std::collections::BTreeSet::new();
    for (at, d) in pieces() {
        for (i, b) in d.iter().enumerate() {
            if *b != 0 {
                nonzero.insert((at + i as u64) / 4096);
            }
        }
    }
    let s = open(&sparse);
    let ez = dir.path().join("ez.kdump");
    convert(
        &dumpconv_kdump::KdumpWriter,
        s.memory.as_ref(),
        &[("exclude-zero", "1")],
        &ez,
        false,
    );
    let k = open(&ez);
    let again = dir.path().join("again.kdump");
    let (_, f) = convert(
        &dumpconv_kdump::KdumpWriter,
        k.memory.as_ref(),
        &[("threads", "3")],
        &again,
        false,
    );
    let dumpable = nonzero.len() as u64;
    let (desc_off, descs) = descriptors(&f, dumpable);
    let table_end = desc_off + dumpable * PAGE_DESC_SIZE as u64;
    // The shared zero block follows the table, then the data.
    let first = descs.iter().map(|d| d.offset as u64).min().unwrap();
    assert_eq!(first, table_end + 4096);
    let end = descs
        .iter()
        .map(|d| d.offset as u64 + u64::from(d.size))
        .max()
        .unwrap();
    assert_eq!(f.len() as u64, end);
    let allocated = std::fs::metadata(&again).unwrap().blocks() * 512;
    assert!(
        allocated >= f.len() as u64 - 4096,
        "{} apparent, {allocated} allocated",
        f.len()
    );
    // The pages read the same, the excluded ones stay excluded.
    let a = open(&again);
    let mut x = vec![0u8; 4096];
    let mut y = vec![0u8; 4096];
    for pfn in 0..SIZE / 4096 {
        let rx = k.memory.read_at(pfn * 4096, &mut x);
        let ry = a.memory.read_at(pfn * 4096, &mut y);
        assert_eq!(rx.is_ok(), ry.is_ok(), "pfn {pfn:#x}");
        assert_eq!(rx.is_ok(), nonzero.contains(&pfn), "pfn {pfn:#x}");
        assert!(x == y, "pfn {pfn:#x}");
    }
}

/// Address-space limit of the conversion below: what the writer needs, with room to
/// spare (it passes at 64 MiB), and half of what whole bitmaps of a 4 TiB address space
/// take (two of 132 MiB; main before this test failed under 256 MiB).
const HIGH_RAM_AS_BOUND: u64 = 128 << 20;

/// Issue #19: the kdump writer's memory does not grow with the address space. A LiME
/// file (written here from LiME's published layout) with 1 MiB of RAM at 0 and 128 GiB
/// at 4 TiB, all a hole but four pages: its kdump bitmaps are 132 MiB each, one bit per
/// page up to 4 TiB + 128 GiB (the 128 GiB is what makes the RAM dense enough for kdump:
/// sparser RAM is refused, the file would be mostly bitmap). Converted by the real
/// binary with exclude-zero under `prlimit --as` (seekable, and flattened on standard
/// output), then read back: the RAM ranges, the data pages byte for byte, every other
/// page excluded.
#[test]
fn kdump_of_ram_high_up_converts_in_memory_independent_of_the_address_space() {
    use dumpconv_core::memory::for_each_extent;
    use dumpconv_core::Extent;
    use std::process::{Command, Stdio};

    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ok = Command::new("prlimit")
        .args([&format!("--as={HIGH_RAM_AS_BOUND}"), "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: prlimit (util-linux) cannot limit a process here");
        return;
    }
    let dir = scratch();
    let low = PhysRange::new(0, MIB);
    let high = PhysRange::new(1 << 42, (1 << 42) + (128 << 30));
    // (physical address, bytes): the low RAM whole, four pages of the high range.
    let data: Vec<(u64, Vec<u8>)> = vec![
        (0, noise(11, MIB as usize)),
        (high.start, noise(12, 4096)),
        (high.start + 4096, noise(13, 4096)),
        (high.start + 0x1234_5000, noise(14, 4096)),
        (high.end - 4096, noise(15, 4096)),
    ];
    let lime = dir.path().join("high.lime");
    let f = File::create(&lime).unwrap();
    let header = |r: PhysRange| {
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(&0x4c69_4d45u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&r.start.to_le_bytes());
        h.extend_from_slice(&(r.end - 1).to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes());
        h
    };
    // Range data follows each 32-byte header.
    let file_off = |paddr: u64| {
        if low.contains(paddr) {
            32 + paddr
        } else {
            32 + low.len() + 32 + (paddr - high.start)
        }
    };
    f.write_all_at(&header(low), 0).unwrap();
    f.write_all_at(&header(high), 32 + low.len()).unwrap();
    f.set_len(file_off(high.end)).unwrap();
    for (at, d) in &data {
        f.write_all_at(d, file_off(*at)).unwrap();
    }
    f.sync_all().unwrap();
    let allocated = std::fs::metadata(&lime).unwrap().blocks() * 512;
    if allocated > 64 * MIB {
        eprintln!("SKIP: this file system keeps no holes ({allocated} bytes allocated)");
        return;
    }

    let bin = inputs_util::dumpconv_bin();
    for (name, stream) in [("high.kdump", false), ("high.flat", true)] {
        let out = dir.path().join(name);
        let mut c = Command::new("prlimit");
        c.arg(format!("--as={HIGH_RAM_AS_BOUND}"))
            .arg("--")
            .arg(&bin)
            .arg("convert")
            .arg(&lime)
            .args(["--exclude-zero", "--threads", "2", "--quiet"])
            // Thread stacks count against --as: a fixed number on any machine.
            .env("RAYON_NUM_THREADS", "2")
            .env_remove("DUMPCONV_PLUGIN_PATH")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if stream {
            c.args(["--format", "kdump", "--compress", "zstd", "-o", "-"])
                .stdout(File::create(&out).unwrap());
        } else {
            c.arg("-o").arg(&out).stdout(Stdio::null());
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{name}: {:?} under --as={HIGH_RAM_AS_BOUND}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );

        let d = open(&out);
        assert_eq!(d.memory.ranges(), &[low, high], "{name}");
        let mut got: Vec<(u64, u64)> = Vec::new();
        for r in [low, high] {
            for_each_extent(&*d.memory, r, |at, e| {
                match e {
                    Extent::Data(n) => got.push((at, at + n)),
                    Extent::Missing(_) => {}
                    Extent::Zero(n) => panic!("{name}: {n:#x} bytes of zero fill at {at:#x}"),
                }
                Ok(())
            })
            .unwrap();
        }
        // The data pages and nothing else (exclude-zero dropped the rest).
        let mut want: Vec<(u64, u64)> = Vec::new();
        for (at, d) in &data {
            let e = at + d.len() as u64;
            match want.last_mut() {
                Some(last) if last.1 == *at => last.1 = e,
                _ => want.push((*at, e)),
            }
        }
        assert_eq!(got, want, "{name}: pages with data");
        for (at, bytes) in &data {
            let mut buf = vec![0u8; bytes.len()];
            d.memory.read_at(*at, &mut buf).unwrap();
            assert!(buf == *bytes, "{name}: bytes at {at:#x}");
        }
    }
}
