//! Classify page frames from their `struct page`.
//!
//! RAM is cut into aligned chunks of 2^15 page frames (128 MiB of 4 KiB pages). A chunk's
//! struct pages are read in one go (a few MiB), classified, and dropped; chunks run in
//! parallel and their results are put together in PFN order, so the outcome does not
//! depend on the number of threads. Buddy blocks and compound pages are naturally
//! aligned and smaller than a chunk (MAX_ORDER ≤ 15), so everything a page's class
//! depends on is in its chunk; a compound page larger than a chunk (a 1 GiB hugetlb
//! page) has tails whose head is elsewhere: they are kept, and counted.
//!
//! The rules (Linux 5.x/6.x; docs/filtering.md says why each holds):
//! - `_mapcount == PAGE_BUDDY_MAPCOUNT_VALUE`: the head of a free buddy block of order
//!   `private`: the whole block is free. The order must be below MAX_ORDER and the PFN
//!   aligned to it, else the page is inconsistent (kept).
//! - `_mapcount == PAGE_OFFLINE_MAPCOUNT_VALUE`: offline (ballooned, hot-removed): free.
//! - PG_slab, or any other page type (`_mapcount` below -1): kept.
//! - `compound_head` with bit 0 set: a tail page; it takes the class of its head, which
//!   must be in the same chunk, carry PG_head and an order covering the tail.
//! - A compound head whose first tail's `compound_dtor` is HUGETLB_PAGE_DTOR: user.
//! - `mapping` with bit 0 set (PAGE_MAPPING_ANON, KSM too): user.
//! - `mapping` with only bit 1 set (movable, not on an LRU): kept.
//! - Another non-NULL `mapping` on an LRU list (PG_lru): page cache; with PG_private or
//!   PG_swapcache, cache-private. Not on an LRU: kept.
//! - Anything else (kernel data, page tables, reserved pages...): kept.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use crate::kmem::{word, word32, KernelMemory};
use crate::layout::PageLayout;
use crate::level::{Class, DumpLevel};
use crate::memmap::{locate, MemMap, NoMemMap};

/// log2 of the PFNs of one chunk.
pub const CHUNK_SHIFT: u32 = 15;

/// Why a page could not be classified (it is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unknown {
    NoMemMap(NoMemMap),
    /// Its struct page could not be read (vmemmap not mapped, not in the dump).
    Unreadable,
    /// Its struct page breaks an invariant (see the module docs).
    Inconsistent,
    /// A compound tail whose head is out of reach (another chunk), or VMCOREINFO lacks
    /// what compound pages need (`OFFSET(page.compound_head)`, `NUMBER(PG_head_mask)`,
    /// `OFFSET(page.compound_order)`).
    CompoundUnresolved,
}

impl Unknown {
    pub fn describe(self) -> &'static str {
        match self {
            Unknown::NoMemMap(n) => n.describe(),
            Unknown::Unreadable => {
                "struct page unreadable (its address is not mapped or not in the dump)"
            }
            Unknown::Inconsistent => "struct page inconsistent (bad buddy order, stray tail)",
            Unknown::CompoundUnresolved => "compound tail whose head is out of reach",
        }
    }
}

/// What a page frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageKind {
    /// Classified as something no dump level leaves out.
    Kept,
    Class(Class),
    Unknown(Unknown),
}

/// PFNs `[start, end)` of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindRun {
    pub start: u64,
    pub end: u64,
    pub kind: PageKind,
}

/// Counts for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassStats {
    /// RAM pages looked at.
    pub pages: u64,
    /// Pages per excludable class (zero is counted by whoever reads the contents).
    pub classes: BTreeMap<Class, u64>,
    /// Pages classified as nothing excludable.
    pub kept: u64,
    /// Pages kept because they could not be classified, per reason.
    pub unknown: BTreeMap<String, u64>,
    /// Struct pages read.
    pub struct_pages_read: u64,
    /// Struct pages that broke an invariant.
    pub inconsistent: u64,
    /// First error met (mem_section or vmemmap read), if any.
    pub first_error: Option<String>,
    /// First inconsistency met, if any.
    pub first_inconsistency: Option<String>,
}

