#!/usr/bin/env bash
# Benchmarks: dumpconv against cp, makedumpfile and QEMU on the same real-guest dump.
#   bash bench/run.sh [GUEST]        (default x86_64-4level; needs the real-guest cache)
# Prints one line per measurement: best-of-3 wall time, max RSS, output size, and the
# ratio to the reference named on the line. Copy results into BENCHMARKS.md with the
# command and the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
guest=${1:-x86_64-4level}
cache=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
g="$cache/$guest"
[ -f "$g/complete" ] || { echo "no guest $g: run tests/real-guests/ensure-guests.sh" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
cargo build --release -q -p dumpconv
bin=target/release/dumpconv
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dumpconv-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
in="$g/phys.elf"

# best-of-3: prints "seconds maxrss_kib"
measure() {
    local best="" rss=0
    for _ in 1 2 3; do
        rm -f "$tmp"/out*
        /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
        read -r s m <"$tmp/time"
        if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s; rss=$m; fi
    done
    echo "$best $rss"
}
size() { du -b "$1" 2>/dev/null | cut -f1; }
ratio() { awk "BEGIN{ if ($2 > 0) printf \"%.2f\", $1 / $2; else print \"-\" }"; }
row() { # label seconds rss size reference_seconds reference_name
    printf '%-44s %7.2fs %8d KiB %12s bytes  %6sx %s\n' "$1" "$2" "$3" "${4:--}" "$(ratio "$2" "$5")" "$6"
}

cat "$in" >/dev/null  # warm the page cache so every contender reads from memory
echo "input: $in ($(size "$in") bytes), $(nproc) cores, $(date -u +%F)"
read -r cp_s cp_m < <(measure cp --sparse=never "$in" "$tmp/out.cp")
row "cp" "$cp_s" "$cp_m" "$(size "$in")" "$cp_s" "of cp"

read -r s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.elf")
phys_s=$s
row "dumpconv elf (physical view)" "$s" "$m" "" "$cp_s" "of cp"
read -r s m < <(measure "$bin" -q --force --paging "$in" -o "$tmp/out.elf")
row "dumpconv elf --paging" "$s" "$m" "" "$phys_s" "of our physical view"
"$bin" -q --force --paging --verbose "$in" -o "$tmp/out.elf" 2>&1 | grep 'paging:' | sed 's/^/    /'
echo "    program headers: $(readelf -lW "$tmp/out.elf" | grep -c LOAD) PT_LOAD (ours), $(readelf -lW "$g/paging.elf" 2>/dev/null | grep -c LOAD) (QEMU paging)"
if [ -f "$g/capture-timings.txt" ]; then
    qp=$(awk '/dump phys.elf/{print $3}' "$g/capture-timings.txt" | tr -d s)
    qg=$(awk '/dump paging.elf/{print $3}' "$g/capture-timings.txt" | tr -d s)
    echo "    QEMU dump-guest-memory (capture log): physical ${qp}s, paging ${qg}s ($(ratio "$qg" "$qp")x)"
fi
read -r s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.raw")
row "dumpconv raw (sparse)" "$s" "$m" "" "$cp_s" "of cp"

# LiME and AVML outputs; whole-output zstd/lz4 against the real tools compressing the
# same bytes (our plain LiME file).
read -r lime_s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.lime")
"$bin" -q --force "$in" -o "$tmp/lime.lime"
row "dumpconv lime" "$lime_s" "$m" "$(size "$tmp/lime.lime")" "$cp_s" "of cp"
avml=${DUMPCONV_AVML:-$HOME/.cache/dumpconv/tools/bin/avml}
if [ -x "$avml" ]; then
    read -r avml_s avml_m < <(measure "$avml" convert --source-format lime --format lime_compressed "$tmp/lime.lime" "$tmp/out.avml-peer")
    "$avml" convert --source-format lime --format lime_compressed "$tmp/lime.lime" "$tmp/out.avml-peer"
    row "avml convert lime -> lime_compressed" "$avml_s" "$avml_m" "$(size "$tmp/out.avml-peer")" "$avml_s" ""
else
    avml_s=0; echo "avml: not installed (scripts/test.sh installs it)"
fi
read -r s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.avml")
"$bin" -q --force "$in" -o "$tmp/out.avml"
row "dumpconv avml" "$s" "$m" "$(size "$tmp/out.avml")" "$avml_s" "of avml convert"
for th in 1 2; do
    read -r z_s z_m < <(measure zstd -q -f -3 -T"$th" "$tmp/lime.lime" -o "$tmp/out.zst-peer")
    zstd -q -f -3 -T"$th" "$tmp/lime.lime" -o "$tmp/out.zst-peer"
    row "zstd -3 -T$th (of our LiME file)" "$z_s" "$z_m" "$(size "$tmp/out.zst-peer")" "$z_s" ""
    read -r s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.lime.zst" --threads "$th")
    "$bin" -q --force "$in" -o "$tmp/out.lime.zst" --threads "$th"
    row "dumpconv -o X.lime.zst --threads $th" "$s" "$m" "$(size "$tmp/out.lime.zst")" "$z_s" "of zstd -T$th"
done
read -r l_s l_m < <(measure lz4 -q -f -1 "$tmp/lime.lime" "$tmp/out.lz4-peer")
lz4 -q -f -1 "$tmp/lime.lime" "$tmp/out.lz4-peer"
row "lz4 -1 (of our LiME file)" "$l_s" "$l_m" "$(size "$tmp/out.lz4-peer")" "$l_s" ""
read -r s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.lime.lz4")
"$bin" -q --force "$in" -o "$tmp/out.lime.lz4"
row "dumpconv -o X.lime.lz4" "$s" "$m" "$(size "$tmp/out.lime.lz4")" "$l_s" "of lz4"
rm -f "$tmp"/lime.lime "$tmp"/out.*

mdf_ok=1
makedumpfile -c -d 0 "$in" "$tmp/probe" >/dev/null 2>&1 || mdf_ok=0
# makedumpfile 1.7.2 rejects QEMU 7.2's ELF; give it our ELF conversion of the same dump.
mdf_in="$in"
if [ $mdf_ok = 0 ]; then
    mdf_in="$tmp/mdf-input.elf"; "$bin" -q --force "$in" -o "$mdf_in"
    echo "    (makedumpfile rejects QEMU's ELF; it reads dumpconv's ELF of the same dump)"
fi
rm -f "$tmp/probe"
for codec in zlib:-c snappy:-p zstd:-z lzo:-l; do
    name=${codec%%:*} flag=${codec##*:}
    mdf_s=""
    # makedumpfile refuses to overwrite its output: remove it before every run.
    rm -f "$tmp/out.mdf"
    if makedumpfile $flag -d 0 "$mdf_in" "$tmp/out.mdf" >/dev/null 2>&1; then
        read -r mdf_s mdf_m < <(measure makedumpfile $flag -d 0 "$mdf_in" "$tmp/out.mdf")
        rm -f "$tmp/out.mdf"; makedumpfile $flag -d 0 "$mdf_in" "$tmp/out.mdf" >/dev/null 2>&1
        row "makedumpfile $flag -d 0" "$mdf_s" "$mdf_m" "$(size "$tmp/out.mdf")" "$mdf_s" ""
        # An output as large as the input means this build stores pages uncompressed.
        if read -r s2 m2 < <(measure makedumpfile $flag -d 0 --num-threads 2 "$mdf_in" "$tmp/out.mdf"); then
            row "makedumpfile $flag -d 0 --num-threads 2" "$s2" "$m2" "" "$mdf_s" "of 1 thread"
        else
            echo "makedumpfile $flag -d 0 --num-threads 2: failed (see the error above)"
        fi
    else
        echo "makedumpfile $flag: not supported by this build"
    fi
    [ "$name" = lzo ] && continue
    for th in 1 2; do
        read -r s m < <(measure "$bin" -q --force "$in" -o "$tmp/out.kdump" --compress "$name" --threads "$th")
        "$bin" -q --force "$in" -o "$tmp/out.kdump" --compress "$name" --threads "$th"
        row "dumpconv kdump --compress $name --threads $th" "$s" "$m" "$(size "$tmp/out.kdump")" "${mdf_s:-0}" "of makedumpfile $flag"
    done
done
