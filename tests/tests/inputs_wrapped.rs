//! Compressed wrappers and streamed inputs, through the real `dumpconv` binary: every
//! wrapper (gzip, zlib, lz4, zstd, xz, bzip2, lzop) around every input format (raw, ELF,
//! kdump-flattened, LiME, AVML) converts to the same bytes as the plain input; `-`
//! (standard input) and named pipes convert like the file; a wrapped raw image takes
//! `--ram-map`; `info` reports the wrapped format.
//!
//! The wrapped files are made by the real command-line tools where installed (gzip,
//! zstd, xz, lz4, bzip2, lzop; scripts/test.sh installs them; lzop has no crate, so its
//! tool is required) and by the crates otherwise (always for
//! zlib, which has no common tool). Inputs are 64 MiB cuts of the x86_64-4level guest
//! (the QEMU kdump file whole, converted with --length 64M) to keep CI time low.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use dumpconv_tests::guests::{guests, Guest};
use inputs_util::*;

const CUT: u64 = 64 << 20;
const WRAPPERS: &[&str] = &["gzip", "zlib", "lz4", "zstd", "xz", "bzip2", "lzop"];

fn guest() -> Option<Guest> {
    guests().into_iter().find(|g| g.name == "x86_64-4level")
}

/// Compress `input` into `input.<ext>` with `wrapper`: the real tool when installed,
/// else the crate.
fn wrap(input: &Path, wrapper: &str) -> PathBuf {
    let out = PathBuf::from(format!("{}.{wrapper}", input.display()));
    let (i, o) = (input.display(), out.display());
    let tool_cmd = match wrapper {
        "gzip" => Some(format!("gzip -1 -c '{i}' > '{o}'")),
        "zstd" => Some(format!("zstd -q -1 -c '{i}' > '{o}'")),
        "xz" => Some(format!("xz -0 -T2 -c '{i}' > '{o}'")),
        "lz4" => Some(format!("lz4 -q -1 -c '{i}' > '{o}'")),
        "bzip2" => Some(format!("bzip2 -1 -c '{i}' > '{o}'")),
        // no Rust lzop writer: the tool is required (scripts/test.sh installs it)
        "lzop" => Some(format!("lzop -1 -c '{i}' > '{o}'")),
        _ => None,
    };
    if let Some(cmd) = tool_cmd.filter(|_| on_path(wrapper)) {
        sh(&cmd);
        return out;
    }
    let data = std::fs::read(input).unwrap();
    let bytes = match wrapper {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }
        "zlib" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(&data[..], 1).unwrap(),
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 0);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }
        "lz4" => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        }
        other => panic!("no tool and no crate to make {other} files: install {other}"),
    };
    write(&out, &bytes);
    out
}

fn on_path(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()));
    if !found {
        eprintln!("NOTE: {name} is not installed; using the crate to compress");
    }
    found
}

