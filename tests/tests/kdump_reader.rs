//! The kdump reader on hand-built files: header versions 0–6, both layouts, split sets,
//! single-bitmap files, DISKDUMP status, incomplete dumps, and bad input (clear errors,
//! never a panic), including a proptest that mutates a small valid file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kdump_util;

use std::path::PathBuf;

use dumpconv_core::{Arch, Error, Note, PhysRange};
use dumpconv_formats::kdump::layout::{Layout, PageDesc, SIG_DISKDUMP};
use dumpconv_formats::kdump::open_kdump;
use kdump_util::*;
use proptest::prelude::*;

fn check_pages(d: &dumpconv_core::Dump, b: &Build) {
    for pfn in 0..b.max_mapnr {
        let mut buf = vec![0u8; 4096];
        let r = d.memory.read_at(pfn * 4096, &mut buf);
        if !b.is_ram(pfn) {
            assert!(matches!(r, Err(Error::Hole { .. })), "pfn {pfn}: {r:?}");
        } else if b.excluded.contains(&pfn) {
            assert!(
                matches!(
                    r,
                    Err(Error::PageUnavailable {
                        why: "excluded from the dump",
                        ..
                    })
                ),
                "pfn {pfn}: {r:?}"
            );
        } else {
            r.unwrap();
            assert_eq!(buf, Build::page(pfn), "pfn {pfn}");
        }
    }
}

#[test]
fn every_header_version_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    for layout in [Layout::Bits64, Layout::Bits32] {
        for hv in 0..=6 {
            let b = Build {
                layout,
                hv,
                excluded: vec![3, 17],
                notes: vec![
                    Note::new("CORE", 1, noise(1, 336)),
                    Note::new("VMCOREINFO", 0, vmcoreinfo_text()),
                ],
                zlib: hv % 2 == 0,
                ..Default::default()
            };
            let p = b.write(dir.path(), &format!("v{hv}-{layout:?}.kdump"));
            let d = open(&p);
            assert_eq!(
                d.memory.ranges(),
                &[
                    PhysRange::new(0, 10 * 4096),
                    PhysRange::new(16 * 4096, 40 * 4096)
                ]
            );
            check_pages(&d, &b);
            assert_eq!(detail(&d, "header version"), Some(hv.to_string().as_str()));
            let want_arch = if layout == Layout::Bits32 {
                Arch::X86
            } else {
                Arch::X86_64
            };
            assert_eq!(d.arch, Some(want_arch));
            assert_eq!(d.notes.len(), if hv >= 4 { 2 } else { 0 }, "hv {hv}");
            assert_eq!(d.vmcoreinfo.is_some(), hv >= 3, "hv {hv}");
        }
    }
}

#[test]
fn qemu_style_32bit_layout_with_x86_64_machine_name() {
    // qemu-system-x86_64 dumping a 32-bit guest: 32-bit structs, machine "x86_64".
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        layout: Layout::Bits32,
        ..Default::default()
    };
    let mut bytes = b.bytes();
    bytes[272..276].copy_from_slice(b"x86_");
    bytes[276..278].copy_from_slice(b"64");
    let p = dir.path().join("q.kdump");
    std::fs::write(&p, bytes).unwrap();
    let d = open(&p);
    assert_eq!(detail(&d, "layout"), Some("32-bit"));
    assert_eq!(d.arch, Some(Arch::X86));
    check_pages(&d, &b);
}

#[test]
fn split_sets_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let whole = Build {
        excluded: vec![20],
        zlib: true,
        ..Default::default()
    };
    let parts: Vec<PathBuf> = [(0, 12), (12, 25), (25, 40)]
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            Build {
                split: Some(r),
                excluded: vec![20],
                zlib: true,
                ..Default::default()
            }
            .write(dir.path(), &format!("part{i}"))
        })
        .collect();
    let d = open_kdump(&[parts[2].clone(), parts[0].clone(), parts[1].clone()]).unwrap();
    check_pages(&d, &whole);
    assert_eq!(d.path, parts[2]);
    // A missing part: its pages are reported, not faked.
    let d = open_kdump(&[parts[0].clone(), parts[2].clone()]).unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(matches!(
        d.memory.read_at(16 * 4096, &mut buf),
        Err(Error::PageUnavailable { .. })
    ));
    assert!(detail(&d, "missing part").is_some());
    d.memory.read_at(30 * 4096, &mut buf).unwrap();
    // Mixing a whole dump with a part, and overlapping parts, are errors.
    let w = whole.write(dir.path(), "whole");
    let e = open_kdump(&[parts[0].clone(), w]).unwrap_err().to_string();
    assert!(e.contains("split"), "{e}");
    let o = Build {
        split: Some((10, 30)),
        ..Default::default()
    }
    .write(dir.path(), "overlap");
    let e = open_kdump(&[parts[0].clone(), o]).unwrap_err().to_string();
    assert!(e.contains("overlapping"), "{e}");
}

