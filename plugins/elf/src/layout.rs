//! Where everything goes in the output file, computed in full before the first byte is
//! written, so the writer only ever appends (stdout works) and memory use is the
//! program-header table plus one copy buffer.
//!
//! ```text
//! 0                 ELF header (52 / 64 bytes)
//! e_phoff = ehsize  program headers: PT_NOTE, then the PT_LOADs
//! [shoff]           section header 0, only with extended numbering (PN_XNUM)
//! notes             the note blob
//! memory area       page aligned; plan.ranges in physical order, each stored once, each
//!                   at a file offset congruent to its physical address modulo 4 KiB
//! ```
//!
//! Why the memory area keeps physical page alignment: a zero page then covers whole
//! file-system blocks and turns into a real hole, and readers' page-sized reads stay
//! aligned. The cost is under 4 KiB of padding per range. crash tells "kdump ELF" from
//! "netdump ELF" by `p_align == 0` (docs/formats.md#elf-program-headers), so aligned
//! offsets are harmless.

use dumpconv_core::{DumpPlan, Error, LinearMap, PhysRange, PhysicalMemory, Result};
use dumpconv_formats::elf::write::{
    needs_xnum, ElfClass, Phdr, PF_R, PF_W, PF_X, PN_XNUM, PT_LOAD, PT_NOTE,
};

/// Alignment of the memory area and of each range within it (see the module comment).
pub const MEM_ALIGN: u64 = dumpconv_raw::copy::ZERO_BLOCK;

/// A PT_LOAD before file offsets are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Load {
    pub paddr: u64,
    pub vaddr: u64,
    pub len: u64,
}

/// The complete file layout.
#[derive(Debug, Clone)]
pub struct Layout {
    pub class: ElfClass,
    /// Program headers in output order, PT_NOTE first.
    pub phdrs: Vec<Phdr>,
    /// Offset of section header 0 when extended numbering is used.
    pub shoff: Option<u64>,
    pub notes_offset: u64,
    pub notes_len: u64,
    /// Each plan range with the file offset of its first byte, in physical order.
    pub ranges: Vec<(PhysRange, u64)>,
    /// Total file size.
    pub end: u64,
}

impl Layout {
    pub fn phnum(&self) -> u32 {
        // Never truncates: build() refuses more than u32::MAX headers.
        self.phdrs.len() as u32
    }

    /// File offset of physical address `paddr`, if it lies in a written range.
    pub fn offset_of(&self, paddr: u64) -> Option<u64> {
        file_offset(&self.ranges, paddr)
    }
}

fn file_offset(ranges: &[(PhysRange, u64)], paddr: u64) -> Option<u64> {
    let i = ranges.partition_point(|(r, _)| r.end <= paddr);
    let (r, off) = ranges.get(i)?;
    r.contains(paddr).then(|| off + (paddr - r.start))
}

fn align_up(v: u64, a: u64) -> Result<u64> {
    v.checked_add(a - 1)
        .map(|x| x & !(a - 1))
        .ok_or_else(|| Error::invalid("output file would exceed 2^64 bytes"))
}

/// The smallest offset `>= at` that is congruent to `paddr` modulo [`MEM_ALIGN`].
fn congruent_at_or_after(at: u64, paddr: u64) -> Result<u64> {
    let want = paddr % MEM_ALIGN;
    let have = at % MEM_ALIGN;
    at.checked_add((want + MEM_ALIGN - have) % MEM_ALIGN)
        .ok_or_else(|| Error::invalid("output file would exceed 2^64 bytes"))
}

