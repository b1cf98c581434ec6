//! LiME and AVML-compressed output of real guests, checked against the real thing:
//! AVML's own converter (`avml convert --source-format lime|lime_compressed --format
//! raw`) must turn our file back into the guest's pmemsave bytes, and the headers must
//! say exactly the ranges QEMU dumped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod outputs_util;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use dumpconv_tests::guests::Guest;
use outputs_util::*;

/// One parsed LiME range header and where its data starts in the file.
#[derive(Debug, Clone, Copy)]
struct Header {
    start: u64,
    /// Exclusive (the file stores the last byte).
    end: u64,
    data_offset: u64,
}

/// Walk a LiME file header by header, checking each field against the format (magic
/// "EMiL" on disk, version 1, inclusive end, 8 zero bytes) and that the last range's
/// data ends the file.
fn parse_lime(path: &Path) -> Vec<Header> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut at = 0u64;
    let mut out = Vec::new();
    while at < len {
        let mut h = [0u8; 32];
        f.read_exact_at(&mut h, at)
            .unwrap_or_else(|e| panic!("{}: header at {at:#x}: {e}", path.display()));
        assert_eq!(&h[0..4], b"EMiL", "magic at {at:#x}");
        assert_eq!(
            u32::from_le_bytes(h[4..8].try_into().unwrap()),
            1,
            "version"
        );
        let s = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let e = u64::from_le_bytes(h[16..24].try_into().unwrap());
        assert_eq!(&h[24..32], &[0u8; 8], "reserved bytes at {at:#x}");
        assert!(e >= s, "range {s:#x}-{e:#x} at {at:#x}");
        out.push(Header {
            start: s,
            end: e + 1,
            data_offset: at + 32,
        });
        at += 32 + (e - s + 1);
    }
    assert_eq!(
        at,
        len,
        "{}: the last range runs past the end",
        path.display()
    );
    out
}

/// One block of an AVML compressed image, checked while walking: magic "AVML",
/// version 2, inclusive end, zero padding, a snappy framed stream that decodes to
/// exactly the block's length, and the stream's length in the u64 after it.
fn parse_avml(path: &Path) -> Vec<Header> {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let u32_at = |at: u64| {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, at).unwrap();
        u32::from_le_bytes(b)
    };
    let u64_at = |at: u64| {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, at).unwrap();
        u64::from_le_bytes(b)
    };
    let mut at = 0u64;
    let mut out = Vec::new();
    while at < len {
        let mut magic = [0u8; 4];
        f.read_exact_at(&mut magic, at).unwrap();
        assert_eq!(&magic, b"AVML", "magic at {at:#x}");
        assert_eq!(u32_at(at + 4), 2, "version at {at:#x}");
        let (s, e) = (u64_at(at + 8), u64_at(at + 16));
        assert_eq!(u64_at(at + 24), 0, "padding at {at:#x}");
        assert!(s <= e && e - s < 16 << 20, "block {s:#x}-{e:#x} at {at:#x}");
        // Snappy framing: chunks of 1 type byte + 3-byte length. 0xff = stream
        // identifier, 0x00 = compressed (CRC, then a block whose varint preamble is
        // its decoded length), 0x01 = uncompressed (CRC, then the bytes).
        let stream = at + 32;
        let mut c = stream;
        let mut decoded = 0u64;
        while decoded < e - s + 1 {
            let head = u32_at(c);
            let (kind, clen) = (head & 0xff, u64::from(head >> 8));
            let body = c + 4;
            match kind {
                0xff => assert_eq!(clen, 6, "stream identifier at {c:#x}"),
                0x00 => {
                    let mut pre = [0u8; 10];
                    f.read_exact_at(&mut pre, body + 4).unwrap();
                    let mut n = 0u64;
                    for (i, b) in pre.iter().enumerate() {
                        n |= u64::from(b & 0x7f) << (7 * i);
                        if b & 0x80 == 0 {
                            break;
                        }
                    }
                    decoded += n;
                }
                0x01 => decoded += clen - 4,
                k => panic!("unexpected snappy chunk type {k:#x} at {c:#x}"),
            }
            c = body + clen;
        }
        assert_eq!(decoded, e - s + 1, "block at {at:#x} decodes to its length");
        assert_eq!(
            u64_at(c),
            c - stream,
            "compressed length after block at {at:#x}"
        );
        out.push(Header {
            start: s,
            end: e + 1,
            data_offset: stream,
        });
        at = c + 8;
    }
    out
}

