#!/usr/bin/env bash
# Volatility 3 symbol tables (ISF) for the real guests' kernels, for
# tests/tests/readers_volatility.rs: `dwarf2json linux --elf VMLINUX --system-map MAP`,
# xz-compressed into ~/.cache/dumpconv/volatility/symbols/linux/<kernel release>.json.xz.
#
# dwarf2json (Volatility's generator, Go) is not part of this repository and is not
# built here: set DWARF2JSON, or put the binary at ~/.cache/dumpconv/volatility/dwarf2json.
# Without it this script says so and exits 0 (the test then runs banners.Banners only).
# The vmlinux of each kernel: the guest cache's, or the one tests/tests/readers_drgn.rs
# extracted from the -dbg .deb into ~/.cache/dumpconv/tools/vmlinux/<release>/.
# Idempotent: an existing table is kept. About 2-3 min and 4 GiB of memory per kernel.
set -euo pipefail
root=${DUMPCONV_VOLATILITY_ROOT:-$HOME/.cache/dumpconv/volatility}
guests=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
d2j=${DWARF2JSON:-$root/dwarf2json}
if [ ! -x "$d2j" ]; then
    echo "volatility_isf.sh: no dwarf2json at $d2j: no symbol tables made" >&2
    exit 0
fi
mkdir -p "$root/symbols/linux"
for g in "$guests"/*/; do
    meta="$g/meta.json"
    [ -f "$meta" ] && [ -f "$g/System.map" ] || continue
    release=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_release"])' "$meta")
    out="$root/symbols/linux/$release.json.xz"
    [ -s "$out" ] && continue
    vmlinux="$g/vmlinux"
    [ -f "$vmlinux" ] || vmlinux="$(dirname "$guests")/tools/vmlinux/$release/vmlinux"
    if [ ! -f "$vmlinux" ]; then
        echo "volatility_isf.sh: no vmlinux for $release yet" >&2
        continue
    fi
    start=$(date +%s)
    nice "$d2j" linux --elf "$vmlinux" --system-map "$g/System.map" | xz -1 -T1 > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "volatility_isf.sh: $out ($(( $(date +%s) - start )) s)"
done
