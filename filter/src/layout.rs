//! What the classifier needs to know about the dumped kernel, taken from VMCOREINFO
//! alone: where `struct page` of each page frame is, and how to read one.
//!
//! Entries (docs/filtering.md lists them with their use):
//! - `PAGESIZE`, `SIZE(page)`, `OFFSET(page.flags)`, `OFFSET(page._mapcount)`,
//!   `OFFSET(page.mapping)`, `OFFSET(page.private)`, `NUMBER(PG_lru)`,
//!   `NUMBER(PG_private)`, `NUMBER(PG_swapcache)`, `NUMBER(PG_slab)`,
//!   `NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)`: required.
//! - Compound pages: `OFFSET(page.compound_head)`, `NUMBER(PG_head_mask)`,
//!   `OFFSET(page.compound_order)`; hugetlb: `OFFSET(page.compound_dtor)`,
//!   `NUMBER(HUGETLB_PAGE_DTOR)`; `NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)`;
//!   `LENGTH(zone.free_area)` (MAX_ORDER). Optional: without them the pages they
//!   decide are kept.
//! - The memory model: SPARSEMEM (`SYMBOL(mem_section)`, `LENGTH(mem_section)`,
//!   `SIZE(mem_section)`, `OFFSET(mem_section.section_mem_map)`,
//!   `NUMBER(SECTION_SIZE_BITS)`, `NUMBER(MAX_PHYSMEM_BITS)`), else FLATMEM
//!   (`SYMBOL(mem_map)`, and the PFNs it covers from `SYMBOL(contig_page_data)`,
//!   `OFFSET(pglist_data.node_start_pfn)`, `OFFSET(pglist_data.node_spanned_pages)`).

use dumpconv_core::VmcoreInfo;

/// How the kernel keeps its `struct page` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryModel {
    Sparse {
        /// `SYMBOL(mem_section)`: with SPARSEMEM_EXTREME the array of root pointers,
        /// else the two-level array itself.
        mem_section: u64,
        /// Number of roots (`LENGTH(mem_section)`).
        roots: u64,
        /// `SIZE(mem_section)`.
        section_size: u64,
        /// `OFFSET(mem_section.section_mem_map)`.
        mem_map_offset: u64,
        /// `NUMBER(SECTION_SIZE_BITS)`.
        section_size_bits: u32,
        /// `NUMBER(MAX_PHYSMEM_BITS)`.
        max_physmem_bits: u32,
        /// SPARSEMEM_EXTREME: roots are pointers to pages of sections.
        extreme: bool,
        /// Sections per root.
        per_root: u64,
    },
    Flat {
        /// `SYMBOL(mem_map)`: the address of the `mem_map` pointer variable.
        mem_map_var: u64,
        /// PFN of the array's first element (`NUMBER(ARCH_PFN_OFFSET)` when stated, 0
        /// otherwise: the x86 and the usual value).
        pfn_offset: u64,
        /// Addresses of `contig_page_data.node_start_pfn` and `.node_spanned_pages`:
        /// the PFNs the array covers.
        node_start_pfn: u64,
        node_spanned_pages: u64,
    },
}

/// Decoding rules for `struct page` and the memory model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLayout {
    pub page_size: u64,
    /// Bytes of a pointer / `unsigned long` of the dumped kernel (4 or 8).
    pub ptr_size: u64,
    pub struct_page_size: u64,
    pub off_flags: u64,
    pub off_mapcount: u64,
    pub off_mapping: u64,
    pub off_private: u64,
    pub off_compound_head: Option<u64>,
    pub off_compound_order: Option<u64>,
    pub off_compound_dtor: Option<u64>,
    pub pg_lru: u32,
    pub pg_private: u32,
    pub pg_swapcache: u32,
    pub pg_slab: u32,
    /// `NUMBER(PG_swapbacked)`: PG_swapcache counts only with it (when stated).
    pub pg_swapbacked: Option<u32>,
    pub pg_head: Option<u32>,
    pub buddy_mapcount: i32,
    pub offline_mapcount: Option<i32>,
    pub hugetlb_dtor: Option<u8>,
    /// MAX_ORDER: free blocks are of order `0..max_order`.
    pub max_order: u32,
    pub model: MemoryModel,
}

