//! The one walk engine, driven by a [`ModeDesc`].
//!
//! Depth-first over the table tree, entries in index order, so leaves come out in
//! ascending (canonical) virtual order and `MappingList::push` only ever extends its
//! last run. Work is bounded twice: by depth (the number of levels, whatever the
//! entries say) and by `WalkOptions::max_table_pages` table visits, which catches
//! cross-linked or self-referencing tables that would otherwise multiply the work.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use dumpconv_core::{
    CpuState, Error, Mapping, MappingList, PagingMode, PhysicalMemory, Result, Translation,
    TranslationStep, WalkOptions, WalkStats,
};

use crate::mode::{Large, ModeDesc, P, PS};

/// Warnings kept per walk; the counters in `WalkStats` carry the totals.
const MAX_WARNINGS: usize = 16;

/// Table pages kept per cache generation (two generations: at most twice this many,
/// about 8–16 MiB decoded).
const CACHE_GENERATION: usize = 1024;

type TableKey = (u64, usize, usize); // (physical address, entry bytes, entries)

/// A bounded cache of decoded table pages, keyed by physical address.
///
/// Two generations approximate LRU without a linked list: hits in the old generation
/// move to the young one; when the young one fills, it becomes the old one and the old
/// one is dropped. Only tables above the last level are cached: those are the ones met
/// again (shared kernel tables across CPUs, self-references), while the bulk of the
/// tables, the page tables proper, are visited once per walk.
#[derive(Default)]
pub(crate) struct TableCache {
    young: HashMap<TableKey, Rc<[u64]>>,
    old: HashMap<TableKey, Rc<[u64]>>,
}

impl TableCache {
    fn get(&mut self, k: &TableKey) -> Option<Rc<[u64]>> {
        if let Some(t) = self.young.get(k) {
            return Some(t.clone());
        }
        let t = self.old.remove(k)?;
        self.insert(*k, t.clone());
        Some(t)
    }

    fn insert(&mut self, k: TableKey, t: Rc<[u64]>) {
        if self.young.len() >= CACHE_GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(k, t);
    }
}

/// A top-level subtree already walked: (mode, PSE, A20 mask, top index, table address).
/// A second CPU whose top-level entry points at the same table gets exactly the same
/// mappings from it, so the subtree is walked once.
pub(crate) type SubtreeKey = (PagingMode, bool, u64, usize, u64);

/// State shared by the walks of several CPUs in one view.
#[derive(Default)]
pub(crate) struct Shared {
    pub cache: TableCache,
    /// Subtrees already walked, when sharing is asked for.
    pub seen: HashSet<SubtreeKey>,
}

/// The canonical virtual range `[lo, hi)` a walk emits (hi may be 2^64).
#[derive(Debug, Clone, Copy)]
pub(crate) struct VirtRange {
    pub lo: u64,
    pub hi: u128,
}

impl VirtRange {
    pub const ALL: VirtRange = VirtRange { lo: 0, hi: 1 << 64 };

    fn overlaps(&self, start: u64, len: u64) -> bool {
        (start as u128) < self.hi && (start as u128 + len as u128) > self.lo as u128
    }

    fn covers(&self, start: u64, len: u64) -> bool {
        start >= self.lo && (start as u128 + len as u128) <= self.hi
    }
}

/// The physical-address mask: MAXPHYADDR bits, minus the SME C-bit (`clear_mask`).
fn phys_mask(opts: &WalkOptions) -> u64 {
    // MAXPHYADDR is at least 36 on any CPU with PAE; clamp nonsense so shifts stay sound.
    let bits = u32::from(opts.max_phys_bits).clamp(12, 52);
    ((1u64 << bits) - 1) & !opts.clear_mask
}

fn walk_err(cpu: &CpuState, msg: impl Into<String>) -> Error {
    Error::Walk {
        cpu: cpu.index,
        msg: msg.into(),
    }
}

/// What `CpuState` gives the walk: mode description, root address, PSE, A20.
pub(crate) struct Setup {
    pub desc: &'static ModeDesc,
    pub root: u64,
    pub pse: bool,
    pub a20: u64,
}

