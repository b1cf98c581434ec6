//! Reading the dumped kernel's virtual memory: the one thing the classifier needs from
//! the architecture. `struct page` arrays and `mem_section` tables live at kernel
//! virtual addresses (vmemmap, the direct map); how those translate is the walker's
//! business.

use dumpconv_core::{ArchWalker, CpuState, PhysicalMemory, WalkOptions};

/// Kernel virtual memory of the dumped machine.
pub trait KernelMemory: Sync {
    /// Fill `buf` from `vaddr`. Err(why) when any byte is unmapped or not in the dump.
    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), String>;
}

/// Kernel virtual memory through a walker and a CPU state whose tables map the kernel
/// (a CPU of the dump, or the kernel's own root from VMCOREINFO).
pub struct WalkerMemory<'a> {
    pub walker: &'a dyn ArchWalker,
    pub cpu: &'a CpuState,
    pub mem: &'a dyn PhysicalMemory,
    pub opts: WalkOptions,
}

impl KernelMemory for WalkerMemory<'_> {
    fn read(&self, vaddr: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut done = 0usize;
        while done < buf.len() {
            let va = vaddr
                .checked_add(done as u64)
                .ok_or_else(|| format!("address {vaddr:#x} + {done:#x} overflows"))?;
            let t = self
                .walker
                .translate(self.cpu, self.mem, &self.opts, va)
                .map_err(|e| format!("{va:#x}: {e}"))?;
            let Some(pa) = t.phys else {
                return Err(format!(
                    "{va:#x} is not mapped ({})",
                    t.fault.as_deref().unwrap_or("no translation")
                ));
            };
            // The leaf maps up to its end; 4 KiB when the walker does not say.
            let leaf = t.page_size.filter(|s| s.is_power_of_two()).unwrap_or(4096);
            let room = leaf - (va & (leaf - 1));
            let n = room.min((buf.len() - done) as u64) as usize;
            self.mem
                .read_at(pa, &mut buf[done..done + n])
                .map_err(|e| format!("{va:#x} (physical {pa:#x}): {e}"))?;
            done += n;
        }
        Ok(())
    }
}

/// Read a pointer-sized little-endian value (every architecture dumpconv walks) (`ptr_size` 4 or 8) from `b` at `off`.
pub(crate) fn word(b: &[u8], off: usize, size: u64) -> Option<u64> {
    match size {
        8 => b
            .get(off..off + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes),
        4 => b
            .get(off..off + 4)
            .and_then(|s| s.try_into().ok())
            .map(|a: [u8; 4]| u64::from(u32::from_le_bytes(a))),
        _ => None,
    }
}

/// A 32-bit value from `b` at `off`.
pub(crate) fn word32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}
