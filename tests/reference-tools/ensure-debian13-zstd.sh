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
# Idempotent: a root whose $ROOT/.dumpconv-debian13-zstd stamp holds the version below is
# left alone (a warm run takes milliseconds). Its own stamp, so adding zstd never rebuilds
# the root the other reference tools use (debian13-extra.sh). Not called by
# scripts/test.sh (the tests do not need it). Must run as root.
{
set -euo pipefail
exec </dev/null
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/debian13-extra.sh"
. "$HERE/debian13-zstd.sh"
check_extra() {
    local v
    v=$(debian13_zstd --version) || return 1
    printf '%s\n' "$v" >&2
}
ensure_debian13_extra zstd 1 "$@" -- zstd libzstd1
exit 0
}
