//! AVML's compressed LiME variant (`lime_compressed`, docs/formats.md#avml): the LiME
//! header (`dumpconv_formats::lime::RangeHeader`) with magic `AVML` and version 2, each
//! range cut into blocks of at most 16 MiB, one header per block; the block's bytes as a
//! snappy *framed* stream followed by the stream's length as a little-endian u64 (so a
//! reader can skip a block without decompressing it). All-zero blocks are left out, as
//! AVML does: readers fill the gap with zeros.

use dumpconv_core::memory::for_each_extent;
use dumpconv_core::{
    is_zero, DumpPlan, DumpWriter, Extent, PhysRange, PhysicalMemory, Progress, Result, Sink,
};
use dumpconv_formats::avml::AVML_BLOCK;
use dumpconv_formats::lime::RangeHeader;
use dumpconv_raw::check_ranges;
use std::io::Write;

/// Writes a plan as an AVML compressed image.
#[derive(Debug, Default, Clone, Copy)]
pub struct AvmlWriter;

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AvmlStats {
    /// Blocks written (compressed).
    pub blocks: u64,
    /// All-zero blocks left out.
    pub zero_blocks: u64,
}

impl AvmlWriter {
    pub fn write_with_stats(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<AvmlStats> {
        // Snappy is the format's codec: --compress, --level, --threads have no meaning.
        if let Some(k) = plan.options.keys().next() {
            return Err(dumpconv_core::Error::invalid(format!(
                "avml output takes no option {k:?}: its blocks are always snappy-compressed"
            )));
        }
        check_ranges(&plan.ranges, mem)?;
        if plan.mappings.is_some() {
            progress
                .warn("an AVML image is physical: the virtual mappings (--paging) are not written");
        }
        let mut stats = AvmlStats::default();
        let mut buf = vec![0u8; AVML_BLOCK as usize];
        let mut packed = Vec::with_capacity(AVML_BLOCK as usize / 2);
        progress.start("writing", plan.total_bytes());
        for r in &plan.ranges {
            let mut start = r.start;
            while start < r.end {
                let end = r.end.min(start.saturating_add(AVML_BLOCK));
                let block = PhysRange::new(start, end);
                let data = &mut buf[..block.len() as usize];
                // Known zeros (holes of a sparse input, zero fill) are not read; a
                // block of nothing else is left out without reading.
                let known_zero = mem.extent(start, block.len()) == Extent::Zero(block.len());
                if !known_zero {
                    fill_block(mem, block, data)?;
                }
                if known_zero || is_zero(data) {
                    stats.zero_blocks += 1;
                } else {
                    packed.clear();
                    let mut enc = snap::write::FrameEncoder::new(&mut packed);
                    // Writing into a Vec cannot fail; an error here is a snap bug.
                    enc.write_all(data)
                        .and_then(|()| enc.flush())
                        .map_err(|e| dumpconv_core::Error::encode("snappy", e))?;
                    drop(enc);
                    sink.write_all(&RangeHeader::avml(block).encode())?;
                    sink.write_all(&packed)?;
                    sink.write_all(&(packed.len() as u64).to_le_bytes())?;
                    stats.blocks += 1;
                }
                progress.advance(block.len());
                start = end;
            }
        }
        sink.finish()?;
        progress.finish();
        Ok(stats)
    }
}

/// Fill `data` with the bytes of `block`: known zeros without reading, the rest read.
fn fill_block(mem: &dyn PhysicalMemory, block: PhysRange, data: &mut [u8]) -> Result<()> {
    for_each_extent(mem, block, |addr, e| {
        let at = (addr - block.start) as usize;
        let part = &mut data[at..at + e.len() as usize];
        match e {
            Extent::Zero(_) => part.fill(0),
            Extent::Data(_) | Extent::Missing(_) => mem.read_at(addr, part)?,
        }
        Ok(())
    })
}

impl DumpWriter for AvmlWriter {
    fn name(&self) -> &str {
        "avml"
    }

