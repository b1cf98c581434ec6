#!/usr/bin/env python3
"""Which page frames a kdump-compressed file leaves out, read from its bitmaps.

    kdump_excluded.py [--ram] [--zero] KDUMP

An independent reader for the page-filtering oracles (issue 13): Python standard library
only, written from the kdump format description (docs/formats.md), sharing nothing with
dumpconv's Rust reader. Prints, one item a line:

    dump_level N            the sub-header's dump_level (makedumpfile's -d)
    block_size N            bytes per page
    max_mapnr 0xN           page frames the bitmaps cover
    layout 64|32            which header layout the file uses
    flattened yes|no        whether it is makedumpfile's flattened (streaming) form
    0xSTART 0xEND           excluded page frames [START, END): RAM in the first bitmap,
                            not dumped in the second; sorted, merged, half-open
    zero 0xSTART 0xEND      (--zero) dumped frames whose descriptor points at a block of
                            zeros shared by more than one descriptor: makedumpfile's way of
                            storing zero pages in a kdump file (-d with bit 1) and QEMU's
    ram 0xSTART 0xEND       (--ram) the first bitmap: frames that are RAM

File layout (all little endian on x86): block 0 holds the main header, "KDUMP   " then
header_version (i32), utsname (6 x 65 bytes), a struct timeval, then status, block_size,
sub_hdr_size, bitmap_blocks, max_mapnr (32-bit copy), ... The timeval is 16 bytes after
4 bytes of padding on 64-bit kernels (status at 424) and 8 bytes on 32-bit ones (status at
412). The sub-header starts at block 1: phys_base (a long), dump_level (i32), ..., and for
header_version >= 6 max_mapnr_64 at 96 (64-bit) / 72 (32-bit). The two bitmaps follow the
sub-header blocks, bitmap_blocks/2 blocks each, bit n of byte n>>3 (LSB first) for frame n.
Then one 24-byte descriptor {offset i64, size u32, flags u32, page_flags u64} per frame set
in the second bitmap, in frame order.

The flattened form (a 4096-byte header "makedumpfile\\0..." then big-endian {offset i64,
size i64} records each followed by its data) is read by indexing the records and reading
the file as the records place it.

Exit status: 0, or 1 with a message naming the file and field for anything it cannot read.
"""

import struct
import sys

FLAT_SIG = b"makedumpfile\0\0\0\0"
FLAT_HEADER = 4096


class Bad(Exception):
    pass


class Plain:
    """A seekable kdump file."""

    def __init__(self, f):
        self.f = f

    def read(self, off, n):
        self.f.seek(off)
        b = self.f.read(n)
        if len(b) != n:
            raise Bad(f"offset {off:#x}: file ends after {len(b)} of {n} bytes")
        return b


class Flattened:
    """A flattened kdump: records (offset, size, data) placed in a virtual file."""

    def __init__(self, f, name):
        self.f = f
        self.records = []  # (virtual offset, size, position of the data in the file)
        f.seek(0, 2)
        end = f.tell()
        pos = FLAT_HEADER
        while True:
            f.seek(pos)
            h = f.read(16)
            if len(h) < 16:
                raise Bad(f"{name}: flattened record header at {pos:#x} is cut short")
            off, size = struct.unpack(">qq", h)
            if off == -1 and size == -1:  # end marker
                break
            if off < 0 or size < 0 or pos + 16 + size > end:
                raise Bad(f"{name}: flattened record at {pos:#x}: offset {off:#x} size {size:#x}")
            self.records.append((off, size, pos + 16))
            pos += 16 + size
        # A later record overwrites an earlier one: read() applies them in order.
        self.end = max((o + s for o, s, _ in self.records), default=0)

    def read(self, off, n):
        # Bytes no record writes are zeros, as in the file `makedumpfile -R` makes
        # (e.g. the rest of the header block); past the last record is an error.
        end = self.end
        if off + n > end:
            raise Bad(f"virtual offset {off:#x}+{n:#x}: past the end of the flattened "
                      f"records ({end:#x})")
        buf = bytearray(n)
        for roff, rsize, rpos in self.records:
            lo, hi = max(off, roff), min(off + n, roff + rsize)
            if lo < hi:
                self.f.seek(rpos + lo - roff)
                buf[lo - off:hi - off] = self.f.read(hi - lo)
        return bytes(buf)


def pow2(n):
    return n > 0 and n & (n - 1) == 0


