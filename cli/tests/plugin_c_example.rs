//! The C example plugin (`plugins/examples/padded_raw.c`), built with the machine's C
//! compiler and loaded by the real binary, converts real guest dumps end to end: every
//! byte of its padded image equals QEMU's pmemsave of the guest in RAM, equals the dump
//! elsewhere in the dump's memory (QEMU also dumps the BIOS ROM), and is zero in between.

mod common;

#[path = "../../tests/src/guests.rs"]
#[allow(dead_code)]
mod guests;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{build_c_plugin, build_c_plugin_v1, c_compiler, scratch, text};
use dumpconv_formats::OpenOptions;

fn build_example(cc: &str, dir: &Path) -> PathBuf {
    let lib = dir.join("libcpadded.so");
    build_c_plugin(cc, "plugins/examples/padded_raw.c", &[], &lib);
    lib
}

/// The same example built against the frozen version-1 header: a version-1 plugin,
/// which dumpconv still loads.
fn build_example_v1(cc: &str, dir: &Path) -> PathBuf {
    let lib = dir.join("libcpadded-v1.so");
    build_c_plugin_v1(cc, "plugins/examples/padded_raw.c", &[], &lib);
    lib
}

/// What byte `addr` of a padded image of `dump` must be: the pmemsave byte in guest RAM,
/// the dump's byte in the rest of its memory (ROM), zero in holes.
fn check_padded_image(g: &guests::Guest, dump_path: &Path, image: &Path) {
    let dump = dumpconv_formats::open(dump_path, &OpenOptions::default()).unwrap();
    let dump_ranges: Vec<(u64, u64)> = dump
        .memory
        .ranges()
        .iter()
        .map(|r| (r.start, r.end))
        .collect();
    let ram: Vec<(u64, u64)> = g.ram_ranges().iter().map(|&(s, n)| (s, s + n)).collect();
    let end = dump_ranges.last().unwrap().1;
    let meta = std::fs::metadata(image).unwrap();
    assert_eq!(
        meta.len(),
        end,
        "{}: a padded image ends where the dump's last range ends",
        image.display()
    );

    let mut img = File::open(image).unwrap();
    let pmem = File::open(g.file("ram.raw")).unwrap();
    const CHUNK: u64 = 1 << 20;
    let mut got = vec![0u8; CHUNK as usize];
    let mut want = vec![0u8; CHUNK as usize];
    let mut at = 0u64;
    while at < end {
        let n = (end - at).min(CHUNK);
        let (got, want) = (&mut got[..n as usize], &mut want[..n as usize]);
        img.read_exact(got).unwrap();
        // Zero, then the dump's bytes where it has memory, then pmemsave's in guest RAM.
        want.fill(0);
        for &(s, e) in &dump_ranges {
            let (lo, hi) = (s.max(at), e.min(at + n));
            if lo < hi {
                let w = &mut want[(lo - at) as usize..(hi - at) as usize];
                dump.memory.read_at(lo, w).unwrap();
            }
        }
        for &(s, e) in &ram {
            let (lo, hi) = (s.max(at), e.min(at + n));
            if lo < hi {
                let w = &mut want[(lo - at) as usize..(hi - at) as usize];
                std::os::unix::fs::FileExt::read_exact_at(&pmem, w, lo).unwrap();
            }
        }
        if got != want {
            let i = got
                .iter()
                .zip(want.iter())
                .position(|(a, b)| a != b)
                .unwrap();
            panic!(
                "{} ({}): byte at physical {:#x} is {:#04x}, expected {:#04x}",
                image.display(),
                g.name,
                at + i as u64,
                got[i],
                want[i]
            );
        }
        at += n;
    }

    // Holes stay holes: the image occupies about the dump's memory, not its length.
    let in_dump: u64 = dump_ranges.iter().map(|(s, e)| e - s).sum();
    let allocated = meta.blocks() * 512;
    assert!(
        allocated < in_dump + (64 << 20) && allocated < end,
        "{}: {allocated} bytes allocated for {in_dump} bytes of memory in a {end}-byte image",
        image.display()
    );
    println!(
        "{}: {} bytes long, {allocated} allocated, {in_dump} of memory: equals pmemsave",
        g.name, end
    );
}

fn convert_guest(name: &str) {
    convert_guest_with(name, false)
}

