//! Reader matrix (issue 18), Volatility 3: what it makes of each output we write that it
//! claims to read, on one x86_64 guest (x86_64-4level) and one i386 guest (i386-pae),
//! against QEMU's own ELF of the same guest. Sampled for CI time: each Volatility run
//! scans the 512 MiB image (20-60 s on the loaded 2-core machine).
//!
//! For our physical ELF (default class), raw image, LiME, AVML and the paging ELF in the
//! `--elf-layout physical-first` order:
//! - `banners.Banners` finds the guest's `linux_banner`, and the layer Volatility
//!   stacked on the file (its saved configuration) is the one for that format (a silent
//!   fall-back to raw bytes, as for ELF32, fails here);
//! - when the guest kernel's ISF symbol table is in the cache
//!   (`~/.cache/dumpconv/volatility/symbols/linux/<kernel release>.json.xz`, made with
//!   dwarf2json from the `-dbg` vmlinux: `tests/readers/volatility_isf.sh`),
//!   `linux.pslist` gives the same rows as for QEMU's ELF.
//!
//! Volatility comes from `DUMPCONV_VOLATILITY` (the `vol` script; `scripts/test.sh`
//! installs volatility3 from PyPI into a cached venv), else the cache's venv. Skips,
//! saying why, without it (`DUMPCONV_REQUIRE_VOLATILITY=1`: a failure) or without the
//! guests (`DUMPCONV_REQUIRE_GUESTS=1`). `DUMPCONV_VOLATILITY_ALL=1` also runs the other
//! x86 guests (x86_64-kaslr, i386-2level; not in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dumpconv_tests::guests::{cache_dir, guest, Guest};
use inputs_util::dumpconv_convert;

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == value)
}

fn volatility_root() -> PathBuf {
    cache_dir()
        .parent()
        .map(|p| p.join("volatility"))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
}

/// The `vol` command, or None (skip).
fn vol() -> Option<PathBuf> {
    let p = std::env::var_os("DUMPCONV_VOLATILITY")
        .map(PathBuf::from)
        .unwrap_or_else(|| volatility_root().join("venv/bin/vol"));
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "no Volatility 3 at {} (scripts/test.sh installs it)",
        p.display()
    );
    assert!(!env_is("DUMPCONV_REQUIRE_VOLATILITY", "1"), "{msg}");
    eprintln!("SKIP: {msg}");
    None
}

/// Run one plugin; (CSV output, the layer classes of the saved configuration).
fn run_vol(vol: &Path, file: &Path, plugin: &str) -> Result<(String, Vec<String>), String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    // A cache of its own, kept: Volatility indexes every ISF of the symbol directory
    // into it on first use (slow), later runs read it.
    let cache = volatility_root().join("cache");
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let o = Command::new(vol)
        .args(["-q", "--offline", "-r", "csv", "--cache-path"])
        .arg(&cache)
        .arg("-s")
        .arg(volatility_root().join("symbols"))
        .arg("--save-config")
        .arg(&config)
        .arg("-f")
        .arg(file)
        .arg(plugin)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", vol.display()))?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() {
        return Err(format!(
            "{plugin} on {}: {}\n{out}{}",
            file.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let mut layers = Vec::new();
    if let Ok(text) = std::fs::read_to_string(&config) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(map) = v.as_object() {
            for (k, v) in map {
                if k.ends_with(".class") {
                    if let Some(s) = v.as_str().filter(|s| s.contains(".layers.")) {
                        layers.push(s.to_string());
                    }
                }
            }
        }
    }
    layers.sort();
    layers.dedup();
    Ok((out, layers))
}

/// The guest kernel's ISF, if the cache has one.
fn isf(g: &Guest) -> Option<PathBuf> {
    let release = g.meta["kernel_release"].as_str()?;
    let p = volatility_root()
        .join("symbols/linux")
        .join(format!("{release}.json.xz"));
    p.is_file().then_some(p)
}

