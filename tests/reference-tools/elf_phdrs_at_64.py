#!/usr/bin/env python3
"""Copy an ELF64 core file with its program headers moved to offset 64.

    elf_phdrs_at_64.py [--page-offset ADDR] SRC DST

makedumpfile (1.7.2 and 1.7.6 alike) reads the program headers of an ELF input at
sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), not at e_phoff, and QEMU >= 7.2 puts two
section headers at 64 and the program headers after them (e_phoff = 192), so makedumpfile
says "Can't get the number of PT_LOAD" on QEMU's dumps. This writes the same file with the
program headers at 64 and no section headers: every segment keeps its file offset (they
all start after the old program headers, which are further on than the new ones end), so
the memory image is byte for byte QEMU's. The copy is sparse (`cp --sparse=always`).
--page-offset ADDR (i386: CONFIG_PAGE_OFFSET, 0xc0000000): QEMU's physical dump has
p_vaddr == p_paddr, and makedumpfile for i386 translates kernel addresses (init_uts_ns
first) through the PT_LOADs' p_vaddr, as /proc/vmcore gives them (__va(paddr), i.e.
PAGE_OFFSET + paddr for low memory). With the option each PT_LOAD that lies wholly in low
memory (below 896 MiB, the i386 direct map with the 3G/1G split) gets p_vaddr =
ADDR + p_paddr, and the others (the BIOS ROM at 0xfffc0000, not RAM) are dropped, as
/proc/vmcore lists System RAM only: with the ROM's end at 4 GiB as the highest frame,
makedumpfile would read the FLATMEM mem_map far past its end.
PN_XNUM files (e_phnum 0xffff, real count in section 0) are refused: physical dumps have
a handful of program headers.
"""
import struct
import subprocess
import sys


LOWMEM = 896 << 20


def main(src, dst, page_offset=None):
    with open(src, "rb") as f:
        eh = bytearray(f.read(64))
        if eh[:4] != b"\x7fELF" or eh[4] != 2 or eh[5] != 1:
            sys.exit(f"{src}: offset 0: not a little-endian ELF64 file")
        phoff, shoff = struct.unpack_from("<QQ", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        if phnum == 0xFFFF:
            sys.exit(f"{src}: e_phnum is PN_XNUM: not supported")
        if phentsize != 56:
            sys.exit(f"{src}: offset 54: e_phentsize {phentsize} is not 56")
        f.seek(phoff)
        ph = f.read(56 * phnum)
        if len(ph) != 56 * phnum:
            sys.exit(f"{src}: offset {phoff:#x}: program headers cut short")
    lowest = min(struct.unpack_from("<Q", ph, 56 * i + 8)[0] for i in range(phnum))
    if lowest < 64 + len(ph):
        sys.exit(f"{src}: a segment starts at {lowest:#x}, inside where the headers would go")
    if page_offset is not None:
        kept = []
        for i in range(phnum):
            one = bytearray(ph[56 * i:56 * i + 56])
            p_type, _fl, _off, _va, pa, _fs, memsz = struct.unpack_from("<IIQQQQQ", one)
            if p_type == 1:
                if pa + memsz > LOWMEM:
                    continue
                struct.pack_into("<Q", one, 16, page_offset + pa)
            kept.append(bytes(one))
        ph = b"".join(kept)
        struct.pack_into("<H", eh, 56, len(kept))  # e_phnum
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    struct.pack_into("<QQ", eh, 32, 64, 0)  # e_phoff, e_shoff
    struct.pack_into("<HHH", eh, 58, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    struct.pack_into("<H", eh, 52, 64)  # e_ehsize (QEMU writes 8)
    with open(dst, "r+b") as f:
        f.write(eh)
        f.seek(64)
        f.write(ph)


if __name__ == "__main__":
    args = sys.argv[1:]
    po = None
    if args[:1] == ["--page-offset"] and len(args) >= 2:
        po = int(args[1], 0)
        args = args[2:]
    if len(args) != 2:
        sys.exit("usage: elf_phdrs_at_64.py [--page-offset ADDR] SRC DST")
    main(*args, page_offset=po)
