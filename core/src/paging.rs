//! Paging as data: one table-walk engine for every architecture, driven by an MMU
//! description ([`MmuDesc`]) per address space (docs/plugins.md says how an
//! architecture describes itself).
//!
//! An architecture describes each translation regime it has by data: per level the
//! index bits and shift, which entries point at a next-level table and which end the
//! walk with a page or block (bit tests, mask + value), the entry size, the address
//! masks, extra high address bits stored elsewhere in an entry (x86 PSE-36, Arm's
//! 52-bit addresses with the 64 KiB granule), how the virtual address is formed from the
//! indices (zero-extended, ones-extended, sign-extended) and which bits of the root
//! register hold the root table's address. A CPU's translation is one or more
//! [`AddressSpace`]s, each a virtual range, a root and a description: x86 has one, an
//! AArch64 CPU two (TTBR0 for the low half, TTBR1 for the high half). Descriptions may
//! be `static` (x86's four modes) or built at run time from registers (AArch64's TCR).
//!
//! The engine ([`walk`], [`translate`]):
//! - walks depth-first, entries in index order, spaces in ascending order, so leaves
//!   come out in ascending virtual order and `MappingList::push` only extends its last
//!   run;
//! - reads a whole table with one positioned read; tables above the last level are kept
//!   in a bounded [`WalkCache`] that the walks of several CPUs may share, and with a
//!   shared cache a top-level subtree another CPU already walked (same description, same
//!   table) is not walked again;
//! - keeps physical addresses to `WalkOptions::max_phys_bits` minus
//!   `WalkOptions::clear_mask` (AMD SME's C-bit), in leaves and table pointers alike,
//!   and applies the space's `table_mask` (x86's A20 gate) to the root and every table
//!   address, not to leaves;
//! - counts leaves and tables outside RAM (a large page partly in RAM keeps its RAM
//!   part) and entries no bit test accepts;
//! - bounds its work by depth (the number of levels, whatever the entries say) and by
//!   `WalkOptions::max_table_pages` table visits per CPU walk (cache hits included):
//!   running past it is an error, not a warning, since a partial view that looks
//!   complete would be worse. Each visit emits at most one run per entry, so the limit
//!   bounds memory as well. Never panics.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::mapping::{Mapping, MappingList};
use crate::memory::PhysicalMemory;
use crate::walker::{Translation, TranslationStep, WalkOptions, WalkStats};

/// Warnings kept per walk; the counters in `WalkStats` carry the totals.
const MAX_WARNINGS: usize = 16;

/// Table pages kept per cache generation (two generations: at most twice this many,
/// about 8–16 MiB decoded).
const CACHE_GENERATION: usize = 1024;

/// Least upper bound on the mapping runs one walk adds to its list (24 bytes each, so
/// 24 MiB; 2^22 made a 16 KiB hostile raw image with self-referencing tables use 103 MB,
/// past the memory bound of the hostile corpus, issue #17); the bound grows to two runs per 4 KiB page of RAM for bigger dumps
/// (a run maps at least a page, and a page mapped at two virtual addresses is normal),
/// so a huge guest mapped page by page still converts. The table budget alone does not
/// bound them: every visit of a last level table can emit 512 leaves, and a leaf over
/// fragmented RAM one mapping per RAM range, so a table that points at itself would
/// otherwise fill memory.
pub const MAX_WALK_MAPPINGS: usize = 1 << 20;

/// The mapping bound of a walk over `mem` ([`MAX_WALK_MAPPINGS`]).
fn mapping_budget(mem: &dyn PhysicalMemory) -> usize {
    let pages = usize::try_from(mem.total_bytes() >> 12).unwrap_or(usize::MAX);
    MAX_WALK_MAPPINGS.max(pages.saturating_mul(2))
}

/// Least upper bound on the leaves one walk visits (64 GiB of 4 KiB pages); the bound
/// grows to four leaves per 4 KiB page of RAM for bigger dumps. It bounds a walk's time
/// when the leaves merge into few runs or fall outside RAM: tables that point at each
/// other reach 512 leaves per table visit, two billion within the table budget.
pub const MAX_WALK_LEAVES: u64 = 1 << 24;

/// The leaf bound of a walk over `mem`: [`MAX_WALK_LEAVES`], or four per 4 KiB page of
/// RAM when that is more (a page mapped at a few virtual addresses is normal).
fn leaf_budget(mem: &dyn PhysicalMemory) -> u64 {
    MAX_WALK_LEAVES.max((mem.total_bytes() >> 12).saturating_mul(4))
}

/// `entry & mask == value`, or, negated, `entry & mask != value` ([`BitTest::any`]:
/// some bit of `mask` set, as RISC-V's leaf test R|W|X ≠ 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BitTest {
    pub mask: u64,
    pub value: u64,
    pub negate: bool,
}

impl BitTest {
    /// Every entry passes.
    pub const ALWAYS: BitTest = BitTest::new(0, 0);

    pub const fn new(mask: u64, value: u64) -> BitTest {
        BitTest {
            mask,
            value,
            negate: false,
        }
    }

