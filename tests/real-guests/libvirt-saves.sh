#!/usr/bin/env bash
# VM save files made by libvirt itself (issue 16): `virsh save` (uncompressed, gzip, bzip2,
# lzop through qemu.conf's save_image_format) and `virsh dump` (the default, a migration
# stream; also with dump_image_format = "lzop") of one boot of the x86_64-4level guest's
# kernel, with pmemsave and `info registers -a` of the stopped guest.
#
#   tests/real-guests/libvirt-saves.sh [--force]
#
# Debian 12's libvirt 9.0 (libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients;
# installed here with apt-get when missing, without recommends) runs as root without
# systemd: this script creates the `libvirt-qemu` user and the `kvm` / `libvirt-qemu`
# groups the packages expect, writes /etc/libvirt/qemu.conf (the file the privileged
# daemon reads; a file that was there is put back afterwards), starts virtlogd and
# libvirtd by hand and stops them (by their PID files) when done. The domain's emulator is
# the suite's QEMU 7.2 (ensure-guests.sh) through a wrapper script that adds its module
# dir and -L firmware dirs. Output in
# ${DUMPCONV_SAVEFILE_CACHE:-~/.cache/dumpconv/savefiles}/libvirt-x86_64-pc/ (see
# README.md, "VM save files"); idempotent: a `complete` stamp of the current version
# skips the work. Needs root.
{
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HOME=${HOME:-/root}
GUESTS=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}
CACHE=${DUMPCONV_SAVEFILE_CACHE:-$HOME/.cache/dumpconv/savefiles}
NAME=libvirt-x86_64-pc
OUT=$CACHE/$NAME
VERSION=1
FORCE=0
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        *) echo "usage: $0 [--force]" >&2; exit 2 ;;
    esac
done
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-libvirt"
flock -w 3600 9
if [ "$FORCE" = 0 ] && grep -qx "libvirt-saves-version $VERSION" "$OUT/complete" 2>/dev/null; then
    echo "libvirt saves: cached ($OUT), $(elapsed)s" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "libvirt-saves.sh: needs root (libvirtd, /etc/libvirt/qemu.conf)" >&2
    exit 1
fi

need=()
for pkg in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients gzip bzip2 lzop; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "libvirt saves: apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt \
    -s /usr/sbin/nologin libvirt-qemu
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt /run/libvirt

bash "$HERE/ensure-guests.sh" x86_64-4level
qemu=$(awk '{print $1; exit}' "$GUESTS/x86_64-4level/qemu-cmdline.txt")
qroot=$(dirname "$(dirname "$(dirname "$qemu")")")
moddir=$(dirname "$(ls "$qroot"/usr/lib/*/qemu/accel-tcg-x86_64.so)")

WORK=$(mktemp -d /tmp/dumpconv-libvirt.XXXXXX)
CONF=/etc/libvirt/qemu.conf
if [ -e "$CONF" ]; then cp -a "$CONF" "$WORK/qemu.conf.orig"; fi
cleanup() {
    for p in "$WORK/libvirtd.pid" "$WORK/virtlogd.pid"; do
        if [ -s "$p" ]; then kill "$(cat "$p")" 2>/dev/null || true; fi
    done
    if [ -e "$WORK/qemu.conf.orig" ]; then cp -a "$WORK/qemu.conf.orig" "$CONF"; else rm -f "$CONF"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
for p in /run/libvirtd.pid /run/virtlogd.pid; do
    if [ -s "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; then
        echo "libvirt-saves.sh: a $(basename "$p" .pid) is already running (pid $(cat "$p")); stop it first" >&2
        exit 1
    fi
done

# libvirt runs the emulator with a cleaned environment: the wrapper sets what the
# unpacked QEMU needs (its TCG module dir, firmware dirs). It lives in the cache because
# the save files' domain XML names it (restores run it).
mkdir -p "$CACHE/libvirt-tools"
cat >"$CACHE/libvirt-tools/qemu-system-x86_64" <<EOF
#!/bin/sh
# QEMU 7.2 of the dumpconv suite (tests/real-guests/libvirt-saves.sh)
QEMU_MODULE_DIR=$moddir
export QEMU_MODULE_DIR
exec $qemu "\$@" -L $qroot/usr/share/qemu -L $qroot/usr/share/seabios
EOF
chmod 755 "$CACHE/libvirt-tools/qemu-system-x86_64"

virtlogd -d -p "$WORK/virtlogd.pid"
rm -rf "${OUT:?}"
mkdir -p "$OUT"
nice python3 "$HERE/libvirt_saves.py" --guest-dir "$GUESTS/x86_64-4level" --out "$OUT" \
    --emulator "$CACHE/libvirt-tools/qemu-system-x86_64" --conf "$CONF" \
    --pid-file "$WORK/libvirtd.pid"
printf 'libvirt-saves-version %s\ncaptured %s\n' "$VERSION" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$OUT/complete"
echo "libvirt saves: $OUT in $(elapsed)s" >&2
exit 0
}
