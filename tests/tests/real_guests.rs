//! Conformance on real Linux guests dumped by QEMU (tests/real-guests/). Each check
//! compares dumpconv's output with what the real system produced: the pmemsave image,
//! QEMU's own dumps, and what crash, gdb and makedumpfile say about them.

use std::path::{Path, PathBuf};
use std::process::Command;

use dumpconv::{convert, ConvertOptions, Output, PagingOptions};
use dumpconv_core::{CpuState, NoProgress};
use dumpconv_formats::OpenOptions;
use dumpconv_tests::guests::{as_u64, crash_session, gdb_string, guests, is_canonical, run, Guest};
use dumpconv_x86::{paging_mode, PagingMode};

fn scratch() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tempfile::tempdir_in(base).unwrap()
}

fn opts(format: &str) -> ConvertOptions {
    ConvertOptions {
        format: Some(format.into()),
        ..ConvertOptions::default()
    }
}

/// The CPU state the harness recorded from `info registers -a`, for raw inputs.
fn meta_cpus(g: &Guest) -> Vec<CpuState> {
    g.meta["cpus"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            CpuState::new(i as u32, None)
                .with_reg("cr0", as_u64(&c["cr0"]))
                .with_reg("cr3", as_u64(&c["cr3"]))
                .with_reg("cr4", as_u64(&c["cr4"]))
                .with_reg("efer", as_u64(&c["efer"]))
        })
        .collect()
}

/// The padded pmemsave image as a raw input with the guest's RAM map.
fn raw_input_opts(g: &Guest, format: &str) -> ConvertOptions {
    let ram_map = g
        .ram_ranges()
        .iter()
        .map(|&(s, n)| dumpconv_core::PhysRange::with_len(s, n))
        .collect();
    ConvertOptions {
        open: OpenOptions {
            input_format: Some("raw".into()),
            ram_map: Some(ram_map),
            ..OpenOptions::default()
        },
        cpus: Some(meta_cpus(g)),
        ..opts(format)
    }
}

/// Every RAM byte of `path` (read through dumpconv's reader) equals the pmemsave image.
fn assert_ram_equals_pmemsave(g: &Guest, path: &Path) {
    let dump = dumpconv_formats::open(path, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    g.assert_ram_equals_pmemsave(path, dump.memory.as_ref());
}

#[test]
fn every_input_to_every_output_equals_pmemsave() {
    for g in guests() {
        let tmp = scratch();
        let mut inputs: Vec<(String, PathBuf, ConvertOptions)> = vec![(
            "phys.elf".into(),
            g.file("phys.elf"),
            ConvertOptions::default(),
        )];
        if g.name != "x86_64-highmem" {
            // The 4.5 GiB guest is covered through its ELF only, to bound CI time.
            inputs.push(("ram.raw".into(), g.file("ram.raw"), raw_input_opts(&g, "")));
            for f in ["kdump-zlib.flat", "kdump-snappy.flat", "kdump-lzo.flat"] {
                if g.file(f).exists() && f != "kdump-lzo.flat" {
                    inputs.push((f.into(), g.file(f), ConvertOptions::default()));
                }
            }
        }
        for (label, input, base) in &inputs {
            for format in ["elf", "raw", "kdump"] {
                let out = tmp.path().join(format!("{label}.{format}"));
                let o = ConvertOptions {
                    format: Some(format.into()),
                    ..base.clone()
                };
                convert(input, &Output::Path(out.clone()), &o, &NoProgress)
                    .unwrap_or_else(|e| panic!("{}: {label} -> {format}: {e}", g.name));
                assert_ram_equals_pmemsave(&g, &out);
                std::fs::remove_file(&out).unwrap();
            }
        }
        eprintln!(
            "{}: {} inputs x 3 outputs equal pmemsave",
            g.name,
            inputs.len()
        );
    }
}

#[test]
fn info_lists_every_cpu_with_cr3() {
    for g in guests() {
        let dump = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
        let want = meta_cpus(&g);
        assert_eq!(dump.cpus.len(), want.len(), "{}", g.name);
        assert!(want.len() >= 2, "{}: guests run with -smp 2", g.name);
        for (got, w) in dump.cpus.iter().zip(&want) {
            assert_eq!(got.reg("cr3"), w.reg("cr3"), "{} cpu {}", g.name, w.index);
            assert_eq!(
                paging_mode(got),
                paging_mode(w),
                "{} cpu {}",
                g.name,
                w.index
            );
        }
    }
}

const CRASH_CMDS: &[&str] = &["sys", "bt -a", "ps", "log"];

#[test]
fn crash_agrees_on_our_elf_and_kdump() {
    for g in guests().into_iter().filter(Guest::is_x86_64) {
        let vmlinux = g.file("vmlinux");
        let reference = crash_session(&vmlinux, &g.file("phys.elf"), CRASH_CMDS);
        assert!(reference.contains("RELEASE"), "{}: {reference}", g.name);
        let tmp = scratch();
        for (format, paging) in [("elf", false), ("elf", true), ("kdump", false)] {
            let out = tmp.path().join(format!("out-{paging}.{format}"));
            let o = ConvertOptions {
                paging: paging.then(PagingOptions::default),
                ..opts(format)
            };
            convert(
                &g.file("phys.elf"),
                &Output::Path(out.clone()),
                &o,
                &NoProgress,
            )
            .unwrap();
            let ours = crash_session(&vmlinux, &out, CRASH_CMDS);
            assert_eq!(
                ours, reference,
                "{}: crash differs on our {format} (paging view: {paging})",
                g.name
            );
            let rel = run(Command::new("crash").arg("--osrelease").arg(&out));
            assert_eq!(
                rel.trim(),
                g.meta["kernel_release"].as_str().unwrap(),
                "{}: crash --osrelease on our {format}",
                g.name
            );
        }
    }
}

#[test]
fn makedumpfile_accepts_our_elf_and_crash_reads_its_result() {
    for g in guests().into_iter().filter(Guest::is_x86_64).take(1) {
        let tmp = scratch();
        let ours = tmp.path().join("ours.elf");
        convert(
            &g.file("phys.elf"),
            &Output::Path(ours.clone()),
            &opts("elf"),
            &NoProgress,
        )
        .unwrap();
        let mdf = tmp.path().join("mdf.kdump");
        run(Command::new("makedumpfile")
            .args(["-c", "-d", "0"])
            .arg(&ours)
            .arg(&mdf));
        let reference = crash_session(&g.file("vmlinux"), &g.file("phys.elf"), &["sys", "ps"]);
        let theirs = crash_session(&g.file("vmlinux"), &mdf, &["sys", "ps"]);
        assert_eq!(
            theirs, reference,
            "{}: crash on makedumpfile's output",
            g.name
        );
    }
}

#[test]
fn notes_survive_elf_to_elf_byte_for_byte() {
    for g in guests() {
        let tmp = scratch();
        let out = tmp.path().join("out.elf");
        convert(
            &g.file("phys.elf"),
            &Output::Path(out.clone()),
            &opts("elf"),
            &NoProgress,
        )
        .unwrap();
        let a = dumpconv_formats::open(&g.file("phys.elf"), &OpenOptions::default()).unwrap();
        let b = dumpconv_formats::open(&out, &OpenOptions::default()).unwrap();
        assert!(!a.notes.is_empty(), "{}", g.name);
        let mut want = a.notes.clone();
        want.sort_by_key(|n| n.kind());
        assert_eq!(b.notes, want, "{}", g.name);
    }
}

fn gdb_arch(g: &Guest) -> &'static str {
    if g.is_x86_64() {
        "i386:x86-64"
    } else {
        "i386"
    }
}