/// `dumpconv INPUT EXTRA... -o OUT` (or from stdin when `stdin` is given and INPUT is
/// `-`), requiring success.
fn convert(input: &OsStr, extra: &[&str], out: &Path, stdin: Option<&Path>) {
    let mut args: Vec<&OsStr> = vec![input];
    args.extend(extra.iter().map(OsStr::new));
    args.extend([OsStr::new("-o"), out.as_os_str()]);
    let o = dumpconv_with_stdin(&args, stdin);
    assert!(
        o.status.success(),
        "dumpconv {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The plain inputs: 64 MiB cuts (raw, ELF, LiME, AVML) and the real QEMU kdump file.
struct Inputs {
    dir: tempfile::TempDir,
    list: Vec<(&'static str, PathBuf, Vec<&'static str>)>,
}

fn inputs(g: &Guest) -> Inputs {
    let dir = scratch();
    let d = dir.path();
    let raw = d.join("cut.raw");
    sh(&format!(
        "head -c {CUT} '{}' > '{}'",
        g.file("ram.raw").display(),
        raw.display()
    ));
    let elf = d.join("cut.elf");
    dumpconv_ok(&[
        g.file("phys.elf").as_os_str(),
        "--begin".as_ref(),
        "0".as_ref(),
        "--length".as_ref(),
        "64M".as_ref(),
        "-o".as_ref(),
        elf.as_os_str(),
    ]);
    let arch: Vec<&str> = vec!["--arch", "x86_64"];
    let mut list = vec![
        ("raw", raw.clone(), arch.clone()),
        ("elf", elf, vec![]),
        (
            "kdump-flattened",
            g.file("kdump-zlib.flat"),
            vec!["--length", "64M"],
        ),
    ];
    let lime = d.join("cut.lime");
    match avml() {
        Some(avml) => {
            avml_convert(&avml, "raw", "lime", &raw, &lime);
            let av = d.join("cut.avml");
            avml_convert(&avml, "raw", "lime_compressed", &raw, &av);
            list.push(("lime", lime, arch.clone()));
            list.push(("avml", av, arch));
        }
        None => {
            write_lime(&raw, &[(0, CUT - 1)], &lime);
            list.push(("lime", lime, arch));
        }
    }
    Inputs { dir, list }
}

#[test]
fn every_wrapper_on_every_format_converts_like_the_plain_input() {
    let Some(g) = guest() else { return };
    let ins = inputs(&g);
    let d = ins.dir.path();
    for (name, input, extra) in &ins.list {
        let plain = d.join(format!("{name}.plain.elf"));
        convert(input.as_os_str(), extra, &plain, None);
        for w in WRAPPERS {
            if *w == "lzop" && !on_path("lzop") {
                continue;
            }
            // Wrapped copies of the real kdump file go in the scratch dir too.
            let src = if input.starts_with(d) {
                input.clone()
            } else {
                let c = d.join(format!("{name}.in"));
                std::fs::copy(input, &c).unwrap();
                c
            };
            let wrapped = wrap(&src, w);
            let out = d.join(format!("{name}.{w}.elf"));
            convert(wrapped.as_os_str(), extra, &out, None);
            assert_same_file(&plain, &out);
            // `info` names both layers.
            let info = dumpconv_info_json(&wrapped, extra);
            let base = if *name == "kdump-flattened" {
                "kdump"
            } else {
                name
            };
            assert_eq!(
                info["format"],
                format!("{w}+{base}"),
                "{}",
                wrapped.display()
            );
            std::fs::remove_file(&wrapped).unwrap();
            std::fs::remove_file(&out).unwrap();
            if src != *input {
                std::fs::remove_file(&src).unwrap();
            }
            eprintln!("{w}+{name}: same output as {name}");
        }
        std::fs::remove_file(&plain).unwrap();
    }
}

fn dumpconv_info_json(input: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&OsStr> = vec!["info".as_ref(), "--json".as_ref(), input.as_os_str()];
    // --length is a convert option; info takes only input options.
    let mut it = extra.iter();
    while let Some(a) = it.next() {
        if *a == "--length" {
            it.next();
        } else {
            args.push(a.as_ref());
        }
    }
    let o = dumpconv_with_stdin(&args, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn stdin_and_named_pipes_convert_like_the_file() {
    let Some(g) = guest() else { return };
    let ins = inputs(&g);
    let d = ins.dir.path();
    for (name, input, extra) in ins
        .list
        .iter()
        .filter(|(n, _, _)| *n == "raw" || *n == "elf")
    {
        let plain = d.join(format!("{name}.plain.elf"));
        convert(input.as_os_str(), extra, &plain, None);
        let piped = d.join(format!("{name}.stdin.elf"));
        convert("-".as_ref(), extra, &piped, Some(input));
        assert_same_file(&plain, &piped);
        // A wrapped input on stdin.
        let gz = wrap(input, "gzip");
        let piped_gz = d.join(format!("{name}.stdin-gz.elf"));
        convert("-".as_ref(), extra, &piped_gz, Some(&gz));
        assert_same_file(&plain, &piped_gz);
        // A named pipe.
        let fifo = d.join(format!("{name}.fifo"));
        sh(&format!("mkfifo '{}'", fifo.display()));
        let feeder = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cat '{}' > '{}'", gz.display(), fifo.display()))
            .spawn()
            .unwrap();
        let via_fifo = d.join(format!("{name}.fifo.elf"));
        convert(fifo.as_os_str(), extra, &via_fifo, None);
        let status = feeder.wait_with_output().unwrap().status;
        assert!(status.success());
        assert_same_file(&plain, &via_fifo);
        eprintln!("{name}: stdin, stdin+gzip and a named pipe give the same output");
    }
}

#[test]
fn whole_guest_through_stdin_zstd_and_wrapped_raw_with_ram_map() {
    let Some(g) = guest() else { return };
    let dir = scratch();
    let d = dir.path();
    let raw = g.file("ram.raw");
    let zst = d.join("ram.raw.zst");
    if on_path("zstd") {
        sh(&format!(
            "zstd -q -1 -c '{}' > '{}'",
            raw.display(),
            zst.display()
        ));
    } else {
        let f = std::fs::File::open(&raw).unwrap();
        let out = std::fs::File::create(&zst).unwrap();
        zstd::stream::copy_encode(f, out, 1).unwrap();
    }
    // The guest's System RAM as a RAM map: the wrapped raw image takes it.
    let map: Vec<String> = system_ram(&g)
        .iter()
        .map(|(s, l)| format!("{s:#x}-{l:#x}"))
        .collect();
    let map = map.join(",");
    let extra = ["--arch", "x86_64", "--ram-map", map.as_str()];
    let plain = d.join("plain.elf");
    convert(raw.as_os_str(), &extra, &plain, None);
    let piped = d.join("stdin.elf");
    let t = std::time::Instant::now();
    convert("-".as_ref(), &extra, &piped, Some(&zst));
    eprintln!(
        "512 MiB zstd raw image through stdin with --ram-map: {:.2} s (spill + convert)",
        t.elapsed().as_secs_f64()
    );
    assert_same_file(&plain, &piped);
    let wrapped = d.join("wrapped.elf");
    convert(zst.as_os_str(), &extra, &wrapped, None);
    assert_same_file(&plain, &wrapped);
    // And the RAM map really applied: the output holds only System RAM, equal to
    // pmemsave there.
    let present = check_against_image(&wrapped, &raw, &system_ram(&g));
    let want: u64 = system_ram(&g).iter().map(|(s, l)| l - s + 1).sum();
    assert_eq!(present, want);
    let dump = dumpconv_formats::open(&wrapped, &Default::default()).unwrap();
    assert_eq!(dump.memory.total_bytes(), want);
}

/// A zero-page bomb: 64 MiB of zeros as zstd (a few KiB). Past `--max-spill` (or
/// `$DUMPCONV_MAX_SPILL`, or a batch job's `max-spill`) it fails as a bad input naming
/// the file, the limit and the option, with nothing left behind; under it, it converts.
#[test]
fn max_spill_refuses_a_zero_bomb_past_the_limit_and_converts_it_under() {
    let dir = scratch();
    let d = dir.path();
    let zeros = d.join("bomb.raw");
    std::fs::File::create(&zeros).unwrap().set_len(CUT).unwrap();
    let bomb = wrap(&zeros, "zstd");
    std::fs::remove_file(&zeros).unwrap();
    let bomb_len = std::fs::metadata(&bomb).unwrap().len();
    assert!(bomb_len < CUT / 1000, "{bomb_len} bytes is no bomb");
    let spill_dir = d.join("spill");
    std::fs::create_dir(&spill_dir).unwrap();
    let out = d.join("bomb.elf");
    let run = |extra: &[&str], env: Option<&str>, stdin: bool| {
        let mut cmd = std::process::Command::new(dumpconv_bin());
        cmd.arg(if stdin {
            OsStr::new("-")
        } else {
            bomb.as_os_str()
        })
        .args(["--arch", "x86_64", "--spill-dir"])
        .arg(&spill_dir)
        .args(extra)
        .arg("-o")
        .arg(&out)
        .env_remove("DUMPCONV_MAX_SPILL");
        if let Some(v) = env {
            cmd.env("DUMPCONV_MAX_SPILL", v);
        }
        if stdin {
            cmd.stdin(std::fs::File::open(&bomb).unwrap());
        }
        cmd.output().unwrap()
    };
    let refused = |o: &std::process::Output, name: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(name), "{err}");
        assert!(err.contains("--max-spill limit of 16 MiB"), "{err}");
        assert!(err.contains("DUMPCONV_MAX_SPILL"), "{err}");
        assert!(!out.exists(), "output left behind");
        assert_eq!(std::fs::read_dir(&spill_dir).unwrap().count(), 0);
    };
    let shown = bomb.display().to_string();
    refused(&run(&["--max-spill", "16M"], None, false), &shown);
    refused(&run(&[], Some("16M"), false), &shown);
    refused(&run(&["--max-spill", "16M"], None, true), "<stdin>");
    // The option wins over the environment; exactly the limit is allowed.
    let o = run(&["--max-spill", "64M"], Some("16M"), false);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plain = d.join("plain.raw");
    std::fs::File::create(&plain).unwrap().set_len(CUT).unwrap();
    let plain_elf = d.join("plain.elf");
    convert(plain.as_os_str(), &["--arch", "x86_64"], &plain_elf, None);
    assert_same_file(&out, &plain_elf);

    // batch passes max-spill (and spill-dir) to its jobs.
    let out_dir = d.join("batch");
    let report = d.join("report.json");
    let o = std::process::Command::new(dumpconv_bin())
        .arg("batch")
        .arg(&bomb)
        .arg("--out-dir")
        .arg(&out_dir)
        .args([
            "--quiet",
            "--arch",
            "x86_64",
            "--max-spill",
            "16M",
            "--spill-dir",
        ])
        .arg(&spill_dir)
        .arg("--report")
        .arg(&report)
        .env_remove("DUMPCONV_MAX_SPILL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let job = &r["jobs"][0];
    assert_eq!(job["status"], "failed", "{r}");
    let err = job["error"].as_str().unwrap();
    assert!(err.contains(&shown), "{err}");
    assert!(err.contains("--max-spill limit of 16 MiB"), "{err}");
    let outputs: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with(".dumpconv-journal"))
        .collect();
    assert!(outputs.is_empty(), "{outputs:?}");
}
