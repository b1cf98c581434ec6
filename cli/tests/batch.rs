//! `dumpconv batch` through the real binary: real-guest-sized dumps with one corrupt
//! input, resuming from the journal, redoing deleted and truncated outputs, shards,
//! `--verify` (passing and failing), manifest errors.
//!
//! The real-guest test reads the cache built by tests/real-guests/ensure-guests.sh
//! (discovery as in tests/src/guests.rs, which this package cannot depend on: that
//! crate depends on this one). It skips with a reason when the cache is missing,
//! unless DUMPCONV_REQUIRE_GUESTS=1.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

fn dumpconv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        .output()
        .expect("run dumpconv")
}

/// [`dumpconv`], but a run still going after `secs` is killed and the test fails: a
/// build that waits where it should refuse must fail the test, not hang it.
fn dumpconv_within(args: &[&str], secs: u64) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dumpconv");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait for dumpconv").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dumpconv {args:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect dumpconv's output")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn as_u64(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => s.parse().unwrap(),
        },
        _ => panic!("not a number: {v}"),
    }
}

/// RAM ranges and the kernel banner's physical address, from meta.json.
fn guest_meta(dir: &Path) -> (Vec<(u64, u64)>, u64) {
    let meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    let ranges = meta["ram_ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (as_u64(&r["start"]), as_u64(&r["size"])))
        .collect();
    (ranges, as_u64(&meta["linux_banner_phys"]))
}

fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Status of each job in a report, by input file name.
fn statuses(r: &Value) -> Vec<(String, String)> {
    r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let input = PathBuf::from(j["input"].as_str().unwrap());
            (
                input.file_name().unwrap().to_string_lossy().into_owned(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn job<'a>(r: &'a Value, input_name: &str) -> &'a Value {
    r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["input"].as_str().unwrap().ends_with(input_name))
        .unwrap_or_else(|| panic!("no job for {input_name} in {r:#}"))
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

/// Compare 1 MiB windows of an output's RAM (read through our reader) with the
/// guest's pmemsave image: the first and last MiB of every RAM range and the MiB
/// holding the kernel banner.
fn check_windows(output: &Path, format: &str, guest: &Path) {
    let (ranges, banner) = guest_meta(guest);
    let opts = dumpconv_formats::OpenOptions {
        input_format: (format == "raw").then(|| "raw".into()),
        ram_map: None,
        ..Default::default()
    };
    let dump = dumpconv_formats::open(output, &opts).unwrap();
    let ram = std::fs::File::open(guest.join("ram.raw")).unwrap();
    let mut windows = vec![banner & !(MIB - 1)];
    for (start, size) in ranges {
        windows.push(start);
        windows.push(start + size - MIB);
    }
    let mut ours = vec![0u8; MIB as usize];
    let mut theirs = vec![0u8; MIB as usize];
    for w in windows {
        dump.memory
            .read_at(w, &mut ours)
            .unwrap_or_else(|e| panic!("{}: read {w:#x}: {e}", output.display()));
        ram.read_exact_at(&mut theirs, w).unwrap();
        assert!(
            ours == theirs,
            "{}: RAM at {w:#x} differs from {}/ram.raw",
            output.display(),
            guest.display()
        );
    }
}

fn sha256_file(p: &Path) -> Vec<u8> {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_vec()
}

/// SHA-256 of all RAM of a dump read through our reader, for a guest with one RAM range
/// starting at 0 (so it equals the hash of the pmemsave image).
fn sha256_ram(p: &Path) -> Vec<u8> {
    let dump = dumpconv_formats::open(p, &Default::default()).unwrap();
    let r = dump.memory.ranges()[0];
    assert_eq!(r.start, 0);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = 0;
    while at < r.end {
        let n = (r.end - at).min(buf.len() as u64) as usize;
        dump.memory.read_at(at, &mut buf[..n]).unwrap();
        h.update(&buf[..n]);
        at += n as u64;
    }
    h.finalize().to_vec()
}

/// At least 8 real-guest-sized inputs (512 MiB of RAM each) and one corrupt one, in a
/// manifest mixing output formats: the good ones succeed and hold the guest's RAM, the
/// corrupt one is reported; a rerun skips what is finished and retries the failure;
/// a deleted and a truncated output are redone, and only they.
#[test]
fn real_guest_batch_with_a_corrupt_input_resumes() {
    let names = ["x86_64-4level", "i386-pae", "i386-2level", "x86_64-kaslr"];
    let mut guests = Vec::new();
    for n in names {
        match dumpconv_tests::guests::guest(n) {
            Some(g) => guests.push((n, g.dir)),
            None => return,
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    let out = tmp.path().join("out");
    std::fs::create_dir(&inp).unwrap();
    // Symlinks under new names: no 512 MiB copies.
    for (n, d) in &guests {
        std::os::unix::fs::symlink(d.join("phys.elf"), inp.join(format!("{n}-phys.elf"))).unwrap();
        std::os::unix::fs::symlink(
            d.join("kdump-zlib.flat"),
            inp.join(format!("{n}-kdump.flat")),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(
        guests[0].1.join("ram.raw"),
        inp.join("x86_64-4level-ram.raw"),
    )
    .unwrap();
    // A real ELF cut after its headers: its PT_LOAD runs past the end of the file.
    let mut head = vec![0u8; 64 << 10];
    std::fs::File::open(guests[2].1.join("phys.elf"))
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    std::fs::write(inp.join("corrupt.elf"), &head).unwrap();

    let manifest = inp.join("manifest.csv");
    std::fs::write(
        &manifest,
        "input,output,options\n\
         x86_64-4level-phys.elf,,\n\
         x86_64-4level-kdump.flat,,format=kdump compress=zstd\n\
         i386-pae-phys.elf,,format=kdump\n\
         i386-pae-kdump.flat,,format=raw\n\
         corrupt.elf,,\n\
         i386-2level-phys.elf,,format=raw\n\
         i386-2level-kdump.flat,,\n\
         x86_64-kaslr-phys.elf,kaslr-paging.elf,paging\n\
         x86_64-kaslr-kdump.flat,,format=kdump compress=snappy\n\
         x86_64-4level-ram.raw,,format=elf\n",
    )
    .unwrap();
    // (input name, output name, output format, guest)
    let expect: Vec<(&str, &str, &str, &Path)> = vec![
        (
            "x86_64-4level-phys.elf",
            "x86_64-4level-phys.elf",
            "elf",
            &guests[0].1,
        ),
        (
            "x86_64-4level-kdump.flat",
            "x86_64-4level-kdump.kdump",
            "kdump",
            &guests[0].1,
        ),
        (
            "i386-pae-phys.elf",
            "i386-pae-phys.kdump",
            "kdump",
            &guests[1].1,
        ),
        (
            "i386-pae-kdump.flat",
            "i386-pae-kdump.raw",
            "raw",
            &guests[1].1,
        ),
        (
            "i386-2level-phys.elf",
            "i386-2level-phys.raw",
            "raw",
            &guests[2].1,
        ),
        (
            "i386-2level-kdump.flat",
            "i386-2level-kdump.elf",
            "elf",
            &guests[2].1,
        ),
        (
            "x86_64-kaslr-phys.elf",
            "kaslr-paging.elf",
            "elf",
            &guests[3].1,
        ),
        (
            "x86_64-kaslr-kdump.flat",
            "x86_64-kaslr-kdump.kdump",
            "kdump",
            &guests[3].1,
        ),
        (
            "x86_64-4level-ram.raw",
            "x86_64-4level-ram.elf",
            "elf",
            &guests[0].1,
        ),
    ];
    let rep = tmp.path().join("report.json");
    let m = manifest.to_str().unwrap();
    let o = out.to_str().unwrap();
    let r = rep.to_str().unwrap();

    // First run, with --verify.
    let t = std::time::Instant::now();
    let run = dumpconv(&[
        "batch",
        m,
        "--out-dir",
        o,
        "--report",
        r,
        "--verify",
        "-j",
        "2",
    ]);
    eprintln!(
        "first run (10 jobs, --verify): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let first = report(&rep);
    assert_eq!(first["counts"]["total"], 10);
    assert_eq!(first["counts"]["ok"], 9, "{first:#}");
    assert_eq!(first["counts"]["failed"], 1);
    let bad = job(&first, "corrupt.elf");
    assert_eq!(bad["status"], "failed");
    let err = bad["error"].as_str().unwrap();
    assert!(
        err.contains(&inp.join("corrupt.elf").display().to_string()),
        "{err}"
    );
    assert!(err.contains("past the end of the file"), "{err}");
    assert!(!out.join("corrupt.elf").exists());
    // The table names the failure too.
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("corrupt.elf") && stdout.contains("failed"),
        "{stdout}"
    );
    for (input, output, format, guest) in &expect {
        let j = job(&first, input);
        assert_eq!(j["status"], "ok", "{j:#}");
        assert_eq!(j["verify"], "verified", "{j:#}");
        assert_eq!(j["format"], *format);
        assert_eq!(Path::new(j["output"].as_str().unwrap()), out.join(output));
        assert!(j["bytes_out"].as_u64().unwrap() > 0);
        check_windows(&out.join(output), format, guest);
    }
    // One output in full: all of RAM equals the pmemsave image.
    assert_eq!(
        sha256_ram(&out.join("x86_64-4level-kdump.kdump")),
        sha256_file(&guests[0].1.join("ram.raw")),
        "x86_64-4level-kdump.kdump: RAM differs from ram.raw"
    );

    // Rerun: every finished job is skipped, the failed one is tried again.
    let before: Vec<_> = expect.iter().map(|e| mtime(&out.join(e.1))).collect();
    let run = dumpconv(&["batch", m, "--out-dir", o, "--report", r, "-q"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let second = report(&rep);
    for (name, status) in statuses(&second) {
        let want = if name == "corrupt.elf" {
            "failed"
        } else {
            "skipped"
        };
        assert_eq!(status, want, "{name}");
    }
    let after: Vec<_> = expect.iter().map(|e| mtime(&out.join(e.1))).collect();
    assert_eq!(before, after, "a skipped output was rewritten");
    let journal = std::fs::read_to_string(out.join(".dumpconv-journal.jsonl")).unwrap();
    let corrupt_starts = journal
        .lines()
        .filter(|l| l.contains("\"start\"") && l.contains("\"output\":\"corrupt.elf\""))
        .count();
    assert_eq!(
        corrupt_starts, 2,
        "the failed job was not retried:\n{journal}"
    );

    // Delete one output, truncate another: exactly those two are redone.
    std::fs::remove_file(out.join("i386-pae-phys.kdump")).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(out.join("i386-2level-kdump.elf"))
        .unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    drop(f);
    let run = dumpconv(&["batch", m, "--out-dir", o, "--report", r, "-q"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let third = report(&rep);
    for (name, status) in statuses(&third) {
        let want = match name.as_str() {
            "corrupt.elf" => "failed",
            "i386-pae-phys.elf" | "i386-2level-kdump.flat" => "ok",
            _ => "skipped",
        };
        assert_eq!(status, want, "{name}");
    }
    check_windows(&out.join("i386-pae-phys.kdump"), "kdump", &guests[1].1);
    check_windows(&out.join("i386-2level-kdump.elf"), "elf", &guests[2].1);

    // Once the corrupt input is gone from the manifest, the batch succeeds: exit 0.
    let text_m = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("corrupt.elf,,\n", "");
    std::fs::write(&manifest, text_m).unwrap();
    let run = dumpconv(&["batch", m, "--out-dir", o, "-q"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
}

/// Inputs made from the bundled real QEMU sample, under several names.
fn sample_inputs(dir: &Path, n: usize) -> Vec<PathBuf> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/tiny-x86_64.elf");
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("dump-{i:02}.elf"));
            std::fs::hard_link(&sample, &p)
                .or_else(|_| std::fs::copy(&sample, &p).map(drop))
                .unwrap();
            p
        })
        .collect()
}

/// `--list` lines: (index, action, input, output).
fn list(args: &[&str]) -> Vec<(usize, String, String, String)> {
    let o = dumpconv(args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "{l}");
            (f[0].parse().unwrap(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

#[test]
fn shards_are_disjoint_and_cover_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    sample_inputs(&inp, 7);
    let out = tmp.path().join("out");
    let (i, o) = (inp.to_str().unwrap(), out.to_str().unwrap());
    let all = list(&["batch", i, "--out-dir", o, "--list"]);
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|j| j.1 == "run"));
    let mut union = BTreeSet::new();
    let mut parts = Vec::new();
    for k in 0..3 {
        let shard = format!("{k}/3");
        let part = list(&["batch", i, "--out-dir", o, "--list", "--shard", &shard]);
        for j in &part {
            assert!(union.insert(j.clone()), "{j:?} is in two shards");
        }
        parts.push(part);
    }
    assert_eq!(union, all.iter().cloned().collect::<BTreeSet<_>>());

    // Real sharded runs into one directory: each writes its own shard's outputs and
    // journal; together they finish the batch, which an unsharded rerun then skips.
    for k in [1, 0, 2] {
        let shard = format!("{k}/3");
        let run = dumpconv(&["batch", i, "--out-dir", o, "--shard", &shard, "-q"]);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
        for j in &parts[k] {
            assert!(Path::new(&j.3).exists(), "{shard}: {} missing", j.3);
        }
        assert!(out
            .join(format!(".dumpconv-journal.shard-{k}-of-3.jsonl"))
            .exists());
        if k == 1 {
            for j in parts[0].iter().chain(&parts[2]) {
                assert!(!Path::new(&j.3).exists(), "shard 1/3 wrote {}", j.3);
            }
        }
    }
    let again = list(&["batch", i, "--out-dir", o, "--list"]);
    assert!(again.iter().all(|j| j.1 == "skip"), "{again:?}");
}

#[test]
fn verify_reports_a_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    sample_inputs(&inp, 3);
    let out = tmp.path().join("out");
    let rep = tmp.path().join("report.json");
    let run = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args([
            "batch",
            inp.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ])
        .args(["--verify", "-q", "--report", rep.to_str().unwrap()])
        .env("DUMPCONV_TEST_CORRUPT_BEFORE_VERIFY", "dump-01")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    let r = report(&rep);
    let bad = job(&r, "dump-01.elf");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["verify"], "mismatch");
    assert!(
        bad["error"].as_str().unwrap().contains("differs"),
        "{bad:#}"
    );
    assert!(
        !out.join("dump-01.elf").exists(),
        "a mismatching output was left"
    );
    for good in ["dump-00.elf", "dump-02.elf"] {
        assert_eq!(job(&r, good)["verify"], "verified");
    }
    // Without the hook the rerun redoes only the failed job, and it verifies.
    let run = dumpconv(&[
        "batch",
        inp.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--verify",
        "-q",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let r = report(&rep);
    assert_eq!(job(&r, "dump-01.elf")["verify"], "verified");
    assert_eq!(job(&r, "dump-00.elf")["status"], "skipped");
}

#[test]
fn usage_errors_exit_2_and_name_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    sample_inputs(&inp, 2);
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let m = inp.join("m.jsonl");
    std::fs::write(
        &m,
        "{\"input\": \"dump-00.elf\"}\n\n{\"input\": \"dump-01.elf\", \"options\": {\"compres\": \"zstd\"}}\n",
    )
    .unwrap();
    let run = dumpconv(&["batch", m.to_str().unwrap(), "--out-dir", o]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("m.jsonl:3: unknown option \"compres\""),
        "{err}"
    );

    // Two jobs that would write one output.
    std::fs::write(&m, "{\"input\": \"dump-00.elf\", \"output\": \"x.elf\"}\n{\"input\": \"dump-01.elf\", \"output\": \"x.elf\"}\n").unwrap();
    let run = dumpconv(&["batch", m.to_str().unwrap(), "--out-dir", o]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("both write"),
        "{}",
        text(&run)
    );

    let run = dumpconv(&[
        "batch",
        inp.to_str().unwrap(),
        "--out-dir",
        o,
        "--shard",
        "3/3",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(!out.exists(), "a usage error created the out dir");
}

#[test]
fn a_file_not_made_by_the_batch_is_kept_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    sample_inputs(&inp, 2);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("dump-00.elf"), b"precious").unwrap();
    let rep = tmp.path().join("r.json");
    let args = [
        "batch",
        inp.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "-q",
        "--report",
        rep.to_str().unwrap(),
    ];
    let run = dumpconv(&args);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert_eq!(std::fs::read(out.join("dump-00.elf")).unwrap(), b"precious");
    let r = report(&rep);
    assert!(job(&r, "dump-00.elf")["error"]
        .as_str()
        .unwrap()
        .contains("--force"));
    assert_eq!(job(&r, "dump-01.elf")["status"], "ok");
    let mut forced = args.to_vec();
    forced.push("--force");
    let run = dumpconv(&forced);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_ne!(std::fs::read(out.join("dump-00.elf")).unwrap(), b"precious");
}

/// The documented examples work: the Slurm script as a two-task array (run here
/// without Slurm, with the variables Slurm sets), and the JSON-lines manifest plans the
/// same jobs as the CSV one.
#[test]
fn the_examples_run() {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/batch");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for k in ["1", "0"] {
        let run = Command::new("bash")
            .arg(ex.join("slurm.sh"))
            .env("DUMPCONV", env!("CARGO_BIN_EXE_dumpconv"))
            .env("OUT", &out)
            .env("SLURM_ARRAY_TASK_ID", k)
            .env("SLURM_ARRAY_TASK_COUNT", "2")
            .env("SLURM_CPUS_PER_TASK", "2")
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(0), "task {k}: {}", text(&run));
        let r = report(&out.join(format!("report-{k}-of-2.json")));
        assert_eq!(r["shard"], format!("{k}/2"));
        for j in r["jobs"].as_array().unwrap() {
            assert_eq!(j["status"], "ok", "{j:#}");
            assert_eq!(j["verify"], "verified", "{j:#}");
        }
    }
    for name in [
        "tiny-x86_64.elf",
        "tiny.kdump",
        "tiny-gdb.elf",
        "tiny.raw",
        "tiny-low.elf",
    ] {
        assert!(out.join(name).exists(), "{name} missing");
    }
    let o = out.to_str().unwrap();
    let csv = list(&[
        "batch",
        ex.join("manifest.csv").to_str().unwrap(),
        "--out-dir",
        o,
        "--list",
    ]);
    let jsonl = list(&[
        "batch",
        ex.join("manifest.jsonl").to_str().unwrap(),
        "--out-dir",
        o,
        "--list",
    ]);
    assert_eq!(csv.len(), 5);
    assert!(csv.iter().all(|j| j.1 == "skip"), "{csv:?}");
    assert_eq!(csv, jsonl);
}

/// BLAKE3 of a file as `b3sum` prints it; the blake3 crate's one-shot hash of the
/// file's bytes when `b3sum` is not installed (both independent of the streaming
/// digest the batch takes while writing).
fn b3sum(p: &Path) -> String {
    if let Ok(o) = Command::new("b3sum").arg("--no-names").arg(p).output() {
        if o.status.success() {
            return String::from_utf8(o.stdout).unwrap().trim().to_string();
        }
    }
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

/// Every `done` line of the journal in `out`: version 2, and its `blake3` is the
/// output file's.
fn check_journal_hashes(out: &Path) {
    let text = std::fs::read_to_string(out.join(".dumpconv-journal.jsonl")).unwrap();
    let mut done = 0;
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).unwrap();
        assert_eq!(rec["v"], 2, "{line}");
        assert!(rec.get("sha256").is_none(), "{line}");
        if rec["event"] == "done" {
            done += 1;
            let file = out.join(rec["output"].as_str().unwrap());
            assert_eq!(rec["blake3"].as_str().unwrap(), b3sum(&file), "{line}");
        }
    }
    assert!(done > 0, "no done line in {text}");
}

/// The report's `blake3` of every job is `b3sum` of its output: for raw with holes and
/// ELF (hashed while written), zstd/lz4-compressed outputs (hashed after the
/// compressor) and kdump (read back, its writer patches its header).
#[test]
fn report_and_journal_hashes_are_b3sum_of_the_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    sample_inputs(&inp, 2);
    for (format, extra, ext) in [
        ("raw", None, "raw"),
        ("elf", None, "elf"),
        ("kdump", Some("zstd"), "kdump"),
        ("elf", Some("lz4"), "elf.lz4"),
    ] {
        let out = tmp.path().join(format!("out-{format}-{ext}"));
        let rep = tmp.path().join(format!("report-{format}-{ext}.json"));
        let mut args = vec![
            "batch",
            inp.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--format",
            format,
            "-q",
            "--report",
            rep.to_str().unwrap(),
        ];
        if let Some(c) = extra {
            args.extend(["--compress", c]);
        }
        let run = dumpconv(&args);
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
        let r = report(&rep);
        for i in 0..2 {
            let j = job(&r, &format!("dump-{i:02}.elf"));
            let file = out.join(format!("dump-{i:02}.{ext}"));
            assert_eq!(j["output"].as_str().unwrap(), file.to_str().unwrap());
            assert_eq!(
                j["blake3"].as_str().unwrap(),
                b3sum(&file),
                "{format} {j:#}"
            );
        }
        check_journal_hashes(&out);
        // --rehash recomputes the same digests: everything is skipped.
        args.push("--rehash");
        let again = dumpconv(&args);
        assert_eq!(again.status.code(), Some(0), "{}", text(&again));
        assert!(
            statuses(&report(&rep)).iter().all(|s| s.1 == "skipped"),
            "{format}: {:#}",
            report(&rep)
        );
    }
}

/// `--format raw --compress zstd` names outputs `.raw.zst` as `convert` requires, the
/// files are zstd streams of exactly the plain raw conversion, and `--verify` reads
/// them back.
#[test]
fn whole_output_compression_is_named_and_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    let inputs = sample_inputs(&inp, 2);
    let out = tmp.path().join("out");
    let rep = tmp.path().join("report.json");
    let run = dumpconv(&[
        "batch",
        inp.to_str().unwrap(),
        "--out-dir",
        out.to_str().unwrap(),
        "--format",
        "raw",
        "--compress",
        "zstd",
        "--verify",
        "-q",
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let r = report(&rep);
    let plain = tmp.path().join("plain.raw");
    let conv = dumpconv(&[
        inputs[0].to_str().unwrap(),
        "-o",
        plain.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(conv.status.code(), Some(0), "{}", text(&conv));
    let plain = std::fs::read(&plain).unwrap();
    for i in 0..2 {
        let name = format!("dump-{i:02}.raw.zst");
        let file = out.join(&name);
        assert!(
            file.exists(),
            "{name} missing: {:?}",
            std::fs::read_dir(&out)
        );
        assert!(!out.join(format!("dump-{i:02}.raw")).exists());
        let j = job(&r, &format!("dump-{i:02}.elf"));
        assert_eq!(j["status"], "ok", "{j:#}");
        assert_eq!(j["verify"], "verified", "{j:#}");
        assert_eq!(j["blake3"].as_str().unwrap(), b3sum(&file));
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "{name}: not zstd");
        let raw = zstd::stream::decode_all(&bytes[..]).unwrap();
        assert!(raw == plain, "{name}: not the raw conversion");
    }
    // The same name `convert` gives to its own output passes its name check.
    let conv = dumpconv(&[
        inputs[0].to_str().unwrap(),
        "-o",
        tmp.path().join("c.raw.zst").to_str().unwrap(),
        "--compress",
        "zstd",
        "-q",
    ]);
    assert_eq!(conv.status.code(), Some(0), "{}", text(&conv));

    // A corrupted compressed output fails --verify (zstd's checksum, or the RAM digest).
    let out2 = tmp.path().join("out2");
    let bad = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args([
            "batch",
            inp.to_str().unwrap(),
            "--out-dir",
            out2.to_str().unwrap(),
        ])
        .args(["--format", "raw", "--compress", "zstd", "--verify", "-q"])
        .args(["--report", rep.to_str().unwrap()])
        .env("DUMPCONV_TEST_CORRUPT_BEFORE_VERIFY", "dump-01")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    let r = report(&rep);
    assert_eq!(job(&r, "dump-01.elf")["status"], "failed");
    assert!(!out2.join("dump-01.raw.zst").exists());
    assert_eq!(job(&r, "dump-00.elf")["verify"], "verified");
}

/// Wait until `journal` has a `start` line for an output whose name contains `name`:
/// the run holds its journal lock from before that line until it exits. Fails if `run`
/// exits first.
fn wait_for_start(run: &mut std::process::Child, journal: &Path, name: &str) {
    loop {
        let text = std::fs::read_to_string(journal).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("\"event\":\"start\"") && l.contains(name))
        {
            return;
        }
        if let Some(status) = run.try_wait().unwrap() {
            panic!("the first run exited ({status}) before starting {name}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A named pipe as an input: its job blocks in `open` until the test writes the dump
/// into it, so the first run provably still runs (and holds its journal lock) while the
/// second one is started.
#[test]
fn a_second_run_of_the_same_shard_into_one_dir_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    let inputs = sample_inputs(&inp, 2);
    let pipe = inp.join("pipe.elf");
    let mk = Command::new("mkfifo").arg(&pipe).output().unwrap();
    assert!(mk.status.success(), "mkfifo: {}", text(&mk));
    let sample = std::fs::read(&inputs[0]).unwrap();
    let out = tmp.path().join("out");
    let rep = tmp.path().join("r.json");
    // Plan: 0 pipe, 1 dump-00, 2 dump-01; shard 0/2 holds the pipe and dump-01.
    let args = |shard: &str| -> Vec<String> {
        [
            "batch",
            pipe.to_str().unwrap(),
            inputs[0].to_str().unwrap(),
            inputs[1].to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--jobs",
            "1",
            "-q",
            "--shard",
            shard,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut first = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args("0/2"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let journal = out.join(".dumpconv-journal.shard-0-of-2.jsonl");
    wait_for_start(&mut first, &journal, "pipe.elf");

    let a: Vec<String> = args("0/2");
    let second = dumpconv_within(&a.iter().map(String::as_str).collect::<Vec<_>>(), 120);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "{}: another dumpconv batch is running there",
            out.display()
        )),
        "{err}"
    );
    // It failed without waiting: the first is still blocked on the pipe.
    assert!(first.try_wait().unwrap().is_none());

    // Another shard locks another journal and runs alongside.
    let a: Vec<String> = args("1/2");
    let other = dumpconv(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(other.status.code(), Some(0), "{}", text(&other));
    assert!(out.join("dump-00.elf").exists());
    assert!(first.try_wait().unwrap().is_none());

    // Release the first run: it converts the pipe's dump and the rest of its shard.
    std::fs::write(&pipe, &sample).unwrap();
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let lines = std::fs::read_to_string(&journal).unwrap();
    let starts = |name: &str| {
        lines
            .lines()
            .filter(|l| l.contains("\"event\":\"start\"") && l.contains(name))
            .count()
    };
    assert_eq!(starts("pipe.elf"), 1, "{lines}");
    assert_eq!(starts("dump-01.elf"), 1, "{lines}");

    // The lock is gone with the first run: a rerun of the shard runs (the pipe's job
    // again, a pipe has no size or mtime to compare; dump-01 is skipped).
    let writer = {
        let pipe = pipe.clone();
        std::thread::spawn(move || std::fs::write(&pipe, &sample).unwrap())
    };
    let mut a: Vec<String> = args("0/2");
    a.extend(["--report".to_string(), rep.to_str().unwrap().to_string()]);
    let rerun = dumpconv(&a.iter().map(String::as_str).collect::<Vec<_>>());
    writer.join().unwrap();
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    let r = report(&rep);
    assert_eq!(job(&r, "pipe.elf")["status"], "ok");
    assert_eq!(job(&r, "dump-01.elf")["status"], "skipped");
}

/// The journal's options hash covers the contents of files named by options: editing
/// the VMCOREINFO file of one manifest line redoes that job only.
#[test]
fn editing_a_file_named_by_an_option_redoes_its_job() {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("in");
    sample_inputs(&inp, 3);
    let vmci = inp.join("vmcoreinfo.txt");
    std::fs::write(&vmci, "OSRELEASE=6.1.0-first\nPAGESIZE=4096\n").unwrap();
    let m = inp.join("m.csv");
    std::fs::write(
        &m,
        "dump-00.elf,,\ndump-01.elf,,vmcoreinfo=vmcoreinfo.txt\ndump-02.elf,,\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let rep = tmp.path().join("r.json");
    let run = || {
        let o = dumpconv(&[
            "batch",
            m.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "-q",
            "--report",
            rep.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let mut s = statuses(&report(&rep));
        s.sort();
        s
    };
    let st = |a: &str, b: &str, c: &str| {
        vec![
            ("dump-00.elf".to_string(), a.to_string()),
            ("dump-01.elf".to_string(), b.to_string()),
            ("dump-02.elf".to_string(), c.to_string()),
        ]
    };
    assert_eq!(run(), st("ok", "ok", "ok"));
    let contains = |p: &Path, needle: &[u8]| {
        std::fs::read(p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    };
    assert!(contains(&out.join("dump-01.elf"), b"OSRELEASE=6.1.0-first"));
    assert_eq!(run(), st("skipped", "skipped", "skipped"));
    std::fs::write(&vmci, "OSRELEASE=6.1.0-second\nPAGESIZE=4096\n").unwrap();
    assert_eq!(run(), st("skipped", "ok", "skipped"));
    assert!(contains(
        &out.join("dump-01.elf"),
        b"OSRELEASE=6.1.0-second"
    ));
    assert_eq!(run(), st("skipped", "skipped", "skipped"));
}
