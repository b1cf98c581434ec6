//! LiME and AVML inputs made by the real avml, converted by the real `dumpconv` binary,
//! checked against the guest's pmemsave image (never against our own output).
//!
//! - x86_64-4level: `avml convert --source-format raw` to `lime` and `lime_compressed`
//!   (one range from 0), each converted to raw, ELF and kdump.
//! - i386-pae, i386-2level: a multi-range LiME written here from the published layout
//!   with the guest's own /proc/iomem "System RAM" ranges (what LiME and avml save),
//!   turned into AVML by `avml convert --source-format lime`; both converted.
//! - x86_64-highmem (RAM 0-3 GiB and 4-5.5 GiB), once: the same, converted to raw.
//!
//! Skips with a printed reason when avml or the guests are missing, unless
//! DUMPCONV_REQUIRE_GUESTS=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;

use std::path::Path;

use dumpconv_tests::guests::{guests, Guest};
use inputs_util::*;

fn arch(g: &Guest) -> &'static str {
    if g.is_x86_64() {
        "x86_64"
    } else {
        "i386"
    }
}

/// Convert `input` to each format in `formats` with the real binary and check the
/// result against the guest's pmemsave over `ranges`.
fn convert_and_check(g: &Guest, input: &Path, formats: &[&str], ranges: &[(u64, u64)]) {
    let dir = input.parent().unwrap();
    let stem = input.file_name().unwrap().to_string_lossy().to_string();
    for fmt in formats {
        let out = dir.join(format!("{stem}.{fmt}"));
        dumpconv_ok(&[
            input.as_os_str(),
            "--arch".as_ref(),
            arch(g).as_ref(),
            "--format".as_ref(),
            fmt.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        let present = check_against_image(&out, &g.file("ram.raw"), ranges);
        assert!(present > 0, "{}: no RAM at all", out.display());
        eprintln!(
            "{}: {} -> {fmt}: {:#x} bytes present, all equal to pmemsave",
            g.name,
            input.display(),
            present
        );
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn avml_made_lime_and_avml_of_a_raw_image() {
    let Some(avml) = avml() else { return };
    let Some(g) = guests().into_iter().find(|g| g.name == "x86_64-4level") else {
        return;
    };
    let dir = scratch();
    let raw = g.file("ram.raw");
    let whole = [(0u64, std::fs::metadata(&raw).unwrap().len() - 1)];
    for (fmt, name) in [("lime", "x.lime"), ("lime_compressed", "x.avml")] {
        let out = dir.path().join(name);
        avml_convert(&avml, "raw", fmt, &raw, &out);
        // Our reader says what it is.
        let d = dumpconv_formats::open(&out, &Default::default()).unwrap();
        assert_eq!(d.format, if fmt == "lime" { "lime" } else { "avml" });
        convert_and_check(&g, &out, &["raw", "elf", "kdump"], &whole);
    }
}

/// A multi-range LiME from the guest's System RAM ranges, and avml's AVML made from it.
fn lime_and_avml(g: &Guest, avml: &Path, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ranges = system_ram(g);
    let lime = dir.join(format!("{}.lime", g.name));
    write_lime(&g.file("ram.raw"), &ranges, &lime);
    let av = dir.join(format!("{}.avml", g.name));
    avml_convert(avml, "lime", "lime_compressed", &lime, &av);
    (lime, av)
}

#[test]
fn multi_range_lime_and_avml_of_i386_guests() {
    let Some(avml) = avml() else { return };
    for g in guests().into_iter().filter(|g| !g.is_x86_64()) {
        let dir = scratch();
        let ranges = system_ram(&g);
        assert!(ranges.len() > 1, "{}: expected several RAM ranges", g.name);
        let (lime, av) = lime_and_avml(&g, &avml, dir.path());
        // The LiME file keeps its ranges exactly.
        let d = dumpconv_formats::open(&lime, &Default::default()).unwrap();
        let want: Vec<_> = ranges
            .iter()
            .map(|&(s, l)| dumpconv_core::PhysRange::new(s, l + 1))
            .collect();
        assert_eq!(d.memory.ranges(), &want[..], "{}", g.name);
        // ELF for both; kdump for the AVML file (the expensive format, once per guest).
        convert_and_check(&g, &lime, &["elf"], &ranges);
        convert_and_check(&g, &av, &["elf", "kdump"], &ranges);
    }
}

#[test]
fn highmem_lime_and_avml_once() {
    let Some(avml) = avml() else { return };
    let Some(g) = guests().into_iter().find(|g| g.name == "x86_64-highmem") else {
        return;
    };
    let dir = scratch();
    let ranges = system_ram(&g);
    assert!(
        ranges.iter().any(|&(s, _)| s >= 1 << 32),
        "highmem guest has RAM above 4 GiB"
    );
    let (lime, av) = lime_and_avml(&g, &avml, dir.path());
    convert_and_check(&g, &av, &["raw"], &ranges);
    convert_and_check(&g, &lime, &["elf"], &ranges);
}