    /// The bits of `mask` all set.
    pub const fn set(mask: u64) -> BitTest {
        BitTest::new(mask, mask)
    }

    /// The bits of `mask` all clear.
    pub const fn clear(mask: u64) -> BitTest {
        BitTest::new(mask, 0)
    }

    /// At least one bit of `mask` set.
    pub const fn any(mask: u64) -> BitTest {
        BitTest {
            mask,
            value: 0,
            negate: true,
        }
    }

    pub const fn matches(self, entry: u64) -> bool {
        (entry & self.mask == self.value) != self.negate
    }
}

/// Address bits an entry keeps outside its address field: entry bits
/// `from .. from + width` are address bits `to .. to + width` (x86 PSE-36: 13, 8, 32;
/// Arm 64 KiB granule with 52-bit addresses: 12, 4, 48; a whole field out of place, as
/// RISC-V's PPN: 10, 44, 12 with a zero address mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HighBits {
    pub from: u32,
    pub width: u32,
    pub to: u32,
}

impl HighBits {
    fn extract(self, entry: u64) -> u64 {
        if self.width == 0 || self.width >= 64 || self.from >= 64 || self.to >= 64 {
            return 0;
        }
        ((entry >> self.from) & ((1u64 << self.width) - 1)) << self.to
    }
}

/// One level of the table tree, top first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Level {
    /// Name of the table read at this level ("PML4", "PD", "L0"...), for `translate`.
    pub name: &'static str,
    /// Virtual-address bits that index this table (the table has `1 << bits` entries).
    pub bits: u32,
    /// Lowest virtual-address bit of the index; one entry covers `1 << shift` bytes.
    pub shift: u32,
    /// A valid entry matching this points at a next-level table (None: never; ignored at
    /// the last level).
    pub table: Option<BitTest>,
    /// A valid entry matching this maps a page or block of `1 << shift` bytes (None: no
    /// leaves at this level). Tested before `table`.
    pub leaf: Option<BitTest>,
    /// Extra address bits of a leaf entry at this level.
    pub leaf_high: Option<HighBits>,
    /// Extra address bits of a table pointer at this level.
    pub table_high: Option<HighBits>,
}

impl Level {
    /// A level with index bits and shift, entries pointing at tables, no leaves.
    pub const fn new(name: &'static str, bits: u32, shift: u32) -> Level {
        Level {
            name,
            bits,
            shift,
            table: Some(BitTest::ALWAYS),
            leaf: None,
            leaf_high: None,
            table_high: None,
        }
    }

    pub const fn with_table(mut self, t: Option<BitTest>) -> Level {
        self.table = t;
        self
    }

    pub const fn with_leaf(mut self, t: Option<BitTest>) -> Level {
        self.leaf = t;
        self
    }

    pub const fn with_leaf_high(mut self, h: HighBits) -> Level {
        self.leaf_high = Some(h);
        self
    }

    pub const fn with_table_high(mut self, h: HighBits) -> Level {
        self.table_high = Some(h);
        self
    }
}

/// How a virtual address is formed from the bits the table indices give
/// (`MmuDesc::va_bits` of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VaForm {
    /// The upper bits are zero (x86 32-bit and PAE; Arm TTBR0).
    Zero,
    /// The upper bits are one (Arm TTBR1).
    Ones,
    /// Sign-extended from the top index bit (x86 IA-32e: canonical addresses).
    SignExtend,
}

/// An MMU's translation regime described as data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MmuDesc {
    /// Mode name ("4level", "4k-48bit"...), for messages.
    pub name: &'static str,
    /// Bytes per entry: 4 or 8.
    pub entry_bytes: u8,
    pub big_endian: bool,
    /// Levels, top first. The last level's valid entries are leaves or invalid.
    pub levels: Cow<'static, [Level]>,
    /// A valid (present) entry.
    pub valid: BitTest,
    /// Bits of the root register that hold the root table's address.
    pub root_mask: u64,
    /// Entry bits that hold a table's address.
    pub table_mask: u64,
    /// Entry bits that hold a leaf's address (bits below the leaf's size are dropped).
    pub leaf_mask: u64,
    pub va_form: VaForm,
}

impl MmuDesc {
    /// Virtual-address bits the levels translate (top level's shift + bits).
    pub fn va_bits(&self) -> u32 {
        self.levels.first().map_or(0, |l| l.shift + l.bits)
    }

    /// The full virtual address of index bits `raw`.
    pub fn extend(&self, raw: u64) -> u64 {
        let bits = self.va_bits();
        if bits == 0 || bits >= 64 {
            return raw;
        }
        let low = raw & ((1u64 << bits) - 1);
        match self.va_form {
            VaForm::Zero => low,
            VaForm::Ones => low | !((1u64 << bits) - 1),
            VaForm::SignExtend => {
                let unused = 64 - bits;
                (((low << unused) as i64) >> unused) as u64
            }
        }
    }

    /// Whether `virt` has the form this description gives its addresses.
    pub fn valid_virt(&self, virt: u64) -> bool {
        self.extend(virt) == virt
    }

