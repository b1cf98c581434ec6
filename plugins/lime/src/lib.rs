//! LiME writer (docs/formats.md#lime): for each RAM range of the plan, one 32-byte header
//! (`dumpconv_formats::lime::RangeHeader`, version 1: first address, *inclusive* last
//! address) followed by the range's bytes. This is what the LiME kernel module
//! writes with `format=lime` and what AVML writes uncompressed; Volatility, AVML's
//! `convert` and dumpconv itself read it.
//!
//! The format carries no registers, notes or VMCOREINFO, and no virtual view: only
//! physical memory. Everything is written forward, so it streams to a pipe.

pub mod avml;

pub use avml::AvmlWriter;

use dumpconv_core::{DumpPlan, DumpWriter, PhysicalMemory, Progress, Result, Sink};
use dumpconv_formats::lime::RangeHeader;
use dumpconv_raw::{check_ranges, CopyStats, RangeCopier};

/// Writes a plan as a LiME file.
#[derive(Debug, Default, Clone, Copy)]
pub struct LimeWriter;

impl LimeWriter {
    pub fn new() -> Self {
        LimeWriter
    }

    /// Write and report what was written and skipped (zero blocks become holes in a
    /// file, zeros in a stream; they read back the same).
    pub fn write_with_stats(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<CopyStats> {
        // Empty, overlapping or non-RAM ranges are refused before the first byte.
        check_ranges(&plan.ranges, mem)?;
        if plan.mappings.is_some() {
            progress
                .warn("a LiME file is physical: the virtual mappings (--paging) are not written");
        }
        let mut copier = RangeCopier::new();
        let mut stats = CopyStats::default();
        progress.start("writing", plan.total_bytes());
        for r in &plan.ranges {
            sink.write_all(&RangeHeader::lime(*r).encode())?;
            stats.add(copier.copy(mem, *r, sink, progress)?);
        }
        // A range that ends in zeros was only skipped; finish() gives the file its length.
        sink.finish()?;
        progress.finish();
        Ok(stats)
    }
}

impl DumpWriter for LimeWriter {
    fn name(&self) -> &str {
        "lime"
    }

    fn description(&self) -> &str {
        "LiME (as the LiME module and AVML write): a 32-byte header per RAM range, then its bytes"
    }

    fn extensions(&self) -> &[&str] {
        &["lime"]
    }

    /// None of its own (whole-output compression is the pipeline's).
    fn options(&self) -> Option<&[&str]> {
        Some(&[])
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
    use dumpconv_core::{Arch, Error, FileSink, NoProgress, PhysRange, StreamSink};
    use std::collections::BTreeMap;

    /// Two RAM ranges with a hole between them; every byte is a function of its address,
    /// with one all-zero page in the middle of the second range.
    struct Two;
    const RANGES: [PhysRange; 2] = [
        PhysRange {
            start: 0,
            end: 0x3000,
        },
        PhysRange {
            start: 0x10_0000,
            end: 0x10_5800,
        },
    ];
    fn byte(a: u64) -> u8 {
        if (0x10_2000..0x10_3000).contains(&a) {
            0
        } else {
            (a % 251) as u8 | 1
        }
    }
    impl PhysicalMemory for Two {
        fn ranges(&self) -> &[PhysRange] {
            &RANGES
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            if !self.is_ram(paddr, buf.len() as u64) {
                return Err(Error::Hole { paddr });
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = byte(paddr + i as u64);
            }
            Ok(())
        }
    }

    fn plan(ranges: Vec<PhysRange>) -> DumpPlan {
        DumpPlan {
            filter: None,
            arch: Arch::X86_64,
            page_size: 4096,
            ranges,
            mappings: None,
            notes: Vec::new(),
            cpus: Vec::new(),
            vmcoreinfo: None,
            options: BTreeMap::new(),
        }
    }

    /// The file as the format says it must be: header (from the spec's table), bytes.
    fn expected(ranges: &[PhysRange]) -> Vec<u8> {
        let mut v = Vec::new();
        for r in ranges {
            v.extend_from_slice(b"EMiL");
            v.extend_from_slice(&[1, 0, 0, 0]);
            v.extend_from_slice(&r.start.to_le_bytes());
            v.extend_from_slice(&(r.end - 1).to_le_bytes());
            v.extend_from_slice(&[0; 8]);
            v.extend((r.start..r.end).map(byte));
        }
        v
    }

    #[test]
    fn stream_and_file_match_the_format() {
        let p = plan(RANGES.to_vec());
        let mut s = StreamSink::new(Vec::new(), "<mem>");
        LimeWriter.write(&p, &Two, &mut s, &NoProgress).unwrap();
        assert_eq!(s.into_inner(), expected(&RANGES));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.lime");
        let mut f = FileSink::new(std::fs::File::create(&path).unwrap(), &path);
        let stats = LimeWriter
            .write_with_stats(&p, &Two, &mut f, &NoProgress)
            .unwrap();
        drop(f);
        assert_eq!(std::fs::read(&path).unwrap(), expected(&RANGES));
        assert_eq!(stats.written + stats.skipped, 0x3000 + 0x5800);
        assert!(
            stats.skipped >= 0x1000,
            "the zero page is skipped: {stats:?}"
        );
    }

    #[test]
    fn clipped_plan_gives_one_header_for_the_window() {
        let window = [PhysRange::new(0x10_1234, 0x10_4000)];
        let mut s = StreamSink::new(Vec::new(), "<mem>");
        LimeWriter
            .write(&plan(window.to_vec()), &Two, &mut s, &NoProgress)
            .unwrap();
        assert_eq!(s.into_inner(), expected(&window));
    }

    #[test]
    fn refuses_ranges_that_are_not_ram_before_writing() {
        let mut s = StreamSink::new(Vec::new(), "<mem>");
        let bad = plan(vec![PhysRange::new(0x2000, 0x4000)]);
        assert!(LimeWriter.write(&bad, &Two, &mut s, &NoProgress).is_err());
        assert!(s.into_inner().is_empty());
    }
}
