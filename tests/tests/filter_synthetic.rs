//! Page filtering on a synthetic kernel memory map (tests/src/synth_pages.rs): sections
//! present and absent, early and hot-plugged sections, a section whose vmemmap is not
//! mapped, a RAM hole, a second EXTREME root; buddy blocks of several orders, compound
//! pages (THP, a page-cache folio, hugetlb), typed pages, stray tails. The expectation
//! below is written out by hand from the page specs, not computed by the classifier.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use dumpconv::output::Output;
use dumpconv::pipeline::convert;
use dumpconv_core::{ErrorClass, NoProgress, VmcoreInfo, WalkOptions};
use dumpconv_filter::{classify, Class, PageKind, PageLayout, Unknown, WalkerMemory};
use dumpconv_tests::synth_pages::*;

/// RAM (bytes): low memory below the VGA hole, 1..20 MiB (sections 0-4), 24..28 MiB
/// (section 6, absent from mem_section: a hot-plug hole the dump still has), 512..516 MiB
/// (section 128: the second EXTREME root).
const RAM: &[(u64, u64)] = &[
    (0, 0xA_0000),
    (0x10_0000, 0x140_0000),
    (0x180_0000, 0x1C0_0000),
    (0x2000_0000, 0x2040_0000),
];

const FILE_MAPPING: u64 = 0xffff_8880_0123_4000;
const ANON_MAPPING: u64 = 0xffff_8880_0123_5001;

fn kernel(extreme: bool) -> (SparseKernel, String) {
    let mut k = kernel_unbuilt(extreme);
    let vmci = k.build();
    (k, vmci)
}