    /// Bytes of the table at level `li`.
    fn table_bytes(&self, li: usize) -> usize {
        self.levels.get(li).map_or(0, |l| {
            (1usize << l.bits.min(20)) * usize::from(self.entry_bytes)
        })
    }

    /// Check the description for what the engine relies on: 4- or 8-byte entries,
    /// levels whose shifts follow their index bits down to a shift of at least 12
    /// (smaller pages are not real), at most 8 levels, at most 16 index bits per level,
    /// and at most 64 address bits.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::invalid(format!(
                "MMU description {}: {m}",
                self.name
            )))
        };
        if self.entry_bytes != 4 && self.entry_bytes != 8 {
            return bad(format!("{}-byte entries", self.entry_bytes));
        }
        if self.levels.is_empty() || self.levels.len() > 8 {
            return bad(format!("{} levels", self.levels.len()));
        }
        for (i, l) in self.levels.iter().enumerate() {
            if l.bits == 0 || l.bits > 16 {
                return bad(format!("level {} has {} index bits", l.name, l.bits));
            }
            let expect = match self.levels.get(i + 1) {
                Some(n) => n.shift + n.bits,
                None => l.shift,
            };
            if l.shift != expect || l.shift < 12 {
                return bad(format!("level {} has shift {}", l.name, l.shift));
            }
        }
        if self.va_bits() > 64 {
            return bad(format!("{} address bits", self.va_bits()));
        }
        Ok(())
    }
}

/// A virtual range `[lo, hi)` (hi may be 2^64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtRange {
    pub lo: u64,
    pub hi: u128,
}

impl VirtRange {
    pub const ALL: VirtRange = VirtRange { lo: 0, hi: 1 << 64 };

    pub fn new(lo: u64, hi: u128) -> VirtRange {
        VirtRange { lo, hi }
    }

    /// From `lo` to the top of the address space.
    pub fn from(lo: u64) -> VirtRange {
        VirtRange { lo, hi: 1 << 64 }
    }

    pub fn is_empty(&self) -> bool {
        u128::from(self.lo) >= self.hi
    }

    pub fn contains(&self, v: u64) -> bool {
        v >= self.lo && u128::from(v) < self.hi
    }

    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        (start as u128) < self.hi && (start as u128 + len as u128) > self.lo as u128
    }

    pub fn covers(&self, start: u64, len: u64) -> bool {
        start >= self.lo && (start as u128 + len as u128) <= self.hi
    }

    pub fn intersect(&self, o: &VirtRange) -> VirtRange {
        VirtRange {
            lo: self.lo.max(o.lo),
            hi: self.hi.min(o.hi),
        }
    }

    /// The part of `m` inside the range.
    pub fn clip(&self, m: &Mapping) -> Option<Mapping> {
        let s = m.virt.max(self.lo);
        let e = (m.virt as u128 + m.len as u128).min(self.hi);
        (u128::from(s) < e).then(|| Mapping {
            virt: s,
            phys: m.phys + (s - m.virt),
            len: (e - u128::from(s)) as u64,
        })
    }
}

/// One address space of a CPU: the virtual range it translates, its root and how its
/// tables look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpace {
    /// Virtual addresses this space translates (clipped further to what its
    /// description can form).
    pub range: VirtRange,
    /// The root register's value (masked with `desc.root_mask` by the engine).
    pub root: u64,
    /// The root register's name, for messages ("CR3", "TTBR1_EL1").
    pub root_name: &'static str,
    /// ANDed into the root and every table address (x86 A20 gate; all ones normally).
    pub table_mask: u64,
    pub desc: Cow<'static, MmuDesc>,
}

/// How a CPU translates addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regime {
    /// Paging off: virtual = physical.
    Off,
    /// Paging on in mode `mode` (a walker's mode name), through `spaces`.
    Paging {
        mode: Cow<'static, str>,
        spaces: Vec<AddressSpace>,
    },
}

type TableKey = (u64, u8, bool, usize); // (physical address, entry bytes, big-endian, entries)

/// A bounded cache of decoded table pages, keyed by physical address.
///
/// Two generations approximate LRU without a linked list: hits in the old generation
/// move to the young one; when the young one fills, it becomes the old one and the old
/// one is dropped. Only tables above the last level are cached: those are the ones met
/// again (shared kernel tables across CPUs, self-references), while the bulk of the
/// tables, the page tables proper, are visited once per walk.
#[derive(Default)]
struct TableCache {
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

/// A top-level subtree already walked: (description, table mask, top index, table
/// address). A second CPU whose top-level entry points at the same table gets exactly
/// the same mappings from it, so the subtree is walked once.
type SubtreeKey = (usize, u64, usize, u64);

/// State shared by the walks of several CPUs in one view: the table cache, and the
/// top-level subtrees already walked (skipped by later walks that share the cache).
#[derive(Default)]
pub struct WalkCache {
    tables: TableCache,
    seen: HashSet<SubtreeKey>,
    /// Descriptions met so far; a subtree key names one by its position.
    descs: Vec<MmuDesc>,
}

impl WalkCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn desc_id(&mut self, d: &MmuDesc) -> usize {
        match self.descs.iter().position(|x| x == d) {
            Some(i) => i,
            None => {
                self.descs.push(d.clone());
                self.descs.len() - 1
            }
        }
    }
}

