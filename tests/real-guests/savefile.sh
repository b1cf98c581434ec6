#!/usr/bin/env bash
# VM save files (issue 16): QEMU migration streams of a real guest, with pmemsave,
# `info registers -a` and QEMU's own dump-guest-memory of the same stopped guest.
#
#   tests/real-guests/savefile.sh [--force] [NAME...]
#
# NAME: x86_64-pc (default) and/or x86_64-q35. Each boots the x86_64-4level guest's
# kernel and initramfs once (QEMU 7.2 TCG, 512 MiB, 2 vCPUs) into
# ${DUMPCONV_SAVEFILE_CACHE:-~/.cache/dumpconv/savefiles}/NAME/. Needs the x86_64-4level
# guest (ensure-guests.sh, called here; a no-op when it is cached). Idempotent: a
# directory with a `complete` stamp of the current version is skipped.
{
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME=${HOME:-/root}
GUESTS=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
CACHE=${DUMPCONV_SAVEFILE_CACHE:-$HOME/.cache/dumpconv/savefiles}
VERSION=1
FORCE=0; WANT=()
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        x86_64-pc|x86_64-q35) WANT+=("$a") ;;
        *) echo "usage: $0 [--force] [x86_64-pc] [x86_64-q35]" >&2; exit 2 ;;
    esac
done
[ ${#WANT[@]} -gt 0 ] || WANT=(x86_64-pc x86_64-q35)
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -w 3600 9
t0=$(date +%s.%N)
todo=()
for n in "${WANT[@]}"; do
    if [ "$FORCE" = 0 ] && grep -qx "savefile-version $VERSION" "$CACHE/$n/complete" 2>/dev/null; then
        echo "savefile $n: cached ($CACHE/$n)" >&2
    else
        todo+=("$n")
    fi
done
if [ ${#todo[@]} -gt 0 ]; then
    bash "$HERE/ensure-guests.sh" x86_64-4level
    src=$GUESTS/x86_64-4level
    qemu=$(awk '{print $1; exit}' "$src/qemu-cmdline.txt")
    QEMU_MODULE_DIR=$(dirname "$(ls "$(dirname "$(dirname "$qemu")")"/lib/*/qemu/accel-tcg-x86_64.so)")
    export QEMU_MODULE_DIR
    for n in "${todo[@]}"; do
        rm -rf "${CACHE:?}/$n"
        nice python3 "$HERE/savefile.py" --guest-dir "$src" --out "$CACHE/$n" \
            --machine "${n#x86_64-}" --mem 512
        printf 'savefile-version %s\ncaptured %s\n' "$VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$CACHE/$n/complete"
    done
fi
echo "savefiles: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s" >&2
exit 0
}