/// The PT_LOADs of the plan, in output order.
///
/// Order: the mapped loads by ascending physical address, then virtual address; then
/// the vaddr-0 loads for RAM no mapping covers, by physical address.
///
/// - crash looks physical addresses up by scanning phdr[1..] in order and takes the
///   first match; aliases share file bytes, so any match is right. Old crash (before
///   `resize_elf_header`, ~7.2.x) read everything up to phdr[1].p_offset as "header":
///   physical order makes phdr[1] the first byte of the memory area whenever the lowest
///   RAM byte is mapped (always so for Linux, whose direct map starts at physical 0).
/// - gdb reads by p_vaddr and also takes the first load containing an address. A
///   vaddr-0 load of uncovered RAM can be gigabytes long (32-bit highmem) and would
///   shadow real user mappings at low virtual addresses if it came first: so those
///   loads go last (tested with gdb 13).
/// - makedumpfile and crash derive phys_base / page_offset from the vaddr of
///   kernel-looking loads; vaddr 0 is "not a kernel address" to both (makedumpfile's
///   NOT_KV_ADDR), so the fillers do not disturb that.
///
/// Physical view: one load per range. `p_vaddr` is what `/proc/vmcore` gives when the
/// kernel's linear map of low memory is known (`linear`, from VMCOREINFO: 32-bit x86,
/// where makedumpfile finds the kernel through `p_vaddr`): `virt_base + paddr` for RAM
/// below `phys_end` (a range crossing it is split there), 0 ("not a kernel address")
/// above. Without it `p_vaddr = p_paddr`, as QEMU writes.
///
/// `physical_first`: the paging view in [`physical_first_order`] instead.
pub fn loads(
    plan: &DumpPlan,
    linear: Option<LinearMap>,
    physical_first: bool,
) -> Result<Vec<Load>> {
    let ranges = &plan.ranges;
    let Some(list) = &plan.mappings else {
        let mut out = Vec::with_capacity(ranges.len() + 1);
        for r in ranges {
            let Some(lm) = linear else {
                out.push(Load {
                    paddr: r.start,
                    vaddr: r.start,
                    len: r.len(),
                });
                continue;
            };
            let split = r.end.min(lm.phys_end.max(r.start));
            if split > r.start {
                let vaddr = lm.virt_of(r.start, split - r.start).ok_or_else(|| {
                    Error::invalid(format!(
                        "linear map {:#x} + {:#x} runs past the top of virtual memory",
                        lm.virt_base, r.start
                    ))
                })?;
                out.push(Load {
                    paddr: r.start,
                    vaddr,
                    len: split - r.start,
                });
            }
            if r.end > split {
                out.push(Load {
                    paddr: split,
                    vaddr: 0,
                    len: r.end - split,
                });
            }
        }
        return Ok(out);
    };
    let mut loads = Vec::with_capacity(list.len() + ranges.len());
    // Physical intervals some mapping covers, to find the RAM no mapping reaches.
    let mut covered: Vec<PhysRange> = Vec::with_capacity(list.len());
    for m in list.runs() {
        let phys_end = m.phys_end();
        // Pieces of this run that are RAM in the plan; anything else (MMIO, RAM outside
        // --begin/--length, holes) would claim file bytes that do not exist.
        let mut i = ranges.partition_point(|r| r.end <= m.phys);
        while let Some(r) = ranges.get(i) {
            if r.start >= phys_end {
                break;
            }
            if let Some(piece) = r.intersect(&PhysRange::new(m.phys, phys_end)) {
                let vaddr = m.virt.checked_add(piece.start - m.phys).ok_or_else(|| {
                    Error::invalid(format!(
                        "mapping {:#x} -> {:#x} (+{:#x}) runs past the top of virtual memory",
                        m.virt, m.phys, m.len
                    ))
                })?;
                loads.push(Load {
                    paddr: piece.start,
                    vaddr,
                    len: piece.len(),
                });
                covered.push(piece);
            }
            i += 1;
        }
    }
    loads.sort_unstable();
    loads.dedup();
    let mapped = loads.len();
    // RAM no mapping covers still gets PT_LOADs, at virtual 0: crash reads by p_paddr
    // and must see all memory. (QEMU leaves such RAM without any program header,
    // docs/formats.md#elf-paging-mappings.) They come out in physical order, after the
    // mapped loads.
    covered = dumpconv_core::memory::normalize_ranges(covered);
    let mut c = covered.iter().peekable();
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            // Skip covered intervals that end before `at`.
            while c.peek().is_some_and(|cv| cv.end <= at) {
                c.next();
            }
            match c.peek() {
                Some(cv) if cv.start <= at => at = cv.end.min(r.end),
                Some(cv) if cv.start < r.end => {
                    loads.push(Load {
                        paddr: at,
                        vaddr: 0,
                        len: cv.start - at,
                    });
                    at = cv.end.min(r.end);
                }
                _ => {
                    loads.push(Load {
                        paddr: at,
                        vaddr: 0,
                        len: r.end - at,
                    });
                    at = r.end;
                }
            }
        }
    }
    if physical_first {
        let fillers = loads.split_off(mapped);
        return Ok(physical_first_order(loads, fillers));
    }
    Ok(loads)
}

