//! Bad run-time plugins through the real binary, one test each: the user gets a clear
//! error naming the plugin file and exit code 4; dumpconv neither crashes nor panics, and
//! no output file (finished or partial) is left behind.
//!
//! The C plugins are built from `tests/plugins/*.c` with the machine's C compiler; the
//! panicking one is a Rust cdylib (`tests/plugins/panicky`) built with cargo.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    assert_plugin_failure, build_c_plugin, build_c_plugin_v1, build_panicky, c_compiler, repo,
    scratch, text,
};

/// A 2 MiB raw RAM image with recognisable content, and the directory for outputs.
fn raw_input(dir: &Path) -> PathBuf {
    let p = dir.join("in.raw");
    let data: Vec<u8> = (0..2u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(&p, data).unwrap();
    p
}

/// Build `tests/plugins/bad_writer.c` with `defines` as `libbad.so` in `dir`.
fn bad_writer(cc: &str, dir: &Path, defines: &[&str]) -> PathBuf {
    let lib = dir.join("libbad.so");
    build_c_plugin(cc, "tests/plugins/bad_writer.c", defines, &lib);
    lib
}

/// Convert the raw input with the bad writer, expecting a clean plugin failure.
fn convert_fails(defines: &[&str], needles: &[&str]) {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = bad_writer(&cc, tmp.path(), defines);
    let input = raw_input(tmp.path());
    let out = tmp.path().join("out.img");
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        "--format",
        "badwriter",
        input,
        "-o",
        out
    );
    assert_plugin_failure(&res, &lib, &out, needles);
}

/// The same source without any -D is a working writer: the failures below come from the
/// one thing each variant changes, not from the test's set-up.
#[test]
fn control_the_unmodified_test_writer_works() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = bad_writer(&cc, tmp.path(), &[]);
    let input = raw_input(tmp.path());
    let out = tmp.path().join("out.img");
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        "--format",
        "badwriter",
        input,
        "-o",
        out
    );
    assert!(res.status.success(), "{}", text(&res.stderr));
    let mut want = b"HEAD".to_vec();
    want.extend(std::fs::read(&input).unwrap());
    // The writer writes "HEAD" and then pads from there: RAM starts at 0, so the image
    // is "HEAD" followed by the RAM.
    assert_eq!(std::fs::read(&out).unwrap(), want);
}

/// The version is read from the file: a library of another major version is refused
/// before it is loaded (its constructor, which would abort dumpconv, never runs).
#[test]
fn wrong_abi_version_symbol() {
    convert_fails(&["-DABI_SYMBOL=999", "-DCONSTRUCTOR_ABORTS"], &["999"]);
}

#[test]
fn wrong_abi_major_in_descriptor() {
    convert_fails(&["-DABI_MAJOR=999"], &["999"]);
}

#[test]
fn descriptor_too_short() {
    convert_fails(&["-DSHORT_DESCRIPTOR"], &["struct_size"]);
}

#[test]
fn missing_entry_symbol() {
    convert_fails(&["-DNO_ENTRY"], &["dumpconv_plugin_entry"]);
}

#[test]
fn writer_returns_an_error_with_its_message() {
    convert_fails(
        &["-DRETURN_ERROR"],
        &["badwriter", "no room for a padded image today"],
    );
}

#[test]
fn writer_goes_on_after_a_failed_read() {
    convert_fails(&["-DIGNORE_READ_FAILURE"], &["read_phys"]);
}

#[test]
fn writer_goes_on_after_a_failed_sink_write() {
    convert_fails(&["-DIGNORE_SINK_FAILURE"], &["sink_write_at"]);
}

/// Also on a stream: the bytes the plugin writes after the failure never reach stdout.
#[test]
fn writer_goes_on_after_a_failed_sink_write_to_stdout() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = bad_writer(&cc, tmp.path(), &["-DIGNORE_SINK_FAILURE"]);
    let input = raw_input(tmp.path());
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        "--format",
        "badwriter",
        input,
        "-o",
        "-"
    );
    assert_plugin_failure(&res, &lib, &tmp.path().join("-"), &["sink_write_at"]);
    let stdout = text(&res.stdout);
    assert!(
        !stdout.contains("AFTER-FAILURE"),
        "bytes written after a failed callback reached stdout"
    );
}

#[test]
fn writer_sets_an_error_then_claims_success() {
    convert_fails(
        &["-DERROR_THEN_OK"],
        &["reports a failure and then claims success"],
    );
}

fn convert_with_bogus_library(needles: &[&str], make: impl FnOnce(&Path, &Path)) {
    let tmp = scratch();
    let lib = tmp.path().join("libx.so");
    make(&lib, tmp.path());
    let input = raw_input(tmp.path());
    let out = tmp.path().join("out.raw");
    let res = dumpconv!(tmp.path(), "--plugin", lib, input, "-o", out);
    assert_plugin_failure(&res, &lib, &out, needles);
}

#[test]
fn not_a_shared_library_text_file() {
    convert_with_bogus_library(&["not a shared library"], |lib, _| {
        std::fs::write(lib, "this is not a shared library\n").unwrap();
    });
}

