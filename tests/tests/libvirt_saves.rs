//! Save files written by libvirt itself (issue 16), made by
//! `tests/real-guests/libvirt-saves.sh` with Debian 12's libvirt 9.0 and the suite's
//! QEMU 7.2 from one boot of the x86_64-4level guest's kernel (pc, 512 MiB, 2 vCPUs):
//! `virsh save` with qemu.conf's save_image_format = raw, gzip, bzip2 and lzop, and
//! `virsh dump` (no --memory-only: a bare migration stream in libvirt 9.0) with
//! dump_image_format = raw and lzop. The guest never runs between them (each is made
//! from the previous one restored paused; the script checks the registers after every
//! restore and RAM before the last dump), so `ram.raw` (pmemsave) and `registers.txt`
//! (`info registers -a`) of the stopped guest are the reference of all six.
//!
//! Per file: the reader's RAM and the RAM of our ELF, kdump and raw outputs equal
//! pmemsave; the registers equal `info registers -a`; gdb reads linux_banner from our
//! `--paging` ELF; crash opens our kdump (`sys`, `bt -a`, `log`); `info` shows the
//! domain XML of a save. Missing files skip unless DUMPCONV_REQUIRE_LIBVIRT=1 (set by
//! scripts/test.sh once it has made them, which needs root).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inputs_util;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use dumpconv::{convert, ConvertOptions, Output, PagingOptions};
use dumpconv_core::NoProgress;
use dumpconv_formats::OpenOptions;
use dumpconv_tests::guests::{assert_cpus_equal_info_registers, crash_session, guest, Guest};
use inputs_util::*;

const DIR: &str = "libvirt-x86_64-pc";
/// The domain's name in libvirt_saves.py.
const DOMAIN: &str = "dumpconv-libvirt";

/// scripts/test.sh makes the files only as root, and then sets this.
fn required() -> bool {
    std::env::var("DUMPCONV_REQUIRE_LIBVIRT").is_ok_and(|v| v == "1")
}

