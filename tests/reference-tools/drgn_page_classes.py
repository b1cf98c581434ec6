#!/usr/bin/env python3
"""Each page frame's class, from the kernel's own struct page array, read with drgn.

    drgn_page_classes.py DUMP VMLINUX

An oracle for page filtering (issue 13), independent of dumpconv and of makedumpfile:
drgn opens DUMP (any format drgn reads: ELF, kdump through libkdumpfile) with the guest
kernel's debug VMLINUX, walks every valid page frame with drgn's helpers
(drgn.helpers.linux.mm: for_each_valid_page_range, compound_head, PageSlab, PagePrivate,
PageSwapBacked, PageOwnerPriv1, ...) and prints, for each class, its page frames as
half-open ranges, one `CLASS 0xSTART 0xEND` line each, sorted and merged, plus `#` lines
with counts and notes.

With a drgn older than 0.0.32 (Debian 13's 0.0.31) the walk covers frames 0 to max_pfn
instead of drgn's valid struct page ranges.

Classes follow what the kernel's struct page says (Linux 6.1, include/linux/mm_types.h,
include/linux/page-flags.h, mm/page_alloc.c), tested in this order, first match wins:

  free           The page heads a free buddy block: its page_type (which shares the word
                 of _mapcount) is the "buddy" page type, i.e. _mapcount equals VMCOREINFO's
                 NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE), the value the kernel exports for
                 exactly this test. page->private is then the block's order
                 (buddy_order()), and the whole block, 2^order frames from the head, is
                 free: its other pages carry no mark at all.
  offline        page_type is the "offline" type (NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)):
                 memory a balloon driver or hot-unplug took away.
  slab           PageSlab on the compound head: slab allocator memory. (The slab's
                 kmem_cache pointer sits where page->mapping is, so slab must be tested
                 before mapping is looked at.)
  user           The compound head's page->mapping has PAGE_MAPPING_ANON (bit 0) set:
                 anonymous memory of user processes, KSM pages included (bits 0 and 1);
                 mapped or in the swap cache alike.
  cache-private  page->mapping (of the head) is an address_space (low two bits clear,
                 non-NULL): the page is in the page cache, and it has private data
                 (PagePrivate: e.g. buffer heads) or is in the swap cache (PageSwapCache =
                 PageSwapBacked && PG_swapcache, which is PG_owner_priv_1).
  cache          the same, without private data: page cache proper, tmpfs/shmem
                 included (their pages are page cache with an address_space too).
  other          everything else: kernel text and data, page tables, vmalloc, reserved
                 memory, movable non-LRU pages (mapping bit 1 alone), pages in transit.
  unreadable     a frame whose struct page could not be read.

Besides, independent of the classes above:

  memmap         the frames that have a struct page (drgn's valid page ranges): the
                 frames this script classifies. RAM the kernel keeps no struct page for
                 (e.g. firmware-reserved memory at the top of i386 RAM) is not in it.
  zero           frames whose content (PAGE_SIZE bytes in DUMP) is all zero bytes.
  free-pcp       frames on the per-CPU free lists (zone->per_cpu_pageset->lists): free
                 as far as the kernel is concerned, but not marked as buddy pages, so
                 they are in `other` above. List i < MIGRATE_PCPTYPES * 4 holds pages of
                 order i / MIGRATE_PCPTYPES, the last one (THP) pageblock_order (6.1's
                 order_to_pindex()). Walked only when the kernel has those lists.

makedumpfile's dump level bits name these classes: 1 zero, 2 cache without private,
4 cache with private (all of cache), 8 user, 16 free.
Written for the dumpconv test suite from the kernel's definitions, not from makedumpfile.
"""
import sys
import time

import drgn
from drgn import FaultError, Object, cast
from drgn.helpers.linux.mm import (
    PageOwnerPriv1,
    PagePrivate,
    PageSlab,
    PageSwapBacked,
    compound_head,
    page_to_pfn,
    pfn_to_page,
)