/// The physical-address mask: `max_phys_bits` bits, minus `clear_mask`.
pub fn phys_mask(opts: &WalkOptions) -> u64 {
    // Clamp nonsense so shifts stay sound.
    let bits = u32::from(opts.max_phys_bits).clamp(12, 52);
    ((1u64 << bits) - 1) & !opts.clear_mask
}

fn walk_err(cpu: u32, msg: impl Into<String>) -> Error {
    Error::Walk {
        cpu,
        msg: msg.into(),
    }
}

/// The root table address of a space.
fn root_addr(s: &AddressSpace, pmask: u64) -> u64 {
    // The root is a table pointer like any other: the physical mask and the table mask
    // apply (Linux with SME loads CR3 with the C-bit set).
    s.root & s.desc.root_mask & (pmask | 0xFFF) & s.table_mask
}

/// Walk the spaces of CPU `cpu` (its index, for errors) and push every leaf inside
/// `range` into `out`, in ascending virtual order.
///
/// With `cache`, tables are cached across calls and top-level subtrees already walked
/// by an earlier call are skipped (for the walks of several CPUs into one view; a failed
/// walk forgets the subtrees it marked). Without, the walk uses a cache of its own.
///
/// Errors: a root table outside RAM, an invalid description, running past
/// `max_table_pages` (`out` then keeps what was found before), or an I/O error.
pub fn walk(
    cpu: u32,
    spaces: &[AddressSpace],
    mem: &dyn PhysicalMemory,
    opts: &WalkOptions,
    range: VirtRange,
    cache: Option<&mut WalkCache>,
    out: &mut MappingList,
) -> Result<WalkStats> {
    let mut local = WalkCache::default();
    let share = cache.is_some();
    let shared = cache.unwrap_or(&mut local);
    let mut order: Vec<&AddressSpace> = spaces.iter().collect();
    order.sort_by_key(|s| s.range.lo);
    let mut eng = Engine {
        mem,
        cpu,
        pmask: phys_mask(opts),
        budget: opts.max_table_pages,
        visits: 0,
        share_subtrees: share,
        shared,
        inserted: Vec::new(),
        ram_hint: 0,
        runs_start: out.len(),
        leaf_budget: leaf_budget(mem),
        mapping_budget: mapping_budget(mem),
        stats: WalkStats::default(),
    };
    for s in order {
        let r = range.intersect(&s.range);
        if r.is_empty() {
            continue;
        }
        if let Err(e) = eng.run(s, r, out) {
            eng.forget_subtrees();
            return Err(e);
        }
    }
    Ok(eng.stats)
}

/// One walk of one CPU's tables.
struct Engine<'a> {
    mem: &'a dyn PhysicalMemory,
    cpu: u32,
    pmask: u64,
    budget: u64,
    visits: u64,
    /// Skip and record top-level subtrees shared with earlier walks.
    share_subtrees: bool,
    shared: &'a mut WalkCache,
    /// Subtrees this walk added to `shared.seen` (forgotten again if it fails).
    inserted: Vec<SubtreeKey>,
    ram_hint: usize,
    /// `out.len()` when the walk started (the mapping bound counts from there).
    runs_start: usize,
    /// Leaves this walk may visit ([`leaf_budget`]).
    leaf_budget: u64,
    /// Mapping runs this walk may add ([`mapping_budget`]).
    mapping_budget: usize,
    stats: WalkStats,
}

/// What one space's walk needs beside the engine.
struct SpaceWalk<'d> {
    d: &'d MmuDesc,
    id: usize,
    table_mask: u64,
    range: VirtRange,
    /// `d.va_bits()`, computed once (the loop extends every entry's address).
    va_bits: u32,
}

impl SpaceWalk<'_> {
    /// [`MmuDesc::extend`] with the precomputed width.
    #[inline]
    fn extend(&self, raw: u64) -> u64 {
        let bits = self.va_bits;
        if bits == 0 || bits >= 64 {
            return raw;
        }
        let low = raw & ((1u64 << bits) - 1);
        match self.d.va_form {
            VaForm::Zero => low,
            VaForm::Ones => low | !((1u64 << bits) - 1),
            VaForm::SignExtend => {
                let unused = 64 - bits;
                (((low << unused) as i64) >> unused) as u64
            }
        }
    }
}

