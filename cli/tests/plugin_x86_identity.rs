//! The x86 walker built as a run-time plugin (`plugins/x86/cdylib`) must give the same
//! bytes as the built-in walker on real guests, through the real binary:
//! `dumpconv --plugin libdumpconv_x86_plugin.so --plugin-override --paging IN -o OUT`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dumpconv(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        // Only the libraries the test names: no plugin directories from the environment.
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .env("XDG_DATA_HOME", "/nonexistent")
        .output()
        .expect("run dumpconv")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The cdylib built with the same profile as this test, next to the dumpconv binary.
/// `cargo build -p dumpconv-x86-plugin` for that profile first, so it is never stale
/// (a no-op when scripts/test.sh built the workspace already).
fn x86_plugin() -> PathBuf {
    cdylib("dumpconv-x86-plugin", "libdumpconv_x86_plugin.so")
}

/// The same walker exported with the frozen plugin ABI 1 (`tests/plugins/x86-v1`).
fn x86_plugin_v1() -> PathBuf {
    cdylib("dumpconv-test-x86-v1", "libdumpconv_x86_v1.so")
}

fn cdylib(package: &str, file: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_dumpconv"));
    let dir = bin.parent().expect("binary directory");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("cannot tell the profile from {}", dir.display()),
    };
    let target_dir = dir.parent().expect("target directory");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--profile", profile])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    let lib = dir.join(file);
    assert!(lib.is_file(), "{} was not built", lib.display());
    lib
}

/// Both the ABI-2 build (the SDK's) and the ABI-1 build of the x86 walker give the
/// built-in's bytes.
#[test]
fn plugin_walker_gives_the_builtin_bytes_on_real_guests() {
    for lib in [x86_plugin(), x86_plugin_v1()] {
        plugin_gives_the_builtin_bytes(&lib);
    }
}

fn plugin_gives_the_builtin_bytes(lib: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for g in [
        "x86_64-4level",
        "x86_64-la57",
        "x86_64-kaslr",
        "i386-pae",
        "i386-2level",
    ] {
        let Some(input) = dumpconv_tests::guests::guest(g).map(|g| g.file("phys.elf")) else {
            continue;
        };
        let a = tmp.path().join(format!("{g}-builtin.elf"));
        let b = tmp.path().join(format!("{g}-plugin.elf"));
        let err = ok(
            &dumpconv(&[
                "--paging".as_ref(),
                "-q".as_ref(),
                "-v".as_ref(),
                input.as_os_str(),
                "-o".as_ref(),
                a.as_os_str(),
            ]),
            "built-in walker",
        );
        assert!(err.contains("walker x86 (built-in)"), "{g}: {err}");
        let err = ok(
            &dumpconv(&[
                "--plugin".as_ref(),
                lib.as_os_str(),
                "--plugin-override".as_ref(),
                "--paging".as_ref(),
                "-q".as_ref(),
                "-v".as_ref(),
                input.as_os_str(),
                "-o".as_ref(),
                b.as_os_str(),
            ]),
            "plugin walker",
        );
        // The plugin, not the built-in, walked the tables.
        assert!(
            err.contains(&format!("walker x86 ({})", lib.display())),
            "{g}: {err}"
        );
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(ba.len() > 1 << 20, "{g}: output too small");
        assert!(
            ba == bb,
            "{g}: the plugin's output differs from the built-in's"
        );
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
        compared += 1;
    }
    eprintln!("{}: compared {compared} guests", lib.display());
}