/// The classification of every RAM page.
#[derive(Debug, Clone, Default)]
pub struct Classification {
    pub page_size: u64,
    /// Sorted, disjoint, covering every RAM PFN asked for.
    pub runs: Vec<KindRun>,
    pub stats: ClassStats,
}

impl Classification {
    /// PFN ranges `[start, end)` of the classes `level` leaves out (zero aside), merged.
    pub fn excluded_pfns(&self, level: DumpLevel) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for r in &self.runs {
            if let PageKind::Class(c) = r.kind {
                if c != Class::Zero && level.excludes(c) {
                    match out.last_mut() {
                        Some(l) if l.1 == r.start => l.1 = r.end,
                        _ => out.push((r.start, r.end)),
                    }
                }
            }
        }
        out
    }

    /// Pages and of each class `level` leaves out (zero aside).
    pub fn excluded_count(&self, level: DumpLevel) -> u64 {
        self.excluded_pfns(level).iter().map(|(s, e)| e - s).sum()
    }
}

/// The struct page array is not what VMCOREINFO says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage(pub String);

/// Fraction (per mille) of inconsistent struct pages above which the array is taken
/// as garbage, and the count below which it never is.
const GARBAGE_PER_MILLE: u64 = 10;
const GARBAGE_MIN: u64 = 64;
/// Share (per mille) of RAM pages whose struct page must be readable.
const READABLE_PER_MILLE: u64 = 500;

/// Classify the RAM PFN runs `ram` (sorted, disjoint `[start, end)`). `threads` 0 =
/// rayon's default. Err when the struct page array reads as garbage: more than 1% of
/// the struct pages read break an invariant, or fewer than half of the RAM pages have
/// a readable struct page.
pub fn classify(
    layout: &PageLayout,
    kmem: &dyn KernelMemory,
    ram: &[(u64, u64)],
    threads: usize,
) -> Result<Classification, Garbage> {
    let memmap = locate(layout, kmem, ram);
    let chunk_shift = CHUNK_SHIFT.max(layout.max_order);
    let mut chunks: Vec<u64> = Vec::new();
    for &(s, e) in ram {
        let mut c = s >> chunk_shift;
        while (c << chunk_shift) < e {
            if chunks.last() != Some(&c) {
                chunks.push(c);
            }
            c += 1;
        }
    }
    let run_chunks = || -> Vec<ChunkOut> {
        chunks
            .par_iter()
            .map(|&c| classify_chunk(layout, kmem, &memmap, ram, c << chunk_shift, chunk_shift))
            .collect()
    };
    let outs = if threads > 0 {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool.install(run_chunks),
            Err(_) => run_chunks(),
        }
    } else {
        run_chunks()
    };

    let mut result = Classification {
        page_size: layout.page_size,
        ..Classification::default()
    };
    let st = &mut result.stats;
    st.first_error = memmap.first_error.clone();
    for o in outs {
        st.struct_pages_read += o.read;
        st.inconsistent += o.inconsistent;
        if st.first_error.is_none() {
            st.first_error = o.first_error;
        }
        if st.first_inconsistency.is_none() {
            st.first_inconsistency = o.first_inconsistency;
        }
        for r in o.runs {
            let n = r.end - r.start;
            st.pages += n;
            match r.kind {
                PageKind::Kept => st.kept += n,
                PageKind::Class(c) => *st.classes.entry(c).or_default() += n,
                PageKind::Unknown(u) => {
                    *st.unknown.entry(u.describe().to_string()).or_default() += n
                }
            }
            match result.runs.last_mut() {
                Some(l) if l.end == r.start && l.kind == r.kind => l.end = r.end,
                _ => result.runs.push(r),
            }
        }
    }
    let st = &result.stats;
    if st.inconsistent > GARBAGE_MIN
        && st.inconsistent * 1000 > st.struct_pages_read * GARBAGE_PER_MILLE
    {
        return Err(Garbage(format!(
            "the struct page array reads as garbage: {} of {} struct pages break an invariant \
             (first: {})",
            st.inconsistent,
            st.struct_pages_read,
            st.first_inconsistency.as_deref().unwrap_or("?")
        )));
    }
    if st.pages > 0 && st.struct_pages_read * 1000 < st.pages * READABLE_PER_MILLE {
        let absent: u64 = memmap.missing.iter().map(|(s, e, _)| e - s).sum();
        return Err(Garbage(format!(
            "only {} of {} RAM pages have a readable struct page ({absent} in sections the \
             mem_section table does not hold){}",
            st.struct_pages_read,
            st.pages,
            st.first_error
                .as_deref()
                .map_or(String::new(), |e| format!("; first error: {e}"))
        )));
    }
    Ok(result)
}

