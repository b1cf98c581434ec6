//! Copying physical memory into a sink: large positioned reads, all-zero blocks turned
//! into holes. Shared by the raw writer and the ELF writer (whose memory area is a raw
//! copy of the plan's ranges).

use dumpconv_core::{is_zero, Error, Extent, PhysRange, PhysicalMemory, Progress, Result, Sink};

/// Bytes read from memory at a time. Large enough that per-read overhead (a positioned
/// read, a segment look-up) vanishes, small enough to stay in L2/L3-ish territory and
/// keep memory use flat whatever the dump size.
pub const CHUNK: u64 = 4 << 20;

/// Granularity of zero detection: one x86 page, which is also the block size of the
/// file systems we write to, so a skipped block can become a real hole. Callers keep
/// output offsets congruent to physical addresses modulo this value, so that physical
/// page boundaries are also file block boundaries.
pub const ZERO_BLOCK: u64 = 4096;

/// What a copy did, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Bytes written as data.
    pub written: u64,
    /// Bytes skipped because they are zero (holes in a file, zeros in a stream).
    pub skipped: u64,
}

impl CopyStats {
    pub fn add(&mut self, o: CopyStats) {
        self.written += o.written;
        self.skipped += o.skipped;
    }
}

/// Copies ranges of physical memory to a sink, holding one reusable buffer of
/// [`CHUNK`] bytes.
#[derive(Debug)]
pub struct RangeCopier {
    buf: Vec<u8>,
}

impl Default for RangeCopier {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeCopier {
    pub fn new() -> Self {
        RangeCopier {
            buf: vec![0; CHUNK as usize],
        }
    }

    /// Append the bytes of `range` at the sink's current position. Zero blocks
    /// ([`ZERO_BLOCK`] aligned in physical address space, partial blocks at the range
    /// edges included) and memory the source knows to be zero ([`Extent::Zero`]) go
    /// through `sink.skip`. Progress advances by every byte of the range.
    pub fn copy(
        &mut self,
        mem: &dyn PhysicalMemory,
        range: PhysRange,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<CopyStats> {
        let mut stats = CopyStats::default();
        let mut addr = range.start;
        while addr < range.end {
            // Known zeros (a hole of a sparse input, an ELF p_filesz < p_memsz tail):
            // no read at all.
            let data_end = match mem.extent(addr, range.end - addr) {
                Extent::Zero(len) => {
                    let n = len.clamp(1, range.end - addr);
                    sink.skip(n)?;
                    stats.skipped += n;
                    progress.advance(n);
                    addr += n;
                    continue;
                }
                // Missing bytes are read too: the read says which page is missing.
                Extent::Data(len) | Extent::Missing(len) => addr + len.clamp(1, range.end - addr),
            };
            // End chunks on CHUNK-aligned addresses so every chunk after the first starts
            // on a block boundary, and where the data ends (a hole follows).
            let chunk_end = (addr / CHUNK + 1)
                .checked_mul(CHUNK)
                .map_or(data_end, |e| e.min(data_end));
            let n = (chunk_end - addr) as usize;
            let buf = &mut self.buf[..n];
            mem.read_at(addr, buf)?;
            stats.add(emit(addr, buf, sink)?);
            progress.advance(n as u64);
            addr = chunk_end;
        }
        Ok(stats)
    }
}

/// Write `buf` (the bytes at physical `addr`), coalescing runs of data blocks into one
/// write and runs of zero blocks into one skip.
fn emit(addr: u64, buf: &[u8], sink: &mut dyn Sink) -> Result<CopyStats> {
    let mut stats = CopyStats::default();
    let mut run_start = 0usize;
    let mut run_zero = None::<bool>;
    let mut i = 0usize;
    while i < buf.len() {
        let a = addr + i as u64;
        // Saturating: the last block of the address space ends at u64::MAX, not 2^64.
        let next_block = (a | (ZERO_BLOCK - 1)).saturating_add(1);
        let block_end = (next_block - addr).min(buf.len() as u64) as usize;
        let zero = is_zero(&buf[i..block_end]);
        if run_zero != Some(zero) {
            if let Some(z) = run_zero {
                flush(&buf[run_start..i], z, sink, &mut stats)?;
            }
            run_start = i;
            run_zero = Some(zero);
        }
        i = block_end;
    }
    if let Some(z) = run_zero {
        flush(&buf[run_start..], z, sink, &mut stats)?;
    }
    Ok(stats)
}

fn flush(run: &[u8], zero: bool, sink: &mut dyn Sink, stats: &mut CopyStats) -> Result<()> {
    if zero {
        sink.skip(run.len() as u64)?;
        stats.skipped += run.len() as u64;
    } else {
        sink.write_all(run)?;
        stats.written += run.len() as u64;
    }
    Ok(())
}

/// Check that `ranges` are sorted, disjoint, non-empty and all RAM of `mem`, so a
/// writer fails before writing anything rather than half-way through.
pub fn check_ranges(ranges: &[PhysRange], mem: &dyn PhysicalMemory) -> Result<()> {
    let mut prev_end = None::<u64>;
    for r in ranges {
        if r.is_empty() {
            return Err(Error::invalid(format!(
                "empty range at {:#x} in the plan",
                r.start
            )));
        }
        if prev_end.is_some_and(|e| r.start < e) {
            return Err(Error::invalid(format!(
                "plan ranges are not sorted and disjoint (range at {:#x})",
                r.start
            )));
        }
        if !mem.is_ram(r.start, r.len()) {
            return Err(Error::invalid(format!(
                "plan range {:#x}-{:#x} is not entirely RAM of the input",
                r.start, r.end
            )));
        }
        prev_end = Some(r.end);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_at_the_top_of_the_address_space() {
        use dumpconv_core::{NoProgress, StreamSink};
        struct Top;
        impl PhysicalMemory for Top {
            fn ranges(&self) -> &[PhysRange] {
                const R: [PhysRange; 1] = [PhysRange {
                    start: u64::MAX - 0x2000,
                    end: u64::MAX,
                }];
                &R
            }
            fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = (paddr.wrapping_add(i as u64) % 251) as u8;
                }
                Ok(())
            }
        }
        let mut s = StreamSink::new(Vec::new(), "t");
        let r = Top.ranges()[0];
        let st = RangeCopier::new()
            .copy(&Top, r, &mut s, &NoProgress)
            .unwrap();
        assert_eq!(st.written + st.skipped, 0x2000);
        let out = s.into_inner();
        assert_eq!(out.len(), 0x2000);
        assert_eq!(out[5], ((r.start + 5) % 251) as u8);
    }
}
