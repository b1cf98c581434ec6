#!/usr/bin/env python3
"""QMP/serial side of the real-guest harness (python3 stdlib only).

  capture.py capture ...   boot one guest under QEMU TCG, wait for READY on the serial
                           console, stop it, save registers/mtree/mem info, every dump
                           format, pmemsave of each RAM range and a padded ram.raw, quit.
  capture.py meta ...      check the capture (paging mode from CR0/CR4/EFER, VMCOREINFO,
                           phys.elf == ram.raw) and write meta.json.

Called by ensure-guests.sh; see README.md.
"""
import argparse
import json
import mmap
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

READY = "DUMPCONV-GUEST-READY"
T0 = time.monotonic()


def log(msg):
    print(f"  [{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class Fail(Exception):
    pass


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return f"(no {path}: {e})"


# ---------------------------------------------------------------------------------------
# QMP
class QMP:
    def __init__(self, path, proc, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise Fail(f"QEMU exited with {proc.returncode} before its QMP socket was up")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise Fail(f"no QMP socket at {path} after {timeout}s")
                time.sleep(0.1)
        self.sock.settimeout(timeout)
        self.f = self.sock.makefile("rwb")
        self.events = []
        self.n = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise Fail(f"unexpected QMP greeting {greeting}")
        self.version = greeting["QMP"]["version"]
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise Fail("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, timeout=60, **args):
        self.n += 1
        msg = {"execute": name, "id": self.n}
        if args:
            msg["arguments"] = args
        self.sock.settimeout(timeout)
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            try:
                r = self._read()
            except socket.timeout:
                raise Fail(f"QMP {name} gave no answer in {timeout}s")
            if "event" in r:
                self.events.append(r)
                continue
            if r.get("id") != self.n:
                continue
            if "error" in r:
                raise Fail(f"QMP {name} {args}: {r['error']}")
            return r.get("return")

    def hmp(self, line, cpu=None, timeout=60):
        args = {"command-line": line}
        if cpu is not None:
            args["cpu-index"] = cpu
        return self.cmd("human-monitor-command", timeout=timeout, **args)


# ---------------------------------------------------------------------------------------
# parsing helpers (also used by meta)
MTREE_RE = re.compile(
    r"^\s+([0-9a-f]+)-([0-9a-f]+) \(prio (-?\d+), ([a-z/ -]+)\): (\S+)(?: @([0-9a-f]+))?")


def parse_mtree_ram(text):
    """RAM ranges of the system address space from `info mtree -f`.

    Takes the FlatView that serves AS "memory", keeps the entries backed by the machine's
    RAM block (pc.ram, whatever its flat type: PAM can show parts of it as rom), merges
    physically adjacent ones. Other ROMs (pc.bios, pc.rom) are not RAM.
    Returns (ranges [(start, size)], all_entries [(start, end_incl, type, name, off)]).
    """
    views = []
    cur = None
    for line in text.splitlines():
        if line.startswith("FlatView #"):
            cur = {"as": [], "entries": []}
            views.append(cur)
            continue
        if cur is None:
            continue
        m = re.match(r'^ AS "([^"]+)"', line)
        if m:
            cur["as"].append(m.group(1))
            continue
        m = MTREE_RE.match(line)
        if m:
            cur["entries"].append((int(m.group(1), 16), int(m.group(2), 16), m.group(4),
                                   m.group(5), int(m.group(6) or "0", 16)))
    mem = [v for v in views if "memory" in v["as"]]
    if not mem:
        raise Fail("no FlatView for AS \"memory\" in info mtree -f")
    entries = mem[0]["entries"]
    ranges = []
    for start, end, typ, name, _off in entries:
        if name not in ("pc.ram",) and typ != "ram":
            continue
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1][1] += end + 1 - start
        else:
            ranges.append([start, end + 1 - start])
    return [tuple(r) for r in ranges], entries


REG_RE = {
    "cr0": re.compile(r"\bCR0=([0-9a-f]+)"),
    "cr2": re.compile(r"\bCR2=([0-9a-f]+)"),
    "cr3": re.compile(r"\bCR3=([0-9a-f]+)"),
    "cr4": re.compile(r"\bCR4=([0-9a-f]+)"),
    "efer": re.compile(r"\bEFER=([0-9a-f]+)"),
}


def parse_registers(text):
    """`info registers -a` -> [{index, cr0, cr3, cr4, efer, ...}] (ints)."""
    cpus = []
    blocks = re.split(r"^CPU#(\d+)\s*$", text, flags=re.M)
    # blocks: [pre, idx, body, idx, body, ...]
    for i in range(1, len(blocks), 2):
        idx, body = int(blocks[i]), blocks[i + 1]
        cpu = {"index": idx}
        for k, rx in REG_RE.items():
            m = rx.search(body)
            if m:
                cpu[k] = int(m.group(1), 16)
        for k in ("RIP", "EIP", "RSP", "ESP"):
            m = re.search(r"\b%s=([0-9a-f]+)" % k, body)
            if m:
                cpu[k.lower()] = int(m.group(1), 16)
        for k in ("GDT", "IDT"):
            m = re.search(r"^%s=\s+([0-9a-f]+) ([0-9a-f]+)" % k, body, flags=re.M)
            if m:
                cpu[k.lower() + "_base"] = int(m.group(1), 16)
        cpus.append(cpu)
    if not cpus:
        raise Fail("no CPU#n blocks in info registers -a output")
    return cpus


def paging_mode(cpu):
    cr0, cr4, efer = cpu.get("cr0", 0), cpu.get("cr4", 0), cpu.get("efer", 0)
    if not cr0 & (1 << 31):
        return "off"
    if efer & (1 << 10):  # LMA
        return "5level" if cr4 & (1 << 12) else "4level"
    return "pae" if cr4 & (1 << 5) else "32bit"


def read_elf(path):
    """Minimal ELF core reader: header fields, program headers, notes."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            raise Fail(f"{path}: not ELF")
        cls = ident[4]
        if cls == 2:
            hdr = struct.unpack("<HHIQQQIHHHHHH", f.read(48))
        else:
            hdr = struct.unpack("<HHIIIIIHHHHHH", f.read(36))
        (e_type, e_machine, _ver, _entry, e_phoff, e_shoff, _flags, e_ehsize, e_phentsize,
         e_phnum, e_shentsize, e_shnum, e_shstrndx) = hdr
        phnum = e_phnum
        if e_phnum == 0xFFFF and e_shnum > 0:
            f.seek(e_shoff)
            sh0 = f.read(e_shentsize)
            phnum = struct.unpack_from("<I", sh0, 44 if cls == 2 else 28)[0]
        phdrs = []
        for i in range(phnum):
            f.seek(e_phoff + i * e_phentsize)
            if cls == 2:
                p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = \
                    struct.unpack("<IIQQQQQQ", f.read(56))
            else:
                p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align = \
                    struct.unpack("<IIIIIIII", f.read(32))
            phdrs.append(dict(type=p_type, offset=p_offset, vaddr=p_vaddr, paddr=p_paddr,
                              filesz=p_filesz, memsz=p_memsz, flags=p_flags, align=p_align))
        notes = []
        for p in phdrs:
            if p["type"] != 4:
                continue
            f.seek(p["offset"])
            data = f.read(p["filesz"])
            off = 0
            while off + 12 <= len(data):
                namesz, descsz, ntype = struct.unpack_from("<III", data, off)
                off += 12
                name = data[off:off + namesz].rstrip(b"\0").decode("ascii", "replace")
                off += (namesz + 3) & ~3
                desc = data[off:off + descsz]
                off += (descsz + 3) & ~3
                notes.append(dict(name=name, type=ntype, descsz=descsz, desc=desc))
    return dict(cls=cls, e_type=e_type, e_machine=e_machine, e_ehsize=e_ehsize,
                e_phoff=e_phoff, e_shoff=e_shoff, e_phnum=e_phnum, e_shnum=e_shnum,
                e_shstrndx=e_shstrndx, phdrs=phdrs, notes=notes)


def parse_vmcoreinfo(text):
    d = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            d[k] = v
    return d


# ---------------------------------------------------------------------------------------
def capture(a):
    out = a.out
    os.makedirs(out, exist_ok=True)
    console = os.path.join(out, "console.log")
    tmp = tempfile.mkdtemp(prefix="dumpconv-qmp-")
    sock = os.path.join(tmp, "qmp.sock")
    cmd = [a.qemu, "-machine", "pc,accel=tcg", "-smp", str(a.smp), "-m", str(a.mem),
           "-cpu", a.cpu, "-nodefaults", "-display", "none", "-no-reboot",
           "-kernel", a.kernel, "-initrd", a.initrd, "-append", a.append,
           "-chardev", f"file,id=ser0,path={console}", "-serial", "chardev:ser0",
           "-qmp", f"unix:{sock},server=on,wait=off", "-device", "vmcoreinfo",
           "-name", a.guest]
    for d in a.datadir:
        cmd += ["-L", d]
    with open(os.path.join(out, "qemu-cmdline.txt"), "w") as f:
        f.write(" ".join(cmd) + "\n")
    timings = []

    def timed(name, fn, *args, **kw):
        t = time.monotonic()
        r = fn(*args, **kw)
        dt = time.monotonic() - t
        timings.append((name, dt))
        log(f"{name}: {dt:.1f}s")
        return r

    qlog = open(os.path.join(out, "qemu.log"), "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        qmp = QMP(sock, proc)

        def wait_ready():
            deadline = time.monotonic() + a.boot_timeout
            while True:
                try:
                    with open(console, "rb") as f:
                        if READY.encode() in f.read():
                            return
                except FileNotFoundError:
                    pass
                if proc.poll() is not None:
                    raise Fail(f"QEMU exited ({proc.returncode}) before {READY}; "
                               f"qemu.log:\n{tail(os.path.join(out, 'qemu.log'), 10)}\n"
                               f"console.log tail:\n{tail(console)}")
                if time.monotonic() > deadline:
                    raise Fail(f"guest not READY after {a.boot_timeout}s; console.log tail:\n"
                               f"{tail(console)}")
                time.sleep(0.5)

        timed("boot until READY", wait_ready)
        time.sleep(1.0)  # let the console output after READY drain
        qmp.cmd("stop")
        st = qmp.cmd("query-status")
        if st.get("running"):
            raise Fail(f"VM still running after stop: {st}")
        log(f"stopped ({st.get('status')}), QEMU {qmp.version['qemu']}")

        def save(name, text):
            with open(os.path.join(out, name), "w") as f:
                f.write(text)

        cpus = [c["cpu-index"] for c in qmp.cmd("query-cpus-fast")]
        save("registers.txt", timed("info registers -a", qmp.hmp, "info registers -a"))
        mtree = qmp.hmp("info mtree -f")
        save("mtree.txt", mtree)
        if "info-mem.txt" in a.skip:
            # QEMU 7.2's mem_info_la57 walks for a minute per CPU and prints nothing
            save("info-mem.txt", "### skipped: QEMU 7.2 `info mem` prints nothing under LA57 "
                                 "(and takes ~60 s per CPU); see info-tlb.txt\n")
        else:
            save("info-mem.txt", "".join(f"### CPU {i}\n" + timed(f"info mem (CPU {i})", qmp.hmp,
                                                                    "info mem", cpu=i,
                                                                    timeout=a.dump_timeout)
                                         for i in cpus))
        if "info-tlb.txt" not in a.skip:
            save("info-tlb.txt", "".join(f"### CPU {i}\n" + timed(f"info tlb (CPU {i})", qmp.hmp, "info tlb",
                                                                    cpu=i, timeout=a.dump_timeout)
                                         for i in cpus[:1]))
        ranges, _ = parse_mtree_ram(mtree)
        log("RAM ranges: " + ", ".join(f"{s:#x}+{n:#x}" for s, n in ranges))
        caps = qmp.cmd("query-dump-guest-memory-capability")["formats"]
        log(f"dump formats offered: {caps}")
        with open(os.path.join(out, "qemu-version.json"), "w") as f:
            json.dump({"version": qmp.version, "dump_formats": caps}, f, indent=1)

        def dump(fmt, paging, fname):
            path = os.path.join(out, fname)
            qmp.cmd("dump-guest-memory", paging=paging, protocol="file:" + path,
                    detach=True, format=fmt)
            deadline = time.monotonic() + a.dump_timeout
            while True:
                q = qmp.cmd("query-dump")
                if q["status"] == "completed":
                    break
                if q["status"] == "failed":
                    raise Fail(f"dump {fname} failed: {q} {qmp.events[-3:]}")
                if time.monotonic() > deadline:
                    raise Fail(f"dump {fname} not done after {a.dump_timeout}s: {q}")
                time.sleep(0.2)

        plan = [("elf", False, "phys.elf"), ("elf", True, "paging.elf")]
        for fmt in caps:
            if fmt.startswith("kdump-raw-"):
                plan.append((fmt, False, fmt + ".kdump"))
            elif fmt.startswith("kdump-"):
                plan.append((fmt, False, fmt + ".flat"))
        for fmt, paging, fname in plan:
            if fname in a.skip or fmt in a.skip:
                log(f"skipping {fname} (--skip)")
                continue
            timed(f"dump {fname}", dump, fmt, paging, fname)

        def pmemsave():
            for start, size in ranges:
                qmp.cmd("pmemsave", timeout=a.dump_timeout, val=start, size=size,
                        filename=os.path.join(out, f"ram-{start:x}.raw"))
        timed("pmemsave", pmemsave)
        with open(os.path.join(out, "ram-ranges.json"), "w") as f:
            json.dump([{"start": s, "size": n} for s, n in ranges], f)
        qmp.cmd("quit")
        proc.wait(timeout=60)
    except Exception as e:
        if not isinstance(e, Fail):
            log(f"capture of {a.guest} failed; console.log tail:\n{tail(console, 25)}")
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        qlog.close()
        shutil.rmtree(tmp, ignore_errors=True)

    timed("ram.raw (sparse, padded)", build_ram_raw, out, ranges)
    with open(os.path.join(out, "capture-timings.txt"), "w") as f:
        for name, dt in timings:
            f.write(f"{name:40s} {dt:8.1f}s\n")


def build_ram_raw(out, ranges):
    """ram.raw: file offset == guest-physical address, 0..end of the last RAM range,
    holes (and zero pages) left sparse."""
    chunk = 1 << 20
    zero = bytes(chunk)
    end = max(s + n for s, n in ranges)
    path = os.path.join(out, "ram.raw")
    with open(path + ".tmp", "wb") as dst:
        for start, size in ranges:
            with open(os.path.join(out, f"ram-{start:x}.raw"), "rb") as src:
                if os.fstat(src.fileno()).st_size != size:
                    raise Fail(f"ram-{start:x}.raw has {os.fstat(src.fileno()).st_size} bytes, want {size}")
                pos = 0
                while pos < size:
                    buf = src.read(min(chunk, size - pos))
                    if buf != zero[:len(buf)]:
                        dst.seek(start + pos)
                        dst.write(buf)
                    pos += len(buf)
        dst.truncate(end)
    os.rename(path + ".tmp", path)


# ---------------------------------------------------------------------------------------
def meta(a):
    out = a.out
    problems = []
    regs = open(os.path.join(out, "registers.txt")).read()
    cpus = parse_registers(regs)
    modes = {paging_mode(c) for c in cpus}
    if modes != {a.paging}:
        problems.append(f"paging mode from registers.txt is {sorted(modes)}, expected {a.paging}")
    if a.paging == "5level" and not all(c["cr4"] & (1 << 12) for c in cpus):
        problems.append("CR4.LA57 (bit 12) not set on every CPU")
    mtree = open(os.path.join(out, "mtree.txt")).read()
    ranges, _ = parse_mtree_ram(mtree)
    if a.guest.endswith("highmem") and not any(s >= 1 << 32 for s, _ in ranges):
        problems.append("no RAM range above 4 GiB")

    # banner
    con = open(os.path.join(out, "console.log"), "rb").read().decode("utf-8", "replace")
    m = re.search(r"(Linux version [^\r\n]*)", con)
    banner = m.group(1).rstrip() if m else None
    if banner:
        with open(os.path.join(out, "banner.txt"), "w") as f:
            f.write(banner + "\n")
        if a.release not in banner:
            problems.append(f"banner {banner!r} does not name release {a.release}")
    else:
        problems.append("no 'Linux version' line on the console")
    iomem = re.search(r"DUMPCONV: iomem-begin\r?\n(.*?)DUMPCONV: iomem-end", con, re.S)
    if iomem:
        with open(os.path.join(out, "iomem.txt"), "w") as f:
            f.write(iomem.group(1).replace("\r", ""))

    # System.map
    sysmap = {}
    with open(os.path.join(out, "System.map")) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in ("linux_banner", "_text", "_stext", "init_top_pgt",
                                               "swapper_pg_dir", "init_task", "vmcoreinfo_note",
                                               "phys_base", "idt_table", "page_offset_base"):
                sysmap[parts[2]] = int(parts[0], 16)

    # phys.elf: notes, VMCOREINFO, loads; content must equal ram.raw (the VM was stopped)
    elf = read_elf(os.path.join(out, "phys.elf"))
    note_names = [n["name"] for n in elf["notes"]]
    vmci_text = None
    for n in elf["notes"]:
        if n["name"] == "VMCOREINFO":
            vmci_text = n["desc"].rstrip(b"\0").decode("ascii", "replace")
    vmci = parse_vmcoreinfo(vmci_text) if vmci_text else {}
    if vmci_text:
        with open(os.path.join(out, "vmcoreinfo.txt"), "w") as f:
            f.write(vmci_text)
        if vmci.get("OSRELEASE") != a.release:
            problems.append(f"VMCOREINFO OSRELEASE={vmci.get('OSRELEASE')} != {a.release}")
    elif a.arch == "x86_64":
        problems.append(f"phys.elf has no VMCOREINFO note (notes: {note_names})")
    loads = [p for p in elf["phdrs"] if p["type"] == 1]
    check = compare_elf_with_ram(os.path.join(out, "phys.elf"), loads, os.path.join(out, "ram.raw"),
                                 ranges)
    problems += check

    # kdump files: unflatten ourselves, compare with makedumpfile -R, decode every page
    kdumps = {}
    for fn in sorted(os.listdir(out)):
        if not fn.endswith(".flat"):
            continue
        flat = os.path.join(out, fn)
        tmpk = flat + ".check.tmp"
        try:
            unflatten(flat, tmpk)
            rearranged = flat[:-5] + ".rearranged.kdump"
            if os.path.exists(rearranged):
                with open(tmpk, "rb") as x, open(rearranged, "rb") as y:
                    if x.read() != y.read():
                        problems.append(f"{fn}: our unflattening differs from makedumpfile -R")
            summary, kp = check_kdump(tmpk, os.path.join(out, "ram.raw"), ranges)
            problems += kp
            kdumps[fn] = summary
            log(f"{fn}: {summary['pages']} pages ({summary['zero_pages']} zero) match ram.raw, "
                f"{summary['layout']}-bit header, machine={summary['machine']!r}")
        finally:
            if os.path.exists(tmpk):
                os.unlink(tmpk)

    # KASLR slide
    kernel_offset = None
    koff_src = None
    if "KERNELOFFSET" in vmci:
        kernel_offset = int(vmci["KERNELOFFSET"], 16)
        koff_src = "VMCOREINFO KERNELOFFSET"
    elif "SYMBOL(_stext)" in vmci and "_stext" in sysmap:
        kernel_offset = int(vmci["SYMBOL(_stext)"], 16) - sysmap["_stext"]
        koff_src = "VMCOREINFO SYMBOL(_stext) - System.map _stext"
    elif a.arch == "i386" and "linux_banner" in sysmap and banner:
        # no VMCOREINFO: find linux_banner in RAM; i386 lowmem is phys = virt - PAGE_OFFSET
        with open(os.path.join(out, "ram.raw"), "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            want = sysmap["linux_banner"] - 0xC0000000
            hit = mm.find(banner.encode() + b"\n", max(0, want - (64 << 20)))
            mm.close()
        if hit >= 0:
            kernel_offset = hit - want
            koff_src = "linux_banner found in RAM at phys %#x (System.map says %#x + PAGE_OFFSET)" % (hit, want)
    # linux_banner: its physical address from the symbol, the slide and phys_base, checked
    # in ram.raw; its (relocated) virtual address, checked through paging.elf's PT_LOADs
    phys_base = int(vmci["NUMBER(phys_base)"], 0) if "NUMBER(phys_base)" in vmci else None
    banner_phys = None
    banner_virt = None
    if "linux_banner" in sysmap and kernel_offset is not None and banner:
        banner_virt = sysmap["linux_banner"] + kernel_offset
        if a.arch == "x86_64" and phys_base is not None:
            banner_phys = banner_virt - 0xFFFFFFFF80000000 + phys_base
        elif a.arch == "i386":
            banner_phys = banner_virt - 0xC0000000
        want = banner.encode()
        if banner_phys is not None:
            with open(os.path.join(out, "ram.raw"), "rb") as f:
                f.seek(banner_phys)
                if f.read(len(want)) != want:
                    problems.append(f"linux_banner not at phys {banner_phys:#x} in ram.raw")
    paging_elf = None
    if os.path.exists(os.path.join(out, "paging.elf")):
        pe = read_elf(os.path.join(out, "paging.elf"))
        ploads = [p for p in pe["phdrs"] if p["type"] == 1]
        found = None
        if banner_virt is not None:
            for p in ploads:
                if p["vaddr"] <= banner_virt < p["vaddr"] + p["filesz"]:
                    with open(os.path.join(out, "paging.elf"), "rb") as f:
                        f.seek(p["offset"] + banner_virt - p["vaddr"])
                        found = f.read(len(banner)) == banner.encode()
                    break
            if not found:
                problems.append(f"linux_banner not readable at virt {banner_virt:#x} in paging.elf")
        paging_elf = {"class": pe["cls"] * 32, "e_machine": pe["e_machine"], "e_phnum": pe["e_phnum"],
                      "loads": len(ploads), "load_bytes": sum(p["filesz"] for p in ploads),
                      "linux_banner_found": found}
        log(f"paging.elf: {len(ploads)} PT_LOADs, linux_banner at {banner_virt:#x} found={found}")

    if a.kaslr == 0 and kernel_offset not in (None, 0):
        problems.append(f"nokaslr guest has kernel offset {kernel_offset:#x}")
    if a.kaslr == 1 and kernel_offset == 0:
        problems.append("KASLR guest has kernel offset 0")

    qv = json.load(open(os.path.join(out, "qemu-version.json")))
    qver = qv["version"]["qemu"]
    files = sorted(f for f in os.listdir(out) if f not in ("complete", "meta.json"))
    files.append("meta.json")
    m = {
        "guest": a.guest,
        "arch": a.arch,
        "paging": a.paging,
        "kaslr": bool(a.kaslr),
        "kernel_release": a.release,
        "kernel_package": a.kernel_package,
        "qemu_version": f"{qver['major']}.{qver['minor']}.{qver['micro']}",
        "qemu_package_version": qv["version"].get("package", "").strip(),
        "qemu_binary": os.path.basename(a.qemu),
        "dump_formats": qv["dump_formats"],
        "mem_size": sum(n for _, n in ranges),
        "mem_mib_arg": None,
        "ram_ranges": [{"start": s, "size": n} for s, n in ranges],
        "ram_end": max(s + n for s, n in ranges),
        "cpus": cpus,
        "linux_banner_addr": f"{sysmap['linux_banner']:#x}" if "linux_banner" in sysmap else None,
        "linux_banner_addr_relocated": (f"{sysmap['linux_banner'] + kernel_offset:#x}"
                                        if "linux_banner" in sysmap and kernel_offset is not None else None),
        "kernel_offset": kernel_offset,
        "kernel_offset_source": koff_src,
        "phys_base": phys_base,
        "linux_banner_phys": f"{banner_phys:#x}" if banner_phys is not None else None,
        "paging_elf": paging_elf,
        "vmcoreinfo": bool(vmci_text),
        "banner": banner,
        "phys_elf": {
            "class": elf["cls"] * 32, "e_machine": elf["e_machine"], "e_ehsize": elf["e_ehsize"],
            "e_phnum": elf["e_phnum"], "e_shnum": elf["e_shnum"],
            "notes": [{"name": n["name"], "type": n["type"], "descsz": n["descsz"]} for n in elf["notes"]],
            "loads": [{"paddr": p["paddr"], "vaddr": p["vaddr"], "offset": p["offset"],
                       "filesz": p["filesz"], "memsz": p["memsz"]} for p in loads],
        },
        "kdump": kdumps,
        "crash_ref": (None if a.arch != "x86_64" else
                      ("failed" if os.path.exists(os.path.join(out, "crash-ref.failed")) else "ok")),
        "files": files,
    }
    mem_arg = re.search(r" -m (\d+)", open(os.path.join(out, "qemu-cmdline.txt")).read())
    m["mem_mib_arg"] = int(mem_arg.group(1)) if mem_arg else None
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(m, f, indent=1)
        f.write("\n")
    for c in cpus:
        log(f"CPU{c['index']}: {paging_mode(c)} CR0={c['cr0']:#x} CR3={c['cr3']:#x} "
            f"CR4={c['cr4']:#x} EFER={c.get('efer', 0):#x}")
    log(f"kernel_offset={kernel_offset if kernel_offset is None else hex(kernel_offset)} "
        f"({koff_src}); notes={note_names}")
    if problems:
        raise Fail(f"{a.guest}: " + "; ".join(problems))


def unflatten(flat_path, out_path):
    """makedumpfile flattened format -> seekable file (what makedumpfile -R does)."""
    with open(flat_path, "rb") as src, open(out_path, "wb") as dst:
        head = src.read(4096)
        if head[:13] != b"makedumpfile\0" or struct.unpack_from(">q", head, 16)[0] != 1:
            raise Fail(f"{flat_path}: no flattened-format header")
        records = 0
        while True:
            rh = src.read(16)
            if len(rh) < 16:
                raise Fail(f"{flat_path}: no end marker after {records} records")
            off, size = struct.unpack(">qq", rh)
            if off == -1 and size == -1:
                break
            if off < 0 or size < 0:
                raise Fail(f"{flat_path}: bad record {off} {size}")
            data = src.read(size)
            if len(data) != size:
                raise Fail(f"{flat_path}: truncated record at offset {off}")
            dst.seek(off)
            dst.write(data)
            records += 1
    return records


def check_kdump(path, ram_path, ranges):
    """Decode every page of a seekable kdump-compressed file (zlib pages, as QEMU writes
    them) and compare it with ram.raw. Returns (summary dict, problems)."""
    import zlib
    problems = []
    with open(path, "rb") as f, open(ram_path, "rb") as fr:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        ram = mmap.mmap(fr.fileno(), 0, access=mmap.ACCESS_READ)
        if mm[:8] != b"KDUMP   ":
            raise Fail(f"{path}: signature {mm[:8]!r}")
        hv = struct.unpack_from("<i", mm, 8)[0]
        machine = mm[12 + 4 * 65:12 + 5 * 65].rstrip(b"\0").decode()
        # 64-bit layout puts block_size at 428, the 32-bit one at 416
        if struct.unpack_from("<i", mm, 428)[0] == 4096:
            layout, (status, bs, sub_blocks, bitmap_blocks, max_mapnr32) = 64, struct.unpack_from("<IiiII", mm, 424)
            nr_cpus = struct.unpack_from("<i", mm, 460)[0]
            sub = struct.unpack_from("<QiiQQQQQQQQQQQ", mm, bs)
            phys_base, dump_level, split = sub[0], sub[1], sub[2]
            off_vmci, size_vmci, off_note, size_note = sub[5], sub[6], sub[7], sub[8]
            max_mapnr = sub[13]
        else:
            layout, (status, bs, sub_blocks, bitmap_blocks, max_mapnr32) = 32, struct.unpack_from("<IiiII", mm, 412)
            nr_cpus = struct.unpack_from("<i", mm, 448)[0]
            phys_base, dump_level, split = struct.unpack_from("<Iii", mm, bs)
            off_vmci, size_vmci, off_note, size_note = struct.unpack_from("<QIQI", mm, bs + 20)
            max_mapnr = struct.unpack_from("<Q", mm, bs + 72)[0]
        bm1 = (1 + sub_blocks) * bs
        half = bitmap_blocks * bs // 2
        bm2 = bm1 + half
        desc = bm1 + bitmap_blocks * bs
        zero = bytes(bs)
        ram_pfns = set()
        for s, n in ranges:
            ram_pfns.update(range(s // bs, (s + n) // bs))
        idx = 0
        dumped = zero_pages = compressed = 0
        for pfn in range(max_mapnr):
            byte = pfn >> 3
            in1 = mm[bm1 + byte] >> (pfn & 7) & 1
            in2 = mm[bm2 + byte] >> (pfn & 7) & 1
            if pfn in ram_pfns and not in2:
                problems.append(f"{path}: RAM pfn {pfn:#x} not dumped")
                break
            if not in2:
                continue
            if not in1:
                problems.append(f"{path}: pfn {pfn:#x} in 2nd bitmap but not 1st")
                break
            off, size, flags, _pf = struct.unpack_from("<qIIQ", mm, desc + 24 * idx)
            idx += 1
            data = mm[off:off + size]
            if flags & 1:
                data = zlib.decompress(data)
                compressed += 1
            elif flags:
                problems.append(f"{path}: pfn {pfn:#x} flags {flags:#x} (not zlib)")
                break
            if len(data) != bs:
                problems.append(f"{path}: pfn {pfn:#x} decodes to {len(data)} bytes")
                break
            dumped += 1
            if data == zero:
                zero_pages += 1
            if pfn in ram_pfns and data != ram[pfn * bs:(pfn + 1) * bs]:
                problems.append(f"{path}: pfn {pfn:#x} differs from ram.raw")
                break
        mm.close()
        ram.close()
    summary = dict(header_version=hv, layout=layout, machine=machine, status=status,
                   block_size=bs, sub_hdr_size=sub_blocks, bitmap_blocks=bitmap_blocks,
                   max_mapnr=max_mapnr, nr_cpus=nr_cpus, phys_base=phys_base,
                   dump_level=dump_level, offset_note=off_note, size_note=size_note,
                   offset_vmcoreinfo=off_vmci, size_vmcoreinfo=size_vmci,
                   pages=dumped, zero_pages=zero_pages, compressed_pages=compressed)
    return summary, problems


def compare_elf_with_ram(elf_path, loads, ram_path, ranges):
    """Every PT_LOAD of phys.elf that lies in a RAM range must equal ram.raw there."""
    problems = []
    covered = 0
    with open(elf_path, "rb") as fe, open(ram_path, "rb") as fr:
        me = mmap.mmap(fe.fileno(), 0, access=mmap.ACCESS_READ)
        mr = mmap.mmap(fr.fileno(), 0, access=mmap.ACCESS_READ)
        for p in loads:
            for s, n in ranges:
                lo, hi = max(s, p["paddr"]), min(s + n, p["paddr"] + p["filesz"])
                if lo >= hi:
                    continue
                step = 64 << 20
                for x in range(lo, hi, step):
                    y = min(hi, x + step)
                    eo = p["offset"] + (x - p["paddr"])
                    if me[eo:eo + (y - x)] != mr[x:y]:
                        problems.append(f"phys.elf differs from ram.raw in [{x:#x}, {y:#x})")
                        break
                covered += hi - lo
        me.close()
        mr.close()
    total = sum(n for _, n in ranges)
    if covered != total:
        problems.append(f"phys.elf PT_LOADs cover {covered:#x} of {total:#x} RAM bytes")
    return problems


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("capture")
    c.add_argument("--guest", required=True)
    c.add_argument("--arch", required=True)
    c.add_argument("--qemu", required=True)
    c.add_argument("--datadir", action="append", default=[])
    c.add_argument("--kernel", required=True)
    c.add_argument("--initrd", required=True)
    c.add_argument("--append", required=True)
    c.add_argument("--cpu", default="qemu64")
    c.add_argument("--mem", type=int, default=512)
    c.add_argument("--smp", type=int, default=2)
    c.add_argument("--out", required=True)
    c.add_argument("--boot-timeout", type=float, default=300)
    c.add_argument("--dump-timeout", type=float, default=900)
    c.add_argument("--skip", action="append", default=[])
    mt = sub.add_parser("meta")
    mt.add_argument("--guest", required=True)
    mt.add_argument("--arch", required=True)
    mt.add_argument("--out", required=True)
    mt.add_argument("--paging", required=True)
    mt.add_argument("--kaslr", type=int, required=True)
    mt.add_argument("--release", required=True)
    mt.add_argument("--kernel-package", default="")
    mt.add_argument("--qemu", required=True)
    a = ap.parse_args()
    try:
        capture(a) if a.cmd == "capture" else meta(a)
    except Fail as e:
        print(f"capture.py {a.cmd}: ERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