/// Convert our LiME file with avml into a raw image and check it against the guest's
/// pmemsave image over the RAM the file holds, against zeros over the gaps, and its
/// length against the last range.
fn check_with_avml(g: &Guest, avml: &Path, lime: &Path, headers: &[Header], dir: &Path) {
    let covered: Vec<(u64, u64)> = headers.iter().map(|h| (h.start, h.end)).collect();
    let raw_len = check_with_avml_as(g, avml, "lime", lime, &covered, dir);
    assert_eq!(
        raw_len,
        covered.last().unwrap().1,
        "{}: avml's raw image must end where the last LiME range ends",
        g.name
    );
}

/// Convert `image` with avml into a raw image; the guest RAM inside `covered` (the
/// ranges the image was asked to hold) must equal pmemsave (past the raw image's end,
/// which AVML's dropped trailing zero blocks may shorten, pmemsave must be zeros), and
/// everything outside `covered` must be zeros. Returns the raw image's length.
fn check_with_avml_as(
    g: &Guest,
    avml: &Path,
    source_format: &str,
    image: &Path,
    covered: &[(u64, u64)],
    dir: &Path,
) -> u64 {
    let raw = dir.join("avml.raw");
    let out = Command::new(avml)
        .args([
            "convert",
            "--source-format",
            source_format,
            "--format",
            "raw",
        ])
        .arg(image)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: avml convert failed: {}",
        g.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let avml_raw = File::open(&raw).unwrap();
    let raw_len = avml_raw.metadata().unwrap().len();
    let pmemsave = File::open(g.file("ram.raw")).unwrap();
    assert!(
        raw_len <= covered.last().unwrap().1,
        "{}: raw image too long",
        g.name
    );
    // Guest RAM written to the image (all of it, or the --begin/--length window).
    let written = ram_ranges(g).into_iter().flat_map(|(s, e)| {
        covered
            .iter()
            .map(move |&(a, b)| (s.max(a), e.min(b)))
            .filter(|(a, b)| a < b)
    });
    for (s, e) in written {
        let in_raw = e.min(raw_len).max(s);
        assert_same_bytes(
            &format!("{}: avml raw vs pmemsave, RAM {s:#x}-{e:#x}", g.name),
            &avml_raw,
            s,
            &pmemsave,
            s,
            in_raw - s,
        );
        assert_zeros(
            &format!("{}: pmemsave past avml's raw end", g.name),
            &pmemsave,
            in_raw,
            e - in_raw,
        );
    }
    // Between ranges avml writes zeros: nothing of ours may leak there.
    let mut prev = 0;
    for &(a, b) in covered {
        let gap_end = a.min(raw_len);
        if gap_end > prev {
            assert_zeros(
                &format!("{}: gap before {a:#x}", g.name),
                &avml_raw,
                prev,
                gap_end - prev,
            );
        }
        prev = b;
    }
    std::fs::remove_file(&raw).unwrap();
    raw_len
}

