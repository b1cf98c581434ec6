//! A synthetic Linux kernel memory map for the page-filter tests: an x86_64 4-level
//! guest ([`crate::synth::Guest`]) whose RAM holds a SPARSEMEM_VMEMMAP `mem_section`
//! table (EXTREME or not) and `struct page` arrays written field by field, with the
//! VMCOREINFO text that describes them. Everything is laid out by hand here, from the
//! kernel's definitions (Linux 6.1 x86_64 offsets), not by the classifier's code.

#![allow(clippy::expect_used)]

use std::collections::BTreeMap;

use dumpconv_x86::PagingMode;

use crate::synth::{Guest, PageSize, P, RW};

pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
pub const VMEMMAP: u64 = 0xffff_ea00_0000_0000;
pub const STRUCT_PAGE: u64 = 64;
/// 4 MiB sections: 1024 page frames each.
pub const SECTION_SIZE_BITS: u32 = 22;
pub const PFNS_PER_SECTION: u64 = 1 << (SECTION_SIZE_BITS - 12);
/// 2^(36-22) = 16384 sections; EXTREME: 128 per root page, 128 roots.
pub const MAX_PHYSMEM_BITS: u32 = 36;
pub const SECTIONS_PER_ROOT: u64 = 4096 / 32;

pub const PG_LRU: u64 = 1 << 4;
pub const PG_SLAB: u64 = 1 << 9;
pub const PG_SWAPCACHE: u64 = 1 << 10;
pub const PG_PRIVATE: u64 = 1 << 13;
pub const PG_HEAD: u64 = 1 << 16;
pub const PG_SWAPBACKED: u64 = 1 << 19;
pub const BUDDY: i32 = -129;
pub const OFFLINE: i32 = -257;
pub const PAGE_TABLE_TYPE: i32 = -513;
pub const HUGETLB_DTOR: u8 = 2;

/// `section_mem_map` flag bits.
pub const SECTION_PRESENT: u64 = 1;
pub const SECTION_HAS_MEM_MAP: u64 = 2;
pub const SECTION_ONLINE: u64 = 4;
pub const SECTION_EARLY: u64 = 8;

/// The fields of one struct page the tests set (6.1 x86_64 offsets: flags 0,
/// compound_head 8, compound_dtor 16, compound_order 17, mapping 24, private 40,
/// _mapcount 48).
#[derive(Debug, Clone, Copy, Default)]
pub struct PageSpec {
    pub flags: u64,
    pub compound_head: u64,
    pub dtor: u8,
    pub order: u8,
    pub mapping: u64,
    pub private: u64,
    pub mapcount: i32,
}

impl PageSpec {
    pub fn bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..16].copy_from_slice(&self.compound_head.to_le_bytes());
        b[16] = self.dtor;
        b[17] = self.order;
        b[24..32].copy_from_slice(&self.mapping.to_le_bytes());
        b[40..48].copy_from_slice(&self.private.to_le_bytes());
        b[48..52].copy_from_slice(&self.mapcount.to_le_bytes());
        // _refcount 1 (52..56): not read by the classifier.
        b[52..56].copy_from_slice(&1i32.to_le_bytes());
        b
    }
}

/// Virtual address of the struct page of `pfn`.
pub fn page_va(pfn: u64) -> u64 {
    VMEMMAP + pfn * STRUCT_PAGE
}

/// One section of the synthetic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionState {
    /// Present, online, with a mapped struct page array; `early` sets SECTION_IS_EARLY.
    Present { early: bool },
    /// Present, but its part of vmemmap is not mapped.
    Unmapped,
    /// Entry all zero.
    Absent,
}

/// The synthetic kernel being built.
pub struct SparseKernel {
    pub guest: Guest,
    pub extreme: bool,
    /// Section number → state (sections not listed are absent).
    pub sections: BTreeMap<u64, SectionState>,
    /// pfn → struct page.
    pub pages: BTreeMap<u64, PageSpec>,
    /// Bump allocator for data pages (inside RAM).
    next: u64,
    end: u64,
}

impl SparseKernel {
    /// A guest with RAM `ranges` (`[start, end)` bytes), tables from `pool`, data pages
    /// (mem_section, struct page arrays) from `data`.
    pub fn new(
        ranges: &[(u64, u64)],
        pool: (u64, u64),
        data: (u64, u64),
        extreme: bool,
    ) -> SparseKernel {
        SparseKernel {
            guest: Guest::new(PagingMode::Level4, ranges, pool),
            extreme,
            sections: BTreeMap::new(),
            pages: BTreeMap::new(),
            next: data.0,
            end: data.1,
        }
    }

    fn alloc(&mut self, pages: u64) -> u64 {
        let p = self.next;
        self.next += pages * 0x1000;
        assert!(self.next <= self.end, "data area full");
        p
    }

