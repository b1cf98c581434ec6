#!/usr/bin/env python3
"""Save files written by libvirt 9.0 of one boot of a suite guest (issue 16).

  libvirt_saves.py --guest-dir DIR --out OUT --emulator WRAPPER --conf QEMU_CONF --pid-file F

Called by libvirt-saves.sh, which installs libvirt, starts virtlogd and cleans up. This
script owns libvirtd (started with --pid-file F, restarted whenever qemu.conf changes,
since the daemon reads save_image_format / dump_image_format at start) and the domain.

Boots the kernel + initramfs of DIR (ensure-guests.sh's x86_64-4level) as a transient
`<domain type='qemu'>` (pc, 512 MiB, 2 vCPUs, qemu64, vmcoreinfo), waits for READY,
suspends it and writes, from the stopped guest:

  registers.txt            HMP `info registers -a`
  mtree.txt, ram.raw       `info mtree -f`, pmemsave of each pc.ram range (sparse)
  virsh-save.save          `virsh save` with save_image_format = "raw"
  virsh-save-gzip.save     the same guest restored paused (`virsh restore --paused`:
  virsh-save-bzip2.save    it never runs again, so RAM and registers stay those above)
  virsh-save-lzop.save     and saved with save_image_format = "gzip" / "bzip2" / "lzop"
  virsh-dump-lzop          `virsh dump` (no --memory-only) with dump_image_format = "lzop"
  virsh-dump.migstream     `virsh dump` with the default (raw) dump_image_format
  domain.xml, facts.json   the XML given to `virsh create`; versions, sizes, timings

After each restore the registers are read again and must equal registers.txt; before the
last dump RAM is read again with pmemsave and must equal ram.raw.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture import Fail, READY, build_ram_raw, log, parse_mtree_ram, tail  # noqa: E402
from savefile import base_command  # noqa: E402

DOM = "dumpconv-libvirt"
VIRSH = ["virsh", "-q", "-c", "qemu:///system"]


def virsh(*args, timeout=600):
    r = subprocess.run(VIRSH + list(args), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise Fail(f"virsh {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def hmp(cmd):
    return virsh("qemu-monitor-command", "--hmp", DOM, cmd)


class Daemon:
    """libvirtd, restarted with a new qemu.conf."""

    def __init__(self, conf, pid_file, emulator):
        self.conf, self.pid_file, self.emulator = conf, pid_file, emulator

    def pid(self):
        try:
            return int(open(self.pid_file).read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # a daemonized libvirtd is not our child; a zombie of one is gone for us
            try:
                if open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.2)
        else:
            raise Fail(f"libvirtd (pid {pid}) did not stop")
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass

    def start(self, save_format="raw", dump_format="raw"):
        self.stop()
        # root runs QEMU (no user switch, no labels, no namespaces or cgroups: this is a
        # container without systemd)
        with open(self.conf, "w") as f:
            f.write('user = "root"\ngroup = "root"\ndynamic_ownership = 0\n'
                    'remember_owner = 0\nsecurity_driver = "none"\nnamespaces = []\n'
                    'cgroup_controllers = []\n'
                    f'save_image_format = "{save_format}"\n'
                    f'dump_image_format = "{dump_format}"\n')
        # libvirtd looks for qemu-system-<arch> in PATH to build the host's capabilities
        # (without one it refuses an x86_64 guest): the wrapper first
        env = dict(os.environ, PATH=os.path.dirname(self.emulator) + ":" + os.environ.get("PATH", ""))
        subprocess.run(["libvirtd", "-d", "-p", self.pid_file], check=True, env=env)
        deadline = time.monotonic() + 60
        while True:
            r = subprocess.run(VIRSH + ["version"], capture_output=True, text=True)
            if r.returncode == 0:
                return r.stdout
            if time.monotonic() > deadline:
                raise Fail(f"libvirtd did not answer: {r.stderr}\n"
                           f"{tail('/var/log/libvirt/libvirtd.log')}")
            time.sleep(0.3)


def domain_xml(a, kernel, initrd, append, cpu, console):
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")  # noqa: E731
    return f"""<domain type='qemu'>
  <name>{DOM}</name>
  <memory unit='MiB'>{a.mem}</memory>
  <vcpu>{a.smp}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{esc(kernel)}</kernel>
    <initrd>{esc(initrd)}</initrd>
    <cmdline>{esc(append)}</cmdline>
  </os>
  <!-- acpi: without it libvirt passes -no-acpi, and the guest's qemu_fw_cfg then never
       writes its VMCOREINFO address to the vmcoreinfo device -->
  <features><acpi/><vmcoreinfo state='on'/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>{esc(cpu)}</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{esc(a.emulator)}</emulator>
    <!-- append='on': `virsh restore` would truncate it otherwise -->
    <serial type='file'><source path='{esc(console)}' append='on'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--guest-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--emulator", required=True)
    ap.add_argument("--conf", required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    _qemu, kernel, initrd, append, _dirs, cpu = base_command(a.guest_dir)
    out = a.out
    os.makedirs(out, exist_ok=True)
    console = os.path.join(out, "console.log")
    xml_path = os.path.join(out, "domain.xml")
    with open(xml_path, "w") as f:
        f.write(domain_xml(a, kernel, initrd, append, cpu, console))
    d = Daemon(a.conf, a.pid_file, a.emulator)
    timings = {}
    t_all = time.monotonic()
    files = {}
    try:
        version = d.start()
        t = time.monotonic()
        virsh("create", xml_path)
        deadline = t + a.timeout
        while True:
            try:
                if READY.encode() in open(console, "rb").read():
                    break
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline or DOM not in virsh("list", "--name"):
                raise Fail(f"guest not READY; console.log tail:\n{tail(console)}\n"
                           f"{tail(f'/var/log/libvirt/qemu/{DOM}.log')}")
            time.sleep(0.5)
        timings["boot"] = time.monotonic() - t
        time.sleep(1.0)
        virsh("suspend", DOM)
        state = virsh("domstate", "--reason", DOM).strip()
        if not state.startswith("paused"):
            raise Fail(f"domain not paused after suspend: {state}")

        def save(name, text):
            with open(os.path.join(out, name), "w") as f:
                f.write(text)

        regs = hmp("info registers -a")
        save("registers.txt", regs)
        mtree = hmp("info mtree -f")
        save("mtree.txt", mtree)
        flat, entries = parse_mtree_ram(mtree)
        ranges = []
        for start, end, _typ, name, _off in entries:
            if name != "pc.ram":
                continue
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1][1] += end + 1 - start
            else:
                ranges.append([start, end + 1 - start])
        ranges = [tuple(r) for r in ranges]
        with open(os.path.join(out, "flat-ram-ranges.json"), "w") as f:
            json.dump([{"start": s, "size": n} for s, n in flat], f)
        with open(os.path.join(out, "ram-ranges.json"), "w") as f:
            json.dump([{"start": s, "size": n} for s, n in ranges], f)
        log("RAM ranges: " + ", ".join(f"{s:#x}+{n:#x}" for s, n in ranges))

        def pmemsave(prefix):
            for start, size in ranges:
                # HMP: the path must be quoted
                hmp(f'pmemsave {start:#x} {size:#x} "{os.path.join(out, f"{prefix}-{start:x}.raw")}"')

        t = time.monotonic()
        pmemsave("ram")
        timings["pmemsave"] = time.monotonic() - t
        build_ram_raw(out, ranges)
        for start, _ in ranges:
            os.unlink(os.path.join(out, f"ram-{start:x}.raw"))

        def timed(key, *args):
            t = time.monotonic()
            virsh(*args)
            timings[key] = time.monotonic() - t

        prev = os.path.join(out, "virsh-save.save")
        timed("virsh save", "save", DOM, prev)
        files["virsh-save.save"] = "virsh save (save_image_format = \"raw\")"

        def restore(src, save_format="raw", dump_format="raw"):
            d.start(save_format, dump_format)
            timed(f"virsh restore {os.path.basename(src)}", "restore", "--paused", src)
            again = hmp("info registers -a")
            if again != regs:
                raise Fail(f"registers after restoring {src} differ from registers.txt")

        for codec in ("gzip", "bzip2", "lzop"):
            restore(prev, save_format=codec)
            name = f"virsh-save-{codec}.save"
            timed(f"virsh save {codec}", "save", DOM, os.path.join(out, name))
            files[name] = f"virsh save (save_image_format = \"{codec}\")"
            prev = os.path.join(out, name)

        restore(prev, dump_format="lzop")
        timed("virsh dump lzop", "dump", DOM, os.path.join(out, "virsh-dump-lzop"))
        files["virsh-dump-lzop"] = "virsh dump (dump_image_format = \"lzop\")"
        virsh("destroy", DOM)

        restore(prev)
        # RAM too is still that of ram.raw: read it again and compare
        pmemsave("check")
        for start, size in ranges:
            p = os.path.join(out, f"check-{start:x}.raw")
            with open(p, "rb") as x, open(os.path.join(out, "ram.raw"), "rb") as y:
                y.seek(start)
                pos = 0
                while pos < size:
                    n = min(1 << 20, size - pos)
                    if x.read(n) != y.read(n):
                        raise Fail(f"RAM at {start + pos:#x} after the restores differs from ram.raw")
                    pos += n
            os.unlink(p)
        timed("virsh dump", "dump", DOM, os.path.join(out, "virsh-dump.migstream"))
        files["virsh-dump.migstream"] = "virsh dump (default: no --memory-only, dump_image_format = \"raw\")"
        virsh("destroy", DOM)
    finally:
        subprocess.run(VIRSH + ["destroy", DOM], capture_output=True)
        d.stop()
    for f in os.listdir(out):
        os.chmod(os.path.join(out, f), 0o644)
    facts = {"libvirt": version, "machine": "pc", "mem_mib": a.mem, "smp": a.smp,
             "ram_ranges": [{"start": s, "size": n} for s, n in ranges],
             "files": {k: {"made_by": v, "bytes": os.path.getsize(os.path.join(out, k))}
                       for k, v in files.items()},
             "timings": {k: round(v, 2) for k, v in timings.items()},
             "total_seconds": round(time.monotonic() - t_all, 2)}
    with open(os.path.join(out, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)
    log(f"{out}: done in {facts['total_seconds']}s")


if __name__ == "__main__":
    try:
        main()
    except Fail as e:
        print(f"libvirt_saves.py: ERROR: {e}", file=sys.stderr)
        sys.exit(1)
