//! Page filtering (`--dump-level`): `PageLayout::from_vmcoreinfo` (struct page layout,
//! memory model, page flags from VMCOREINFO), then `classify` (locating the `struct
//! page` arrays, flat or through `mem_section`, and classifying every RAM page from
//! them) over fuzzed kernel memory, and `zero_pages` over fuzzed RAM.
//!
//! Input: VMCOREINFO text, a NUL, 16 header bytes (the RAM's PFN runs, pointer size,
//! how kernel memory maps), then kernel memory. A kernel virtual address reads the
//! bytes at its offset modulo their length, so any pointer the input holds leads
//! somewhere; with bit 1 of byte 8, addresses in odd multiples of that length are
//! unmapped (reads fail, as through a page-table hole).
#![no_main]
use libfuzzer_sys::fuzz_target;

use dumpconv_core::VmcoreInfo;
use dumpconv_filter::{classify, KernelMemory, PageLayout};

struct Kmem {
    bytes: Vec<u8>,
    holes: bool,
}

impl KernelMemory for Kmem {
    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), String> {
        let len = self.bytes.len() as u64;
        for (i, b) in buf.iter_mut().enumerate() {
            let va = vaddr
                .checked_add(i as u64)
                .ok_or_else(|| format!("{vaddr:#x}: overflow"))?;
            if self.holes && (va / len) % 2 == 1 {
                return Err(format!("{va:#x}: not mapped"));
            }
            *b = self.bytes[(va % len) as usize];
        }
        Ok(())
    }
}

fn u32_at(h: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]])
}

fuzz_target!(|data: &[u8]| {
    let Some(nul) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (text, rest) = (&data[..nul], &data[nul + 1..]);
    if rest.len() < 16 {
        return;
    }
    let (h, kmem) = rest.split_at(16);
    let v = VmcoreInfo::parse(text);
    let ptr_size = if h[8] & 1 == 0 { 8 } else { 4 };
    let Ok(layout) = PageLayout::from_vmcoreinfo(&v, ptr_size) else {
        return;
    };
    // One or two PFN runs of at most 64 Ki pages each, below PFN 2^24.
    let s1 = u64::from(u32_at(h, 0) & 0x00ff_ffff);
    let n1 = u64::from(u16::from_le_bytes([h[4], h[5]])) + 1;
    let mut ram = vec![(s1, s1 + n1)];
    let gap = u64::from(h[6]) << 8;
    let n2 = u64::from(h[7]) << 8;
    if gap > 0 && n2 > 0 {
        ram.push((s1 + n1 + gap, s1 + n1 + gap + n2));
    }
    let mut bytes = kmem.to_vec();
    if bytes.is_empty() {
        bytes.push(0);
    }
    let km = Kmem {
        bytes,
        holes: h[8] & 2 != 0,
    };
    if let Ok(c) = classify(&layout, &km, &ram, 1) {
        let level = dumpconv_filter::DumpLevel::new(31).unwrap_or_default();
        let _ = c.excluded_pfns(level);
        let _ = c.excluded_count(level);
    }
    let mem =
        dumpconv_fuzz::FuzzRam::new(s1 << 12, kmem.to_vec(), usize::from(h[9]) << 12, 1 << 20);
    let pfns: Vec<(u64, u64)> = mem.ranges_pfns().into_iter().collect();
    let _ = dumpconv_filter::zero::zero_pages(&mem, &pfns, 4096, 1);
});