/// The capture, as a [`Guest`] (meta: the pc.ram ranges of `info mtree -f`).
fn capture() -> Option<Guest> {
    let cache = match std::env::var_os("DUMPCONV_SAVEFILE_CACHE") {
        Some(d) => PathBuf::from(d),
        None => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/dumpconv/savefiles")
        }
    };
    let dir = cache.join(DIR);
    let ranges = std::fs::read(dir.join("ram-ranges.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match (dir.join("complete").exists(), ranges) {
        (true, Some(r)) => Some(Guest {
            name: DIR.to_string(),
            dir,
            meta: serde_json::json!({"ram_ranges": r, "arch": "x86_64"}),
        }),
        _ => {
            let msg = format!(
                "{} is not complete (run tests/real-guests/libvirt-saves.sh)",
                dir.display()
            );
            assert!(!required(), "{msg}");
            eprintln!("SKIP: {msg}");
            None
        }
    }
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Every check of one file. `format` is what `info` must call it; `xml`: whether it is
/// a libvirt save (header and domain XML) or a bare stream (`virsh dump`).
fn check(file: &str, format: &str, xml: bool) {
    let Some(s) = capture() else { return };
    let Some(g) = guest("x86_64-4level") else {
        return;
    };
    let path = s.file(file);
    let what = path.display().to_string();

    // the reader: format, RAM, registers, VMCOREINFO, the XML
    let d = dumpconv_formats::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(d.format, format, "{what}");
    s.assert_ram_is_exactly_pmemsave(&path, d.memory.as_ref());
    let regs = std::fs::read_to_string(s.file("registers.txt")).unwrap();
    assert_cpus_equal_info_registers(&what, &d.cpus, &regs);
    assert!(d.vmcoreinfo.is_some(), "{what}: no VMCOREINFO");
    let domain_xml = d.details.iter().find(|(k, _)| k == "domain XML");
    assert_eq!(domain_xml.is_some(), xml, "{what}: {:?}", d.details);
    let offset = d
        .vmcoreinfo
        .as_ref()
        .and_then(|v| v.kernel_offset())
        .unwrap_or(0);
    drop(d);

    // `info` shows the XML libvirt wrote (its name, the kernel it boots)
    let o = dumpconv_with_stdin(&[OsStr::new("info"), path.as_os_str()], None);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{what}: {text}");
    assert!(
        text.contains(&format!("format:   {format}")),
        "{what}: {text}"
    );
    if xml {
        assert!(
            text.contains(&format!("<name>{DOMAIN}</name>"))
                && text.contains("<cmdline>console=ttyS0")
                && text.contains("machine='pc-i440fx-7.2'"),
            "{what}: {text}"
        );
    }

    // ELF, kdump (with paging: crash reads it below) and raw outputs hold the same RAM
    let tmp = scratch_dir();
    for (fmt, paging) in [("elf", false), ("kdump", true), ("raw", false)] {
        let out = tmp.path().join(format!("out.{fmt}"));
        let mut o = ConvertOptions {
            format: Some(fmt.into()),
            ..ConvertOptions::default()
        };
        if paging {
            o.paging = Some(PagingOptions::default());
        }
        convert(&path, &Output::Path(out.clone()), &o, &NoProgress).unwrap();
        let od = if fmt == "raw" {
            OpenOptions {
                input_format: Some("raw".into()),
                ..OpenOptions::default()
            }
        } else {
            OpenOptions::default()
        };
        let back = dumpconv_formats::open(&out, &od).unwrap();
        s.assert_ram_equals_pmemsave(&out, back.memory.as_ref());
        if fmt != "raw" {
            // both vCPUs' notes (their registers are the reader's, checked above; an
            // ELF or kdump file has no field for some of them, EFER among them)
            assert_eq!(back.cpus.len(), 2, "{what} -> {fmt}");
            assert!(back.vmcoreinfo.is_some(), "{what} -> {fmt}");
        }
        if fmt == "raw" {
            std::fs::remove_file(&out).unwrap();
        }
    }

    // crash opens our kdump: the release, a backtrace of both CPUs, the guest's log
    let text = crash_session(
        &g.file("vmlinux"),
        &tmp.path().join("out.kdump"),
        &["sys", "bt -a", "log"],
    );
    let banner = g.banner();
    let release = banner.split_whitespace().nth(2).unwrap_or("?");
    assert!(text.contains(release), "{what}: crash sys: {text}");
    for cpu in ["CPU: 0", "CPU: 1"] {
        assert!(
            text.contains(cpu),
            "{what}: crash bt -a has no {cpu}: {text}"
        );
    }
    // the kernel's log (init's READY goes to the serial port, not the log)
    assert!(
        text.contains(&banner) && text.contains("Run /init as init process"),
        "{what}: crash log: {text}"
    );

    // `--paging` and nothing else: gdb reads linux_banner
    let addr = g.symbol("linux_banner").unwrap().wrapping_add(offset);
    let out = tmp.path().join("paging.elf");
    assert_eq!(
        paging_elf_string(&path, &out, "gdb", "i386:x86-64", addr),
        banner,
        "{what}"
    );
}

#[test]
fn virsh_save() {
    check("virsh-save.save", "libvirt+qemu-migration", true);
}

#[test]
fn virsh_save_gzip() {
    check("virsh-save-gzip.save", "libvirt+gzip+qemu-migration", true);
}

#[test]
fn virsh_save_bzip2() {
    check(
        "virsh-save-bzip2.save",
        "libvirt+bzip2+qemu-migration",
        true,
    );
}

#[test]
fn virsh_save_lzop() {
    check("virsh-save-lzop.save", "libvirt+lzop+qemu-migration", true);
}

/// libvirt 9.0's `virsh dump` without --memory-only writes the migration stream alone
/// (no libvirt header), compressed by dump_image_format.
#[test]
fn virsh_dump() {
    check("virsh-dump.migstream", "qemu-migration", false);
}

#[test]
fn virsh_dump_lzop() {
    check("virsh-dump-lzop", "lzop+qemu-migration", false);
}

/// libvirt writes `LibvirtQemudPart` first and the final magic only once the save is
/// complete: the real save's first MiB with that magic is an unfinished save, refused
/// (exit 1) with the file named and the reason given, for `info` and a conversion.
#[test]
fn unfinished_save_is_a_clear_error() {
    let Some(s) = capture() else { return };
    let mut head = vec![0u8; 1 << 20];
    let f = std::fs::File::open(s.file("virsh-save.save")).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).unwrap();
    assert_eq!(&head[..16], b"LibvirtQemudSave");
    head[..16].copy_from_slice(b"LibvirtQemudPart");
    let tmp = scratch_dir();
    let p = tmp.path().join("part.save");
    write(&p, &head);
    let out = tmp.path().join("out.elf");
    for args in [
        vec![OsStr::new("info"), p.as_os_str()],
        vec![p.as_os_str(), OsStr::new("-o"), out.as_os_str()],
    ] {
        let o = dumpconv_with_stdin(&args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&p.display().to_string())
                && err.contains("LibvirtQemudPart")
                && err.contains("unfinished libvirt save"),
            "{args:?}: {err}"
        );
    }
}