#[test]
fn not_a_shared_library_executable() {
    // An executable is an ELF file too; it is refused for lacking the plugin's symbols.
    convert_with_bogus_library(&["dumpconv_plugin_entry"], |lib, _| {
        std::fs::copy("/bin/true", lib).unwrap();
    });
}

#[test]
fn not_a_shared_library_truncated() {
    let Some(cc) = c_compiler() else { return };
    convert_with_bogus_library(&["not a shared library"], |lib, dir| {
        let good = dir.join("libgood.so");
        build_c_plugin(&cc, "plugins/examples/padded_raw.c", &[], &good);
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(lib, &bytes[..bytes.len() / 3]).unwrap();
    });
}

/// The same walker built against ABI 2 and the frozen ABI 1: either way the host
/// catches the stray mapping.
#[test]
fn walker_maps_outside_ram() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    for v1 in [false, true] {
        let lib = tmp.path().join(format!("liboutside{}.so", u8::from(v1)));
        let src = "tests/plugins/outside_ram_walker.c";
        if v1 {
            build_c_plugin_v1(&cc, src, &[], &lib);
        } else {
            build_c_plugin(&cc, src, &[], &lib);
        }
        let input = raw_input(tmp.path());
        let out = tmp.path().join("out.elf");
        let res = dumpconv!(
            tmp.path(),
            "--plugin",
            lib,
            "--plugin-override",
            "--paging",
            "--cr3",
            "0x1000",
            "--paging-mode",
            "4level",
            input,
            "-o",
            out
        );
        assert_plugin_failure(&res, &lib, &out, &["emit_mapping", "not RAM"]);
    }
}

/// A walker whose `cpu_from_root` emits a register name the host refuses, and whose
/// `roots_from_vmcoreinfo` emits too many registers: plugin errors (exit 4) that name the
/// callback, and no output.
#[test]
fn walker_builds_malformed_cpus() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = tmp.path().join("libbadcpu.so");
    build_c_plugin(&cc, "tests/plugins/bad_cpu_walker.c", &[], &lib);
    let input = raw_input(tmp.path());
    let out = tmp.path().join("out.elf");
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        "--plugin-override",
        "--paging",
        "--cr3",
        "0x1000",
        "--paging-mode",
        "4level",
        input,
        "-o",
        out
    );
    assert_plugin_failure(
        &res,
        &lib,
        &out,
        &["cpu_from_root", "emit_reg", "\"cr 3\" is not lowercase"],
    );
    let vmci = tmp.path().join("vmcoreinfo.txt");
    std::fs::write(&vmci, "OSRELEASE=6.1.0\nPAGESIZE=4096\n").unwrap();
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        "--plugin-override",
        "--paging",
        "--vmcoreinfo",
        vmci,
        input,
        "-o",
        out
    );
    assert_plugin_failure(
        &res,
        &lib,
        &out,
        &[
            "roots_from_vmcoreinfo",
            "emit_reg",
            "more than 256 registers",
        ],
    );
}

/// A plugin whose name is a built-in's is refused without --plugin-override.
#[test]
fn walker_named_like_a_builtin_needs_override() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = tmp.path().join("liboutside.so");
    build_c_plugin(&cc, "tests/plugins/outside_ram_walker.c", &[], &lib);
    let input = raw_input(tmp.path());
    let out = tmp.path().join("out.elf");
    let res = dumpconv!(tmp.path(), "--plugin", lib, input, "-o", out);
    assert_plugin_failure(&res, &lib, &out, &["--plugin-override"]);
}

#[test]
fn writer_that_panics() {
    let tmp = scratch();
    // A copy, so the error must name the file that was loaded.
    let lib = tmp.path().join("libpanicky.so");
    std::fs::copy(build_panicky(), &lib).unwrap();
    let input = raw_input(tmp.path());
    let out = tmp.path().join("out.panicky");
    // With RUST_BACKTRACE, the plugin's std would also print a backtrace if its own hook
    // ran: the SDK's hook must keep it quiet too.
    let res = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args([OsStr::new("--plugin"), lib.as_os_str(), input.as_os_str()])
        .args([OsStr::new("-o"), out.as_os_str()])
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("share"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    // The location is where the panicky plugin's source says `panic!(`.
    let src = std::fs::read_to_string(repo().join("tests/plugins/panicky/src/lib.rs")).unwrap();
    let line = 1 + src
        .lines()
        .position(|l| l.trim_start().starts_with("panic!("))
        .expect("panic! in the panicky plugin");
    let location = format!("panicked at tests/plugins/panicky/src/lib.rs:{line}:");
    assert_plugin_failure(
        &res,
        &lib,
        &out,
        &[&location, "the panicky test writer gives up after 1 ranges"],
    );
    // Only dumpconv's error: no "thread '<unnamed>' panicked at" from the plugin's std,
    // no backtrace.
    let stderr = text(&res.stderr);
    assert!(!stderr.contains("thread '"), "{stderr}");
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    assert_eq!(stderr.matches("panicked at").count(), 1, "{stderr}");
}
