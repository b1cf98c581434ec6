# Sourced by ensure-debian13-qemu.sh and ensure-debian13-zstd.sh: add Debian packages to
# the amd64 Debian 13 root made by ensure-debian13.sh, under a stamp of their own, so that
# adding them never rebuilds the root the other reference tools use.
#
#   ensure_debian13_extra NAME STAMP_VERSION [--force] -- PACKAGE...
#
# NAME names the stamp ($ROOT/.dumpconv-debian13-NAME), the apt log and the log lines.
# Before writing the stamp it calls `check_extra` (defined by the caller), which must run
# the installed binaries on the host and fail if they do not. Idempotent: a root whose
# stamp holds STAMP_VERSION is left alone (milliseconds). Must run as root (chroot).

ensure_debian13_extra() {
    local name=$1 version=$2 force=0
    shift 2
    while [ $# -gt 0 ]; do
        case $1 in
        --force) force=1 ;;
        --) shift; break ;;
        *) echo "usage: ensure-debian13-$name.sh [--force]" >&2; exit 2 ;;
        esac
        shift
    done
    local packages=("$@")
    export DEBIAN_FRONTEND=noninteractive LC_ALL=C
    HOME=${HOME:-/root}
    local here root stamp t0
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    root=${DUMPCONV_DEBIAN13:-$HOME/.cache/dumpconv/debian13}
    stamp="$root/.dumpconv-debian13-$name"
    t0=$(date +%s.%N)
    log() { printf '[%s] ensure-debian13-%s: %s\n' "$(date +%H:%M:%S)" "$name" "$*" >&2; }
    die() { log "ERROR: $*"; exit 1; }
    elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

    if [ "$force" = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ] \
        && [ "$(cat "$root/.dumpconv-debian13" 2>/dev/null)" != "" ]; then
        log "warm: $name in $root is complete (version $version), $(elapsed)s"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "must run as root (chroot)"
    bash "$here/ensure-debian13.sh"
    exec 9>"$root.lock"
    flock 9
    if [ "$force" = 0 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
        log "warm: completed by another run, $(elapsed)s"
        return 0
    fi
    rm -f "$stamp"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    inroot() { unshare -m --propagation private chroot "$root" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive "$@"; }
    log "apt-get update (in $root)"
    inroot apt-get update -qq
    log "apt-get install ${packages[*]} (in $root)"
    inroot apt-get install -y -qq --no-install-recommends "${packages[@]}" >"$root.$name-apt.log" 2>&1 \
        || { tail -20 "$root.$name-apt.log" >&2; die "apt-get install in the root failed"; }
    inroot apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    # The binaries must run on the host through the root's loader.
    check_extra || die "the root's $name does not run on the host"
    for p in "${packages[@]}"; do
        inroot dpkg-query -W -f='${Package} ${Version}\n' "$p"
    done >"$root/.dumpconv-debian13-$name-versions"
    echo "$version" >"$stamp"
    log "cold: $name installed in $root in $(elapsed)s ($(du -sh --one-file-system "$root" | cut -f1) root)"
}
