#!/usr/bin/env bash
# Builds the zstd 1.5.7 command from the upstream sources with upstream's own Makefile
# (-O3, multithreaded), for bench/zstd.sh (ZSTD157=...): the same libzstd sources the
# zstd crate bundles (zstd-sys 2.1.2+zstd.1.5.7; lib/ is identical but for build files),
# compiled the way upstream compiles its CLI, beside Debian 13's packaged build.
# The sources are Debian's copy of the upstream release (libzstd_1.5.7+dfsg.orig.tar.xz,
# checked against the sha256 of Debian's .dsc), since that archive is reachable here.
#
#   bash bench/build-zstd157.sh        # prints the path of the zstd binary
#
# Idempotent: ${DUMPCONV_CACHE:-~/.cache/dumpconv}/tools/zstd-1.5.7/zstd is kept once built.
# Cold: ~25 s of compilation on 2 cores.
set -euo pipefail
CACHE=${DUMPCONV_CACHE:-$HOME/.cache/dumpconv}
OUT=$CACHE/tools/zstd-1.5.7
MIRROR=${DUMPCONV_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TARBALL=libzstd_1.5.7+dfsg.orig.tar.xz
SHA256=0c092ef267edce57ba7f3f2645c861f72eaf5e76273c6c3632869423464b90a5
if [ -x "$OUT/zstd" ] && "$OUT/zstd" -V | grep -q 'v1\.5\.7'; then
    echo "$OUT/zstd"
    exit 0
fi
build=$(mktemp -d "${TMPDIR:-/tmp}/zstd157.XXXXXX")
trap 'rm -rf "$build"' EXIT
curl -fsSL -o "$build/$TARBALL" "$MIRROR/pool/main/libz/libzstd/$TARBALL"
echo "$SHA256  $build/$TARBALL" | sha256sum -c --quiet
mkdir "$build/src"
tar -xJf "$build/$TARBALL" -C "$build/src" --strip-components=1
make -j"$(nproc)" -C "$build/src/programs" zstd HAVE_ZLIB=0 HAVE_LZMA=0 HAVE_LZ4=0 >"$build/log" 2>&1 \
    || { tail -20 "$build/log" >&2; exit 1; }
mkdir -p "$OUT"
cp "$build/src/programs/zstd" "$OUT/zstd.tmp"
mv "$OUT/zstd.tmp" "$OUT/zstd"
"$OUT/zstd" -V >&2
echo "$OUT/zstd"
