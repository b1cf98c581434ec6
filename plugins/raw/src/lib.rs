//! Raw ("padded") image writer: file offset == physical address.
//!
//! The image covers physical `0 .. end of the last range of the plan`. It always starts
//! at physical 0, even with `--begin`: that is what LiME's `padded` format, QEMU's
//! `pmemsave` of the whole RAM and every tool that opens a raw image (volatility,
//! `dumpconv` itself) expect; an image that started at `--begin` would silently shift
//! every address. What is not written (RAM holes, memory outside `--begin/--length`,
//! and all-zero 4 KiB pages) becomes a sparse hole in a file and zeros in a stream.
//!
//! The copy machinery ([`copy`]) is public because the ELF writer's memory area is the
//! same kind of copy.

pub mod copy;

use dumpconv_core::{DumpPlan, DumpWriter, PhysicalMemory, Progress, Result, Sink};

pub use copy::{check_ranges, CopyStats, RangeCopier};

/// Writes a plan as a flat image, offset = physical address.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawWriter;

impl RawWriter {
    pub fn new() -> Self {
        RawWriter
    }

    /// Write and report what was written and skipped.
    pub fn write_with_stats(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<CopyStats> {
        check_ranges(&plan.ranges, mem)?;
        check_stream_holes(plan, sink)?;
        check_file_len(plan, sink)?;
        if plan.mappings.is_some() {
            progress
                .warn("a raw image is physical: the virtual mappings (--paging) are not written");
        }
        // Offsets are relative to where the sink stands now (0 for a fresh output).
        let base = sink.position();
        let mut copier = RangeCopier::new();
        let mut stats = CopyStats::default();
        progress.start("writing", plan.total_bytes());
        for r in &plan.ranges {
            // Holes before the range: no progress, they are not memory of the plan.
            let here = sink.position() - base;
            if r.start > here {
                sink.skip(r.start - here)?;
            }
            stats.add(copier.copy(mem, *r, sink, progress)?);
        }
        // A trailing zero page was only skipped; finish() gives the file its length.
        sink.finish()?;
        progress.finish();
        Ok(stats)
    }
}

/// Most bytes of holes a streamed raw image may hold: 64 times its RAM, at least 8 GiB
/// (a small x86 guest's RAM below 4 GiB and its BIOS ROM just under 4 GiB leave a hole
/// of nearly 4 GiB: that is a raw image). A stream cannot seek, so holes are written as
/// zeros: one LiME page at 2^48 would stream 256 TiB of them (fuzzing finding, issue
/// #17). Files keep holes sparse and are not limited.
pub fn max_stream_holes(ram: u64) -> u64 {
    ram.saturating_mul(64).max(8 << 30)
}

fn check_stream_holes(plan: &DumpPlan, sink: &dyn Sink) -> Result<()> {
    if sink.is_seekable() {
        return Ok(());
    }
    let end = plan.ranges.last().map_or(0, |r| r.end);
    let ram = plan.total_bytes();
    let holes = end.saturating_sub(ram);
    if holes > max_stream_holes(ram) {
        return Err(dumpconv_core::Error::invalid(format!(
            "raw output to a stream (standard output or a compressed file): the image \
             would reach {end:#x} bytes for {ram:#x} bytes of RAM, its holes written as \
             {holes:#x} bytes of zeros; write an uncompressed file (holes stay sparse), \
             or ELF or LiME, which store only the RAM"
        )));
    }
    Ok(())
}

/// A raw file is as long as the end of its last range: ask the file system first
/// whether it takes a file that long (one LiME page at 2^48 makes a 256 TiB sparse
/// file, which ext4 refuses), so the error says why instead of failing at that offset
/// midway (issue #17).
fn check_file_len(plan: &DumpPlan, sink: &mut dyn Sink) -> Result<()> {
    if !sink.is_seekable() {
        return Ok(());
    }
    let end = plan.ranges.last().map_or(0, |r| r.end);
    let len = sink.position().saturating_add(end);
    match sink.check_len(len) {
        Err(dumpconv_core::Error::Output {
            path,
            offset,
            source,
        }) if source.kind() == std::io::ErrorKind::FileTooLarge => {
            Err(dumpconv_core::Error::Output {
                path,
                offset,
                source: std::io::Error::new(
                    source.kind(),
                    format!(
                        "a raw image is as long as its highest physical address: this one \
                         would be {len:#x} bytes (RAM ends at {end:#x}), longer than the file \
                         system allows for one file ({source}); write ELF or LiME \
                         (--format elf|lime), which store only the RAM, or to a file system \
                         that takes larger files"
                    ),
                ),
            })
        }
        other => other,
    }
}

impl DumpWriter for RawWriter {
    fn name(&self) -> &str {
        "raw"
    }

    fn description(&self) -> &str {
        "flat image, file offset = physical address from 0 (holes and zero pages sparse)"
    }

    fn extensions(&self) -> &[&str] {
        &["raw", "img", "bin", "mem"]
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