#[test]
fn gdb_reads_linux_banner_from_our_paging_elf() {
    for g in guests() {
        let banner_addr = g
            .symbol("linux_banner")
            .expect("linux_banner in System.map")
            + g.kernel_offset();
        let tmp = scratch();
        let mut inputs = vec![(g.file("phys.elf"), ConvertOptions::default())];
        if g.name != "x86_64-highmem" {
            inputs.push((g.file("ram.raw"), raw_input_opts(&g, "")));
        }
        for (input, base) in inputs {
            let out = tmp.path().join("paging.elf");
            let o = ConvertOptions {
                format: Some("elf".into()),
                paging: Some(PagingOptions::default()),
                force: true,
                ..base
            };
            convert(&input, &Output::Path(out.clone()), &o, &NoProgress).unwrap();
            let got = gdb_string("gdb", &out, gdb_arch(&g), banner_addr);
            assert_eq!(
                got.trim_end(),
                g.banner(),
                "{}: gdb on our paging ELF from {}",
                g.name,
                input.display()
            );
        }
    }
}

#[test]
fn kernel_half_of_qemu_paging_dump_matches_ours() {
    for g in guests() {
        if g.name == "x86_64-highmem" || !g.file("paging.elf").exists() {
            continue;
        }
        let tmp = scratch();
        let out = tmp.path().join("ours.elf");
        let o = ConvertOptions {
            format: Some("elf".into()),
            paging: Some(PagingOptions::default()),
            ..ConvertOptions::default()
        };
        convert(
            &g.file("phys.elf"),
            &Output::Path(out.clone()),
            &o,
            &NoProgress,
        )
        .unwrap();
        let checked = g.assert_kernel_half_equals_qemu_paging_dump(&out);
        let la57 = g.paging() == "5level";
        if g.is_x86_64() {
            let bits = if la57 { 57 } else { 48 };
            for h in dumpconv_formats::elf::read::read_load_headers(&out).unwrap() {
                assert!(
                    is_canonical(h.vaddr, bits),
                    "{}: non-canonical vaddr {:#x}",
                    g.name,
                    h.vaddr
                );
            }
        }
        eprintln!("{}: {checked} kernel-half pages equal QEMU's", g.name);
    }
}

#[test]
fn paging_modes_of_the_guests_are_what_they_claim() {
    for g in guests() {
        let want = PagingMode::parse(g.paging()).expect("meta.json paging");
        let cpus = meta_cpus(&g);
        assert_eq!(paging_mode(&cpus[0]), Some(want), "{}", g.name);
    }
}
