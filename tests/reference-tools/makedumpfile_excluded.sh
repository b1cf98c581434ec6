#!/usr/bin/env bash
# makedumpfile 1.7.6 (Debian 13 root) filters a real guest's dump at one dump level; the
# excluded page frames of its output, read by kdump_excluded.py, are the oracle.
#
#   tests/reference-tools/makedumpfile_excluded.sh GUEST LEVEL OUTDIR
#
# Input: the guest's QEMU phys.elf with its program headers moved to offset 64
# (elf_phdrs_at_64.py: makedumpfile ignores e_phoff; for i386 also p_vaddr = PAGE_OFFSET +
# p_paddr in low memory, as /proc/vmcore has it), a temporary sparse copy. i386 guests use
# the i386 root (Debian's makedumpfile reads its own architecture's dumps only). Output,
# cached in ${DUMPCONV_REFERENCE_CACHE:-~/.cache/dumpconv/reference}/makedumpfile/GUEST/:
#   d<LEVEL>.kdump     makedumpfile -c -d LEVEL (DUMPCONV_MDF_COMPRESS=-z for zstd, -l lzo,
#                      -p snappy: then d<LEVEL>-z.kdump etc.)
#   d<LEVEL>.excluded  kdump_excluded.py --zero of it (dump_level, block_size, excluded
#                      ranges "0xSTART 0xEND", zero-descriptor ranges "zero 0xS 0xE")
#   d<LEVEL>.log       makedumpfile's messages and how long it took
#   d<LEVEL>.key       what it was made from (input size/mtime, tool versions); a mismatch
#                      redoes it
# OUTDIR gets hard links (or copies) GUEST-d<LEVEL>[-z].kdump and .excluded;
# the path of the .excluded file is printed. A cached result takes ~0.1 s.
# One brace group: bash parses it all before running, so editing the file while it runs
# changes nothing.
{
set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME=${HOME:-/root}
GUESTS=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
REF=${DUMPCONV_REFERENCE_CACHE:-$HOME/.cache/dumpconv/reference}
COMPRESS=${DUMPCONV_MDF_COMPRESS:--c}
SCRIPT_VERSION=1

[ $# -eq 3 ] || { echo "usage: $0 GUEST LEVEL OUTDIR" >&2; exit 2; }
GUEST=$1 LEVEL=$2 OUTDIR=$3
case "$LEVEL" in ''|*[!0-9]*) echo "$0: LEVEL must be 0..31, not '$LEVEL'" >&2; exit 2 ;; esac
[ "$LEVEL" -le 31 ] || { echo "$0: LEVEL must be 0..31" >&2; exit 2; }
case "$COMPRESS" in -c|-z|-l|-p) ;; *) echo "$0: DUMPCONV_MDF_COMPRESS must be -c, -z, -l or -p" >&2; exit 2 ;; esac
SRC="$GUESTS/$GUEST/phys.elf"
[ -f "$GUESTS/$GUEST/complete" ] && [ -f "$SRC" ] \
    || { echo "$0: guest $GUEST is not in $GUESTS (tests/real-guests/ensure-guests.sh)" >&2; exit 1; }

# Debian's makedumpfile reads dumps of its own architecture only: i386 guests use the
# i386 root.
ROOTOPT=()
RELAYOPT=()
ROOTDIR=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
if grep -q '"arch": *"i386"' "$GUESTS/$GUEST/meta.json"; then
    ROOTOPT=(--i386)
    PO=$(sed -n 's/^CONFIG_PAGE_OFFSET=//p' "$GUESTS/$GUEST/config")
    RELAYOPT=(--page-offset "${PO:-0xc0000000}")
    ROOTDIR=${DUMPCONV_DEBIAN13_I386:-$HOME/.cache/dumpconv/debian13-i386}
fi
DIR="$REF/makedumpfile/$GUEST"
mkdir -p "$DIR" "$OUTDIR"
# -c (zlib) is d<LEVEL>.*, the other codecs d<LEVEL>-z.* (zstd), -l (lzo), -p (snappy).
BASE="$DIR/d$LEVEL"
[ "$COMPRESS" = -c ] || BASE="$DIR/d$LEVEL$COMPRESS"
NAME="$GUEST-$(basename "$BASE")"
KEY="script $SCRIPT_VERSION; input $(stat -c '%s %Y' "$SRC"); compress $COMPRESS; root $(sed -n 's/^makedumpfile: //p' "$ROOTDIR/.dumpconv-versions" 2>/dev/null)"

publish() {
    local f
    for f in kdump excluded; do
        ln -f "$BASE.$f" "$OUTDIR/$NAME.$f" 2>/dev/null \
            || cp -f "$BASE.$f" "$OUTDIR/$NAME.$f"
    done
    echo "$OUTDIR/$NAME.excluded"
}

if [ "$(cat "$BASE.key" 2>/dev/null)" = "$KEY" ] && [ -f "$BASE.excluded" ] && [ -f "$BASE.kdump" ]; then
    publish
    exit 0
fi

exec 9>"$DIR/.lock"
flock 9
if [ "$(cat "$BASE.key" 2>/dev/null)" = "$KEY" ] && [ -f "$BASE.excluded" ] && [ -f "$BASE.kdump" ]; then
    publish
    exit 0
fi
rm -f "$BASE.key" "$BASE.kdump" "$BASE.excluded"
WORK=$(mktemp -d "$DIR/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
python3 "$HERE/elf_phdrs_at_64.py" "${RELAYOPT[@]}" "$SRC" "$WORK/in.elf"
t0=$(date +%s.%N)
rc=0
"$HERE/in-debian13.sh" "${ROOTOPT[@]}" --bind "$WORK:/work" \
    makedumpfile "$COMPRESS" -d "$LEVEL" /work/in.elf /work/out.kdump >"$WORK/log" 2>&1 || rc=$?
if [ "$rc" != 0 ]; then
    tr '\r' '\n' <"$WORK/log" | grep -v '%\]' | tee "$BASE.failed.log" >&2 || true
    echo "$0: makedumpfile $COMPRESS -d $LEVEL failed (status $rc) on $GUEST's phys.elf (log: $BASE.failed.log)" >&2
    exit 1
fi
t1=$(date +%s.%N)
{
    tr '\r' '\n' <"$WORK/log" | grep -v '%\]' | grep -v '^$' || true
    echo "makedumpfile $COMPRESS -d $LEVEL: $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s (in the Debian 13 root)"
} >"$WORK/log.txt"
python3 "$HERE/kdump_excluded.py" --zero "$WORK/out.kdump" >"$WORK/excluded"
grep -qx "dump_level $LEVEL" "$WORK/excluded" \
    || { echo "$0: makedumpfile's output says $(head -1 "$WORK/excluded"), not dump_level $LEVEL" >&2; exit 1; }
chmod 0644 "$WORK/out.kdump"
mv "$WORK/out.kdump" "$BASE.kdump"
mv "$WORK/excluded" "$BASE.excluded"
mv "$WORK/log.txt" "$BASE.log"
echo "$KEY" >"$BASE.key"
publish
exit
}
