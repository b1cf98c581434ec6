#!/usr/bin/env bash
# Page filtering: our `-d 31` kdump against makedumpfile 1.7.6 `-c -d 31` and `-z -d 31`
# (the Debian 13 root of tests/reference-tools), and our `-d 1` against our level 0, on
# the real guests' QEMU ELF dumps. Best of 3 wall-clock runs each, input in the page
# cache; prints one line per run kind with time and output size.
#
#   bash bench/filter.sh [GUEST...]        (default: x86_64-highmem x86_64-4level)
#
# Needs: a release build (cargo build --release -p dumpconv), the guests
# (tests/real-guests/ensure-guests.sh), the Debian 13 root
# (tests/reference-tools/ensure-debian13.sh; without it the makedumpfile lines are
# skipped). makedumpfile reads QEMU's ELF through elf_phdrs_at_64.py's copy (as the
# oracle does), and runs inside the root: its times include entering the root (~0.05 s).
{
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$HERE/tests/reference-tools"
GUESTS=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
BIN=${DUMPCONV_BIN:-${CARGO_TARGET_DIR:-$HERE/target}/release/dumpconv}
ROOT=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release -p dumpconv" >&2; exit 1; }
[ $# -gt 0 ] || set -- x86_64-highmem x86_64-4level
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-filter.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

best() { # best of 3 wall-clock seconds of "$@"
    local b="" t0 t1 s
    for _ in 1 2 3; do
        t0=$(date +%s.%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s.%N)
        s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
        if [ -z "$b" ] || awk -v s="$s" -v b="$b" 'BEGIN {exit !(s < b)}'; then b=$s; fi
    done
    echo "$b"
}
line() { printf '%-46s %7ss %12s bytes\n' "$1" "$2" "$3"; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), $(date -u +%F)"
echo "dumpconv: $BIN"
for g in "$@"; do
    src="$GUESTS/$g/phys.elf"
    [ -f "$src" ] || { echo "SKIP $g: no $src"; continue; }
    cat "$src" >/dev/null
    echo
    echo "== $g: $src ($(stat -c %s "$src") bytes, $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['mem_size']>>20)" "$GUESTS/$g/meta.json") MiB RAM)"
    out="$WORK/out.kdump"
    for threads in 1 2; do
        for codec in zlib zstd; do
            t=$(best "$BIN" convert "$src" -o "$out" --force -d 31 --compress "$codec" --threads "$threads")
            line "dumpconv -d 31 --compress $codec --threads $threads" "$t" "$(stat -c %s "$out")"
        done
    done
    t=$(best "$BIN" convert "$src" -o "$out" --force --threads 2)
    line "dumpconv -d 0 (zlib, zero pages shared) --threads 2" "$t" "$(stat -c %s "$out")"
    t=$(best "$BIN" convert "$src" -o "$out" --force -d 1 --threads 2)
    line "dumpconv -d 1 (zlib) --threads 2" "$t" "$(stat -c %s "$out")"
    "$BIN" convert "$src" -o "$out" --force -d 31 --verbose 2>&1 | sed -n 's/^dumpconv: filter: /    /p'
    if [ -f "$ROOT/.dumpconv-debian13" ] && [ "$(id -u)" = 0 ]; then
        python3 "$TOOLS/elf_phdrs_at_64.py" "$src" "$WORK/in.elf"
        cat "$WORK/in.elf" >/dev/null
        for c in -c -z; do
            # makedumpfile refuses to overwrite its output: remove it before each run.
            b=""
            for _ in 1 2 3; do
                rm -f "$WORK/mdf.kdump"
                t0=$(date +%s.%N)
                "$TOOLS/in-debian13.sh" --bind "$WORK:/work" \
                    makedumpfile "$c" -d 31 /work/in.elf /work/mdf.kdump >/dev/null 2>&1
                t1=$(date +%s.%N)
                s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
                if [ -z "$b" ] || awk -v s="$s" -v b="$b" 'BEGIN {exit !(s < b)}'; then b=$s; fi
            done
            line "makedumpfile 1.7.6 $c -d 31" "$b" "$(stat -c %s "$WORK/mdf.kdump")"
        done
        rm -f "$WORK/in.elf" "$WORK/mdf.kdump"
    else
        echo "SKIP makedumpfile 1.7.6: no Debian 13 root at $ROOT (or not root)"
    fi
done
}
