//! Sanity checks on the real arm64 guest (`arm64-4k`, tests/real-guests/): QEMU's own
//! aarch64 dumps read through dumpconv's readers equal the pmemsave image, and the
//! gdbstub reference of kernel virtual memory is what the page-table tests expect.
//!
//! Every QEMU file of the guest must be read: a reader error fails the test.

use std::path::Path;

use dumpconv_formats::OpenOptions;
use dumpconv_tests::guests::{arm64_guests, Guest};

/// Every RAM byte of `path` (read through dumpconv's reader) equals the pmemsave image.
fn assert_ram_equals_pmemsave(g: &Guest, path: &Path) {
    let dump = dumpconv_formats::open(path, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    g.assert_ram_equals_pmemsave(path, dump.memory.as_ref());
}

#[test]
fn arm64_qemu_dumps_read_identical_to_pmemsave() {
    for g in arm64_guests() {
        for f in ["phys.elf", "kdump-zlib.flat", "kdump-zlib.rearranged.kdump"] {
            let path = g.file(f);
            assert!(
                path.exists(),
                "{}: {f} missing from the guest cache",
                g.name
            );
            assert_ram_equals_pmemsave(&g, &path);
        }
    }
}

#[test]
fn arm64_gdbstub_reference_is_usable() {
    for g in arm64_guests() {
        assert!(g.is_aarch64(), "{}", g.name);
        let samples = g.gdbstub_samples();
        assert!(
            samples.len() >= 300,
            "{}: {} samples",
            g.name,
            samples.len()
        );
        for kind in [
            "named", "text", "rodata", "data", "bss", "linear", "vmemmap", "vmalloc",
        ] {
            assert!(
                samples
                    .iter()
                    .any(|s| s.kind() == kind && s.bytes.is_some()),
                "{}: no readable {kind} sample",
                g.name
            );
        }
        // the kernel's own image and linear map are always mapped; the image header and
        // the freed init section never are
        for s in &samples {
            match s.kind() {
                "named" | "text" | "rodata" | "data" | "bss" | "linear" => {
                    assert!(s.bytes.is_some(), "{}: {} unreadable", g.name, s.label)
                }
                "unmapped" => assert!(s.bytes.is_none(), "{}: {} readable", g.name, s.label),
                _ => {}
            }
        }
        // linux_banner at its System.map address + KASLR offset holds the console's banner
        let banner_va = g.symbol("linux_banner").unwrap() + g.kernel_offset();
        let s = samples
            .iter()
            .find(|s| s.label == "named:linux_banner")
            .expect("a linux_banner sample");
        assert_eq!(s.va, banner_va, "{}", g.name);
        let banner = g.banner();
        let got = s.bytes.as_deref().unwrap();
        let n = got.len().min(banner.len());
        assert_eq!(&got[..n], &banner.as_bytes()[..n], "{}", g.name);
        // the kernel root QEMU's CPUs used is swapper_pg_dir, as VMCOREINFO says
        let vmci = g.vmcoreinfo();
        let num = |k: &str| {
            vmci.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap())
                .unwrap_or_else(|| panic!("{}: no {k} in VMCOREINFO", g.name))
        };
        let swapper = num("SYMBOL(swapper_pg_dir)").wrapping_sub(num("NUMBER(kimage_voffset)"));
        for c in g.meta["cpus"].as_array().unwrap() {
            let ttbr1 = dumpconv_tests::guests::as_u64(&c["ttbr1_el1"]);
            assert_eq!(
                ttbr1 & 0x0000_ffff_ffff_fffe,
                swapper,
                "{} cpu {}",
                g.name,
                c["index"]
            );
        }
        // user samples name the CPU whose TTBR0_EL1 translated them
        let ncpus = g.meta["cpus"].as_array().unwrap().len() as u32;
        assert!(samples.iter().all(|s| s.cpu() < ncpus), "{}", g.name);
        eprintln!(
            "{}: {} gdbstub samples, {} readable",
            g.name,
            samples.len(),
            samples.iter().filter(|s| s.bytes.is_some()).count()
        );
    }
}
