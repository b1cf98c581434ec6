//! Bad LiME, AVML and compressed inputs through the real binary: a clear error naming
//! the file (and the offset), exit code 1, no panic, no output left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use inputs_util::*;

/// LiME header per the published layout: magic, version 1, start, inclusive end, zeros.
fn lime_header(start: u64, last: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x4C69_4D45u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&start.to_le_bytes());
    h.extend_from_slice(&last.to_le_bytes());
    h.extend_from_slice(&[0u8; 8]);
    h
}

/// Non-zero, not too compressible bytes (so avml keeps them and snappy has work).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half noise, half text-like runs.
            if i % 8192 < 4096 {
                x as u8
            } else {
                b"memory "[i % 7]
            }
        })
        .collect()
}

/// A 2 MiB AVML file: made by the real avml when installed, else with the snap crate
/// the way avml writes it (header, snappy frame stream, u64 compressed length).
fn avml_file(dir: &Path) -> PathBuf {
    let raw = dir.join("src.raw");
    let data = noise(2 << 20, 7);
    write(&raw, &data);
    let out = dir.join("x.avml");
    match avml() {
        Some(avml) => avml_convert(&avml, "raw", "lime_compressed", &raw, &out),
        None => {
            let mut v = Vec::new();
            v.extend_from_slice(&0x4C4D_5641u32.to_le_bytes());
            v.extend_from_slice(&2u32.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&(data.len() as u64 - 1).to_le_bytes());
            v.extend_from_slice(&[0u8; 8]);
            let mut e = snap::write::FrameEncoder::new(Vec::new());
            e.write_all(&data).unwrap();
            let s = e.into_inner().unwrap();
            v.extend_from_slice(&s);
            v.extend_from_slice(&(s.len() as u64).to_le_bytes());
            write(&out, &v);
        }
    }
    std::fs::remove_file(&raw).unwrap();
    out
}

/// Convert `input` into `dir/out.elf`, expecting failure: exit code 1, a message that
/// names the input and contains every string of `want`, no panic, and no file other
/// than the inputs left in `dir`.
fn expect_input_error(dir: &Path, input: &Path, want: &[&str]) -> String {
    let before = entries(dir);
    let out = dir.join("out.elf");
    let o = dumpconv_with_stdin(
        &[
            input.as_os_str(),
            OsStr::new("--arch"),
            OsStr::new("x86_64"),
            OsStr::new("-o"),
            out.as_os_str(),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{}: {err}", input.display());
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(&input.display().to_string()), "{err}");
    for w in want {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
    assert!(!out.exists(), "output left behind");
    assert_eq!(entries(dir), before, "files left behind");
    eprintln!("{}: {}", input.display(), err.trim());
    err
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn lime_end_below_start() {
    let dir = scratch();
    let p = dir.path().join("bad.lime");
    let mut v = lime_header(0, 0xfff);
    v.extend_from_slice(&[1u8; 0x1000]);
    v.extend_from_slice(&lime_header(0x5000, 0x4000));
    write(&p, &v);
    expect_input_error(dir.path(), &p, &["at offset 0x1020", "below its start"]);
}

#[test]
fn lime_truncated_in_the_data() {
    let dir = scratch();
    let p = dir.path().join("short.lime");
    let mut v = lime_header(0x100000, 0x100000 + 0x4000 - 1);
    v.extend_from_slice(&[2u8; 0x3000]);
    write(&p, &v);
    expect_input_error(dir.path(), &p, &["at offset 0x20", "truncated"]);
}

#[test]
fn avml_with_a_lying_compressed_length() {
    let dir = scratch();
    let p = avml_file(dir.path());
    let mut v = std::fs::read(&p).unwrap();
    // The first range's trailer: find it by walking the snappy chunks here, by the
    // framing format (type byte, 3-byte length).
    let mut q = 32usize;
    let mut produced = 0u64;
    let want = u64::from_le_bytes(v[16..24].try_into().unwrap()) + 1
        - u64::from_le_bytes(v[8..16].try_into().unwrap());
    while produced < want {
        let len = u32::from_le_bytes([v[q + 1], v[q + 2], v[q + 3], 0]) as usize;
        match v[q] {
            0x00 => {
                // Uncompressed length: varint after the CRC.
                let (mut n, mut shift, mut k) = (0u64, 0, q + 8);
                loop {
                    n |= u64::from(v[k] & 0x7f) << shift;
                    if v[k] & 0x80 == 0 {
                        break;
                    }
                    shift += 7;
                    k += 1;
                }
                produced += n;
            }
            0x01 => produced += len as u64 - 4,
            _ => {}
        }
        q += 4 + len;
    }
    let stated = u64::from_le_bytes(v[q..q + 8].try_into().unwrap());
    assert_eq!(stated, (q - 32) as u64, "the file as made is consistent");
    v[q..q + 8].copy_from_slice(&(stated + 16).to_le_bytes());
    write(&p, &v);
    expect_input_error(
        dir.path(),
        &p,
        &[&format!("at offset {q:#x}"), "compressed-length field"],
    );
}

#[test]
fn avml_with_corrupt_snappy_data() {
    let dir = scratch();
    let p = avml_file(dir.path());
    let mut v = std::fs::read(&p).unwrap();
    // Flip bits in the middle of the first range's stream: inside some chunk's data.
    let mid = 32 + (v.len() - 32) / 3;
    for b in &mut v[mid..mid + 16] {
        *b ^= 0x5a;
    }
    write(&p, &v);
    let err = expect_input_error(dir.path(), &p, &["at offset"]);
    assert!(
        err.contains("corrupt") || err.contains("CRC"),
        "should say the data is corrupt: {err}"
    );
}

fn truncated_wrapper(tool: &str, ext: &str) {
    let dir = scratch();
    let raw = dir.path().join("img.raw");
    write(&raw, &noise(4 << 20, 3));
    let z = dir.path().join(format!("img.raw.{ext}"));
    let cmd = match tool {
        "gzip" => "gzip -1 -c",
        "zstd" => "zstd -q -1 -c",
        _ => "xz -0 -c",
    };
    if tool_installed(tool) {
        sh(&format!("{cmd} '{}' > '{}'", raw.display(), z.display()));
    } else {
        let data = std::fs::read(&raw).unwrap();
        let bytes = match tool {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
            "zstd" => zstd::encode_all(&data[..], 1).unwrap(),
            _ => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 0);
                e.write_all(&data).unwrap();
                e.finish().unwrap()
            }
        };
        write(&z, &bytes);
    }
    std::fs::remove_file(&raw).unwrap();
    let mut v = std::fs::read(&z).unwrap();
    v.truncate(v.len() / 2);
    write(&z, &v);
    expect_input_error(dir.path(), &z, &["decompressed offset", tool]);
}

fn tool_installed(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

#[test]
fn truncated_gzip() {
    truncated_wrapper("gzip", "gz");
}

#[test]
fn truncated_zstd() {
    truncated_wrapper("zstd", "zst");
}

#[test]
fn truncated_xz() {
    truncated_wrapper("xz", "xz");
}
