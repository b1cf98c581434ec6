//! Issue 11, synthetic: page-table roots without CPU state. A small x86_64 "kernel" is
//! laid out by hand in sparse RAM (tests/src/synth.rs builds its tables; the expected
//! answers are the addresses chosen here, not what the code computes): its image at
//! 0xffffffff81000000 (physical 16 MiB), `init_uts_ns`, a banner, and its VMCOREINFO as
//! text and as ELF note, page-aligned, as Linux keeps them. Around it: decoys (a
//! VMCOREINFO whose root maps nothing, one whose utsname is not there), a truncated
//! copy, a root outside RAM, thousands of copies, and a second kernel (a kdump capture
//! kernel) that the CPU runs while the first has CRASHTIME.

use std::path::PathBuf;
use std::sync::Arc;

use dumpconv::pipeline::build_plan;
use dumpconv::roots::{find_kernels, KernelPick, RootSource};
use dumpconv::{ConvertOptions, ConvertReport, PagingOptions, Registry};
use dumpconv_core::{Arch, CpuState, Dump, Error, ErrorClass, NoProgress, VmcoreInfo};
use dumpconv_tests::synth::{Guest, PageSize, MIB2, RW};
use dumpconv_x86::PagingMode;

const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
const STEXT: u64 = 0xffff_ffff_8100_0000;
const UTS: u64 = 0xffff_ffff_8280_0000;
const RELEASE: &str = "6.1.0-synthetic";
const RAM_END: u64 = 0x1000_0000; // 256 MiB

/// Write `bytes` at physical `at` into the guest's sparse pages.
fn put(g: &mut Guest, at: u64, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        let a = at + i as u64;
        let page = g
            .pages
            .entry(a & !0xfff)
            .or_insert_with(|| vec![0u8; 4096].into_boxed_slice());
        page[(a & 0xfff) as usize] = *b;
    }
}

fn utsname(release: &str) -> Vec<u8> {
    let mut b = vec![0u8; 65 * 6];
    for (i, f) in ["Linux", "synth", release, "#1 SMP", "x86_64", "(none)"]
        .iter()
        .enumerate()
    {
        b[i * 65..i * 65 + f.len()].copy_from_slice(f.as_bytes());
    }
    b
}

fn vmcoreinfo_text(root: u64, phys_base: i64, extra: &str) -> String {
    format!(
        "OSRELEASE={RELEASE}\nPAGESIZE=4096\nSYMBOL(init_uts_ns)={UTS:x}\n\
         OFFSET(uts_namespace.name)=0\nSYMBOL(_stext)={STEXT:x}\n\
         SYMBOL(swapper_pg_dir)={:x}\nNUMBER(phys_base)={phys_base}\n\
         SYMBOL(init_top_pgt)={:x}\nNUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=0\n{extra}",
        (root as i64 - phys_base) as u64 + START_KERNEL_MAP,
        (root as i64 - phys_base) as u64 + START_KERNEL_MAP,
    )
}

fn note(desc: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&11u32.to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&0u32.to_le_bytes());
    n.extend_from_slice(b"VMCOREINFO\0\0");
    n.extend_from_slice(desc);
    n
}

/// A kernel loaded at `phys_base`: tables from `pool`, image 16..48 MiB above
/// phys_base mapped at __START_KERNEL_map + 16 MiB with 2 MiB pages, a direct map of
/// the first 8 MiB, utsname and a banner in the image. Returns the guest and its root.
fn kernel(phys_base: u64, pool: (u64, u64)) -> (Guest, u64) {
    let mut g = Guest::new(PagingMode::Level4, &[(0, RAM_END)], pool);
    for i in 0..16 {
        let off = 0x100_0000 + i * MIB2;
        g.map(START_KERNEL_MAP + off, phys_base + off, PageSize::M2, RW)
            .unwrap();
    }
    for i in 0..4 {
        g.map(0xffff_8880_0000_0000 + i * MIB2, i * MIB2, PageSize::M2, RW)
            .unwrap();
    }
    let uts_phys = UTS - START_KERNEL_MAP + phys_base;
    put(&mut g, uts_phys, &utsname(RELEASE));
    put(
        &mut g,
        uts_phys + 0x1000,
        b"Linux version 6.1.0-synthetic (synth@build) #1 SMP\n\0",
    );
    let root = g.root;
    (g, root)
}

