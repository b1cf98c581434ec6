//! The output as real tools see it: readelf, gdb, makedumpfile. Each test is skipped
//! (with a message) when its tool is not installed.
//!
//! Set DUMPCONV_KEEP=dir to keep the files written here for manual inspection.

// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use dumpconv_core::{
    Arch, DumpPlan, DumpWriter, Mapping, MappingList, NoProgress, PhysicalMemory, SegmentMemory,
};
use dumpconv_elf::ElfWriter;

fn mem() -> SegmentMemory {
    synth(
        &[
            (0x0, 0x9fc00, Piece::Data),
            (0x100000, 0x1000000, Piece::Data),
            (0x1000000, 0x1100000, Piece::Zero),
        ],
        |pg| (0x200000..0x1000000).contains(&pg) && pg % 0x10000 != 0,
    )
}

fn out_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("DUMPCONV_KEEP") {
        Some(d) => {
            std::fs::create_dir_all(&d).unwrap();
            (None, PathBuf::from(d))
        }
        None => {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    }
}

fn write(plan: &DumpPlan, mem: &dyn PhysicalMemory, path: &Path) {
    let mut sink = open_file_sink(path);
    ElfWriter::new()
        .write(plan, mem, &mut sink, &NoProgress)
        .unwrap();
}

const DIRECT: u64 = 0xffff_8880_0000_0000;

fn paging_plan(arch: Arch, mem: &SegmentMemory) -> DumpPlan {
    let mut l = MappingList::new();
    if arch == Arch::X86 {
        l.push(Mapping {
            virt: 0xc000_0000,
            phys: 0,
            len: 0x9f000,
        });
        l.push(Mapping {
            virt: 0xc010_0000,
            phys: 0x100000,
            len: 0xf00000,
        });
        l.push(Mapping {
            virt: 0x0804_8000,
            phys: 0x200000,
            len: 0x3000,
        });
    } else {
        l.push(Mapping {
            virt: DIRECT,
            phys: 0,
            len: 0x9f000,
        });
        l.push(Mapping {
            virt: DIRECT + 0x100000,
            phys: 0x100000,
            len: 0xf00000,
        });
        // kernel text alias
        l.push(Mapping {
            virt: 0xffff_ffff_8100_0000,
            phys: 0x200000,
            len: 0x200000,
        });
        // a user page
        l.push(Mapping {
            virt: 0x0000_5555_5555_4000,
            phys: 0x210000,
            len: 0x1000,
        });
    }
    l.normalize();
    plan(arch, mem.ranges().to_vec(), Some(l))
}

#[test]
fn readelf_accepts_all_shapes() {
    if !have("readelf") {
        eprintln!("readelf not installed: skipped");
        return;
    }
    let m = mem();
    let (_t, dir) = out_dir();
    let mut cases = vec![
        ("phys64.elf", plan(Arch::X86_64, m.ranges().to_vec(), None)),
        ("phys32.elf", plan(Arch::X86, m.ranges().to_vec(), None)),
        ("paging64.elf", paging_plan(Arch::X86_64, &m)),
        ("paging32.elf", paging_plan(Arch::X86, &m)),
    ];
    let mut l = MappingList::new();
    for i in 0..70_000u64 {
        l.push(Mapping {
            virt: DIRECT + i * 0x2000,
            phys: 0x200000 + (i % 64) * 0x1000,
            len: 0x1000,
        });
    }
    cases.push(("xnum.elf", plan(Arch::X86_64, m.ranges().to_vec(), Some(l))));
    for (name, plan) in &cases {
        let path = dir.join(name);
        write(plan, &m, &path);
        let out = Command::new("readelf")
            .arg("-lnW")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "{name}: readelf warned:\n{stderr}"
        );
        let phnum = 1 + ElfWriter::new().layout(plan, &m).unwrap().phdrs.len() - 1;
        assert!(
            stdout.contains(&format!("There are {phnum} program headers")),
            "{name}:\n{}",
            &stdout[..stdout.len().min(3000)]
        );
        assert!(
            stdout.contains("Elf file type is CORE (Core file)"),
            "{name}"
        );
        assert!(stdout.contains("VMCOREINFO"), "{name}: notes not listed");
    }
}

