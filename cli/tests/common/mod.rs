//! Helpers for the run-time plugin tests: build C plugins with the machine's compiler,
//! run the real `dumpconv` binary isolated from the user's plugins, and check that a
//! failure is clean.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The directory holding `dumpconv_plugin.h`.
pub fn include_dir() -> PathBuf {
    repo().join("core/include")
}

/// The frozen version-1 header's directory.
pub fn include_dir_v1() -> PathBuf {
    repo().join("core/include/v1")
}

fn required() -> bool {
    std::env::var("DUMPCONV_REQUIRE_GUESTS").is_ok_and(|v| v == "1")
}

/// The C compiler (`$CC` or `cc`), or None after printing why the test is skipped.
/// With `DUMPCONV_REQUIRE_GUESTS=1` (the project's test command) a missing compiler fails.
pub fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    if Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(cc);
    }
    let msg = format!("no C compiler ({cc:?} does not run): C plugins cannot be built");
    assert!(!required(), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

/// A fresh directory for one test.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Compile `src` (relative to the repository root) into the shared library `out`.
pub fn build_c_plugin(cc: &str, src: &str, defines: &[&str], out: &Path) {
    build_c_plugin_with(cc, &include_dir(), src, defines, out)
}

/// [`build_c_plugin`] against the frozen version-1 header: a version-1 plugin.
pub fn build_c_plugin_v1(cc: &str, src: &str, defines: &[&str], out: &Path) {
    build_c_plugin_with(cc, &include_dir_v1(), src, defines, out)
}

fn build_c_plugin_with(cc: &str, include: &Path, src: &str, defines: &[&str], out: &Path) {
    let output = Command::new(cc)
        .args([
            "-shared", "-fPIC", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
        ])
        .arg("-I")
        .arg(include)
        .args(defines)
        .arg(repo().join(src))
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{cc} {src} {defines:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run the real binary with `args`, isolated from plugins installed for the user or named
/// in the environment: HOME and XDG_DATA_HOME point at `home`.
pub fn dumpconv(home: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("share"))
        .output()
        .unwrap()
}

/// `dumpconv(home, ["a", path, ...])` without spelling out the OsStr conversions.
#[macro_export]
macro_rules! dumpconv {
    ($home:expr, $($arg:expr),* $(,)?) => {
        common::dumpconv($home, &[$(std::ffi::OsStr::new(&$arg)),*])
    };
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A plugin failure as the user must see it: exit code 4 (not a signal, not a panic of
/// dumpconv), an error naming the plugin file and containing each of `needles`, and no
/// file at `out` nor any temporary left next to it.
pub fn assert_plugin_failure(out: &Output, plugin: &Path, output_path: &Path, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "expected exit code 4 (plugin error), got {:?}\nstderr:\n{stderr}",
        out.status
    );
    // A Rust plugin's panic is reported in the error with its location ("panicked at
    // tests/plugins/..."); any other panic is dumpconv's.
    for (i, _) in stderr.match_indices("panicked at ") {
        let location = &stderr[i + "panicked at ".len()..];
        assert!(
            location.starts_with("tests/plugins/"),
            "dumpconv itself panicked:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&plugin.display().to_string()),
        "the error does not name the plugin file {}:\n{stderr}",
        plugin.display()
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "the error does not say {n:?}:\n{stderr}"
        );
    }
    assert!(
        !output_path.exists(),
        "{} was left behind after a failed conversion",
        output_path.display()
    );
    if let Some(dir) = output_path.parent() {
        let stem = output_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(&stem))
            .collect();
        assert!(left.is_empty(), "temporary output left behind: {left:?}");
    }
}

/// Build the Rust test plugin `tests/plugins/panicky` (a workspace member) with the cargo
/// and the profile that run this test, into the same target directory (a no-op when it
/// is up to date), and return the library.
pub fn build_panicky() -> PathBuf {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_dumpconv")).parent().unwrap();
    let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("cannot tell the profile from {}", bin_dir.display()),
    };
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "dumpconv-test-panicky",
            "--profile",
            profile,
        ])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", bin_dir.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build -p dumpconv-test-panicky failed:\n{}",
        text(&out.stderr)
    );
    let lib = bin_dir.join("libdumpconv_test_panicky.so");
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}
