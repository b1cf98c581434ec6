#!/usr/bin/env python3
"""Generate the hostile-input corpus of tests/hostile/ (issue #17).

    python3 tests/hostile/gen.py [DUMPCONV] [OUTDIR]

DUMPCONV (default: target/ci/dumpconv) makes the few valid bases that are tedious to
write by hand (kdump files with each page codec, flattened, AVML); every hostile file is
then built here, by hand or by patching named fields of a base at offsets this script
computes from the published layouts. zstd, lz4 and xz (the command-line tools) wrap a
few files. The script writes OUTDIR/files/* and OUTDIR/EXPECTED.tsv (default OUTDIR:
the directory of this script); the test tests/tests/hostile.rs runs the table.

EXPECTED.tsv columns (tab-separated):
    file      a name under files/
    command   convert | info | paging | batch (what tests/tests/hostile.rs runs)
    args      extra arguments, space-separated ("-" for none); {dir} is files/,
              {file} the file itself: when it appears, the file is not also given as
              the input (a RAM map or CPU-state file of another input)
    exit      the expected exit code
    words     strings stderr must contain, separated by "|" (the file's name is always
              required on a failure, so it is not listed)
"""

import gzip
import json
import lzma
import zlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DUMPCONV = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "..", "..", "target", "ci", "dumpconv")
OUT = sys.argv[2] if len(sys.argv) > 2 else HERE
FILES = os.path.join(OUT, "files")

CASES = []  # (file, command, args, exit, words)


def write(name, data):
    with open(os.path.join(FILES, name), "wb") as f:
        f.write(data)


def case(name, data, command, exit_code, words, args="-"):
    if data is not None:
        with open(os.path.join(FILES, name), "wb") as f:
            f.write(data)
    CASES.append((name, command, args, exit_code, "|".join(words)))


# ---------------------------------------------------------------- ELF


def ehdr64(phnum, phoff=64, shoff=0, shnum=0, machine=62, shentsize=64, etype=4,
           phentsize=56, data=1, flags=0, ehsize=64):
    return (b"\x7fELF" + bytes([2, data, 1, 0]) + b"\0" * 8 +
            struct.pack("<HHIQQQIHHHHHH", etype, machine, 1, 0, phoff, shoff, flags,
                        ehsize, phentsize, phnum, shentsize, shnum, 0))


def phdr64(ptype, off, vaddr, paddr, filesz, memsz, flags=7, align=0):
    return struct.pack("<IIQQQQQQ", ptype, flags, off, vaddr, paddr, filesz, memsz, align)


def ehdr32(phnum, phoff=52, machine=3, etype=4):
    return (b"\x7fELF" + bytes([1, 1, 1, 0]) + b"\0" * 8 +
            struct.pack("<HHIIIIIHHHHHH", etype, machine, 1, 0, phoff, 0, 0, 52, 32,
                        phnum, 40, 0, 0))


def phdr32(ptype, off, vaddr, paddr, filesz, memsz, flags=7, align=0):
    return struct.pack("<IIIIIIII", ptype, off, vaddr, paddr, filesz, memsz, flags, align)


def note(name, ntype, desc):
    n = name + b"\0"
    out = struct.pack("<III", len(n), len(desc), ntype) + n
    out += b"\0" * (-len(n) % 4) + desc + b"\0" * (-len(desc) % 4)
    return out


