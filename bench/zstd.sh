#!/usr/bin/env bash
# Whole-output zstd (issue 19, goal (c)): `dumpconv IN -o X.F.zst --threads T` against the
# zstd command compressing the same bytes (`zstd -3 -T T X.F`, X.F being what dumpconv
# writes without .zst), with two zstd commands:
#   - zstd 1.5.7, the libzstd version the zstd crate bundles (zstd-sys 2.1.2+zstd.1.5.7),
#     twice: Debian 13's package (tests/reference-tools/ensure-debian13-zstd.sh, run on the
#     host through the Debian 13 root's loader), and upstream's build of the same sources
#     (bench/build-zstd157.sh, or any ZSTD157=/path/to/zstd);
#   - the host's zstd (Debian 12: 1.5.4), whose compressor lacks 1.5.7's block
#     pre-splitter (a few % of CPU, ~1 % of size), so it is not the same library.
# Each is used when present; without a 1.5.7 command the script says so.
#
# Usage: [DUMPCONV_BIN=target/release/dumpconv] [GUEST=x86_64-4level] [FORMATS="lime elf raw"]
#        [THREADS="2 1"] [N=5] [BENCH_DIR=/dev/shm] [ZSTD157=...] bash bench/zstd.sh
# (first, once: bash bench/build-zstd157.sh; as root tests/reference-tools/ensure-debian13-zstd.sh)
#
# Every round runs the commands one after the other (interleaved), N rounds; each row
# prints the best and the median of the wall time and of the CPU time (`perf stat -e
# task-clock`, or user + system from /usr/bin/time without perf), the largest peak RSS,
# the output size, and the median CPU as a ratio of each zstd command's median CPU. On a
# shared machine read the CPU columns: wall times follow the load. dumpconv's rows include
# reading and converting the input (the "no compression" row is that part alone); the
# zstd rows start from the finished file. Every .zst is checked: `zstd -dc | cmp`.
# The goal is the -T2 rows. At -T1 the modes differ: `zstd -T1` runs one worker thread
# beside its reader (libzstd's multithreaded path with one worker), `--threads 1` compresses
# on the writing thread (the single-threaded path: no job buffers, no overlap).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
BIN=${DUMPCONV_BIN:-$REPO/target/release/dumpconv}
GUEST=${GUEST:-x86_64-4level}
IN=${IN:-$HOME/.cache/dumpconv/guests/$GUEST/phys.elf}
FORMATS=${FORMATS:-lime elf raw}
THREADS=${THREADS:-2 1}
N=${N:-5}
LEVEL=3
[ -x "$BIN" ] || { echo "no dumpconv at $BIN (cargo build --release, or DUMPCONV_BIN=...)" >&2; exit 2; }
[ -f "$IN" ] || { echo "no input $IN (tests/real-guests/ensure-guests.sh)" >&2; exit 2; }
command -v zstd >/dev/null || { echo "no zstd command on the host" >&2; exit 2; }

# The reference commands, each a key (column "x KEY"), a label and a command line:
#   d13   Debian 13's zstd 1.5.7 (installed here when we are root and the root exists);
#   up    ZSTD157, default the upstream build of bench/build-zstd157.sh when present;
#   host  the host's zstd.
REFS=()
declare -A LABEL=()
. "$REPO/tests/reference-tools/debian13-zstd.sh"
if [ ! -f "$DEBIAN13_ROOT/.dumpconv-debian13-zstd" ] && [ "$(id -u)" = 0 ] \
    && [ -f "$DEBIAN13_ROOT/.dumpconv-debian13" ]; then
    bash "$REPO/tests/reference-tools/ensure-debian13-zstd.sh" || true
fi
if [ -f "$DEBIAN13_ROOT/.dumpconv-debian13-zstd" ]; then
    Z_d13=("${DEBIAN13_ZSTD[@]}"); REFS+=(d13)
    LABEL[d13]="zstd $("${Z_d13[@]}" -V | grep -o 'v[0-9.]*' | head -1) Debian 13"
fi
ZSTD157=${ZSTD157:-$HOME/.cache/dumpconv/tools/zstd-1.5.7/zstd}
if [ -x "$ZSTD157" ]; then
    Z_up=("$ZSTD157"); REFS+=(up)
    LABEL[up]="zstd $("${Z_up[@]}" -V | grep -o 'v[0-9.]*' | head -1) upstream"
fi
Z_host=(zstd); REFS+=(host)
LABEL[host]="zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1) host"
for r in "${REFS[@]}"; do
    case ${LABEL[$r]} in *v1.5.7*) HAVE157=1 ;; esac
done
if [ -z "${HAVE157:-}" ]; then
    echo "note: no zstd 1.5.7 command (tests/reference-tools/ensure-debian13-zstd.sh as root, or" \
         "bench/build-zstd157.sh, or ZSTD157=...): comparing with ${LABEL[host]} only, not the" \
         "libzstd version dumpconv links (1.5.7)" >&2
