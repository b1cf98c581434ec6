# Sourced: debian13_qemu PROGRAM ARGS... runs the Debian 13 root's /usr/bin/PROGRAM (QEMU
# 10 from ensure-debian13-qemu.sh) on the host through the root's own dynamic loader and
# libraries, without chroot, so it sees host paths. QEMU system emulators also need
# `-L "$DEBIAN13_ROOT/usr/share/qemu" -L "$DEBIAN13_ROOT/usr/share/seabios"` and
# QEMU_MODULE_DIR (exported here) for their accelerator modules.
DEBIAN13_ROOT=${DUMPCONV_DEBIAN13:-${HOME:-/root}/.cache/dumpconv/debian13}
export QEMU_MODULE_DIR="$DEBIAN13_ROOT/usr/lib/x86_64-linux-gnu/qemu"
debian13_qemu() {
    local prog=$1; shift
    "$DEBIAN13_ROOT/lib64/ld-linux-x86-64.so.2" \
        --library-path "$DEBIAN13_ROOT/lib/x86_64-linux-gnu:$DEBIAN13_ROOT/usr/lib/x86_64-linux-gnu" \
        "$DEBIAN13_ROOT/usr/bin/$prog" "$@"
}