/// The default MAX_ORDER when VMCOREINFO has no `LENGTH(zone.free_area)` (11: every
/// x86 and arm64 4 KiB-page kernel of 5.x/6.x unless configured otherwise).
pub const DEFAULT_MAX_ORDER: u32 = 11;

/// Low bits of `section_mem_map` that hold flags, not address: the most any kernel has
/// used (present, has-mem-map, online, early, zone-device taint, cannot-optimise). A
/// `mem_map` array is page aligned in every kernel allocation path, so no address bit
/// is lost.
pub const SECTION_FLAG_BITS: u32 = 6;
pub const SECTION_MARKED_PRESENT: u64 = 1 << 0;
pub const SECTION_HAS_MEM_MAP: u64 = 1 << 1;
pub const SECTION_IS_ONLINE: u64 = 1 << 2;

impl PageLayout {
    /// Build from VMCOREINFO; the error lists every missing or unusable entry.
    /// `ptr_size` is the dumped kernel's pointer size (from the dump's architecture;
    /// `OFFSET(list_head.prev)` overrides it when stated).
    pub fn from_vmcoreinfo(v: &VmcoreInfo, ptr_size: u64) -> Result<PageLayout, String> {
        let mut missing: Vec<String> = Vec::new();
        let mut need_u = |key: &str, val: Option<u64>| -> u64 {
            val.unwrap_or_else(|| {
                missing.push(key.to_string());
                0
            })
        };
        let page_size = need_u("PAGESIZE", v.page_size());
        let struct_page_size = need_u("SIZE(page)", size(v, "page"));
        let off_flags = need_u("OFFSET(page.flags)", v.offset("page.flags"));
        let off_mapcount = need_u("OFFSET(page._mapcount)", v.offset("page._mapcount"));
        let off_mapping = need_u("OFFSET(page.mapping)", v.offset("page.mapping"));
        let off_private = need_u("OFFSET(page.private)", v.offset("page.private"));
        let num = |n: &str| v.number(n);
        let pg = |n: &str| {
            num(n)
                .and_then(|b| u32::try_from(b).ok())
                .filter(|b| *b < 64)
        };
        let pg_lru = need_u("NUMBER(PG_lru)", pg("PG_lru").map(u64::from));
        let pg_private = need_u("NUMBER(PG_private)", pg("PG_private").map(u64::from));
        let pg_swapcache = need_u("NUMBER(PG_swapcache)", pg("PG_swapcache").map(u64::from));
        let pg_slab = need_u("NUMBER(PG_slab)", pg("PG_slab").map(u64::from));
        let buddy = need_u(
            "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)",
            num("PAGE_BUDDY_MAPCOUNT_VALUE")
                .and_then(|b| i32::try_from(b).ok())
                .filter(|b| *b < -1)
                .map(|b| b as u32 as u64),
        );
        let ptr_size = v
            .offset("list_head.prev")
            .filter(|p| *p == 4 || *p == 8)
            .unwrap_or(ptr_size);

        let model = if let Some(ms) = v.symbol("mem_section") {
            let roots = need_u("LENGTH(mem_section)", length(v, "mem_section"));
            let section_size = need_u("SIZE(mem_section)", size(v, "mem_section"));
            let mem_map_offset = need_u(
                "OFFSET(mem_section.section_mem_map)",
                v.offset("mem_section.section_mem_map"),
            );
            let ssb = need_u(
                "NUMBER(SECTION_SIZE_BITS)",
                num("SECTION_SIZE_BITS")
                    .filter(|b| (12..=40).contains(b))
                    .map(|b| b as u64),
            ) as u32;
            let mpb = need_u(
                "NUMBER(MAX_PHYSMEM_BITS)",
                num("MAX_PHYSMEM_BITS")
                    .filter(|b| (20..=64).contains(b))
                    .map(|b| b as u64),
            ) as u32;
            MemoryModel::Sparse {
                mem_section: ms,
                roots,
                section_size,
                mem_map_offset,
                section_size_bits: ssb,
                max_physmem_bits: mpb,
                extreme: false,
                per_root: 1,
            }
        } else if let Some(mm) = v.symbol("mem_map") {
            let node = need_u("SYMBOL(contig_page_data)", v.symbol("contig_page_data"));
            let start = need_u(
                "OFFSET(pglist_data.node_start_pfn)",
                v.offset("pglist_data.node_start_pfn"),
            );
            let spanned = need_u(
                "OFFSET(pglist_data.node_spanned_pages)",
                v.offset("pglist_data.node_spanned_pages"),
            );
            MemoryModel::Flat {
                mem_map_var: mm,
                pfn_offset: num("ARCH_PFN_OFFSET").map_or(0, |n| n as u64),
                node_start_pfn: node.wrapping_add(start),
                node_spanned_pages: node.wrapping_add(spanned),
            }
        } else {
            missing.push("SYMBOL(mem_section) or SYMBOL(mem_map)".into());
            MemoryModel::Flat {
                mem_map_var: 0,
                pfn_offset: 0,
                node_start_pfn: 0,
                node_spanned_pages: 0,
            }
        };
        if !missing.is_empty() {
            return Err(format!(
                "VMCOREINFO lacks {} (needed to read struct page)",
                missing.join(", ")
            ));
        }
        let mut problems = Vec::new();
        if !page_size.is_power_of_two() || page_size < 1024 {
            problems.push(format!("PAGESIZE={page_size} is not a page size"));
        }
        if struct_page_size == 0 || struct_page_size > 256 {
            problems.push(format!("SIZE(page)={struct_page_size} is not plausible"));
        }
        for (name, off, len) in [
            ("page.flags", off_flags, ptr_size),
            ("page._mapcount", off_mapcount, 4),
            ("page.mapping", off_mapping, ptr_size),
            ("page.private", off_private, ptr_size),
        ] {
            if off.saturating_add(len) > struct_page_size {
                problems.push(format!(
                    "OFFSET({name})={off} lies outside SIZE(page)={struct_page_size}"
                ));
            }
        }
        let model = match model {
            MemoryModel::Sparse {
                mem_section,
                roots,
                section_size,
                mem_map_offset,
                section_size_bits,
                max_physmem_bits,
                ..
            } => {
                // NR_MEM_SECTIONS; with SPARSEMEM_EXTREME a root holds a page of
                // sections (SECTIONS_PER_ROOT = PAGESIZE / SIZE(mem_section)), else one.
                let shift = max_physmem_bits.saturating_sub(section_size_bits);
                let nr_sections = 1u64.checked_shl(shift).unwrap_or(0);
                let per_page = page_size.checked_div(section_size).unwrap_or(0);
                if section_size == 0 || mem_map_offset.saturating_add(ptr_size) > section_size {
                    problems.push(format!(
                        "SIZE(mem_section)={section_size} / OFFSET(mem_section.section_mem_map)\
                         ={mem_map_offset} do not fit"
                    ));
                }
                if section_size_bits <= page_size.trailing_zeros() {
                    problems.push(format!(
                        "NUMBER(SECTION_SIZE_BITS)={section_size_bits} is not above the page \
                         shift"
                    ));
                }
                let (extreme, per_root) = if roots == nr_sections && nr_sections > 0 {
                    (false, 1)
                } else if per_page > 1 && roots.checked_mul(per_page) == Some(nr_sections) {
                    (true, per_page)
                } else {
                    problems.push(format!(
                        "LENGTH(mem_section)={roots} fits neither SPARSEMEM ({nr_sections} \
                         sections) nor SPARSEMEM_EXTREME ({} roots)",
                        nr_sections.checked_div(per_page).unwrap_or(0)
                    ));
                    (false, 1)
                };
                MemoryModel::Sparse {
                    mem_section,
                    roots,
                    section_size,
                    mem_map_offset,
                    section_size_bits,
                    max_physmem_bits,
                    extreme,
                    per_root,
                }
            }
            flat => flat,
        };
        if !problems.is_empty() {
            return Err(format!(
                "VMCOREINFO describes a kernel layout dumpconv does not know: {}",
                problems.join("; ")
            ));
        }
        let off_compound_head = v
            .offset("page.compound_head")
            .filter(|o| o.saturating_add(ptr_size) <= struct_page_size);
        let off_compound_order = v
            .offset("page.compound_order")
            .filter(|o| *o < struct_page_size);
        let off_compound_dtor = v
            .offset("page.compound_dtor")
            .filter(|o| *o < struct_page_size);
        let pg_head = num("PG_head_mask")
            .map(|m| m as u64)
            .filter(|m| m.is_power_of_two())
            .map(u64::trailing_zeros);
        Ok(PageLayout {
            page_size,
            ptr_size,
            struct_page_size,
            off_flags,
            off_mapcount,
            off_mapping,
            off_private,
            off_compound_head,
            off_compound_order,
            off_compound_dtor,
            pg_lru: pg_lru as u32,
            pg_private: pg_private as u32,
            pg_swapcache: pg_swapcache as u32,
            pg_slab: pg_slab as u32,
            pg_swapbacked: pg("PG_swapbacked"),
            pg_head,
            buddy_mapcount: buddy as u32 as i32,
            offline_mapcount: num("PAGE_OFFLINE_MAPCOUNT_VALUE")
                .and_then(|b| i32::try_from(b).ok())
                .filter(|b| *b < -1),
            hugetlb_dtor: num("HUGETLB_PAGE_DTOR").and_then(|d| u8::try_from(d).ok()),
            max_order: length(v, "zone.free_area")
                .and_then(|l| u32::try_from(l).ok())
                .filter(|l| (1..=16).contains(l))
                .unwrap_or(DEFAULT_MAX_ORDER),
            model,
        })
    }