#[test]
fn gdb_reads_the_source_bytes() {
    if !have("gdb") {
        eprintln!("gdb not installed: skipped");
        return;
    }
    let m = mem();
    let (_t, dir) = out_dir();
    // Physical view: gdb addresses are physical (p_vaddr == p_paddr).
    let phys_addrs = [
        0x0u64, 0x1234, 0x9fbfc, 0x100000, 0x210000, 0x2fff0, 0xff0000,
    ];
    for (name, arch) in [
        ("gdb-phys64.elf", Arch::X86_64),
        ("gdb-phys32.elf", Arch::X86),
    ] {
        let path = dir.join(name);
        write(&plan(arch, m.ranges().to_vec(), None), &m, &path);
        let got = gdb_read(&path, &phys_addrs, 4);
        for (a, g) in phys_addrs.iter().zip(got) {
            assert_eq!(g, expect(&m, *a, 4), "{name} at {a:#x}");
        }
    }
    // Paging view: gdb addresses are virtual.
    let path = dir.join("gdb-paging64.elf");
    write(&paging_plan(Arch::X86_64, &m), &m, &path);
    let v = [
        (DIRECT + 0x1000, 0x1000u64),
        (DIRECT + 0x210000, 0x210000),
        (0xffff_ffff_8100_0000 + 0x10000, 0x210000),
        (0x0000_5555_5555_4010, 0x210010),
        (DIRECT + 0x9effc, 0x9effc),
    ];
    let got = gdb_read(&path, &v.map(|(va, _)| va), 4);
    for ((va, pa), g) in v.iter().zip(got) {
        assert_eq!(g, expect(&m, *pa, 4), "virt {va:#x}");
    }
    let path = dir.join("gdb-paging32.elf");
    write(&paging_plan(Arch::X86, &m), &m, &path);
    let v = [
        (0xc000_1000u64, 0x1000u64),
        (0xc020_0000, 0x200000),
        (0x0804_9000, 0x201000),
    ];
    let got = gdb_read(&path, &v.map(|(va, _)| va), 4);
    for ((va, pa), g) in v.iter().zip(got) {
        assert_eq!(g, expect(&m, *pa, 4), "virt {va:#x}");
    }
}

#[test]
fn gdb_reads_pn_xnum_cores() {
    if !have("gdb") {
        eprintln!("gdb not installed: skipped");
        return;
    }
    let m = mem();
    let (_t, dir) = out_dir();
    let mut l = MappingList::new();
    for i in 0..70_000u64 {
        l.push(Mapping {
            virt: DIRECT + i * 0x2000,
            phys: 0x200000 + (i % 64) * 0x1000,
            len: 0x1000,
        });
    }
    let path = dir.join("gdb-xnum.elf");
    write(&plan(Arch::X86_64, m.ranges().to_vec(), Some(l)), &m, &path);
    // Run 69,999 maps physical 0x200000 + (69_999 % 64) pages.
    let v = [
        (DIRECT, 0x200000u64),
        (
            DIRECT + 69_999 * 0x2000 + 8,
            0x200000 + (69_999 % 64) * 0x1000 + 8,
        ),
    ];
    let got = gdb_read(&path, &v.map(|(va, _)| va), 4);
    for ((va, pa), g) in v.iter().zip(got) {
        assert_eq!(g, expect(&m, *pa, 4), "virt {va:#x}");
    }
}

/// A minimal x86-64 "kernel" for makedumpfile: kernel text at physical 16 MiB mapped
/// at 0xffffffff81000000, `init_uts_ns` (whose first member is the utsname) at
/// 0xffffffff81200000, and a VMCOREINFO note naming them.
fn mdf_case() -> (SegmentMemory, Vec<dumpconv_core::Note>) {
    let mut uts = vec![0u8; 6 * 65];
    uts[..5].copy_from_slice(b"Linux");
    uts[65..69].copy_from_slice(b"host");
    uts[130..135].copy_from_slice(b"6.1.0");
    uts[195..197].copy_from_slice(b"#1");
    uts[260..266].copy_from_slice(b"x86_64");
    // Page tables (makedumpfile translates every virtual address through them):
    // PML4 at 0x1100000; slot 511 -> PDPT 0x1101000, slot 510 -> PD 0x1102000 with
    // 2 MiB pages 8, 9 = physical 16, 18 MiB; slot 273 (direct map) -> PDPT 0x1103000
    // with a 1 GiB page at physical 0.
    let e = |v: u64| v.to_le_bytes();
    // FLATMEM: `mem_map` holds the address of the struct page array (never read with
    // -d 0, but makedumpfile insists on knowing the memory model).
    let mem_map = e(0xffff_ea00_0000_0000);
    let (pml4_511, pml4_273) = (e(0x1101000 | 3), e(0x1103000 | 3));
    let (pdpt_510, pd_8, pd_9, direct_0) = (
        e(0x1102000 | 3),
        e(0x1000000 | 0x83),
        e(0x1200000 | 0x83),
        e(0x83),
    );
    let m = synth_with(
        &[
            (0x0, 0x9fc00, Piece::Data),
            (0x100000, 0x4000000, Piece::Data),
            (0x4000000, 0x4100000, Piece::Zero),
        ],
        |pg| {
            (0x2000000..0x4000000).contains(&pg) && pg % 0x10000 != 0
                || (0x1100000..0x1104000).contains(&pg)
                || pg == 0x1200000
        },
        &[
            (0x1200000, &uts),
            (0x1200400, &mem_map),
            (0x1100000 + 511 * 8, &pml4_511),
            (0x1100000 + 273 * 8, &pml4_273),
            (0x1101000 + 510 * 8, &pdpt_510),
            (0x1102000 + 8 * 8, &pd_8),
            (0x1102000 + 9 * 8, &pd_9),
            (0x1103000, &direct_0),
        ],
    );
    let vmcoreinfo = "OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff81200000\n\
OFFSET(uts_namespace.name)=0\nSYMBOL(init_top_pgt)=ffffffff81100000\nSYMBOL(mem_map)=ffffffff81200400\n\
SIZE(page)=64\nOFFSET(page.flags)=0\nOFFSET(page._refcount)=52\nOFFSET(page.mapping)=24\nSYMBOL(_stext)=ffffffff81000000\nNUMBER(phys_base)=0\n\
KERNELOFFSET=0\nNUMBER(pgtable_l5_enabled)=0\n";
    let notes = vec![
        dumpconv_core::Note::new("CORE", 1, vec![0; 336]),
        dumpconv_core::Note::new("VMCOREINFO", 0, vmcoreinfo.as_bytes().to_vec()),
    ];
    (m, notes)
}