/// The `elf-layout=physical-first` order of a paging view's loads, for readers that key
/// segments by `p_paddr`, assume they never overlap and read at most 65,535 program
/// headers (Volatility 3's ELF layer):
///
/// 1. Every byte of RAM exactly once, by ascending physical address, never overlapping:
///    the pieces the most common linear mapping covers (the offset `vaddr - paddr` that
///    maps the most bytes: the kernel's direct map), with that virtual address, and the
///    rest of RAM at vaddr 0 ("not a kernel address", as the fillers of the standard
///    order).
/// 2. When other mappings remain: PT_NULL entries (zero-length [`Load`]s) up to program
///    header 65,535, so a reader stopping at `PN_XNUM` headers sees part 1 and nothing
///    else.
/// 3. Every other mapping (kernel text, vmalloc, fixmap, user, ESPFIX aliases), sorted
///    as in the standard order; gdb and drgn find them by `p_vaddr`, crash by `p_paddr`
///    after part 1 has answered every physical address already.
fn physical_first_order(mapped: Vec<Load>, fillers: Vec<Load>) -> Vec<Load> {
    let mut bytes: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for l in &mapped {
        *bytes.entry(l.vaddr.wrapping_sub(l.paddr)).or_default() += l.len;
    }
    let primary = bytes
        .iter()
        .max_by_key(|(delta, len)| (**len, std::cmp::Reverse(**delta)))
        .map(|(delta, _)| *delta);
    let (mut first, rest): (Vec<Load>, Vec<Load>) = mapped
        .into_iter()
        .partition(|l| Some(l.vaddr.wrapping_sub(l.paddr)) == primary);
    // Same offset: overlapping pieces are one mapping; merge them.
    first.sort_unstable();
    let mut merged: Vec<Load> = Vec::with_capacity(first.len());
    for l in first {
        match merged.last_mut() {
            Some(m) if l.paddr <= m.paddr + m.len => {
                m.len = m.len.max(l.paddr + l.len - m.paddr);
            }
            _ => merged.push(l),
        }
    }
    // RAM the primary mapping does not cover: the other mappings' pieces and the
    // fillers, as vaddr-0 loads.
    let covered: Vec<PhysRange> = merged
        .iter()
        .map(|l| PhysRange::new(l.paddr, l.paddr + l.len))
        .collect();
    let mut ram: Vec<PhysRange> = rest
        .iter()
        .chain(&fillers)
        .map(|l| PhysRange::new(l.paddr, l.paddr + l.len))
        .collect();
    ram = dumpconv_core::memory::normalize_ranges(ram);
    let mut out = merged;
    for r in ram {
        let mut at = r.start;
        let mut i = covered.partition_point(|c| c.end <= at);
        while at < r.end {
            match covered.get(i) {
                Some(c) if c.start <= at => {
                    at = c.end.min(r.end);
                    i += 1;
                }
                Some(c) if c.start < r.end => {
                    out.push(Load {
                        paddr: at,
                        vaddr: 0,
                        len: c.start - at,
                    });
                    at = c.end.min(r.end);
                    i += 1;
                }
                _ => {
                    out.push(Load {
                        paddr: at,
                        vaddr: 0,
                        len: r.end - at,
                    });
                    at = r.end;
                }
            }
        }
    }
    out.sort_unstable_by_key(|l| l.paddr);
    if !rest.is_empty() {
        // PT_NOTE is header 0: the aliases start at header PN_XNUM (65,535).
        let pad = (PN_XNUM as usize).saturating_sub(out.len() + 1);
        out.extend(std::iter::repeat_n(NULL_LOAD, pad));
        out.extend(rest);
    }
    out
}