struct ChunkOut {
    runs: Vec<KindRun>,
    read: u64,
    inconsistent: u64,
    first_error: Option<String>,
    first_inconsistency: Option<String>,
}

// Per-PFN codes inside a chunk.
const C_NOT_RAM: u8 = 0;
const C_KEPT: u8 = 1;
const C_CACHE: u8 = 2;
const C_CACHE_PRIVATE: u8 = 3;
const C_USER: u8 = 4;
const C_FREE: u8 = 5;
const C_ABSENT: u8 = 6;
const C_NO_MEM_MAP: u8 = 7;
const C_TABLE: u8 = 8;
const C_UNREADABLE: u8 = 9;
const C_INCONSISTENT: u8 = 10;
const C_UNRESOLVED: u8 = 11;
const C_OUTSIDE: u8 = 13;
/// Readable, not yet classified (transient).
const C_PENDING: u8 = 12;

fn kind_of(code: u8) -> Option<PageKind> {
    Some(match code {
        C_KEPT => PageKind::Kept,
        C_CACHE => PageKind::Class(Class::Cache),
        C_CACHE_PRIVATE => PageKind::Class(Class::CachePrivate),
        C_USER => PageKind::Class(Class::User),
        C_FREE => PageKind::Class(Class::Free),
        C_ABSENT => PageKind::Unknown(Unknown::NoMemMap(NoMemMap::SectionAbsent)),
        C_NO_MEM_MAP => PageKind::Unknown(Unknown::NoMemMap(NoMemMap::SectionWithoutMemMap)),
        C_TABLE => PageKind::Unknown(Unknown::NoMemMap(NoMemMap::TableUnreadable)),
        C_OUTSIDE => PageKind::Unknown(Unknown::NoMemMap(NoMemMap::OutsideMemMap)),
        C_UNREADABLE => PageKind::Unknown(Unknown::Unreadable),
        C_INCONSISTENT => PageKind::Unknown(Unknown::Inconsistent),
        C_UNRESOLVED => PageKind::Unknown(Unknown::CompoundUnresolved),
        _ => return None,
    })
}

/// One struct page, decoded.
struct Sp {
    flags: u64,
    mapcount: i32,
    mapping: u64,
    private: u64,
    compound_head: u64,
}

fn decode(l: &PageLayout, b: &[u8]) -> Sp {
    Sp {
        flags: word(b, l.off_flags as usize, l.ptr_size).unwrap_or(0),
        mapcount: word32(b, l.off_mapcount as usize).unwrap_or(0) as i32,
        mapping: word(b, l.off_mapping as usize, l.ptr_size).unwrap_or(0),
        private: word(b, l.off_private as usize, l.ptr_size).unwrap_or(0),
        compound_head: l
            .off_compound_head
            .and_then(|o| word(b, o as usize, l.ptr_size))
            .unwrap_or(0),
    }
}

fn bit(flags: u64, n: u32) -> bool {
    flags >> n & 1 == 1
}

