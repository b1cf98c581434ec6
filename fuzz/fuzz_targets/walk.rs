//! The page-table walkers (x86: 32-bit, PAE, 4-level, 5-level; aarch64: every granule
//! and VA size) over fuzzed RAM with fuzzed roots and registers, through the registry:
//! a whole walk, a two-CPU view and translations of fuzzed addresses.
//!
//! Input: 64 header bytes (selector, mode, phys bits, root, registers, a test address,
//! RAM base), then the RAM.
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv_core::mapping::MappingList;
use dumpconv_core::view::{build_view, ViewPolicy};
use dumpconv_core::walker::WalkOptions;
use dumpconv_core::{Arch, CpuState, PhysRange, PhysicalMemory};

struct Ram {
    base: u64,
    bytes: Vec<u8>,
    ranges: Vec<PhysRange>,
}

impl PhysicalMemory for Ram {
    fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }
    fn read_at(&self, paddr: u64, buf: &mut [u8]) -> dumpconv_core::Result<()> {
        let start = paddr
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok());
        let src = start
            .and_then(|s| Some((s, s.checked_add(buf.len())?)))
            .and_then(|(s, e)| self.bytes.get(s..e));
        match src {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(dumpconv_core::Error::invalid(format!(
                "physical {paddr:#x} outside fuzz RAM"
            ))),
        }
    }
}

fn u64_at(h: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[i..i + 8]);
    u64::from_le_bytes(b)
}

const X86_MODES: [&str; 4] = ["32bit", "pae", "4level", "5level"];
const ARM_MODES: [&str; 6] = ["4k-48", "4k-39", "16k-47", "64k-42", "4k-52", "64k-52"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let (h, ram) = data.split_at(64);
    let mut bytes = ram.to_vec();
    // Page-align the RAM so tables at its end are whole.
    let len = bytes.len().div_ceil(4096).max(1) * 4096;
    bytes.resize(len, 0);
    // RAM at a page-aligned base below 4 GiB taken from the input.
    let base = u64_at(h, 48) & 0xffff_f000;
    let mem = Ram {
        ranges: vec![PhysRange::with_len(base, len as u64)],
        base,
        bytes,
    };
    let reg = dumpconv::Registry::builtin();
    let sel = h[0];
    let arch = match sel % 3 {
        0 => Arch::X86_64,
        1 => Arch::I386,
        _ => Arch::AARCH64,
    };
    // Mostly a root inside (or just past) the RAM; with bit 6 of the selector, any value.
    let root = if sel & 0x40 != 0 {
        u64_at(h, 8)
    } else {
        base + u64_at(h, 8) % (len as u64 * 2)
    };
    let cpu = if sel & 0x80 != 0 {
        // Registers straight from the input.
        let mut c = CpuState::new(0, Some(arch));
        if arch == Arch::AARCH64 {
            c.set_reg("ttbr0_el1", base + u64_at(h, 16) % (len as u64 * 2));
            c.set_reg("ttbr1_el1", root);
            c.set_reg("tcr_el1", u64_at(h, 24));
            c.set_reg("sctlr_el1", u64_at(h, 32) | 1);
        } else {
            c.set_reg("cr3", root);
            c.set_reg("cr0", u64_at(h, 16) | 0x8000_0001);
            c.set_reg("cr4", u64_at(h, 24));
            c.set_reg("efer", u64_at(h, 32));
        }
        c
    } else {
        let modes: &[&str] = if arch == Arch::AARCH64 {
            &ARM_MODES
        } else {
            &X86_MODES
        };
        let mode = modes[usize::from(h[1]) % modes.len()];
        match reg.cpu_from_root(Some(arch), mode, root) {
            Ok(c) => c,
            Err(_) => return,
        }
    };
    let Ok((walker, _)) = reg.walker_for(arch, None) else {
        return;
    };
    // A small table budget keeps looping tables cheap (about 2 M leaves at most), so the
    // fuzzer spends its time on variety; the engine's own leaf and mapping bounds, which
    // the default budget reaches, have unit tests in core/src/paging.rs.
    let opts = WalkOptions {
        max_phys_bits: 36 + h[2] % 17,
        clear_mask: 0,
        max_table_pages: 1 << 12,
    };
    let mut out = MappingList::new();
    let _ = walker.walk(&cpu, &mem, &opts, &mut out);
    let mut second = cpu.clone();
    second.index = 1;
    let _ = build_view(
        walker.as_ref(),
        &[cpu.clone(), second],
        &mem,
        &opts,
        ViewPolicy::default(),
    );
    let mut rng = dumpconv_fuzz::Rng::from_bytes(data);
    for i in 0..8 {
        let va = if i == 0 { u64_at(h, 40) } else { rng.next() };
        let _ = walker.translate(&cpu, &mem, &opts, va);
    }
});
