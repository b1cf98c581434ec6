//! One virtual view of a multi-CPU guest, for any architecture, driven through the
//! [`ArchWalker`] trait.
//!
//! QEMU (docs/formats.md#elf-paging-mappings) walks every CPU's CR3 from the first paging
//! CPU on and keeps the union, so two processes' user halves land in one list with
//! contradictory virtual addresses. The default here keeps one address space: the user
//! half from one CPU, the kernel half merged from all (the kernel half is shared by every
//! process, but a CPU may still have per-CPU or per-mm kernel mappings of its own).

use std::collections::HashMap;

use crate::cpu::CpuState;
use crate::error::{Error, Result};
use crate::mapping::{Mapping, MappingList};
use crate::memory::PhysicalMemory;
use crate::paging::{VirtRange, WalkCache};
use crate::walker::{ArchWalker, WalkOptions, WalkStats};

/// Which CPUs contribute what to the view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewPolicy {
    /// The CPU (by `CpuState::index`) whose user half is kept. Default: the first CPU
    /// with paging on. It also wins kernel-half contradictions.
    pub user_cpu: Option<u32>,
    /// QEMU's behaviour: the union of every paging CPU's whole address space, user
    /// halves included. Contradictions (one virtual address, two physical ones) are
    /// then kept as QEMU keeps them, and counted in the warnings.
    pub all_cpus: bool,
}

/// Walk the CPUs' tables into one view, by `policy`.
///
/// - Default: the user half (below the walker's [`ArchWalker::kernel_start`]) from `policy.user_cpu` (default:
///   the first CPU with paging on); the kernel half from every paging CPU, the user CPU
///   first, then the others in order. Where two CPUs map one kernel address to different
///   physical addresses, the earlier CPU's mapping is kept and the conflict counted in
///   the warnings, so the list never holds contradictory virtual mappings.
/// - `all_cpus`: see [`ViewPolicy::all_cpus`].
///
/// Top-level entries that point at the same table as an earlier CPU's are not walked
/// again (they give the same mappings), and table pages are cached across CPUs.
///
/// Errors: no CPU with paging on is an [`Error::Invalid`] (callers should check
/// [`ArchWalker::paging_enabled`] first and fall back to identity mappings, as QEMU does); so is a
/// `user_cpu` that does not exist or has paging off. A failing walk of the user CPU (or
/// of the first CPU with `all_cpus`) is returned as is; a failing walk of another CPU
/// only drops that CPU's contribution, with a warning.
///
/// Every CPU is walked through [`ArchWalker::walk_range`] with one shared
/// [`WalkCache`]: a walker built on the engine shares table reads and subtrees across
/// CPUs; any other walker walks each CPU fully and has its result clipped.
pub fn build_view<W: ArchWalker + ?Sized>(
    walker: &W,
    cpus: &[CpuState],
    mem: &dyn PhysicalMemory,
    opts: &WalkOptions,
    policy: ViewPolicy,
) -> Result<(MappingList, WalkStats)> {
    let paging: Vec<&CpuState> = cpus.iter().filter(|c| walker.paging_enabled(c)).collect();
    let Some(&first) = paging.first() else {
        return Err(Error::invalid(
            "no CPU has paging enabled (CR0.PG clear, or no control registers recorded): \
             there are no virtual mappings to build",
        ));
    };
    let user = match policy.user_cpu {
        None => first,
        Some(i) => {
            let c = cpus.iter().find(|c| c.index == i).ok_or_else(|| {
                Error::invalid(format!("no CPU {i} in the dump ({} CPUs)", cpus.len()))
            })?;
            if !walker.paging_enabled(c) {
                return Err(Error::invalid(format!(
                    "CPU {i} has paging off (or no control registers): it has no user half \
                     to show"
                )));
            }
            c
        }
    };
    let mut driver = Driver::new(walker);
    let mut stats = WalkStats::default();

    if policy.all_cpus {
        let mut lists = Vec::with_capacity(paging.len());
        for (n, cpu) in paging.iter().enumerate() {
            match driver.walk(cpu, mem, opts, VirtRange::ALL) {
                Ok((l, s)) => {
                    stats.add(&s);
                    lists.push(l);
                }
                Err(e) if n == 0 => return Err(e),
                Err(e) => drop_cpu(&mut stats, cpu, &e),
            }
        }
        let (list, conflicts) = union(&lists);
        if conflicts > 0 {
            push_warning(
                &mut stats,
                format!(
                    "{conflicts} virtual ranges are mapped to different physical addresses by \
                     different CPUs (kept all of them, as QEMU does)"
                ),
            );
        }
        return Ok((list, stats));
    }

    let (user_list, s) = driver.walk(user, mem, opts, VirtRange::ALL)?;
    stats.add(&s);
    let mut acc: Vec<Mapping> = user_list.runs().to_vec();
    for cpu in paging.iter().filter(|c| !std::ptr::eq(**c, user)) {
        let range = VirtRange::from(walker.kernel_start(cpu));
        match driver.walk(cpu, mem, opts, range) {
            Ok((l, s)) => {
                stats.add(&s);
                if l.is_empty() {
                    continue;
                }
                let (merged, conflicts) = merge_first_wins(&acc, l.runs());
                acc = merged;
                if conflicts > 0 {
                    push_warning(
                        &mut stats,
                        format!(
                            "cpu {}: {conflicts} kernel-half ranges contradict an earlier \
                             CPU's mappings; kept the earlier CPU's",
                            cpu.index
                        ),
                    );
                }
            }
            Err(e) => drop_cpu(&mut stats, cpu, &e),
        }
    }
    Ok((acc.into_iter().collect(), stats))
}

