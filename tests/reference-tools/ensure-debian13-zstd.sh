#!/usr/bin/env bash
# Debian 13's zstd command (1.5.7, the libzstd version the zstd crate bundles) inside the
# amd64 Debian 13 root made by ensure-debian13.sh, as the reference of the whole-output
# zstd benchmark (bench/zstd.sh): the host's Debian 12 zstd is 1.5.4, whose compressor
# lacks 1.5.7's block pre-splitter, so comparing against it mixes library versions. The
# binary runs on the host through the root's own loader and libraries, no chroot
# (debian13_zstd in debian13-zstd.sh).
#
#   tests/reference-tools/ensure-debian13-zstd.sh [--force]
#
# Idempotent: a root whose $ROOT/.dumpconv-debian13-zstd stamp holds ZSTD_STAMP_VERSION
# is left alone (a warm run takes milliseconds). Its own stamp, so adding zstd never
# rebuilds the root the other reference tools use. Not called by scripts/test.sh (the
# tests do not need it). Must run as root (chroot for apt-get).
{
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
exec </dev/null
HOME=${HOME:-/root}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
ZSTD_STAMP_VERSION=1
STAMP="$ROOT/.dumpconv-debian13-zstd"
PACKAGES=(zstd)
log() { printf '[%s] ensure-debian13-zstd: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
FORCE=0
case "${1:-}" in --force) FORCE=1 ;; "") ;; *) echo "usage: $0 [--force]" >&2; exit 2 ;; esac

if [ "$FORCE" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$ZSTD_STAMP_VERSION" ] \
    && [ "$(cat "$ROOT/.dumpconv-debian13" 2>/dev/null)" != "" ]; then
    log "warm: zstd in $ROOT is complete (version $ZSTD_STAMP_VERSION), $(elapsed)s"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (chroot)"
bash "$HERE/ensure-debian13.sh"
exec 9>"$ROOT.lock"
flock 9
if [ "$FORCE" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$ZSTD_STAMP_VERSION" ]; then
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
inroot apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$ROOT.zstd-apt.log" 2>&1 \
    || { tail -20 "$ROOT.zstd-apt.log" >&2; die "apt-get install in the root failed"; }
inroot apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin
# the binary must run on the host through the root's loader
. "$HERE/debian13-zstd.sh"
v=$(debian13_zstd --version) || die "the root's zstd does not run on the host"
log "$v"
{
    for p in "${PACKAGES[@]}" libzstd1; do
        inroot dpkg-query -W -f='${Package} ${Version}\n' "$p"
    done
} >"$ROOT/.dumpconv-debian13-zstd-versions"
echo "$ZSTD_STAMP_VERSION" >"$STAMP"
log "cold: zstd installed in $ROOT in $(elapsed)s"
exit 0
}
