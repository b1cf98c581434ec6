#!/usr/bin/env bash
# Issue 11: the cost of finding the page-table root without CPU state, against the
# conversion itself. On the x86_64-highmem guest's raw image (5.5 GiB file, 4.5 GiB of
# RAM + the PCI hole), from the page cache: the RAM search for VMCOREINFO alone (`info
# --json`'s vmcoreinfo_scan.seconds), the physical conversion, --paging with the root
# from the VMCOREINFO found in RAM, and --paging with the last-resort scan (--root scan);
# then on the 512 MiB x86_64-4level QEMU ELF, --paging (which searches RAM for other
# kernels) against --paging --root cpu (which does not). Best of N wall-clock runs.
# Usage: [BIN=target/ci/dumpconv] [N=3] bash bench/roots.sh
set -euo pipefail
BIN=${BIN:-target/ci/dumpconv}
N=${N:-3}
G=$HOME/.cache/dumpconv/guests
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
best() { # best wall-clock seconds of N runs of "$@"
  local b=""
  for _ in $(seq "$N"); do
    local t0 t1 s
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    s=$(echo "$t1 - $t0" | bc)
    if [ -z "$b" ] || [ "$(echo "$s < $b" | bc)" = 1 ]; then b=$s; fi
  done
  printf '%.2f' "$b"
}
raw=$G/x86_64-highmem/ram.raw
cat "$raw" >/dev/null
echo "input: $raw ($(stat -c %s "$raw") bytes), $(nproc) cores, $(date -u +%F)"
scan=$("$BIN" info --json "$raw" 2>/dev/null | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["vmcoreinfo_scan"]["seconds"])')
echo "RAM search for VMCOREINFO (info)          ${scan} s (one run)"
echo "info (open + search + checks)             $(best "$BIN" info "$raw") s"
echo "convert -> ELF, physical                  $(best "$BIN" -q "$raw" -o $work/a.elf --force) s"
echo "convert -> ELF --paging (VMCOREINFO, RAM)  $(best "$BIN" -q --paging "$raw" -o $work/b.elf --force) s"
echo "convert -> ELF --paging --root scan       $(best "$BIN" -q --paging --root scan "$raw" -o $work/c.elf --force) s"
elf=$G/x86_64-4level/phys.elf
cat "$elf" >/dev/null
echo "input: $elf ($(stat -c %s "$elf") bytes)"
echo "convert -> ELF --paging (searches RAM)    $(best "$BIN" -q --paging "$elf" -o $work/d.elf --force) s"
echo "convert -> ELF --paging --root cpu        $(best "$BIN" -q --paging --root cpu "$elf" -o $work/e.elf --force) s"
