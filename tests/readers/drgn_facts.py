#!/usr/bin/env python3
"""Print what drgn reads from a Linux kernel dump, as one JSON object on stdout.

Usage: drgn_facts.py CORE VMLINUX

Used by tests/tests/readers_drgn.rs to compare dumpconv's outputs with QEMU's own dump
of the same guest: the kernel release (VMCOREINFO's, as drgn reports it, and
init_uts_ns's), linux_banner, every task (pid, comm) and every printk record (seq,
timestamp, text). Exits 1 with the exception on stderr when drgn cannot open the dump.
"""
import json
import sys
import time

import drgn
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.printk import get_printk_records


def main():
    core, vmlinux = sys.argv[1], sys.argv[2]
    t0 = time.monotonic()
    prog = drgn.Program()
    prog.set_core_dump(core)
    t1 = time.monotonic()
    prog.load_debug_info([vmlinux])
    t2 = time.monotonic()
    uts = prog["init_uts_ns"].name
    facts = {
        "drgn": drgn.__version__,
        "arch": prog.platform.arch.name,
        "uts_release": prog["UTS_RELEASE"].string_().decode(),
        "release": uts.release.string_().decode(),
        "version": uts.version.string_().decode(),
        "banner": prog["linux_banner"].string_().decode(),
        "tasks": sorted(
            [t.pid.value_(), t.comm.string_().decode()] for t in for_each_task(prog)
        ),
        "printk": [
            [r.seq, r.timestamp, r.text.decode(errors="replace")]
            for r in get_printk_records(prog)
        ],
    }
    t3 = time.monotonic()
    facts["seconds"] = {
        "open": round(t1 - t0, 3),
        "debug_info": round(t2 - t1, 3),
        "read": round(t3 - t2, 3),
    }
    json.dump(facts, sys.stdout)
    print()


if __name__ == "__main__":
    main()