/// Mode and root of `cpu`: Ok(None) when paging is off.
pub(crate) fn setup(cpu: &CpuState, opts: &WalkOptions) -> Result<Option<Setup>> {
    let mode = cpu.paging_mode().ok_or_else(|| {
        walk_err(
            cpu,
            "no control registers recorded (CR0/CR4): the paging mode is unknown; \
             give --cr3 and --paging-mode",
        )
    })?;
    let Some(desc) = crate::mode::describe(mode) else {
        return Ok(None);
    };
    let cr3 = cpu
        .cr3
        .ok_or_else(|| walk_err(cpu, format!("{mode} paging is on but CR3 was not recorded")))?;
    let a20 = cpu.a20_mask.unwrap_or(u64::MAX);
    // The root is a table pointer like any other: MAXPHYADDR, SME C-bit and A20 apply
    // (Linux with SME loads CR3 with the C-bit set).
    let root = cr3 & desc.root_mask & (phys_mask(opts) | 0xFFF) & a20;
    Ok(Some(Setup {
        desc,
        root,
        pse: cpu.pse(),
        a20,
    }))
}

/// One walk of one CPU's tables.
pub(crate) struct Engine<'a> {
    desc: &'static ModeDesc,
    mem: &'a dyn PhysicalMemory,
    cpu: &'a CpuState,
    pse: bool,
    a20: u64,
    pmask: u64,
    budget: u64,
    visits: u64,
    range: VirtRange,
    /// Skip and record top-level subtrees shared with earlier walks.
    share_subtrees: bool,
    shared: &'a mut Shared,
    /// Subtrees this walk added to `shared.seen` (forgotten again if it fails).
    inserted: Vec<SubtreeKey>,
    ram_hint: usize,
    pub stats: WalkStats,
}

impl<'a> Engine<'a> {
    pub fn new(
        s: &Setup,
        cpu: &'a CpuState,
        mem: &'a dyn PhysicalMemory,
        opts: &WalkOptions,
        range: VirtRange,
        share_subtrees: bool,
        shared: &'a mut Shared,
    ) -> Self {
        Engine {
            desc: s.desc,
            mem,
            cpu,
            pse: s.pse,
            a20: s.a20,
            pmask: phys_mask(opts),
            budget: opts.max_table_pages,
            visits: 0,
            range,
            share_subtrees,
            shared,
            inserted: Vec::new(),
            ram_hint: 0,
            stats: WalkStats::default(),
        }
    }

    fn warn(&mut self, msg: impl FnOnce() -> String) {
        if self.stats.warnings.len() < MAX_WARNINGS {
            self.stats.warnings.push(msg());
        }
    }

    /// Walk from the root. The root must be readable: a CR3 outside RAM is an error,
    /// not an empty result, since it almost always means a wrong CR3 or mode.
    pub fn run(&mut self, root: u64, out: &mut MappingList) -> Result<()> {
        let d = self.desc;
        if !self.mem.is_ram(root, d.root_bytes as u64) {
            return Err(walk_err(
                self.cpu,
                format!(
                    "{} root table at {root:#x} (from CR3 {:#x}) is not in the dump's RAM: \
                     wrong CR3 or paging mode?",
                    d.mode,
                    self.cpu.cr3.unwrap_or(0)
                ),
            ));
        }
        self.walk_table(0, root, d.root_bytes, 0, out)
    }

    /// Undo this walk's marks in `shared.seen`, after a failure: a later CPU sharing a
    /// subtree with this one must walk it, since this CPU's mappings are dropped.
    pub fn forget_subtrees(&mut self) {
        for k in self.inserted.drain(..) {
            self.shared.seen.remove(&k);
        }
    }