fn matrix(name: &str) {
    let Some(vol) = vol() else { return };
    let Some(g) = guest(name) else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = g.file("phys.elf");
    let d = |n: &str| dir.path().join(n);
    // (what, file, extra convert args, the layer Volatility must stack on it)
    let outputs: Vec<(&str, PathBuf, Vec<&str>, &str)> = vec![
        ("our ELF", d("our.elf"), vec![], "layers.elf.Elf64Layer"),
        ("our raw", d("our.raw"), vec![], "layers.physical.FileLayer"),
        ("our LiME", d("our.lime"), vec![], "layers.lime.LimeLayer"),
        ("our AVML", d("our.avml"), vec![], "layers.avml.AVMLLayer"),
        (
            "our paging ELF, physical-first",
            d("pfirst.elf"),
            vec!["--paging", "--elf-layout", "physical-first"],
            "layers.elf.Elf64Layer",
        ),
    ];
    for (_, path, extra, _) in &outputs {
        dumpconv_convert(&src, path, extra);
    }
    let banner = g.banner();
    assert!(!banner.is_empty(), "{name}: no banner.txt");
    let isf = isf(&g);
    if isf.is_none() {
        eprintln!(
            "{name}: no ISF in {} (tests/readers/volatility_isf.sh): banners only",
            volatility_root().join("symbols/linux").display()
        );
    }
    let t = Instant::now();
    // Jobs: banners on each output; with the ISF, pslist on QEMU's ELF and each output.
    let mut jobs: Vec<(&str, &Path, &str)> = outputs
        .iter()
        .map(|(what, p, _, _)| (*what, p.as_path(), "banners.Banners"))
        .collect();
    if isf.is_some() {
        jobs.push(("QEMU's ELF", src.as_path(), "linux.pslist"));
        for (what, p, _, _) in &outputs {
            jobs.push((what, p.as_path(), "linux.pslist"));
        }
    }
    // The first alone (it may have to index the symbol tables into the cache), then two
    // at a time (2 cores).
    let (first, rest) = jobs.split_at(1);
    let results: Vec<Result<(String, Vec<String>), String>> = first
        .chunks(1)
        .chain(rest.chunks(2))
        .flat_map(|pair| {
            std::thread::scope(|s| {
                let hs: Vec<_> = pair
                    .iter()
                    .map(|(_, p, plugin)| s.spawn(|| run_vol(&vol, p, plugin)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    eprintln!(
        "{name}: {} Volatility runs: {:.1} s",
        jobs.len(),
        t.elapsed().as_secs_f64()
    );
    let mut reference: Option<String> = None;
    for ((what, path, plugin), r) in jobs.iter().zip(&results) {
        let (out, layers) = r
            .as_ref()
            .unwrap_or_else(|e| panic!("{name}: Volatility {plugin} on {what}: {e}"));
        if *plugin == "banners.Banners" {
            assert!(
                out.contains(&banner),
                "{name}: banners.Banners on {what} ({}) misses the banner: {out}",
                path.display()
            );
            let want = outputs.iter().find(|o| o.0 == *what).map(|o| o.3).unwrap();
            assert!(
                layers.iter().any(|l| l.ends_with(want)),
                "{name}: Volatility stacked {layers:?} on {what}, not {want}"
            );
            eprintln!("{name}: banners.Banners on {what}: banner found, layer {want}");
            continue;
        }
        let rows = out.lines().filter(|l| !l.trim().is_empty()).count();
        match &reference {
            None => {
                assert!(
                    rows > 20 && out.contains(",init,"),
                    "{name}: linux.pslist on QEMU's ELF: {out}"
                );
                eprintln!("{name}: linux.pslist on QEMU's ELF: {} rows", rows - 1);
                reference = Some(out.clone());
            }
            Some(r) => {
                assert_eq!(
                    out, r,
                    "{name}: linux.pslist on {what} differs from QEMU's ELF"
                );
                eprintln!("{name}: linux.pslist on {what}: same {} rows", rows - 1);
            }
        }
    }
}

#[test]
fn volatility_reads_our_outputs_x86_64_4level() {
    matrix("x86_64-4level");
}

#[test]
fn volatility_reads_our_outputs_i386_pae() {
    matrix("i386-pae");
}

/// The other x86 guests, run by hand (`DUMPCONV_VOLATILITY_ALL=1`): CI samples one guest
/// of each word size above; these cost 3-4 minutes each. Not x86_64-la57: Volatility
/// 2.28.2 finds no process on a 5-level guest even in QEMU's own ELF (linux.pslist prints
/// only its header), so there is nothing to compare ours with.
#[test]
fn volatility_reads_our_outputs_other_x86_guests() {
    if !env_is("DUMPCONV_VOLATILITY_ALL", "1") {
        return;
    }
    for g in ["x86_64-kaslr", "i386-2level"] {
        matrix(g);
    }
}
