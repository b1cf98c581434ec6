//! Bad input through the real binary: a clear error naming the file (and offset where
//! there is one), a non-zero exit code, no output left behind, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dumpconv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        .output()
        .expect("run dumpconv")
}

/// A minimal valid ELF64 x86-64 core: one PT_NOTE (empty) and one PT_LOAD of `data`
/// at physical `paddr`.
fn elf64_core(paddr: u64, data: &[u8]) -> Vec<u8> {
    let ehsize = 64u64;
    let phentsize = 56u64;
    let phnum = 2u64;
    let data_off = ehsize + phentsize * phnum;
    let mut v = Vec::new();
    v.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    v.extend_from_slice(&4u16.to_le_bytes()); // ET_CORE
    v.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    v.extend_from_slice(&ehsize.to_le_bytes()); // e_phoff
    v.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    v.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    v.extend_from_slice(&(ehsize as u16).to_le_bytes());
    v.extend_from_slice(&(phentsize as u16).to_le_bytes());
    v.extend_from_slice(&(phnum as u16).to_le_bytes());
    v.extend_from_slice(&64u16.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    // PT_NOTE, empty, at data_off.
    for x in [4u32, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    for x in [data_off, 0, 0, 0, 0, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    // PT_LOAD
    for x in [1u32, 7] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    let len = data.len() as u64;
    for x in [data_off, paddr, paddr, len, len, 0] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(data);
    v
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out.elf")
    }
    /// Nothing but the inputs in the directory: no output, no temporary file.
    fn assert_no_output(&self, inputs: &[&Path]) {
        for e in std::fs::read_dir(self.dir.path()).unwrap() {
            let p = e.unwrap().path();
            assert!(
                inputs.iter().any(|i| *i == p),
                "left behind: {}",
                p.display()
            );
        }
    }
}

fn assert_clean_failure(out: &Output, must_mention: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded on bad input: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "panicked instead of an error: {stderr}"
    );
    assert!(stderr.contains("dumpconv: error:"), "{stderr}");
    for m in must_mention {
        assert!(stderr.contains(m), "error does not mention {m:?}: {stderr}");
    }
}

fn convert_fails(case: &Case, input: &Path, must_mention: &[&str]) -> Output {
    let out = dumpconv(&[input.to_str().unwrap(), "-o", case.out().to_str().unwrap()]);
    assert_clean_failure(&out, must_mention);
    case.assert_no_output(&[input]);
    out
}

#[test]
fn empty_file() {
    let c = Case::new();
    let p = c.file("empty.bin", b"");
    let o = convert_fails(&c, &p, &[p.to_str().unwrap(), "empty"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn directory() {
    let c = Case::new();
    let d = c.dir.path().join("adir");
    std::fs::create_dir(&d).unwrap();
    convert_fails(&c, &d, &[d.to_str().unwrap(), "directory"]);
}

#[test]
fn missing_file() {
    let c = Case::new();
    let p = c.dir.path().join("nope.elf");
    let out = dumpconv(&[p.to_str().unwrap(), "-o", c.out().to_str().unwrap()]);
    assert_clean_failure(&out, &[p.to_str().unwrap()]);
}

#[test]
fn truncated_elf_header() {
    let c = Case::new();
    let full = elf64_core(0, &[0u8; 4096]);
    let p = c.file("trunc.elf", &full[..40]);
    convert_fails(&c, &p, &[p.to_str().unwrap()]);
}

#[test]
fn program_headers_past_eof() {
    let c = Case::new();
    let mut v = elf64_core(0, &[0u8; 4096]);
    v[32..40].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_phoff far away
    let p = c.file("phoff.elf", &v);
    convert_fails(&c, &p, &[p.to_str().unwrap(), "0x100000"]);
}

#[test]
fn load_offset_past_eof() {
    let c = Case::new();
    let mut v = elf64_core(0, &[0u8; 4096]);
    // Second phdr (PT_LOAD) p_offset at 64 + 56 + 8.
    let at = 64 + 56 + 8;
    v[at..at + 8].copy_from_slice(&0x7fff_0000u64.to_le_bytes());
    let p = c.file("loadoff.elf", &v);
    convert_fails(&c, &p, &[p.to_str().unwrap()]);
}

#[test]
fn note_sizes_that_overflow() {
    let c = Case::new();
    let mut note = Vec::new();
    note.extend_from_slice(&5u32.to_le_bytes());
    note.extend_from_slice(&0xffff_fff0u32.to_le_bytes()); // descsz
    note.extend_from_slice(&1u32.to_le_bytes());
    note.extend_from_slice(b"CORE\0\0\0\0");
    let mut v = elf64_core(0, &[0u8; 4096]);
    let note_off = v.len() as u64;
    v.extend_from_slice(&note);
    // PT_NOTE p_offset (64+8) and p_filesz (64+32).
    v[72..80].copy_from_slice(&note_off.to_le_bytes());
    v[96..104].copy_from_slice(&(note.len() as u64).to_le_bytes());
    let p = c.file("note.elf", &v);
    convert_fails(&c, &p, &[p.to_str().unwrap(), "note"]);
}

#[test]
fn unknown_format() {
    let c = Case::new();
    let p = c.file("notes.txt", b"this is not a memory dump\n");
    convert_fails(&c, &p, &[p.to_str().unwrap(), "unknown format"]);
}

#[test]
fn existing_output_needs_force_and_input_is_never_overwritten() {
    let c = Case::new();
    let input = c.file("in.elf", &elf64_core(0x1000, &[7u8; 4096]));
    let out = c.file("out.raw", b"old");
    let r = dumpconv(&[input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_clean_failure(&r, &["--force"]);
    assert_eq!(r.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"old");

    let r = dumpconv(&[
        input.to_str().unwrap(),
        "-o",
        input.to_str().unwrap(),
        "--format",
        "raw",
        "--force",
    ]);
    assert_clean_failure(&r, &["input"]);
    assert_eq!(
        std::fs::read(&input).unwrap(),
        elf64_core(0x1000, &[7u8; 4096])
    );

    let r = dumpconv(&[
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let raw = std::fs::read(&out).unwrap();
    assert_eq!(raw.len(), 0x2000);
    assert!(raw[..0x1000].iter().all(|&b| b == 0));
    assert!(raw[0x1000..].iter().all(|&b| b == 7));
}

#[test]
fn unknown_output_format_is_a_usage_error() {
    let c = Case::new();
    let input = c.file("in.elf", &elf64_core(0, &[1u8; 4096]));
    let r = dumpconv(&[
        input.to_str().unwrap(),
        "-o",
        c.dir.path().join("x.what").to_str().unwrap(),
    ]);
    assert_clean_failure(&r, &["--format"]);
    assert_eq!(r.status.code(), Some(2));
}

/// `dumpconv info X | head -1`: the reader closes the pipe early; dumpconv must end
/// quietly, not panic ("failed printing to stdout").
#[test]
fn closed_stdout_pipe_ends_quietly() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/tiny-x86_64.elf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(["info", "--paging"])
        .arg(&sample)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dumpconv");
    // Close our end of the pipe before dumpconv writes its report.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for dumpconv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// Standard output that cannot take the report (a full device) is an output error.
#[test]
fn unwritable_stdout_is_an_output_error() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/tiny-x86_64.elf");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let out = Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .arg("info")
        .arg(&sample)
        .stdout(full)
        .output()
        .expect("run dumpconv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("standard output"), "{stderr}");
}