#[test]
fn lime_of_real_guests_reads_back_through_avml() {
    let Some(avml) = avml() else {
        skip("avml is not installed (scripts/test.sh installs it into ~/.cache/dumpconv/tools)");
        return;
    };
    // Two RAM ranges (0-3 GiB, 4-5.5 GiB) on highmem, a 32-bit guest, a plain one.
    for g in named_guests(&["x86_64-4level", "x86_64-highmem", "i386-pae"]) {
        let tmp = scratch();
        let lime = tmp.path().join("guest.lime");
        dumpconv_ok(&[&"-q", &g.file("phys.elf"), &"-o", &lime]);

        let headers = parse_lime(&lime);
        let got: Vec<(u64, u64)> = headers.iter().map(|h| (h.start, h.end)).collect();
        assert_eq!(
            got,
            phys_elf_ranges(&g),
            "{}: LiME ranges must be the ranges QEMU dumped",
            g.name
        );
        for (s, e) in ram_ranges(&g) {
            assert!(
                got.iter().any(|&(a, b)| a <= s && e <= b),
                "{}: guest RAM {s:#x}-{e:#x} is not in one LiME range: {got:x?}",
                g.name
            );
        }
        // Our own file's data, range by range, equals pmemsave over guest RAM.
        let ours = File::open(&lime).unwrap();
        let pmemsave = File::open(g.file("ram.raw")).unwrap();
        for (s, e) in ram_ranges(&g) {
            let h = headers.iter().find(|h| h.start <= s && e <= h.end).unwrap();
            assert_same_bytes(
                &format!("{}: LiME data vs pmemsave at {s:#x}", g.name),
                &ours,
                h.data_offset + (s - h.start),
                &pmemsave,
                s,
                e - s,
            );
        }
        check_with_avml(&g, &avml, &lime, &headers, tmp.path());
    }
}

#[test]
fn lime_begin_length_writes_one_header_for_the_window() {
    let Some(avml) = avml() else {
        skip("avml is not installed (scripts/test.sh installs it into ~/.cache/dumpconv/tools)");
        return;
    };
    for g in named_guests(&["x86_64-4level"]) {
        let tmp = scratch();
        let lime = tmp.path().join("window.lime");
        let (begin, length) = (0x12_3000u64, 0x20_5000u64);
        dumpconv_ok(&[
            &"-q",
            &g.file("phys.elf"),
            &"--begin",
            &format!("{begin:#x}"),
            &"--length",
            &format!("{length:#x}"),
            &"-o",
            &lime,
        ]);
        let headers = parse_lime(&lime);
        assert_eq!(headers.len(), 1, "{headers:x?}");
        assert_eq!((headers[0].start, headers[0].end), (begin, begin + length));
        assert_eq!(std::fs::metadata(&lime).unwrap().len(), 32 + length);
        let pmemsave = File::open(g.file("ram.raw")).unwrap();
        assert_same_bytes(
            "window data vs pmemsave",
            &File::open(&lime).unwrap(),
            32,
            &pmemsave,
            begin,
            length,
        );
        check_with_avml(&g, &avml, &lime, &headers, tmp.path());
    }
}

#[test]
fn avml_compressed_output_reads_back_through_avml() {
    let Some(avml) = avml() else {
        skip("avml is not installed (scripts/test.sh installs it into ~/.cache/dumpconv/tools)");
        return;
    };
    for g in named_guests(&["x86_64-4level", "x86_64-highmem", "i386-pae"]) {
        let tmp = scratch();
        let image = tmp.path().join("guest.avml");
        dumpconv_ok(&[&"-q", &g.file("phys.elf"), &"-o", &image]);
        let blocks = parse_avml(&image);
        let ranges = phys_elf_ranges(&g);
        // Blocks are cut every 16 MiB from each range's start; the missing ones were
        // all zeros (checked against pmemsave through avml below).
        let mut all_blocks = 0;
        for b in &blocks {
            let &(rs, re) = ranges
                .iter()
                .find(|&&(rs, re)| rs <= b.start && b.end <= re)
                .unwrap_or_else(|| panic!("{}: block {:#x} outside RAM", g.name, b.start));
            assert_eq!((b.start - rs) % (16 << 20), 0, "block start {:#x}", b.start);
            assert_eq!(
                b.end,
                re.min(b.start + (16 << 20)),
                "block end {:#x}",
                b.end
            );
        }
        for &(rs, re) in &ranges {
            all_blocks += (re - rs).div_ceil(16 << 20);
        }
        eprintln!(
            "{}: {} of {all_blocks} blocks written, {} bytes",
            g.name,
            blocks.len(),
            std::fs::metadata(&image).unwrap().len()
        );
        if g.name == "x86_64-highmem" {
            assert!(
                (blocks.len() as u64) < all_blocks,
                "the mostly idle 4.5 GiB guest has all-zero blocks to leave out"
            );
        }
        check_with_avml_as(&g, &avml, "lime_compressed", &image, &ranges, tmp.path());
    }
}
