#!/usr/bin/env bash
# A/B of the x86 walk between two builds (the walk part of bench/inputs.sh, both sides
# interleaved, best of N): --paging phys.elf -> ELF with the built-in walker and with the
# x86 walker loaded as a plugin, on three real guests; then checks the two builds write
# the same bytes.
# Usage: A=DIR_OF_BUILD_A B=DIR_OF_BUILD_B [N=7] bash bench/walk_ab.sh
# (each DIR holds dumpconv and libdumpconv_x86_plugin.so, e.g. target/ci of two worktrees).
set -euo pipefail
A=${A:?A=directory of build A}; B=${B:?B=directory of build B}
N=${N:-7}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for g in x86_64-4level x86_64-la57 i386-pae; do
  in=$HOME/.cache/dumpconv/guests/$g/phys.elf
  for how in builtin plugin; do
    declare -A best=() walk=()
    for i in $(seq $N); do
      for side in main branch; do
        bin=$A; [ $side = branch ] && bin=$B
        args=(--paging "$in" -o $work/p.elf --force -q --verbose)
        [ $how = plugin ] && args=(--plugin $bin/libdumpconv_x86_plugin.so --plugin-override "${args[@]}")
        t0=$(date +%s.%N); log=$($bin/dumpconv "${args[@]}" 2>&1); t1=$(date +%s.%N)
        s=$(echo "$t1 - $t0" | bc)
        w=$(printf '%s\n' "$log" | grep -o 'walk [0-9.]*[mµ]*s' | tail -1 | awk '{print $2}')
        wv=$(echo "$w" | sed 's/ms//;s/µs//')
        case $w in *µs) wv=$(echo "$wv / 1000" | bc -l);; esac
        if [ -z "${best[$side]:-}" ] || [ "$(echo "$s < ${best[$side]}" | bc)" = 1 ]; then best[$side]=$s; fi
        if [ -z "${walk[$side]:-}" ] || [ "$(echo "$wv < ${walk[$side]}" | bc)" = 1 ]; then walk[$side]=$wv; fi
      done
    done
    printf '%-14s %-8s main: conversion %.3f s, walk %.2f ms | branch: conversion %.3f s, walk %.2f ms\n' \
      $g $how ${best[main]} ${walk[main]} ${best[branch]} ${walk[branch]}
    unset best walk
  done
done
cmp <($A/dumpconv --paging $HOME/.cache/dumpconv/guests/x86_64-la57/phys.elf -o - --format elf -q) \
    <($B/dumpconv --paging $HOME/.cache/dumpconv/guests/x86_64-la57/phys.elf -o - --format elf -q) && echo "la57 --paging ELF: main and branch byte-identical"
