//! Shared by the outputs_* tests: the real tools they check our output with (avml,
//! zstd, lz4), the guests they use, and streaming comparisons of large images.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dumpconv_tests::guests::{guests, Guest};

pub fn required() -> bool {
    std::env::var("DUMPCONV_REQUIRE_GUESTS").is_ok_and(|v| v == "1")
}

/// Skip (print why) or, when the real-guest suite is required, fail.
pub fn skip(why: &str) {
    assert!(!required(), "{why} (DUMPCONV_REQUIRE_GUESTS=1)");
    eprintln!("SKIP: {why}");
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// avml: `$DUMPCONV_AVML`, the copy scripts/test.sh installs, or `avml` on PATH.
pub fn avml() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DUMPCONV_AVML") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    let cached = Path::new(&home).join(".cache/dumpconv/tools/bin/avml");
    if cached.is_file() {
        return Some(cached);
    }
    on_path("avml")
}

/// A command-line tool on PATH (zstd, lz4), or a skip.
pub fn tool(name: &str) -> Option<PathBuf> {
    let t = on_path(name);
    if t.is_none() {
        skip(&format!("{name} is not installed (apt-get install {name})"));
    }
    t
}

/// The named guests that are in the cache (the others are skipped or fail in
/// `guests()` according to DUMPCONV_REQUIRE_GUESTS).
pub fn named_guests(names: &[&str]) -> Vec<Guest> {
    guests()
        .into_iter()
        .filter(|g| names.contains(&g.name.as_str()))
        .collect()
}

pub fn dumpconv(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("run dumpconv")
}

/// Run dumpconv and insist on success.
pub fn dumpconv_ok(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let out = dumpconv(args);
    assert!(
        out.status.success(),
        "dumpconv {:?} failed: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// `(start, end)` of each RAM range the guest's meta.json records (pmemsave'd RAM).
pub fn ram_ranges(g: &Guest) -> Vec<(u64, u64)> {
    g.ram_ranges().iter().map(|&(s, n)| (s, s + n)).collect()
}

/// The PT_LOADs of QEMU's phys.elf as the harness recorded them, adjacent ones merged:
/// the physical ranges a converter of phys.elf must write.
pub fn phys_elf_ranges(g: &Guest) -> Vec<(u64, u64)> {
    use dumpconv_tests::guests::as_u64;
    let mut loads: Vec<(u64, u64)> = g.meta["phys_elf"]["loads"]
        .as_array()
        .expect("meta.json phys_elf.loads")
        .iter()
        .map(|l| {
            let p = as_u64(&l["paddr"]);
            (p, p + as_u64(&l["memsz"]))
        })
        .collect();
    loads.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in loads {
        match merged.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// Bytes `start..end` of `a` (at `a_off + …`) equal those of `b` (at `b_off + …`).
pub fn assert_same_bytes(what: &str, a: &File, a_off: u64, b: &File, b_off: u64, len: u64) {
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(x.len());
        a.read_exact_at(&mut x[..n], a_off + done)
            .unwrap_or_else(|e| panic!("{what}: read at {:#x}: {e}", a_off + done));
        b.read_exact_at(&mut y[..n], b_off + done)
            .unwrap_or_else(|e| panic!("{what}: read at {:#x}: {e}", b_off + done));
        if x[..n] != y[..n] {
            let i = x[..n]
                .iter()
                .zip(&y[..n])
                .position(|(p, q)| p != q)
                .unwrap();
            panic!("{what}: first difference {:#x} bytes in", done + i as u64);
        }
        done += n as u64;
    }
}

/// Every byte of `len` bytes of `f` from `off` is zero.
pub fn assert_zeros(what: &str, f: &File, off: u64, len: u64) {
    let mut x = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(x.len());
        f.read_exact_at(&mut x[..n], off + done).unwrap();
        if let Some(i) = x[..n].iter().position(|&b| b != 0) {
            panic!("{what}: non-zero byte at {:#x}", off + done + i as u64);
        }
        done += n as u64;
    }
}

/// The stream `r` holds exactly the bytes of `f`; returns the length compared.
pub fn assert_stream_equals_file(what: &str, mut r: impl Read, f: &File) -> u64 {
    let mut x = vec![0u8; 4 << 20];
    let mut y = vec![0u8; 4 << 20];
    let len = f.metadata().unwrap().len();
    let mut done = 0u64;
    loop {
        // Fill the buffer fully (pipes return short reads).
        let mut n = 0;
        while n < x.len() {
            let k = r.read(&mut x[n..]).unwrap();
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        assert!(
            done + n as u64 <= len,
            "{what}: stream is longer than the {len} bytes of the file"
        );
        f.read_exact_at(&mut y[..n], done).unwrap();
        if x[..n] != y[..n] {
            let i = x[..n]
                .iter()
                .zip(&y[..n])
                .position(|(p, q)| p != q)
                .unwrap();
            panic!("{what}: first difference at byte {:#x}", done + i as u64);
        }
        done += n as u64;
    }
    assert_eq!(done, len, "{what}: stream ends early");
    done
}