try:
    from drgn.helpers.linux.mm import for_each_valid_page_range
except ImportError:  # drgn < 0.0.32 (Debian 13 has 0.0.31)

    def for_each_valid_page_range(prog):
        """Frames 0 .. max_pfn, one range (older drgn has no valid-range helper);
        frames without a readable struct page come out as `unreadable`."""
        yield 0, prog["max_pfn"].value_(), pfn_to_page(prog, 0)

from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.percpu import per_cpu_ptr
from drgn.helpers.linux.cpumask import for_each_possible_cpu

PAGE_MAPPING_ANON = 0x1
PAGE_MAPPING_MOVABLE = 0x2
PAGE_MAPPING_FLAGS = 0x3


def vmcoreinfo(prog):
    text = bytes(prog["VMCOREINFO"].value_()).decode("ascii", "replace")
    out = {}
    for line in text.split("\n"):
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def u32(v):
    return int(v) & 0xFFFFFFFF


def merge(frames_runs):
    out = []
    for a, b in sorted(frames_runs):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


class Runs:
    """Collects frames per class as runs (frames arrive in increasing order)."""

    def __init__(self):
        self.runs = {}

    def add(self, cls, start, end):
        r = self.runs.setdefault(cls, [])
        if r and r[-1][1] == start:
            r[-1][1] = end
        else:
            r.append([start, end])


def pcp_free(prog, notes):
    """Frames on the per-CPU free lists, as [start, end) runs."""
    runs = []
    try:
        ptype = prog.type("struct page")
        member = "pcp_list" if any(m.name == "pcp_list" for m in _members(ptype)) else "lru"
        mt = prog["MIGRATE_PCPTYPES"].value_()
        pb_order = prog["pageblock_order"].value_() if _has(prog, "pageblock_order") else 9
    except (LookupError, AttributeError) as e:
        notes.append(f"free-pcp: not walked ({e})")
        return runs
    if _has(prog, "node_data"):
        from drgn.helpers.linux.nodemask import for_each_online_node
        pgdats = [prog["node_data"][nid] for nid in for_each_online_node(prog)]
    else:
        pgdats = [prog["contig_page_data"].address_of_()]
    for pgdat in pgdats:
        for zone in pgdat.node_zones:
            managed = zone.managed_pages
            if hasattr(managed, "counter"):
                managed = managed.counter
            if not managed.value_():
                continue
            for cpu in for_each_possible_cpu(prog):
                pcp = per_cpu_ptr(zone.per_cpu_pageset, cpu)
                for i in range(len(pcp.lists)):
                    order = i // mt if i < mt * 4 else pb_order
                    for page in list_for_each_entry("struct page", pcp.lists[i].address_of_(), member):
                        pfn = page_to_pfn(page).value_()
                        runs.append((pfn, pfn + (1 << order)))
    return merge(runs)


def _members(t):
    out = []
    for m in t.members:
        if m.name is None:
            out.extend(_members(m.type.unqualified()))
        else:
            out.append(m)
    return out


def _has(prog, name):
    try:
        prog[name]
        return True
    except KeyError:
        return False


