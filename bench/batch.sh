#!/usr/bin/env bash
# Benchmark: `dumpconv batch` against the same conversions run one after another.
#   bash bench/batch.sh [FORMAT...]     (default: elf kdump; needs the real-guest cache)
#   DUMPCONV_BIN=/path/to/dumpconv bash bench/batch.sh   (measure that build instead)
# Inputs: phys.elf and kdump-zlib.flat of x86_64-4level, x86_64-kaslr, i386-pae and
# i386-2level (8 dumps of 512 MiB RAM), symlinked, in the page cache. Outputs go to
# ${BENCH_OUT:-a temporary directory under ${TMPDIR:-/tmp}} (set BENCH_OUT=/dev/shm/x to
# take the disk out of the measurement). Prints best-of-${REPEAT:-3} wall times, the CPU
# time (user + system) of those runs, and the speed-up. Copy the lines into
# BENCHMARKS.md with the command and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(elf kdump)
repeat=${REPEAT:-3}
if [ -n "${DUMPCONV_BIN:-}" ]; then
    bin=$DUMPCONV_BIN  # another build, to compare (e.g. one made from main)
else
    cargo build --release -q -p dumpconv
    bin=${CARGO_TARGET_DIR:-target}/release/dumpconv
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dumpconv-bench-batch.XXXXXX")
out=${BENCH_OUT:-$tmp/out}
trap 'rm -rf "$tmp" "$out"' EXIT
mkdir -p "$tmp/in"
for g in x86_64-4level x86_64-kaslr i386-pae i386-2level; do
    [ -f "$cache/$g/complete" ] || { echo "no guest $cache/$g: run tests/real-guests/ensure-guests.sh" >&2; exit 1; }
    ln -s "$cache/$g/phys.elf" "$tmp/in/$g-phys.elf"
    ln -s "$cache/$g/kdump-zlib.flat" "$tmp/in/$g-kdump.flat"
done
cat "$tmp"/in/* >/dev/null  # page cache: measure conversion, not the first read
inputs=("$tmp"/in/*)
cores=$(nproc)

best() { # best of $repeat: prints "wall cpu" (seconds) of the fastest run; cpu is the
          # user + system time of the command and its children, which the other users
          # of a shared machine disturb much less than the wall time
    local b="" bc=""
    for _ in $(seq "$repeat"); do
        rm -rf "$out"; mkdir -p "$out"; sync
        local t w c
        t=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&3; } 3>&2 2>&1 )
        read -r w u s <<<"$t"
        c=$(awk "BEGIN{printf \"%.2f\", $u + $s}")
        if [ -z "$b" ] || awk "BEGIN{exit !($w < $b)}"; then b=$w; bc=$c; fi
    done
    echo "$b $bc"
}
sequential() { # format [extra convert flags]
    local fmt=$1; shift
    for f in "${inputs[@]}"; do
        local name; name=$(basename "$f"); name=${name%.*}
        "$bin" -q "$f" -o "$out/$name.$fmt" --format "$fmt" "$@"
    done
}
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }

line() { # label, "wall cpu", [ratio text]
    local w c; read -r w c <<<"$2"
    printf '%-58s %7.2fs  cpu %6.2fs  %s\n' "$1" "$w" "$c" "${3:-}"
}
wall() { echo "${1%% *}"; }

echo "${#inputs[@]} inputs (512 MiB RAM each), $cores cores, out dir on $(df --output=source "$(dirname "$out")" | tail -1), $(date -u +%F), load $(cut -d' ' -f1-3 /proc/loadavg)"
for fmt in "${formats[@]}"; do
    seq_t=$(best sequential "$fmt")
    line "sequential: dumpconv IN -o OUT --format $fmt, x${#inputs[@]}" "$seq_t"
    if [ "$fmt" = kdump ]; then
        seq1_t=$(best sequential "$fmt" --threads 1)
        line "sequential, --threads 1" "$seq1_t"
    fi
    batch_t=$(best "$bin" batch -q "$tmp/in" --out-dir "$out" --format "$fmt" --jobs "$cores")
    line "dumpconv batch --format $fmt --jobs $cores" "$batch_t" \
        "$(ratio "$(wall "$seq_t")" "$(wall "$batch_t")")x faster than sequential"
    if [ "$fmt" = kdump ]; then
        printf '%-58s %7s   %10s   %sx faster than sequential --threads 1\n' "" "" "" \
            "$(ratio "$(wall "$seq1_t")" "$(wall "$batch_t")")"
    fi
    nohash_t=$(best "$bin" batch -q "$tmp/in" --out-dir "$out" --format "$fmt" --jobs "$cores" --no-hash)
    line "dumpconv batch --format $fmt --jobs $cores --no-hash" "$nohash_t" \
        "$(ratio "$(wall "$seq_t")" "$(wall "$nohash_t")")x faster than sequential"
done