    fn write(&mut self, phys: u64, bytes: &[u8]) {
        let mut at = phys;
        let mut done = 0;
        while done < bytes.len() {
            let page = at & !0xFFF;
            let off = (at - page) as usize;
            let n = (0x1000 - off).min(bytes.len() - done);
            let p = self
                .guest
                .pages
                .entry(page)
                .or_insert_with(|| vec![0u8; 0x1000].into_boxed_slice());
            p[off..off + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
            at += n as u64;
        }
    }

    fn map_direct(&mut self, phys: u64, pages: u64) {
        for i in 0..pages {
            let p = phys + i * 0x1000;
            self.guest
                .map(PAGE_OFFSET + p, p, PageSize::K4, P | RW)
                .expect("map direct");
        }
    }

    /// Lay everything out; returns the VMCOREINFO text.
    pub fn build(&mut self) -> String {
        // Struct page arrays: one 64 KiB block per present, mapped section.
        let secs: Vec<(u64, SectionState)> = self.sections.iter().map(|(k, v)| (*k, *v)).collect();
        let arr_pages = PFNS_PER_SECTION * STRUCT_PAGE / 0x1000;
        for &(nr, st) in &secs {
            if let SectionState::Present { .. } = st {
                let phys = self.alloc(arr_pages);
                for i in 0..arr_pages {
                    let va = page_va(nr * PFNS_PER_SECTION) + i * 0x1000;
                    self.guest
                        .map(va, phys + i * 0x1000, PageSize::K4, P | RW)
                        .expect("map vmemmap");
                }
                let first = nr * PFNS_PER_SECTION;
                let specs: Vec<(u64, PageSpec)> = self
                    .pages
                    .range(first..first + PFNS_PER_SECTION)
                    .map(|(k, v)| (*k, *v))
                    .collect();
                for (pfn, spec) in specs {
                    self.write(phys + (pfn - first) * STRUCT_PAGE, &spec.bytes());
                }
            }
        }
        let entry = |st: SectionState| -> u64 {
            // The kernel stores mem_map - section_start_pfn: with vmemmap, VMEMMAP.
            let base = VMEMMAP;
            match st {
                SectionState::Present { early } => {
                    base | SECTION_PRESENT
                        | SECTION_HAS_MEM_MAP
                        | SECTION_ONLINE
                        | if early { SECTION_EARLY } else { 0 }
                }
                SectionState::Unmapped => {
                    base | SECTION_PRESENT | SECTION_HAS_MEM_MAP | SECTION_ONLINE
                }
                SectionState::Absent => 0,
            }
        };
        let nr_sections = 1u64 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS);
        let (symbol, length) = if self.extreme {
            let roots = nr_sections / SECTIONS_PER_ROOT;
            let roots_phys = self.alloc(1);
            self.map_direct(roots_phys, 1);
            let mut root_pages: BTreeMap<u64, u64> = BTreeMap::new();
            for &(nr, st) in &secs {
                let root = nr / SECTIONS_PER_ROOT;
                let page = match root_pages.get(&root) {
                    Some(p) => *p,
                    None => {
                        let p = self.alloc(1);
                        self.map_direct(p, 1);
                        self.write(roots_phys + root * 8, &(PAGE_OFFSET + p).to_le_bytes());
                        root_pages.insert(root, p);
                        p
                    }
                };
                let at = page + (nr % SECTIONS_PER_ROOT) * 32;
                self.write(at, &entry(st).to_le_bytes());
            }
            (PAGE_OFFSET + roots_phys, roots)
        } else {
            let pages = nr_sections * 32 / 0x1000;
            let arr = self.alloc(pages);
            self.map_direct(arr, pages);
            for &(nr, st) in &secs {
                self.write(arr + nr * 32, &entry(st).to_le_bytes());
            }
            (PAGE_OFFSET + arr, nr_sections)
        };
        format!(
            "OSRELEASE=6.1.0-synthetic\nPAGESIZE=4096\nSYMBOL(mem_section)={symbol:x}\n\
             LENGTH(mem_section)={length}\nSIZE(mem_section)=32\n\
             OFFSET(mem_section.section_mem_map)=0\nNUMBER(SECTION_SIZE_BITS)={SECTION_SIZE_BITS}\n\
             NUMBER(MAX_PHYSMEM_BITS)={MAX_PHYSMEM_BITS}\nSIZE(page)=64\nSIZE(list_head)=16\n\
             OFFSET(page.flags)=0\nOFFSET(page._refcount)=52\nOFFSET(page.mapping)=24\n\
             OFFSET(page.lru)=8\nOFFSET(page._mapcount)=48\nOFFSET(page.private)=40\n\
             OFFSET(page.compound_dtor)=16\nOFFSET(page.compound_order)=17\n\
             OFFSET(page.compound_head)=8\nOFFSET(list_head.next)=0\nOFFSET(list_head.prev)=8\n\
             LENGTH(zone.free_area)=11\nNUMBER(PG_lru)=4\nNUMBER(PG_private)=13\n\
             NUMBER(PG_swapcache)=10\nNUMBER(PG_swapbacked)=19\nNUMBER(PG_slab)=9\n\
             NUMBER(PG_hwpoison)=23\nNUMBER(PG_head_mask)=65536\n\
             NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nNUMBER(HUGETLB_PAGE_DTOR)=2\n\
             NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257\nNUMBER(phys_base)=0\n"
        )
    }
}