impl Engine<'_> {
    fn warn(&mut self, msg: impl FnOnce() -> String) {
        if self.stats.warnings.len() < MAX_WARNINGS {
            self.stats.warnings.push(msg());
        }
    }

    /// Walk one space from its root. The root must be readable: a root outside RAM is
    /// an error, not an empty result, since it almost always means a wrong root or mode.
    fn run(&mut self, s: &AddressSpace, range: VirtRange, out: &mut MappingList) -> Result<()> {
        let d: &MmuDesc = &s.desc;
        d.check().map_err(|e| walk_err(self.cpu, e.to_string()))?;
        let root = root_addr(s, self.pmask);
        let root_bytes = d.table_bytes(0);
        if !self.mem.is_ram(root, root_bytes as u64) {
            return Err(walk_err(
                self.cpu,
                format!(
                    "{} root table at {root:#x} (from {} {:#x}) is not in the dump's RAM: \
                     wrong {} or paging mode?",
                    d.name, s.root_name, s.root, s.root_name
                ),
            ));
        }
        let id = if self.share_subtrees {
            self.shared.desc_id(d)
        } else {
            0
        };
        let sw = SpaceWalk {
            d,
            id,
            table_mask: s.table_mask,
            range,
            va_bits: d.va_bits(),
        };
        self.walk_table(&sw, 0, root, 0, out)
    }

    /// Undo this walk's marks in `shared.seen`, after a failure: a later CPU sharing a
    /// subtree with this one must walk it, since this CPU's mappings are dropped.
    fn forget_subtrees(&mut self) {
        for k in self.inserted.drain(..) {
            self.shared.seen.remove(&k);
        }
    }

    /// Read (or fetch from the cache) the table at `addr`, counting the visit.
    /// Ok(None): the table is not in RAM or its page was not saved (counted, skipped).
    fn load(
        &mut self,
        d: &MmuDesc,
        addr: u64,
        bytes: usize,
        cacheable: bool,
    ) -> Result<Option<Rc<[u64]>>> {
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
        let eb = d.entry_bytes;
        let key = (addr, eb, d.big_endian, bytes / usize::from(eb));
        if let Some(t) = self.shared.tables.get(&key) {
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
        let t: Rc<[u64]> = buf
            .chunks_exact(usize::from(eb))
            .map(|c| decode_entry(c, d.big_endian))
            .collect();
        if cacheable {
            self.shared.tables.insert(key, t.clone());
        }
        Ok(Some(t))
    }

    fn walk_table(
        &mut self,
        sw: &SpaceWalk<'_>,
        li: usize,
        table: u64,
        prefix: u64,
        out: &mut MappingList,
    ) -> Result<()> {
        let d = sw.d;
        let Some(level) = d.levels.get(li).copied() else {
            return Ok(());
        };
        let last = li + 1 == d.levels.len();
        let Some(entries) = self.load(d, table, d.table_bytes(li), !last)? else {
            return Ok(());
        };
        let size = 1u64 << level.shift;
        // Loop invariants, out of the per-entry path.
        let valid = d.valid;
        let leaf_test = level.leaf;
        let leaf_always = leaf_test == Some(BitTest::ALWAYS);
        // Leaf address without extra bits: one AND.
        let plain_leaf =
            (level.leaf_high.is_none()).then_some(d.leaf_mask & !(size - 1) & self.pmask);
        let base = (li > 0).then(|| sw.extend(prefix));
        for (i, &e) in entries.iter().enumerate() {
            if !valid.matches(e) {
                continue;
            }
            let raw = prefix | ((i as u64) << level.shift);
            // Entries below the top level never straddle the sign-extension bit, so the
            // extended form of an entry's range is contiguous, and the extended prefix
            // of the table is the same for all its entries.
            let virt = match base {
                Some(b) => b | ((i as u64) << level.shift),
                None => sw.extend(raw),
            };
            if !sw.range.overlaps(virt, size) {
                continue;
            }
            if leaf_always || leaf_test.is_some_and(|t| t.matches(e)) {
                let phys = match plain_leaf {
                    Some(m) => e & m,
                    None => leaf_addr(d, &level, e, size, self.pmask),
                };
                self.leaf(sw.range, virt, phys, size, out)?;
                continue;
            }
            if last || !level.table.is_some_and(|t| t.matches(e)) {
                self.stats.invalid_entries += 1;
                continue;
            }
            let next = table_addr(d, &level, e, self.pmask) & sw.table_mask;
            if li == 0 && self.share_subtrees && sw.range.covers(virt, size) {
                let key = (sw.id, sw.table_mask, i, next);
                if !self.shared.seen.insert(key) {
                    continue;
                }
                self.inserted.push(key);
            }
            self.walk_table(sw, li + 1, next, raw, out)?;
        }
        Ok(())
    }

    /// Emit one leaf: the part inside the walk's virtual range and inside RAM.
    ///
    /// Errors past [`mapping_budget`] runs or [`leaf_budget`] leaves (`out` keeps
    /// what was found before).
    fn leaf(
        &mut self,
        range: VirtRange,
        virt: u64,
        phys: u64,
        size: u64,
        out: &mut MappingList,
    ) -> Result<()> {
        self.stats.leaves += 1;
        if self.stats.leaves > self.leaf_budget {
            return Err(walk_err(
                self.cpu,
                format!(
                    "gave up after {} leaf entries: the page tables loop or are corrupt",
                    self.leaf_budget
                ),
            ));
        }
        // Clip to the virtual range (only a leaf straddling a view's split is cut).
        let v0 = virt.max(range.lo);
        let v1 = (virt as u128 + size as u128).min(range.hi);
        let (p0, len) = (phys + (v0 - virt), (v1 - v0 as u128) as u64);
        let Some(p1) = p0.checked_add(len) else {
            self.stats.leaves_outside_ram += 1;
            return Ok(());
        };
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
                if out.len().saturating_sub(self.runs_start) >= self.mapping_budget {
                    return Err(walk_err(
                        self.cpu,
                        format!(
                            "gave up after {} mappings: the page tables map \
                             RAM in too many pieces (tables that point at themselves, or a \
                             corrupt dump)",
                            self.mapping_budget
                        ),
                    ));
                }
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
        Ok(())
    }
}