/// The kernel before its tables are laid out (tests change pages first).
fn kernel_unbuilt(extreme: bool) -> SparseKernel {
    // Tables from 16 MiB (section 4), data (mem_section, struct pages) from 12 MiB
    // (section 3).
    let mut k = SparseKernel::new(
        RAM,
        (0x100_0000, 0x110_0000),
        (0xC0_0000, 0x100_0000),
        extreme,
    );
    k.sections.insert(0, SectionState::Present { early: true });
    k.sections.insert(1, SectionState::Present { early: true });
    k.sections.insert(2, SectionState::Unmapped);
    k.sections.insert(3, SectionState::Present { early: true });
    k.sections.insert(4, SectionState::Present { early: false });
    k.sections.insert(6, SectionState::Absent);
    k.sections
        .insert(128, SectionState::Present { early: false });
    let p = &mut k.pages;
    let buddy = |order: u64| PageSpec {
        mapcount: BUDDY,
        private: order,
        ..Default::default()
    };
    // Free blocks.
    p.insert(0x10, buddy(1));
    p.insert(0x408, buddy(3));
    p.insert(0x420, buddy(0));
    p.insert(0x1200, buddy(9));
    p.insert(0x20000, buddy(10));
    // A free block not aligned to its order: inconsistent, kept.
    p.insert(0x431, buddy(2));
    // Offline page.
    p.insert(
        0x4B0,
        PageSpec {
            mapcount: OFFLINE,
            ..Default::default()
        },
    );
    // Single pages.
    p.insert(
        0x440,
        PageSpec {
            flags: PG_LRU,
            mapping: ANON_MAPPING,
            mapcount: 0,
            ..Default::default()
        },
    );
    p.insert(
        0x441,
        PageSpec {
            flags: PG_LRU,
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    p.insert(
        0x442,
        PageSpec {
            flags: PG_LRU | PG_PRIVATE,
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    p.insert(
        0x443,
        PageSpec {
            flags: PG_LRU | PG_SWAPCACHE | PG_SWAPBACKED,
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    // PG_owner_priv_1 on a file page that is not swap-backed is a filesystem's
    // PG_checked, not the swap cache: plain cache.
    p.insert(
        0x448,
        PageSpec {
            flags: PG_LRU | PG_SWAPCACHE,
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    // File page off the LRU, slab with an odd-looking mapping, page table, movable.
    p.insert(
        0x444,
        PageSpec {
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    p.insert(
        0x445,
        PageSpec {
            flags: PG_SLAB,
            mapping: ANON_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    p.insert(
        0x446,
        PageSpec {
            mapping: ANON_MAPPING,
            mapcount: PAGE_TABLE_TYPE,
            ..Default::default()
        },
    );
    p.insert(
        0x447,
        PageSpec {
            flags: PG_LRU,
            mapping: FILE_MAPPING | 2,
            mapcount: -1,
            ..Default::default()
        },
    );
    // A page-cache folio of order 2 at 0x450.
    p.insert(
        0x450,
        PageSpec {
            flags: PG_HEAD | PG_LRU,
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    for t in 0x451..0x454 {
        p.insert(
            t,
            PageSpec {
                compound_head: page_va(0x450) | 1,
                order: if t == 0x451 { 2 } else { 0 },
                mapcount: -1,
                ..Default::default()
            },
        );
    }
    // A hugetlb page of order 4 at 0x480 (not on an LRU, file mapping).
    p.insert(
        0x480,
        PageSpec {
            flags: PG_HEAD,
            mapping: FILE_MAPPING,
            mapcount: -1,
            ..Default::default()
        },
    );
    for t in 0x481..0x490 {
        p.insert(
            t,
            PageSpec {
                compound_head: page_va(0x480) | 1,
                dtor: if t == 0x481 { HUGETLB_DTOR } else { 0 },
                order: if t == 0x481 { 4 } else { 0 },
                mapcount: -1,
                ..Default::default()
            },
        );
    }
    // A tail whose "head" 0x49C is no compound head: inconsistent, kept.
    p.insert(
        0x4A0,
        PageSpec {
            compound_head: page_va(0x49C) | 1,
            mapcount: -1,
            ..Default::default()
        },
    );
    // An anonymous THP of order 9 at 0x600 (section 1's second half).
    p.insert(
        0x600,
        PageSpec {
            flags: PG_HEAD | PG_LRU,
            mapping: ANON_MAPPING,
            mapcount: 0,
            ..Default::default()
        },
    );
    for t in 0x601..0x800 {
        p.insert(
            t,
            PageSpec {
                compound_head: page_va(0x600) | 1,
                order: if t == 0x601 { 9 } else { 0 },
                mapcount: -1,
                ..Default::default()
            },
        );
    }
    k
}

/// The hand-computed classes: PFN ranges `[start, end)`.
fn expected() -> BTreeMap<Class, Vec<(u64, u64)>> {
    BTreeMap::from([
        (
            Class::Free,
            vec![
                (0x10, 0x12),
                (0x408, 0x410),
                (0x420, 0x421),
                (0x4B0, 0x4B1),
                (0x1200, 0x1400),
                (0x20000, 0x20400),
            ],
        ),
        (
            Class::User,
            vec![(0x440, 0x441), (0x480, 0x490), (0x600, 0x800)],
        ),
        (
            Class::Cache,
            vec![(0x441, 0x442), (0x448, 0x449), (0x450, 0x454)],
        ),
        (Class::CachePrivate, vec![(0x442, 0x444)]),
    ])
}

fn pfn_set(r: &[(u64, u64)]) -> BTreeSet<u64> {
    r.iter().flat_map(|&(s, e)| s..e).collect()
}

fn ram_pfns() -> Vec<(u64, u64)> {
    RAM.iter().map(|&(s, e)| (s / 4096, e / 4096)).collect()
}

#[test]
fn sparse_extreme_and_plain_match_the_hand_computed_classes() {
    for extreme in [true, false] {
        let (k, vmci) = kernel(extreme);
        let layout = PageLayout::from_vmcoreinfo(&VmcoreInfo::parse(vmci.as_bytes()), 8).unwrap();
        let mem = k.guest.memory();
        let cpu = k.guest.cpu(0);
        let kmem = WalkerMemory {
            walker: &dumpconv_x86::X86Walker,
            cpu: &cpu,
            mem: &mem,
            opts: WalkOptions::default(),
        };
        let mut results = Vec::new();
        for threads in [1, 3] {
            results.push(classify(&layout, &kmem, &ram_pfns(), threads).unwrap());
        }
        assert_eq!(
            results[0].runs, results[1].runs,
            "thread count changed the result"
        );
        let c = &results[0];
        let mut got: BTreeMap<Class, BTreeSet<u64>> = BTreeMap::new();
        let mut unknown: BTreeMap<Unknown, BTreeSet<u64>> = BTreeMap::new();
        for r in &c.runs {
            match r.kind {
                PageKind::Class(cl) => got.entry(cl).or_default().extend(r.start..r.end),
                PageKind::Unknown(u) => unknown.entry(u).or_default().extend(r.start..r.end),
                PageKind::Kept => {}
            }
        }
        for (class, ranges) in expected() {
            assert_eq!(
                got.remove(&class).unwrap_or_default(),
                pfn_set(&ranges),
                "extreme={extreme}: class {class:?}"
            );
        }
        assert!(got.is_empty(), "unexpected classes {got:?}");
        // Section 2's vmemmap is not mapped; section 6 is absent; two bad struct pages.
        let want_unknown = BTreeMap::from([
            (Unknown::Unreadable, pfn_set(&[(0x800, 0xC00)])),
            (
                Unknown::NoMemMap(dumpconv_filter::memmap::NoMemMap::SectionAbsent),
                pfn_set(&[(0x1800, 0x1C00)]),
            ),
            (
                Unknown::Inconsistent,
                pfn_set(&[(0x431, 0x432), (0x4A0, 0x4A1)]),
            ),
        ]);
        assert_eq!(unknown, want_unknown, "extreme={extreme}");
        // Every RAM page is accounted for exactly once.
        let ram: u64 = ram_pfns().iter().map(|(s, e)| e - s).sum();
        assert_eq!(c.stats.pages, ram);
        assert_eq!(c.stats.inconsistent, 2);
    }
}

#[test]
fn a_struct_page_array_of_garbage_is_refused() {
    let mut k = kernel_unbuilt(true);
    // Sections 0, 1, 3, 4 filled with pseudo-random struct pages (xorshift).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for pfn in (0x100..0x800).chain(0xC00..0x1400) {
        let spec = PageSpec {
            flags: next(),
            compound_head: next(),
            dtor: next() as u8,
            order: next() as u8,
            mapping: next(),
            private: next() & 0xff,
            mapcount: if next() % 4 == 0 {
                BUDDY
            } else {
                next() as i32
            },
        };
        k.pages.insert(pfn, spec);
    }
    let vmci = k.build();
    let layout = PageLayout::from_vmcoreinfo(&VmcoreInfo::parse(vmci.as_bytes()), 8).unwrap();
    let mem = k.guest.memory();
    let cpu = k.guest.cpu(0);
    let kmem = WalkerMemory {
        walker: &dumpconv_x86::X86Walker,
        cpu: &cpu,
        mem: &mem,
        opts: WalkOptions::default(),
    };
    let e = classify(&layout, &kmem, &ram_pfns(), 2).unwrap_err();
    assert!(e.0.contains("garbage"), "{}", e.0);
}

/// The synthetic guest as a raw image with its options for `convert`.
struct Input {
    _dir: tempfile::TempDir,
    raw: std::path::PathBuf,
    vmci: std::path::PathBuf,
    cr3: u64,
    dir: std::path::PathBuf,
}

fn input(k: &SparseKernel, vmci: &str) -> Input {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("ram.raw");
    let f = std::fs::File::create(&raw).unwrap();
    f.set_len(RAM.last().unwrap().1).unwrap();
    for (&addr, bytes) in &k.guest.pages {
        use std::os::unix::fs::FileExt;
        f.write_all_at(bytes, addr).unwrap();
    }
    let vpath = dir.path().join("vmcoreinfo.txt");
    std::fs::File::create(&vpath)
        .unwrap()
        .write_all(vmci.as_bytes())
        .unwrap();
    Input {
        raw,
        vmci: vpath,
        cr3: k.guest.cr3(),
        dir: dir.path().to_path_buf(),
        _dir: dir,
    }
}

fn options(i: &Input, extra: &[(&str, &str)]) -> dumpconv::schema::OptionMap {
    let ram_map = RAM
        .iter()
        .map(|(s, e)| format!("{s:#x}-{:#x}", e - 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut m = dumpconv::schema::OptionMap::new();
    for (k, v) in [
        ("input-format", "raw".to_string()),
        ("arch", "x86_64".into()),
        ("ram-map", ram_map),
        ("cr3", format!("{:#x}", i.cr3)),
        ("paging-mode", "4level".into()),
        ("vmcoreinfo", i.vmci.display().to_string()),
    ] {
        dumpconv::schema::insert(&mut m, k, v).unwrap();
    }
    for (k, v) in extra {
        dumpconv::schema::insert(&mut m, k, v.to_string()).unwrap();
    }
    m
}

fn run(i: &Input, extra: &[(&str, &str)], out: &Path) -> dumpconv_core::Result<()> {
    let opts = dumpconv::schema::build(&options(i, extra))?;
    let _ = std::fs::remove_file(out);
    convert(&i.raw, &Output::Path(out.to_path_buf()), &opts, &NoProgress).map(drop)
}

/// Both bitmaps of a kdump file, read by the layout alone (docs/formats.md): header
/// fields at their x86_64 offsets, bitmaps after the sub header.
fn kdump_bitmaps(path: &Path) -> (Vec<u8>, Vec<u8>, i32) {
    let b = std::fs::read(path).unwrap();
    let le32 = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let bs = le32(428) as usize;
    let sub_hdr = le32(432) as usize;
    let bitmap_blocks = le32(436) as usize;
    let half = bitmap_blocks * bs / 2;
    let at = (1 + sub_hdr) * bs;
    let dump_level = le32(bs + 8) as i32;
    (
        b[at..at + half].to_vec(),
        b[at + half..at + 2 * half].to_vec(),
        dump_level,
    )
}

fn bit(b: &[u8], pfn: u64) -> bool {
    b.get((pfn / 8) as usize)
        .is_some_and(|x| x >> (pfn % 8) & 1 == 1)
}

#[test]
fn kdump_marks_exactly_the_classes_excluded() {
    let (k, vmci) = kernel(true);
    let i = input(&k, &vmci);
    let out = i.dir.join("d30.kdump");
    run(&i, &[("dump-level", "30")], &out).unwrap();
    let (ram, dumpable, level) = kdump_bitmaps(&out);
    assert_eq!(level, 30);
    let mut want: BTreeSet<u64> = BTreeSet::new();
    for r in expected().values() {
        want.extend(pfn_set(r));
    }
    let mut excluded = BTreeSet::new();
    for &(s, e) in &ram_pfns() {
        for pfn in s..e {
            assert!(bit(&ram, pfn), "RAM PFN {pfn:#x} not in the 1st bitmap");
            if !bit(&dumpable, pfn) {
                excluded.insert(pfn);
            }
        }
    }
    assert_eq!(excluded, want);

    // Our reader: an excluded page is unavailable ("excluded"), never zeros; `info`
    // counts them.
    let dump = dumpconv_formats::open(&out, &Default::default()).unwrap();
    let mut page = vec![0u8; 4096];
    for &pfn in want.iter().step_by(97) {
        match dump.memory.read_at(pfn * 4096, &mut page) {
            Err(dumpconv_core::Error::PageUnavailable { why, .. }) => {
                assert!(why.contains("excluded"), "{why}")
            }
            other => panic!("PFN {pfn:#x}: {other:?}"),
        }
    }
    dump.memory.read_at(0x444 * 4096, &mut page).unwrap();
    let detail = |k: &str| {
        dump.details
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(detail("dump level").as_deref(), Some("30"));
    assert_eq!(detail("excluded pages"), Some(want.len().to_string()));

    // --exclude names the same bits.
    let out2 = i.dir.join("named.kdump");
    run(&i, &[("exclude", "cache,cache-private,user,free")], &out2).unwrap();
    assert_eq!(kdump_bitmaps(&out), kdump_bitmaps(&out2));

    // Only free pages.
    run(&i, &[("exclude", "free")], &out2).unwrap();
    let (_, dumpable, level) = kdump_bitmaps(&out2);
    assert_eq!(level, 16);
    let free = pfn_set(&expected()[&Class::Free]);
    for &(s, e) in &ram_pfns() {
        for pfn in s..e {
            assert_eq!(!bit(&dumpable, pfn), free.contains(&pfn), "PFN {pfn:#x}");
        }
    }
}

/// PT_LOAD segments of an ELF64 file: (p_paddr, p_filesz, p_memsz).
fn elf_loads(path: &Path) -> Vec<(u64, u64, u64)> {
    let b = std::fs::read(path).unwrap();
    let le64 = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let le16 = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let (phoff, phentsize, phnum) = (le64(32) as usize, le16(54) as usize, le16(56) as usize);
    (0..phnum)
        .map(|n| phoff + n * phentsize)
        .filter(|&p| u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) == 1)
        .map(|p| (le64(p + 24), le64(p + 32), le64(p + 40)))
        .collect()
}

#[test]
fn elf_and_raw_leave_excluded_pages_out() {
    let (k, vmci) = kernel(true);
    let i = input(&k, &vmci);
    let out = i.dir.join("free.elf");
    run(&i, &[("exclude", "free,user")], &out).unwrap();
    let mut want: BTreeSet<u64> = pfn_set(&ram_pfns());
    for c in [Class::Free, Class::User] {
        for p in pfn_set(&expected()[&c]) {
            want.remove(&p);
        }
    }
    let mut got = BTreeSet::new();
    for (paddr, filesz, memsz) in elf_loads(&out) {
        assert_eq!(filesz, memsz);
        got.extend(paddr / 4096..(paddr + memsz) / 4096);
    }
    assert_eq!(got, want);

    // ELF and --exclude zero: only pages with a non-zero byte remain.
    run(&i, &[("exclude", "zero")], &out).unwrap();
    let nonzero: BTreeSet<u64> = k
        .guest
        .pages
        .iter()
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .map(|(a, _)| a / 4096)
        .filter(|p| ram_pfns().iter().any(|&(s, e)| (s..e).contains(p)))
        .collect();
    let mut got = BTreeSet::new();
    for (paddr, _, memsz) in elf_loads(&out) {
        got.extend(paddr / 4096..(paddr + memsz) / 4096);
    }
    assert_eq!(got, nonzero);

    // raw: excluded pages read back as zero holes, the rest as the input.
    let raw_out = i.dir.join("free.raw");
    run(&i, &[("exclude", "free")], &raw_out).unwrap();
    let a = std::fs::read(&i.raw).unwrap();
    let b = std::fs::read(&raw_out).unwrap();
    let free = pfn_set(&expected()[&Class::Free]);
    for &(s, e) in &ram_pfns() {
        for pfn in s..e {
            let r = (pfn * 4096) as usize..((pfn + 1) * 4096) as usize;
            let page = b.get(r.clone()).unwrap_or(&[]);
            if free.contains(&pfn) {
                assert!(page.iter().all(|&x| x == 0), "free PFN {pfn:#x} kept");
            } else {
                assert_eq!(page, &a[r], "PFN {pfn:#x}");
            }
        }
    }
}

#[test]
fn without_vmcoreinfo_filtering_fails_before_writing_or_falls_back() {
    let (k, vmci) = kernel(true);
    let i = input(&k, &vmci);
    let mut m = options(&i, &[("dump-level", "31")]);
    m.remove("vmcoreinfo");
    let out = i.dir.join("novmci.kdump");
    let opts = dumpconv::schema::build(&m).unwrap();
    let e = convert(&i.raw, &Output::Path(out.clone()), &opts, &NoProgress).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Input, "{e}");
    assert!(e.to_string().contains("VMCOREINFO"), "{e}");
    assert!(!out.exists(), "an output was written");

    dumpconv::schema::insert(&mut m, "filter-fallback", "1".into()).unwrap();
    let opts = dumpconv::schema::build(&m).unwrap();
    let r = convert(&i.raw, &Output::Path(out.clone()), &opts, &NoProgress).unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("level 0")),
        "{:?}",
        r.warnings
    );
    let (ram, dumpable, level) = kdump_bitmaps(&out);
    assert_eq!(level, 0);
    assert_eq!(ram, dumpable);
}

#[test]
fn an_unknown_layout_fails_before_writing() {
    let (k, vmci) = kernel(true);
    for (what, text) in [
        ("SIZE(page)", vmci.replace("SIZE(page)=64\n", "")),
        (
            "LENGTH(mem_section)",
            vmci.replace("LENGTH(mem_section)=128", "LENGTH(mem_section)=100"),
        ),
    ] {
        let i = input(&k, &text);
        let out = i.dir.join("bad.kdump");
        let e = run(&i, &[("dump-level", "31")], &out).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Input, "{e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
        assert!(!out.exists());
    }
}

#[test]
fn garbage_fails_before_writing() {
    let mut k = kernel_unbuilt(true);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for pfn in (0x100..0x800).chain(0xC00..0x1400) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        k.pages.insert(
            pfn,
            PageSpec {
                flags: x,
                compound_head: x.rotate_left(7),
                mapping: x.rotate_left(19),
                private: x & 0x3f,
                mapcount: if x.is_multiple_of(3) { BUDDY } else { x as i32 },
                ..Default::default()
            },
        );
    }
    let vmci = k.build();
    let i = input(&k, &vmci);
    let out = i.dir.join("garbage.kdump");
    let e = run(&i, &[("dump-level", "31")], &out).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Input, "{e}");
    assert!(e.to_string().contains("garbage"), "{e}");
    assert!(!out.exists());
}
