//! `--vmcoreinfo FILE` through the real binary: KEY=value text must have OSRELEASE=
//! (else a usage error, exit 2); a copy of `/sys/kernel/vmcoreinfo` ("ADDR SIZE") makes
//! the note be read from the dump's memory. And the kdump header's utsname, read from
//! the kernel's `init_uts_ns` the way makedumpfile does, or a placeholder with a
//! warning when memory cannot give it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dumpconv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
        .args(args)
        .output()
        .expect("run dumpconv")
}

const RAM: usize = 1 << 20;
const NOTE_AT: usize = 0x5000;
/// `init_uts_ns` at physical 0x80000: x86_64 kernel address
/// 0xffffffff81080000 - 0xffffffff80000000 + phys_base (-16 MiB).
const UTS_AT: usize = 0x8_0000;
const TEXT: &str = "OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\n\
SYMBOL(init_uts_ns)=ffffffff81080000\nOFFSET(uts_namespace.name)=0\n\
NUMBER(phys_base)=-16777216\nCRASHTIME=1764950400\n";
const UTS: [&str; 6] = [
    "Linux",
    "guest",
    "6.1.0-57-amd64",
    "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)",
    "x86_64",
    "(none)",
];

fn note(desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    for w in [11u32, desc.len() as u32, 0] {
        n.extend_from_slice(&w.to_le_bytes());
    }
    n.extend_from_slice(b"VMCOREINFO\0\0");
    n.extend_from_slice(desc);
    n
}

/// A raw RAM image with the kernel's VMCOREINFO note at `NOTE_AT` and its utsname
/// at `UTS_AT`.
fn raw_image() -> Vec<u8> {
    let mut ram = vec![0u8; RAM];
    let n = note(TEXT.as_bytes());
    ram[NOTE_AT..NOTE_AT + n.len()].copy_from_slice(&n);
    for (i, f) in UTS.iter().enumerate() {
        let at = UTS_AT + i * 65;
        ram[at..at + f.len()].copy_from_slice(f.as_bytes());
    }
    ram
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn convert(&self, raw: &Path, vmci: &Path, out: &Path) -> Output {
        dumpconv(&[
            "-q",
            raw.to_str().unwrap(),
            "--arch",
            "x86_64",
            "--vmcoreinfo",
            vmci.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The six utsname fields of a kdump header (at offset 12 in both layouts).
fn header_utsname(kdump: &Path) -> Vec<String> {
    let b = std::fs::read(kdump).unwrap();
    (0..6)
        .map(|i| {
            let f = &b[12 + 65 * i..12 + 65 * (i + 1)];
            let end = f.iter().position(|&c| c == 0).unwrap();
            String::from_utf8(f[..end].to_vec()).unwrap()
        })
        .collect()
}

/// The VMCOREINFO text a dump carries, as `dumpconv info --json` reads it.
fn info_osrelease(dump: &Path) -> String {
    let o = dumpconv(&["info", "--json", dump.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["vmcoreinfo"]["OSRELEASE"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn text_without_osrelease_is_a_usage_error() {
    let c = Case::new();
    let raw = c.file("ram.raw", &raw_image());
    for (name, text) in [
        (
            "pagesize.txt",
            &b"PAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff81080000\n"[..],
        ),
        ("empty.txt", b""),
        ("binary.bin", b"\x7fELF\x02\x01\x01\0\0\0"),
        ("three.txt", b"1f6e8000 1024 12\n"),
    ] {
        let vmci = c.file(name, text);
        let out = c.path("out.kdump");
        let o = c.convert(&raw, &vmci, &out);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {e}");
        assert!(
            e.contains(vmci.to_str().unwrap()) && e.contains("OSRELEASE"),
            "{name}: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
        assert!(!out.exists(), "{name}: an output was written");
        // `info` checks it the same way.
        let o = dumpconv(&[
            "info",
            raw.to_str().unwrap(),
            "--vmcoreinfo",
            vmci.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
    }
}

#[test]
fn sys_kernel_vmcoreinfo_form_reads_the_note_from_memory() {
    let c = Case::new();
    let raw = c.file("ram.raw", &raw_image());
    // As /sys/kernel/vmcoreinfo prints it ("%pa %x": the size is the kernel's buffer,
    // larger than the note), and without 0x as older kernels print it.
    for (i, text) in ["0x0000000000005000 1024\n", "5000 1024\n"]
        .iter()
        .enumerate()
    {
        let vmci = c.file(&format!("sys{i}.txt"), text.as_bytes());
        let out = c.path(&format!("out{i}.kdump"));
        let o = c.convert(&raw, &vmci, &out);
        assert!(o.status.success(), "{text:?}: {}", stderr(&o));
        assert_eq!(info_osrelease(&out), "6.1.0-57-amd64");
        // The note is written as it was in memory.
        let kd = std::fs::read(&out).unwrap();
        assert!(
            kd.windows(TEXT.len()).any(|w| w == TEXT.as_bytes()),
            "{text:?}: the note text is not in the output"
        );
        let o = dumpconv(&[
            "info",
            "--json",
            raw.to_str().unwrap(),
            "--vmcoreinfo",
            vmci.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // An address where no VMCOREINFO note is, and one outside RAM: usage errors that
    // name the dump.
    for (name, text, what) in [
        ("nonote.txt", "0x6000 1024\n", "no complete ELF note"),
        ("outside.txt", "0x7f000000 1024\n", "not in the dump"),
    ] {
        let vmci = c.file(name, text.as_bytes());
        let out = c.path("bad.kdump");
        let o = c.convert(&raw, &vmci, &out);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {e}");
        assert!(
            e.contains(what) && e.contains(raw.to_str().unwrap()),
            "{name}: {e}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn kdump_header_has_the_kernels_utsname_and_crashtime() {
    let c = Case::new();
    let raw = c.file("ram.raw", &raw_image());
    let vmci = c.file("vmcoreinfo.txt", TEXT.as_bytes());
    let out = c.path("out.kdump");
    let o = c.convert(&raw, &vmci, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("utsname"), "{}", stderr(&o));
    assert_eq!(header_utsname(&out), UTS);
    let b = std::fs::read(&out).unwrap();
    // 64-bit layout: struct timeval at 408.
    let sec = i64::from_le_bytes(b[408..416].try_into().unwrap());
    assert_eq!(sec, 1_764_950_400);
}

#[test]
fn kdump_header_placeholder_when_memory_cannot_give_the_utsname() {
    let c = Case::new();
    let raw = c.file("ram.raw", &raw_image());
    // init_uts_ns points at zeros.
    let text = TEXT.replace("ffffffff81080000", "ffffffff81090000");
    let vmci = c.file("vmcoreinfo.txt", text.as_bytes());
    let out = c.path("out.kdump");
    let o = c.convert(&raw, &vmci, &out);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("warning") && e.contains("utsname"), "{e}");
    let u = header_utsname(&out);
    assert_eq!(u[0], "Linux");
    assert_eq!(u[2], "6.1.0-57-amd64");
    assert_eq!(u[3], dumpconv_kdump::PLACEHOLDER_VERSION);
    assert!(u[3].starts_with('#'));
    assert_eq!(u[4], "x86_64");
}