fn decode_entry(c: &[u8], big_endian: bool) -> u64 {
    let mut b = [0u8; 8];
    let n = c.len().min(8);
    if big_endian {
        b[8 - n..].copy_from_slice(&c[..n]);
        u64::from_be_bytes(b)
    } else {
        b[..n].copy_from_slice(&c[..n]);
        u64::from_le_bytes(b)
    }
}

/// The physical address a leaf entry maps (its page's start): the address field plus
/// the extra bits, without the bits below the page size (so an address field that is
/// not in place, such as RISC-V's PPN at entry bit 10, can be given as `leaf_high`).
fn leaf_addr(d: &MmuDesc, level: &Level, e: u64, size: u64, pmask: u64) -> u64 {
    let high = level.leaf_high.map_or(0, |h| h.extract(e));
    ((e & d.leaf_mask) | high) & !(size - 1) & pmask
}

/// The physical address of the table a table entry points at (before the table mask).
fn table_addr(d: &MmuDesc, level: &Level, e: u64, pmask: u64) -> u64 {
    let high = level.table_high.map_or(0, |h| h.extract(e));
    ((e & d.table_mask) | high) & pmask
}

/// "4 GiB", "256 TiB": the size of a `bits`-bit address space.
fn space_size(bits: u32) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let u = (bits / 10).min(6);
    format!("{} {}", 1u64 << (bits - 10 * u), UNITS[u as usize])
}