fn dump(g: &Guest, cpus: Vec<CpuState>) -> Dump {
    Dump {
        path: PathBuf::from("synthetic.raw"),
        format: "raw",
        details: Vec::new(),
        arch: None,
        memory: Arc::new(g.memory()),
        cpus,
        notes: Vec::new(),
        vmcoreinfo: None,
    }
}

fn paging() -> ConvertOptions {
    ConvertOptions {
        paging: Some(PagingOptions::default()),
        ..ConvertOptions::default()
    }
}

fn plan(
    d: &Dump,
    o: &ConvertOptions,
) -> (
    dumpconv_core::Result<dumpconv_core::DumpPlan>,
    ConvertReport,
) {
    let mut r = ConvertReport::default();
    let p = build_plan(d, o, &Registry::builtin(), &NoProgress, &mut r);
    (p, r)
}

/// The real kernel at phys_base 0, its VMCOREINFO as text at 48 MiB and as a note at
/// 48 MiB + 8 KiB.
fn one_kernel() -> (Guest, u64, String) {
    let (mut g, root) = kernel(0, (0x100_0000, 0x180_0000));
    let text = vmcoreinfo_text(root, 0, "");
    put(&mut g, 0x300_0000, text.as_bytes());
    put(&mut g, 0x300_2000, &note(text.as_bytes()));
    (g, root, text)
}

#[test]
fn vmcoreinfo_found_in_ram_gives_the_root_the_arch_and_the_note() {
    let (g, root, text) = one_kernel();
    let d = dump(&g, Vec::new());
    let (p, r) = plan(&d, &paging());
    let p = p.unwrap();
    assert_eq!(p.arch, Arch::X86_64);
    let m = p.mappings.as_ref().expect("a paging view");
    assert_eq!(m.translate(STEXT), Some(0x100_0000));
    assert_eq!(m.translate(UTS), Some(0x280_0000));
    assert_eq!(
        p.vmcoreinfo.as_ref().map(VmcoreInfo::raw),
        Some(text.as_bytes())
    );
    assert_eq!(
        r.root.as_deref(),
        Some(format!("root 4level {root:#x} from vmcoreinfo (kernel 0)").as_str())
    );
    // One kernel, found at its note's address (both copies are the same text).
    let k = find_kernels(&d, &paging(), &Registry::builtin(), &[], true).unwrap();
    assert_eq!(k.list.len(), 1, "{:?}", k.rejected);
    assert_eq!(
        k.list[0].origin,
        dumpconv::roots::VmciOrigin::Ram {
            phys: 0x300_2000,
            copies: 2
        }
    );
    assert!(k.list[0].check.is_ok(), "{:?}", k.list[0].check);
}