fn push_warning(stats: &mut WalkStats, w: String) {
    if stats.warnings.len() < 32 {
        stats.warnings.push(w);
    }
}

fn drop_cpu(stats: &mut WalkStats, cpu: &CpuState, e: &Error) {
    push_warning(
        stats,
        format!("cpu {}: {e}; its mappings are left out", cpu.index),
    );
}

/// Walks CPUs through the trait with one cache for the whole view.
///
/// A CPU whose address spaces (mode, roots, table formats: its [`crate::Regime`]) and
/// range are those of a CPU already walked gives the same mappings: it is not walked
/// again. So a dump listing N CPUs with one hostile root spends one walk budget, not N
/// (issue #17: 3 CPUs took 40 s before giving up). Its result is empty (the earlier
/// CPU's mappings are already in the view), or the earlier CPU's failure.
///
/// (In the default policy the user CPU is walked over the whole range and the others
/// over their kernel half, which that walk covers when they share its roots.)
struct Driver<'w, W: ?Sized> {
    walker: &'w W,
    cache: WalkCache,
    /// Regimes walked so far: the range, the CPU, and the failure if the walk failed.
    walked: Vec<(crate::paging::Regime, VirtRange, u32, Option<String>)>,
}

impl<'w, W: ArchWalker + ?Sized> Driver<'w, W> {
    fn new(walker: &'w W) -> Self {
        Driver {
            walker,
            cache: WalkCache::default(),
            walked: Vec::new(),
        }
    }

    fn walk(
        &mut self,
        cpu: &CpuState,
        mem: &dyn PhysicalMemory,
        opts: &WalkOptions,
        range: VirtRange,
    ) -> Result<(MappingList, WalkStats)> {
        // Walkers that do not describe their regime are walked every time.
        let regime = self.walker.regime(cpu, opts).ok();
        if let Some(r) = &regime {
            if let Some((_, _, first, failure)) =
                self.walked.iter().find(|(seen, seen_range, _, _)| {
                    // The same spaces over a range that covers this one: its mappings
                    // (clipped to this range) are already in the view.
                    seen == r && seen_range.lo <= range.lo && range.hi <= seen_range.hi
                })
            {
                return match failure {
                    None => Ok((MappingList::new(), WalkStats::default())),
                    Some(msg) => Err(Error::Walk {
                        cpu: cpu.index,
                        msg: format!(
                            "same page-table roots as cpu {first}, whose walk failed: {msg}"
                        ),
                    }),
                };
            }
        }
        let mut out = MappingList::new();
        let res = self
            .walker
            .walk_range(cpu, mem, opts, range, Some(&mut self.cache), &mut out);
        if let Some(r) = regime {
            let failure = res.as_ref().err().map(ToString::to_string);
            self.walked.push((r, range, cpu.index, failure));
        }
        Ok((out, res?))
    }
}

fn end(m: &Mapping) -> u128 {
    m.virt as u128 + m.len as u128
}

