#!/usr/bin/env python3
"""QMP/serial side of the real-guest harness (python3 stdlib only).

  capture.py capture ...   boot one guest under QEMU TCG, wait for READY on the serial
                           console, stop it, save registers/mtree/mem info, every dump
                           format, pmemsave of each RAM range and a padded ram.raw, quit.
  capture.py meta ...      check the capture (paging mode from CR0/CR4/EFER, or TCR_EL1
                           on aarch64, VMCOREINFO, phys.elf == ram.raw) and write meta.json.

aarch64 guests also get gdbstub-samples.txt: kernel virtual memory read through QEMU's
gdbstub (QEMU's own MMU) while the guest is stopped, the reference for page-table walks.

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
        if name not in ("pc.ram", "mach-virt.ram") and typ != "ram":
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


def parse_registers_arm64(text):
    """`info registers -a` of an aarch64 guest -> [{index, pc, sp, pstate, x0..x30}]."""
    cpus = []
    blocks = re.split(r"^CPU#(\d+)\s*$", text, flags=re.M)
    for i in range(1, len(blocks), 2):
        cpu = {"index": int(blocks[i])}
        for k, v in re.findall(r"\b(PC|SP|PSTATE|X\d\d)=([0-9a-f]+)", blocks[i + 1]):
            cpu["x%d" % int(k[1:]) if k.startswith("X") else k.lower()] = int(v, 16)
        cpus.append(cpu)
    if not cpus:
        raise Fail("no CPU#n blocks in info registers -a output")
    return cpus


ARM64_GRANULE_TG1 = {1: "16k", 2: "4k", 3: "64k"}


def paging_mode_arm64(cpu):
    """<granule>-va<bits> of the kernel half (TTBR1) from TCR_EL1.TG1/T1SZ, "off" when
    SCTLR_EL1.M is clear."""
    if "sctlr_el1" not in cpu or "tcr_el1" not in cpu:
        return "unknown"
    if not cpu["sctlr_el1"] & 1:
        return "off"
    tcr = cpu["tcr_el1"]
    return f"{ARM64_GRANULE_TG1.get((tcr >> 30) & 3, '?')}-va{64 - ((tcr >> 16) & 0x3f)}"


def check_arm64(out, vmci, cpus, ranges, kernel_offset, banner, con):
    """aarch64 checks: TTBR1_EL1 is swapper_pg_dir, the KASLR offset agrees with the
    guest's /proc/kallsyms, and every gdbstub sample in the kernel image or the linear map
    equals ram.raw at the physical address the VMCOREINFO layout gives (so the samples
    were read from the same stopped guest as the dumps). Returns (meta, samples, problems)."""
    problems = []
    lay = arm64_layout(vmci)
    mask = (1 << 64) - 1
    swapper_phys = (int(vmci["SYMBOL(swapper_pg_dir)"], 16) - lay["kimage_voffset"]) & mask
    for c in cpus:
        t1 = c.get("ttbr1_el1")
        # BADDR is bits 47:1 with 48-bit PAs; 63:48 hold the ASID, bit 0 CnP
        if t1 is None or t1 & 0x0000FFFFFFFFFFFE != swapper_phys:
            problems.append(f"CPU{c['index']} TTBR1_EL1={t1 if t1 is None else hex(t1)} is not "
                            f"swapper_pg_dir at phys {swapper_phys:#x}")
    sysmap = {n: a for a, _t, n in read_system_map(os.path.join(out, "System.map"))}
    kallsyms = {}
    for m in re.finditer(r"DUMPCONV: kallsyms ([0-9a-f]+) \S (\S+)", con):
        kallsyms[m.group(2)] = int(m.group(1), 16)
    koff_kallsyms = None
    if "_stext" in kallsyms and "_stext" in sysmap:
        koff_kallsyms = (kallsyms["_stext"] - sysmap["_stext"]) & mask
        if koff_kallsyms != kernel_offset:
            problems.append(f"/proc/kallsyms _stext - System.map _stext = {koff_kallsyms:#x}, "
                            f"VMCOREINFO KERNELOFFSET = {kernel_offset}")
    else:
        problems.append("the guest printed no _stext line of /proc/kallsyms")
    if "_stext" in sysmap and int(vmci.get("SYMBOL(_stext)", "0"), 16) != sysmap["_stext"] + (kernel_offset or 0):
        problems.append("VMCOREINFO SYMBOL(_stext) is not System.map _stext + KERNELOFFSET")
    # gdbstub samples vs ram.raw
    samples = []
    with open(os.path.join(out, "gdbstub-samples.txt")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            va, data, label = line.split(None, 2)
            samples.append((int(va, 16), None if data == "-" else bytes.fromhex(data), label.strip()))
    img_lo = sysmap["_text"] + lay["kernel_offset"]
    img_hi = sysmap["_end"] + lay["kernel_offset"]
    lin_lo = lay["page_offset"]
    lin_hi = lay["page_offset"] + (1 << (lay["va_bits"] - 1))
    by_kind = {}
    checked = 0
    with open(os.path.join(out, "ram.raw"), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for va, data, label in samples:
            kind = label.split(":", 1)[0]
            k = by_kind.setdefault(kind, {"samples": 0, "unreadable": 0})
            k["samples"] += 1
            if data is None:
                k["unreadable"] += 1
                if kind in ("named", "text", "rodata", "data", "bss"):
                    problems.append(f"gdbstub could not read {label} at {va:#x}")
                continue
            if img_lo <= va < img_hi:
                pa = (va - lay["kimage_voffset"]) & mask
            elif lin_lo <= va < lin_hi:
                pa = (va - lay["page_offset"] + lay["phys_offset"]) & mask
            else:
                continue
            if not any(s <= pa and pa + len(data) <= s + n for s, n in ranges):
                problems.append(f"{label}: {va:#x} -> phys {pa:#x} is not RAM")
                continue
            checked += 1
            if mm[pa:pa + len(data)] != data:
                problems.append(f"gdbstub bytes of {label} at {va:#x} differ from ram.raw at {pa:#x}")
        mm.close()
    named = {label: data for _va, data, label in samples if label.startswith("named:")}
    if banner and (named.get("named:linux_banner") or b"")[:len(banner)] != banner.encode()[:64]:
        problems.append("gdbstub's linux_banner is not the console's banner")
    readable = sum(1 for s in samples if s[1] is not None)
    if readable < 200:
        problems.append(f"only {readable} readable gdbstub samples")
    log(f"gdbstub samples: {len(samples)}, {readable} readable, {checked} equal ram.raw "
        f"through the VMCOREINFO layout")
    meta = {
        "va_bits": lay["va_bits"], "page_offset": f"{lay['page_offset']:#x}",
        "kimage_voffset": f"{lay['kimage_voffset']:#x}", "phys_offset": f"{lay['phys_offset']:#x}",
        "tcr_el1_t1sz": lay["tcr_el1_t1sz"], "swapper_pg_dir_phys": f"{swapper_phys:#x}",
        "kernel_offset_kallsyms": koff_kallsyms,
        "kernel_image": [f"{img_lo:#x}", f"{img_hi:#x}"],
        "kernel_image_phys": f"{(img_lo - lay['kimage_voffset']) & mask:#x}",
    }
    summary = {"file": "gdbstub-samples.txt", "count": len(samples), "readable": readable,
               "equal_ram_raw": checked, "by_kind": by_kind}
    return meta, summary, problems


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
    machine = "virt,accel=tcg" if a.arch == "aarch64" else "pc,accel=tcg"
    cmd = [a.qemu, "-machine", machine, "-smp", str(a.smp), "-m", str(a.mem),
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
        if "info-mem.txt" in a.skip and a.arch == "aarch64":
            pass  # QEMU 7.2 has no `info mem` / `info tlb` for arm
        elif "info-mem.txt" in a.skip:
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
        if a.arch == "aarch64":
            # last, after every dump: a debugger that detached would resume the guest
            timed("gdbstub samples", gdb_reference, qmp, out, ranges, a.dump_timeout)
            st = qmp.cmd("query-status")
            if st.get("running"):
                raise Fail(f"VM running after the gdbstub session: {st}")
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


# ---------------------------------------------------------------------------------------
# aarch64: an independent reference for virtual addresses, read through QEMU's gdbstub.
PAGE = 4096

GDB_SCRIPT = r"""
import gdb, os
gdb.execute("set pagination off")
gdb.execute("set confirm off")
gdb.execute("set architecture aarch64")
gdb.execute("target remote 127.0.0.1:" + os.environ["DUMPCONV_GDB_PORT"])
inf = gdb.selected_inferior()
try:
    regs = open(os.environ["DUMPCONV_GDB_REGS"], "w")
    for t in sorted(inf.threads(), key=lambda t: t.num):
        t.switch()
        regs.write("### CPU %d (gdb thread %d)\n" % (t.num - 1, t.num))
        regs.write(gdb.execute("info all-registers", to_string=True))
    regs.close()
    # each read goes through the CPU its line names (gdb thread = CPU index + 1); gdb
    # selects that vCPU (Hg) before reading, and QEMU translates with its MMU state
    threads = {t.num: t for t in inf.threads()}
    out = open(os.environ["DUMPCONV_GDB_OUT"] + ".tmp", "w")
    for line in open(os.environ["DUMPCONV_GDB_ADDRS"]):
        addr, n, cpu, label = line.split(None, 3)
        addr, n, cpu = int(addr, 16), int(n), int(cpu)
        threads[cpu + 1].switch()
        try:
            data = bytes(inf.read_memory(addr, n)).hex()
        except gdb.MemoryError:
            data = "-"
        out.write("%#018x %s %s" % (addr, data, label))
    out.close()
    os.rename(os.environ["DUMPCONV_GDB_OUT"] + ".tmp", os.environ["DUMPCONV_GDB_OUT"])
