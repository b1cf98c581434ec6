//! One option vocabulary (issue #14): every option of `dumpconv::schema` is a flag of
//! `convert` and `batch` and a manifest key; writer options a writer does not take fail
//! the same way in `convert`, `batch` and a manifest; `batch` chooses the output format
//! from a name as `convert` does; `--elf-class` reaches the ELF writer; completions and
//! man pages come from the same definitions; kdump split sets convert from the command
//! line and from manifests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod outputs_util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dumpconv::schema::{Scope, OPTIONS};
use outputs_util::*;

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        .env_remove("DUMPCONV_PLUGIN_PATH")
        .env("XDG_DATA_HOME", "/nonexistent")
        .output()
        .unwrap()
}

/// Same length and bytes.
fn assert_files_equal(a: &Path, b: &Path) {
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let len = fa.metadata().unwrap().len();
    assert_eq!(
        len,
        fb.metadata().unwrap().len(),
        "{} vs {}",
        a.display(),
        b.display()
    );
    let what = format!("{} vs {}", a.display(), b.display());
    assert_same_bytes(&what, &fa, 0, &fb, 0, len);
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_option_defined_once_is_a_flag_of_convert_and_batch_and_a_manifest_key() {
    let convert = stdout(&run(&[&"convert", &"--help"]));
    let batch = stdout(&run(&[&"batch", &"--help"]));
    let info = stdout(&run(&[&"info", &"--help"]));
    let tmp = tempfile::tempdir().unwrap();
    let input = samples().join("tiny-x86_64.elf");
    for d in OPTIONS {
        let flag = format!("--{} ", d.name);
        assert!(convert.contains(&flag), "convert --help lacks {flag}");
        assert!(batch.contains(&flag), "batch --help lacks {flag}");
        // Input options are every command's that opens an input.
        if d.scope == Scope::Input {
            assert!(info.contains(&flag), "info --help lacks {flag}");
        }
        // The manifest takes it (a writer option with a format that takes it).
        let mut words = format!("{}={}", d.name, d.sample_value());
        if let Some(f) = d.formats.first() {
            if d.name != "format" {
                words.push_str(&format!(" format={f}"));
            }
        }
        let m = tmp.path().join(format!("{}.csv", d.name));
        std::fs::write(&m, format!("{},,{words}\n", input.display())).unwrap();
        let o = run(&[&"batch", &m, &"--out-dir", &tmp.path().join("o"), &"--list"]);
        assert_eq!(o.status.code(), Some(0), "manifest {words}: {}", stderr(&o));
    }
    // And a key that is no option is refused, naming the line.
    let m = tmp.path().join("bad.csv");
    std::fs::write(&m, format!("{},,elf-klass=32\n", input.display())).unwrap();
    let o = run(&[&"batch", &m, &"--out-dir", &tmp.path().join("o"), &"--list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad.csv:1: unknown option \"elf-klass\""),
        "{}",
        stderr(&o)
    );
    // The batch help names every built-in format (it once said "elf, kdump, raw").
    for f in ["elf", "kdump", "raw", "lime", "avml"] {
        assert!(batch.contains(f), "batch --help lacks {f}");
    }
}

#[test]
fn an_unknown_writer_option_fails_the_same_way_in_convert_batch_and_a_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = samples().join("tiny-x86_64.elf");
    let out_dir = d.join("out");
    for (format, flag, value, says) in [
        (
            "raw",
            "--exclude-zero",
            None,
            "raw output takes no option \"exclude-zero\" (it takes none)",
        ),
        (
            "kdump",
            "--elf-class",
            Some("64"),
            "kdump output takes no option \"elf-class\" (it takes compress, level, threads, \
             exclude-zero, keep-partial)",
        ),
        (
            "avml",
            "--compress",
            Some("zstd"),
            "avml output takes no option \"compress\" (it takes none): its blocks are always \
             snappy-compressed",
        ),
        (
            "lime",
            "--keep-partial",
            None,
            "lime output takes no option \"keep-partial\"",
        ),
    ] {
        let out = d.join(format!("x.{format}"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"-q", &input, &"-o", &out, &flag];
        if let Some(v) = &value {
            args.push(v);
        }
        let c = run(&args);
        assert_eq!(c.status.code(), Some(2), "convert {flag}: {}", stderr(&c));
        assert!(stderr(&c).contains(says), "convert {flag}: {}", stderr(&c));
        assert!(!out.exists());

        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"batch",
            &input,
            &"--out-dir",
            &out_dir,
            &"--format",
            &format,
            &flag,
        ];
        if let Some(v) = &value {
            args.push(v);
        }
        let b = run(&args);
        assert_eq!(b.status.code(), Some(2), "batch {flag}: {}", stderr(&b));
        assert!(stderr(&b).contains(says), "batch {flag}: {}", stderr(&b));

        let key = flag.trim_start_matches('-');
        let words = match value {
            Some(v) => format!("format={format} {key}={v}"),
            None => format!("format={format} {key}"),
        };
        let m = d.join(format!("{format}.csv"));
        std::fs::write(&m, format!("{},,{words}\n", input.display())).unwrap();
        let b = run(&[&"batch", &m, &"--out-dir", &out_dir]);
        assert_eq!(b.status.code(), Some(2), "manifest {words}: {}", stderr(&b));
        let want = format!("{}:1: {says}", m.display());
        assert!(stderr(&b).contains(&want), "{want}: {}", stderr(&b));
    }
    assert!(
        !out_dir.exists()
            || std::fs::read_dir(&out_dir).unwrap().all(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
    );
}

#[test]
fn batch_refuses_an_unknown_output_extension_as_convert_does() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = samples().join("tiny-x86_64.elf");
    let says = "cannot tell the output format from the name; give --format";
    let c = run(&[&"-q", &input, &"-o", &d.join("x.foo")]);
    assert_eq!(c.status.code(), Some(2));
    assert!(stderr(&c).contains(says), "{}", stderr(&c));
    let m = d.join("m.csv");
    std::fs::write(&m, format!("{},x.foo,\n", input.display())).unwrap();
    let b = run(&[&"batch", &m, &"--out-dir", &d.join("out"), &"--list"]);
    assert_eq!(b.status.code(), Some(2), "{}", stderr(&b));
    assert!(stderr(&b).contains(says), "{}", stderr(&b));
    assert!(stderr(&b).contains("m.csv:1:"), "{}", stderr(&b));
    // A format for it makes it fine, in both.
    std::fs::write(&m, format!("{},x.foo,format=raw\n", input.display())).unwrap();
    let b = run(&[&"batch", &m, &"--out-dir", &d.join("out"), &"--list"]);
    assert_eq!(b.status.code(), Some(0), "{}", stderr(&b));
}

