//! Where the `struct page` of each page frame is: the kernel's `mem_section` table
//! (SPARSEMEM, with or without EXTREME and VMEMMAP) or its flat `mem_map`.
//!
//! SPARSEMEM: physical memory is cut into sections of 2^SECTION_SIZE_BITS bytes.
//! Section `nr` is entry `nr % per_root` of root `nr / per_root`; with EXTREME a root is
//! a pointer (0: no section of that root exists), else the roots are the table itself.
//! A section's `section_mem_map` holds flag bits in its low bits (bit 0 present, bit 1
//! has a mem_map, bit 2 online, ...) and, above them, the address of the struct page of
//! PFN 0 *as if* the section's array extended down to it (the kernel stores the array's
//! address minus the section's first PFN): the struct page of PFN `p` in that section
//! is at `(section_mem_map & ~flags) + p * SIZE(page)`.

use crate::kmem::{word, KernelMemory};
use crate::layout::{
    MemoryModel, PageLayout, SECTION_FLAG_BITS, SECTION_HAS_MEM_MAP, SECTION_IS_ONLINE,
    SECTION_MARKED_PRESENT,
};

/// PFNs `[start, end)` whose struct pages are at `base + pfn * SIZE(page)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemMapRun {
    pub start: u64,
    pub end: u64,
    pub base: u64,
}

/// Why a PFN has no struct page to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoMemMap {
    /// Its section's root pointer is 0 (EXTREME), or its section is not marked present.
    SectionAbsent,
    /// The section is present but has no mem_map (or is offline).
    SectionWithoutMemMap,
    /// The `mem_section` table could not be read there.
    TableUnreadable,
    /// Outside the PFNs a flat `mem_map` covers.
    OutsideMemMap,
}

impl NoMemMap {
    pub fn describe(self) -> &'static str {
        match self {
            NoMemMap::SectionAbsent => "memory section absent in mem_section",
            NoMemMap::SectionWithoutMemMap => "memory section present without a mem_map (offline)",
            NoMemMap::TableUnreadable => "mem_section table unreadable",
            NoMemMap::OutsideMemMap => "outside the PFNs of the flat mem_map",
        }
    }
}

/// The memory map for the RAM PFN runs asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemMap {
    /// Sorted, disjoint.
    pub runs: Vec<MemMapRun>,
    /// PFN ranges of RAM without a struct page, and why (sorted).
    pub missing: Vec<(u64, u64, NoMemMap)>,
    /// First problem met reading the table, for the report.
    pub first_error: Option<String>,
}

impl MemMap {
    /// The run holding `pfn`.
    pub fn run_of(&self, pfn: u64) -> Option<&MemMapRun> {
        let i = self.runs.partition_point(|r| r.end <= pfn);
        self.runs.get(i).filter(|r| r.start <= pfn)
    }
}