/// A placeholder program header (PT_NULL): [`place`] writes a zero-length load so.
const NULL_LOAD: Load = Load {
    paddr: 0,
    vaddr: 0,
    len: 0,
};

/// Place everything for one class.
pub fn place(
    class: ElfClass,
    loads: &[Load],
    ranges: &[PhysRange],
    notes_len: u64,
) -> Result<Layout> {
    let phnum = u32::try_from(loads.len() + 1).map_err(|_| {
        Error::invalid(format!(
            "{} program headers are too many for ELF",
            loads.len() + 1
        ))
    })?;
    let mut at = class.ehdr_size() + u64::from(phnum) * class.phdr_size();
    let shoff = needs_xnum(phnum).then_some(at);
    if shoff.is_some() {
        at += class.shdr_size();
    }
    // Header sizes are multiples of 4, so the notes are 4-aligned as readers expect.
    let notes_offset = at;
    at += notes_len;
    at = align_up(at, MEM_ALIGN)?;
    let mut placed = Vec::with_capacity(ranges.len());
    for r in ranges {
        at = congruent_at_or_after(at, r.start)?;
        placed.push((*r, at));
        at = at
            .checked_add(r.len())
            .ok_or_else(|| Error::invalid("output file would exceed 2^64 bytes"))?;
    }
    let end = at;
    let flags = PF_R | PF_W | PF_X;
    let mut phdrs = Vec::with_capacity(loads.len() + 1);
    phdrs.push(Phdr {
        p_type: PT_NOTE,
        p_offset: notes_offset,
        p_filesz: notes_len,
        p_memsz: notes_len,
        ..Phdr::default()
    });
    for l in loads {
        if l.len == 0 {
            phdrs.push(Phdr::default()); // PT_NULL, see physical_first_order
            continue;
        }
        let off = file_offset(&placed, l.paddr).ok_or_else(|| {
            Error::invalid(format!(
                "load at physical {:#x} is outside the plan",
                l.paddr
            ))
        })?;
        phdrs.push(Phdr {
            p_type: PT_LOAD,
            p_flags: flags,
            p_offset: off,
            p_vaddr: l.vaddr,
            p_paddr: l.paddr,
            p_filesz: l.len,
            p_memsz: l.len,
            // 0 = "kdump ELF" for crash (docs/formats.md#elf-program-headers), as QEMU and
            // the kernel write.
            p_align: 0,
        });
    }
    Ok(Layout {
        class,
        phdrs,
        shoff,
        notes_offset,
        notes_len,
        ranges: placed,
        end,
    })
}

/// True if the layout can be written as ELF32: every header field fits 32 bits and no
/// extended numbering is needed (crash honours PN_XNUM only in ELF64,
/// docs/formats.md#elf-pn-xnum).
fn fits_elf32(l: &Layout) -> bool {
    l.end <= u64::from(u32::MAX)
        && l.shoff.is_none()
        && l.phdrs.iter().all(|p| ElfClass::Elf32.fits(p))
}

