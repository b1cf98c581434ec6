//! Each exit code of `dumpconv` produced by a real failure of its kind, through the real
//! binary: 1 a corrupt zlib page in a kdump input, 2 a flag that does not exist, 3 an
//! output device that is full (plain and through the zstd compressor), 4 a plugin that
//! panics. Code 5 (a broken internal invariant) has no real trigger by design: its
//! mapping is tested in `dumpconv_core::error`, and `--help` must document it.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{build_panicky, scratch, text};
use dumpconv_formats::kdump::layout::{
    DiskDumpHeader, Layout, PageDesc, DUMP_DH_COMPRESSED_ZLIB, PAGE_DESC_SIZE,
};

/// Run the binary isolated from installed plugins, with `stdout` as its standard output.
fn run(home: &Path, args: &[&OsStr], stdout: Option<File>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dumpconv"));
    c.args(args)
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("share"));
    if let Some(f) = stdout {
        c.stdout(f);
    }
    c.output().unwrap()
}

macro_rules! os {
    ($($a:expr),* $(,)?) => { &[$(OsStr::new(&$a)),*] };
}

fn assert_code(out: &Output, code: i32, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr:\n{stderr}");
    // A plugin's panic is reported with its location in tests/plugins/; any other is
    // dumpconv's own.
    for (i, _) in stderr.match_indices("panicked at ") {
        assert!(
            stderr[i + "panicked at ".len()..].starts_with("tests/plugins/"),
            "dumpconv panicked:\n{stderr}"
        );
    }
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}:\n{stderr}");
    }
}

/// 1 MiB of compressible, non-zero RAM as a raw image.
fn raw_input(dir: &Path) -> PathBuf {
    let p = dir.join("in.raw");
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| b"dumpconv exit codes "[(i % 20) as usize] ^ (i >> 12) as u8)
        .collect();
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn input_corrupt_zlib_page_in_a_kdump_is_1() {
    let tmp = scratch();
    let raw = raw_input(tmp.path());
    let kdump = tmp.path().join("in.kdump");
    let made = run(
        tmp.path(),
        os!(raw, "-o", kdump, "--compress", "zlib", "--quiet"),
        None,
    );
    assert_code(&made, 0, &[]);
    let mut bytes = std::fs::read(&kdump).unwrap();
    // Find the first zlib page through the header (dumpconv writes the 64-bit layout for
    // a raw input: x86_64 is the default).
    let h = DiskDumpHeader::decode(&bytes, Layout::Bits64).unwrap();
    let bs = h.block_size as usize;
    let descs = bs * (1 + h.sub_hdr_size as usize + h.bitmap_blocks as usize);
    let d = (0..256)
        .map(|i| PageDesc::decode(&bytes[descs + i * PAGE_DESC_SIZE..]).unwrap())
        .find(|d| d.flags & DUMP_DH_COMPRESSED_ZLIB != 0)
        .expect("a zlib-compressed page");
    // Garbage in the middle of the deflate stream (the zlib header stays valid).
    let at = d.offset as usize + 2;
    for b in &mut bytes[at..at + d.size as usize / 2] {
        *b = 0xa5;
    }
    std::fs::write(&kdump, &bytes).unwrap();
    let out = tmp.path().join("out.raw");
    let res = run(tmp.path(), os!(kdump, "-o", out, "--quiet"), None);
    assert_code(&res, 1, &[&kdump.display().to_string(), "kdump"]);
    assert!(!out.exists(), "a failed conversion leaves no output");
}

#[test]
fn usage_unknown_flag_is_2() {
    let tmp = scratch();
    let raw = raw_input(tmp.path());
    let res = run(
        tmp.path(),
        os!(
            "convert",
            raw,
            "-o",
            tmp.path().join("o.raw"),
            "--no-such-flag"
        ),
        None,
    );
    assert_code(&res, 2, &["--no-such-flag"]);
}

#[test]
fn output_full_device_is_3_plain_and_compressed() {
    let tmp = scratch();
    let raw = raw_input(tmp.path());
    for extra in [
        &[][..],
        &["--compress", "zstd"][..],
        &["--compress", "lz4"][..],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full");
        let mut args: Vec<&OsStr> = os!(raw, "-o", "-", "--format", "raw", "--quiet").to_vec();
        args.extend(extra.iter().map(OsStr::new));
        let res = run(tmp.path(), &args, Some(full));
        assert_code(&res, 3, &["No space left on device"]);
    }
}

#[test]
fn plugin_that_panics_is_4() {
    let tmp = scratch();
    let lib = tmp.path().join("libpanicky.so");
    std::fs::copy(build_panicky(), &lib).unwrap();
    let raw = raw_input(tmp.path());
    let out = tmp.path().join("out.panicky");
    let res = run(tmp.path(), os!("--plugin", lib, raw, "-o", out), None);
    assert_code(&res, 4, &[&lib.display().to_string()]);
    assert!(!out.exists());
}

#[test]
fn help_documents_every_exit_code() {
    let tmp = scratch();
    let res = run(tmp.path(), os!("--help"), None);
    assert_code(&res, 0, &[]);
    let help = text(&res.stdout);
    for code in [
        "0 success",
        "1 bad or unreadable input",
        "2 bad usage",
        "3 output",
        "4 plugin",
        "5 internal",
    ] {
        assert!(help.contains(code), "--help lacks {code:?}:\n{help}");
    }
}

/// Page filtering on an input without VMCOREINFO: exit 1 before the output exists; with
/// `--filter-fallback`, every page is written (level 0) and a warning says so.
#[test]
fn input_filter_without_vmcoreinfo_is_1_unless_fallback() {
    let tmp = scratch();
    let input = raw_input(tmp.path());
    let out_path = tmp.path().join("out.kdump");
    let out = run(
        tmp.path(),
        os!["convert", input, "-o", out_path, "--arch", "x86_64", "-d", "31"],
        None,
    );
    assert_code(&out, 1, &["page filter", "VMCOREINFO", "--filter-fallback"]);
    assert!(!out_path.exists(), "an output was written");
    let out = run(
        tmp.path(),
        os![
            "convert",
            input,
            "-o",
            out_path,
            "--arch",
            "x86_64",
            "--exclude",
            "free,user",
            "--filter-fallback"
        ],
        None,
    );
    assert_code(&out, 0, &["dump level 0"]);
    assert!(out_path.exists());
    // A class name that does not exist is a usage error.
    let out = run(
        tmp.path(),
        os![
            "convert",
            input,
            "-o",
            out_path,
            "--force",
            "--exclude",
            "free,bogus"
        ],
        None,
    );
    assert_code(&out, 2, &["bogus"]);
}