fi
refname() { echo "${LABEL[$1]}"; }

work=$(mktemp -d "${BENCH_DIR:-/dev/shm}/dumpconv-zstd.XXXXXX")
trap 'rm -rf "$work"' EXIT
PERF=1
perf stat -x, -e task-clock -o "$work/p" -- true 2>/dev/null || PERF=0

# measure KEY CMD...: appends "wall cpu_ms rss_kib" to $work/KEY
measure() {
    local key=$1; shift
    if [ $PERF = 1 ]; then
        perf stat -x, -e task-clock -o "$work/p" -- /usr/bin/time -f '%e %U %S %M' -o "$work/t" "$@"
        cpu=$(awk -F, '$3 == "task-clock" {printf "%.1f", $1}' "$work/p")
    else
        /usr/bin/time -f '%e %U %S %M' -o "$work/t" "$@"
        cpu=$(awk '{printf "%.1f", ($2 + $3) * 1000}' "$work/t")
    fi
    read -r wall _ _ rss <"$work/t"
    echo "$wall $cpu $rss" >>"$work/$key"
}
# stats KEY: "wall_best wall_median cpu_best cpu_median rss_max"
stats() {
    local n; n=$(wc -l <"$work/$1")
    paste <(cut -d' ' -f1 "$work/$1" | sort -g) <(cut -d' ' -f2 "$work/$1" | sort -g) \
          <(cut -d' ' -f3 "$work/$1" | sort -g) |
        awk -v n="$n" 'NR == 1 {wb = $1; cb = $2} NR == int((n + 1) / 2) {wm = $1; cm = $2}
                       {if ($3 > r) r = $3} END {print wb, wm, cb, cm, r}'
}

echo "dumpconv: $BIN ($("$BIN" --version | head -1)); input: $IN"
for r in "${REFS[@]}"; do echo "x $r: $(refname "$r")"; done
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)," \
     "$(. /etc/os-release && echo "$PRETTY_NAME"); load $(cut -d' ' -f1-3 /proc/loadavg) at the start;" \
     "N=$N rounds, CPU from $([ $PERF = 1 ] && echo 'perf task-clock' || echo 'user+sys')"
for fmt in $FORMATS; do
    plain=$work/x.$fmt
    "$BIN" -q --force "$IN" -o "$plain"
    echo
    echo "== $fmt: $(stat -c %s "$plain") bytes ($(du -k "$plain" | cut -f1) KiB allocated)"
    printf '%-40s %15s %17s %8s %11s' "" "wall best/med s" "cpu best/med ms" "rss KiB" "bytes"
    for r in "${REFS[@]}"; do printf ' %11s' "x $r"; done
    echo
    for th in $THREADS; do
        rm -f "$work"/[a-z]*-"$th"
        for _ in $(seq "$N"); do
            for r in "${REFS[@]}"; do
                eval "z=(\"\${Z_$r[@]}\")"
                measure "$r-$th" "${z[@]}" -q -f -$LEVEL -T"$th" "$plain" -o "$work/ref-$r.zst"
            done
            measure "conv-$th" "$BIN" -q --force "$IN" -o "$work/o.$fmt"
            measure "ours-$th" "$BIN" -q --force "$IN" -o "$work/o.$fmt.zst" --threads "$th"
        done
        declare -A med=()
        for r in "${REFS[@]}"; do
            read -r wb wm cb cm rss < <(stats "$r-$th")
            med[$r]=$cm
            zstd -dc "$work/ref-$r.zst" | cmp - "$plain"
            printf '%-40s %7.3f/%-7.3f %8.1f/%-8.1f %8s %11s\n' "$(refname "$r") -$LEVEL -T$th" \
                "$wb" "$wm" "$cb" "$cm" "$rss" "$(stat -c %s "$work/ref-$r.zst")"
        done
        for k in conv ours; do
            read -r wb wm cb cm rss < <(stats "$k-$th")
            if [ $k = ours ]; then
                zstd -dc "$work/o.$fmt.zst" | cmp - "$plain"
                name="dumpconv -o X.$fmt.zst --threads $th"; size=$(stat -c %s "$work/o.$fmt.zst")
            else
                cmp "$work/o.$fmt" "$plain"
                name="dumpconv -o X.$fmt (no compression)"; size=$(stat -c %s "$work/o.$fmt")
            fi
            printf '%-40s %7.3f/%-7.3f %8.1f/%-8.1f %8s %11s' "$name" "$wb" "$wm" "$cb" "$cm" "$rss" "$size"
            if [ $k = ours ]; then
                for r in "${REFS[@]}"; do printf ' %10.3fx' "$(echo "$cm / ${med[$r]}" | bc -l)"; done
            fi
            echo
        done
        unset med
    done
    rm -f "$plain" "$work"/o.* "$work"/ref-*
done
echo
echo "all .zst outputs decompress (zstd -dc) to the uncompressed output, byte for byte"
