//! LiME output of real guests, checked against the real thing: AVML's own converter
//! (`avml convert --source-format lime --format raw`) must turn our file back into the
//! guest's pmemsave bytes, and the headers must say exactly the ranges QEMU dumped.

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

/// Convert with avml into a raw image and check it against the guest's pmemsave
/// image over the RAM the file holds, against zeros over the gaps, and its length
/// against the last range.
fn check_with_avml(g: &Guest, avml: &Path, lime: &Path, headers: &[Header], dir: &Path) {
    let raw = dir.join("avml.raw");
    let out = Command::new(avml)
        .args(["convert", "--source-format", "lime", "--format", "raw"])
        .arg(lime)
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
    let pmemsave = File::open(g.file("ram.raw")).unwrap();
    let last_end = headers.last().unwrap().end;
    assert_eq!(
        avml_raw.metadata().unwrap().len(),
        last_end,
        "{}: avml's raw image must end where the last LiME range ends",
        g.name
    );
    // Guest RAM written to the file (all of it, or the --begin/--length window).
    let written = ram_ranges(g).into_iter().flat_map(|(s, e)| {
        headers
            .iter()
            .map(move |h| (s.max(h.start), e.min(h.end)))
            .filter(|(a, b)| a < b)
    });
    for (s, e) in written {
        assert_same_bytes(
            &format!("{}: avml raw vs pmemsave, RAM {s:#x}-{e:#x}", g.name),
            &avml_raw,
            s,
            &pmemsave,
            s,
            e - s,
        );
    }
    // Between ranges avml writes zeros: nothing of ours may leak there.
    let mut prev = 0;
    for h in headers {
        assert_zeros(
            &format!("{}: gap before {:#x}", g.name, h.start),
            &avml_raw,
            prev,
            h.start - prev,
        );
        prev = h.end;
    }
    std::fs::remove_file(&raw).unwrap();
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
