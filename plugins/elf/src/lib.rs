//! ELF core writer, in the shape crash, gdb and makedumpfile read (docs/formats.md#elf).
//!
//! - Physical view (`plan.mappings == None`): one PT_LOAD per plan range, vaddr = paddr.
//! - Paging view: one PT_LOAD per mapping run piece inside the plan's RAM, vaddr = the
//!   mapping's virtual address; RAM no mapping covers gets PT_LOADs at vaddr 0 so
//!   readers that go by physical address (crash) still see all of it. Aliases point at
//!   the same file bytes: memory is stored once, in physical order.
//! - PT_NOTE first, program headers right after the ELF header, p_align 0, no section
//!   headers unless more than 65534 program headers need PN_XNUM.
//!
//! The whole layout ([`layout`]) is computed before writing, then bytes are only
//! appended: the output can be a pipe. Memory use is the program header table plus one
//! copy buffer, whatever the dump size.

pub mod layout;

use dumpconv_core::{DumpPlan, DumpWriter, Error, PhysicalMemory, Progress, Result, Sink};
use dumpconv_formats::elf::note::encode_notes;
use dumpconv_formats::elf::write::{encode_ehdr, encode_phdr_into, encode_shdr0_xnum, CoreHeader};
use dumpconv_raw::{CopyStats, RangeCopier};

pub use dumpconv_formats::elf::write::ElfClass;
pub use layout::Layout;

/// What [`ElfWriter::write_with_stats`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfStats {
    pub class: ElfClass,
    /// Program headers, PT_NOTE included.
    pub phnum: u32,
    /// Total output size.
    pub file_size: u64,
    /// Memory bytes written as data / skipped as zeros.
    pub memory: CopyStats,
}

/// The ELF core writer.
#[derive(Debug, Default, Clone, Copy)]
pub struct ElfWriter;

impl ElfWriter {
    pub fn new() -> Self {
        ElfWriter
    }

    /// The layout this writer would produce for `plan`, without writing anything.
    pub fn layout(&self, plan: &DumpPlan, mem: &dyn PhysicalMemory) -> Result<Layout> {
        dumpconv_raw::check_ranges(&plan.ranges, mem)?;
        let notes_len = notes_len(plan);
        layout::build(plan, mem, notes_len)
    }

    /// Write and report what was written.
    pub fn write_with_stats(
        &self,
        plan: &DumpPlan,
        mem: &dyn PhysicalMemory,
        sink: &mut dyn Sink,
        progress: &dyn Progress,
    ) -> Result<ElfStats> {
        dumpconv_raw::check_ranges(&plan.ranges, mem)?;
        let notes = encode_notes(&plan.notes);
        let lay = layout::build(plan, mem, notes.len() as u64)?;
        if plan.ranges.is_empty() {
            progress.warn("no memory to write: the ELF file holds only notes");
        }

        let header = encode_header(plan, &lay, &notes)?;
        // Offsets are relative to where the sink stands now (0 for a fresh output).
        let base = sink.position();
        let here = |s: &dyn Sink| s.position() - base;
        sink.write_all(&header)?;
        drop(header);

        let mut copier = RangeCopier::new();
        let mut stats = CopyStats::default();
        progress.start("writing", plan.total_bytes());
        for (r, off) in &lay.ranges {
            let at = here(sink);
            if *off < at {
                // place() never does this; refuse rather than write a corrupt file.
                return Err(Error::internal(format!(
                    "range {:#x} placed at {off:#x}, behind output position {at:#x}",
                    r.start
                )));
            }
            sink.skip(off - at)?;
            stats.add(copier.copy(mem, *r, sink, progress)?);
        }
        let at = here(sink);
        if at < lay.end {
            // Only when notes end a file with no memory: pad to the computed size.
            sink.skip(lay.end - at)?;
        }
        sink.finish()?;
        progress.finish();
        Ok(ElfStats {
            class: lay.class,
            phnum: lay.phnum(),
            file_size: lay.end,
            memory: stats,
        })
    }
}

fn notes_len(plan: &DumpPlan) -> u64 {
    plan.notes
        .iter()
        .map(|n| dumpconv_formats::elf::note::note_size(n) as u64)
        .sum()
}

/// ELF header, program headers, [section header 0], notes: everything before the
/// memory area, as one buffer (its size is proportional to the number of headers).
fn encode_header(plan: &DumpPlan, lay: &Layout, notes: &[u8]) -> Result<Vec<u8>> {
    let class = lay.class;
    let mut out = encode_ehdr(&CoreHeader {
        class,
        machine: plan.arch.elf_machine(),
        phoff: class.ehdr_size(),
        phnum: lay.phnum(),
        shoff: lay.shoff.unwrap_or(0),
    })?;
    out.reserve((lay.notes_offset + lay.notes_len) as usize);
    for p in &lay.phdrs {
        encode_phdr_into(class, p, &mut out)?;
    }
    if lay.shoff.is_some() {
        out.extend_from_slice(&encode_shdr0_xnum(class, lay.phnum()));
    }
    if out.len() as u64 != lay.notes_offset {
        return Err(Error::internal(format!(
            "headers end at {:#x}, notes placed at {:#x}",
            out.len(),
            lay.notes_offset
        )));
    }
    out.extend_from_slice(notes);
    Ok(out)
}

impl DumpWriter for ElfWriter {
    fn name(&self) -> &str {
        "elf"
    }

    fn description(&self) -> &str {
        "ELF core (crash, gdb, makedumpfile); physical or --paging virtual view"
    }

    fn extensions(&self) -> &[&str] {
        &["elf", "core", "vmcore"]
    }

    fn options(&self) -> Option<&[&str]> {
        Some(&["elf-class", "elf-layout"])
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
