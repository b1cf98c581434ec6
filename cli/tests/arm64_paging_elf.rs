//! The real arm64 guest (`arm64-4k`, tests/real-guests/) through the binary, with no
//! CPU state beyond what QEMU's arm64 dump holds (no system registers): the kernel's
//! root comes from VMCOREINFO.
//!
//! - `dumpconv --paging phys.elf -o out.elf`: every kernel-half gdbstub sample (read by
//!   QEMU's own MMU from the stopped guest) reads the same bytes from `out.elf`'s
//!   PT_LOADs, found by `p_vaddr` with a small ELF64 program-header reader written here;
//!   every address QEMU could not read has no PT_LOAD.
//! - `dumpconv translate phys.elf VA...` shows the levels and lands each sampled
//!   address on the physical bytes gdbstub saw (checked in pmemsave's `ram.raw`).
//!
//! Skips when the guest is not cached, unless DUMPCONV_REQUIRE_GUESTS=1.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::scratch;
use dumpconv_tests::guests::{guest, GdbSample};

fn dumpconv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dumpconv"))
}

/// (p_vaddr, p_offset, p_filesz) of every PT_LOAD of a little-endian ELF64 file,
/// PN_XNUM included (the count is then in section 0's sh_info).
fn loads(f: &File) -> Vec<(u64, u64, u64)> {
    let u16_at = |o: u64| {
        let mut b = [0u8; 2];
        f.read_exact_at(&mut b, o).unwrap();
        u16::from_le_bytes(b)
    };
    let u32_at = |o: u64| {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, o).unwrap();
        u32::from_le_bytes(b)
    };
    let u64_at = |o: u64| {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, o).unwrap();
        u64::from_le_bytes(b)
    };
    let mut ident = [0u8; 6];
    f.read_exact_at(&mut ident, 0).unwrap();
    assert_eq!(&ident[..4], b"\x7fELF");
    assert_eq!(ident[4], 2, "ELF64");
    assert_eq!(ident[5], 1, "little-endian");
    assert_eq!(u16_at(18), 183, "EM_AARCH64");
    let phoff = u64_at(32);
    let shoff = u64_at(40);
    let phentsize = u64::from(u16_at(54));
    let mut phnum = u64::from(u16_at(56));
    if phnum == 0xffff {
        phnum = u64::from(u32_at(shoff + 44));
    }
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&p| u32_at(p) == 1)
        .map(|p| (u64_at(p + 16), u64_at(p + 8), u64_at(p + 32)))
        .collect()
}

fn kernel_samples(samples: &[GdbSample]) -> Vec<&GdbSample> {
    samples
        .iter()
        .filter(|s| s.kind() != "user" && s.va >> 63 == 1)
        .collect()
}

#[test]
fn paging_elf_of_qemu_arm64_dump_serves_every_gdbstub_sample() {
    let Some(g) = guest("arm64-4k") else { return };
    let samples = g.gdbstub_samples();
    let kernel = kernel_samples(&samples);
    assert!(kernel.len() >= 300, "{} kernel samples", kernel.len());
    let tmp = scratch();
    let out = tmp.path().join("out.elf");
    let o = dumpconv()
        .arg("--paging")
        .arg(g.file("phys.elf"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("root from VMCOREINFO"), "{err}");

    let f = File::open(&out).unwrap();
    let mut loads = loads(&f);
    loads.sort_unstable();
    let find = |va: u64| {
        let i = loads.partition_point(|l| l.0 <= va);
        loads[..i]
            .iter()
            .rev()
            .take(64)
            .find(|l| va - l.0 < l.2)
            .copied()
    };
    // The bytes at `va`, PT_LOAD by PT_LOAD (a sample may cross into another run).
    let read_va = |va: u64, len: usize| -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = va + out.len() as u64;
            let (v, off, size) = find(at)?;
            let n = ((v + size - at) as usize).min(len - out.len());
            let mut piece = vec![0u8; n];
            f.read_exact_at(&mut piece, off + (at - v)).unwrap();
            out.extend_from_slice(&piece);
        }
        Some(out)
    };
    let (mut read, mut unmapped) = (0, 0);
    for s in kernel {
        match (&s.bytes, find(s.va)) {
            (Some(want), Some(_)) => {
                let got = read_va(s.va, want.len()).unwrap_or_else(|| {
                    panic!("{:#x} ({}): part of the sample is unmapped", s.va, s.label)
                });
                assert_eq!(&got, want, "{:#x} ({}) differs from gdbstub", s.va, s.label);
                read += 1;
            }
            (Some(_), None) => panic!("{:#x} ({}): no PT_LOAD maps it", s.va, s.label),
            (None, Some(l)) => panic!(
                "{:#x} ({}): QEMU could not read it but PT_LOAD {l:x?} maps it",
                s.va, s.label
            ),
            (None, None) => unmapped += 1,
        }
    }
    eprintln!(
        "{}: {read} samples read from the paging ELF, {unmapped} unmapped",
        g.name
    );
    assert!(
        read >= 300 && unmapped >= 1,
        "{read} read, {unmapped} unmapped"
    );
}

#[test]
fn translate_walks_from_the_vmcoreinfo_root() {
    let Some(g) = guest("arm64-4k") else { return };
    let samples = g.gdbstub_samples();
    // A sample of each kind, a few of each, and linux_banner.
    let mut chosen: Vec<&GdbSample> = Vec::new();
    for s in kernel_samples(&samples) {
        // Within one 4 KiB page, so the bytes are contiguous in physical memory too.
        let in_page = s
            .bytes
            .as_ref()
            .is_some_and(|b| (s.va & 0xfff) + b.len() as u64 <= 0x1000);
        if in_page && chosen.iter().filter(|c| c.kind() == s.kind()).count() < 4 {
            chosen.push(s);
        }
    }
    assert!(chosen.len() >= 20, "{} samples chosen", chosen.len());
    let o = dumpconv()
        .arg("translate")
        .arg("--json")
        .arg(g.file("phys.elf"))
        .args(chosen.iter().map(|s| format!("{:#x}", s.va)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("root from VMCOREINFO"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = json.as_array().expect("an array of translations");
    assert_eq!(rows.len(), chosen.len());
    let raw = File::open(g.file("ram.raw")).unwrap();
    for (s, t) in chosen.iter().zip(rows) {
        let phys = t["phys"]
            .as_u64()
            .unwrap_or_else(|| panic!("{:#x} ({}) not translated: {t}", s.va, s.label));
        let steps = t["steps"].as_array().expect("steps");
        assert!(
            (2..=4).contains(&steps.len()) && steps[0]["level"] == "L0",
            "{:#x}: {t}",
            s.va
        );
        let want = s.bytes.as_ref().unwrap();
        let mut got = vec![0u8; want.len()];
        raw.read_exact_at(&mut got, phys).unwrap();
        assert_eq!(&got, want, "{:#x} ({}) -> {phys:#x}", s.va, s.label);
    }
}
