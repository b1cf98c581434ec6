//! x86 page-table walkers: 32-bit (PSE, PSE-36), PAE, IA-32e 4-level and 5-level.
//!
//! One walk engine (`engine.rs`) is driven by a data description of each mode
//! (`mode.rs`), so a fix lands once for every mode. Where QEMU's walker
//! (docs/formats.md#x86-qemu-walker) goes wrong, this one does not:
//!
//! - virtual addresses are canonical (sign-extended from bit 47, or 56 with LA57);
//! - physical addresses keep only MAXPHYADDR bits (`WalkOptions::max_phys_bits`) minus
//!   `WalkOptions::clear_mask` (the SME C-bit), so NX, protection keys and software
//!   bits 52–58 never leak into an address, in leaves and table pointers alike;
//! - a leaf outside RAM is counted, and a large page partly in RAM keeps its RAM part;
//! - a table page is read with one positioned read, upper-level tables are cached, and
//!   the work is bounded by depth and by `WalkOptions::max_table_pages`.
//!
//! Entries are interpreted as the CPU would, except that reserved bits are not
//! checked (a real CPU would fault on them): PS in a PML4E or PML5E is ignored and the
//! entry followed as a table pointer, as QEMU does, and bits above MAXPHYADDR are
//! dropped rather than turned into a fault, because a dump tool must not lose a
//! mapping to a feature (PKU, SME) the walk does not model.
//!
//! Bounds: `WalkStats::table_pages` counts table visits, cache hits included, and
//! that is what `WalkOptions::max_table_pages` limits (per CPU walk). Running past it
//! is an error, not a warning: a partial view that looks complete would be worse.
//! Each visit emits at most 512 (1024) leaves, so the limit bounds memory as well.
//!
//! A20: `CpuState::a20_mask` is applied to the root and to every table address (as QEMU
//! does), not to the leaves' physical addresses.

mod engine;
mod mode;
mod view;

use dumpconv_core::{
    ArchWalker, CpuState, MappingList, PagingMode, PhysicalMemory, Result, Translation,
    WalkOptions, WalkStats,
};

pub use view::{build_view, kernel_start, paging_enabled, ViewPolicy};

/// The modes the walker handles. A static, not a const: [`build_view`] recognises the
/// built-in walker by this slice's address.
static MODES: [PagingMode; 4] = [
    PagingMode::Bits32,
    PagingMode::Pae,
    PagingMode::Level4,
    PagingMode::Level5,
];

/// The x86 walker: all four paging modes, chosen per CPU from CR0.PG, CR4.PAE,
/// EFER.LMA and CR4.LA57 ([`CpuState::paging_mode`]); 4 MiB pages from CR4.PSE.
#[derive(Debug, Default, Clone, Copy)]
pub struct X86Walker;

impl X86Walker {
    pub fn new() -> Self {
        X86Walker
    }
}

impl ArchWalker for X86Walker {
    fn name(&self) -> &str {
        "x86"
    }

    fn modes(&self) -> &[PagingMode] {
        &MODES
    }

    /// Walk `cpu`'s tables. Paging off: Ok with nothing emitted. A root table outside
    /// RAM, missing control registers or CR3, and running past `max_table_pages` are
    /// [`dumpconv_core::Error::Walk`] errors; in the last case `out` keeps the mappings
    /// found before the walk gave up.
    fn walk(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        out: &mut MappingList,
    ) -> Result<WalkStats> {
        let Some(s) = engine::setup(cpu, opts)? else {
            return Ok(WalkStats::default());
        };
        let mut shared = engine::Shared::default();
        let mut eng = engine::Engine::new(
            &s,
            cpu,
            mem,
            opts,
            engine::VirtRange::ALL,
            false,
            &mut shared,
        );
        eng.run(s.root, out)?;
        Ok(eng.stats)
    }

    /// Translate one address like crash's `vtop`: every entry read, then the physical
    /// address and page size, or the reason the walk stopped. A page outside the
    /// dump's RAM still gets its physical address, with a note in `fault`. Paging off:
    /// physical = virtual.
    fn translate(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        virt: u64,
    ) -> Result<Translation> {
        match engine::setup(cpu, opts)? {
            Some(s) => engine::translate(&s, cpu, mem, opts, virt),
            None => Ok(Translation {
                virt,
                steps: Vec::new(),
                phys: Some(virt),
                page_size: None,
                fault: None,
            }),
        }
    }
}