finally:
    # never `detach` (QEMU resumes the guest then) nor kill (QEMU exits): just drop the link
    gdb.execute("disconnect")
"""

SYSREG_NAMES = {"pc": "pc", "sp": "sp", "cpsr": "pstate", "TTBR0_EL1": "ttbr0_el1",
                "TTBR1_EL1": "ttbr1_el1", "TCR_EL1": "tcr_el1", "SCTLR": "sctlr_el1",
                "MAIR_EL1": "mair_el1", "VBAR": "vbar_el1", "ID_AA64MMFR0_EL1": "id_aa64mmfr0_el1"}


def parse_gdb_registers(text):
    """gdb-registers.txt (`info all-registers` per CPU) -> {cpu index: {name: int}} with
    the names of SYSREG_NAMES (PLAN's lowercase names)."""
    cpus = {}
    cur = None
    for line in text.splitlines():
        m = re.match(r"^### CPU (\d+)", line)
        if m:
            cur = cpus.setdefault(int(m.group(1)), {})
            continue
        parts = line.split()
        if cur is not None and len(parts) >= 2 and parts[0] in SYSREG_NAMES:
            try:
                cur[SYSREG_NAMES[parts[0]]] = int(parts[1], 16) & ((1 << 64) - 1)
            except ValueError:
                pass
    return cpus


def read_system_map(path):
    syms = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                try:
                    syms.append((int(parts[0], 16), parts[1], parts[2]))
                except ValueError:
                    pass
    return syms


def console_section(con, name):
    m = re.search(r"DUMPCONV: %s-begin\r?\n(.*?)DUMPCONV: %s-end" % (name, name), con, re.S)
    return m.group(1).replace("\r", "").splitlines() if m else []


def arm64_layout(vmci):
    """What the VMCOREINFO of an arm64 kernel says about its address map."""
    va_bits = int(vmci["NUMBER(VA_BITS)"], 0)
    return {
        "va_bits": va_bits,
        "page_offset": (-(1 << va_bits)) & ((1 << 64) - 1),   # start of the linear map
        "kimage_voffset": int(vmci["NUMBER(kimage_voffset)"], 16),
        "phys_offset": int(vmci["NUMBER(PHYS_OFFSET)"], 16),
        "kernel_offset": int(vmci.get("KERNELOFFSET", "0"), 16),
        "tcr_el1_t1sz": int(vmci["NUMBER(TCR_EL1_T1SZ)"], 16) if "NUMBER(TCR_EL1_T1SZ)" in vmci else None,
        "vmemmap_start": int(vmci["NUMBER(VMEMMAP_START)"], 16) if "NUMBER(VMEMMAP_START)" in vmci else None,
        "page_struct_size": int(vmci.get("SIZE(page)", "0")),
    }


def vmemmap_va(lay, pfn):
    """Address of pfn's struct page: vmemmap = VMEMMAP_START - (memstart_addr >> PAGE_SHIFT),
    memstart_addr (PHYS_OFFSET) being signed."""
    po = lay["phys_offset"] - (1 << 64) if lay["phys_offset"] >> 63 else lay["phys_offset"]
    return (lay["vmemmap_start"] + (pfn - (po >> 12)) * lay["page_struct_size"]) & ((1 << 64) - 1)


def linear_va(lay, phys):
    return (phys - lay["phys_offset"] + lay["page_offset"]) & ((1 << 64) - 1)


def arm64_sample_addresses(out, ranges, lay, ncpus):
    """A few hundred virtual addresses (va, length that stays in its 4 KiB page, CPU to
    read through, label): named symbols, random text/rodata/data/bss symbols of System.map
    (+ KASLR offset), linear-map addresses spread over RAM, vmalloc and module areas the
    guest printed. Deterministic for a given System.map and boot."""
    import random
    rnd = random.Random(0x5eed)
    koff = lay["kernel_offset"]
    syms = read_system_map(os.path.join(out, "System.map"))
    by_name = {n: a for a, _t, n in syms}
    lo, hi = by_name["_text"], by_name["_end"]
    picks = []

    def add(va, label, n=64, cpu=0):
        n = min(n, PAGE - (va % PAGE))
        picks.append((va & ((1 << 64) - 1), n, cpu, label))

    for name in ("_stext", "linux_banner", "init_task", "init_uts_ns",
                 "swapper_pg_dir", "init_mm", "vmcoreinfo_note", "jiffies_64", "init_pid_ns",
                 "__start_rodata", "_sdata", "__bss_start"):
        if name in by_name and by_name[name] < hi:
            add(by_name[name] + koff, f"named:{name}")
    # expected to read as unmapped ('-'): the image header before _stext is not mapped,
    # and arm64 unmaps the init section once boot is done (free_initmem)
    ilo, ihi = by_name.get("__init_begin", 0), by_name.get("__init_end", 0)
    for name, delta in (("_text", 0), ("__init_begin", 0), ("__init_end", -64)):
        if name in by_name:
            add(by_name[name] + koff + delta, f"unmapped:{name}{delta or ''}")
    # swapper_pg_dir's entries for the kernel image and the linear map (its top-level
    # table: 512 x 8 bytes; sample each quarter)
    if "swapper_pg_dir" in by_name:
        for i in range(1, 8):
            add(by_name["swapper_pg_dir"] + koff + i * 512, f"named:swapper_pg_dir+{i * 512:#x}")
    kinds = {"text": "Tt", "rodata": "Rr", "data": "Dd", "bss": "Bb"}
    counts = {"text": 60, "rodata": 50, "data": 50, "bss": 40}
    for kind, types in kinds.items():
        cand = sorted({(a, n) for a, t, n in syms
                       if t in types and lo <= a < hi and not ilo <= a < ihi})
        for a, n in rnd.sample(cand, min(counts[kind], len(cand))):
            add(a + koff, f"{kind}:{n}")
    # linear map: the first and last page of RAM, the kernel image's alias, then
    # addresses spread over all of RAM at odd offsets
    total = sum(n for _, n in ranges)
    for s, n in ranges:
        add(linear_va(lay, s), f"linear:phys={s:#x}")
        add(linear_va(lay, s + n - 64), f"linear:phys={s + n - 64:#x}")
    if "linux_banner" in by_name:
        p = by_name["linux_banner"] + koff - lay["kimage_voffset"]
        add(linear_va(lay, p), f"linear:phys={p:#x}(linux_banner alias)")
    nlin = 100
    for i in range(nlin):
        off = i * total // nlin + rnd.randrange(0, PAGE) // 8 * 8
        for s, n in ranges:
            if off < n:
                add(linear_va(lay, s + off), f"linear:phys={s + off:#x}")
                break
            off -= n
    # the struct pages of RAM (vmemmap)
    if lay["vmemmap_start"] and lay["page_struct_size"]:
        for i in range(20):
            off = i * total // 20 + rnd.randrange(0, 1 << 20)
            for s, n in ranges:
                if off < n:
                    add(vmemmap_va(lay, (s + off) >> 12), f"vmemmap:pfn={(s + off) >> 12:#x}")
                    break
                off -= n
    # vmalloc'd memory (pages=) and modules, from what the guest printed
    con = open(os.path.join(out, "console.log"), "rb").read().decode("utf-8", "replace")
    vm = []
    for line in console_section(con, "vmallocinfo"):
        m = re.match(r"\s*0x([0-9a-f]+)-0x([0-9a-f]+)\s+(\d+)\s+(\S+)", line)
        # (hashed %pK values, if the guest printed those, are no kernel addresses)
        if m and int(m.group(1), 16) >= lay["page_offset"]:
            vm.append((int(m.group(1), 16), int(m.group(2), 16), m.group(4)))
    for start, end, caller in rnd.sample(vm, min(25, len(vm))):
        add(start, f"vmalloc:{caller}")
        # the last page of a vmalloc area is its guard page (not mapped)
        if end - start >= 3 * PAGE:
            add(start + PAGE + 8, f"vmalloc:{caller}+{PAGE + 8:#x}")
    for m in re.finditer(r"DUMPCONV: module (\S+) \d+ \d+ \S+ \S+ 0x([0-9a-f]+)", con):
        base = int(m.group(2), 16)
        if base:
            add(base, f"module:{m.group(1)}")
            add(base + 0x100, f"module:{m.group(1)}+0x100")
    # user space (TTBR0_EL1 half): each idle CPU still holds the page tables of the last
    # process it ran. Try the first two pages of every readable mapping of every process
    # the guest listed, through each CPU; what reads is mapped by that CPU's TTBR0_EL1.
    seen = set()
    for line in console_section(con, "maps"):
        m = re.match(r"(\d+) ([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)", line)
        if not m or not m.group(4).startswith("r"):
            continue
        pid, start, end = int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)
        what = m.group(5).strip() or "anon"
        for va in (start, start + PAGE + 0x40) if end - start > PAGE else (start,):
            for cpu in range(ncpus):
                if (va, cpu) not in seen:
                    seen.add((va, cpu))
                    add(va, f"user:cpu={cpu}:pid={pid}:{m.group(4)}:{what}", cpu=cpu)
    return picks


