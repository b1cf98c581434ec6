//! Finding kernels and page-table roots in fuzzed RAM, as `--paging` does for inputs
//! without a VMCOREINFO note or CPU state (raw images, LiME, AVML): `ramscan::scan_ram`
//! (VMCOREINFO notes and texts at page starts, "Linux version " banners) with small
//! read blocks, `roots::find_kernels`, `pick_kernel` and `choose_root` (the kernel's
//! root from VMCOREINFO, else the walkers' last-resort `scan_roots` for tables that map
//! a banner).
//!
//! Input: 16 header bytes (architecture selector, read-block size, a hole's place and
//! size, RAM base), then the RAM.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;

use dumpconv::roots::{choose_root, find_kernels, pick_kernel};
use dumpconv::{ConvertOptions, PagingOptions, Registry};
use dumpconv_core::ramscan::{scan_ram, ScanLimits};
use dumpconv_core::{Arch, Dump};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (h, ram) = data.split_at(16);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[8..16]);
    // A page-aligned base below 2^44.
    let base = u64::from_le_bytes(b) & 0x0000_0fff_ffff_f000;
    let split = usize::from(h[2]) * 4096;
    let gap = u64::from(h[3]) << 20;
    let mem = dumpconv_fuzz::FuzzRam::new(base, ram.to_vec(), split, gap);
    let arch = match h[0] % 4 {
        0 => None,
        1 => Some(Arch::X86_64),
        2 => Some(Arch::I386),
        _ => Some(Arch::AARCH64),
    };
    let limits = ScanLimits {
        block: 4096 << (h[1] % 4),
        max_candidates: 64,
        max_found: 4,
        max_banners: 16,
    };
    let _ = scan_ram(&mem, &limits);

    let dump = Dump {
        path: "ramscan_roots.in".into(),
        format: "raw",
        details: Vec::new(),
        arch,
        memory: Arc::new(mem),
        cpus: Vec::new(),
        notes: Vec::new(),
        vmcoreinfo: None,
    };
    let mut opts = ConvertOptions::default();
    opts.paging = Some(PagingOptions::default());
    let registry = Registry::builtin();
    let Ok(kernels) = find_kernels(&dump, &opts, &registry, &[], true) else {
        return;
    };
    let mut warnings = Vec::new();
    let _ = pick_kernel(&dump, &kernels, None, &mut warnings);
    let _ = choose_root(&dump, &opts, &registry, &kernels, &[], &mut warnings);
});
