#!/usr/bin/env bash
# Issue 19: does the cost grow with the data or with the address space? Synthetic sparse
# raw images of ${SIZES:-16G 256G} of address space holding the same ${DATA:-256M} of a
# real guest's RAM (the start of x86_64-4level's ram.raw, at its own physical addresses),
# the dense image of that data alone, and the x86_64-highmem guest's ram.raw (4.5 GiB of
# RAM in a 5.5 GiB image), each converted to kdump (zlib, the default, and zstd) and to
# ELF. For each: best-of-${REPEAT:-3} wall time, user+system CPU of that run, peak RSS
# (/usr/bin/time), the output's apparent size (stat %s) and allocated size (%b * %B), and
# the ratios of the wall time against `cp --sparse=always` of the same input ("x cp") and
# against the conversion of the dense image to the same format ("x dense"), and of the CPU
# time against the dense conversion's ("cpu x d": steadier than wall time on a shared
# machine).
#
#   bash bench/scale.sh                    (release build of this tree)
#   DUMPCONV_BIN=/path/to/dumpconv bash bench/scale.sh
#   SIZES="16G" REPEAT=1 FORMATS="elf kdump-zstd" DATA=512M HIGHMEM=0 bash bench/scale.sh
#
# The images are built with truncate + dd conv=notrunc, so the holes are real holes (no
# blocks allocated) and the data is allocated (zero pages included). They and the outputs
# go to a temporary directory under ${BENCH_DIR:-${TMPDIR:-/tmp}} (same file system for
# cp; about 3 x DATA of disk plus the outputs), removed at the end. Only measures: it
# works on any build. A reader that reads holes puts them through the page cache (a
# 256 GiB image pushes everything else out of it); one that finds them with SEEK_DATA
# does not.
{
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
read -r -a sizes <<<"${SIZES:-16G 256G}"
read -r -a formats <<<"${FORMATS:-kdump-zlib kdump-zstd elf}"
data=${DATA:-256M}
repeat=${REPEAT:-3}
if [ -n "${DUMPCONV_BIN:-}" ]; then
    bin=$DUMPCONV_BIN
else
    (cd "$HERE" && cargo build --release -q -p dumpconv)
    bin=${CARGO_TARGET_DIR:-$HERE/target}/release/dumpconv
fi
[ -x "$bin" ] || { echo "no $bin" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
src=$cache/x86_64-4level/ram.raw
[ -f "$cache/x86_64-4level/complete" ] || { echo "no guest $cache/x86_64-4level: run tests/real-guests/ensure-guests.sh" >&2; exit 1; }
tmp=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/dumpconv-bench-scale.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Inputs: name -> path.
declare -A input
# Fully allocated (dd writes the zero pages too): the dense reference.
dd if="$src" of="$tmp/dense.raw" bs=1M count="$data" iflag=count_bytes status=none
input[dense]=$tmp/dense.raw
names=(dense)
for s in "${sizes[@]}"; do
    truncate -s "$s" "$tmp/sparse-$s.raw"
    dd if="$tmp/dense.raw" of="$tmp/sparse-$s.raw" bs=1M conv=notrunc status=none
    input[sparse-$s]=$tmp/sparse-$s.raw
    names+=("sparse-$s")
done
hm=$cache/x86_64-highmem/ram.raw
if [ "${HIGHMEM:-1}" = 0 ]; then
    :
elif [ -f "$cache/x86_64-highmem/complete" ] && [ -f "$hm" ]; then
    input[highmem]=$hm
    names+=(highmem)
else
    echo "SKIP x86_64-highmem: no $hm"
fi

apparent() { stat -c %s "$1"; }
allocated() { stat -c '%b %B' "$1" | awk '{printf "%d", $1 * $2}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

# best of $repeat: sets B_WALL B_CPU B_RSS (of the fastest run); "$@" is the command
best() {
    B_WALL="" B_CPU="" B_RSS=""
    local w u s m
    for _ in $(seq "$repeat"); do
        rm -f "$tmp"/out.*
        /usr/bin/time -f '%e %U %S %M' -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || {
            cat "$tmp/err" >&2; return 1; }
        read -r w u s m <"$tmp/time"
        if [ -z "$B_WALL" ] || awk -v a="$w" -v b="$B_WALL" 'BEGIN {exit !(a < b)}'; then
            B_WALL=$w B_CPU=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.2f", u + s}') B_RSS=$m
        fi
    done
}
convert_args() { # format -> output name and flags
    case $1 in
        elf) echo "$tmp/out.elf" ;;
        kdump-zlib) echo "$tmp/out.kdump --compress zlib" ;;
        kdump-zstd) echo "$tmp/out.kdump --compress zstd" ;;
        kdump-*) echo "$tmp/out.kdump --compress ${1#kdump-}" ;;
        *) echo "$tmp/out.$1" ;;
    esac
}
header() {
    printf '%-26s %8s %8s %9s %11s %11s %8s %8s %8s\n' "" wall cpu "rss KiB" "apparent" "allocated" "x cp" "x dense" "cpu x d"
}
row() { # label wall cpu rss apparent allocated cp_wall dense_wall dense_cpu
    printf '%-26s %7.2fs %7.2fs %9d %9s M %9s M %7sx %7sx %7sx\n' "$1" "$2" "$3" "$4" \
        "$(mib "$5")" "$(mib "$6")" "$(ratio "$2" "$7")" "$(ratio "$2" "$8")" "$(ratio "$3" "${9:-0}")"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "dumpconv: $bin ($("$bin" --version 2>/dev/null | head -1))"
echo "data: the first $data of $src; best of $repeat; outputs in $(df --output=source "$tmp" | tail -1)"
declare -A dense_wall dense_cpu
for n in "${names[@]}"; do
    in=${input[$n]}
    echo
    echo "== $n: $in (apparent $(mib "$(apparent "$in")") MiB, allocated $(mib "$(allocated "$in")") MiB)"
    header
    # The first copy puts the data in the page cache (cp reads only the data extents;
    # reading the holes of a 256 GiB image would fill the page cache with zeros).
    cp --sparse=always "$in" "$tmp/out.cp"
    best cp --sparse=always "$in" "$tmp/out.cp"
    cp --sparse=always "$in" "$tmp/out.cp"
    cp_wall=$B_WALL
    [ "$n" = dense ] && dense_wall[cp]=$cp_wall dense_cpu[cp]=$B_CPU
    row "cp --sparse=always" "$B_WALL" "$B_CPU" "$B_RSS" "$(apparent "$tmp/out.cp")" "$(allocated "$tmp/out.cp")" "$cp_wall" "${dense_wall[cp]:-0}" "${dense_cpu[cp]:-0}"
    rm -f "$tmp/out.cp"
    for f in "${formats[@]}"; do
        # shellcheck disable=SC2046 # convert_args is a list of words on purpose
        set -- $(convert_args "$f")
        out=$1; shift
        best "$bin" -q --force --input-format raw "$in" -o "$out" "$@"
        w=$B_WALL c=$B_CPU r=$B_RSS
        "$bin" -q --force --input-format raw "$in" -o "$out" "$@"
        [ "$n" = dense ] && dense_wall[$f]=$w dense_cpu[$f]=$c
        row "dumpconv $f" "$w" "$c" "$r" "$(apparent "$out")" "$(allocated "$out")" "$cp_wall" "${dense_wall[$f]:-0}" "${dense_cpu[$f]:-0}"
        rm -f "$out"
    done
done
}
