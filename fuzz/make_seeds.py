#!/usr/bin/env python3
"""Seeds for the `migration` and `ramscan_roots` fuzz targets.

`migration`: small QEMU migration streams and libvirt save
files cut from the real savefiles (tests/real-guests: ~/.cache/dumpconv/savefiles/
GUEST/vm.migstream, written by QEMU's `migrate "exec:cat > FILE"`).

A real stream is 60-80 MB (all of the guest's RAM) and its VMDESCRIPTION 17-108 KB,
too large for a fuzzer. Each seed keeps the real stream's CONFIGURATION section, its
RAM block names, the real bytes of a few device sections (the vCPUs', `vmcoreinfo`)
with their own VMDESCRIPTION entries, and a RAM block of 16 pages (the real stream's
own first pages where it sent them, zero-page records for the rest). The libvirt seeds
wrap a stream in a libvirt save header (version 2, either byte order; uncompressed,
gzip, xz and zstd) with a small domain XML.

`ramscan_roots`: three pages of the same guests' RAM (ram.raw, written by QEMU's
`pmemsave`): the VMCOREINFO note the kernel exports, its `vmcoreinfo_data` text, and
the page holding the "Linux version " banner, behind the target's 16-byte header; and
the `walk` seeds' RAM (the bundled sample's page tables) behind that header.

`page_filter`: the `vmcoreinfo` seeds' real VMCOREINFO texts, each followed by the
target's header (256 RAM pages; 4-byte pointers for i386) and 16 KiB of kernel memory
(zeros, and a copy of the same guest's VMCOREINFO note page from `ramscan_roots`).

    python3 fuzz/make_seeds.py   (writes fuzz/seeds/{migration,ramscan_roots,page_filter})
"""
import gzip
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys

CACHE = os.path.expanduser(os.environ.get("DUMPCONV_SAVEFILES", "~/.cache/dumpconv/savefiles"))
PAGE = 4096
PAGES = 16
NOTE_AT = 8
RAM_BASE = {"x86_64-pc": 0, "arm64-virt": 0x4000_0000}
KEEP = {"timer", "cpu_common", "cpu", "apic", "vmcoreinfo", "globalstate"}


def be32(d, p):
    return struct.unpack(">I", d[p : p + 4])[0]


def be64(d, p):
    return struct.unpack(">Q", d[p : p + 8])[0]