#[test]
fn decoys_are_rejected_with_their_reason_and_the_real_kernel_wins() {
    let (mut g, _root, _) = one_kernel();
    // Below the real one (found first): same kernel identity, but its root is a zero
    // page in RAM (maps nothing).
    let decoy = vmcoreinfo_text(0x500_0000, 0, "");
    put(&mut g, 0x80_0000, decoy.as_bytes());
    // A copy whose utsname is not where it says: not a kernel at all.
    let ghost = vmcoreinfo_text(0x100_0000, 0, "").replace(&format!("{UTS:x}"), "ffffffff83f00000");
    put(&mut g, 0x90_0000, ghost.as_bytes());
    let d = dump(&g, Vec::new());
    let k = find_kernels(&d, &paging(), &Registry::builtin(), &[], true).unwrap();
    assert_eq!(k.list.len(), 2, "{:?}", k.rejected);
    let why = k.list[0].check.as_ref().unwrap_err();
    assert!(why.contains("does not map _stext"), "{why}");
    assert!(k.list[1].check.is_ok());
    assert!(
        k.rejected
            .iter()
            .any(|r| r.contains("ram@0x900000") && r.contains("init_uts_ns")),
        "{:?}",
        k.rejected
    );
    let (p, r) = plan(&d, &paging());
    let p = p.unwrap();
    assert_eq!(p.mappings.unwrap().translate(STEXT), Some(0x100_0000));
    assert!(r.root.unwrap().contains("(kernel 1)"));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("kernel 0") && w.contains("root rejected")),
        "{:?}",
        r.warnings
    );
    // Asking for the decoy is an input error naming the file, not an empty view...
    let o = ConvertOptions {
        kernel: Some(KernelPick::Index(0)),
        ..paging()
    };
    let e = plan(&d, &o).0.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Input, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("synthetic.raw") && msg.contains("does not map _stext"),
        "{msg}"
    );
    // ... unless the fallback is asked for: the physical view, with a warning.
    let o = ConvertOptions {
        kernel: Some(KernelPick::Index(0)),
        paging: Some(PagingOptions {
            fallback: true,
            ..PagingOptions::default()
        }),
        ..ConvertOptions::default()
    };
    let (p, r) = plan(&d, &o);
    assert!(p.unwrap().mappings.is_none());
    assert!(
        r.warnings.iter().any(|w| w.contains("--paging-fallback")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn root_outside_ram_and_truncated_text_are_named() {
    let (mut g, _root) = kernel(0, (0x100_0000, 0x180_0000));
    // The only full VMCOREINFO puts the root past the end of RAM.
    let far = vmcoreinfo_text(RAM_END + 0x1000_0000, 0, "");
    put(&mut g, 0x300_0000, far.as_bytes());
    // A truncated copy: cut inside a line.
    let cut = &far.as_bytes()[..far.find("SYMBOL(_stext)").unwrap() + 9];
    put(&mut g, 0x310_0000, cut);
    let d = dump(&g, Vec::new());
    let k = find_kernels(&d, &paging(), &Registry::builtin(), &[], true).unwrap();
    assert_eq!(k.list.len(), 1);
    let why = k.list[0].check.as_ref().unwrap_err();
    assert!(why.contains("outside RAM"), "{why}");
    assert!(
        k.rejected
            .iter()
            .any(|r| r.contains("0x3100000") && r.contains("truncated")),
        "{:?}",
        k.rejected
    );
    let e = plan(&d, &paging()).0.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Input);
    assert!(e.to_string().contains("outside RAM"), "{e}");
}

#[test]
fn without_vmcoreinfo_the_scan_guesses_and_says_so() {
    let (g, root) = kernel(0, (0x100_0000, 0x180_0000));
    let d = dump(&g, Vec::new());
    let (p, r) = plan(&d, &paging());
    let p = p.unwrap();
    assert_eq!(p.mappings.unwrap().translate(STEXT), Some(0x100_0000));
    assert!(r.root.unwrap().contains(&format!("{root:#x} from scan")));
    assert!(
        r.warnings.iter().any(|w| w.contains("GUESS")),
        "{:?}",
        r.warnings
    );
    // RAM with neither VMCOREINFO nor a banner: an error, not an empty view.
    let empty = Guest::new(
        PagingMode::Level4,
        &[(0, 0x100_0000)],
        (0x80_0000, 0x90_0000),
    );
    let d = dump(&empty, Vec::new());
    let e = plan(&d, &paging()).0.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Input);
    assert!(e.to_string().contains("no page-table root"), "{e}");
    // --root scan forces it even when VMCOREINFO would answer.
    let (g, root, _) = one_kernel();
    let o = ConvertOptions {
        root_source: Some(RootSource::Scan),
        ..paging()
    };
    let (_, r) = plan(&dump(&g, Vec::new()), &o);
    assert!(r.root.unwrap().contains(&format!("{root:#x} from scan")));
}

