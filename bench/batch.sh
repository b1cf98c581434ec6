#!/usr/bin/env bash
# Benchmark: `dumpconv batch` against the same conversions run one after another.
#   bash bench/batch.sh [FORMAT...]     (default: elf kdump; needs the real-guest cache)
# Inputs: phys.elf and kdump-zlib.flat of x86_64-4level, x86_64-kaslr, i386-pae and
# i386-2level (8 dumps of 512 MiB RAM), symlinked, in the page cache. Outputs go to
# ${BENCH_OUT:-a temporary directory under ${TMPDIR:-/tmp}} (set BENCH_OUT=/dev/shm/x to
# take the disk out of the measurement). Prints best-of-${REPEAT:-3} wall times and
# the speed-up. Copy the lines into BENCHMARKS.md with the command and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
formats=("$@")
[ ${#formats[@]} -gt 0 ] || formats=(elf kdump)
repeat=${REPEAT:-3}
cargo build --release -q -p dumpconv
bin=${CARGO_TARGET_DIR:-target}/release/dumpconv
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

now() { date +%s.%N; }
best() { # best of $repeat: prints seconds
    local b=""
    for _ in $(seq "$repeat"); do
        rm -rf "$out"; mkdir -p "$out"; sync
        local t0 t1 s
        t0=$(now); "$@" >/dev/null; t1=$(now)
        s=$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")
        if [ -z "$b" ] || awk "BEGIN{exit !($s < $b)}"; then b=$s; fi
    done
    echo "$b"
}
sequential() { # format [extra convert flags]
    local fmt=$1; shift
    for f in "${inputs[@]}"; do
        local name; name=$(basename "$f"); name=${name%.*}
        "$bin" -q "$f" -o "$out/$name.$fmt" --format "$fmt" "$@"
    done
}
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }

echo "${#inputs[@]} inputs (512 MiB RAM each), $cores cores, out dir on $(df --output=source "$(dirname "$out")" | tail -1), $(date -u +%F)"
for fmt in "${formats[@]}"; do
    seq_s=$(best sequential "$fmt")
    printf '%-58s %7.2fs\n' "sequential: dumpconv IN -o OUT --format $fmt, x${#inputs[@]}" "$seq_s"
    if [ "$fmt" = kdump ]; then
        seq1_s=$(best sequential "$fmt" --threads 1)
        printf '%-58s %7.2fs\n' "sequential, --threads 1" "$seq1_s"
    fi
    batch_s=$(best "$bin" batch -q "$tmp/in" --out-dir "$out" --format "$fmt" --jobs "$cores")
    printf '%-58s %7.2fs  %sx faster than sequential\n' \
        "dumpconv batch --format $fmt --jobs $cores" "$batch_s" "$(ratio "$seq_s" "$batch_s")"
    if [ "$fmt" = kdump ]; then
        printf '%-58s %7s   %sx faster than sequential --threads 1\n' "" "" "$(ratio "$seq1_s" "$batch_s")"
    fi
    nohash_s=$(best "$bin" batch -q "$tmp/in" --out-dir "$out" --format "$fmt" --jobs "$cores" --no-hash)
    printf '%-58s %7.2fs  %sx faster than sequential\n' \
        "dumpconv batch --format $fmt --jobs $cores --no-hash" "$nohash_s" "$(ratio "$seq_s" "$nohash_s")"
done