/// Translate one address through `spaces`, recording every entry read. Faults (no
/// space covers the address, entry not valid, table outside RAM) are answers, not
/// errors; only I/O errors are errors. A page outside the dump's RAM still gets its
/// physical address, with a note in `fault`.
pub fn translate(
    cpu: u32,
    spaces: &[AddressSpace],
    mem: &dyn PhysicalMemory,
    opts: &WalkOptions,
    virt: u64,
) -> Result<Translation> {
    let pmask = phys_mask(opts);
    let mut t = Translation {
        virt,
        steps: Vec::new(),
        phys: None,
        page_size: None,
        fault: None,
    };
    let Some(s) = spaces.iter().find(|s| s.range.contains(virt)) else {
        t.fault = Some(format!("{virt:#x} is in no address space of cpu {cpu}"));
        return Ok(t);
    };
    let d: &MmuDesc = &s.desc;
    d.check().map_err(|e| walk_err(cpu, e.to_string()))?;
    if !d.valid_virt(virt) {
        t.fault = Some(match d.va_form {
            VaForm::SignExtend => format!("{virt:#x} is not canonical in {} paging", d.name),
            _ => format!(
                "{virt:#x} is beyond {}, out of reach of {} paging",
                space_size(d.va_bits()),
                d.name
            ),
        });
        return Ok(t);
    }
    let eb = usize::from(d.entry_bytes);
    let mut table = root_addr(s, pmask);
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
        let e = decode_entry(b, d.big_endian);
        t.steps.push(TranslationStep {
            level: level.name,
            entry_addr,
            entry: e,
        });
        if !d.valid.matches(e) {
            t.fault = Some(format!("{} entry not present", level.name));
            return Ok(t);
        }
        let size = 1u64 << level.shift;
        let last = li + 1 == d.levels.len();
        if level.leaf.is_some_and(|l| l.matches(e)) {
            let phys = leaf_addr(d, level, e, size, pmask) | (virt & (size - 1));
            t.phys = Some(phys);
            t.page_size = Some(size);
            if !mem.is_ram(phys, 1) {
                t.fault = Some(format!(
                    "physical {phys:#x} is not in the dump's RAM (device memory, or not saved)"
                ));
            }
            return Ok(t);
        }
        if last || !level.table.is_some_and(|l| l.matches(e)) {
            t.fault = Some(format!("{} entry is not a valid descriptor", level.name));
            return Ok(t);
        }
        table = table_addr(d, level, e, pmask) & s.table_mask;
    }
    // Unreachable: the last level always ends the loop above.
    t.fault = Some("walk ended without a leaf".into());
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::Mapping;

    /// RISC-V Sv39 as data: PPN at entry bits 53:10 (address bits 55:12), V = bit 0,
    /// a leaf when any of R, W, X (bits 3:1) is set, else a pointer; leaves at every level
    /// (1 GiB, 2 MiB, 4 KiB); addresses sign-extended from bit 38.
    static SV39_LEVELS: [Level; 3] = [
        sv39_level("L2", 30),
        sv39_level("L1", 21),
        sv39_level("L0", 12).with_table(None),
    ];

    const fn sv39_level(name: &'static str, shift: u32) -> Level {
        const PPN: HighBits = HighBits {
            from: 10,
            width: 44,
            to: 12,
        };
        Level::new(name, 9, shift)
            .with_table(Some(BitTest::clear(0b1110)))
            .with_leaf(Some(BitTest::any(0b1110)))
            .with_leaf_high(PPN)
            .with_table_high(PPN)
    }

    static SV39: MmuDesc = MmuDesc {
        name: "sv39",
        entry_bytes: 8,
        big_endian: false,
        levels: Cow::Borrowed(&SV39_LEVELS),
        valid: BitTest::set(1),
        root_mask: 0x0000_0FFF_FFFF_FFFF,
        table_mask: 0,
        leaf_mask: 0,
        va_form: VaForm::SignExtend,
    };

    /// RAM 0..4 MiB in a temp file, with u64 entries written at given addresses.
    struct Ram(std::collections::BTreeMap<u64, u64>);

    impl PhysicalMemory for Ram {
        fn ranges(&self) -> &[crate::memory::PhysRange] {
            static R: [crate::memory::PhysRange; 1] = [crate::memory::PhysRange {
                start: 0,
                end: 0x40_0000,
            }];
            &R
        }
        fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                let a = paddr + i as u64;
                let e = self.0.get(&(a & !7)).copied().unwrap_or(0);
                *b = e.to_le_bytes()[(a & 7) as usize];
            }
            Ok(())
        }
    }

    /// Fuzzing finding (issue #17): a table that points at itself made the walk emit
    /// a mapping per leaf visit without bound (the table budget counts visits, not what
    /// they emit) until the allocation aborted. Sv39 table at 0x1000: even entries point
    /// back at it, odd entries are leaves onto the page at 0x5000 (so no two runs merge):
    /// 256 * 256 * 256 leaves from 65,793 table visits, within the table budget.
    #[test]
    fn self_referencing_table_stops_at_the_mapping_bound() {
        struct Page(Vec<u8>);
        impl PhysicalMemory for Page {
            fn ranges(&self) -> &[crate::memory::PhysRange] {
                static R: [crate::memory::PhysRange; 1] = [crate::memory::PhysRange {
                    start: 0,
                    end: 0x10_0000,
                }];
                &R
            }
            fn read_at(&self, paddr: u64, buf: &mut [u8]) -> Result<()> {
                for (i, b) in buf.iter_mut().enumerate() {
                    let a = paddr as usize + i;
                    *b = if (0x1000..0x2000).contains(&a) {
                        self.0[a - 0x1000]
                    } else {
                        0
                    };
                }
                Ok(())
            }
        }
        let (v, r) = (1u64, 2u64);
        let mut table = Vec::with_capacity(4096);
        for i in 0..512u64 {
            let e = if i % 2 == 0 {
                (1 << 10) | v
            } else {
                (5 << 10) | v | r
            };
            table.extend_from_slice(&e.to_le_bytes());
        }
        let mem = Page(table);
        let space = AddressSpace {
            range: VirtRange::ALL,
            root: 0x1000,
            root_name: "satp",
            table_mask: u64::MAX,
            desc: Cow::Borrowed(&SV39),
        };
        let mut out = MappingList::new();
        let err = walk(
            0,
            std::slice::from_ref(&space),
            &mem,
            &WalkOptions::default(),
            VirtRange::ALL,
            None,
            &mut out,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("mappings"),
            "unexpected error: {err}"
        );
        assert_eq!(out.len(), MAX_WALK_MAPPINGS);
    }

    /// Fuzzing finding (issue #17, walk target, a 11 KiB aarch64 input that took over
    /// 10 s; a second, x86 4-level, at the first bound of 2^26): leaves that emit nothing (outside RAM, or merging into one run) were not
    /// bounded at all, so tables pointing at themselves cost 512 leaves per table visit
    /// for the whole table budget. Sv48-like 4 levels, even entries point back at the
    /// table, odd entries are leaves outside RAM: 2^33 leaves without the bound.
    #[test]
    fn leaves_outside_ram_stop_at_the_leaf_bound() {
        static SV48_LEVELS: [Level; 4] = [
            sv39_level("L3", 39),
            sv39_level("L2", 30),
            sv39_level("L1", 21),
            sv39_level("L0", 12).with_table(None),
        ];
        static SV48: MmuDesc = MmuDesc {
            name: "sv48",
            levels: Cow::Borrowed(&SV48_LEVELS),
            ..SV39
        };
        let (v, r) = (1u64, 2u64);
        let mut m = std::collections::BTreeMap::new();
        for i in 0..512u64 {
            let e = if i % 2 == 0 {
                (1 << 10) | v
            } else {
                (0x10_0000 << 10) | v | r // 4 GiB: outside the 4 MiB of RAM
            };
            m.insert(0x1000 + i * 8, e);
        }
        let mem = Ram(m);
        let space = AddressSpace {
            range: VirtRange::ALL,
            root: 0x1000,
            root_name: "satp",
            table_mask: u64::MAX,
            desc: Cow::Borrowed(&SV48),
        };
        let mut out = MappingList::new();
        let start = std::time::Instant::now();
        let err = walk(
            0,
            std::slice::from_ref(&space),
            &mem,
            &WalkOptions::default(),
            VirtRange::ALL,
            None,
            &mut out,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("leaf entries"),
            "unexpected error: {err}"
        );
        // Only the top level's 512 GiB leaves (aligned down to physical 0) reach RAM.
        assert!(out.len() <= 256, "{} runs", out.len());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn riscv_sv39_is_data() {
        SV39.check().unwrap();
        let pte = |ppn: u64, flags: u64| (ppn << 10) | flags;
        let (v, r, w, x) = (1, 2, 4, 8);
        let mut m = std::collections::BTreeMap::new();
        // Root at 0x1000 (satp.PPN = 1). Entry 0: pointer to L1 at 0x2000; entry 256
        // (the first of the upper half): a 1 GiB leaf at physical 0.
        m.insert(0x1000, pte(2, v));
        m.insert(0x1000 + 256 * 8, pte(0, v | r | w));
        // L1 entry 1: pointer to L0 at 0x3000; entry 2: a 2 MiB leaf at 0x20_0000.
        m.insert(0x2000 + 8, pte(3, v));
        m.insert(0x2000 + 2 * 8, pte(0x200, v | r | x));
        // L0 entry 5: a 4 KiB page at 0x5000; entry 6: valid, W only (reserved in Sv39
        // but a leaf here by the R|W|X rule); entry 7: invalid (V clear).
        m.insert(0x3000 + 5 * 8, pte(5, v | r));
        m.insert(0x3000 + 6 * 8, pte(6, v | w));
        m.insert(0x3000 + 7 * 8, pte(7, r));
        let mem = Ram(m);
        let space = AddressSpace {
            range: VirtRange::ALL,
            root: 1 << 12, // the walker turns satp.PPN into an address
            root_name: "satp",
            table_mask: u64::MAX,
            desc: Cow::Borrowed(&SV39),
        };
        let opts = WalkOptions::default();
        let mut out = MappingList::new();
        let st = walk(
            0,
            std::slice::from_ref(&space),
            &mem,
            &opts,
            VirtRange::ALL,
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out.runs(),
            &[
                Mapping {
                    virt: 0x20_5000,
                    phys: 0x5000,
                    len: 0x2000
                },
                Mapping {
                    virt: 0x40_0000,
                    phys: 0x20_0000,
                    len: 0x20_0000
                },
                // The 1 GiB leaf keeps its RAM part (4 MiB).
                Mapping {
                    virt: 0xFFFF_FFC0_0000_0000,
                    phys: 0,
                    len: 0x40_0000
                },
            ]
        );
        assert_eq!(st.leaves, 4);
        assert_eq!(st.leaves_outside_ram, 1);
        let t = translate(0, std::slice::from_ref(&space), &mem, &opts, 0x20_5123).unwrap();
        assert_eq!(t.phys, Some(0x5123));
        assert_eq!(
            t.steps.iter().map(|s| s.level).collect::<Vec<_>>(),
            ["L2", "L1", "L0"]
        );
        let t = translate(0, std::slice::from_ref(&space), &mem, &opts, 0x40_0000_0000).unwrap();
        assert!(t.fault.unwrap().contains("not canonical"));
    }

    static LEVELS: [Level; 3] = [
        Level::new("A", 9, 30),
        Level::new("B", 9, 21),
        Level::new("C", 9, 12),
    ];

    #[test]
    fn high_bits_and_forms() {
        let pse36 = HighBits {
            from: 13,
            width: 8,
            to: 32,
        };
        assert_eq!(pse36.extract(0xFF << 13), 0xFF << 32);
        let d = MmuDesc {
            name: "t",
            entry_bytes: 8,
            big_endian: false,
            levels: Cow::Borrowed(&LEVELS),
            valid: BitTest::set(1),
            root_mask: !0xFFF,
            table_mask: 0x0000_FFFF_FFFF_F000,
            leaf_mask: 0x0000_FFFF_FFFF_F000,
            va_form: VaForm::Ones,
        };
        assert!(d.check().is_ok());
        assert_eq!(d.va_bits(), 39);
        assert_eq!(d.extend(0x10_0000), 0xFFFF_FF80_0010_0000);
        assert!(d.valid_virt(0xFFFF_FF80_0000_0000));
        assert!(!d.valid_virt(0x1000));
        let z = MmuDesc {
            va_form: VaForm::Zero,
            ..d.clone()
        };
        assert_eq!(z.extend(0xFFFF_FF80_0010_0000), 0x10_0000);
        let s = MmuDesc {
            va_form: VaForm::SignExtend,
            ..d.clone()
        };
        assert_eq!(s.extend(0x40_0000_0000), 0xFFFF_FFC0_0000_0000);
        let broken = MmuDesc {
            levels: Cow::Owned(vec![Level::new("A", 9, 30), Level::new("C", 9, 12)]),
            ..d
        };
        assert!(broken.check().is_err());
        assert_eq!(space_size(32), "4 GiB");
        assert_eq!(space_size(48), "256 TiB");
        assert_eq!(space_size(39), "512 GiB");
    }
}
