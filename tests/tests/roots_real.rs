//! Issue 11 on the real guests: `--paging` with no `--cr3`, `--arch` or `--paging-mode`
//! on `ram.raw`, on LiME and AVML files made from it, and on an ELF and a kdump file that
//! have no note at all: the root comes from the VMCOREINFO found in RAM (the architecture too), gdb reads
//! `linux_banner` through it (x86: this gdb has no aarch64), every kernel-half page of
//! QEMU's own paging dump reads the same bytes from ours, the output carries the
//! VMCOREINFO found, and `info` names OSRELEASE and the root. CI cost is kept low: one
//! conversion per input, outputs compared by their mappings; the 4.5 GiB highmem guest
//! only through `info`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dumpconv::{convert, ConvertOptions, Output, PagingOptions};
use dumpconv_core::NoProgress;
use dumpconv_formats::elf::read::read_load_headers;
use dumpconv_tests::guests::{gdb_string, guest, guests, load_pages, run};

/// The `dumpconv` binary of this profile, built if needed.
fn dumpconv_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(p) => p,
        None => panic!("cannot tell the profile from {}", exe.display()),
    };
    let target = profile_dir.parent().expect("target directory");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "dumpconv", "--profile", profile])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build -p dumpconv failed");
    profile_dir.join("dumpconv")
}

fn info_json(bin: &Path, input: &Path) -> serde_json::Value {
    let out = run(Command::new(bin).arg("info").arg("--json").arg(input));
    serde_json::from_str(&out).expect("info --json")
}

fn convert_to(input: &Path, out: &Path, format: &str, paging: bool) {
    convert_arch(input, out, format, paging, None)
}

fn convert_arch(
    input: &Path,
    out: &Path,
    format: &str,
    paging: bool,
    arch: Option<dumpconv_core::Arch>,
) {
    let o = ConvertOptions {
        arch,
        format: Some(format.into()),
        paging: paging.then(PagingOptions::default),
        force: true,
        ..ConvertOptions::default()
    };
    convert(input, &Output::Path(out.to_path_buf()), &o, &NoProgress)
        .unwrap_or_else(|e| panic!("{} -> {format}: {e}", input.display()));
}

/// (vaddr, paddr, filesz) of every PT_LOAD.
fn loads(path: &Path) -> Vec<(u64, u64, u64)> {
    read_load_headers(path)
        .unwrap()
        .iter()
        .map(|h| (h.vaddr, h.paddr, h.filesz))
        .collect()
}

#[test]
fn paging_without_cpu_state_or_flags_on_every_guest() {
    let bin = dumpconv_bin();
    for g in guests() {
        if g.name == "x86_64-highmem" {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let raw = g.file("ram.raw");

        // info names the kernel found in RAM and the root --paging takes.
        let info = info_json(&bin, &raw);
        let release = g.meta["kernel_release"].as_str().unwrap().to_string();
        let k = &info["kernels"][0];
        assert_eq!(k["osrelease"], release.as_str(), "{}: {info}", g.name);
        assert_eq!(k["vmcoreinfo_source"], "ram", "{}", g.name);
        assert!(k["vmcoreinfo_phys"].is_string(), "{}", g.name);
        assert_eq!(info["root"]["source"], "vmcoreinfo", "{}", g.name);
        assert_eq!(info["root"]["kernel"], 0, "{}", g.name);
        assert_eq!(info["root"]["mode"], g.paging(), "{}", g.name);
        assert_eq!(info["root"]["root"], k["root"], "{}", g.name);

        // The inputs: ram.raw, LiME and AVML made from it, an ELF without notes.
        let lime = t.join("in.lime");
        let avml = t.join("in.avml");
        let bare = t.join("bare.elf");
        convert_to(&raw, &lime, "lime", false);
        convert_to(&raw, &avml, "avml", false);
        // An ELF says its machine: made with the guest's (a raw image does not say it).
        let arch = dumpconv_core::Arch::from_name(g.meta["arch"].as_str().unwrap());
        convert_arch(&raw, &bare, "elf", false, arch);
        // A kdump file without notes (no CPU state, no VMCOREINFO), pages stored plain.
        let kdump = t.join("bare.kdump");
        let o = ConvertOptions {
            format: Some("kdump".into()),
            arch,
            writer_options: [("compress".to_string(), "none".to_string())].into(),
            ..ConvertOptions::default()
        };
        convert(&raw, &Output::Path(kdump.clone()), &o, &NoProgress).unwrap();
        let mut outs = Vec::new();
        for input in [&raw, &lime, &avml, &bare, &kdump] {
            let out = t.join(format!(
                "{}.paging.elf",
                input.file_name().unwrap().to_string_lossy()
            ));
            convert_to(input, &out, "elf", true);
            outs.push(out);
        }
        let first = loads(&outs[0]);
        assert!(
            first.iter().any(|l| l.0 != l.1),
            "{}: no virtual mapping",
            g.name
        );
        // LiME and the bare ELF keep every RAM page, so their views are ram.raw's;
        // AVML leaves all-zero blocks out of its RAM ranges, so its view is a part of it.
        let first_pages = load_pages(&outs[0]);
        for (i, o) in outs[1..].iter().enumerate() {
            if i == 1 {
                let pages = load_pages(o);
                assert!(
                    pages.keys().all(|v| first_pages.contains_key(v)) && !pages.is_empty(),
                    "{}: {} maps {} pages, ram.raw's view {}",
                    g.name,
                    o.display(),
                    pages.len(),
                    first_pages.len()
                );
            } else {
                assert!(
                    loads(o) == first,
                    "{}: {} maps differently",
                    g.name,
                    o.display()
                );
            }
        }
        // The output carries the VMCOREINFO found in RAM, and says its architecture.
        let back = dumpconv_formats::open(&outs[0], &Default::default()).unwrap();
        assert_eq!(
            back.vmcoreinfo.as_ref().and_then(|v| v.osrelease()),
            Some(release.as_str()),
            "{}",
            g.name
        );
        assert_eq!(
            back.arch.map(|a| a.name().into_owned()).as_deref(),
            Some(g.meta["arch"].as_str().unwrap()),
            "{}",
            g.name
        );

        if g.file("paging.elf").exists() {
            let n = g.assert_kernel_half_equals_qemu_paging_dump(&outs[0]);
            eprintln!("{}: {n} kernel-half pages equal QEMU's", g.name);
        }
        if !g.is_aarch64() {
            let banner = g.symbol("linux_banner").expect("linux_banner") + g.kernel_offset();
            let arch = if g.is_x86_64() { "i386:x86-64" } else { "i386" };
            for o in &outs {
                assert_eq!(
                    gdb_string("gdb", o, arch, banner),
                    g.banner(),
                    "{}: {}",
                    g.name,
                    o.display()
                );
            }
        }
    }
}

#[test]
fn info_on_the_highmem_guest_names_the_kernel_and_root() {
    let Some(g) = guest("x86_64-highmem") else {
        return;
    };
    let info = info_json(&dumpconv_bin(), &g.file("ram.raw"));
    let release = g.meta["kernel_release"].as_str().unwrap();
    assert_eq!(info["kernels"][0]["osrelease"], release, "{info}");
    assert_eq!(info["root"]["source"], "vmcoreinfo", "{info}");
    assert_eq!(info["root"]["mode"], "4level", "{info}");
}