    /// log2 of the page size.
    pub fn page_shift(&self) -> u32 {
        self.page_size.trailing_zeros()
    }
}

fn size(v: &VmcoreInfo, name: &str) -> Option<u64> {
    v.get(&format!("SIZE({name})"))?.parse().ok()
}

fn length(v: &VmcoreInfo, name: &str) -> Option<u64> {
    v.get(&format!("LENGTH({name})"))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_64_6_1: &str = "PAGESIZE=4096\nSYMBOL(mem_section)=ffff88801feae000\n\
        LENGTH(mem_section)=4096\nSIZE(mem_section)=32\nOFFSET(mem_section.section_mem_map)=0\n\
        NUMBER(SECTION_SIZE_BITS)=27\nNUMBER(MAX_PHYSMEM_BITS)=46\nSIZE(page)=64\n\
        OFFSET(page.flags)=0\nOFFSET(page.mapping)=24\nOFFSET(page.lru)=8\n\
        OFFSET(page._mapcount)=48\nOFFSET(page.private)=40\nOFFSET(page.compound_dtor)=16\n\
        OFFSET(page.compound_order)=17\nOFFSET(page.compound_head)=8\n\
        OFFSET(list_head.prev)=8\nLENGTH(zone.free_area)=11\nNUMBER(PG_lru)=4\n\
        NUMBER(PG_private)=13\nNUMBER(PG_swapcache)=10\nNUMBER(PG_slab)=9\n\
        NUMBER(PG_head_mask)=65536\nNUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\n\
        NUMBER(HUGETLB_PAGE_DTOR)=2\nNUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257\n";

    #[test]
    fn x86_64_extreme() {
        let l = PageLayout::from_vmcoreinfo(&VmcoreInfo::parse(X86_64_6_1.as_bytes()), 8).unwrap();
        // 2^(46-27) sections, 4096/32 per root: 4096 roots.
        assert!(matches!(
            l.model,
            MemoryModel::Sparse {
                extreme: true,
                per_root: 128,
                ..
            }
        ));
        assert_eq!(l.pg_head, Some(16));
        assert_eq!(l.buddy_mapcount, -129);
        assert_eq!(l.max_order, 11);
    }

    #[test]
    fn missing_entries_are_named() {
        let text = X86_64_6_1
            .replace("SIZE(page)=64\n", "")
            .replace("NUMBER(PG_slab)=9\n", "");
        let e = PageLayout::from_vmcoreinfo(&VmcoreInfo::parse(text.as_bytes()), 8).unwrap_err();
        assert!(
            e.contains("SIZE(page)") && e.contains("NUMBER(PG_slab)"),
            "{e}"
        );
        let text = X86_64_6_1.replace("LENGTH(mem_section)=4096", "LENGTH(mem_section)=77");
        let e = PageLayout::from_vmcoreinfo(&VmcoreInfo::parse(text.as_bytes()), 8).unwrap_err();
        assert!(e.contains("LENGTH(mem_section)=77"), "{e}");
    }
}
