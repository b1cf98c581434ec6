//! The contract of an architecture's page-table walker.

use std::borrow::Cow;

use serde::Serialize;

use crate::arch::Arch;
use crate::cpu::CpuState;
use crate::error::{Error, Result};
use crate::mapping::MappingList;
use crate::memory::PhysicalMemory;
use crate::paging::{Regime, VirtRange, WalkCache};
use crate::vmcoreinfo::VmcoreInfo;

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
    /// Valid entries that no bit test of their level accepts (neither a table pointer
    /// nor a leaf there: reserved encodings, garbage): skipped, counted here.
    #[serde(skip_serializing_if = "is_zero")]
    pub invalid_entries: u64,
    /// Human-readable notes about anything odd (first few only).
    pub warnings: Vec<String>,
}

impl WalkStats {
    pub fn add(&mut self, o: &WalkStats) {
        self.leaves += o.leaves;
        self.leaves_outside_ram += o.leaves_outside_ram;
        self.table_pages += o.table_pages;
        self.tables_outside_ram += o.tables_outside_ram;
        self.invalid_entries += o.invalid_entries;
        for w in &o.warnings {
            if self.warnings.len() < 32 {
                self.warnings.push(w.clone());
            }
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
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

/// An architecture's page-table walker (trait version 2).
///
/// A walker says which architectures ([`Arch`]) and modes it handles; the registry
/// picks it by the dump's architecture (and `--paging-mode`'s name). A walker that
/// describes its MMU by data implements [`ArchWalker::regime`] and gets walking,
/// translation, the shared cache of a multi-CPU view and the paging-on test from the
/// engine in [`crate::paging`]; one that walks by itself (a plugin) implements
/// [`ArchWalker::walk`] (and [`ArchWalker::paging_enabled`]), and the view clips its
/// result.
pub trait ArchWalker: Send + Sync {
    /// Short name ("x86").
    fn name(&self) -> &str;

    /// The architectures this walker handles.
    fn arches(&self) -> &[Arch];

    /// Mode names this walker understands ("4level", "pae"...), for `--paging-mode`
    /// and `dumpconv plugins`.
    fn modes(&self) -> &[&str];

    /// The canonical mode name for what a user typed (aliases included); default: a
    /// case-insensitive match in [`ArchWalker::modes`].
    fn parse_mode(&self, name: &str) -> Option<Cow<'static, str>> {
        self.modes()
            .iter()
            .find(|m| m.eq_ignore_ascii_case(name))
            .map(|m| Cow::Owned((*m).to_string()))
    }

    /// How `cpu` translates: paging off, or its address spaces. An error when the
    /// registers needed are missing. Default: unsupported (a walker that walks by
    /// itself).
    fn regime(&self, cpu: &CpuState, _opts: &WalkOptions) -> Result<Regime> {
        Err(Error::Unsupported(format!(
            "walker {} does not describe the address spaces of cpu {}",
            self.name(),
            cpu.index
        )))
    }

    /// The mode `cpu` is in ("off" with paging off), None when its registers do not
    /// say.
    fn mode_of(&self, cpu: &CpuState) -> Option<Cow<'static, str>> {
        match self.regime(cpu, &WalkOptions::default()) {
            Ok(Regime::Off) => Some(Cow::Borrowed("off")),
            Ok(Regime::Paging { mode, .. }) => Some(mode),
            Err(_) => None,
        }
    }

    /// True when `cpu` has paging on (so it has virtual mappings to walk).
    fn paging_enabled(&self, cpu: &CpuState) -> bool {
        matches!(
            self.regime(cpu, &WalkOptions::default()),
            Ok(Regime::Paging { .. })
        )
    }

    /// First virtual address of the kernel half for `cpu`: below it, a multi-CPU view
    /// keeps one CPU's mappings; from it on, it merges every CPU's.
    fn kernel_start(&self, _cpu: &CpuState) -> u64 {
        1 << 63
    }

    /// Walk the tables `cpu` uses and push every leaf into `out` in ascending virtual
    /// order. Leaves outside RAM are skipped and counted. Never panics; bounded work.
    /// Default: the engine over [`ArchWalker::regime`] (paging off emits nothing).
    fn walk(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        out: &mut MappingList,
    ) -> Result<WalkStats> {
        match self.regime(cpu, opts)? {
            Regime::Off => Ok(WalkStats::default()),
            Regime::Paging { spaces, .. } => {
                crate::paging::walk(cpu.index, &spaces, mem, opts, VirtRange::ALL, None, out)
            }
        }
    }

    /// Walk the leaves of `cpu` inside `range` (ascending virtual order). With `cache`,
    /// the walks of several CPUs share table reads and skip top-level subtrees an
    /// earlier walk with the same cache already emitted (see [`crate::paging::walk`]).
    /// Default: the engine over [`ArchWalker::regime`]; a walker without one is walked
    /// whole by [`ArchWalker::walk`] and the result clipped to `range` (no cache).
    fn walk_range(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        range: VirtRange,
        cache: Option<&mut WalkCache>,
        out: &mut MappingList,
    ) -> Result<WalkStats> {
        match self.regime(cpu, opts) {
            Ok(Regime::Off) => Ok(WalkStats::default()),
            Ok(Regime::Paging { spaces, .. }) => {
                crate::paging::walk(cpu.index, &spaces, mem, opts, range, cache, out)
            }
            Err(Error::Unsupported(_)) => {
                let mut all = MappingList::new();
                let stats = self.walk(cpu, mem, opts, &mut all)?;
                for m in all.runs() {
                    if let Some(c) = range.clip(m) {
                        out.push(c);
                    }
                }
                Ok(stats)
            }
            Err(e) => Err(e),
        }
    }

    /// Translate one address, recording every entry read. Default: the engine over
    /// [`ArchWalker::regime`]; paging off translates to itself.
    fn translate(
        &self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        virt: u64,
    ) -> Result<Translation> {
        match self.regime(cpu, opts) {
            Ok(Regime::Off) => Ok(Translation {
                virt,
                steps: Vec::new(),
                phys: Some(virt),
                page_size: None,
                fault: None,
            }),
            Ok(Regime::Paging { spaces, .. }) => {
                crate::paging::translate(cpu.index, &spaces, mem, opts, virt)
            }
            Err(Error::Unsupported(_)) => Err(Error::Unsupported(format!(
                "walker {} cannot translate single addresses",
                self.name()
            ))),
            Err(e) => Err(e),
        }
    }

    /// A CPU state made of a page-table root and a mode name, for inputs without CPU
    /// state (`--cr3/--root ADDR --paging-mode NAME`).
    fn cpu_from_root(&self, _arch: Arch, mode: &str, _root: u64) -> Result<CpuState> {
        Err(Error::Unsupported(format!(
            "walker {} cannot build a CPU state for mode {mode:?} from a root address",
            self.name()
        )))
    }

    /// A CPU state for the kernel's own page tables from VMCOREINFO (for dumps whose
    /// CPUs have no paging registers); None when VMCOREINFO lacks what is needed.
    fn roots_from_vmcoreinfo(&self, _arch: Arch, _vmcoreinfo: &VmcoreInfo) -> Option<CpuState> {
        None
    }

    /// The architecture a VMCOREINFO text belongs to, when it has the keys this
    /// walker's kernels write (for inputs that do not say their architecture: raw
    /// images, LiME, AVML). Default: None (not recognised). Plugins loaded at run time
    /// do not answer this yet (ABI v2 has no entry for it): the built-in walkers do.
    fn arch_from_vmcoreinfo(&self, _vmcoreinfo: &VmcoreInfo) -> Option<Arch> {
        None
    }

    /// Last resort when there is no VMCOREINFO and no CPU with paging: look through
    /// `mem` for pages that may be the kernel's top-level table of `arch` and keep those
    /// whose kernel half maps one of `banners` (physical addresses of "Linux version ")
    /// at a kernel address. Returns CPU states (best first) with a short description
    /// each. At most `max_tables` candidate tables are walked. Default: no scan.
    fn scan_roots(
        &self,
        _arch: Arch,
        _mem: &dyn PhysicalMemory,
        _banners: &[u64],
        _max_tables: usize,
    ) -> Result<Vec<(CpuState, String)>> {
        Ok(Vec::new())
    }

    /// [`ArchWalker::roots_from_vmcoreinfo`] for callers that must tell "none" from a
    /// failure: a plugin walker whose answer is malformed fails here (the registry and
    /// the pipeline call this one). The default never fails.
    fn try_roots_from_vmcoreinfo(
        &self,
        arch: Arch,
        vmcoreinfo: &VmcoreInfo,
    ) -> Result<Option<CpuState>> {
        Ok(self.roots_from_vmcoreinfo(arch, vmcoreinfo))
    }
}
