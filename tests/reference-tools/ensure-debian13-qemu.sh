#!/usr/bin/env bash
# Debian 13's QEMU (10.x) inside the amd64 Debian 13 root made by ensure-debian13.sh:
# qemu-system-x86 and qemu-utils (qemu-img), for the inputs only a newer QEMU writes
# (mapped-ram migration files, issue 16). The binaries run on the host through the root's
# own dynamic loader and libraries, no chroot (see debian13-qemu below).
#
#   tests/reference-tools/ensure-debian13-qemu.sh [--force]
#
# Idempotent: a root whose $ROOT/.dumpconv-debian13-qemu stamp holds QEMU_VERSION is left
# alone (a warm run takes milliseconds). Its own stamp, so adding QEMU never rebuilds the
# root the other reference tools use. Must run as root (chroot for apt-get).
{
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
exec </dev/null
HOME=${HOME:-/root}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
QEMU_VERSION=1
STAMP="$ROOT/.dumpconv-debian13-qemu"
PACKAGES=(qemu-system-x86 qemu-utils)
log() { printf '[%s] ensure-debian13-qemu: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
FORCE=0
case "${1:-}" in --force) FORCE=1 ;; "") ;; *) echo "usage: $0 [--force]" >&2; exit 2 ;; esac

if [ "$FORCE" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$QEMU_VERSION" ] \
    && [ "$(cat "$ROOT/.dumpconv-debian13" 2>/dev/null)" != "" ]; then
    log "warm: QEMU in $ROOT is complete (version $QEMU_VERSION), $(elapsed)s"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (chroot)"
bash "$HERE/ensure-debian13.sh"
exec 9>"$ROOT.lock"
flock 9
if [ "$FORCE" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$QEMU_VERSION" ]; then
    log "warm: completed by another run, $(elapsed)s"
    exit 0
fi
rm -f "$STAMP"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
inroot() { unshare -m --propagation private chroot "$ROOT" /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"; }
log "apt-get update (in $ROOT)"
inroot apt-get update -qq
log "apt-get install ${PACKAGES[*]} (in $ROOT)"
inroot apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$ROOT.qemu-apt.log" 2>&1 \
    || { tail -20 "$ROOT.qemu-apt.log" >&2; die "apt-get install in the root failed"; }
inroot apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
# the binaries must run on the host through the root's loader
. "$HERE/debian13-qemu.sh"
v=$(debian13_qemu qemu-system-x86_64 --version | head -1) || die "the root's qemu-system-x86_64 does not run on the host"
log "$v"
debian13_qemu qemu-img --version | head -1 >&2
{
    for p in "${PACKAGES[@]}"; do
        inroot dpkg-query -W -f='${Package} ${Version}\n' "$p"
    done
} >"$ROOT/.dumpconv-debian13-qemu-versions"
echo "$QEMU_VERSION" >"$STAMP"
log "cold: QEMU installed in $ROOT in $(elapsed)s ($(du -sh --one-file-system "$ROOT" | cut -f1) root)"
exit 0
}
