#!/usr/bin/env python3
"""Boot the tiny guest under QEMU, wait for its banner, dump it, check the dump.

  capture.py --qemu-args '...' --workdir DIR --ram-size BYTES --banner-va ADDR --pml4-pa ADDR

Python 3 stdlib only. Called by ../build-sample.sh, which documents the outputs.
Writes into DIR: serial.txt, dump.elf (paging=false), paging.elf (paging=true),
ram.raw (pmemsave of RAM), registers.txt, info-mem.txt, info-tlb.txt, mtree.txt,
check.txt (what was checked; also printed).
"""
import argparse
import hashlib
import json
import os
import shlex
import socket
import struct
import subprocess
import sys
import time

BANNER = b"dumpconv sample guest: 4-level paging OK\n"


class Fail(Exception):
    pass


class QMP:
    def __init__(self, path, proc, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise Fail(f"QEMU exited with {proc.returncode} before QMP was up")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise Fail(f"no QMP socket at {path} after {timeout}s")
                time.sleep(0.05)
        self.sock = s
        self.sock.settimeout(timeout)
        self.f = s.makefile("rwb")
        self.n = 0
        greeting = json.loads(self.f.readline())
        if "QMP" not in greeting:
            raise Fail(f"unexpected QMP greeting {greeting}")
        self.cmd("qmp_capabilities")

    def cmd(self, name, timeout=120, **args):
        self.n += 1
        msg = {"execute": name, "id": self.n}
        if args:
            msg["arguments"] = args
        self.sock.settimeout(timeout)
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise Fail(f"QMP closed during {name}")
            r = json.loads(line)
            if "event" in r or r.get("id") != self.n:
                continue
            if "error" in r:
                raise Fail(f"QMP {name} {args}: {r['error']}")
            return r.get("return")

    def hmp(self, line, cpu=None):
        args = {"command-line": line}
        if cpu is not None:
            args["cpu-index"] = cpu
        return self.cmd("human-monitor-command", **args)


# ---------------------------------------------------------------------------------------
# ELF core reading (just enough for the checks)
def read_core(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise Fail(f"{path}: not an ELF64 LE file")
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    if e_phnum == 0xffff:
        raise Fail(f"{path}: PN_XNUM not handled here")
    phdrs, notes = [], []
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = \
            struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        phdrs.append(dict(type=p_type, offset=p_offset, vaddr=p_vaddr, paddr=p_paddr,
                          filesz=p_filesz, memsz=p_memsz))
        if p_type == 4:  # PT_NOTE
            off, end = p_offset, p_offset + p_filesz
            while off + 12 <= end:
                namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                off += 12
                name = data[off:off + namesz].rstrip(b"\0").decode()
                off += (namesz + 3) & ~3
                desc = data[off:off + descsz]
                off += (descsz + 3) & ~3
                notes.append((name, ntype, desc))
    return data, phdrs, notes


def qemu_cpu_state(desc):
    """QEMUCPUState (target/i386/arch_dump.c): version, size, 16 GPRs, rip, rflags,
    10 segments of 24 bytes (cs ds es fs gs ss ldt tr gdt idt), cr[5], kernel_gs_base."""
    version, size = struct.unpack_from("<II", desc, 0)
    regs = struct.unpack_from("<18Q", desc, 8)
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
             "r11", "r12", "r13", "r14", "r15", "rip", "rflags"]
    st = dict(zip(names, regs))
    st["version"], st["size"] = version, size
    seg_names = ["cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt"]
    for i, n in enumerate(seg_names):
        sel, limit, flags, _pad, base = struct.unpack_from("<IIIIQ", desc, 8 + 18 * 8 + i * 24)
        st[n] = dict(selector=sel, limit=limit, flags=flags, base=base)
    cr_off = 8 + 18 * 8 + 10 * 24
    st["cr"] = list(struct.unpack_from("<5Q", desc, cr_off))
    if size >= cr_off + 5 * 8 + 8:
        st["kernel_gs_base"], = struct.unpack_from("<Q", desc, cr_off + 40)
    return st


def loads(phdrs):
    return [p for p in phdrs if p["type"] == 1]


def phys_read(data, phdrs, pa, n):
    for p in loads(phdrs):
        if p["paddr"] <= pa and pa + n <= p["paddr"] + p["filesz"]:
            o = p["offset"] + pa - p["paddr"]
            return data[o:o + n]
    return None


def virt_read(data, phdrs, va, n):
    for p in loads(phdrs):
        if p["vaddr"] <= va and va + n <= p["vaddr"] + p["filesz"]:
            o = p["offset"] + va - p["vaddr"]
            return data[o:o + n]
    return None


# ---------------------------------------------------------------------------------------
def capture(a):
    w = a.workdir
    os.makedirs(w, exist_ok=True)
    serial = os.path.join(w, "serial.txt")
    sock = os.path.join(w, "qmp.sock")
    for f in (serial, sock):
        if os.path.exists(f):
            os.unlink(f)
    argv = shlex.split(a.qemu_args) + ["-serial", "file:" + serial,
                                       "-qmp", f"unix:{sock},server=on,wait=off"]
    print("+ " + " ".join(shlex.quote(x) for x in argv), file=sys.stderr)
    log = open(os.path.join(w, "qemu.log"), "wb")
    # cwd: the kernel is named relative to it, since QEMU puts the -kernel path into the
    # multiboot command line, i.e. into guest RAM
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            cwd=a.cwd)
    try:
        qmp = QMP(sock, proc)
        deadline = time.monotonic() + a.boot_timeout
        while True:
            if proc.poll() is not None:
                raise Fail(f"QEMU exited ({proc.returncode}) before the banner; serial: "
                           + open(serial, "rb").read().decode(errors="replace"))
            if os.path.exists(serial) and BANNER in open(serial, "rb").read():
                break
            if time.monotonic() > deadline:
                raise Fail(f"no banner on serial after {a.boot_timeout}s")
            time.sleep(0.05)
        qmp.cmd("stop")
        st = qmp.cmd("query-status")
        if st["status"] != "paused":
            raise Fail(f"guest not paused after stop: {st}")

        def save(name, text):
            with open(os.path.join(w, name), "w") as f:
                f.write(text)

        save("registers.txt", qmp.hmp("info registers -a"))
        save("info-mem.txt", qmp.hmp("info mem", cpu=0))
        save("info-tlb.txt", qmp.hmp("info tlb", cpu=0))
        save("mtree.txt", qmp.hmp("info mtree -f"))
        for name, paging in (("dump.elf", False), ("paging.elf", True)):
            path = os.path.join(w, name)
            if os.path.exists(path):
                os.unlink(path)
            qmp.cmd("dump-guest-memory", paging=paging, protocol="file:" + path,
                    format="elf")
            st = qmp.cmd("query-dump")
            if st["status"] != "completed":
                raise Fail(f"dump {name}: {st}")
        # pmemsave of RAM, and of every other range QEMU put in dump.elf (the BIOS ROM)
        path = os.path.join(w, "ram.raw")
        qmp.cmd("pmemsave", val=0, size=a.ram_size, filename=path)
        _, phdrs, _ = read_core(os.path.join(w, "dump.elf"))
        for p in loads(phdrs):
            if p["paddr"] >= a.ram_size:
                qmp.cmd("pmemsave", val=p["paddr"], size=p["filesz"],
                        filename=os.path.join(w, f"pmem-{p['paddr']:08x}.raw"))
        qmp.cmd("quit")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def check(a):
    w = a.workdir
    out = []

    def say(s=""):
        out.append(s)
        print(s)

    ram = open(os.path.join(w, "ram.raw"), "rb").read()
    data, phdrs, notes = read_core(os.path.join(w, "dump.elf"))
    ld = loads(phdrs)
    say(f"dump.elf: {len(data)} bytes, {len(ld)} PT_LOAD, {len(notes)} notes: "
        + ", ".join(f"{n}/{t}" for n, t, _ in notes))
    # every PT_LOAD equals the same range of a pmemsave; RAM is [0, ram_size)
    h = hashlib.sha256()
    covered = 0
    for p in ld:
        if p["filesz"] != p["memsz"]:
            raise Fail(f"PT_LOAD with filesz != memsz: {p}")
        body = data[p["offset"]:p["offset"] + p["filesz"]]
        if p["paddr"] + p["filesz"] <= a.ram_size:
            ref, what = ram[p["paddr"]:p["paddr"] + p["filesz"]], "ram.raw"
            h.update(body)
            covered += p["filesz"]
        else:
            what = f"pmem-{p['paddr']:08x}.raw"
            ref = open(os.path.join(w, what), "rb").read()
        if body != ref:
            raise Fail(f"PT_LOAD paddr {p['paddr']:#x} differs from {what}")
        say(f"  PT_LOAD paddr {p['paddr']:#010x} size {p['filesz']:#x} vaddr {p['vaddr']:#x}"
            f" == {what}, sha256 {hashlib.sha256(body).hexdigest()}")
    if covered != a.ram_size:
        raise Fail(f"dump.elf holds {covered:#x} bytes of RAM, expected {a.ram_size:#x}")
    say(f"RAM in dump.elf: {covered:#x} bytes, sha256 {h.hexdigest()}")
    say(f"pmemsave ram.raw: {len(ram):#x} bytes, sha256 {hashlib.sha256(ram).hexdigest()}")

    banner_pa = a.banner_va - a.kernel_vma + a.kernel_phys
    got = phys_read(data, phdrs, banner_pa, len(BANNER) + 1)
    if got != BANNER + b"\0":
        raise Fail(f"banner not at phys {banner_pa:#x}: {got!r}")
    say(f"banner at phys {banner_pa:#x} (virt {a.banner_va:#x}) in dump.elf: OK")

    cpus = [qemu_cpu_state(d) for n, t, d in notes if n == "QEMU"]
    prstatus = [d for n, t, d in notes if n == "CORE" and t == 1]
    say(f"{len(prstatus)} NT_PRSTATUS, {len(cpus)} QEMU notes")
    for i, c in enumerate(cpus):
        say(f"  cpu {i}: rip {c['rip']:#x} cr0 {c['cr'][0]:#x} cr3 {c['cr'][3]:#x} "
            f"cr4 {c['cr'][4]:#x} gdt.base {c['gdt']['base']:#x} (QEMUCPUState v{c['version']}"
            f" size {c['size']})")
    if cpus[0]["cr"][3] != a.pml4_pa:
        raise Fail(f"cpu 0 CR3 {cpus[0]['cr'][3]:#x} != pml4 {a.pml4_pa:#x}")
    say(f"cpu 0 CR3 == pml4 phys {a.pml4_pa:#x}: OK")

    pdata, pph, _ = read_core(os.path.join(w, "paging.elf"))
    say(f"paging.elf: {len(pdata)} bytes, {len(loads(pph))} PT_LOAD")
    for p in loads(pph):
        say(f"  PT_LOAD vaddr {p['vaddr']:#018x} paddr {p['paddr']:#010x} "
            f"size {p['filesz']:#x}")
    got = virt_read(pdata, pph, a.banner_va, len(BANNER) + 1)
    say(f"banner at virt {a.banner_va:#x} in paging.elf: "
        + ("OK" if got == BANNER + b"\0" else f"MISSING ({got!r})"))
    with open(os.path.join(w, "check.txt"), "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qemu-args", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--ram-size", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--banner-va", type=lambda s: int(s, 16), required=True)
    ap.add_argument("--pml4-pa", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--kernel-vma", type=lambda s: int(s, 0), default=0xffffffff80000000)
    ap.add_argument("--kernel-phys", type=lambda s: int(s, 0), default=0x100000)
    ap.add_argument("--boot-timeout", type=float, default=60)
    ap.add_argument("--cwd", help="directory to run QEMU in")
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    try:
        if not a.check_only:
            capture(a)
        check(a)
    except Fail as e:
        print(f"capture.py: FAIL: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