/// `base` plus the parts of `add` whose virtual addresses `base` does not cover. Both
/// sorted by virtual address and without virtual overlaps; so is the result. Returns
/// the number of `add` pieces that overlap `base` with a different physical address.
fn merge_first_wins(base: &[Mapping], add: &[Mapping]) -> (Vec<Mapping>, u64) {
    let mut extra = Vec::new();
    let mut conflicts = 0;
    let mut j = 0;
    for n in add {
        let mut cur = u128::from(n.virt);
        let stop = end(n);
        while base.get(j).is_some_and(|b| end(b) <= cur) {
            j += 1;
        }
        let mut k = j;
        while cur < stop {
            match base.get(k) {
                Some(b) if u128::from(b.virt) <= cur => {
                    if b.phys.wrapping_sub(b.virt) != n.phys.wrapping_sub(n.virt) {
                        conflicts += 1;
                    }
                    cur = end(b).min(stop);
                    k += 1;
                }
                next => {
                    let to = next.map_or(stop, |b| u128::from(b.virt).min(stop));
                    let off = (cur - u128::from(n.virt)) as u64;
                    extra.push(Mapping {
                        virt: cur as u64,
                        phys: n.phys + off,
                        len: (to - cur) as u64,
                    });
                    cur = to;
                }
            }
        }
    }
    // Linear merge of two virtually sorted, disjoint lists.
    let mut out = Vec::with_capacity(base.len() + extra.len());
    let (mut a, mut b) = (base.iter().peekable(), extra.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.virt <= y.virt,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_a {
            out.extend(a.next().copied());
        } else {
            out.extend(b.next());
        }
    }
    (out, conflicts)
}