#[test]
fn makedumpfile_converts_our_elf() {
    if !have("makedumpfile") {
        eprintln!("makedumpfile not installed: skipped");
        return;
    }
    let (m, notes) = mdf_case();
    let (_t, dir) = out_dir();
    let mut phys = plan(Arch::X86_64, m.ranges().to_vec(), None);
    phys.notes = notes.clone();
    let mut l = MappingList::new();
    l.push(Mapping {
        virt: DIRECT,
        phys: 0,
        len: 0x9f000,
    });
    l.push(Mapping {
        virt: DIRECT + 0x100000,
        phys: 0x100000,
        len: 0x3f00000,
    });
    l.push(Mapping {
        virt: 0xffff_ffff_8100_0000,
        phys: 0x1000000,
        len: 0x400000,
    });
    l.normalize();
    // Extended numbering: 70,000 extra vmalloc-style aliases of 64 pages.
    let mut many = l.clone();
    for i in 0..70_000u64 {
        many.push(Mapping {
            virt: 0xffff_c900_0000_0000 + i * 0x2000,
            phys: 0x2000000 + (i % 64) * 0x1000,
            len: 0x1000,
        });
    }
    many.normalize();
    let mut paging = plan(Arch::X86_64, m.ranges().to_vec(), Some(l));
    paging.notes = notes.clone();
    let mut xnum = plan(Arch::X86_64, m.ranges().to_vec(), Some(many));
    xnum.notes = notes;
    let mut kdumps = Vec::new();
    for (name, p) in [
        ("mdf-phys.elf", &phys),
        ("mdf-paging.elf", &paging),
        ("mdf-xnum.elf", &xnum),
    ] {
        let path = dir.join(name);
        write(p, &m, &path);
        let out = dir.join(format!("{name}.kdump"));
        let _ = std::fs::remove_file(&out);
        let r = Command::new("makedumpfile")
            .args(["-c", "-d", "0", "--message-level", "31"])
            .arg(&path)
            .arg(&out)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        eprintln!("== {name}\n{text}");
        assert!(r.status.success(), "{name}: makedumpfile failed:\n{text}");
        let head = std::fs::read(&out).unwrap();
        assert_eq!(&head[..8], b"KDUMP   ", "{name}");
        kdumps.push(head);
    }
    // The same memory, whatever the ELF layout: makedumpfile writes the same kdump.
    assert!(
        kdumps.windows(2).all(|w| w[0] == w[1]),
        "kdump outputs differ"
    );
}

#[test]
fn gdb_prefers_real_mappings_over_vaddr0_fillers() {
    if !have("gdb") {
        eprintln!("gdb not installed: skipped");
        return;
    }
    // High RAM (16..31 MiB) is in no mapping: its vaddr-0 load spans virtual 0..15 MiB,
    // over a user page at 0x400000 whose physical page lies above it. gdb must read the
    // user page, not the filler.
    let m = synth(&[(0x0, 0x2000000, Piece::Data)], |_| false);
    let mut l = MappingList::new();
    l.push(Mapping {
        virt: 0xc000_0000,
        phys: 0,
        len: 0x1000000,
    });
    l.push(Mapping {
        virt: 0x40_0000,
        phys: 0x1f0_0000,
        len: 0x1000,
    });
    let (_t, dir) = out_dir();
    for arch in [Arch::X86, Arch::X86_64] {
        let pl = plan(arch, m.ranges().to_vec(), Some(l.clone()));
        let path = dir.join(format!("gdb-filler-{arch}.elf"));
        write(&pl, &m, &path);
        let got = gdb_read(&path, &[0x40_0010], 4);
        assert_eq!(got[0], expect(&m, 0x1f0_0010, 4), "{arch}");
    }
}