fn classify_chunk(
    l: &PageLayout,
    kmem: &dyn KernelMemory,
    memmap: &MemMap,
    ram: &[(u64, u64)],
    c0: u64,
    shift: u32,
) -> ChunkOut {
    let n = 1usize << shift;
    let c1 = c0 + n as u64;
    let sp = l.struct_page_size as usize;
    let mut out = ChunkOut {
        runs: Vec::new(),
        read: 0,
        inconsistent: 0,
        first_error: None,
        first_inconsistency: None,
    };
    let mut code = vec![C_NOT_RAM; n];
    // RAM first: unknown until a struct page is read.
    let i = ram.partition_point(|r| r.1 <= c0);
    for &(s, e) in ram[i..].iter().take_while(|r| r.0 < c1) {
        for c in &mut code[(s.max(c0) - c0) as usize..(e.min(c1) - c0) as usize] {
            *c = C_UNREADABLE;
        }
    }
    for &(s, e, why) in &memmap.missing {
        if e <= c0 || s >= c1 {
            continue;
        }
        let v = match why {
            NoMemMap::SectionAbsent => C_ABSENT,
            NoMemMap::SectionWithoutMemMap => C_NO_MEM_MAP,
            NoMemMap::TableUnreadable => C_TABLE,
            NoMemMap::OutsideMemMap => C_OUTSIDE,
        };
        for c in &mut code[(s.max(c0) - c0) as usize..(e.min(c1) - c0) as usize] {
            *c = v;
        }
    }

    // Read the struct pages of the chunk's mem_map runs.
    let mut buf = vec![0u8; n * sp];
    let ri = memmap.runs.partition_point(|r| r.end <= c0);
    for run in memmap.runs[ri..].iter().take_while(|r| r.start < c1) {
        let (s, e) = (run.start.max(c0), run.end.min(c1));
        let (is, ie) = ((s - c0) as usize, (e - c0) as usize);
        let va = run.base.wrapping_add(s.wrapping_mul(l.struct_page_size));
        let dst = &mut buf[is * sp..ie * sp];
        match kmem.read(va, dst) {
            Ok(()) => {
                for c in &mut code[is..ie] {
                    if *c == C_UNREADABLE {
                        *c = C_PENDING;
                    }
                }
            }
            Err(err) => {
                // Piece by piece (4 KiB of virtual space each), so one unmapped
                // vmemmap page costs only the struct pages it holds.
                out.first_error
                    .get_or_insert(format!("struct pages at {va:#x}: {err}"));
                let total = dst.len();
                let mut bad: Vec<(usize, usize)> = Vec::new();
                let mut at = 0usize;
                while at < total {
                    let v = va.wrapping_add(at as u64);
                    let len = ((4096 - (v & 4095)) as usize).min(total - at);
                    if kmem.read(v, &mut dst[at..at + len]).is_err() {
                        bad.push((at, at + len));
                    }
                    at += len;
                }
                for k in 0..ie - is {
                    let (bs, be) = (k * sp, (k + 1) * sp);
                    let ok = !bad.iter().any(|&(x, y)| x < be && bs < y);
                    if ok && code[is + k] == C_UNREADABLE {
                        code[is + k] = C_PENDING;
                    }
                }
            }
        }
    }

    let page = |k: usize| &buf[k * sp..(k + 1) * sp];
    let head_bit = l.pg_head;
    let mut frees: Vec<(usize, usize)> = Vec::new();
    let mut tails: Vec<(usize, u64)> = Vec::new();
    let inconsistent = |k: usize, what: String, code: &mut [u8], out: &mut ChunkOut| {
        code[k] = C_INCONSISTENT;
        out.inconsistent += 1;
        out.first_inconsistency
            .get_or_insert_with(|| format!("PFN {:#x}: {what}", c0 + k as u64));
    };
    for k in 0..n {
        if code[k] != C_PENDING {
            continue;
        }
        out.read += 1;
        let p = decode(l, page(k));
        let pfn = c0 + k as u64;
        if l.off_compound_head.is_some() && p.compound_head & 1 == 1 {
            tails.push((k, p.compound_head - 1));
            continue;
        }
        if p.mapcount == l.buddy_mapcount {
            let order = p.private;
            if order < u64::from(l.max_order) && pfn.trailing_zeros() as u64 >= order.min(63) {
                frees.push((k, 1usize << order));
                code[k] = C_FREE;
            } else {
                inconsistent(
                    k,
                    format!("free block of order {order} (MAX_ORDER {})", l.max_order),
                    &mut code,
                    &mut out,
                );
            }
            continue;
        }
        if Some(p.mapcount) == l.offline_mapcount {
            code[k] = C_FREE;
            continue;
        }
        if bit(p.flags, l.pg_slab) || p.mapcount < -1 {
            code[k] = C_KEPT;
            continue;
        }
        let is_head = head_bit.is_some_and(|h| bit(p.flags, h));
        if is_head {
            // The first tail holds the order (and the destructor).
            let first = (k + 1 < n && code[k + 1] == C_PENDING).then(|| page(k + 1));
            let order = match (first, l.off_compound_order) {
                (Some(f), Some(o)) => f.get(o as usize).copied(),
                _ => None,
            };
            if let Some(order) = order {
                if order == 0 || u32::from(order) > 20 || pfn.trailing_zeros() < u32::from(order) {
                    inconsistent(
                        k,
                        format!("compound head of order {order}"),
                        &mut code,
                        &mut out,
                    );
                    continue;
                }
            }
            let dtor = match (first, l.off_compound_dtor) {
                (Some(f), Some(o)) => f.get(o as usize).copied(),
                _ => None,
            };
            if dtor.is_some() && dtor == l.hugetlb_dtor {
                code[k] = C_USER;
                continue;
            }
        }
        code[k] = if p.mapping == 0 {
            C_KEPT
        } else if p.mapping & 1 == 1 {
            C_USER
        } else if p.mapping & 2 == 2 {
            C_KEPT
        } else if bit(p.flags, l.pg_lru) {
            // PG_swapcache is PG_owner_priv_1: it means "in the swap cache" only on a
            // swap-backed page (a filesystem uses it as PG_checked otherwise).
            let swapcache =
                bit(p.flags, l.pg_swapcache) && l.pg_swapbacked.is_none_or(|b| bit(p.flags, b));
            if bit(p.flags, l.pg_private) || swapcache {
                C_CACHE_PRIVATE
            } else {
                C_CACHE
            }
        } else {
            C_KEPT
        };
    }
    // Whole free blocks.
    for &(k, len) in &frees {
        let end = (k + len).min(n);
        for c in &mut code[k + 1..end] {
            // RAM pages of the block; holes stay holes.
            if *c != C_NOT_RAM {
                *c = C_FREE;
            }
        }
    }
    // Tails take their head's class.
    for &(k, head_va) in &tails {
        if code[k] == C_FREE {
            continue;
        }
        let pfn = c0 + k as u64;
        let Some(run) = memmap.run_of(pfn) else {
            code[k] = C_UNRESOLVED;
            continue;
        };
        let off = head_va.wrapping_sub(run.base);
        if off % l.struct_page_size != 0 {
            inconsistent(
                k,
                format!("tail page whose head {head_va:#x} is not a struct page"),
                &mut code,
                &mut out,
            );
            continue;
        }
        let head_pfn = off / l.struct_page_size;
        if head_pfn >= pfn || pfn - head_pfn >= 1 << 20 {
            inconsistent(
                k,
                format!("tail page whose head is PFN {head_pfn:#x}"),
                &mut code,
                &mut out,
            );
            continue;
        }
        if head_pfn < c0 || head_bit.is_none() || l.off_compound_order.is_none() {
            code[k] = C_UNRESOLVED;
            continue;
        }
        let hk = (head_pfn - c0) as usize;
        let head_code = code[hk];
        if !matches!(head_code, C_KEPT | C_CACHE | C_CACHE_PRIVATE | C_USER) {
            if head_code == C_INCONSISTENT || head_code == C_FREE {
                inconsistent(
                    k,
                    format!("tail page of PFN {head_pfn:#x}, which is no compound head"),
                    &mut code,
                    &mut out,
                );
            } else {
                code[k] = C_UNRESOLVED;
            }
            continue;
        }
        let hp = decode(l, page(hk));
        let order = l
            .off_compound_order
            .and_then(|o| (hk + 1 < n).then(|| page(hk + 1).get(o as usize).copied()))
            .flatten();
        let ok = head_bit.is_some_and(|h| bit(hp.flags, h))
            && order.is_some_and(|o| o < 64 && pfn - head_pfn < 1u64 << o);
        if ok {
            code[k] = head_code;
        } else {
            inconsistent(
                k,
                format!("tail page outside the compound page of PFN {head_pfn:#x}"),
                &mut code,
                &mut out,
            );
        }
    }

    // Runs.
    let mut k = 0;
    while k < n {
        let c = code[k];
        let mut j = k + 1;
        while j < n && code[j] == c {
            j += 1;
        }
        if let Some(kind) = kind_of(c) {
            out.runs.push(KindRun {
                start: c0 + k as u64,
                end: c0 + j as u64,
                kind,
            });
        }
        k = j;
    }
    out
}
