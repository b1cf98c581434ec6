//! Helpers for the input-format tests: the real `dumpconv` binary, avml and the
//! compression tools, a LiME writer written from the published layout (independent of
//! the reader under test), and a comparison of a converted dump against the guest's
//! pmemsave image.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dumpconv_core::Error;
use dumpconv_formats::OpenOptions;
use dumpconv_tests::guests::Guest;

fn required() -> bool {
    std::env::var("DUMPCONV_REQUIRE_GUESTS").is_ok_and(|v| v == "1")
}

/// The `dumpconv` binary. `CARGO_BIN_EXE_dumpconv` exists only in the `dumpconv`
/// package's own tests, so: `$DUMPCONV_BIN`, else the binary beside this test's
/// `deps/` directory (`cargo test --workspace` builds it in the same profile; alone,
/// run `cargo build -p dumpconv --profile <same>` first).
pub fn dumpconv_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DUMPCONV_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps");
    let bin = profile_dir.join("dumpconv");
    assert!(
        bin.is_file(),
        "the dumpconv binary is not at {} (run `cargo test --workspace`, or build it with \
         `cargo build -p dumpconv` in the same profile, or set DUMPCONV_BIN)",
        bin.display()
    );
    let (b, t) = (mtime(&bin), mtime(&exe));
    static NOTE: std::sync::Once = std::sync::Once::new();
    if b < t {
        NOTE.call_once(|| {
            eprintln!(
                "NOTE: {} is older than this test binary; if it is stale, rebuild it \
             (cargo build -p dumpconv) or run the tests with --workspace",
                bin.display()
            )
        });
    }
    bin
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Run `dumpconv ARGS`, optionally with `stdin` piped from a file.
pub fn dumpconv_with_stdin(args: &[&std::ffi::OsStr], stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new(dumpconv_bin());
    cmd.args(args);
    match stdin {
        Some(p) => cmd.stdin(File::open(p).expect("stdin file")),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().expect("run dumpconv")
}

/// Run `dumpconv ARGS` and require success.
pub fn dumpconv_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) {
    let a: Vec<&std::ffi::OsStr> = args.iter().map(AsRef::as_ref).collect();
    let out = dumpconv_with_stdin(&a, None);
    assert!(
        out.status.success(),
        "dumpconv {a:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dumpconv --paging INPUT -o OUT` (required to succeed), then the string gdb (`gdb`,
/// with `set architecture ARCH`) reads at virtual address `vaddr` of OUT.
pub fn paging_elf_string(input: &Path, out: &Path, gdb: &str, arch: &str, vaddr: u64) -> String {
    dumpconv_ok(&[
        "--paging".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    dumpconv_tests::guests::gdb_string(gdb, out, arch, vaddr)
}

/// `dumpconv convert -q INPUT -o OUT EXTRA...`, required to succeed.
pub fn dumpconv_convert(input: &Path, out: &Path, extra: &[&str]) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert".as_ref(),
        "-q".as_ref(),
        input.as_ref(),
        "-o".as_ref(),
        out.as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    dumpconv_ok(&args);
}

/// A tool on PATH (or at `path`), or None with a printed reason; with
/// DUMPCONV_REQUIRE_GUESTS=1 a missing tool fails the test.
pub fn tool(name: &str, extra: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = extra.filter(|p| p.is_file()) {
        return Some(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!("{name} is not installed (scripts/test.sh installs it)");
        assert!(!required(), "{msg}");
        eprintln!("SKIP: {msg}");
    }
    found
}

/// avml: `$DUMPCONV_AVML`, PATH, or `~/.cache/dumpconv/tools/bin/avml`.
pub fn avml() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DUMPCONV_AVML") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    tool(
        "avml",
        Some(Path::new(&home).join(".cache/dumpconv/tools/bin/avml")),
    )
}

/// `avml convert --source-format SRC --format DST IN OUT`.
pub fn avml_convert(avml: &Path, src: &str, dst: &str, input: &Path, output: &Path) {
    let out = Command::new(avml)
        .args(["convert", "--source-format", src, "--format", dst])
        .arg(input)
        .arg(output)
        .output()
        .expect("run avml");
    assert!(
        out.status.success(),
        "avml convert {src} -> {dst} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a shell pipeline, requiring success.
pub fn sh(script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory under /tmp (a real disk, unlike a tmpfs; room for the big
/// guest), removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("DUMPCONV_TEST_SCRATCH").unwrap_or_else(|| "/tmp".into());
    tempfile::Builder::new()
        .prefix("dumpconv-inputs-")
        .tempdir_in(base)
        .expect("scratch dir")
}

/// The guest's "System RAM" ranges from its /proc/iomem (what LiME and avml save),
/// as (start, inclusive last); meta.json's RAM ranges when there is no iomem copy.
pub fn system_ram(g: &Guest) -> Vec<(u64, u64)> {
    if let Ok(text) = std::fs::read_to_string(g.file("iomem.txt")) {
        let v: Vec<(u64, u64)> = text
            .lines()
            .filter(|l| !l.starts_with(' ') && l.ends_with(": System RAM"))
            .filter_map(|l| {
                let (a, b) = l.split(':').next()?.trim().split_once('-')?;
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
            .collect();
        if !v.is_empty() {
            return v;
        }
    }
    g.ram_ranges()
        .into_iter()
        .map(|(s, n)| (s, s + n - 1))
        .collect()
}

/// Write a LiME file of `ranges` (start, inclusive last) of `image` (a pmemsave image,
/// file offset = physical address), per LiME's published header layout: magic
/// 0x4C694D45, version 1, start, inclusive end, 8 reserved zero bytes, then the bytes.
/// All-zero pages are left as holes in the (sparse) file.
pub fn write_lime(image: &Path, ranges: &[(u64, u64)], out: &Path) {
    let src = File::open(image).unwrap();
    let dst = File::create(out).unwrap();
    let mut pos = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for &(start, last) in ranges {
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(&0x4C69_4D45u32.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&start.to_le_bytes());
        h.extend_from_slice(&last.to_le_bytes());
        h.extend_from_slice(&[0u8; 8]);
        dst.write_all_at(&h, pos).unwrap();
        pos += 32;
        let mut left = last - start + 1;
        let mut at = start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at).unwrap();
            for (i, page) in buf[..n].chunks(4096).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    dst.write_all_at(page, pos + (i * 4096) as u64).unwrap();
                }
            }
            pos += n as u64;
            at += n as u64;
            left -= n as u64;
        }
    }
    dst.set_len(pos).unwrap();
}

/// Check a converted dump against the pmemsave image over `ranges` (start, inclusive
/// last): every byte the output holds equals the image, and every byte it lacks is
/// zero in the image (avml and LiME-from-avml drop all-zero blocks). Returns the bytes
/// found present. The output is read with our reader; the expected bytes come only
/// from pmemsave.
pub fn check_against_image(output: &Path, image: &Path, ranges: &[(u64, u64)]) -> u64 {
    let opts = OpenOptions::default();
    let d = dumpconv_formats::open(output, &opts)
        .unwrap_or_else(|e| panic!("open {}: {e}", output.display()));
    let img = File::open(image).unwrap();
    let img_len = img.metadata().unwrap().len();
    const STEP: u64 = 1 << 20;
    let (mut got, mut want) = (vec![0u8; STEP as usize], vec![0u8; STEP as usize]);
    let mut present = 0u64;
    for &(start, last) in ranges {
        let mut at = start;
        while at <= last {
            let n = STEP.min(last - at + 1) as usize;
            let w = &mut want[..n];
            let avail = img_len.saturating_sub(at).min(n as u64) as usize;
            img.read_exact_at(&mut w[..avail], at).unwrap();
            w[avail..].fill(0);
            let g = &mut got[..n];
            if d.memory.is_ram(at, n as u64) {
                d.memory.read_at(at, g).unwrap();
                present += n as u64;
                assert!(
                    g == &w[..],
                    "{}: bytes differ in {at:#x}+{n:#x}",
                    output.display()
                );
            } else {
                // Page by page (avml's zero holes are block-aligned, LiME ranges are not
                // page-aligned: go byte-exact at the edges).
                let mut o = 0usize;
                while o < n {
                    let a = at + o as u64;
                    let k = (4096 - (a % 4096) as usize).min(n - o);
                    let page = &mut g[o..o + k];
                    match d.memory.read_at(a, page) {
                        Ok(()) => {
                            present += k as u64;
                            assert!(
                                page == &w[o..o + k],
                                "{}: bytes differ at {a:#x}",
                                output.display()
                            );
                        }
                        Err(Error::Hole { .. }) => {
                            // Partly RAM: compare the RAM bytes one by one.
                            for j in 0..k {
                                let mut b = [0u8; 1];
                                match d.memory.read_at(a + j as u64, &mut b) {
                                    Ok(()) => {
                                        present += 1;
                                        assert_eq!(b[0], w[o + j], "byte at {:#x}", a + j as u64)
                                    }
                                    Err(_) => assert_eq!(
                                        w[o + j],
                                        0,
                                        "{}: {:#x} is missing but not zero in pmemsave",
                                        output.display(),
                                        a + j as u64
                                    ),
                                }
                            }
                        }
                        Err(e) => panic!("{}: read {a:#x}: {e}", output.display()),
                    }
                    o += k;
                }
            }
            at += n as u64;
        }
    }
    present
}

/// Files equal, compared in pieces (outputs are hundreds of MiB).
pub fn assert_same_file(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{} and {} differ in size", a.display(), b.display());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let n = fa.read(&mut x).unwrap();
        if n == 0 {
            break;
        }
        fb.read_exact(&mut y[..n]).unwrap();
        assert!(
            x[..n] == y[..n],
            "{} and {} differ near offset {off:#x}",
            a.display(),
            b.display()
        );
        off += n as u64;
    }
}

/// Write `bytes` to `path`.
pub fn write(path: &Path, bytes: &[u8]) {
    File::create(path).unwrap().write_all(bytes).unwrap();
}
