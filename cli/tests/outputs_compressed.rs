//! Whole-output compression (`X.zst`, `X.lz4`, `--compress zstd|lz4`), checked with the
//! real `zstd` and `lz4` tools: what they decompress must be byte for byte the plain
//! output, and the plain raw output must be the guest's pmemsave image over its RAM.
//! Usage errors and a full disk must leave nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod outputs_util;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use outputs_util::*;

/// `tool -dc file` (zstd or lz4) streamed against the plain file.
fn assert_decompresses_to(tool: &Path, packed: &Path, plain: &Path) {
    let mut child = Command::new(tool)
        .arg("-dc")
        .arg(packed)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let what = format!("{} -dc {}", tool.display(), packed.display());
    let n = assert_stream_equals_file(
        &what,
        child.stdout.take().unwrap(),
        &File::open(plain).unwrap(),
    );
    assert!(child.wait().unwrap().success(), "{what} failed");
    assert!(n > 0);
}

#[test]
fn compressed_outputs_decompress_to_the_plain_outputs() {
    let (Some(zstd), Some(lz4)) = (tool("zstd"), tool("lz4")) else {
        return;
    };
    for g in named_guests(&["x86_64-4level", "i386-pae"]) {
        let tmp = scratch();
        let d = tmp.path();
        let input = g.file("phys.elf");
        for plain in ["plain.raw", "plain.elf", "plain.lime"] {
            dumpconv_ok(&[&"-q", &input, &"-o", &d.join(plain)]);
        }
        // The plain raw image is the guest's RAM (so the compressed ones are too).
        let raw = File::open(d.join("plain.raw")).unwrap();
        let pmemsave = File::open(g.file("ram.raw")).unwrap();
        for (s, e) in ram_ranges(&g) {
            assert_same_bytes(
                &format!("{}: plain raw vs pmemsave at {s:#x}", g.name),
                &raw,
                s,
                &pmemsave,
                s,
                e - s,
            );
        }
        let cases: [(&str, &[&str], &str, &Path); 6] = [
            ("ram.raw.zst", &[], "plain.raw", &zstd),
            (
                "ram.zst",
                &["--threads", "1", "--level", "9"],
                "plain.raw",
                &zstd,
            ),
            ("ram.raw.lz4", &[], "plain.raw", &lz4),
            ("ram.lz4", &[], "plain.raw", &lz4),
            ("guest.elf.zst", &[], "plain.elf", &zstd),
            ("guest.lime.lz4", &[], "plain.lime", &lz4),
        ];
        for (name, extra, plain, tool) in cases {
            // Each 4 GiB raw stream takes seconds to compare: every variant on one
            // guest, one of each codec and format on the other.
            if g.name != "x86_64-4level" && matches!(name, "ram.zst" | "ram.lz4") {
                continue;
            }
            let packed = d.join(name);
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-q", &input, &"-o", &packed];
            for a in extra {
                args.push(a);
            }
            dumpconv_ok(&args);
            let plain_len = std::fs::metadata(d.join(plain)).unwrap().len();
            let packed_len = std::fs::metadata(&packed).unwrap().len();
            eprintln!("{}: {name}: {packed_len} bytes for {plain_len}", g.name);
            assert!(packed_len < plain_len, "{name} is not smaller than {plain}");
            assert_decompresses_to(tool, &packed, &d.join(plain));
            std::fs::remove_file(&packed).unwrap();
        }
    }
}