def page(seed, n=4096):
    """Compressible but not trivial: a line naming the page, repeated."""
    line = b"dumpconv hostile corpus, page %d; " % seed
    return (line * (n // len(line) + 1))[:n]


def elf64(loads, notes=b"", **kw):
    """An ELF64 core: PT_NOTE (if any) then PT_LOADs of (paddr, data, memsz)."""
    nph = len(loads) + (1 if notes else 0)
    off = 64 + 56 * nph
    ph = b""
    body = b""
    if notes:
        ph += phdr64(4, off, 0, 0, len(notes), 0)
        body += notes
    for paddr, data, memsz in loads:
        ph += phdr64(1, off + len(body), 0, paddr, len(data), memsz)
        body += data
    return ehdr64(nph, **kw) + ph + body


def elf_cases():
    good = elf64([(0x1000, page(1), 0x1000), (0x3000, page(2), 0x1000)])
    case("elf64-good.elf", good, "convert", 0, [])
    case("elf64-phnum0.elf", ehdr64(0) + page(1), "convert", 1, ["e_phnum", "0x38"])
    case("elf64-memsz-2p50.elf",
         ehdr64(1) + phdr64(1, 120, 0, 0, 4096, 1 << 50) + page(3), "convert", 1,
         ["p_memsz", "0x40"], "--format kdump")
    case("elf64-zero-fill-1tib.elf",
         ehdr64(1) + phdr64(1, 120, 0, 0, 8192, 1 << 40) + page(3) + page(4), "convert",
         1, ["p_memsz", "zero", "0x40"], "--format kdump")
    case("elf64-paddr-2p60.elf", elf64([(1 << 60, page(5), 0x1000)]), "convert", 1,
         ["p_paddr", "0x40"])
    case("elf64-paddr-wraps.elf",
         ehdr64(1) + phdr64(1, 120, 0, 0xFFFFFFFFFFFFF000, 4096, 0x2000) + page(5),
         "convert", 1, ["p_paddr", "overflows"])
    # PN_XNUM: e_phnum 0xffff, the count in section header 0's sh_info.
    sh0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 3, 0, 0)
    case("elf64-pnxnum-no-shdr.elf", ehdr64(0xFFFF) + page(1), "convert", 1,
         ["PN_XNUM", "e_shoff"])
    body = phdr64(1, 64 + 56 + 64, 0, 0x1000, 4096, 4096) + sh0 + page(1)
    # A lying count: 3 program headers claimed, 1 there, the section header right after.
    case("elf64-pnxnum-lying.elf", ehdr64(0xFFFF, shoff=64 + 56, shnum=1) + body,
         "convert", 1, ["PN_XNUM", "sh_info"])
    sh0_zero = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    case("elf64-pnxnum-zero.elf",
         ehdr64(0xFFFF, shoff=64 + 56, shnum=1) + phdr64(1, 184, 0, 0, 4096, 4096) +
         sh0_zero + page(1), "convert", 1, ["PN_XNUM", "sh_info"])
    sh0_small = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 1, 0, 0)
    case("elf64-pnxnum-small.elf",
         ehdr64(0xFFFF, shoff=64 + 56, shnum=1) + phdr64(1, 184, 0, 0x1000, 4096, 4096) +
         sh0_small + page(1), "convert", 1, ["PN_XNUM", "sh_info", "65535"])
    case("elf64-pnxnum-shentsize.elf", ehdr64(0xFFFF, shoff=64, shentsize=8) + page(1),
         "convert", 1, ["e_shentsize"])
    case("elf64-phentsize.elf", elf64([(0, page(1), 4096)], phentsize=48), "convert", 1,
         ["e_phentsize"])
    case("elf64-phoff-eof.elf", ehdr64(4, phoff=0x100000) + page(1), "convert", 1,
         ["program header table", "0x100000"])
    case("elf64-phnum-huge.elf", ehdr64(0xFFFE) + page(1), "info", 1,
         ["program header table"])
    case("elf64-filesz-gt-memsz.elf",
         ehdr64(1) + phdr64(1, 120, 0, 0, 8192, 4096) + page(1) + page(2), "convert", 1,
         ["p_filesz", "0x40"])
    case("elf64-load-past-eof.elf",
         ehdr64(1) + phdr64(1, 120, 0, 0, 0x10000, 0x10000) + page(1), "convert", 1,
         ["PT_LOAD 0", "truncated"])
    case("elf64-note-past-eof.elf",
         ehdr64(1) + phdr64(4, 120, 0, 0, 0x10000, 0) + page(1), "info", 1,
         ["PT_NOTE", "0x40"])
    bad_note = struct.pack("<III", 5, 0x7FFFFFF0, 1) + b"CORE\0\0\0\0" + b"\0" * 32
    case("elf64-note-descsz-huge.elf", elf64([(0x1000, page(1), 0x1000)], bad_note),
         "info", 1, ["descriptor size", "0xb0"])
    odd = struct.pack("<III", 5, 5, 0x1234) + b"CORE\0\0\0\0" + b"ABCDE"
    case("elf64-note-odd-size.elf", elf64([(0x1000, page(1), 0x1000)], odd), "info", 1,
         ["note", "padding"])
    name_huge = struct.pack("<III", 0x7FFFFFFF, 4, 1) + b"CORE" + b"\0" * 20
    case("elf64-note-namesz-huge.elf", elf64([(0x1000, page(1), 0x1000)], name_huge),
         "info", 1, ["name size", "0xb0"])
    short_pr = note(b"CORE", 1, b"\x01" * 100)
    case("elf64-prstatus-short.elf", elf64([(0x1000, page(1), 0x1000)], short_pr),
         "convert", 0, ["NT_PRSTATUS", "100"])
    case("elf64-truncated-header.elf", good[:40], "info", 1, ["too short"])
    case("elf64-bigendian.elf", elf64([(0, page(1), 4096)], data=2), "info", 1,
         ["little-endian", "0x5"])
    case("elf64-et-exec.elf", elf64([(0, page(1), 4096)], etype=2), "info", 1,
         ["ET_EXEC", "0x10"])
    case("elf64-machine-arm.elf", elf64([(0, page(1), 4096)], machine=40), "info", 1,
         ["unsupported machine", "0x12"])
    case("elf64-process-core.elf", elf64([(0, page(1), 4096), (0, page(2), 4096)]),
         "convert", 1, ["process core"])
    case("elf64-incomplete-overflow.elf",
         ehdr64(3, flags=1) +
         phdr64(1, 1 << 62, 0, 0x1000, 1 << 51, 1 << 51) +
         phdr64(1, 1 << 62, 0, 1 << 51, 1 << 51, 1 << 51) +
         phdr64(1, 232, 0, 0, 4096, 4096) + page(1), "info", 1,
         ["p_memsz", "zero"])
    # Many program headers: opening must stay O(n log n) (issue #17: 39 s at 65,534).
    n = 65534
    ph = b"".join(phdr64(1, 0, 0, i * 0x2000, 0, 0x100) for i in range(n))
    big = ehdr64(n) + ph
    case("elf64-65534-phdrs.elf.xz", lzma.compress(big, preset=9 | lzma.PRESET_EXTREME), "info", 0,
         ["65534"])
    # ELF32 (i386 /proc/vmcore shape).
    g32 = ehdr32(1) + phdr32(1, 84, 0, 0x1000, 4096, 4096) + page(6)
    case("elf32-good.elf", g32, "convert", 0, [])
    case("elf32-load-past-eof.elf",
         ehdr32(1) + phdr32(1, 84, 0, 0x1000, 0x8000, 0x8000) + page(6), "convert", 1,
         ["PT_LOAD 0", "truncated"])
    case("elf32-phnum0.elf", ehdr32(0) + page(6), "convert", 1, ["e_phnum"])
    case("elf32-zero-fill-4g.elf",
         ehdr32(1) + phdr32(1, 84, 0, 0, 4096, 0xFFFFF000) + page(6), "convert", 1,
         ["p_memsz", "zero fill", "0x34"], "--format kdump")
    case("elf32-zero-fill-512m.elf",
         ehdr32(1) + phdr32(1, 84, 0, 0, 4096, 0x20000000) + page(6), "convert", 0,
         [], "--format kdump")


# ---------------------------------------------------------------- LiME / AVML


def lime_hdr(start, last, magic=0x4C694D45, version=1, reserved=0):
    return struct.pack("<IIQQQ", magic, version, start, last, reserved)


