//! The contract of an architecture's page-table walker.

use serde::Serialize;

use crate::cpu::{CpuState, PagingMode};
use crate::error::{Error, Result};
use crate::mapping::MappingList;
use crate::memory::PhysicalMemory;

/// Knobs that change how table entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// MAXPHYADDR: physical address bits kept from an entry (default 52).
    pub max_phys_bits: u8,
    /// Bits cleared from every entry before use (AMD SME C-bit, VMCOREINFO
    /// `NUMBER(sme_mask)`).
    pub clear_mask: u64,
    /// Upper bound on table pages a single walk reads, to bound work on corrupt or
    /// hostile tables.
    pub max_table_pages: u64,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            max_phys_bits: 52,
            clear_mask: 0,
            max_table_pages: 1 << 22,
        }
    }
}

/// What a walk found besides the mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalkStats {
    /// Present leaf entries seen (pages of any size).
    pub leaves: u64,
    /// Leaves whose physical page is not in the dump's RAM: skipped, counted here.
    pub leaves_outside_ram: u64,
    /// Table pages read.
    pub table_pages: u64,
    /// Table pointers that led outside RAM: the subtree was skipped.
    pub tables_outside_ram: u64,
    /// Human-readable notes about anything odd (first few only).
    pub warnings: Vec<String>,
}

impl WalkStats {
    pub fn add(&mut self, o: &WalkStats) {
        self.leaves += o.leaves;
        self.leaves_outside_ram += o.leaves_outside_ram;
        self.table_pages += o.table_pages;
        self.tables_outside_ram += o.tables_outside_ram;
        for w in &o.warnings {
            if self.warnings.len() < 32 {
                self.warnings.push(w.clone());
            }
        }
    }
}

/// One level of a single-address translation, for `dumpconv translate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranslationStep {
    /// Level name: "PML5", "PML4", "PDPT", "PD", "PT", "PDE", "PTE"...
    pub level: &'static str,
    /// Physical address of the entry that was read.
    pub entry_addr: u64,
    /// The raw entry.
    pub entry: u64,
}

/// The result of translating one virtual address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Translation {
    pub virt: u64,
    pub steps: Vec<TranslationStep>,
    /// Physical address, or None if not mapped.
    pub phys: Option<u64>,
    /// Size of the page that maps it, when mapped.
    pub page_size: Option<u64>,
    /// Why translation stopped, when not mapped.
    pub fault: Option<String>,
}

/// An architecture's page-table walker.
pub trait ArchWalker: Send + Sync {
    /// Short name ("x86").
    fn name(&self) -> &str;

    /// Paging modes this walker understands.
    fn modes(&self) -> &[PagingMode];

    /// Walk the tables `cpu` uses and push every leaf into `out` in ascending virtual
    /// order. Leaves outside RAM are skipped and counted. Never panics; bounded work.
    fn walk(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        out: &mut MappingList,
    ) -> Result<WalkStats>;

    /// Translate one address, recording every entry read.
    fn translate(
        &self,
        _cpu: &CpuState,
        _mem: &dyn PhysicalMemory,
        _opts: &WalkOptions,
        _virt: u64,
    ) -> Result<Translation> {
        Err(Error::Unsupported(format!(
            "walker {} cannot translate single addresses",
            self.name()
        )))
    }
}
