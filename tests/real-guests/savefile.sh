#!/usr/bin/env bash
# VM save files (issue 16): QEMU migration streams of a real guest, with pmemsave,
# `info registers -a` and QEMU's own dump-guest-memory of the same stopped guest.
#
#   tests/real-guests/savefile.sh [--force] [NAME...]
#
# NAME (default: all): x86_64-pc (512 MiB; also a qcow2 disk holding a `savevm`
# snapshot), x86_64-pc-mapped-ram (512 MiB, Debian 13's QEMU 10: a `migrate file:` with
# multifd + mapped-ram instead of the stream), x86_64-q35 (512 MiB), x86_64-pc-highmem (4608 MiB and
# a VGA device: pc.ram split at 3 GiB, VGA window), x86_64-q35-highmem (3 GiB and a VGA
# device: split at 2 GiB), arm64-virt (512 MiB, the arm64-4k guest's kernel), and
# x86_64-la57, x86_64-kaslr, i386-pae, i386-2level (512 MiB, pc: the guest of that name,
# booted as ensure-guests.sh boots it: its QEMU binary, -cpu and command line). Each boots
# the guest's kernel and initramfs once (QEMU 7.2 TCG, 2 vCPUs) into
# ${DUMPCONV_SAVEFILE_CACHE:-~/.cache/dumpconv/savefiles}/NAME/. Needs the x86_64-4level
# / arm64-4k guests (and the one of each name above) (ensure-guests.sh, called here; a no-op when they are cached). Idempotent: a
# directory with a `complete` stamp of the current version is skipped.
{
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME=${HOME:-/root}
GUESTS=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
CACHE=${DUMPCONV_SAVEFILE_CACHE:-$HOME/.cache/dumpconv/savefiles}
VERSION=2
# a name whose captures changed since: its own version (the others are not remade)
version_of() {
    case "$1" in
        x86_64-pc) echo 3 ;;
        x86_64-pc-mapped-ram) echo 1 ;;
        x86_64-la57|x86_64-kaslr|i386-pae|i386-2level) echo 1 ;;
        *) echo "$VERSION" ;;
    esac
}
FORCE=0; WANT=()
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        x86_64-pc|x86_64-pc-mapped-ram|x86_64-q35|x86_64-pc-highmem|x86_64-q35-highmem|arm64-virt|x86_64-la57|x86_64-kaslr|i386-pae|i386-2level) WANT+=("$a") ;;
        *) echo "usage: $0 [--force] [x86_64-pc|x86_64-pc-mapped-ram|x86_64-q35|x86_64-pc-highmem|x86_64-q35-highmem|arm64-virt|x86_64-la57|x86_64-kaslr|i386-pae|i386-2level]..." >&2; exit 2 ;;
    esac
done
[ ${#WANT[@]} -gt 0 ] || WANT=(x86_64-pc x86_64-pc-mapped-ram x86_64-q35 x86_64-pc-highmem x86_64-q35-highmem arm64-virt
    x86_64-la57 x86_64-kaslr i386-pae i386-2level)
# name -> guest whose kernel, initramfs and QEMU it boots, machine, MiB, extra options
spec() {
    case "$1" in
        # --savevm and --qemu10 need Debian 13's QEMU 10 (its qemu-img, its emulator)
        x86_64-pc) echo "x86_64-4level pc 512 --savevm dumpconv-snap --qemu10-img" ;;
        x86_64-pc-mapped-ram) echo "x86_64-4level pc 512 --mapped-ram --qemu10" ;;
        x86_64-q35) echo "x86_64-4level q35 512" ;;
        x86_64-pc-highmem) echo "x86_64-4level pc 4608 --vga" ;;
        x86_64-q35-highmem) echo "x86_64-4level q35 3072 --vga" ;;
        arm64-virt) echo "arm64-4k virt 512" ;;
        # the suite's other x86 guests, each as ensure-guests.sh boots it (its QEMU, -cpu,
        # cmdline: la57 paging, KASLR, 32-bit PAE / 2-level paging)
        x86_64-la57|x86_64-kaslr|i386-pae|i386-2level) echo "$1 pc 512" ;;
    esac
}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 3600 9
t0=$(date +%s.%N)
todo=()
for n in "${WANT[@]}"; do
    if [ "$FORCE" = 0 ] && grep -qx "savefile-version $(version_of "$n")" "$CACHE/$n/complete" 2>/dev/null; then
        echo "savefile $n: cached ($CACHE/$n)" >&2
    else
        todo+=("$n")
    fi
done
if [ ${#todo[@]} -gt 0 ]; then
    need=()
    for n in "${todo[@]}"; do
        read -r g _ <<<"$(spec "$n")"
        [[ " ${need[*]-} " == *" $g "* ]] || need+=("$g")
    done
    bash "$HERE/ensure-guests.sh" "${need[@]}"
    if [[ " $(for n in "${todo[@]}"; do spec "$n"; done) " == *--qemu10* ]]; then
        bash "$HERE/../reference-tools/ensure-debian13-qemu.sh"
    fi
    D13=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
    QEMU_IMG="$D13/lib64/ld-linux-x86-64.so.2 --library-path $D13/lib/x86_64-linux-gnu:$D13/usr/lib/x86_64-linux-gnu $D13/usr/bin/qemu-img"
    # TCG of qemu-system-x86_64 7.2 is a module (ensure-guests.sh README); harmless for arm
    qemu=$(awk '{print $1; exit}' "$GUESTS/x86_64-4level/qemu-cmdline.txt" 2>/dev/null || true)
    if [ -n "$qemu" ]; then
        QEMU_MODULE_DIR=$(dirname "$(ls "$(dirname "$(dirname "$qemu")")"/lib/*/qemu/accel-tcg-x86_64.so)")
        export QEMU_MODULE_DIR
    fi
    for n in "${todo[@]}"; do
        rm -rf "${CACHE:?}/$n"
        read -r g machine mem extra <<<"$(spec "$n")"
        extra=${extra/--qemu10-img/}
        extra=${extra/--qemu10/--qemu-root $D13}
        t1=$(date +%s.%N)
        # shellcheck disable=SC2086
        nice python3 "$HERE/savefile.py" --guest-dir "$GUESTS/$g" --out "$CACHE/$n" \
            --machine "$machine" --mem "$mem" --qemu-img "$QEMU_IMG" $extra
        echo "savefile $n: $(awk -v a="$t1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s" >&2
        printf 'savefile-version %s\ncaptured %s\n' "$(version_of "$n")" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$CACHE/$n/complete"
    done
fi
echo "savefiles: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s" >&2
exit 0
}