def lime_cases():
    p = page(7)
    case("lime-good.lime", lime_hdr(0, 0xFFF) + p + lime_hdr(0x3000, 0x3FFF) + p,
         "convert", 0, [])
    case("lime-2p56.lime", lime_hdr(1 << 56, (1 << 56) + 0xFFF) + p, "convert", 1,
         ["2^52", "0x0"], "--format kdump")
    case("lime-2p48-kdump.lime", lime_hdr(1 << 48, (1 << 48) + 0xFFF) + p, "convert", 2,
         ["kdump", "bitmap", "0x1000000000fff"], "--format kdump")
    # Fuzzing finding (convert target): a raw stream writes its holes as zeros.
    case("lime-2p48-raw-zst.lime", lime_hdr(1 << 48, (1 << 48) + 0xFFF) + p, "convert", 2,
         ["stream", "0x1000000001000"], "--format raw --compress zstd")
    case("lime-2p48-elf.lime", lime_hdr(1 << 48, (1 << 48) + 0xFFF) + p, "convert", 0, [])
    case("lime-overlap.lime", lime_hdr(0, 0xFFF) + p + lime_hdr(0x800, 0x17FF) + p,
         "convert", 1, ["overlap", "0x1020"])
    case("lime-descending.lime", lime_hdr(0x5000, 0x5FFF) + p + lime_hdr(0, 0xFFF) + p,
         "convert", 1, ["ascending", "0x1020"])
    case("lime-end-below-start.lime", lime_hdr(0x2000, 0x1000) + p, "info", 1,
         ["below its start", "0x0"])
    case("lime-version.lime", lime_hdr(0, 0xFFF, version=7) + p, "info", 1,
         ["unknown format"])
    case("lime-truncated.lime", lime_hdr(0, 0x1FFF) + p, "info", 1,
         ["truncated", "0x20"])
    case("lime-trailing.lime", lime_hdr(0, 0xFFF) + p + b"junk", "info", 1,
         ["trailing", "0x1020"])
    case("lime-reserved.lime", lime_hdr(0, 0xFFF, reserved=5) + p, "info", 1,
         ["reserved", "0x0"])
    case("lime-to-2p64.lime", lime_hdr(0xFFFFFFFFFFFFF000, 0xFFFFFFFFFFFFFFFF) + p, "info",
         1, ["0xfffffffffffff000"])
    case("lime-bad-magic-2nd.lime", lime_hdr(0, 0xFFF) + p + b"\x00" * 32 + p, "info", 1,
         ["expected a range header", "0x1020"])
    # Many small ranges: opening must stay O(n log n) (issue #17: 8.8 s at 32,768).
    many = b"".join(lime_hdr(i * 0x2000, i * 0x2000 + 0xF) + bytes([i & 0xFF]) * 16
                    for i in range(32768))
    case("lime-32768-ranges.lime.xz", lzma.compress(many, preset=9 | lzma.PRESET_EXTREME), "info", 0,
         ["32768"])