/// Locate the struct pages of the PFN runs `ram` (sorted, disjoint `[start, end)`).
pub fn locate(layout: &PageLayout, kmem: &dyn KernelMemory, ram: &[(u64, u64)]) -> MemMap {
    let mut out = MemMap::default();
    match &layout.model {
        MemoryModel::Flat {
            mem_map_var,
            pfn_offset,
            node_start_pfn,
            node_spanned_pages,
        } => {
            let read_word = |at: u64, what: &str| -> Result<u64, String> {
                let mut b = [0u8; 8];
                let n = layout.ptr_size as usize;
                kmem.read(at, &mut b[..n])
                    .map_err(|e| format!("{what} at {at:#x}: {e}"))
                    .and_then(|()| word(&b, 0, layout.ptr_size).ok_or_else(|| what.to_string()))
            };
            let base = read_word(*mem_map_var, "mem_map pointer").and_then(|p| {
                let start = read_word(*node_start_pfn, "contig_page_data.node_start_pfn")?;
                let span = read_word(*node_spanned_pages, "contig_page_data.node_spanned_pages")?;
                Ok((p, start, start.saturating_add(span)))
            });
            match base {
                Ok((p, lo, hi)) if p != 0 => {
                    // base + (pfn - pfn_offset) * size == base' + pfn * size
                    let base = p.wrapping_sub(pfn_offset.wrapping_mul(layout.struct_page_size));
                    let lo = lo.max(*pfn_offset);
                    for &(s, e) in ram {
                        if s < lo {
                            push_missing(&mut out.missing, s, e.min(lo), NoMemMap::OutsideMemMap);
                        }
                        let (a, b) = (s.max(lo), e.min(hi));
                        if a < b {
                            push_run(&mut out.runs, a, b, base);
                        }
                        if e > hi {
                            push_missing(&mut out.missing, s.max(hi), e, NoMemMap::OutsideMemMap);
                        }
                    }
                }
                Ok(_) => {
                    out.first_error = Some("mem_map is NULL".into());
                    for &(s, e) in ram {
                        out.missing.push((s, e, NoMemMap::TableUnreadable));
                    }
                }
                Err(e) => {
                    out.first_error = Some(e);
                    for &(s, e) in ram {
                        out.missing.push((s, e, NoMemMap::TableUnreadable));
                    }
                }
            }
        }
        MemoryModel::Sparse {
            mem_section,
            roots,
            section_size,
            mem_map_offset,
            section_size_bits,
            extreme,
            per_root,
            ..
        } => {
            let pfn_shift = section_size_bits - layout.page_shift();
            let mut root_cache: Option<(u64, Result<u64, NoMemMap>)> = None;
            for &(s, e) in ram {
                let mut pfn = s;
                while pfn < e {
                    let nr = pfn >> pfn_shift;
                    let sec_start = nr << pfn_shift;
                    let sec_end = (sec_start + (1u64 << pfn_shift)).min(e);
                    let root = nr / per_root;
                    let found: Result<u64, NoMemMap> = if root >= *roots {
                        Err(NoMemMap::SectionAbsent)
                    } else {
                        let root_addr = if *extreme {
                            match root_cache {
                                Some((r, v)) if r == root => v,
                                _ => {
                                    let at = mem_section.wrapping_add(root * layout.ptr_size);
                                    let mut b = [0u8; 8];
                                    let v = match kmem.read(at, &mut b[..layout.ptr_size as usize])
                                    {
                                        Ok(()) => match word(&b, 0, layout.ptr_size) {
                                            Some(0) | None => Err(NoMemMap::SectionAbsent),
                                            Some(p) => Ok(p),
                                        },
                                        Err(err) => {
                                            out.first_error.get_or_insert(format!(
                                                "mem_section root {root} at {at:#x}: {err}"
                                            ));
                                            Err(NoMemMap::TableUnreadable)
                                        }
                                    };
                                    root_cache = Some((root, v));
                                    v
                                }
                            }
                        } else {
                            Ok(mem_section.wrapping_add(root * per_root * section_size))
                        };
                        root_addr.and_then(|ra| {
                            let at = ra
                                .wrapping_add((nr % per_root) * section_size)
                                .wrapping_add(*mem_map_offset);
                            let mut b = [0u8; 8];
                            match kmem.read(at, &mut b[..layout.ptr_size as usize]) {
                                Ok(()) => {
                                    let v = word(&b, 0, layout.ptr_size).unwrap_or(0);
                                    if v & SECTION_MARKED_PRESENT == 0 {
                                        Err(NoMemMap::SectionAbsent)
                                    } else if v & SECTION_HAS_MEM_MAP == 0
                                        || v & SECTION_IS_ONLINE == 0
                                    {
                                        Err(NoMemMap::SectionWithoutMemMap)
                                    } else {
                                        Ok(v & !((1u64 << SECTION_FLAG_BITS) - 1))
                                    }
                                }
                                Err(err) => {
                                    out.first_error.get_or_insert(format!(
                                        "mem_section {nr} at {at:#x}: {err}"
                                    ));
                                    Err(NoMemMap::TableUnreadable)
                                }
                            }
                        })
                    };
                    match found {
                        Ok(base) => push_run(&mut out.runs, pfn, sec_end, base),
                        Err(why) => push_missing(&mut out.missing, pfn, sec_end, why),
                    }
                    pfn = sec_end;
                }
            }
        }
    }
    out
}

fn push_run(runs: &mut Vec<MemMapRun>, start: u64, end: u64, base: u64) {
    match runs.last_mut() {
        Some(l) if l.end == start && l.base == base => l.end = end,
        _ => runs.push(MemMapRun { start, end, base }),
    }
}

fn push_missing(v: &mut Vec<(u64, u64, NoMemMap)>, start: u64, end: u64, why: NoMemMap) {
    match v.last_mut() {
        Some(l) if l.1 == start && l.2 == why => l.1 = end,
        _ => v.push((start, end, why)),
    }
}