    /// Read (or fetch from the cache) the table at `addr`, counting the visit.
    /// Ok(None): the table is not in RAM or its page was not saved (counted, skipped).
    fn load(&mut self, addr: u64, bytes: usize, cacheable: bool) -> Result<Option<Rc<[u64]>>> {
        self.visits += 1;
        self.stats.table_pages += 1;
        if self.visits > self.budget {
            return Err(walk_err(
                self.cpu,
                format!(
                    "gave up after {} table pages (WalkOptions::max_table_pages): the page \
                     tables loop or are corrupt",
                    self.budget
                ),
            ));
        }
        let eb = self.desc.entry_bytes;
        let key = (addr, eb, bytes / eb);
        if let Some(t) = self.shared.cache.get(&key) {
            return Ok(Some(t));
        }
        if !self.mem.is_ram(addr, bytes as u64) {
            self.stats.tables_outside_ram += 1;
            self.warn(|| format!("table at {addr:#x} is not in the dump's RAM; skipped"));
            return Ok(None);
        }
        let mut buf = vec![0u8; bytes];
        match self.mem.read_at(addr, &mut buf) {
            Ok(()) => {}
            Err(e @ (Error::Hole { .. } | Error::PageUnavailable { .. })) => {
                self.stats.tables_outside_ram += 1;
                self.warn(|| format!("table at {addr:#x}: {e}; skipped"));
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let t: Rc<[u64]> = if eb == 4 {
            buf.chunks_exact(4)
                .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        } else {
            buf.chunks_exact(8)
                .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect()
        };
        if cacheable {
            self.shared.cache.insert(key, t.clone());
        }
        Ok(Some(t))
    }

    fn walk_table(
        &mut self,
        li: usize,
        table: u64,
        bytes: usize,
        prefix: u64,
        out: &mut MappingList,
    ) -> Result<()> {
        let d = self.desc;
        let Some(level) = d.levels.get(li) else {
            return Ok(());
        };
        let last = li + 1 == d.levels.len();
        let Some(entries) = self.load(table, bytes, !last)? else {
            return Ok(());
        };
        let size = 1u64 << level.shift;
        for (i, &e) in entries.iter().enumerate() {
            if e & P == 0 {
                continue;
            }
            let raw = prefix | ((i as u64) << level.shift);
            // Entries below the top level never straddle the sign-extension bit, so the
            // canonical form of an entry's range is contiguous.
            let virt = d.canonical(raw);
            if !self.range.overlaps(virt, size) {
                continue;
            }
            if last {
                self.leaf(virt, e & d.addr_mask & self.pmask, size, out);
                continue;
            }
            let large = match level.large {
                Large::Never => false,
                Large::Always => e & PS != 0,
                Large::Pse36 => self.pse && e & PS != 0,
            };
            if large {
                let phys = match level.large {
                    // PDE bits 31:22 are address bits 31:22; PDE bits 20:13 are
                    // address bits 39:32. MAXPHYADDR then trims to min(M, 40) bits.
                    Large::Pse36 => ((e & 0xFFC0_0000) | (((e >> 13) & 0xFF) << 32)) & self.pmask,
                    _ => e & d.addr_mask & self.pmask & !(size - 1),
                };
                self.leaf(virt, phys, size, out);
                continue;
            }
            let next = e & d.addr_mask & self.pmask & self.a20;
            if li == 0 && self.share_subtrees && self.range.covers(virt, size) {
                let key = (d.mode, self.pse, self.a20, i, next);
                if !self.shared.seen.insert(key) {
                    continue;
                }
                self.inserted.push(key);
            }
            self.walk_table(li + 1, next, 4096, raw, out)?;
        }
        Ok(())
    }

    /// Emit one leaf: the part inside the walk's virtual range and inside RAM.
    fn leaf(&mut self, virt: u64, phys: u64, size: u64, out: &mut MappingList) {
        self.stats.leaves += 1;
        // Clip to the virtual range (only a leaf straddling a view's split is cut).
        let v0 = virt.max(self.range.lo);
        let v1 = (virt as u128 + size as u128).min(self.range.hi);
        let (p0, len) = (phys + (v0 - virt), (v1 - v0 as u128) as u64);
        let p1 = p0 + len; // < 2^53: phys is masked to 52 bits, len <= 1 GiB
        let ranges = self.mem.ranges();
        let mut i = match ranges.get(self.ram_hint) {
            Some(r) if r.start <= p0 && p0 < r.end => self.ram_hint,
            _ => ranges.partition_point(|r| r.end <= p0),
        };
        let mut covered = 0;
        while let Some(r) = ranges.get(i) {
            if r.start >= p1 {
                break;
            }
            let (s, e) = (r.start.max(p0), r.end.min(p1));
            if s < e {
                out.push(Mapping {
                    virt: v0 + (s - p0),
                    phys: s,
                    len: e - s,
                });
                covered += e - s;
                self.ram_hint = i;
            }
            if r.end > p1 {
                break;
            }
            i += 1;
        }
        if covered < len {
            self.stats.leaves_outside_ram += 1;
            if covered > 0 {
                self.warn(|| {
                    format!(
                        "{len:#x}-byte page at virtual {v0:#x} -> {p0:#x} is only partly in \
                         RAM: kept the RAM part"
                    )
                });
            }
        }
    }
}

/// Translate one address, recording every entry read. Faults (entry not present,
/// table outside RAM) are answers, not errors; only I/O errors are errors.
pub(crate) fn translate(
    s: &Setup,
    cpu: &CpuState,
    mem: &dyn PhysicalMemory,
    opts: &WalkOptions,
    virt: u64,
) -> Result<Translation> {
    let d = s.desc;
    let pmask = phys_mask(opts);
    let mut t = Translation {
        virt,
        steps: Vec::new(),
        phys: None,
        page_size: None,
        fault: None,
    };
    if !d.valid_virt(virt) {
        t.fault = Some(if d.sign_extend {
            format!("{virt:#x} is not canonical in {} paging", d.mode)
        } else {
            format!(
                "{virt:#x} is beyond 4 GiB, out of reach of {} paging",
                d.mode
            )
        });
        return Ok(t);
    }
    let eb = d.entry_bytes;
    let mut table = s.root;
    for (li, level) in d.levels.iter().enumerate() {
        let idx = (virt >> level.shift) & ((1u64 << level.bits) - 1);
        let entry_addr = table + idx * eb as u64;
        let mut buf = [0u8; 8];
        let Some(b) = buf.get_mut(..eb) else {
            return Err(walk_err(cpu, "bad entry size"));
        };
        if !mem.is_ram(entry_addr, eb as u64) {
            t.fault = Some(format!(
                "{} table at {table:#x} is not in the dump's RAM",
                level.name
            ));
            return Ok(t);
        }
        match mem.read_at(entry_addr, b) {
            Ok(()) => {}
            Err(e @ (Error::Hole { .. } | Error::PageUnavailable { .. })) => {
                t.fault = Some(format!("{} entry at {entry_addr:#x}: {e}", level.name));
                return Ok(t);
            }
            Err(e) => return Err(e),
        }
        let e = u64::from_le_bytes(buf);
        t.steps.push(TranslationStep {
            level: level.name,
            entry_addr,
            entry: e,
        });
        if e & P == 0 {
            t.fault = Some(format!("{} entry not present", level.name));
            return Ok(t);
        }
        let size = 1u64 << level.shift;
        let last = li + 1 == d.levels.len();
        let large = !last
            && match level.large {
                Large::Never => false,
                Large::Always => e & PS != 0,
                Large::Pse36 => s.pse && e & PS != 0,
            };
        if last || large {
            let base = match level.large {
                Large::Pse36 if large => ((e & 0xFFC0_0000) | (((e >> 13) & 0xFF) << 32)) & pmask,
                _ => e & d.addr_mask & pmask & !(size - 1),
            };
            let phys = base | (virt & (size - 1));
            t.phys = Some(phys);
            t.page_size = Some(size);
            if !mem.is_ram(phys, 1) {
                t.fault = Some(format!(
                    "physical {phys:#x} is not in the dump's RAM (device memory, or not saved)"
                ));
            }
            return Ok(t);
        }
        table = e & d.addr_mask & pmask & s.a20;
    }
    // Unreachable: the last level always ends the loop above.
    t.fault = Some("walk ended without a leaf".into());
    Ok(t)
}
