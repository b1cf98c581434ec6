#!/usr/bin/env bash
# Run a command inside the Debian 13 root made by ensure-debian13.sh.
#
#   tests/reference-tools/in-debian13.sh [--i386] [--bind HOSTDIR[:PATH[:ro]]]... [--] CMD [ARG...]
#
# --i386: the i386 root (ensure-debian13.sh --arch i386), whose makedumpfile and crash
# read i386 dumps (Debian's amd64 builds read x86_64 dumps only).
# Inside: /proc (a fresh proc mount), /dev (the host's, bound), a private tmpfs on /tmp,
# the guest cache (${DUMPCONV_GUEST_CACHE:-~/.cache/dumpconv/guests}) read-only at
# /guests, and each --bind: HOSTDIR at PATH (default: the same path as on the host),
# read-only with ":ro". CMD runs with a clean environment (PATH, HOME=/root, LC_ALL=C,
# TZ=UTC) in the root's "/". Its exit status is this script's.
#
# Everything is mounted in a private mount namespace (unshare -m, propagation private):
# nothing is visible to the host or to other runs, any number of runs can go at once, and
# the mounts disappear with the namespace even if this script is killed; a trap also
# unmounts them in order on a normal exit. Must run as root.
# One brace group: bash parses it all before running, so editing the file while it runs
# changes nothing.
{
set -euo pipefail

HOME=${HOME:-/root}
ROOT=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
for a in "$@"; do
    case "$a" in
        --i386) ROOT=${DUMPCONV_DEBIAN13_I386:-$HOME/.cache/dumpconv/debian13-i386} ;;
        --) break ;;
    esac
done
GUESTS=${DUMPCONV_GUEST_CACHE:-$HOME/.cache/dumpconv/guests}

die() { echo "in-debian13: $*" >&2; exit 125; }

if [ "${_DUMPCONV_IN_DEBIAN13_NS:-}" != "$$" ]; then
    [ "$(id -u)" = 0 ] || die "must run as root (mount namespace, chroot)"
    [ -f "$ROOT/.dumpconv-debian13" ] || die "no Debian 13 root at $ROOT (run tests/reference-tools/ensure-debian13.sh$(case "$ROOT" in *i386*) echo " --arch i386" ;; esac))"
    # exec keeps the PID, so the marker names this very process inside the namespace.
    _DUMPCONV_IN_DEBIAN13_NS=$$ exec unshare -m --propagation private "$BASH" "$0" "$@"
fi
unset _DUMPCONV_IN_DEBIAN13_NS

BINDS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bind) [ $# -ge 2 ] || die "--bind needs HOSTDIR[:PATH[:ro]]"; BINDS+=("$2"); shift 2 ;;
        --bind=*) BINDS+=("${1#--bind=}"); shift ;;
        --i386) shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || die "no command (usage: in-debian13.sh [--bind HOSTDIR[:PATH[:ro]]]... CMD...)"

MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTED[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# bind SRC DST [ro]
bind() {
    local src=$1 dst=$2 ro=${3:-}
    if [ -d "$src" ]; then mkdir -p "$dst"; else mkdir -p "$(dirname "$dst")"; [ -e "$dst" ] || : >"$dst"; fi
    mount --rbind "$src" "$dst"
    MOUNTED+=("$dst")
    if [ "$ro" = ro ]; then mount -o remount,bind,ro "$dst"; fi
}

mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc")
bind /dev "$ROOT/dev"
mount -t tmpfs -o mode=1777,size=50% tmpfs "$ROOT/tmp"; MOUNTED+=("$ROOT/tmp")
if [ -d "$GUESTS" ]; then bind "$GUESTS" "$ROOT/guests" ro; fi
for b in "${BINDS[@]}"; do
    IFS=: read -r src dst ro <<<"$b"
    [ -n "$dst" ] || dst=$src
    [ -e "$src" ] || die "--bind $b: $src does not exist"
    case "$dst" in /*) ;; *) die "--bind $b: the path inside must be absolute" ;; esac
    src=$(realpath "$src")
    bind "$src" "$ROOT$dst" "$ro"
done

set +e
chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LC_ALL=C TZ=UTC PYTHONDONTWRITEBYTECODE=1 "$@"
rc=$?
exit $rc
exit
}