def avml_cases(tmp):
    lime = os.path.join(tmp, "base.lime")
    with open(lime, "wb") as f:
        f.write(lime_hdr(0, 0x3FFF) + page(1) + page(2) + page(3) + page(4))
    avml = os.path.join(tmp, "base.avml")
    run([DUMPCONV, "convert", lime, "-o", avml, "--quiet"])
    base = open(avml, "rb").read()
    case("avml-good.avml", base, "convert", 0, [])
    stream_len = struct.unpack_from("<Q", base, len(base) - 8)[0]
    b = bytearray(base)
    for i in range(40, min(40 + 64, len(b) - 8)):
        b[i] ^= 0x5A
    case("avml-corrupt-snappy.avml", bytes(b), "convert", 1, ["AVML"])
    b = bytearray(base)
    struct.pack_into("<Q", b, len(b) - 8, stream_len + 100)
    case("avml-bad-trailer.avml", bytes(b), "info", 1, ["AVML"])
    case("avml-truncated.avml", base[: len(base) // 2], "info", 1, ["AVML"])
    b = bytearray(base)
    struct.pack_into("<Q", b, 16, 0x7FFF)  # claims 32 KiB, holds 16 KiB
    case("avml-range-short.avml", bytes(b), "convert", 1, ["AVML"])
    b = bytearray(base)
    struct.pack_into("<QQ", b, 8, 1 << 56, (1 << 56) + 0x3FFF)
    case("avml-2p56.avml", bytes(b), "info", 1, ["2^52"])


# ---------------------------------------------------------------- kdump


H_STATUS, H_BS, H_SUB, H_BMB, H_MAPNR = 424, 428, 432, 436, 440
S_SPLIT, S_START, S_END, S_NOTE_OFF, S_NOTE_SIZE = 12, 16, 24, 48, 56
S_START64, S_END64, S_MAPNR64 = 80, 88, 96


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def kdump_base(tmp, compress, flat=False, pages=4):
    raw = os.path.join(tmp, "k.raw")
    with open(raw, "wb") as f:
        f.write(b"".join(page(i) if i % 3 else b"\0" * 4096 for i in range(pages)))
    out = os.path.join(tmp, "k-%s%s.kdump" % (compress, "-flat" if flat else ""))
    cmd = [DUMPCONV, "convert", raw, "--format", "kdump", "--compress", compress,
           "--quiet", "-o", "-" if flat else out]
    if flat:
        with open(out, "wb") as f:
            subprocess.run(cmd, check=True, stdout=f)
    else:
        run(cmd)
    return open(out, "rb").read()


def geometry(b):
    bs, sub, bmb = struct.unpack_from("<iiI", b, H_BS)
    desc_off = (1 + sub) * bs + bmb * bs
    return bs, desc_off


def descs(b):
    """(index, offset of the descriptor, (offset, size, flags)) of the stored pages."""
    bs, desc_off = geometry(b)
    out = []
    i = 0
    while True:
        at = desc_off + 24 * i
        off, size, flags = struct.unpack_from("<qII", b, at)
        if off <= 0:
            break
        out.append((i, at, (off, size, flags)))
        i += 1
    return out


def kdump_cases(tmp):
    base = kdump_base(tmp, "zlib")
    case("kdump-good.kdump", base, "convert", 0, [])
    bs, desc_off = geometry(base)
    d = descs(base)
    # A descriptor pointing into the header.
    b = bytearray(base)
    i, at, (off, size, flags) = next(x for x in d if x[2][2] != 0)
    struct.pack_into("<q", b, at, 0)
    case("kdump-desc-into-header.kdump", bytes(b), "convert", 1,
         ["descriptor", hex(at)])
    b = bytearray(base)
    struct.pack_into("<q", b, at, desc_off)
    case("kdump-desc-into-descriptors.kdump", bytes(b), "convert", 1,
         ["descriptor", hex(at)])
    b = bytearray(base)
    struct.pack_into("<q", b, at, len(base) + 0x10000)
    case("kdump-desc-past-eof.kdump", bytes(b), "convert", 1,
         ["data at offset", "past the end", hex(at)])
    b = bytearray(base)
    struct.pack_into("<I", b, at + 8, 0x7FFFFFFF)
    case("kdump-desc-size-huge.kdump", bytes(b), "convert", 1, ["descriptor", hex(at)])
    b = bytearray(base)
    struct.pack_into("<I", b, at + 12, 0)  # uncompressed flag, compressed size
    case("kdump-desc-flags-zero.kdump", bytes(b), "convert", 1,
         ["raw page", hex(off)])
    b = bytearray(base)
    struct.pack_into("<I", b, at + 12, 0x21)  # zlib and zstd at once
    case("kdump-desc-mixed-codecs.kdump", bytes(b), "convert", 1, ["descriptor", hex(at)])
    b = bytearray(base)
    for k in range(off + 2, off + size // 2):
        b[k] = 0xA5
    case("kdump-corrupt-zlib.kdump", bytes(b), "convert", 1, ["kdump", hex(off)])
    for codec in ("lzo", "snappy", "zstd"):
        kb = kdump_base(tmp, codec)
        dd = descs(kb)
        i, at, (off, size, flags) = next(x for x in dd if x[2][2] != 0)
        b = bytearray(kb)
        for k in range(off, off + size // 2):
            b[k] = 0xA5
        case("kdump-corrupt-%s.kdump" % codec, bytes(b), "convert", 1, ["kdump"])
    b = bytearray(base)
    struct.pack_into("<i", b, H_BS, 0)
    case("kdump-block-size-0.kdump", bytes(b[:2 * bs]), "info", 1, ["block_size"])
    b = bytearray(base)
    struct.pack_into("<i", b, H_BS, 3000)
    case("kdump-block-size-odd.kdump", bytes(b[:2 * bs]), "info", 1, ["block_size"])
    b = bytearray(base)
    struct.pack_into("<I", b, H_BMB, 0x7FFFFFFF)
    case("kdump-bitmap-blocks-huge.kdump", bytes(b[:2 * bs]), "info", 1, ["bitmap"])
    b = bytearray(base)
    struct.pack_into("<Q", b, bs + S_MAPNR64, 1 << 50)
    case("kdump-max-mapnr-huge.kdump", bytes(b[:2 * bs]), "info", 1, ["bitmap"])
    b = bytearray(base)
    struct.pack_into("<i", b, H_SUB, -5)
    case("kdump-sub-hdr-negative.kdump", bytes(b[:2 * bs]), "info", 1, ["sub_hdr_size"])
    b = bytearray(base)
    struct.pack_into("<QQ", b, bs + S_NOTE_OFF, 0x1000, 1 << 40)
    case("kdump-note-size-huge.kdump", bytes(b[:2 * bs]), "info", 1, ["note"])
    case("kdump-truncated.kdump", base[: desc_off + 24 * 3], "convert", 1,
         ["truncated"])
    case("kdump-truncated-data.kdump", base[: len(base) - 2000], "convert", 1,
         ["truncated"])
    case("kdump-header-only.kdump", base[:500], "info", 1, ["kdump"])
    # Flattened (makedumpfile -F) streams.
    flat = kdump_base(tmp, "zlib", flat=True)
    case("flat-good.kdump", flat, "convert", 0, [])
    case("flat-no-end-marker.kdump", flat[:-16], "convert", 0,
         ["flat-no-end-marker.kdump", "no end marker", "lost"])
    case("flat-truncated.kdump", flat[: len(flat) * 2 // 3], "convert", 1,
         ["flattened"])
    ovf = flat[:-16] + struct.pack(">qq", 0x7FFFFFFFFFFFFFF0, 0x100) + b"Y" * 16 + flat[-16:]
    case("flat-overflowing-offset.kdump", ovf, "info", 1,
         ["flattened", hex(len(flat) - 16)])
    b = bytearray(flat)
    struct.pack_into(">qq", b, 4096, 0, -5)
    case("flat-negative-size.kdump", bytes(b), "info", 1, ["flattened", "0x1000"])
    # A record far past everything else: the reassembled file would be 2^60 bytes.
    far = flat[:-16] + struct.pack(">qq", 1 << 60, 16) + b"X" * 16 + flat[-16:]
    case("flat-record-far.kdump", far, "convert", 1, ["flattened", "2^56"])
    case("flat-header-only.kdump", flat[:4096], "info", 1, ["flattened"])
    # Split sets: two parts of one dump (makedumpfile --split).
    bm = (1 + struct.unpack_from("<i", base, H_SUB)[0]) * bs

    def part(start, end):
        b = bytearray(base)
        struct.pack_into("<i", b, bs + S_SPLIT, 1)
        struct.pack_into("<QQ", b, bs + S_START, start, end)
        struct.pack_into("<QQ", b, bs + S_START64, start, end)
        return bytes(b)
    _ = bm
    case("split-a.kdump", part(0, 3), "convert", 1, ["split"],
         "{dir}/split-b-overlap.kdump")
    case("split-b-overlap.kdump", part(2, 4), "convert", 1, ["split"],
         "{dir}/split-a.kdump")
    case("split-gap-a.kdump", part(0, 1), "convert", 2, ["split", "0x1..0x2"],
         "{dir}/split-gap-b.kdump")
    case("split-gap-b.kdump", part(2, 4), "convert", 2, ["split", "0x1..0x2"],
         "{dir}/split-gap-a.kdump")
    case("split-backwards.kdump", part(3, 1), "info", 1, ["split", "PFN"])


# ---------------------------------------------------------------- wrappers


def wrapper_cases(tmp):
    good = elf64([(0x1000, page(1), 0x1000), (0x3000, page(2), 0x1000)])
    gz = gzip.compress(good, 9, mtime=0)
    case("wrap-good.elf.gz", gz, "convert", 0, [])
    case("wrap-truncated.elf.gz", gz[: len(gz) // 2], "convert", 1, ["gzip"])
    b = bytearray(gz)
    for k in range(20, 60):
        b[k] ^= 0xFF
    case("wrap-corrupt.elf.gz", bytes(b), "convert", 1, ["gzip"])
    src = os.path.join(tmp, "w.elf")
    with open(src, "wb") as f:
        f.write(good)
    for tool, ext, args in (("zstd", "zst", ["-q", "-f", "-19"]),
                            ("lz4", "lz4", ["-q", "-f", "-9"]),
                            ("xz", "xz", ["-q", "-f", "-k"])):
        if shutil.which(tool) is None:
            print("gen.py: %s missing, skipping its cases" % tool, file=sys.stderr)
            continue
        dst = src + "." + ext
        if tool == "xz":
            run([tool] + args + [src])
        elif tool == "lz4":
            run([tool] + args + [src, dst])
        else:
            run([tool] + args + [src, "-o", dst])
        data = open(dst, "rb").read()
        case("wrap-truncated.elf." + ext, data[: len(data) * 2 // 3], "convert", 1,
             [tool if tool != "zstd" else "zstd"])
    # A decompression bomb beyond --max-spill: 16 MiB of zeros in 16 KiB of gzip.
    bomb = gzip.compress(b"\0" * (16 << 20), 9, mtime=0)
    case("wrap-bomb.raw.gz", bomb, "info", 1, ["max-spill"], "--max-spill 1M")


# ---------------------------------------------------------------- raw, JSON, manifests


def misc_cases():
    raw = b"".join(page(i) for i in range(4))
    case("raw-image.raw", raw, "convert", 1, ["RAM map", "0x1ffff"],
         "--ram-map 0-0x1ffff")
    write("raw-map-past-end.map", b"0-0xfff\n0x2000-0xfffff\n")
    case("raw-image.raw", None, "convert", 1, ["RAM map", "0x2000-0xfffff"],
         "--ram-map {dir}/raw-map-past-end.map")
    case("raw-map-garbage.map", b"0-0xfff\nnot a range\n", "convert", 2,
         ["RAM map", "line 2"], "{dir}/raw-image.raw --ram-map {file}")
    case("raw-map-backwards.map", b"0x2000-0x1000\n", "convert", 2,
         ["RAM map", "line 1"], "{dir}/raw-image.raw --ram-map {file}")
    case("raw-map-iomem.map", b"00000000-00000fff : System RAM\n00002000-zz : System RAM\n",
         "convert", 2, ["RAM map", "line 2"], "{dir}/raw-image.raw --ram-map {file}")
    case("cpu-state-syntax.json", b'{"cpus": [{"arch": "x86_64", "regs": {"cr3": 4096,}}]}',
         "convert", 1, ["CPU-state JSON", "line 1", "offset 0x32"],
         "{dir}/raw-image.raw --cpu-state {file}")
    case("cpu-state-type.json", b'{"cpus": [\n  {"arch": "x86_64", "regs": [1, 2]}\n]}',
         "convert", 1, ["CPU-state JSON", "line 2"],
         "{dir}/raw-image.raw --cpu-state {file}")
    case("cpu-state-truncated.json", b'{"cpus": [{"arch": "x86_64", "re', "convert", 1,
         ["CPU-state JSON", "line 1"], "{dir}/raw-image.raw --cpu-state {file}")
    case("manifest-fields.csv", b"input,output,options\nraw-image.raw,a.elf,,extra\n",
         "batch", 2, ["manifest-fields.csv:2"])
    case("manifest-not-json.jsonl", b'{"input": "raw-image.raw"}\n{input: 1}\n', "batch",
         2, ["manifest-not-json.jsonl:2", "JSON"])
    case("manifest-unknown-field.jsonl", b'{"input": "raw-image.raw", "colour": 1}\n',
         "batch", 2, ["manifest-unknown-field.jsonl:1", "colour"])
    case("manifest-empty-input.csv", b'"",a.elf\n', "batch", 2,
         ["manifest-empty-input.csv:1", "no input"])
    case("manifest-bad-option.jsonl",
         b'{"input": "raw-image.raw", "options": {"compress": [1]}}\n', "batch", 2,
         ["manifest-bad-option.jsonl:1", "compress"])
    # A journal left by a crash: a torn last line is ignored, the job is redone.
    case("journal-torn.jsonl",
         b'{"v":2,"event":"start","output":"raw-image.elf","input":"x"}\n{"v":2,"ev',
         "batch", 0, [], "journal")
    # batch rows run `batch --out-dir OUT FILE`; "journal" copies FILE into OUT as the
    # journal first and converts elf64-good.elf.


# ---------------------------------------------------------------- VM save files
# QEMU migration streams (docs/formats.md#qemu-migration-stream), mapped-ram files and
# qcow2 images with a savevm snapshot (docs/formats.md#qcow2-savevm-snapshots), built
# here from those descriptions.


def qevm_head(caps=()):
    """QEVM, version 3, the configuration section (machine pc-i440fx-7.2) with a
    capabilities subsection when caps are given."""
    v = b"QEVM" + struct.pack(">I", 3) + b"\x07" + struct.pack(">I", 13) + b"pc-i440fx-7.2"
    if caps:
        sub = b"configuration/capabilities"
        v += b"\x05" + bytes([len(sub)]) + sub + struct.pack(">II", 1, len(caps))
        for c in caps:
            v += bytes([len(c)]) + c.encode()
    return v


def name8(s):
    return bytes([len(s)]) + s.encode()


def ram_start(blocks):
    """START of section 2 "ram" version 4 and its MEM_SIZE record (without the blocks)."""
    total = sum(n for _, n in blocks)
    return b"\x01" + struct.pack(">I", 2) + name8("ram") + struct.pack(">IIQ", 0, 4, total | 4)


def stream_pages():
    """pc.ram of 2 pages: 'a' then a zero page (small files: the corpus stays < 1 MiB)."""
    return [b"a" * 4096, None]


def qevm_stream():
    """A plain stream of pc.ram and pc.bios (1 page)."""
    n = len(stream_pages()) * 4096
    v = qevm_head() + ram_start([("pc.ram", n), ("pc.bios", 0x1000)])
    v += name8("pc.ram") + struct.pack(">Q", n) + name8("pc.bios") + struct.pack(">Q", 0x1000)
    v += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2)
    v += b"\x02" + struct.pack(">I", 2)
    first = True
    for i, pg in enumerate(stream_pages()):
        flags = 0x08 if pg is not None else 0x02
        if not first:
            flags |= 0x20
        v += struct.pack(">Q", i * 4096 | flags)
        if first:
            v += name8("pc.ram")
            first = False
        v += pg if pg is not None else b"\0"
    # pc.bios's page sent as bytes, all zero (not placed in guest memory: x86 pc keeps
    # its RAM in pc.ram): zero clusters in a qcow2 image's copy of the stream
    v += struct.pack(">Q", 0x08) + name8("pc.bios") + b"\0" * 4096
    v += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2)
    return v + b"\x00"


def mapped_ram_file(version=1, bitmap_at=None, pages_at=None, extra_page_record=False):
    """A mapped-ram file: pc.ram (page 1 zero, so absent from the bitmap), followed by
    its 28-byte header, its bitmap and its pages (right after the bitmap here, to keep
    the file small; QEMU aligns them to 1 MiB)."""
    blocks = [("pc.ram", stream_pages())]
    v = qevm_head(["mapped-ram"]) + ram_start([(n, len(p) * 4096) for n, p in blocks])
    for bi, (n, pages) in enumerate(blocks):
        v += name8(n) + struct.pack(">Q", len(pages) * 4096)
        hdr_at = len(v)
        bm = sum(1 << i for i, pg in enumerate(pages) if pg is not None)
        bmb = bm.to_bytes((len(pages) + 7) // 8, "little")
        b_at = hdr_at + 28
        p_at = b_at + len(bmb)
        if bi == 0 and bitmap_at is not None:
            b_at = bitmap_at
        if bi == 0 and pages_at is not None:
            p_at = pages_at
        v += struct.pack(">IQQQ", version, 4096, b_at, p_at)
        if bi == 0 and (bitmap_at is not None or pages_at is not None or version != 1):
            return v + bmb  # a lying header: the rest does not matter
        v += bmb
        v += b"\0" * (p_at - len(v))
        for pg in pages:
            v += pg if pg is not None else b"\0" * 4096
    v += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2)
    if extra_page_record:
        v += b"\x02" + struct.pack(">I", 2) + struct.pack(">Q", 0x02) + name8("pc.ram") + b"\0"
        v += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2)
    return v + b"\x00"


def zstd_compress(data):
    return subprocess.run(["zstd", "-q", "-c", "--no-check"], input=data, check=True,
                          stdout=subprocess.PIPE).stdout


def qcow2_image(vmstate, cluster_bits=9, compression=0, extl2=False, snaps=None,
                incompat=0, crypt=0, version=3):
    """A qcow2 image of a 32 KiB virtual disk (no data) with one snapshot holding
    `vmstate`. Clusters: 0 header, 1 active L1 (empty), 2 the snapshot's L1, 3 its L2,
    then the VM state's clusters, then the snapshot table. Of the VM state's clusters,
    two of three are compressed (zlib raw deflate, or zstd), an all-zero one is unallocated
    (or, every other time, a zero-flag entry), the rest plain. Returns (bytes, facts)."""
    cs = 1 << cluster_bits
    width = 16 if extl2 else 8
    l2_entries = cs // width
    per_l1 = cs * l2_entries
    disk = 32 * 1024
    base = (disk + per_l1 - 1) // per_l1 * per_l1
    nclusters = (len(vmstate) + cs - 1) // cs
    assert base % cs == 0 and nclusters + (base // cs) % l2_entries <= l2_entries
    l1_index = base // per_l1
    l1_size = l1_index + 1
    data = bytearray(b"\0" * (4 * cs))
    l2 = bytearray(b"\0" * cs)
    facts = {"compressed": 0, "zero": 0, "plain": 0}
    zero_toggle = 0
    compressed = []  # (l2 index, compressed bytes): packed after the plain clusters
    for i in range(nclusters):
        chunk = vmstate[i * cs:(i + 1) * cs].ljust(cs, b"\0")
        l2i = (base // cs + i) % l2_entries
        bitmap = 0
        if chunk == b"\0" * cs:
            zero_toggle ^= 1
            facts["zero"] += 1
            if extl2:
                entry, bitmap = 0, 0xffffffff << 32  # all subclusters read as zero
            else:
                entry = 1 if zero_toggle and version >= 3 else 0
        elif i % 8 != 0 and not extl2:
            if compression == 1:
                comp = zstd_compress(chunk)
            else:
                c = zlib.compressobj(9, zlib.DEFLATED, -12)
                comp = c.compress(chunk) + c.flush()
            compressed.append((l2i, comp))
            facts["compressed"] += 1
            continue
        else:
            off = len(data)
            data += chunk
            entry, bitmap = (1 << 63) | off, (0xffffffff if extl2 else 0)
            facts["plain"] += 1
        struct.pack_into(">Q", l2, l2i * width, entry)
        if extl2:
            struct.pack_into(">Q", l2, l2i * width + 8, bitmap)
    x = 62 - (cluster_bits - 8)
    for l2i, comp in compressed:
        off = len(data)
        data += comp
        nsect = (off + len(comp) - 1) // 512 - off // 512
        struct.pack_into(">Q", l2, l2i * width, (1 << 62) | (nsect << x) | off)
    data[3 * cs:4 * cs] = l2
    l1 = bytearray(b"\0" * cs)
    struct.pack_into(">Q", l1, l1_index * 8, (1 << 63) | 3 * cs)
    data[2 * cs:3 * cs] = l1
    snap_at = (len(data) + 7) // 8 * 8
    data += b"\0" * (snap_at - len(data))
    if snaps is None:
        snaps = [("1", "snap-a", 1700000000)]
    for sid, sname, date in snaps:
        extra = struct.pack(">QQ", len(vmstate), disk)
        e = struct.pack(">QIHHIIQII", 2 * cs, l1_size, len(sid), len(sname), date, 0,
                        13 * 10**9, len(vmstate), len(extra))
        e += extra + sid.encode() + sname.encode()
        e += b"\0" * ((-len(e)) % 8)
        data += e
    inc = incompat | (8 if compression else 0) | (16 if extl2 else 0)
    hdr = struct.pack(">4sIQIIQIIQQIIQ", b"QFI\xfb", version, 0, 0, cluster_bits, disk, crypt,
                      l1_size, cs, 0, 0, len(snaps), snap_at)
    if version >= 3:
        hdr += struct.pack(">QQQII", inc, 0, 0, 4, 112) + bytes([compression]) + b"\0" * 7
    hdr += b"\0" * 8  # end of header extensions
    data[0:len(hdr)] = hdr
    return bytes(data), facts


def savefile_cases():
    # tests/tests/migration_stream.rs checks that the good files convert to these pages
    st = qevm_stream()
    # multifd without mapped-ram: the main channel carries MULTIFD_FLUSH, the pages went
    # to other channels
    flush = st.replace(struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2) + b"\x02",
                       struct.pack(">Q", 0x200) + struct.pack(">Q", 0x10) + b"\x7e"
                       + struct.pack(">I", 2) + b"\x02", 1)
    assert flush != st
    # cut after the flush record: the error comes before the rest is read
    cut = flush.index(struct.pack(">Q", 0x200)) + 16
    case("qevm-multifd.migstream", flush[:cut], "convert", 1, ["multifd", "0x"])
    mr = mapped_ram_file()
    case("mapped-ram-good.mapped-ram", mr, "convert", 0, [], "--format raw")
    case("mapped-ram-bitmap-past-eof.mapped-ram", mapped_ram_file(bitmap_at=1 << 40),
         "convert", 1, ["bitmap_offset", "pc.ram", "0x"])
    case("mapped-ram-pages-past-eof.mapped-ram", mapped_ram_file(pages_at=1 << 30),
         "convert", 1, ["pages_offset", "pc.ram", "0x"])
    case("mapped-ram-truncated.mapped-ram", mr[:0x200], "convert", 1,
         ["pages_offset", "truncated"])
    case("mapped-ram-version.mapped-ram", mapped_ram_file(version=2), "convert", 1,
         ["version 2", "pc.ram"])
    case("mapped-ram-page-record.mapped-ram", mapped_ram_file(extra_page_record=True),
         "convert", 1, ["page record in a mapped-ram file"])
    # qcow2 with a savevm snapshot whose VM state is the good stream
    good, facts = qcow2_image(st)
    assert facts["compressed"] and facts["zero"] and facts["plain"], facts
    case("qcow2-good.qcow2", good, "convert", 0, [], "--format raw")
    case("qcow2-zstd.qcow2", qcow2_image(st, compression=1)[0], "convert", 0, [],
         "--format raw")
    case("qcow2-v2.qcow2", qcow2_image(st, version=2)[0], "convert", 0, [], "--format raw")
    two, _ = qcow2_image(st, snaps=[("1", "older", 1700000000), ("2", "newer", 1700000100)])
    case("qcow2-two-snapshots.qcow2", two, "info", 0, ["snapshot: 2 \"newer\""])
    case("qcow2-two-snapshots.qcow2", None, "info", 0, ["snapshot: 1 \"older\""],
         "--snapshot older")
    case("qcow2-two-snapshots.qcow2", None, "convert", 2, ["nope", "\"older\"", "\"newer\""],
         "--snapshot nope")
    # truncated: the file ends inside the VM state's clusters
    case("qcow2-truncated.qcow2", good[:5 * 512 + 100], "convert", 1, ["snapshots_offset"])
    # an L2 entry pointing past the end of the file
    bad = bytearray(good)
    l2i = (32 * 1024 // 512) % 64  # first VM state cluster's L2 index
    struct.pack_into(">Q", bad, 3 * 512 + l2i * 8, (1 << 63) | (1 << 40))
    case("qcow2-l2-past-eof.qcow2", bytes(bad), "convert", 1,
         ["L2 entry 0", "0x10000000000", "past the end"])
    # the snapshot table lies: nb_snapshots 1000, entries past the end of the file
    bad = bytearray(good)
    struct.pack_into(">I", bad, 60, 1000)
    case("qcow2-snapshot-count.qcow2", bytes(bad), "convert", 1, ["snapshot table entry"])
    # the snapshot's L1 table is too short for its VM state
    snap_at = struct.unpack_from(">Q", good, 64)[0]
    bad = bytearray(good)
    struct.pack_into(">I", bad, snap_at + 8, 1)
    case("qcow2-l1-short.qcow2", bytes(bad), "convert", 1, ["L1 table has 1 entries", "l1_size"])
    bad = bytearray(good)
    struct.pack_into(">Q", bad, snap_at, 1 << 40)
    case("qcow2-l1-past-eof.qcow2", bytes(bad), "convert", 1, ["l1_table_offset"])
    case("qcow2-data-file.qcow2", qcow2_image(st, incompat=4)[0], "convert", 1,
         ["incompatible_features", "external data file"])
    case("qcow2-encrypted.qcow2", qcow2_image(st, crypt=2)[0], "convert", 1,
         ["crypt_method", "encrypted"])
    case("qcow2-no-snapshot.qcow2", qcow2_image(st, snaps=[])[0], "convert", 1,
         ["no snapshots", "nb_snapshots"])
    # a compressed cluster whose data is garbage
    bad = bytearray(good)
    for i in range(64):
        e = struct.unpack_from(">Q", bad, 3 * 512 + i * 8)[0]
        if e & (1 << 62):
            off = e & ((1 << 61) - 1)
            bad[off:off + 16] = b"\xff" * 16
            break
    case("qcow2-bad-compressed.qcow2", bytes(bad), "convert", 1,
         ["compressed cluster", "does not decompress"])


def paging_cases():
    # x86-64 tables that point at themselves at every level (issue #17: abort after
    # 3 s; the walk now gives up at its bounds), for three CPUs sharing the root (one
    # walk budget, not three).
    pml4 = struct.pack("<Q", 0x3) * 512
    regs = ('{"cr0": "0x80000011", "cr3": "0x0", "cr4": "0x20", "efer": "0x500"}')
    cpus = ",".join('{"arch": "x86_64", "regs": %s}' % regs for _ in range(3))
    write("paging-self-ref.json", ('{"cpus": [%s]}' % cpus).encode())
    case("paging-self-ref.raw", pml4 + b"\0" * 4096 * 3, "paging", 1,
         ["cpu 0", "gave up"], "--cpu-state {dir}/paging-self-ref.json")
    case("paging-self-ref.raw", None, "info", 0, ["gave up"],
         "--paging --cpu-state {dir}/paging-self-ref.json")
    # A root outside RAM: the walk has nothing to read.
    write("paging-root-outside.json",
          b'[{"arch": "x86_64", "regs": {"cr0": "0x80000011", "cr3": "0x7000000", '
          b'"cr4": "0x20", "efer": "0x500"}}]')
    case("paging-self-ref.raw", None, "paging", 1,
         ["not in the dump's RAM", "0x7000000"],
         "--cpu-state {dir}/paging-root-outside.json")


# ---------------------------------------------------------------- QEMU migration stream


def qevm_start(machine=b"pc-i440fx-7.2", block=b"pc.ram"):
    """A stream up to its first device section: "QEVM", version 3, CONFIGURATION, a ram
    section (START, MEM_SIZE of one 4 KiB block, one zero page, EOS, footer)."""
    name = bytes([len(block)]) + block
    s = b"QEVM" + struct.pack(">I", 3)
    s += b"\x07" + struct.pack(">I", len(machine)) + machine
    s += b"\x01" + struct.pack(">I", 2) + b"\x03ram" + struct.pack(">II", 0, 4)
    s += struct.pack(">Q", 0x1000 | 0x04) + name + struct.pack(">Q", 0x1000)
    s += struct.pack(">Q", 0x02) + name + b"\x00"
    s += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", 2)
    return s


def qevm_end(devices):
    """EOF, then the VMDESCRIPTION (0x06, u32 length, JSON) describing `devices`."""
    j = json.dumps({"page_size": 4096, "devices": devices}, separators=(",", ":"))
    return b"\x00\x06" + struct.pack(">I", len(j)) + j.encode()


def migration_cases():
    # Fuzzing finding (by reading the migration target's code): device sections are
    # walked through the VMDESCRIPTION, whose fields of size 0 take no bytes; 500
    # sections each described as 2^24 such elements (51 KB) took minutes. Now at most
    # 2^18 of them in the whole stream.
    s = qevm_start()
    first = None
    devs = []
    for i in range(40):
        s += b"\x04" + struct.pack(">I", 3 + i) + b"\x01d" + struct.pack(">II", 0, 1)
        if first is None:
            first = len(s)
        s += b"\x7e" + struct.pack(">I", 3 + i)
        devs.append({"name": "d", "instance_id": 0,
                     "fields": [{"name": "x", "type": "buffer", "size": 0,
                                 "array_len": 1 << 24}]})
    case("mig-vmdesc-empty-elements.qevm", s + qevm_end(devs), "info", 1,
         ["VMDESCRIPTION", "take no bytes", "field x", "%#x" % first])
    # Fuzzing finding (migration target, timeout): an arm64 vCPU's system registers
    # are `cpreg_vmstate_array_len` pairs of fields; the count (up to 2^32) was walked
    # with a search of every field per element. The stream opens; the vCPU lacks them.
    s = qevm_start(b"virt-7.2", b"mach-virt.ram")
    s += b"\x04" + struct.pack(">I", 3) + b"\x03cpu" + struct.pack(">II", 0, 22)
    s += b"\xff\xff\xff\xff" + b"\x7e" + struct.pack(">I", 3)
    devs = [{"name": "cpu", "instance_id": 0,
             "fields": [{"name": "cpreg_vmstate_array_len", "type": "int32 le", "size": 4}]}]
    case("mig-arm64-cpreg-count-2p32.qevm", s + qevm_end(devs), "info", 0,
         ["cpu 0: not in its cpu section", "sctlr_el1"])


def main():
    os.makedirs(FILES, exist_ok=True)
    for f in os.listdir(FILES):
        os.remove(os.path.join(FILES, f))
    with tempfile.TemporaryDirectory() as tmp:
        elf_cases()
        lime_cases()
        avml_cases(tmp)
        kdump_cases(tmp)
        wrapper_cases(tmp)
        misc_cases()
        savefile_cases()
        paging_cases()
        migration_cases()
    with open(os.path.join(OUT, "EXPECTED.tsv"), "w") as f:
        f.write("# file\tcommand\targs\texit\twords (generated by gen.py; edit there)\n")
        for c in CASES:
            f.write("%s\t%s\t%s\t%d\t%s\n" % c)
    total = sum(os.path.getsize(os.path.join(FILES, n)) for n in os.listdir(FILES))
    print("%d cases, %d files, %d bytes" % (len(CASES), len(os.listdir(FILES)), total))


main()