/// `dumpconv ARGS -o - | tool -dc` equals `plain`.
fn assert_stdout_pipe(input: &Path, args: &[&str], tool: &Path, plain: &Path) {
    let mut conv = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .arg("-q")
        .arg(input)
        .args(args)
        .args(["-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut dec = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::from(conv.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let what = format!("dumpconv {args:?} -o - | {} -dc", tool.display());
    assert_stream_equals_file(
        &what,
        dec.stdout.take().unwrap(),
        &File::open(plain).unwrap(),
    );
    assert!(conv.wait().unwrap().success(), "{what}: dumpconv failed");
    assert!(dec.wait().unwrap().success(), "{what}: decompressor failed");
}

#[test]
fn compressed_stdout_pipes_into_the_real_decompressors() {
    let (Some(zstd), Some(lz4)) = (tool("zstd"), tool("lz4")) else {
        return;
    };
    for g in named_guests(&["x86_64-4level"]) {
        let tmp = scratch();
        let input = g.file("phys.elf");
        let plain_raw = tmp.path().join("plain.raw");
        let plain_lime = tmp.path().join("plain.lime");
        dumpconv_ok(&[&"-q", &input, &"-o", &plain_raw]);
        dumpconv_ok(&[&"-q", &input, &"-o", &plain_lime]);
        assert_stdout_pipe(
            &input,
            &["--format", "raw", "--compress", "zstd"],
            &zstd,
            &plain_raw,
        );
        assert_stdout_pipe(
            &input,
            &["--format", "lime", "--compress", "lz4"],
            &lz4,
            &plain_lime,
        );
    }
}

/// A small raw image of incompressible bytes (the first byte non-zero), for tests
/// that need no guest.
fn noise_image(dir: &Path, len: usize) -> PathBuf {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    let p = dir.join("noise.raw");
    std::fs::write(&p, v).unwrap();
    p
}

fn only_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn compression_misuse_is_a_usage_error_that_says_what_is_allowed() {
    let tmp = scratch();
    let d = tmp.path();
    let input = noise_image(d, 1 << 20);
    let cases: &[(&str, &[&str], &str)] = &[
        // kdump compresses pages: lz4 is not one of its codecs.
        ("x.kdump", &["--compress", "lz4"], "zlib, lzo, snappy, zstd"),
        // ... and its output is never wrapped.
        ("x.kdump.zst", &[], "name it .kdump"),
        ("x.zst", &["--format", "kdump"], "name it .kdump"),
        // AVML's blocks are snappy already.
        ("x.avml.lz4", &[], "name it .avml"),
        ("x.avml", &["--compress", "zstd"], "always snappy"),
        ("x.raw", &["--compress", "brotli"], "zstd, lz4 or none"),
        ("x.lime", &["--compress", "zlib"], "zstd, lz4 or none"),
        (
            "x.raw.zst",
            &["--compress", "lz4"],
            "the name says zstd but --compress says lz4",
        ),
        ("x.raw.lz4", &["--level", "3"], "lz4 output has no levels"),
        ("x.raw", &["--level", "3"], "--compress zstd or lz4"),
        ("x.raw.zst", &["--level", "99"], "zstd levels are"),
    ];
    for (name, extra, says) in cases {
        let out_path = d.join(name);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-q", &input, &"-o", &out_path];
        for a in *extra {
            args.push(a);
        }
        let out = dumpconv(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {extra:?}: {err}");
        assert!(
            err.contains(says),
            "{name} {extra:?}: message {err:?} lacks {says:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            only_entries(d),
            ["noise.raw"],
            "{name} {extra:?} left something"
        );
    }
}

/// A tmpfs mounted for the test, unmounted when dropped (also on a failed assert).
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Result<SmallFs, String> {
        let dir = scratch();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallFs { dir })
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn full_disk_during_a_compressed_write_fails_with_exit_3_and_leaves_nothing() {
    let tmp = scratch();
    // 24 MiB that no codec can shrink much, into a 2 MiB file system.
    let input = noise_image(tmp.path(), 24 << 20);
    let fs = match SmallFs::mount("2m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIP: full-disk test: {why}");
            return;
        }
    };
    for name in ["out.raw.zst", "out.lime.lz4", "out.elf.zst"] {
        let target = fs.path().join(name);
        let out = dumpconv(&[&"-q", &input, &"-o", &target]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{name}: {err}");
        assert!(err.contains("No space left on device"), "{name}: {err}");
        assert!(
            err.contains(name),
            "{name}: the error names the output: {err}"
        );
        assert!(
            only_entries(fs.path()).is_empty(),
            "{name}: left behind {:?}",
            only_entries(fs.path())
        );
    }
}

#[test]
fn compressed_stdout_to_a_full_device_fails_with_exit_3() {
    let tmp = scratch();
    let input = noise_image(tmp.path(), 4 << 20);
    let full = File::options().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .arg("-q")
        .arg(&input)
        .args(["--format", "raw", "--compress", "zstd", "-o", "-"])
        .stdout(full)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("<stdout>") && err.contains("No space left"),
        "{err}"
    );
}