def parse_header(rd, name):
    b = rd.read(0, 512)
    if b[:8] != b"KDUMP   ":
        raise Bad(f"{name}: offset 0: signature {b[:8]!r} is not 'KDUMP   '")
    (hv,) = struct.unpack_from("<i", b, 8)
    machine = b[12 + 4 * 65:12 + 5 * 65].split(b"\0")[0].decode("ascii", "replace")
    # Try the layout the machine suggests first, then the other one.
    order = [32, 64] if machine in ("i386", "i486", "i586", "i686", "x86") else [64, 32]
    for layout in order:
        st = 424 if layout == 64 else 412
        status, bs, sub, bmb, mapnr32 = struct.unpack_from("<IiiII", b, st)
        if pow2(bs) and 1024 <= bs <= 1 << 20 and sub >= 1 and bmb >= 2 and bmb % 2 == 0:
            break
    else:
        raise Bad(f"{name}: offset 412/424: no plausible block_size/sub_hdr_size/bitmap_blocks "
                  f"for either header layout")
    s = rd.read(bs, 104)
    if layout == 64:
        (dump_level,) = struct.unpack_from("<i", s, 8)
        mapnr = struct.unpack_from("<Q", s, 96)[0] if hv >= 6 else mapnr32
    else:
        (dump_level,) = struct.unpack_from("<i", s, 4)
        mapnr = struct.unpack_from("<Q", s, 72)[0] if hv >= 6 else mapnr32
    if hv < 1:
        dump_level = 0
    bitmap_bytes = bmb // 2 * bs
    if mapnr > bitmap_bytes * 8:
        raise Bad(f"{name}: max_mapnr {mapnr:#x} is more than the bitmaps hold "
                  f"(bitmap_blocks {bmb} of {bs} bytes)")
    return dict(hv=hv, layout=layout, bs=bs, sub=sub, bmb=bmb, mapnr=mapnr,
                dump_level=dump_level, status=status, machine=machine)


def bits(bitmap, nbits):
    """Yield (start, end) runs of set bits in the first nbits bits (LSB first)."""
    start = None
    for i, byte in enumerate(bitmap):
        if byte == 0xFF:
            if start is None:
                start = i * 8
            continue
        if byte == 0:
            if start is not None:
                yield start, i * 8
                start = None
            continue
        for k in range(8):
            p = i * 8 + k
            if byte >> k & 1:
                if start is None:
                    start = p
            elif start is not None:
                yield start, p
                start = None
    if start is not None:
        yield start, len(bitmap) * 8
    # (callers pass exactly ceil(nbits/8) bytes; bits past nbits are clipped below)


def clip(rs, nbits):
    return [(a, min(b, nbits)) for a, b in rs if a < nbits]


def runs(frames):
    """Merge sorted frame numbers into half-open runs."""
    out = []
    for p in frames:
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return out


def main(argv):
    want_ram = "--ram" in argv
    want_zero = "--zero" in argv
    args = [a for a in argv if a not in ("--ram", "--zero")]
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    name = args[0]
    try:
        f = open(name, "rb")
    except OSError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    with f:
        try:
            head = f.read(16)
            flattened = head == FLAT_SIG
            rd = Flattened(f, name) if flattened else Plain(f)
            h = parse_header(rd, name)
            bs = h["bs"]
            base = (1 + h["sub"]) * bs
            nbytes = (h["mapnr"] + 7) // 8
            half = h["bmb"] // 2 * bs
            bm1 = rd.read(base, nbytes)
            bm2 = rd.read(base + half, nbytes)
            ram = clip(bits(bm1, h["mapnr"]), h["mapnr"])
            i1 = int.from_bytes(bm1, "little")
            i2 = int.from_bytes(bm2, "little")
            if i2 & ~i1:
                first = ((i2 & ~i1) & -(i2 & ~i1)).bit_length() - 1
                raise Bad(f"{name}: second bitmap has frame {first:#x} that the first "
                          f"bitmap does not call RAM")
            excluded = clip(bits((i1 & ~i2).to_bytes(nbytes, "little"), h["mapnr"]), h["mapnr"])
            zero = []
            if want_zero:
                dumped = [p for a, b in clip(bits(bm2, h["mapnr"]), h["mapnr"]) for p in range(a, b)]
                dbase = base + h["bmb"] * bs
                desc = rd.read(dbase, 24 * len(dumped)) if dumped else b""
                count = {}
                offs = []
                for off, size, flags, _pf in struct.iter_unpack("<qIIQ", desc):
                    shared = flags == 0 and size == bs
                    offs.append(off if shared else None)
                    if shared:
                        count[off] = count.get(off, 0) + 1
                shared = {o for o, c in count.items() if c > 1}
                for o in shared:
                    if rd.read(o, bs) != bytes(bs):
                        raise Bad(f"{name}: offset {o:#x}: a page block shared by "
                                  f"{count[o]} descriptors is not all zeros")
                zero = runs(p for p, o in zip(dumped, offs) if o in shared)
        except Bad as e:
            print(str(e), file=sys.stderr)
            return 1
        except OSError as e:
            print(f"{name}: {e}", file=sys.stderr)
            return 1
    out = sys.stdout
    out.write(f"dump_level {h['dump_level']}\n")
    out.write(f"block_size {bs}\n")
    out.write(f"max_mapnr {h['mapnr']:#x}\n")
    out.write(f"layout {h['layout']}\n")
    out.write(f"flattened {'yes' if flattened else 'no'}\n")
    for a, b in excluded:
        out.write(f"{a:#x} {b:#x}\n")
    for a, b in zero:
        out.write(f"zero {a:#x} {b:#x}\n")
    if want_ram:
        for a, b in ram:
            out.write(f"ram {a:#x} {b:#x}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
