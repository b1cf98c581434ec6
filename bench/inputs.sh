#!/usr/bin/env bash
# Input-side costs on one real guest (default x86_64-4level, 512 MiB):
#  - AVML made by the real avml: open (chunk index), sequential and random 4 KiB reads;
#  - compressed inputs: decompress + spill + open, through `dumpconv info`, per wrapper,
#    with the disk the sparse spill used;
#  - the x86 walker built in against the same walker loaded as a plugin (walk time and
#    the whole --paging conversion).
# Usage: bash bench/inputs.sh [GUEST]. Needs the guest cache, avml (scripts/test.sh
# installs it), gzip, zstd, lz4 and xz.
set -euo pipefail
cd "$(dirname "$0")/.."
guest="${1:-x86_64-4level}"
dir="${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}/$guest"
avml="${DUMPCONV_AVML:-$HOME/.cache/dumpconv/tools/bin/avml}"
work="${BENCH_WORK:-/tmp/dumpconv-bench-inputs}"
rm -rf "$work" && mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

cargo build -q --release -p dumpconv -p dumpconv-x86-plugin
cargo build -q --release -p dumpconv-formats --example avml_read_bench
target="${CARGO_TARGET_DIR:-target}/release"
bin="$target/dumpconv"

now() { date +%s.%N; }
secs() { echo "$2 - $1" | bc; }

echo "== AVML of $guest (avml convert of ram.raw)"
"$avml" convert --source-format raw --format lime_compressed "$dir/ram.raw" "$work/g.avml"
printf 'file: %s bytes\n' "$(stat -c %s "$work/g.avml")"
"$target/examples/avml_read_bench" "$work/g.avml" 20000

echo
echo "== compressed phys.elf: decompress + spill + open (dumpconv info)"
printf '%-8s %10s %12s %12s\n' wrapper seconds 'file bytes' 'spill disk'
for w in gz zst lz4 xz; do
    f="$work/phys.elf.$w"
    case $w in
        gz) gzip -1 -c "$dir/phys.elf" >"$f" ;;
        zst) zstd -q -3 -T0 -c "$dir/phys.elf" >"$f" ;;
        lz4) lz4 -q -1 -c "$dir/phys.elf" >"$f" ;;
        xz) xz -0 -T0 -c "$dir/phys.elf" >"$f" ;;
    esac
    sync
    t0=$(now)
    out=$("$bin" info --spill-dir "$work" "$f")
    t1=$(now)
    spill=$(printf '%s\n' "$out" | grep -o '0x[0-9a-f]* bytes on disk' | head -1 || true)
    printf '%-8s %10.2f %12s %12d\n' "$w" "$(secs "$t0" "$t1")" "$(stat -c %s "$f")" "${spill%% *}"
done

echo
echo "== x86 walker: built in vs plugin (--paging phys.elf -> ELF, best of 3)"
plugin="$target/libdumpconv_x86_plugin.so"
for how in builtin plugin; do
    best=""
    for _ in 1 2 3; do
        args=(--paging "$dir/phys.elf" -o "$work/p.elf" --force -q --verbose)
        [ "$how" = plugin ] && args=(--plugin "$plugin" --plugin-override "${args[@]}")
        t0=$(now)
        log=$("$bin" "${args[@]}" 2>&1)
        t1=$(now)
        s=$(secs "$t0" "$t1")
        if [ -z "$best" ] || [ "$(echo "$s < $best" | bc)" = 1 ]; then
            best=$s
            walk=$(printf '%s\n' "$log" | grep -o 'walk [0-9.]*[mµ]*s' | tail -1)
        fi
    done
    printf '%-8s whole conversion %.2f s, %s\n' "$how" "$best" "$walk"
done