/// EI_CLASS of an ELF file: 1 = ELF32, 2 = ELF64.
fn elf_class(p: &Path) -> u8 {
    std::fs::read(p).unwrap()[4]
}

#[test]
fn elf_class_is_reachable_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = samples().join("tiny-x86_64.elf");
    let raw = d.join("t.raw");
    // The sample's RAM below 16 MiB (its whole raw image reaches 4 GiB, too far for ELF32).
    assert!(run(&[&"-q", &input, &"--length", &"16M", &"-o", &raw])
        .status
        .success());
    // A 32-bit x86 image below 4 GiB: ELF64 unless ELF32 is asked for.
    let auto = d.join("auto.elf");
    let o = run(&[&"-q", &raw, &"--arch", &"i386", &"-o", &auto]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ELF64 (EM_386) by default for 32-bit x86 too (docs/readers.md#elf-class).
    assert_eq!(elf_class(&auto), 2);
    let e32 = d.join("32.elf");
    let o = run(&[
        &"-q",
        &raw,
        &"--arch",
        &"i386",
        &"--elf-class",
        &"32",
        &"-o",
        &e32,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(elf_class(&e32), 1);
    let e64 = d.join("64.elf");
    let o = run(&[
        &"-q",
        &raw,
        &"--arch",
        &"i386",
        &"--elf-class",
        &"64",
        &"-o",
        &e64,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(elf_class(&e64), 2);
    // x86-64 cannot be ELF32; the writer says so.
    let o = run(&[
        &"-q",
        &input,
        &"--elf-class",
        &"32",
        &"-o",
        &d.join("no.elf"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("elf-class=32 is only for 32-bit dumps"),
        "{}",
        stderr(&o)
    );
    // A bad value is refused by the flag's own check.
    let o = run(&[
        &"-q",
        &input,
        &"--elf-class",
        &"16",
        &"-o",
        &d.join("no.elf"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected auto, 32, 64"),
        "{}",
        stderr(&o)
    );
    // And from a manifest.
    let m = d.join("m.csv");
    std::fs::write(
        &m,
        format!("{},m64.elf,arch=i386 elf-class=64\n", raw.display()),
    )
    .unwrap();
    let out = d.join("out");
    let o = run(&[&"batch", &m, &"--out-dir", &out, &"-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(elf_class(&out.join("m64.elf")), 2);
}

#[test]
fn completions_and_man_pages_come_from_the_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&[&"completions", &shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        for d in OPTIONS {
            assert!(text.contains(d.name), "{shell} completion lacks {}", d.name);
        }
        assert!(
            text.contains("convert") && text.contains("batch"),
            "{shell}"
        );
    }
    let o = run(&[&"man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(".ie"), "{}", stdout(&o));
    assert!(stdout(&o).contains(".TH dumpconv 1"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let o = run(&[&"man", &"--dir", &dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    let convert = std::fs::read_to_string(dir.join("dumpconv-convert.1")).unwrap();
    for d in OPTIONS {
        // roff escapes a dash as \-.
        let flag = format!("\\-\\-{}", d.name.replace('-', "\\-"));
        assert!(convert.contains(&flag), "dumpconv-convert.1 lacks {flag}");
    }
    assert!(dir.join("dumpconv.1").is_file());
    assert!(dir.join("dumpconv-batch.1").is_file());
}

/// The install commands README.md gives for completions and man pages run as written.
#[test]
fn the_readme_install_commands_work() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("mkdir -p ~/.local/share/bash-completion"))
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert!(
        block.iter().any(|l| l.starts_with("dumpconv man")),
        "README.md: no install block ({block:?})"
    );
    let home = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_dumpconv")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args(["-euc", &block.join("\n")])
        .env("HOME", home.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let h = home.path();
    for f in [
        ".local/share/bash-completion/completions/dumpconv",
        ".zfunc/_dumpconv",
        ".config/fish/completions/dumpconv.fish",
        ".local/share/man/man1/dumpconv.1",
        ".local/share/man/man1/dumpconv-convert.1",
        ".local/share/man/man1/dumpconv-batch.1",
    ] {
        let len = std::fs::metadata(h.join(f)).map_or(0, |m| m.len());
        assert!(len > 100, "{f}: {len} bytes");
    }
}

/// makedumpfile's `--split` output of a real guest converts through the command line,
/// parts in any order, to the bytes of the unsplit dump's conversion; so does a manifest
/// line naming the parts. A missing, repeated or foreign part is an error.
#[test]
fn makedumpfile_split_sets_convert_like_the_unsplit_dump() {
    let Some(g) = dumpconv_tests::guests::guest("x86_64-4level") else {
        return;
    };
    let Some(mdf) = tool("makedumpfile") else {
        return;
    };
    let tmp = scratch();
    let d = tmp.path();
    // makedumpfile 1.7.2 rejects QEMU 7.2's ELF but takes dumpconv's.
    let elf = d.join("in.elf");
    let o = run(&[&"-q", &g.file("phys.elf"), &"-o", &elf]);
    assert!(o.status.success(), "{}", stderr(&o));
    let parts: Vec<PathBuf> = ["s1", "s2", "s3"].iter().map(|p| d.join(p)).collect();
    let whole = d.join("whole.kdump");
    // A split block of 1 MiB spreads this small guest over the three files (the
    // default block holds all of it, leaving two parts empty).
    let o = Command::new(&mdf)
        .args(["--split", "--splitblock-size", "1024", "-d", "0"])
        .arg(&elf)
        .args(&parts)
        .output()
        .unwrap();
    assert!(o.status.success(), "makedumpfile --split: {}", stderr(&o));
    for p in &parts {
        assert!(
            std::fs::metadata(p).unwrap().len() > 64 << 20,
            "{}: makedumpfile put (almost) nothing in this part",
            p.display()
        );
    }
    let o = Command::new(&mdf)
        .args(["-d", "0"])
        .arg(&elf)
        .arg(&whole)
        .output()
        .unwrap();
    assert!(o.status.success(), "makedumpfile: {}", stderr(&o));

    let want = d.join("whole.elf");
    let o = run(&[&"-q", &whole, &"-o", &want]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = d.join("split.elf");
    let o = run(&[&"-q", &parts[2], &parts[0], &parts[1], &"-o", &got]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_files_equal(&got, &want);

    // A manifest line names the parts with `|`; --verify reads them all back.
    let m = d.join("m.csv");
    std::fs::write(
        &m,
        "s1|s2|s3,from-manifest.elf,\ns2|s3|s1,from-manifest.kdump,format=kdump\n",
    )
    .unwrap();
    let out = d.join("out");
    let o = run(&[&"batch", &m, &"--out-dir", &out, &"--verify", &"-q"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_files_equal(&out.join("from-manifest.elf"), &want);
    // A rerun skips both; a part touched since redoes both (the journal stamps them).
    let list = |want: &str| {
        let o = run(&[&"batch", &m, &"--out-dir", &out, &"--list"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let actions: Vec<String> = stdout(&o)
            .lines()
            .map(|l| l.split('\t').nth(1).unwrap().to_string())
            .collect();
        assert_eq!(actions, [want, want]);
    };
    list("skip");
    let touched = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(&parts[1])
        .status()
        .unwrap();
    assert!(touched.success());
    list("run");
    let back = d.join("back.elf");
    let o = run(&[&"-q", &out.join("from-manifest.kdump"), &"-o", &back]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_files_equal(&back, &want);

    let fails = |args: &[&dyn AsRef<std::ffi::OsStr>], says: &str| {
        let o = run(args);
        assert!(!o.status.success(), "{says}: succeeded");
        assert!(stderr(&o).contains(says), "{says}: {}", stderr(&o));
    };
    let no = d.join("no.elf");
    fails(
        &[&"-q", &parts[0], &parts[1], &"-o", &no],
        "incomplete kdump split set: no file holds PFNs",
    );
    // A lone part too: its missing pages could only be written as lost.
    fails(
        &[&"-q", &parts[1], &"-o", &no],
        "incomplete kdump split set",
    );
    fails(
        &[&"-q", &parts[0], &parts[1], &parts[2], &whole, &"-o", &no],
        "not all are parts of a split dump",
    );
    fails(
        &[&"-q", &parts[0], &parts[1], &parts[1], &"-o", &no],
        "given twice",
    );
    fails(
        &[&"-q", &parts[0], &parts[1], &d.join("s4"), &"-o", &no],
        "s4: No such file",
    );
    fails(
        &[&"-q", &parts[0], &parts[1], &parts[2], &elf, &"-o", &no],
        "in.elf: at offset 0x0: kdump: no \"KDUMP   \"",
    );
    // A part of another dump of the same guest with the same page-frame ranges (here
    // made from its raw RAM, so without CPU notes) fits by its ranges alone.
    let other = d.join("other.elf");
    let o = run(&[
        &"-q",
        &g.file("ram.raw"),
        &"--arch",
        &"x86_64",
        &"--vmcoreinfo",
        &g.file("vmcoreinfo.txt"),
        &"-o",
        &other,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let foreign: Vec<PathBuf> = ["t1", "t2", "t3"].iter().map(|p| d.join(p)).collect();
    let o = Command::new(&mdf)
        .args(["--split", "--splitblock-size", "1024", "-d", "0"])
        .arg(&other)
        .args(&foreign)
        .output()
        .unwrap();
    assert!(o.status.success(), "makedumpfile --split: {}", stderr(&o));
    fails(
        &[&"-q", &parts[0], &foreign[1], &parts[2], &"-o", &no],
        "t2: a part of another dump than",
    );
    assert!(!no.exists());
}