#[test]
fn single_bitmap_and_diskdump_status() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        single_bitmap: true,
        ..Default::default()
    };
    check_pages(&open(&b.write(dir.path(), "single")), &b);
    // In "DISKDUMP" files status 0x8 means compressed, not incomplete.
    let b = Build {
        signature: SIG_DISKDUMP,
        status: 0x8,
        hv: 2,
        ..Default::default()
    };
    let d = open(&b.write(dir.path(), "dd"));
    assert!(detail(&d, "incomplete").is_none());
    assert!(detail(&d, "status").unwrap().contains("compressed"));
    check_pages(&d, &b);
}

#[test]
fn zeroed_descriptors_are_lost_pages() {
    let dir = tempfile::tempdir().unwrap();
    let b = Build {
        status: 0x8,
        ..Default::default()
    };
    let mut bytes = b.bytes();
    // Zero the descriptors of the last 5 dumpable pages, and cut the file inside the
    // data of the page before them.
    let desc_off = 4096 * 4;
    let n = 34;
    for i in n - 5..n {
        bytes[desc_off + i * 24..desc_off + i * 24 + 24].fill(0);
    }
    let d29 = PageDesc::decode(&bytes[desc_off + 28 * 24..][..24]).unwrap();
    bytes.truncate(d29.offset as usize + 100);
    let p = dir.path().join("inc");
    std::fs::write(&p, bytes).unwrap();
    let d = open(&p);
    let mut buf = vec![0u8; 4096];
    for pfn in [34u64, 39] {
        assert!(matches!(
            d.memory.read_at(pfn * 4096, &mut buf),
            Err(Error::PageUnavailable {
                why: "lost (incomplete dump)",
                ..
            })
        ));
    }
    // Page 33 (descriptor 27) is intact; page 34 + 0 = descriptor 28 is cut short.
    d.memory.read_at(33 * 4096, &mut buf).unwrap();
    assert_eq!(buf, Build::page(33));
}

/// A valid file and where its first descriptor is.
fn small_valid() -> (Vec<u8>, usize) {
    let b = Build {
        max_mapnr: 8,
        ram: vec![(0, 8)],
        ..Default::default()
    };
    (b.bytes(), 4096 * 4)
}

fn open_bytes(
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    PathBuf,
    dumpconv_core::Result<dumpconv_core::Dump>,
) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.kdump");
    std::fs::write(&p, bytes).unwrap();
    let r = open_kdump(std::slice::from_ref(&p));
    (dir, p, r)
}

/// Read every page; return the first error's text.
fn first_read_error(d: &dumpconv_core::Dump) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    for r in d.memory.ranges() {
        for a in (r.start..r.end).step_by(4096) {
            if let Err(e) = d.memory.read_at(a, &mut buf) {
                return Some(e.to_string());
            }
        }
    }
    None
}

