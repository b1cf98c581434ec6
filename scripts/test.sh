#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs it through .ci/run).
# On a fresh Debian machine it installs what the tests need (gdb, crash, makedumpfile,
# QEMU for the real-guest suite), builds the real-guest dumps into the cache outside the
# clone (~/.cache/dumpconv/guests, reused when present), then checks formatting, lints
# and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

need=()
for pkg in gdb crash makedumpfile binutils zstd lz4; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    step "apt-get install ${need[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# avml (Microsoft's acquisition tool) reads our LiME output back in the outputs_lime
# tests. Built from crates.io into the cache beside the guests, once (about 20 s).
tools="${HOME}/.cache/dumpconv/tools"
if [ ! -x "$tools/bin/avml" ]; then
    step "cargo install avml (into $tools)"
    cargo install --locked avml --no-default-features --features convert --root "$tools"
fi
export DUMPCONV_AVML="$tools/bin/avml"

if [ "${DUMPCONV_SKIP_GUESTS:-0}" != 1 ]; then
    step "real-guest dumps (tests/real-guests/ensure-guests.sh)"
    bash tests/real-guests/ensure-guests.sh
    # The cache is built: a guest missing now is a failure, not a skip.
    export DUMPCONV_REQUIRE_GUESTS=1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --profile ci --no-fail-fast