def parse(d, extra=None):
    """(config bytes, ram section id, [(block, len)], {page index: bytes} of the first
    block, [(name, instance, bytes)] of device sections, vmdesc dict)."""
    assert d[:4] == b"QEVM"
    p = 8
    names = {}
    blocks = []
    pages = {}
    devices = []
    config = b""
    ram_id = None
    cur = None  # block of the previous page record (CONTINUE spans sections)
    while True:
        at = p
        ty = d[p]
        p += 1
        if ty == 0:
            break
        if ty == 7:  # CONFIGURATION and its subsections
            p += 4 + be32(d, p)
            while d[p] == 5:
                n = d[p + 1]
                name = d[p + 2 : p + 2 + n]
                p += 2 + n + 4
                if name.endswith(b"target-page-bits"):
                    p += 4
                elif name.endswith(b"capabilities"):
                    c = be32(d, p)
                    p += 4
                    for _ in range(c):
                        p += 1 + d[p]
                elif name.endswith(b"uuid"):
                    p += 16
            config = d[at:p]
            continue
        sid = be32(d, p)
        p += 4
        inst = None
        if ty in (1, 4):
            n = d[p]
            names[sid] = d[p + 1 : p + 1 + n].decode()
            p += 1 + n
            inst = be32(d, p)
            p += 8
        name = names[sid]
        if name == "ram":
            ram_id = sid
            while True:
                w = be64(d, p)
                p += 8
                fl, addr = w & 0xFFF, w & ~0xFFF
                if fl & 0x04:
                    s = 0
                    while s < addr:
                        n = d[p]
                        bname = d[p + 1 : p + 1 + n].decode()
                        p += 1 + n
                        ln = be64(d, p)
                        p += 8
                        s += ln
                        blocks.append((bname, ln))
                if fl & 0x0A:
                    if not fl & 0x20:
                        n = d[p]
                        cur = d[p + 1 : p + 1 + n].decode()
                        p += 1 + n
                    if fl & 0x02:
                        p += 1
                    else:
                        if cur == blocks[0][0] and addr // PAGE < PAGES:
                            pages[addr // PAGE] = d[p : p + PAGE]
                        if cur == blocks[0][0] and extra and addr in extra:
                            pages[extra[addr]] = d[p : p + PAGE]
                        p += PAGE
                if fl & 0x10:
                    break
            if d[p] == 0x7E:
                p += 5
            continue
        # A device section: it ends at its footer (0x7e, its id), followed by the next
        # section's type.
        q = p
        while True:
            q = d.index(b"\x7e" + struct.pack(">I", sid), q)
            if d[q + 5] in (0, 2, 3, 4):
                break
            q += 1
        p = q + 5
        devices.append((name, inst, d[at:p]))
    assert d[p] == 6
    desc = json.loads(d[p + 5 :])
    return config, ram_id, blocks, pages, devices, desc


def stream(config, ram_id, blocks, pages, devices, desc, with_desc=True):
    out = bytearray(b"QEVM" + struct.pack(">I", 3) + config)
    main = blocks[0][0]
    small = [(main, PAGES * PAGE)] + [(n, PAGE) for n, _ in blocks[1:]]
    total = sum(ln for _, ln in small)
    out += b"\x01" + struct.pack(">I", ram_id) + b"\x03ram" + struct.pack(">II", 0, 4)
    out += struct.pack(">Q", total | 0x04)
    for n, ln in small:
        out += bytes([len(n)]) + n.encode() + struct.pack(">Q", ln)
    out += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", ram_id)
    out += b"\x02" + struct.pack(">I", ram_id)
    first = True
    for i in range(PAGES):
        cont = 0 if first else 0x20
        if i in pages and any(pages[i]):
            out += struct.pack(">Q", i * PAGE | 0x08 | cont)
            if first:
                out += bytes([len(main)]) + main.encode()
            out += pages[i]
        else:
            out += struct.pack(">Q", i * PAGE | 0x02 | cont)
            if first:
                out += bytes([len(main)]) + main.encode()
            out += b"\x00"
        first = False
    out += struct.pack(">Q", 0x10) + b"\x7e" + struct.pack(">I", ram_id)
    out += b"\x03" + struct.pack(">I", ram_id) + struct.pack(">Q", 0x10)
    out += b"\x7e" + struct.pack(">I", ram_id)
    kept = [(n, i, b) for n, i, b in devices if n in KEEP]
    for _, _, b in kept:
        out += b
    out += b"\x00"
    if with_desc:
        want = [(n, i) for n, i, _ in kept]
        devs = []
        for dev in desc["devices"]:
            key = (dev.get("name"), dev.get("instance_id"))
            if key in want:
                devs.append(dev)
        j = json.dumps({"page_size": desc.get("page_size", PAGE), "devices": devs},
                       separators=(",", ":")).encode()
        out += b"\x06" + struct.pack(">I", len(j)) + j
    return bytes(out)


def libvirt(payload, compression=0, big=False, magic=b"LibvirtQemudSave"):
    xml = b"<domain type='kvm'>\n  <name>seed</name>\n  <memory unit='KiB'>64</memory>\n</domain>\n\0"
    cookie = b"<qemu-migration/>\n\0"
    data = xml + cookie
    data += b"\0" * (-len(data) % 8)
    e = ">" if big else "<"
    hdr = magic + struct.pack(e + "5I", 2, len(data), 1, compression, len(xml))
    hdr += b"\0" * (92 - len(hdr))
    return hdr + data + payload


def page_of(m, needle, start=0):
    i = m.find(needle, start)
    return None if i < 0 else i // PAGE * PAGE


def ramscan_seeds(seeds):
    """Seeds of the ramscan_roots target: (name, bytes)."""
    import mmap

    made = {}
    for guest, sel, release in (("x86_64-pc", 1, b"amd64"), ("arm64-virt", 3, b"arm64")):
        src = os.path.join(CACHE, guest, "ram.raw")
        if not os.path.exists(src):
            print(f"skipping {guest}: no {src}", file=sys.stderr)
            continue
        with open(src, "rb") as f:
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            note = None
            i = m.find(b"VMCOREINFO\0\0OSRELEASE=")
            if i >= 12:
                note = (i - 12) // PAGE * PAGE
            text = None
            i = 0
            while True:
                i = m.find(b"OSRELEASE=", i)
                if i < 0:
                    break
                if i % PAGE == 0 and release in m[i : i + 64]:
                    text = i
                    break
                i += 1
            banner = page_of(m, b"Linux version ")
            if None in (note, text, banner):
                print(f"skipping {guest}: no note, text or banner in RAM", file=sys.stderr)
                continue
            ram = b"".join(m[p : p + PAGE] for p in (note, text, banner))
            m.close()
        # selector, read block 4 KiB, no hole, RAM at the note's address
        hdr = bytes([sel, 0, 0, 0, 0, 0, 0, 0]) + struct.pack("<Q", note)
        made[f"{guest}-vmcoreinfo"] = hdr + ram
        # no architecture given, 16 KiB blocks, a 1 MiB hole after the note page
        hdr = bytes([0, 2, 1, 1, 0, 0, 0, 0]) + struct.pack("<Q", note)
        made[f"{guest}-vmcoreinfo-hole"] = hdr + ram
    walk = os.path.join(seeds, "walk")
    for name in ("x86_64-4level", "aarch64-4k-48"):
        p = os.path.join(walk, name)
        if os.path.exists(p):
            with open(p, "rb") as f:
                w = f.read()
            sel = 3 if name.startswith("aarch64") else 1
            made[f"walk-{name}"] = bytes([sel, 1, 0, 0, 0, 0, 0, 0]) + w[48:56] + w[64:]
    return made


def main():
    seeds = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    out_dir = os.path.join(seeds, "migration")
    os.makedirs(out_dir, exist_ok=True)
    made = {}
    for guest in ("x86_64-pc", "arm64-virt"):
        src = os.path.join(CACHE, guest, "vm.migstream")
        if not os.path.exists(src):
            print(f"skipping {guest}: no {src}", file=sys.stderr)
            continue
        with open(src, "rb") as f:
            d = f.read()
        parts = parse(d)
        # The vmcoreinfo device's note address (the u64 before its footer) moved to
        # page NOTE_AT of the small RAM block, and the note's two pages put there.
        base = RAM_BASE[guest]
        for k, (name, inst, b) in enumerate(parts[4]):
            if name == "vmcoreinfo":
                paddr = be64(b, len(b) - 13)
                off = paddr - base
                parts = parse(d, {off: NOTE_AT, off + PAGE: NOTE_AT + 1})
                b = b[:-13] + struct.pack(">Q", base + NOTE_AT * PAGE) + b[-5:]
                parts[4][k] = (name, inst, b)
        made[f"{guest}.qevm"] = stream(*parts)
        made[f"{guest}-nodesc.qevm"] = stream(*parts, with_desc=False)
    base = made.get("x86_64-pc.qevm")
    if base is not None:
        made["libvirt-x86_64-pc.sav"] = libvirt(base)
        made["libvirt-be-x86_64-pc.sav"] = libvirt(base, big=True)
        made["libvirt-gzip-x86_64-pc.sav"] = libvirt(gzip.compress(base, 9, mtime=0), 1)
        made["libvirt-xz-x86_64-pc.sav"] = libvirt(lzma.compress(base, preset=6), 3)
        if shutil.which("zstd"):
            z = subprocess.run(["zstd", "-q", "-19", "-c"], input=base, stdout=subprocess.PIPE, check=True).stdout
            made["libvirt-zstd-x86_64-pc.sav"] = libvirt(z, 5)
        made["libvirt-part-x86_64-pc.sav"] = libvirt(base[:4096], magic=b"LibvirtQemudPart")
    for name, b in sorted(made.items()):
        assert len(b) < 64 << 10, (name, len(b))
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(b)
        print(f"migration/{name}: {len(b)} bytes")
    out_dir = os.path.join(seeds, "ramscan_roots")
    os.makedirs(out_dir, exist_ok=True)
    for name, b in sorted(ramscan_seeds(seeds).items()):
        assert len(b) <= 65600, (name, len(b))
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(b)
        print(f"ramscan_roots/{name}: {len(b)} bytes")
    out_dir = os.path.join(seeds, "page_filter")
    os.makedirs(out_dir, exist_ok=True)
    vdir = os.path.join(seeds, "vmcoreinfo")
    for txt in sorted(os.listdir(vdir)):
        with open(os.path.join(vdir, txt), "rb") as f:
            text = f.read()
        ptr4 = 1 if txt.startswith("i386") else 0
        hdr = struct.pack("<IHBBBB", 0, 255, 0, 0, ptr4, 0) + bytes(6)
        for kind, kmem in (("zero", bytes(16384)), ("ff", b"\xff" * 16384)):
            name = f"{txt.rsplit('.', 1)[0]}-{kind}"
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(text + b"\0" + hdr + kmem)
            print(f"page_filter/{name}: {len(text) + 17 + len(kmem)} bytes")


if __name__ == "__main__":
    main()
