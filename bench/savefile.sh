#!/usr/bin/env bash
# VM save files (issue 16): converting a QEMU migration stream to kdump and ELF against
# `cp` of the same file, and against QEMU's own dump-guest-memory of the same guest
# (its time from the capture, facts.json). Peak RSS of `info` is the index (8 bytes per
# guest page) plus the reader's 1 MiB buffer.
# Usage: bash bench/savefile.sh [NAME] (default x86_64-pc-highmem: 4.5 GiB guest).
# Needs tests/real-guests/savefile.sh's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-x86_64-pc-highmem}"
dir="${DUMPCONV_SAVEFILE_CACHE:-$HOME/.cache/dumpconv/savefiles}/$name"
work="${BENCH_WORK:-/tmp/dumpconv-bench-savefile}"
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cargo build -q --release -p dumpconv
bin="${CARGO_TARGET_DIR:-target}/release/dumpconv"
f="$dir/vm.migstream"
cat "$f" >/dev/null # page cache
best() { # best of 3: "seconds maxrss_kib"
    local b="" r
    for _ in 1 2 3; do
        r=$( /usr/bin/time -f '%e %M' "$@" 2>&1 >/dev/null | tail -1)
        if [ -z "$b" ] || awk -v a="${r% *}" -v c="${b% *}" 'BEGIN {exit !(a < c)}'; then b=$r; fi
    done
    echo "$b"
}
printf 'input: %s (%s bytes), guest RAM %s MiB, %s cores, %s\n' "$f" "$(stat -c %s "$f")" \
    "$(python3 -c "import json;print(json.load(open('$dir/facts.json'))['mem_mib'])")" "$(nproc)" "$(date -u +%F)"
line() { printf '%-44s %8ss %9s KiB\n' "$1" "${2% *}" "${2#* }"; }
line "cp" "$(best cp "$f" "$work/copy")"
line "dumpconv info (index only)" "$(best "$bin" info "$f")"
line "dumpconv kdump (zlib, 2 threads)" "$(best "$bin" "$f" -o "$work/x.kdump" --format kdump --force -q)"
line "dumpconv kdump --paging" "$(best "$bin" --paging "$f" -o "$work/p.kdump" --format kdump --force -q)"
line "dumpconv elf (physical view)" "$(best "$bin" "$f" -o "$work/x.elf" --force -q)"
# the same conversions from QEMU's own ELF dump of the same guest: the writer's share
line "  same kdump from QEMU's phys.elf" "$(best "$bin" "$dir/phys.elf" -o "$work/y.kdump" --format kdump --force -q)"
line "  same elf from QEMU's phys.elf" "$(best "$bin" "$dir/phys.elf" -o "$work/y.elf" --force -q)"
python3 - "$dir/facts.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["timings"]
print(f"QEMU dump-guest-memory (ELF, from the capture) {t['dump-guest-memory']:8.2f}s")
print(f"QEMU migrate to the file (from the capture)    {t['migrate']:8.2f}s")
PY
ls -l "$work"/x.kdump "$work"/p.kdump | awk '{print "    " $5 " bytes " $9}'