fn convert_guest_with(name: &str, v1: bool) {
    let Some(cc) = c_compiler() else { return };
    let Some(g) = guests::guests().into_iter().find(|g| g.name == name) else {
        return;
    };
    let tmp = scratch();
    let lib = if v1 {
        build_example_v1(&cc, tmp.path())
    } else {
        build_example(&cc, tmp.path())
    };
    let out = tmp.path().join("out.padded");
    let input = g.file("phys.elf");
    // --format names the plugin; the .padded extension alone selects it too (below).
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        "--format",
        "cpadded",
        input,
        "-o",
        out
    );
    assert!(
        res.status.success(),
        "dumpconv with the C plugin failed on {}:\n{}",
        g.name,
        text(&res.stderr)
    );
    check_padded_image(&g, &input, &out);
}

#[test]
fn c_example_converts_x86_64_4level_guest() {
    convert_guest("x86_64-4level");
}

/// A version-1 build of the example still loads and converts byte for byte.
#[test]
fn c_example_v1_build_converts_x86_64_4level_guest() {
    convert_guest_with("x86_64-4level", true);
}

/// RAM 0-3 GiB and 4-5.5 GiB: the hole below 4 GiB stays a hole.
#[test]
fn c_example_converts_x86_64_highmem_guest() {
    convert_guest("x86_64-highmem");
}

/// The output name's extension selects the plugin's writer; --begin/--length clip what is
/// written but the image still starts at physical 0.
#[test]
fn c_example_selected_by_extension_with_begin_and_length() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = build_example(&cc, tmp.path());
    let input = tmp.path().join("in.raw");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i ^ (i >> 12)) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let out = tmp.path().join("part.padded");
    let res = dumpconv!(
        tmp.path(),
        "--plugin",
        lib,
        input,
        "--begin",
        "0x100000",
        "--length",
        "0x180000",
        "-o",
        out
    );
    assert!(res.status.success(), "{}", text(&res.stderr));
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 0x280000);
    assert!(got[..0x100000].iter().all(|&b| b == 0));
    assert_eq!(&got[0x100000..], &data[0x100000..0x280000]);
}

/// `dumpconv plugins` lists the C plugin: kind, name, version, ABI version and file.
#[test]
fn plugins_command_lists_c_example() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let lib = build_example(&cc, tmp.path());
    let res = dumpconv!(tmp.path(), "plugins", "--plugin", lib);
    let stdout = text(&res.stdout);
    assert!(res.status.success(), "{}", text(&res.stderr));
    let row: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.get(1) == Some(&"cpadded"))
        .unwrap_or_else(|| panic!("cpadded is not listed:\n{stdout}"));
    let path = lib.display().to_string();
    assert_eq!(
        row,
        ["writer", "cpadded", "1.0.0", "2", path.as_str()],
        "in:\n{stdout}"
    );
    // Built against the version-1 header: listed with ABI 1.
    let lib1 = build_example_v1(&cc, tmp.path());
    let res1 = dumpconv!(tmp.path(), "plugins", "--plugin", lib1);
    let stdout1 = text(&res1.stdout);
    assert!(res1.status.success(), "{}", text(&res1.stderr));
    let path1 = lib1.display().to_string();
    assert!(
        stdout1
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["writer", "cpadded", "1.0.0", "1", path1.as_str()]),
        "{stdout1}"
    );
    assert!(
        stdout.contains("padded raw image written by a C plugin"),
        "{stdout}"
    );
    // The built-in plugins are listed too.
    for builtin in ["elf", "kdump", "raw", "x86"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(builtin)),
            "{builtin} missing from:\n{stdout}"
        );
    }
}

/// Installed in the per-user directory (or a directory of $DUMPCONV_PLUGIN_PATH), the
/// plugin is available without --plugin.
#[test]
fn c_example_found_in_plugin_directories() {
    let Some(cc) = c_compiler() else { return };
    let tmp = scratch();
    let input = tmp.path().join("in.raw");
    std::fs::write(&input, vec![0x5au8; 1 << 20]).unwrap();

    // common::dumpconv sets XDG_DATA_HOME to HOME/share.
    let user_dir = tmp.path().join("share/dumpconv/plugins");
    std::fs::create_dir_all(&user_dir).unwrap();
    build_example(&cc, &user_dir);
    let out = tmp.path().join("a.padded");
    let res = dumpconv!(tmp.path(), input, "-o", out);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), vec![0x5au8; 1 << 20]);
    std::fs::remove_dir_all(&user_dir).unwrap();

    let env_dir = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&env_dir).unwrap();
    let lib = build_example(&cc, &env_dir);
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(["plugins"])
        .env("DUMPCONV_PLUGIN_PATH", &env_dir)
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("share"))
        .output()
        .unwrap();
    let stdout = text(&res.stdout);
    assert!(
        stdout.contains("cpadded") && stdout.contains(&lib.display().to_string()),
        "{stdout}{}",
        text(&res.stderr)
    );
}
