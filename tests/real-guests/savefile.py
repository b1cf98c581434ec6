#!/usr/bin/env python3
"""VM save files of a real guest (issue 16): QEMU migration streams plus their references.

  savefile.py --guest-dir DIR --out OUT --machine pc|q35 --mem MiB [--vga]

Boots the kernel + initramfs that ensure-guests.sh captured in DIR (the same QEMU binary,
kernel, initramfs, -L dirs and command line, read from DIR/qemu-cmdline.txt), with the
given machine type and memory size, waits for READY, stops the guest and writes, from the
stopped guest, in this order:

  registers.txt   HMP `info registers -a`
  mtree.txt       HMP `info mtree -f` (pc.ram ranges -> ram-ranges.json, every RAM range
                  of the flat view, VRAM included -> flat-ram-ranges.json)
  ram.raw         HMP-equivalent QMP `pmemsave` of each RAM range, assembled (sparse)
  phys.elf        QEMU's own `dump-guest-memory` (its VMCOREINFO note is the reference)
  disk.qcow2      with --savevm NAME: the guest's qcow2 disk (made before the boot with
                  qemu-img, attached with -drive if=none) after HMP `savevm NAME`: the
                  snapshot's vmstate (a QEVM stream) is inside it; snapshots.txt is HMP
                  `info snapshots`
  vm.migstream    QMP `migrate` to `exec:cat > vm.migstream` (the stream QEMU writes for
                  `virsh save` / `virsh dump`), polled with `query-migrate`
  vm.mapped-ram   with --mapped-ram instead of vm.migstream: `migrate file:vm.mapped-ram`
                  with the capabilities multifd and mapped-ram (QEMU >= 9)
  facts.json      machine type, QEMU version, sizes, timings

--qemu-root ROOT runs the QEMU of a Debian root (ensure-debian13-qemu.sh) through the
root's own loader and libraries, without chroot, with its firmware (-L ROOT/usr/share/...),
instead of the guest's QEMU 7.2. --qemu-img is the qemu-img command for --savevm.

Called by savefile.sh; see README.md ("VM save files").
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture import QMP, Fail, READY, build_ram_raw, log, parse_mtree_ram, tail  # noqa: E402


def base_command(guest_dir):
    """(qemu, kernel, initrd, append, [-L dirs], cpu) from the guest's qemu-cmdline.txt."""
    argv = shlex.split(open(os.path.join(guest_dir, "qemu-cmdline.txt")).read())
    # the command line was written with " ".join: -append's value has spaces; take it
    # between -append and the next option
    def value(opt):
        i = argv.index(opt)
        return argv[i + 1]
    i = argv.index("-append")
    j = i + 1
    words = []
    while j < len(argv) and not argv[j].startswith("-"):
        words.append(argv[j])
        j += 1
    datadirs = [argv[k + 1] for k, w in enumerate(argv) if w == "-L"]
    return argv[0], value("-kernel"), value("-initrd"), " ".join(words), datadirs, value("-cpu")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--guest-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--vga", action="store_true", help="add -device VGA (the legacy VGA window)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--savevm", metavar="NAME", help="also HMP savevm NAME into disk.qcow2")
    ap.add_argument("--qemu-img", default="qemu-img", help="qemu-img command (shell words)")
    ap.add_argument("--mapped-ram", action="store_true",
                    help="migrate file: with multifd + mapped-ram (vm.mapped-ram)")
    ap.add_argument("--qemu-root", help="run the QEMU of this Debian root (loader, no chroot)")
    a = ap.parse_args()
    qemu, kernel, initrd, append, datadirs, cpu = base_command(a.guest_dir)
    qemu = [qemu]
    if a.qemu_root:
        r = a.qemu_root
        qemu = [f"{r}/lib64/ld-linux-x86-64.so.2", "--library-path",
                f"{r}/lib/x86_64-linux-gnu:{r}/usr/lib/x86_64-linux-gnu",
                f"{r}/usr/bin/qemu-system-x86_64"]
        datadirs = [f"{r}/usr/share/qemu", f"{r}/usr/share/seabios"]
        os.environ["QEMU_MODULE_DIR"] = f"{r}/usr/lib/x86_64-linux-gnu/qemu"
    out = a.out
    os.makedirs(out, exist_ok=True)
    disk = os.path.join(out, "disk.qcow2")
    if a.savevm:
        # small: the vmstate goes after the virtual disk's end, in the same image
        subprocess.run(shlex.split(a.qemu_img) + ["create", "-q", "-f", "qcow2", disk, "16M"],
                       check=True)
    console = os.path.join(out, "console.log")
    tmp = tempfile.mkdtemp(prefix="dumpconv-save-")
    sock = os.path.join(tmp, "qmp.sock")
    cmd = qemu + ["-machine", f"{a.machine},accel=tcg", "-smp", str(a.smp), "-m", str(a.mem),
           "-cpu", cpu, "-nodefaults", "-display", "none", "-no-reboot",
           "-kernel", kernel, "-initrd", initrd, "-append", append,
           "-chardev", f"file,id=ser0,path={console}", "-serial", "chardev:ser0",
           "-qmp", f"unix:{sock},server=on,wait=off", "-device", "vmcoreinfo",
           "-name", os.path.basename(out)]
    if a.savevm:
        cmd += ["-drive", f"file={disk},format=qcow2,if=none,id=disk0"]
    if a.vga:
        cmd += ["-device", "VGA"]
    for d in datadirs:
        cmd += ["-L", d]
    with open(os.path.join(out, "qemu-cmdline.txt"), "w") as f:
        f.write(shlex.join(cmd) + "\n")
    timings = {}
    t_all = time.monotonic()
    qlog = open(os.path.join(out, "qemu.log"), "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        qmp = QMP(sock, proc)
        t = time.monotonic()
        deadline = t + a.timeout
        while True:
            try:
                if READY.encode() in open(console, "rb").read():
                    break
            except FileNotFoundError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Fail(f"guest not READY; console.log tail:\n{tail(console)}")
            time.sleep(0.5)
        timings["boot"] = time.monotonic() - t
        time.sleep(1.0)
        qmp.cmd("stop")
        if qmp.cmd("query-status").get("running"):
            raise Fail("VM still running after stop")

        def save(name, text):
            with open(os.path.join(out, name), "w") as f:
                f.write(text)

        save("registers.txt", qmp.hmp("info registers -a"))
        mtree = qmp.hmp("info mtree -f")
        save("mtree.txt", mtree)
        flat, entries = parse_mtree_ram(mtree)
        # guest RAM is pc.ram (x86) / mach-virt.ram (arm64 virt); a display device's VRAM (vga.vram at its PCI BAR) is RAM
        # in QEMU's flat view too (QEMU's dump has it), but not guest memory: kept apart
        ranges = []
        for start, end, _typ, name, _off in entries:
            if name not in ("pc.ram", "mach-virt.ram"):
                continue
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1][1] += end + 1 - start
            else:
                ranges.append([start, end + 1 - start])
        ranges = [tuple(r) for r in ranges]
        with open(os.path.join(out, "flat-ram-ranges.json"), "w") as f:
            json.dump([{"start": s, "size": n} for s, n in flat], f)
        log("RAM ranges: " + ", ".join(f"{s:#x}+{n:#x}" for s, n in ranges))
        t = time.monotonic()
        for start, size in ranges:
            qmp.cmd("pmemsave", timeout=a.timeout, val=start, size=size,
                    filename=os.path.join(out, f"ram-{start:x}.raw"))
        timings["pmemsave"] = time.monotonic() - t
        with open(os.path.join(out, "ram-ranges.json"), "w") as f:
            json.dump([{"start": s, "size": n} for s, n in ranges], f)
        t = time.monotonic()
        qmp.cmd("dump-guest-memory", paging=False, protocol="file:" + os.path.join(out, "phys.elf"),
                detach=True, format="elf")
        while qmp.cmd("query-dump")["status"] != "completed":
            if time.monotonic() > t + a.timeout:
                raise Fail("dump-guest-memory did not complete")
            time.sleep(0.2)
        timings["dump-guest-memory"] = time.monotonic() - t
        if a.savevm:
            # before the migration: a completed migration leaves the disks inactive
            t = time.monotonic()
            while True:
                r = qmp.hmp(f"savevm {a.savevm}", timeout=a.timeout)
                if "dump-guest-memory in progress" in r and time.monotonic() < t + 60:
                    time.sleep(0.5)
                    continue
                break
            if r.strip():
                raise Fail(f"savevm {a.savevm}: {r.strip()}")
            timings["savevm"] = time.monotonic() - t
            save("snapshots.txt", qmp.hmp("info snapshots"))
            if qmp.cmd("query-status").get("running"):
                raise Fail("VM running after savevm")
        # the stream, from the stopped guest (as `virsh save` / `virsh dump` do it)
        t = time.monotonic()
        if a.mapped_ram:
            path = os.path.join(out, "vm.mapped-ram")
            qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "multifd", "state": True},
                {"capability": "mapped-ram", "state": True}])
            uri = "file:" + path
        else:
            path = os.path.join(out, "vm.migstream")
            uri = "exec:cat > " + shlex.quote(path)
        while True:
            # QEMU blocks migration until the dump's cleanup has run, which can be a
            # moment after query-dump says "completed"
            try:
                qmp.cmd("migrate", uri=uri)
                break
            except Fail as e:
                if "dump-guest-memory in progress" not in str(e) or time.monotonic() > t + 60:
                    raise
                time.sleep(0.5)
        while True:
            st = qmp.cmd("query-migrate")
            if st.get("status") == "completed":
                break
            if st.get("status") in ("failed", "cancelled"):
                raise Fail(f"migrate failed: {st}")
            if time.monotonic() > t + a.timeout:
                raise Fail(f"migrate not done after {a.timeout}s: {st}")
            time.sleep(0.2)
        timings["migrate"] = time.monotonic() - t
        status = qmp.cmd("query-status")
        machines = [m for m in qmp.cmd("query-machines") if m.get("name") == a.machine
                    or m.get("alias") == a.machine]
        qmp.cmd("quit")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        qlog.close()
        shutil.rmtree(tmp, ignore_errors=True)
    build_ram_raw(out, ranges)
    for start, _ in ranges:
        os.unlink(os.path.join(out, f"ram-{start:x}.raw"))
    for f in os.listdir(out):
        os.chmod(os.path.join(out, f), 0o644)
    # QEMU's ELF dump is mostly zero pages: punch holes (same bytes, less disk)
    subprocess.run(["fallocate", "--dig-holes", os.path.join(out, "phys.elf")], check=False)
    facts = {"machine": a.machine, "vga": a.vga, "machine_info": machines, "mem_mib": a.mem, "smp": a.smp,
             "qemu": qmp.version, "status_after": status, "ram_ranges": [
                 {"start": s, "size": n} for s, n in ranges],
             "migstream_bytes": os.path.getsize(path),
             "migstream": os.path.basename(path),
             "savevm": a.savevm,
             "timings": {k: round(v, 2) for k, v in timings.items()},
             "total_seconds": round(time.monotonic() - t_all, 2)}
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)
    log(f"{out}: done in {facts['total_seconds']}s, {facts['migstream']} {facts['migstream_bytes']} bytes")


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"savefile.py: ERROR: {e}", file=sys.stderr)
        sys.exit(1)
