#!/usr/bin/env bash
# Rebuild the bundled sample dump samples/tiny-x86_64.elf from samples/tiny-guest/.
#
#   samples/build-sample.sh [--no-install] [--keep WORKDIR]
#
# 1. assembles and links the tiny kernel (gcc -c, ld; no other build deps),
# 2. boots it twice under QEMU TCG (deterministic: -icount, RTC from the VM clock),
#    waits for its banner on COM1, stops it, and over QMP: `info registers -a`,
#    `info mem`, `info tlb`, dump-guest-memory paging=false and paging=true (ELF),
#    pmemsave of RAM and of every other range in the dump,
# 3. checks: every PT_LOAD == pmemsave, banner at its physical address, cpu 0 CR3 == pml4,
#    both runs byte-identical, readelf sees 2 NT_PRSTATUS + 2 QEMU notes, gdb prints the
#    banner from QEMU's paging=true dump,
# 4. writes the committed files into samples/ (see samples/README.md) and prints their
#    sizes and sha256.
# Needs: gcc, binutils, python3, qemu-system-x86_64 (installed with apt-get when missing
# and running as root, unless --no-install), gdb optional (its check is skipped without).
set -euo pipefail
export LC_ALL=C
exec </dev/null

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$HERE/tiny-guest
INSTALL=1
WORK=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) INSTALL=0 ;;
        --keep) WORK=$2; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
log() { printf '[build-sample] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -z "$WORK" ]; then
    WORK=$(mktemp -d /tmp/dumpconv-sample.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
else
    rm -rf "$WORK"
fi
mkdir -p "$WORK"

for t in gcc ld nm readelf python3; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y gcc binutils python3)"
done
if ! command -v qemu-system-x86_64 >/dev/null; then
    [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] || die "qemu-system-x86_64 not found (apt-get install -y qemu-system-x86)"
    log "installing qemu-system-x86"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null
fi
log "$(qemu-system-x86_64 --version | head -1)"

# ---- 1. kernel -------------------------------------------------------------------------
K=$WORK/kernel
mkdir -p "$K"
gcc -c -o "$K/tiny.o" "$SRC/tiny.S"
ld -z max-page-size=0x1000 -z noexecstack -T "$SRC/tiny.ld" -o "$K/tiny.elf" "$K/tiny.o"
nm -n "$K/tiny.elf" >"$K/tiny.map"
sym() { awk -v s="$1" '$3 == s {print $1}' "$K/tiny.map"; }
BANNER_VA=$(sym banner)
PML4_VA=$(sym pml4)
[ -n "$BANNER_VA" ] && [ -n "$PML4_VA" ] || die "no banner/pml4 in the symbol map"
PML4_PA=$(printf '0x%x' $(( 0x$PML4_VA - 0xffffffff80000000 + 0x100000 )))
# QEMU loads the file flat (multiboot a.out kludge): the PT_LOADs must be contiguous in
# the file, file offset - physical address constant.
DELTAS=$(readelf -lW "$K/tiny.elf" | while read -r type off _va pa _rest; do
    if [ "$type" = LOAD ]; then echo $(( off - pa )); fi; done | sort -u)
[ "$(wc -l <<<"$DELTAS")" = 1 ] || die "kernel PT_LOADs not contiguous in the file"
log "kernel: $(stat -c %s "$K/tiny.elf") bytes, banner $BANNER_VA, pml4 $PML4_VA (phys $PML4_PA)"

# ---- 2. boot and dump (twice) ------------------------------------------------------------
RAM=2M
RAM_BYTES=0x200000
QEMU="qemu-system-x86_64 -nodefaults -display none -no-reboot -machine pc -accel tcg
      -cpu qemu64 -m $RAM -smp 2 -icount shift=0,sleep=off,align=off
      -rtc base=2000-01-01T00:00:00,clock=vm -kernel tiny.elf"
# (run in $K: QEMU copies the -kernel path into the multiboot command line, in guest RAM)
for run in run1 run2; do
    log "boot $run"
    python3 "$SRC/capture.py" --qemu-args "$QEMU" --workdir "$WORK/$run" --cwd "$K" \
        --ram-size "$RAM_BYTES" --banner-va "$BANNER_VA" --pml4-pa "$PML4_PA" >"$WORK/$run.log" \
        || { cat "$WORK/$run.log"; die "capture $run failed"; }
done
cat "$WORK/run1.log"
for f in dump.elf paging.elf ram.raw registers.txt info-mem.txt info-tlb.txt; do
    cmp -s "$WORK/run1/$f" "$WORK/run2/$f" || die "not reproducible: run1/$f != run2/$f"
done
log "run1 == run2 (dump.elf, paging.elf, ram.raw, registers, info mem, info tlb)"

# ---- 3. checks with the real tools ---------------------------------------------------------
R=$WORK/run1
readelf -lnW "$R/dump.elf" >"$WORK/readelf.txt"
[ "$(grep -c 'NT_PRSTATUS' "$WORK/readelf.txt")" = 2 ] || die "readelf: expected 2 NT_PRSTATUS"
[ "$(grep -c '^  QEMU ' "$WORK/readelf.txt")" = 2 ] || die "readelf: expected 2 QEMU notes"
if command -v gdb >/dev/null; then
    gdb -nx -batch -ex 'set architecture i386:x86-64' -ex "core-file $R/paging.elf" \
        -ex "x/s 0x$BANNER_VA" >"$WORK/gdb.txt" 2>&1 || true
    grep -F "0x$BANNER_VA:	\"dumpconv sample guest: 4-level paging OK\\n\"" "$WORK/gdb.txt" >/dev/null \
        || { cat "$WORK/gdb.txt"; die "gdb did not print the banner from QEMU's paging dump"; }
    log "gdb on QEMU's paging dump: $(grep -F "0x$BANNER_VA:" "$WORK/gdb.txt")"
else
    log "gdb not found: skipping its check"
fi

# ---- 4. committed files ----------------------------------------------------------------------
install -m 644 "$R/dump.elf" "$HERE/tiny-x86_64.elf"
gzip -9 -n -c "$R/paging.elf" >"$HERE/tiny-x86_64.qemu-paging.elf.gz"
install -m 644 "$K/tiny.elf" "$HERE/tiny-x86_64.vmlinux"
install -m 644 "$K/tiny.map" "$HERE/tiny-x86_64.map"
install -m 644 "$R/registers.txt" "$HERE/tiny-x86_64.registers.txt"
install -m 644 "$R/info-mem.txt" "$HERE/tiny-x86_64.info-mem.txt"
install -m 644 "$R/info-tlb.txt" "$HERE/tiny-x86_64.info-tlb.txt"
chmod 644 "$HERE/tiny-x86_64.qemu-paging.elf.gz"
cd "$HERE"
FILES="tiny-x86_64.elf tiny-x86_64.qemu-paging.elf.gz tiny-x86_64.vmlinux tiny-x86_64.map
       tiny-x86_64.registers.txt tiny-x86_64.info-mem.txt tiny-x86_64.info-tlb.txt"
log "written in $HERE:"
for f in $FILES; do printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" "$f"; done
log "total: $(cat $FILES | wc -c) bytes"