#[test]
fn bad_input_gives_clear_errors() {
    let (good, desc) = small_valid();
    // Truncated header.
    let (_d, p, r) = open_bytes(&good[..300]);
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains(&p.display().to_string()) && e.contains("too few"),
        "{e}"
    );

    // Lying bitmap_blocks: far more blocks than the file holds.
    let mut b = good.clone();
    b[436..440].copy_from_slice(&1_000_000u32.to_le_bytes());
    let (_d, p, r) = open_bytes(&b);
    let e = r.unwrap_err().to_string();
    assert!(
        e.contains(&p.display().to_string()) && e.contains("bitmap area") && e.contains("0x"),
        "{e}"
    );
    // ... and max_mapnr larger than the bitmaps can hold.
    let mut b = good.clone();
    b[4096 + 96..4096 + 104].copy_from_slice(&1_000_000u64.to_le_bytes());
    let e = open_bytes(&b).2.unwrap_err().to_string();
    assert!(e.contains("too small for max_mapnr"), "{e}");

    let desc_case = |f: &dyn Fn(&mut PageDesc)| {
        let mut b = good.clone();
        let mut d = PageDesc::decode(&b[desc..desc + 24]).unwrap();
        f(&mut d);
        b[desc..desc + 24].copy_from_slice(&d.encode());
        let (_dir, p, r) = open_bytes(&b);
        let e = first_read_error(&r.unwrap()).expect("an error");
        assert!(
            e.contains(&p.display().to_string()) && e.contains(&format!("{desc:#x}")),
            "{e}"
        );
        e
    };
    let e = desc_case(&|d| d.offset = 1 << 40);
    assert!(e.contains("past the end"), "{e}");
    let e = desc_case(&|d| d.size = 4097);
    assert!(e.contains("larger than a block"), "{e}");
    let e = desc_case(&|d| d.size = 0);
    assert!(e.contains("zero data size"), "{e}");
    let e = desc_case(&|d| d.offset = -5);
    assert!(e.contains("negative"), "{e}");
    // A compressed page that does not decompress: error at the data's offset.
    let mut b = good.clone();
    let mut d = PageDesc::decode(&b[desc..desc + 24]).unwrap();
    d.flags = 1;
    b[desc..desc + 24].copy_from_slice(&d.encode());
    let e = first_read_error(&open_bytes(&b).2.unwrap()).unwrap();
    assert!(
        e.contains("zlib") && e.contains(&format!("{:#x}", d.offset)),
        "{e}"
    );

    // Descriptors past the end of a complete dump: an error, not "lost".
    let e = first_read_error(&open_bytes(&good[..desc + 30]).2.unwrap()).unwrap();
    assert!(e.contains("past the end"), "{e}");

    // Not a kdump at all; a foreign architecture.
    let e = open_bytes(b"hello world").2.unwrap_err().to_string();
    assert!(e.contains("signature"), "{e}");
    let mut b = good.clone();
    b[272..279].copy_from_slice(b"riscv64");
    let e = open_bytes(&b).2.unwrap_err().to_string();
    assert!(e.contains("riscv64"), "{e}");
    // aarch64 (little-endian LP64, the 64-bit layout) is read, as an aarch64 dump.
    let mut b = good.clone();
    b[272..279].copy_from_slice(b"aarch64");
    assert_eq!(open_bytes(&b).2.unwrap().arch, Some(Arch::AARCH64));
    // Nonsense in both layouts.
    let mut b = good.clone();
    b[400..480].fill(0xee);
    let e = open_bytes(&b).2.unwrap_err().to_string();
    assert!(e.contains("plausible"), "{e}");
}

fn exercise(bytes: &[u8]) {
    let (_d, _p, r) = open_bytes(bytes);
    if let Ok(d) = r {
        let mut buf = vec![0u8; 4096];
        for r in d.memory.ranges().iter().take(64) {
            let end = r.end.min(r.start + 64 * 4096);
            for a in (r.start..end).step_by(4096) {
                let _ = d.memory.read_at(a, &mut buf);
            }
        }
        let _ = d.memory.read_at(u64::MAX - 10, &mut buf);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        edits in proptest::collection::vec((0usize..(4096 * 4 + 8 * 24 + 64), any::<u8>()), 1..12),
        cut in proptest::option::of(0usize..40000),
        zlib in any::<bool>(),
    ) {
        let b = Build { max_mapnr: 8, ram: vec![(0, 8)], zlib, ..Default::default() };
        let mut bytes = b.bytes();
        for (at, v) in edits {
            if at < bytes.len() {
                bytes[at] = v;
            }
        }
        if let Some(c) = cut {
            bytes.truncate(c.min(bytes.len()));
        }
        exercise(&bytes);
    }

    #[test]
    fn mutated_flattened_files_never_panic(
        edits in proptest::collection::vec((0usize..4400, any::<u8>()), 1..8),
        cut in proptest::option::of(0usize..60000),
    ) {
        let b = Build { max_mapnr: 8, ram: vec![(0, 8)], ..Default::default() };
        let plain = b.bytes();
        // Flatten: the file in three records, out of order.
        let mut flat = dumpconv_formats::flattened::flat_header();
        for (s, e) in [(4096usize, 12288usize), (0, 4096), (12288, plain.len())] {
            flat.extend_from_slice(&dumpconv_formats::flattened::record_header(s as u64, (e - s) as u64));
            flat.extend_from_slice(&plain[s..e]);
        }
        flat.extend_from_slice(&dumpconv_formats::flattened::end_marker());
        for (at, v) in edits {
            let at = 4096 + at;
            if at < flat.len() {
                flat[at] = v;
            }
        }
        if let Some(c) = cut {
            flat.truncate(c.min(flat.len()));
        }
        exercise(&flat);
    }
}
