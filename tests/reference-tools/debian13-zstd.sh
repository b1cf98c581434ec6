# Sourced: debian13_zstd ARGS... runs the Debian 13 root's /usr/bin/zstd (1.5.7, from
# ensure-debian13-zstd.sh) on the host through the root's own dynamic loader and libraries
# (libzstd 1.5.7, glibc 2.41), without chroot, so it sees host paths. DEBIAN13_ZSTD is the
# same command as an array, for programs that run it (perf, /usr/bin/time). One process:
# the loader maps zstd into itself, so perf and time measure zstd alone.
DEBIAN13_ROOT=${DUMPCONV_DEBIAN13:-${HOME:-/root}/.cache/dumpconv/debian13}
DEBIAN13_ZSTD=("$DEBIAN13_ROOT/lib64/ld-linux-x86-64.so.2"
    --library-path "$DEBIAN13_ROOT/lib/x86_64-linux-gnu:$DEBIAN13_ROOT/usr/lib/x86_64-linux-gnu"
    "$DEBIAN13_ROOT/usr/bin/zstd")
debian13_zstd() { "${DEBIAN13_ZSTD[@]}" "$@"; }