def zero_frames(prog, ram, page_size, notes):
    """Frames in the RAM runs whose content is all zeros."""
    runs = Runs()
    zero = bytes(page_size)
    chunk = 256
    unread = 0
    for start, end in ram:
        pfn = start
        while pfn < end:
            n = min(chunk, end - pfn)
            try:
                buf = prog.read(pfn * page_size, n * page_size, True)
            except FaultError:
                buf = None
            for i in range(n):
                if buf is None:
                    try:
                        page = prog.read((pfn + i) * page_size, page_size, True)
                    except FaultError:
                        unread += 1
                        continue
                else:
                    page = buf[i * page_size:(i + 1) * page_size]
                if page == zero:
                    runs.add("zero", pfn + i, pfn + i + 1)
            pfn += n
    if unread:
        notes.append(f"zero: {unread} frames of the struct page ranges are not in the dump")
    return runs.runs.get("zero", [])


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: drgn_page_classes.py DUMP VMLINUX")
    dump, vmlinux = sys.argv[1:]
    t0 = time.monotonic()
    prog = drgn.Program()
    prog.set_core_dump(dump)
    prog.load_debug_info([vmlinux])
    vi = vmcoreinfo(prog)
    page_size = int(vi.get("PAGESIZE", "4096"))
    buddy = u32(vi["NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"])
    offline = u32(vi["NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)"]) if "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)" in vi else None
    notes = []
    runs = Runs()
    ram = []
    skip_to = -1
    counts = {}
    cache_not_lru = 0
    shmem = 0
    from drgn.helpers.linux.mm import PageLRU
    for start, end, mem_map in for_each_valid_page_range(prog):
        ram.append((start, end))
        for pfn in range(start, end):
            if pfn < skip_to:
                continue
            page = mem_map + pfn
            try:
                mapcount = u32(page._mapcount.counter.value_())
                if mapcount == buddy:
                    order = page.private.value_()
                    last = min(pfn + (1 << order), end)
                    runs.add("free", pfn, last)
                    counts["free"] = counts.get("free", 0) + (last - pfn)
                    skip_to = last
                    continue
                if offline is not None and mapcount == offline:
                    cls = "offline"
                else:
                    head = compound_head(page)
                    mapping = head.mapping.value_()
                    if PageSlab(head):
                        cls = "slab"
                    elif mapping & PAGE_MAPPING_ANON:
                        cls = "user"
                    elif mapping & PAGE_MAPPING_FLAGS == 0 and mapping != 0:
                        swapcache = PageSwapBacked(head) and PageOwnerPriv1(head)
                        cls = "cache-private" if PagePrivate(head) or swapcache else "cache"
                        if not PageLRU(head):
                            cache_not_lru += 1
                        if PageSwapBacked(head):
                            shmem += 1
                    else:
                        cls = "other"
            except FaultError:
                cls = "unreadable"
            runs.add(cls, pfn, pfn + 1)
            counts[cls] = counts.get(cls, 0) + 1
    t1 = time.monotonic()
    out = sys.stdout
    zero = zero_frames(prog, merge(ram), page_size, notes)
    pcp = pcp_free(prog, notes)
    t2 = time.monotonic()
    out.write(f"# drgn {drgn.__version__}, {dump}\n")
    out.write(f"# kernel {vi.get('OSRELEASE', '?')}, page size {page_size}, "
              f"PAGE_BUDDY_MAPCOUNT_VALUE {buddy:#x}\n")
    out.write(f"# struct page ranges: {' '.join(f'{a:#x}-{b:#x}' for a, b in merge(ram))}\n")
    for cls in sorted(counts):
        out.write(f"# {cls}: {counts[cls]} frames\n")
    out.write(f"# zero: {sum(b - a for a, b in zero)} frames\n")
    out.write(f"# free-pcp: {sum(b - a for a, b in pcp)} frames\n")
    out.write(f"# cache pages not on an LRU list: {cache_not_lru}; "
              f"swap-backed (shmem/tmpfs) cache pages: {shmem}\n")
    for n in notes:
        out.write(f"# note: {n}\n")
    out.write(f"# seconds: walk {t1 - t0:.1f}, zero scan and pcp lists {t2 - t1:.1f}\n")
    for cls in sorted(runs.runs):
        for a, b in runs.runs[cls]:
            out.write(f"{cls} {a:#x} {b:#x}\n")
    for a, b in merge(ram):
        out.write(f"memmap {a:#x} {b:#x}\n")
    for a, b in zero:
        out.write(f"zero {a:#x} {b:#x}\n")
    for a, b in pcp:
        out.write(f"free-pcp {a:#x} {b:#x}\n")


if __name__ == "__main__":
    main()