GDB_PORT_BASE = 47000


def gdb_reference(qmp, out, ranges, timeout):
    """Read kernel virtual memory of the stopped guest through QEMU's gdbstub:
    gdbstub-samples.txt (`<va> <hex bytes | -> <label>` per line; `-` = gdb could not
    read it: unmapped) and gdb-registers.txt (`info all-registers` per CPU, including the
    system registers QEMU's gdbstub exposes: TTBR0_EL1, TTBR1_EL1, TCR_EL1, SCTLR, ...)."""
    elf = read_elf(os.path.join(out, "phys.elf"))
    vmci_text = next((n["desc"].rstrip(b"\0").decode("ascii", "replace") for n in elf["notes"]
                      if n["name"] == "VMCOREINFO"), None)
    if not vmci_text:
        raise Fail("phys.elf has no VMCOREINFO note: qemu_fw_cfg / -device vmcoreinfo failed?")
    lay = arm64_layout(parse_vmcoreinfo(vmci_text))
    ncpus = len(qmp.cmd("query-cpus-fast"))
    picks = arm64_sample_addresses(out, ranges, lay, ncpus)
    tmp = tempfile.mkdtemp(prefix="dumpconv-gdb-")
    try:
        addrs = os.path.join(tmp, "addrs")
        with open(addrs, "w") as f:
            for va, n, cpu, label in picks:
                f.write(f"{va:#x} {n} {cpu} {label}\n")
        script = os.path.join(tmp, "samples.py")
        with open(script, "w") as f:
            f.write(GDB_SCRIPT)
        # a free port: ask the kernel for one, then let QEMU listen there (retry on a race)
        port = None
        for _ in range(10):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            cand = s.getsockname()[1]
            s.close()
            r = qmp.hmp(f"gdbserver tcp:127.0.0.1:{cand}")
            if "Waiting for gdb connection" in r:
                port = cand
                break
        if port is None:
            raise Fail(f"QEMU could not start its gdbserver: {r!r}")
        env = dict(os.environ, DUMPCONV_GDB_PORT=str(port),
                   DUMPCONV_GDB_ADDRS=addrs,
                   DUMPCONV_GDB_OUT=os.path.join(out, "gdbstub-samples.body"),
                   DUMPCONV_GDB_REGS=os.path.join(out, "gdb-registers.txt"))
        r = subprocess.run(["gdb-multiarch", "-batch", "-nx", "-x", script], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        with open(os.path.join(out, "gdb.log"), "w") as f:
            f.write(r.stdout + r.stderr)
        body = os.path.join(out, "gdbstub-samples.body")
        if r.returncode != 0 or not os.path.exists(body):
            raise Fail(f"gdb-multiarch failed ({r.returncode}):\n{(r.stdout + r.stderr)[-2000:]}")
        qmp.hmp("gdbserver none")
        with open(body) as f:
            lines = f.readlines()
        os.unlink(body)
        unread = sum(1 for line in lines if line.split()[1] == "-")
        with open(os.path.join(out, "gdbstub-samples.txt"), "w") as f:
            f.write("# Guest virtual memory read through QEMU's gdbstub (QEMU translates each\n"
                    "# address with the vCPU's own MMU state) while the guest was stopped, after\n"
                    "# every dump. One line per sample: <virtual address> <bytes as hex, or\n"
                    "# '-' if gdb could not read it (not mapped)> <kind:what>.\n"
                    "# Reads stay inside one 4 KiB page. Kinds: named, text, rodata, data, bss\n"
                    "# (System.map + KASLR offset), linear (PAGE_OFFSET + phys - PHYS_OFFSET),\n"
                    "# vmemmap (struct page of a pfn), vmalloc, module (as the guest printed\n"
                    "# them), unmapped (where the kernel unmapped its image header or init),\n"
                    "# user (read through CPU n's TTBR0_EL1: label user:cpu=n:pid:perms:what;\n"
                    "# every other read went through CPU 0).\n"
                    f"# kernel_offset={lay['kernel_offset']:#x} kimage_voffset={lay['kimage_voffset']:#x} "
                    f"phys_offset={lay['phys_offset']:#x} page_offset={lay['page_offset']:#x} "
                    f"va_bits={lay['va_bits']}\n")
            f.writelines(lines)
        log(f"gdbstub: {len(lines)} samples ({unread} unreadable), port {port}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    if a.arch == "aarch64":
        # HMP gives X0-X30/SP/PC/PSTATE, the gdbstub the system registers
        cpus = parse_registers_arm64(regs)
        sysregs = parse_gdb_registers(open(os.path.join(out, "gdb-registers.txt")).read())
        for c in cpus:
            for k, v in sysregs.get(c["index"], {}).items():
                c.setdefault(k, v)
        modes = {paging_mode_arm64(c) for c in cpus}
        src = "TCR_EL1/SCTLR_EL1 (gdb-registers.txt)"
    else:
        cpus = parse_registers(regs)
        modes = {paging_mode(c) for c in cpus}
        src = "registers.txt"
    if modes != {a.paging}:
        problems.append(f"paging mode from {src} is {sorted(modes)}, expected {a.paging}")
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
    elif a.arch in ("x86_64", "aarch64"):
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
        elif a.arch == "aarch64" and "NUMBER(kimage_voffset)" in vmci:
            banner_phys = banner_virt - int(vmci["NUMBER(kimage_voffset)"], 16)
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

    arm64 = None
    samples = None
    if a.arch == "aarch64" and vmci:
        arm64, samples, p = check_arm64(out, vmci, cpus, ranges, kernel_offset, banner, con)
        problems += p
    if a.arch == "aarch64":
        # QEMU's arm64 dumps carry no system registers: the CPU state as dumpconv's
        # `--cpu-state` JSON (the neutral model: named registers, hex strings)
        with open(os.path.join(out, "cpu-state.json"), "w") as f:
            json.dump([{"index": c["index"], "pid": c["index"] + 1, "arch": "aarch64",
                        "regs": {k: f"{v:#x}" for k, v in c.items() if k != "index"}}
                       for c in cpus], f, indent=1)
            f.write("\n")

    if a.kaslr == 0 and kernel_offset not in (None, 0):
        problems.append(f"nokaslr guest has kernel offset {kernel_offset:#x}")
    if a.kaslr == 1 and kernel_offset == 0:
        problems.append("KASLR guest has kernel offset 0")

    crashk = None
    if a.crashk:
        crashk, p = crashk_check(out, a.release, cpus, vmci_text, banner)
        problems += p

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
        **({"aarch64": arm64, "gdbstub_samples": samples} if a.arch == "aarch64" else {}),
        **({"crashk": crashk} if crashk else {}),
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
        if a.arch == "aarch64":
            log(f"CPU{c['index']}: {paging_mode_arm64(c)} TTBR0_EL1={c.get('ttbr0_el1', 0):#x} "
                f"TTBR1_EL1={c.get('ttbr1_el1', 0):#x} TCR_EL1={c.get('tcr_el1', 0):#x} "
                f"SCTLR_EL1={c.get('sctlr_el1', 0):#x}")
            continue
        log(f"CPU{c['index']}: {paging_mode(c)} CR0={c['cr0']:#x} CR3={c['cr3']:#x} "
            f"CR4={c['cr4']:#x} EFER={c.get('efer', 0):#x}")
    log(f"kernel_offset={kernel_offset if kernel_offset is None else hex(kernel_offset)} "
        f"({koff_src}); notes={note_names}")
    if problems:
        raise Fail(f"{a.guest}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------
# x86_64-crashk: the crashed kernel and the kdump capture kernel in one dump
def console_facts(con, name):
    """The last `DUMPCONV: <name>-facts-begin` .. `-end` block the guest printed:
    {key: value} for its `key value` lines and "tasks": [[pid, comm], ...]."""
    blocks = re.findall(r"DUMPCONV: %s-facts-begin\r?\n(.*?)DUMPCONV: %s-facts-end" % (name, name), con, re.S)
    if not blocks:
        return None, None
    text = blocks[-1].replace("\r", "")
    facts, tasks, in_tasks = {}, [], False
    for line in text.splitlines():
        if line == "tasks-begin":
            in_tasks = True
        elif line == "tasks-end":
            in_tasks = False
        elif in_tasks:
            _, pid, comm = line.split(" ", 2)
            tasks.append([int(pid), comm])
        elif " " in line:
            k, v = line.split(" ", 1)
            facts[k] = v
    facts["tasks"] = tasks
    return facts, text


def vmcoreinfo_note_at(ram, phys):
    """The VMCOREINFO ELF note at a physical address of ram.raw (namesz, descsz, type,
    "VMCOREINFO\\0" padded to 4, text), as /sys/kernel/vmcoreinfo locates it."""
    with open(ram, "rb") as f:
        f.seek(phys)
        head = f.read(12 + 12)
        namesz, descsz, _typ = struct.unpack_from("<III", head)
        if namesz != 11 or head[12:23] != b"VMCOREINFO\0" or not 0 < descsz <= 1 << 16:
            return None
        f.seek(phys + 12 + 12)
        return f.read(descsz).rstrip(b"\0").decode("ascii", "replace")


def crashk_check(out, release, cpus, qemu_vmci_text, banner):
    """Facts of x86_64-crashk: what the crashed kernel printed just before `echo c` and
    what the capture kernel printed before READY, both kernels' VMCOREINFO notes read
    from ram.raw where each kernel said it was, their phys_base, linux_banner at each
    kernel's physical address, and which CPU holds which kernel. Writes crashk-facts.json
    (README: x86_64-crashk). Returns (summary, problems)."""
    problems = []
    con = open(os.path.join(out, "console.log"), "rb").read().decode("utf-8", "replace")
    crashed, ctext = console_facts(con, "crashk")
    capture, ptext = console_facts(con, "capture")
    if crashed is None or capture is None:
        return None, [f"console lacks the crashk-facts ({crashed is not None}) / capture-facts "
                      f"({capture is not None}) blocks"]
    for name, text in (("crashed-facts.txt", ctext), ("capture-facts.txt", ptext)):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    m = re.search(r"DUMPCONV: crashk reserved\s+([0-9a-f]+)-([0-9a-f]+) : Crash kernel", con)
    region = (int(m.group(1), 16), int(m.group(2), 16) + 1) if m else None
    if region is None:
        problems.append("no 'crashk reserved' line (the Crash kernel range of /proc/iomem)")
    sysmap = {n: a for a, _t, n in read_system_map(os.path.join(out, "System.map"))}
    ram = os.path.join(out, "ram.raw")
    kernels = {}
    for role, facts in (("crashed", crashed), ("capture", capture)):
        note = facts.get("vmcoreinfo", "").split()
        phys = int(note[0], 16) if note else None
        text = vmcoreinfo_note_at(ram, phys) if phys is not None else None
        if text is None:
            problems.append(f"{role} kernel: no VMCOREINFO note in ram.raw at {facts.get('vmcoreinfo')!r}")
            continue
        with open(os.path.join(out, f"vmcoreinfo-{role}.txt"), "w") as f:
            f.write(text)
        v = parse_vmcoreinfo(text)
        pb = int(v.get("NUMBER(phys_base)", "0"), 0)
        k = {"vmcoreinfo_phys": phys, "vmcoreinfo_size": int(note[1], 16) if len(note) > 1 else None,
             "osrelease": v.get("OSRELEASE"), "phys_base": pb,
             "kernel_offset": int(v.get("KERNELOFFSET", "0"), 16),
             "crashtime": int(v["CRASHTIME"]) if "CRASHTIME" in v else None,
             "version": facts.get("version"), "cmdline": facts.get("cmdline"),
             "tasks": facts["tasks"]}
        if v.get("OSRELEASE") != release:
            problems.append(f"{role} VMCOREINFO OSRELEASE={v.get('OSRELEASE')} != {release}")
        if "linux_banner" in sysmap and banner:
            bp = sysmap["linux_banner"] + k["kernel_offset"] - 0xFFFFFFFF80000000 + pb
            with open(ram, "rb") as f:
                f.seek(bp)
                if f.read(len(banner)) != banner.encode():
                    problems.append(f"{role} kernel: linux_banner not at phys {bp:#x}")
            k["linux_banner_phys"] = bp
        kernels[role] = k
    if problems:
        return None, problems
    cr, cp = kernels["crashed"], kernels["capture"]
    if cr["crashtime"] is None:
        problems.append("the crashed kernel's VMCOREINFO has no CRASHTIME=")
    if cp["crashtime"] is not None:
        problems.append("the capture kernel's VMCOREINFO has CRASHTIME=")
    if cr["phys_base"] == cp["phys_base"]:
        problems.append(f"both kernels have phys_base {cr['phys_base']:#x}")
    if region and not region[0] <= cp["phys_base"] + 0x1000000 < region[1]:
        problems.append(f"capture kernel phys_base {cp['phys_base']:#x} outside {region}")
    if "elfcorehdr=" not in (cp["cmdline"] or ""):
        problems.append("the capture kernel's command line has no elfcorehdr=")
    if "crashkernel=" not in (cr["cmdline"] or ""):
        problems.append("the crashed kernel's command line has no crashkernel=")
    for role, k in kernels.items():
        if not any(c == "init" for p, c in k["tasks"] if p == 1):
            problems.append(f"{role} kernel: no pid 1 'init' in its task list")
    # QEMU's vmcoreinfo device knows the note qemu_fw_cfg gave it. The capture kernel
    # loads that module too (init-capture.sh), but its driver does not hand over its own
    # note in a kdump kernel (observed with Debian's 6.1), so QEMU's dumps carry the
    # crashed kernel's VMCOREINFO (with CRASHTIME) while the CPUs run the capture kernel
    qemu_note = None
    if qemu_vmci_text is not None:
        qemu_note = ("capture" if qemu_vmci_text == open(os.path.join(out, "vmcoreinfo-capture.txt")).read()
                     else "crashed" if qemu_vmci_text == open(os.path.join(out, "vmcoreinfo-crashed.txt")).read()
                     else "neither")
        if qemu_note != "crashed":
            problems.append(f"phys.elf's VMCOREINFO note is the {qemu_note} kernel's, expected the crashed kernel's")
    # which kernel each CPU is in: the capture kernel runs in the reserved region (plus
    # the low 1 MiB it may use); CPU 0 should be the capture kernel (crashk.sh pins the
    # crash there), the other CPUs stay stopped in the crashed kernel
    cpu_kernel = []
    for c in cpus:
        cr3 = c.get("cr3", 0) & ~0xFFF
        inside = region is not None and region[0] <= cr3 < region[1]
        cpu_kernel.append({"index": c["index"], "cr3": cr3, "kernel": "capture" if inside else "crashed"})
    if cpu_kernel and cpu_kernel[0]["kernel"] != "capture":
        problems.append(f"CPU 0's CR3 {cpu_kernel[0]['cr3']:#x} is not in the capture kernel's region {region}")
    symbols = {n: f"{sysmap[n]:#x}" for n in ("linux_banner", "init_task", "init_top_pgt",
                                              "saved_command_line", "vmcoreinfo_note", "init_uts_ns")
               if n in sysmap}
    summary = {
        "crashkernel_region": [region[0], region[1]] if region else None,
        "kexec": crashed.get("kexec"), "capture_append": crashed.get("capture-append"),
        "crash_cpu": int(crashed.get("crash-cpu", "0")),
        "capture_uname_r": capture.get("uname-r"), "vmcore_size": capture.get("vmcore-size"),
        "qemu_vmcoreinfo_note": qemu_note, "cpus": cpu_kernel, "symbols": symbols,
        "crashed": cr, "capture": cp,
    }
    with open(os.path.join(out, "crashk-facts.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    log(f"crashk: crashed phys_base={cr['phys_base']:#x} ({len(cr['tasks'])} tasks), capture "
        f"phys_base={cp['phys_base']:#x} ({len(cp['tasks'])} tasks), CPUs "
        + ", ".join(f"{c['index']}:{c['kernel']}" for c in cpu_kernel))
    return {k: v for k, v in summary.items() if k not in ("crashed", "capture")} | {
        "crashed_phys_base": cr["phys_base"], "capture_phys_base": cp["phys_base"]}, problems


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
        # (QEMU writes 64 KiB blocks for aarch64 guests: its kdump page size is the
        # largest arm64 granule, whatever the guest uses)
        b64, b32 = struct.unpack_from("<i", mm, 428)[0], struct.unpack_from("<i", mm, 416)[0]
        if b64 == 4096 or (b32 != 4096 and b64 in (16384, 65536)):
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
    mt.add_argument("--crashk", type=int, default=0)
    a = ap.parse_args()
    try:
        capture(a) if a.cmd == "capture" else meta(a)
    except Fail as e:
        print(f"capture.py {a.cmd}: ERROR: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
