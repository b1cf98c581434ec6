//! Hostile LiME and AVML files: random bytes and mutations of small valid files, fed to
//! the readers, then random reads. Every outcome must be `Ok` or `Err`: never a panic,
//! never an allocation sized by a lying field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use dumpconv_formats::detect::OpenOptions;
use dumpconv_formats::lime::encode_header;
use dumpconv_formats::{avml, lime};
use proptest::prelude::*;

/// A LiME file of `ranges` (start, length), each byte a function of its address.
fn lime_file(ranges: &[(u64, usize)]) -> Vec<u8> {
    let mut v = Vec::new();
    for &(start, len) in ranges {
        v.extend_from_slice(&encode_header(1, start, start + len as u64 - 1));
        v.extend((0..len as u64).map(|i| byte(start + i)));
    }
    v
}

/// An AVML file (snappy framed streams with their length trailer), as avml writes.
fn avml_file(ranges: &[(u64, usize)]) -> Vec<u8> {
    let mut v = Vec::new();
    for &(start, len) in ranges {
        v.extend_from_slice(&encode_header(2, start, start + len as u64 - 1));
        let data: Vec<u8> = (0..len as u64).map(|i| byte(start + i)).collect();
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(&data).unwrap();
        let s = enc.into_inner().unwrap();
        v.extend_from_slice(&s);
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
    }
    v
}

fn byte(a: u64) -> u8 {
    (a.wrapping_mul(0x9E37_79B9) >> 7) as u8 ^ (a >> 16) as u8
}

const RANGES: [(u64, usize); 2] = [(0x1000, 0x1_8000), (0x40000, 0x2345)];

/// Open `bytes` with `reader` and read `reads` (offset into the ranges, length); every
/// step may fail, none may panic. Returns whether the open succeeded.
fn exercise(
    bytes: &[u8],
    reader: fn(&std::path::Path, &OpenOptions) -> dumpconv_core::Result<dumpconv_core::Dump>,
    reads: &[(u64, usize)],
) -> bool {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    let Ok(d) = reader(f.path(), &OpenOptions::default()) else {
        return false;
    };
    let ranges = d.memory.ranges().to_vec();
    for &(at, len) in reads {
        // Half the reads aim inside a range (near its end, to cross boundaries), half
        // anywhere.
        let addr = match ranges.get(at as usize % (ranges.len() + 1)) {
            Some(r) => r.start.wrapping_add(at % r.len().max(1)),
            None => at,
        };
        let mut buf = vec![0u8; len];
        let _ = d.memory.read_at(addr, &mut buf);
    }
    // Whatever was accepted must read back whole, or fail cleanly.
    for r in &ranges {
        let mut buf = vec![0u8; r.len().min(1 << 20) as usize];
        let _ = d.memory.read_at(r.start, &mut buf);
    }
    true
}

fn mutate(mut v: Vec<u8>, muts: &[(usize, u8, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, kind, val) in muts {
        if v.is_empty() {
            break;
        }
        let p = pos % v.len();
        match kind % 4 {
            0 => v[p] = val,
            1 => v[p] ^= 1 << (val % 8),
            // Overwrite a u64 field with something huge: lying lengths and addresses.
            2 => {
                let end = (p + 8).min(v.len());
                let big = u64::MAX - u64::from(val);
                v[p..end].copy_from_slice(&big.to_le_bytes()[..end - p]);
            }
            _ => {
                v.insert(p, val);
            }
        }
    }
    if let Some(c) = cut {
        let n = v.len();
        v.truncate(c % (n + 1));
    }
    v
}

fn reads() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((any::<u64>(), 0usize..0x2_0000), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(
        magic in prop::sample::select(vec![lime::LIME_MAGIC, lime::AVML_MAGIC]),
        version in 0u32..4,
        body in prop::collection::vec(any::<u8>(), 0..4096),
        reads in reads(),
    ) {
        // Random bytes behind a plausible first header, so the readers get past it.
        let mut v = magic.to_le_bytes().to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&body);
        exercise(&v, lime::open, &reads);
        exercise(&v, avml::open, &reads);
    }

    #[test]
    fn mutated_lime_never_panics(
        muts in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<usize>()),
        reads in reads(),
    ) {
        let v = mutate(lime_file(&RANGES), &muts, cut);
        exercise(&v, lime::open, &reads);
    }

    #[test]
    fn mutated_avml_never_panics(
        muts in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<usize>()),
        reads in reads(),
    ) {
        let v = mutate(avml_file(&RANGES), &muts, cut);
        exercise(&v, avml::open, &reads);
    }

    /// Unmutated files: every read inside the ranges gives the bytes written, across
    /// chunk and range boundaries.
    #[test]
    fn valid_files_read_back_exactly(
        reads in prop::collection::vec((0u64..0x50000, 1usize..0x2_0000), 1..8),
    ) {
        for (bytes, reader) in [
            (lime_file(&RANGES), lime::open as fn(&_, &_) -> _),
            (avml_file(&RANGES), avml::open),
        ] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&bytes).unwrap();
            let d = reader(f.path(), &OpenOptions::default()).unwrap();
            for &(addr, len) in &reads {
                let mut buf = vec![0u8; len];
                let inside = RANGES.iter().any(|&(s, l)| addr >= s && addr + len as u64 <= s + l as u64);
                match d.memory.read_at(addr, &mut buf) {
                    Ok(()) => {
                        prop_assert!(inside, "{addr:#x}+{len:#x} read outside RAM");
                        for (i, b) in buf.iter().enumerate() {
                            prop_assert_eq!(*b, byte(addr + i as u64));
                        }
                    }
                    Err(e) => prop_assert!(!inside, "{addr:#x}+{len:#x}: {e}"),
                }
            }
        }
    }
}
