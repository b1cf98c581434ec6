#!/usr/bin/env bash
# Debian 13's QEMU (10.x) inside the amd64 Debian 13 root made by ensure-debian13.sh:
# qemu-system-x86 and qemu-utils (qemu-img), for the inputs only a newer QEMU writes
# (mapped-ram migration files, issue 16). The binaries run on the host through the root's
# own dynamic loader and libraries, no chroot (see debian13-qemu below).
#
#   tests/reference-tools/ensure-debian13-qemu.sh [--force]
#
# Idempotent: a root whose $ROOT/.dumpconv-debian13-qemu stamp holds the version below is
# left alone (a warm run takes milliseconds). Its own stamp, so adding QEMU never rebuilds
# the root the other reference tools use (debian13-extra.sh). Must run as root.
{
set -euo pipefail
exec </dev/null
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/debian13-extra.sh"
. "$HERE/debian13-qemu.sh"
check_extra() {
    local v
    v=$(debian13_qemu qemu-system-x86_64 --version | head -1) || return 1
    printf '%s\n' "$v" >&2
    debian13_qemu qemu-img --version | head -1 >&2
}
ensure_debian13_extra qemu 1 "$@" -- qemu-system-x86 qemu-utils
exit 0
}
