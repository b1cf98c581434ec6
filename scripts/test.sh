#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# On a fresh Debian machine it installs what the tests need (gdb, gdb-multiarch, crash,
# makedumpfile, QEMU for the real-guest suite), builds the real-guest dumps into the cache outside the
# clone (~/.cache/dumpconv/guests, reused when present), then checks formatting, lints
# and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

need=()
# gdb-multiarch: the arm64 guest's reference reads and the arm64 output checks
for pkg in gdb gdb-multiarch crash makedumpfile binutils gzip zstd xz-utils lz4 bzip2 lzop b3sum; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# avml (Microsoft's acquisition tool) makes the real LiME and AVML files the input tests
# read; built once into the cache outside the clone (about 20 s).
AVML_ROOT="$HOME/.cache/dumpconv/tools"
if [ ! -x "$AVML_ROOT/bin/avml" ]; then
    step "cargo install avml into $AVML_ROOT"
    cargo install --locked avml --no-default-features --features convert --root "$AVML_ROOT"
fi
export DUMPCONV_AVML="$AVML_ROOT/bin/avml"

# drgn (PyPI wheel; it bundles libkdumpfile, which reads kdump files): the reader tests
# (tests/tests/readers_drgn.rs) open our kdump files with it. Installed once (~3 s).
DRGN_VERSION=${DUMPCONV_DRGN_VERSION:-0.3.0}
PY=${DUMPCONV_PYTHON:-python3}
if command -v "$PY" >/dev/null 2>&1; then
    if ! "$PY" -c 'import drgn' >/dev/null 2>&1; then
        step "pip install drgn==$DRGN_VERSION"
        "$PY" -m pip install --quiet --disable-pip-version-check "drgn==$DRGN_VERSION"
    fi
    export DUMPCONV_PYTHON="$PY" DUMPCONV_REQUIRE_DRGN=1
else
    echo "no $PY: the drgn reader tests will skip" >&2
fi

# Volatility 3 (PyPI) in a venv cached outside the clone: the reader matrix
# (tests/tests/readers_volatility.rs). Cold ~15 s (pip), warm ~0.01 s. Its Linux plugins
# need symbol tables made by dwarf2json, which is not installed here: when a dwarf2json
# binary is in the cache, tests/readers/volatility_isf.sh makes the missing tables.
VOL_ROOT="$HOME/.cache/dumpconv/volatility"
VOL_VERSION=${DUMPCONV_VOLATILITY_VERSION:-2.28.2}
if command -v python3 >/dev/null 2>&1; then
    if [ "$(cat "$VOL_ROOT/venv/.dumpconv-volatility" 2>/dev/null)" != "$VOL_VERSION" ]; then
        step "pip install volatility3==$VOL_VERSION into $VOL_ROOT/venv"
        rm -rf "$VOL_ROOT/venv"
        python3 -m venv "$VOL_ROOT/venv"
        "$VOL_ROOT/venv/bin/pip" install --quiet --disable-pip-version-check "volatility3==$VOL_VERSION"
        echo "$VOL_VERSION" > "$VOL_ROOT/venv/.dumpconv-volatility"
    fi
    export DUMPCONV_VOLATILITY="$VOL_ROOT/venv/bin/vol" DUMPCONV_REQUIRE_VOLATILITY=1
else
    echo "no python3: the Volatility reader tests will skip" >&2
fi

if [ "${DUMPCONV_SKIP_GUESTS:-0}" != 1 ]; then
    step "real-guest dumps (tests/real-guests/ensure-guests.sh)"
    bash tests/real-guests/ensure-guests.sh
    # QEMU migration streams of the x86_64-4level and arm64-4k kernels (issue 16): ~3 min cold,
    # 0.1 s warm (tests/real-guests/README.md, "VM save files")
    step "VM save files (tests/real-guests/savefile.sh)"
    bash tests/real-guests/savefile.sh
    # `virsh save` (raw, gzip, bzip2, lzop) and `virsh dump` files made by Debian 12's
    # libvirt 9.0 from one boot of the x86_64-4level kernel (issue 16): installs libvirt,
    # starts and stops its daemons; ~2 min cold (+ apt), 0.01 s warm. Needs root.
    if [ "$(id -u)" = 0 ]; then
        step "libvirt save files (tests/real-guests/libvirt-saves.sh)"
        bash tests/real-guests/libvirt-saves.sh
        export DUMPCONV_REQUIRE_LIBVIRT=1
    else
        echo "not root: no libvirt save files; tests/tests/libvirt_saves.rs will skip" >&2
    fi
    # The cache is built: a guest missing now is a failure, not a skip.
    export DUMPCONV_REQUIRE_GUESTS=1
fi

# Newer reference tools (makedumpfile 1.7.6, crash 8.0.6, drgn, libkdumpfile) from Debian 13
# in minimal debootstrap roots under ~/.cache/dumpconv (tests/reference-tools/README.md):
# ~35 s + ~65 s cold, milliseconds warm. Needs root (debootstrap, chroot).
if [ "${DUMPCONV_SKIP_REFTOOLS:-0}" != 1 ]; then
    if [ "$(id -u)" = 0 ]; then
        step "Debian 13 reference tools (tests/reference-tools/ensure-debian13.sh)"
        bash tests/reference-tools/ensure-debian13.sh
        bash tests/reference-tools/ensure-debian13.sh --arch i386
        # The roots are built: a missing one is now a failure, not a skip.
        export DUMPCONV_REQUIRE_REFTOOLS=1
    else
        echo "not root: the Debian 13 reference-tool tests will skip" >&2
    fi
fi

if [ -x "$VOL_ROOT/dwarf2json" ] && [ -d "$HOME/.cache/dumpconv/guests" ]; then
    step "Volatility symbol tables (tests/readers/volatility_isf.sh)"
    bash tests/readers/volatility_isf.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build"
# Builds the plugin cdylibs (plugins/x86/cdylib) that tests load at run time.
cargo build --workspace --locked --profile ci

step "cargo test"
cargo test --workspace --locked --profile ci --no-fail-fast