    fn description(&self) -> &str {
        "AVML compressed LiME (avml --compress): snappy blocks of up to 16 MiB, zero blocks left out"
    }

    fn extensions(&self) -> &[&str] {
        &["avml"]
    }

    /// Its blocks are compressed already: a .zst around it would gain nothing.
    fn compresses_itself(&self) -> bool {
        true
    }

    fn options(&self) -> Option<&[&str]> {
        Some(&[])
    }

    fn options_note(&self) -> Option<&str> {
        Some("its blocks are always snappy-compressed")
    }

    fn write(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.write_with_stats(plan, mem, sink, progress).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use dumpconv_core::{Arch, NoProgress, StreamSink};
    use std::collections::BTreeMap;
    use std::io::Read;

    /// 40 MiB of RAM from 1 MiB: blocks at 1, 17 and 33 MiB; the middle one all zero.
    struct Mem;
    const RAM: [PhysRange; 1] = [PhysRange {
        start: 1 << 20,
        end: 41 << 20,
    }];
    fn byte(a: u64) -> u8 {
        if (17 << 20..33 << 20).contains(&a) {
            0
        } else {
            (a % 253) as u8
        }
    }
    impl PhysicalMemory for Mem {
        fn ranges(&self) -> &[PhysRange] {
            &RAM
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = byte(paddr + i as u64);
            }
            Ok(())
        }
    }

    fn plan() -> DumpPlan {
        DumpPlan {
            filter: None,
            arch: Arch::X86_64,
            page_size: 4096,
            ranges: RAM.to_vec(),
            mappings: None,
            notes: Vec::new(),
            cpus: Vec::new(),
            vmcoreinfo: None,
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn blocks_are_framed_snappy_with_their_length_and_zero_blocks_are_left_out() {
        let plan = plan();
        let mut s = StreamSink::new(Vec::new(), "<mem>");
        let stats = AvmlWriter
            .write_with_stats(&plan, &Mem, &mut s, &NoProgress)
            .unwrap();
        assert_eq!(
            stats,
            AvmlStats {
                blocks: 2,
                zero_blocks: 1
            }
        );
        let out = s.into_inner();
        let mut at = 0usize;
        let mut seen = Vec::new();
        while at < out.len() {
            let h = &out[at..at + 32];
            assert_eq!(&h[..8], b"AVML\x02\0\0\0");
            let start = u64::from_le_bytes(h[8..16].try_into().unwrap());
            let last = u64::from_le_bytes(h[16..24].try_into().unwrap());
            assert_eq!(&h[24..], &[0; 8]);
            let rest = &out[at + 32..];
            let mut dec = snap::read::FrameDecoder::new(rest);
            let mut data = vec![0u8; (last - start + 1) as usize];
            dec.read_exact(&mut data).unwrap();
            assert!(data
                .iter()
                .enumerate()
                .all(|(i, &b)| b == byte(start + i as u64)));
            // The decoder reads whole chunks, so it stops where the stream ends: the
            // trailer there must give the stream's length.
            let clen = rest.len() - dec.get_ref().len();
            let trailer = u64::from_le_bytes(rest[clen..clen + 8].try_into().unwrap());
            assert_eq!(trailer, clen as u64);
            seen.push((start, last));
            at += 32 + clen + 8;
        }
        assert_eq!(
            seen,
            [(1 << 20, (17 << 20) - 1), (33 << 20, (41 << 20) - 1)]
        );
    }

    #[test]
    fn refuses_options() {
        let mut plan = plan();
        plan.options.insert("compress".into(), "zstd".into());
        let mut s = StreamSink::new(Vec::new(), "<mem>");
        assert!(AvmlWriter.write(&plan, &Mem, &mut s, &NoProgress).is_err());
        assert!(s.into_inner().is_empty());
    }
}
