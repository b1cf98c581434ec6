#!/usr/bin/env bash
# A minimal Debian 13 (trixie) root with newer reference tools than the Debian 12 host has:
# makedumpfile 1.7.6+ (knows Linux 6.1), crash 8.0.6+, drgn and libkdumpfile's Python
# binding when Debian 13 packages them. Entered with tests/reference-tools/in-debian13.sh.
#
#   tests/reference-tools/ensure-debian13.sh [--arch amd64|i386] [--force]
#
# Root: ${DUMPCONV_DEBIAN13:-~/.cache/dumpconv/debian13} (amd64), or with --arch i386
# ${DUMPCONV_DEBIAN13_I386:-~/.cache/dumpconv/debian13-i386}: an i386 root with only
# makedumpfile and crash, because Debian's amd64 builds of both read x86_64 dumps only
# (makedumpfile and crash are built for one target architecture). Idempotent: a root whose stamp
# file holds the current ROOT_VERSION is left alone (a warm run takes milliseconds and
# touches nothing). One run at a time (flock on "$ROOT.lock"). Must run as root (chroot).
# Everything it mounts is mounted in a private mount namespace (unshare -m), so nothing
# leaks to the host even if it is killed. See README.md beside this file.
# The whole script is one brace group: editing it while it runs changes nothing.
{
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
exec </dev/null

HOME=${HOME:-/root}
ARCH=amd64
ARGS=("$@")
for ((i = 0; i < ${#ARGS[@]}; i++)); do
    if [ "${ARGS[i]}" = --arch ]; then ARCH=${ARGS[i+1]:-}; fi
done
case "$ARCH" in
    amd64) ROOT=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13} ;;
    i386) ROOT=${DUMPCONV_DEBIAN13_I386:-$HOME/.cache/dumpconv/debian13-i386} ;;
    *) echo "--arch must be amd64 or i386" >&2; exit 2 ;;
esac
MIRROR=${DUMPCONV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=trixie
# Bump when the package set or the layout changes: an older root is then rebuilt.
ROOT_VERSION=1
STAMP="$ROOT/.dumpconv-debian13"
# What every root gets; drgn and libkdumpfile are added below when Debian 13 has them.
PACKAGES=(makedumpfile crash python3 ca-certificates)

log() { printf '[%s] ensure-debian13: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

FORCE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --arch) shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "usage: $0 [--arch amd64|i386] [--force]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$FORCE" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$ROOT_VERSION" ]; then
    log "warm: $ROOT is complete (version $ROOT_VERSION), $(elapsed)s"
    exit 0
fi
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
# Another run may have finished it while we waited.
if [ "$FORCE" = 0 ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$ROOT_VERSION" ]; then
    log "warm: $ROOT was completed by another run, $(elapsed)s"
    exit 0
fi

# Never delete a directory that has something mounted in it (a run of in-debian13.sh
# mounts in its own namespace only, but an older tool might not have).
if findmnt -rn -o TARGET | grep -q -F -- "$ROOT/"; then
    die "something is mounted under $ROOT; unmount it first"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "apt-get install debootstrap (host)"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

TMP="$ROOT.tmp"
rm -rf --one-file-system "$TMP"
if [ -e "$ROOT" ]; then
    log "removing the incomplete or outdated root $ROOT"
    rm -rf --one-file-system "$ROOT"
fi
mkdir -p "$TMP"

# In a private mount namespace: debootstrap mounts /proc and /sys in the target.
log "debootstrap --variant=minbase $SUITE ($MIRROR)"
unshare -m --propagation private \
    debootstrap --arch="$ARCH" --variant=minbase --components=main "$SUITE" "$TMP" "$MIRROR" \
    >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; die "debootstrap failed (log: $ROOT.debootstrap.log)"; }
log "debootstrap done, $(elapsed)s"

# Inside the new root: no documentation, man pages or translations (smaller and faster).
cat >"$TMP/etc/dpkg/dpkg.cfg.d/01-dumpconv-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
cat >"$TMP/etc/apt/apt.conf.d/01-dumpconv" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
cp /etc/resolv.conf "$TMP/etc/resolv.conf" 2>/dev/null || true

inroot() { unshare -m --propagation private chroot "$TMP" /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"; }

log "apt-get update (in the root)"
inroot apt-get update -qq
# Optional packages, taken when Debian 13 has them (amd64 root only).
have() { [ -n "$(inroot apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ && $2 != "(none)" {print $2}')" ]; }
DRGN_FROM=none
KDUMPFILE=none
if [ "$ARCH" = amd64 ]; then
    DRGN_FROM=pypi
    if have python3-drgn; then PACKAGES+=(python3-drgn); DRGN_FROM=debian; fi
    for p in python3-libkdumpfile python3-kdumpfile; do
        if have "$p"; then PACKAGES+=("$p"); KDUMPFILE=$p; break; fi
    done
    [ "$DRGN_FROM" = debian ] || PACKAGES+=(python3-venv python3-pip)
else
    PACKAGES=(makedumpfile crash)
fi
log "apt-get install ${PACKAGES[*]} (in the root)"
inroot apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$ROOT.apt.log" 2>&1 \
    || { tail -20 "$ROOT.apt.log" >&2; die "apt-get install in the root failed"; }
if [ "$DRGN_FROM" = pypi ]; then
    # PEP 668: Debian 13's python3 refuses a system-wide pip install; a venv it is.
    log "drgn from PyPI into /opt/drgn (in the root)"
    inroot python3 -m venv /opt/drgn
    inroot /opt/drgn/bin/pip install --quiet --disable-pip-version-check --no-cache-dir \
        "drgn==${DUMPCONV_DRGN_VERSION:-0.3.0}" \
        || die "pip install drgn in the root failed"
    ln -sf /opt/drgn/bin/drgn "$TMP/usr/local/bin/drgn"
fi

{
    echo "suite: $SUITE ($MIRROR), architecture $ARCH"
    echo "made: $(date -u +%FT%TZ) by ensure-debian13.sh version $ROOT_VERSION"
    echo "drgn: $DRGN_FROM"
    echo "libkdumpfile python binding: $KDUMPFILE"
    for p in makedumpfile crash python3-drgn python3-libkdumpfile python3-kdumpfile libkdumpfile10 python3; do
        inroot apt-cache policy "$p" 2>/dev/null | awk -v p="$p" '/Installed:|Candidate:/ {printf "%s %s %s\n", p, $1, $2}'
    done
    inroot makedumpfile -v 2>&1 | head -1 || true
    inroot crash -v 2>&1 | grep -m1 '^crash ' || true
    inroot python3 -c 'import drgn; print("drgn", drgn.__version__)' 2>/dev/null \
        || inroot /opt/drgn/bin/python -c 'import drgn; print("drgn", drgn.__version__)' 2>/dev/null || true
} >"$TMP/.dumpconv-versions"

# Small: no package caches or lists (the versions are recorded above).
inroot apt-get clean
rm -rf "$TMP"/var/lib/apt/lists/* "$TMP"/var/cache/apt/*.bin "$TMP"/var/log/*.log \
    "$TMP"/var/cache/debconf/*-old "$TMP"/root/.cache
mkdir -p "$TMP/guests"

echo "$ROOT_VERSION" >"$TMP/.dumpconv-debian13"
mv "$TMP" "$ROOT"
SIZE=$(du -sh --one-file-system "$ROOT" | cut -f1)
log "cold: $ROOT ($ARCH) built in $(elapsed)s, $SIZE"
sed 's/^/  /' "$ROOT/.dumpconv-versions" >&2
exit 0
}