/// Choose the class and lay the file out.
///
/// ELF64 by default, for every architecture: 32-bit x86 gets ELF64 with EM_386, as QEMU
/// writes it, since every reader measured that opens an i386 ELF32 also opens it, and
/// Volatility 3 opens only ELF64 (it reads an ELF32 file as raw memory, silently:
/// docs/readers.md#elf-class). Option `elf-class`: `64` or `auto` (or absent) write
/// ELF64, `32` demands ELF32 (32-bit dumps only; an error if it cannot hold the dump,
/// docs/formats.md#elf-class).
pub fn build(plan: &DumpPlan, mem: &dyn PhysicalMemory, notes_len: u64) -> Result<Layout> {
    let want = match plan.option("elf-class") {
        None | Some("auto") => None,
        Some("32") => Some(ElfClass::Elf32),
        Some("64") => Some(ElfClass::Elf64),
        Some(v) => {
            return Err(Error::invalid(format!(
                "elf-class={v}: expected 32, 64 or auto"
            )))
        }
    };
    let linear = plan
        .vmcoreinfo
        .as_ref()
        .and_then(|v| v.linear_map(plan.arch.elf_machine(), mem));
    let physical_first = match plan.option("elf-layout") {
        None | Some("standard") => false,
        Some("physical-first") => true,
        Some(v) => {
            return Err(Error::invalid(format!(
                "elf-layout={v}: expected standard or physical-first"
            )))
        }
    };
    let loads = loads(plan, linear, physical_first)?;
    let try32 = match (plan.arch.is_64(), want) {
        (true, Some(ElfClass::Elf32)) => {
            return Err(Error::invalid(format!(
                "elf-class=32 is only for 32-bit dumps ({} has 64-bit words)",
                plan.arch
            )))
        }
        (false, Some(ElfClass::Elf32)) => true,
        _ => false,
    };
    if try32 {
        let l = place(ElfClass::Elf32, &loads, &plan.ranges, notes_len)?;
        if fits_elf32(&l) {
            return Ok(l);
        }
        if want == Some(ElfClass::Elf32) {
            return Err(Error::invalid(
                "elf-class=32: the dump does not fit ELF32 (addresses or file offsets above \
                 4 GiB, or more than 65534 program headers)",
            ));
        }
    }
    place(ElfClass::Elf64, &loads, &plan.ranges, notes_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dumpconv_core::{Arch, Mapping, MappingList};
    use std::collections::BTreeMap;

    fn plan(ranges: Vec<PhysRange>, maps: Option<Vec<Mapping>>) -> DumpPlan {
        DumpPlan {
            filter: None,
            arch: Arch::X86_64,
            page_size: 4096,
            ranges,
            mappings: maps.map(|v| v.into_iter().collect::<MappingList>()),
            notes: vec![],
            cpus: vec![],
            vmcoreinfo: None,
            options: BTreeMap::new(),
        }
    }

    fn m(virt: u64, phys: u64, len: u64) -> Mapping {
        Mapping { virt, phys, len }
    }

    #[test]
    fn paging_loads_split_drop_and_fill() {
        let p = plan(
            vec![
                PhysRange::new(0x1000, 0x5000),
                PhysRange::new(0x8000, 0x9000),
            ],
            Some(vec![
                // crosses the hole 0x5000..0x8000: split, hole dropped
                m(0xffff_8000_0000_4000, 0x4000, 0x5000),
                // entirely outside RAM: dropped
                m(0xffff_9000_0000_0000, 0x20000, 0x1000),
                // alias of 0x1000
                m(0xffff_a000_0000_0000, 0x1000, 0x1000),
            ]),
        );
        let l = loads(&p, None, false).unwrap();
        let ld = |paddr, vaddr, len| Load { paddr, vaddr, len };
        assert_eq!(
            l,
            vec![
                ld(0x1000, 0xffff_a000_0000_0000, 0x1000),
                ld(0x4000, 0xffff_8000_0000_4000, 0x1000),
                ld(0x8000, 0xffff_8000_0000_8000, 0x1000),
                // no mapping covers it: vaddr 0, after the mapped loads
                ld(0x2000, 0, 0x2000),
            ]
        );
        let lay = place(ElfClass::Elf64, &l, &p.ranges, 0).unwrap();
        // phdr[1] is the first byte of the memory area, after a 4 KiB-aligned header;
        // ranges are placed back to back when page congruence allows.
        assert_eq!(lay.phdrs[1].p_offset, 4096);
        assert_eq!(lay.phdrs[2].p_offset, 4096 + 0x3000);
        assert_eq!(lay.phdrs[3].p_offset, 4096 + 0x4000);
        assert_eq!(lay.phdrs[4].p_offset, 4096 + 0x1000);
    }

    #[test]
    fn physical_loads_take_the_linear_map() {
        let p = plan(
            vec![
                PhysRange::new(0x0, 0x9f000),
                PhysRange::new(0x100000, 0x4000_0000),
            ],
            None,
        );
        let lm = LinearMap {
            virt_base: 0xc000_0000,
            phys_end: 0x3800_0000,
        };
        let ld = |paddr, vaddr, len| Load { paddr, vaddr, len };
        assert_eq!(
            loads(&p, Some(lm), false).unwrap(),
            vec![
                ld(0x0, 0xc000_0000, 0x9f000),
                ld(0x100000, 0xc010_0000, 0x3800_0000 - 0x100000),
                // past low memory: split, no kernel address
                ld(0x3800_0000, 0, 0x800_0000),
            ]
        );
        assert_eq!(
            loads(&p, None, false).unwrap(),
            vec![ld(0x0, 0x0, 0x9f000), ld(0x100000, 0x100000, 0x3ff0_0000)]
        );
    }

    #[test]
    fn physical_first_puts_ram_once_then_nulls_then_aliases() {
        const DM: u64 = 0xffff_8880_0000_0000;
        let p = plan(
            vec![
                PhysRange::new(0x0, 0x9000),
                PhysRange::new(0x10000, 0x20000),
            ],
            Some(vec![
                // direct map of everything but 0x4000..0x6000
                m(DM, 0x0, 0x4000),
                m(DM + 0x6000, 0x6000, 0x3000),
                m(DM + 0x10000, 0x10000, 0x10000),
                // kernel text alias inside the direct map, and an alias of the hole
                m(0xffff_ffff_8100_0000, 0x12000, 0x2000),
                m(0xffff_fe00_0000_0000, 0x4000, 0x1000),
            ]),
        );
        let l = loads(&p, None, true).unwrap();
        let ld = |paddr, vaddr, len| Load { paddr, vaddr, len };
        // Part 1: all RAM once, physical order, no overlap.
        assert_eq!(
            l[..4],
            [
                ld(0x0, DM, 0x4000),
                ld(0x4000, 0, 0x2000),
                ld(0x6000, DM + 0x6000, 0x3000),
                ld(0x10000, DM + 0x10000, 0x10000),
            ]
        );
        // Then placeholders.
        assert_eq!(l[4], NULL_LOAD);
        // Aliases from header 65,535 (PT_NOTE is header 0).
        assert_eq!(l.len(), PN_XNUM as usize - 1 + 2);
        assert!(l[4..PN_XNUM as usize - 1].iter().all(|x| *x == NULL_LOAD));
        assert_eq!(
            l[PN_XNUM as usize - 1..],
            [
                ld(0x4000, 0xffff_fe00_0000_0000, 0x1000),
                ld(0x12000, 0xffff_ffff_8100_0000, 0x2000),
            ]
        );
        let lay = place(ElfClass::Elf64, &l, &p.ranges, 0).unwrap();
        assert!(lay.shoff.is_some());
        assert_eq!(lay.phdrs[5].p_type, 0);
        assert_eq!(lay.phdrs[PN_XNUM as usize].p_type, PT_LOAD);
        // The physical view ignores the option.
        let phys = plan(p.ranges.clone(), None);
        assert_eq!(
            loads(&phys, None, true).unwrap(),
            loads(&phys, None, false).unwrap()
        );
    }

    #[test]
    fn ranges_keep_page_congruence() {
        let ranges = vec![
            PhysRange::new(0x0, 0x9fc00),
            PhysRange::new(0x100000, 0x100123),
            PhysRange::new(0x200010, 0x300000),
        ];
        let p = plan(ranges.clone(), None);
        let l = loads(&p, None, false).unwrap();
        let lay = place(ElfClass::Elf64, &l, &ranges, 100).unwrap();
        for (r, off) in &lay.ranges {
            assert_eq!(off % MEM_ALIGN, r.start % MEM_ALIGN);
        }
        for w in lay.ranges.windows(2) {
            let gap = w[1].1 - (w[0].1 + w[0].0.len());
            assert!(gap < MEM_ALIGN);
        }
        assert_eq!(lay.ranges[0].1, 4096);
    }
}
