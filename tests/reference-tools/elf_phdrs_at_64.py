#!/usr/bin/env python3
"""Copy an ELF64 core file with its program headers moved to offset 64.

    elf_phdrs_at_64.py SRC DST

makedumpfile (1.7.2 and 1.7.6 alike) reads the program headers of an ELF input at
sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr), not at e_phoff, and QEMU >= 7.2 puts two
section headers at 64 and the program headers after them (e_phoff = 192), so makedumpfile
says "Can't get the number of PT_LOAD" on QEMU's dumps. This writes the same file with the
program headers at 64 and no section headers: every segment keeps its file offset (they
all start after the old program headers, which are further on than the new ones end), so
the memory image is byte for byte QEMU's. The copy is sparse (`cp --sparse=always`).
PN_XNUM files (e_phnum 0xffff, real count in section 0) are refused: physical dumps have
a handful of program headers.
"""
import struct
import subprocess
import sys


def main(src, dst):
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
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    struct.pack_into("<QQ", eh, 32, 64, 0)  # e_phoff, e_shoff
    struct.pack_into("<HHH", eh, 58, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    struct.pack_into("<H", eh, 52, 64)  # e_ehsize (QEMU writes 8)
    with open(dst, "r+b") as f:
        f.write(eh)
        f.seek(64)
        f.write(ph)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: elf_phdrs_at_64.py SRC DST")
    main(*sys.argv[1:])