/// The union of several lists: runs with the same virtual-to-physical offset are
/// merged where they overlap or touch; runs that disagree are all kept (and counted).
fn union(lists: &[MappingList]) -> (MappingList, u64) {
    let mut by_delta: HashMap<u64, Vec<Mapping>> = HashMap::new();
    for m in lists.iter().flat_map(|l| l.runs()) {
        by_delta
            .entry(m.phys.wrapping_sub(m.virt))
            .or_default()
            .push(*m);
    }
    let mut all = Vec::new();
    for (_, mut v) in by_delta {
        v.sort_unstable_by_key(|m| m.virt);
        let mut cur: Option<Mapping> = None;
        for m in v {
            match &mut cur {
                Some(c) if u128::from(m.virt) <= end(c) => {
                    let e = end(c).max(end(&m));
                    c.len = (e - u128::from(c.virt)).min(u128::from(u64::MAX)) as u64;
                }
                _ => {
                    all.extend(cur.take());
                    cur = Some(m);
                }
            }
        }
        all.extend(cur);
    }
    all.sort_unstable();
    let mut conflicts = 0;
    let mut reach = 0u128;
    for m in &all {
        if u128::from(m.virt) < reach {
            conflicts += 1;
        }
        reach = reach.max(end(m));
    }
    (all.into_iter().collect(), conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(virt: u64, phys: u64, len: u64) -> Mapping {
        Mapping { virt, phys, len }
    }

    #[test]
    fn first_wins_fills_gaps_and_counts_conflicts() {
        let base = [m(0x1000, 0x10000, 0x2000), m(0x5000, 0x50000, 0x1000)];
        let add = [
            m(0x0, 0x20000, 0x2000),    // [0,1000) new; [1000,2000) conflicts
            m(0x3000, 0x13000, 0x3000), // [3000,5000) new; [5000,6000) conflicts
            m(0x8000, 0x80000, 0x1000), // new
        ];
        let (out, c) = merge_first_wins(&base, &add);
        assert_eq!(c, 2);
        assert_eq!(
            out,
            vec![
                m(0x0, 0x20000, 0x1000),
                m(0x1000, 0x10000, 0x2000),
                m(0x3000, 0x13000, 0x2000),
                m(0x5000, 0x50000, 0x1000),
                m(0x8000, 0x80000, 0x1000),
            ]
        );
        // Agreeing overlaps are not conflicts and add nothing.
        let (out2, c2) = merge_first_wins(&base, &[m(0x2000, 0x11000, 0x1000)]);
        assert_eq!((out2.as_slice(), c2), (&base[..], 0));
    }

    #[test]
    fn union_merges_same_offset_and_keeps_contradictions() {
        let a: MappingList = [m(0x1000, 0x1000, 0x2000)].into_iter().collect();
        let b: MappingList = [m(0x2000, 0x2000, 0x2000), m(0x8000, 0x9000, 0x1000)]
            .into_iter()
            .collect();
        let c: MappingList = [m(0x8000, 0xA000, 0x1000)].into_iter().collect();
        let (u, n) = union(&[a, b, c]);
        assert_eq!(
            u.runs(),
            &[
                m(0x1000, 0x1000, 0x3000),
                m(0x8000, 0x9000, 0x1000),
                m(0x8000, 0xA000, 0x1000)
            ]
        );
        assert_eq!(n, 1);
    }

    /// A walker whose CPUs' regime is their "root" register, counting its walks: root
    /// 0xbad fails (as a hostile table that exhausts the walk budget would), any other
    /// maps one page at the root.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl ArchWalker for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn arches(&self) -> &[crate::Arch] {
            &[]
        }
        fn modes(&self) -> &[&str] {
            &["m"]
        }
        fn regime(&self, cpu: &CpuState, _opts: &WalkOptions) -> Result<crate::Regime> {
            let root = cpu.reg("root").ok_or_else(|| Error::invalid("no root"))?;
            let desc = std::borrow::Cow::Owned(crate::MmuDesc {
                name: "m",
                entry_bytes: 8,
                big_endian: false,
                levels: std::borrow::Cow::Borrowed(&[]),
                valid: crate::paging::BitTest::set(1),
                root_mask: u64::MAX,
                table_mask: 0,
                leaf_mask: 0,
                va_form: crate::paging::VaForm::Zero,
            });
            Ok(crate::Regime::Paging {
                mode: "m".into(),
                spaces: vec![crate::AddressSpace {
                    range: VirtRange::ALL,
                    root,
                    root_name: "root",
                    table_mask: u64::MAX,
                    desc,
                }],
            })
        }
        fn walk_range(
            &self,
            cpu: &CpuState,
            _mem: &dyn PhysicalMemory,
            _opts: &WalkOptions,
            range: VirtRange,
            _cache: Option<&mut WalkCache>,
            out: &mut MappingList,
        ) -> Result<WalkStats> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root = cpu.reg("root").unwrap_or(0);
            if root == 0xbad {
                return Err(Error::Walk {
                    cpu: cpu.index,
                    msg: "gave up after 16777216 leaf entries".into(),
                });
            }
            let kernel = m((1 << 63) + root, root, 0x1000);
            for x in [m(root, root, 0x1000), kernel] {
                if let Some(c) = range.clip(&x) {
                    out.push(c);
                }
            }
            Ok(WalkStats::default())
        }
    }

    fn cpu(index: u32, root: u64) -> CpuState {
        let mut c = CpuState::new(index, None);
        c.regs.set("root", root);
        c
    }

    struct NoMem;
    impl PhysicalMemory for NoMem {
        fn ranges(&self) -> &[crate::PhysRange] {
            &[]
        }
        fn read_at(&self, paddr: u64, _buf: &mut [u8]) -> Result<()> {
            Err(Error::Hole { paddr })
        }
    }

    /// Issue #17: a dump listing N CPUs with one hostile root spent N walk budgets (3
    /// CPUs: 40 s). CPUs sharing an earlier CPU's roots are walked once.
    #[test]
    fn cpus_sharing_roots_are_walked_once() {
        let w = Counting(Default::default());
        let calls = || w.0.load(std::sync::atomic::Ordering::Relaxed);
        let opts = WalkOptions::default();
        // The user CPU works; three others share one failing root.
        let cpus = [cpu(0, 0x5000), cpu(1, 0xbad), cpu(2, 0xbad), cpu(3, 0xbad)];
        let (list, stats) = build_view(&w, &cpus, &NoMem, &opts, ViewPolicy::default()).unwrap();
        assert_eq!(calls(), 2, "cpu 0, then cpu 1 for the shared root");
        assert_eq!(list.len(), 2);
        assert_eq!(stats.warnings.len(), 3, "{:?}", stats.warnings);
        assert!(stats.warnings[1].contains("same page-table roots as cpu 1"));
        // Sharing the user CPU's roots: its whole-range walk covers their kernel half.
        let cpus = [cpu(0, 0x5000), cpu(1, 0x5000), cpu(2, 0x7000)];
        let (list, _) = build_view(&w, &cpus, &NoMem, &opts, ViewPolicy::default()).unwrap();
        assert_eq!(calls(), 4, "cpus 0 and 2");
        assert_eq!(list.len(), 3);
        // QEMU's union over all CPUs: the same.
        let all = ViewPolicy {
            all_cpus: true,
            ..ViewPolicy::default()
        };
        let (list, _) = build_view(&w, &cpus, &NoMem, &opts, all).unwrap();
        assert_eq!(calls(), 6);
        assert_eq!(list.len(), 4);
    }

    #[test]
    fn clip_handles_the_top_of_the_address_space() {
        let top = m(0xFFFF_FFFF_FFFF_F000, 0x5000, 0x1000);
        let r = VirtRange {
            lo: 1 << 63,
            hi: 1 << 64,
        };
        assert_eq!(r.clip(&top), Some(top));
        assert_eq!(r.clip(&m(0, 0, 0x1000)), None);
    }
}