#[test]
fn thousands_of_copies_are_one_kernel_in_bounded_work() {
    let (mut g, _root, text) = one_kernel();
    // 3000 more identical copies (a process that read /sys/kernel/vmcoreinfo...) and
    // 3000 garbage candidates.
    for i in 0..3000u64 {
        put(&mut g, 0x400_0000 + i * 0x1000, text.as_bytes());
        put(
            &mut g,
            0x400_0000 + (3000 + i) * 0x1000,
            b"OSRELEASE=\x01\x02\x03\n",
        );
    }
    let d = dump(&g, Vec::new());
    let k = find_kernels(&d, &paging(), &Registry::builtin(), &[], true).unwrap();
    assert_eq!(k.list.len(), 1);
    assert!(
        k.rejected.iter().any(|r| r.contains("not examined")),
        "{:?}",
        k.rejected
    );
    let (p, _) = plan(&d, &paging());
    assert_eq!(
        p.unwrap().mappings.unwrap().translate(STEXT),
        Some(0x100_0000)
    );
}

#[test]
fn the_crashed_kernel_beside_a_running_capture_kernel() {
    // Crashed kernel at phys_base 0 (tables at 16 MiB), capture kernel at 128 MiB
    // (tables at 152 MiB): the same virtual addresses, other physical pages.
    let (mut g, root_a) = kernel(0, (0x100_0000, 0x180_0000));
    let (g2, root_b) = kernel(0x800_0000, (0x980_0000, 0xa00_0000));
    g.pages.extend(g2.pages.clone());
    let a = vmcoreinfo_text(root_a, 0, "CRASHTIME=1764000000\n");
    let b = vmcoreinfo_text(root_b, 0x800_0000, "");
    put(&mut g, 0x300_0000, &note(a.as_bytes()));
    put(&mut g, 0xb00_0000, &note(b.as_bytes()));
    let cpu = g2.cpu(0);
    let d = dump(&g, vec![cpu.clone()]);
    let k = find_kernels(&d, &paging(), &Registry::builtin(), &[cpu], true).unwrap();
    assert_eq!(k.list.len(), 2, "{:?}", k.rejected);
    assert_eq!(k.list[0].role(), "crashed");
    assert_eq!(k.list[1].role(), "running");
    assert_eq!(k.list[1].running_cpus, vec![0]);
    // Default: the crashed kernel, with a warning.
    let (p, r) = plan(&d, &paging());
    let m = p.unwrap().mappings.unwrap();
    assert_eq!(m.translate(STEXT), Some(0x100_0000));
    assert!(
        r.warnings.iter().any(|w| w.contains("crashed")),
        "{:?}",
        r.warnings
    );
    // --kernel running: the CPU's, the capture kernel.
    let o = ConvertOptions {
        kernel: Some(KernelPick::Running),
        ..paging()
    };
    let (p, r) = plan(&d, &o);
    assert_eq!(
        p.unwrap().mappings.unwrap().translate(STEXT),
        Some(0x900_0000)
    );
    assert!(r.root.unwrap().contains("from cpu (kernel 1)"));
    // --root cpu without --kernel: the CPU, whatever it runs.
    let o = ConvertOptions {
        root_source: Some(RootSource::Cpu),
        ..paging()
    };
    let (p, _) = plan(&d, &o);
    assert_eq!(
        p.unwrap().mappings.unwrap().translate(STEXT),
        Some(0x900_0000)
    );
    // --kernel 5: a usage error listing the kernels.
    let o = ConvertOptions {
        kernel: Some(KernelPick::Index(5)),
        ..paging()
    };
    let e = plan(&d, &o).0.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    assert!(e.to_string().contains("2 kernel(s)"), "{e}");
}