#[test]
fn plugin_is_listed_and_a_clash_needs_override() {
    let lib = x86_plugin();
    let out = dumpconv(&[
        "plugins".as_ref(),
        "--json".as_ref(),
        "--plugin".as_ref(),
        lib.as_os_str(),
        "--plugin-override".as_ref(),
    ]);
    ok(&out, "dumpconv plugins");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let walkers: Vec<_> = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "walker" && p["name"] == "x86")
        .collect();
    assert_eq!(walkers.len(), 1, "the plugin replaced the built-in: {v}");
    assert_eq!(walkers[0]["name"], "x86");
    assert_eq!(walkers[0]["origin"], lib.to_str().unwrap());
    assert_eq!(walkers[0]["abi_major"], 2);
    assert_eq!(
        walkers[0]["modes"],
        serde_json::json!(["32bit", "pae", "4level", "5level"])
    );
    assert_eq!(walkers[0]["arches"], serde_json::json!(["x86_64", "i386"]));
    // The version-1 build: the same modes, from v1's mode numbers.
    let lib1 = x86_plugin_v1();
    let out = dumpconv(&[
        "plugins".as_ref(),
        "--json".as_ref(),
        "--plugin".as_ref(),
        lib1.as_os_str(),
        "--plugin-override".as_ref(),
    ]);
    ok(&out, "dumpconv plugins (ABI 1)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w1 = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "walker")
        .unwrap();
    assert_eq!(w1["origin"], lib1.to_str().unwrap());
    assert_eq!(w1["abi_major"], 1);
    assert_eq!(
        w1["modes"],
        serde_json::json!(["32bit", "pae", "4level", "5level"])
    );

    // Without --plugin-override: refused, exit 4, naming the file and the clash.
    let out = dumpconv(&["plugins".as_ref(), "--plugin".as_ref(), lib.as_os_str()]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(lib.to_str().unwrap()) && err.contains("clashes with the built-in"),
        "{err}"
    );

    // In a plugin directory, the same clash is a warning and the library is listed as failed.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&lib, dir.path().join("x86.so")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(["plugins", "--json"])
        .env("DUMPCONV_PLUGIN_PATH", dir.path())
        .env("XDG_DATA_HOME", "/nonexistent")
        .output()
        .unwrap();
    let err = ok(
        &out,
        "plugins with a clashing library in DUMPCONV_PLUGIN_PATH",
    );
    assert!(err.contains("warning") && err.contains("x86.so"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["failed"][0]["path"],
        dir.path().join("x86.so").to_str().unwrap()
    );
}

/// A raw image has no CPU state: with `--vmcoreinfo`, `--paging` takes the kernel's root
/// from VMCOREINFO, and with the x86 plugin overriding the built-in that root comes from
/// the plugin's `roots_from_vmcoreinfo`; `--cr3 ADDR --paging-mode 4level` builds the
/// CPU through the plugin's `cpu_from_root`. Both give the built-in's bytes.
#[test]
fn plugin_finds_the_root_of_a_raw_image_like_the_builtin() {
    let Some(g) = dumpconv_tests::guests::guest("x86_64-4level") else {
        return;
    };
    let lib = x86_plugin();
    let tmp = tempfile::tempdir().unwrap();
    let input = g.file("ram.raw");
    let vmci = g.file("vmcoreinfo.txt");
    let vi = dumpconv_core::VmcoreInfo::parse(&std::fs::read(&vmci).unwrap());
    let (root_cpu, _) = dumpconv::Registry::builtin()
        .roots_from_vmcoreinfo(dumpconv_core::Arch::X86_64, &vi)
        .unwrap()
        .expect("the kernel's root from VMCOREINFO");
    let cr3 = format!("{:#x}", root_cpu.reg("cr3").expect("cr3"));
    let cases: [(&str, Vec<&std::ffi::OsStr>); 2] = [
        (
            "vmcoreinfo",
            vec!["--vmcoreinfo".as_ref(), vmci.as_os_str()],
        ),
        (
            "cr3",
            vec![
                "--cr3".as_ref(),
                cr3.as_ref(),
                "--paging-mode".as_ref(),
                "4level".as_ref(),
            ],
        ),
    ];
    for (name, extra) in cases {
        let mut outs = Vec::new();
        for plugin in [false, true] {
            let out = tmp.path().join(format!("{name}-{plugin}.elf"));
            let mut args: Vec<&std::ffi::OsStr> = Vec::new();
            if plugin {
                args.extend([
                    std::ffi::OsStr::new("--plugin"),
                    lib.as_os_str(),
                    std::ffi::OsStr::new("--plugin-override"),
                ]);
            }
            args.extend(["--paging", "-q", "-v"].map(std::ffi::OsStr::new));
            args.extend(extra.iter().copied());
            args.extend([
                input.as_os_str(),
                std::ffi::OsStr::new("-o"),
                out.as_os_str(),
            ]);
            let err = ok(&dumpconv(&args), &format!("{name} plugin={plugin}"));
            let origin = if plugin {
                lib.display().to_string()
            } else {
                "built-in".to_string()
            };
            assert!(
                err.contains(&format!("walker x86 ({origin})")),
                "{name} plugin={plugin}: {err}"
            );
            if name == "vmcoreinfo" {
                assert!(
                    err.contains("using the kernel's page-table root from VMCOREINFO"),
                    "{name} plugin={plugin}: {err}"
                );
            }
            outs.push(std::fs::read(&out).unwrap());
        }
        assert!(outs[0].len() > 1 << 20, "{name}: output too small");
        assert!(
            outs[0] == outs[1],
            "{name}: the plugin's output differs from the built-in's"
        );
    }
}
