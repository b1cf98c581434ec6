#!/usr/bin/env bash
# Run the cargo-fuzz (libFuzzer) campaign: scripts/fuzz.sh [TARGET|all] [SECONDS]
#
#   scripts/fuzz.sh                 every target, 300 s each
#   scripts/fuzz.sh kdump 600       one target for 10 minutes
#   scripts/fuzz.sh list            the targets
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). The fuzz crate
# (fuzz/) is not a workspace member, so stable builds and CI never compile it.
# Every input is capped at 2 GiB of RSS and 10 s, and an allocation above 1 GiB is a
# finding (-malloc_limit_mb): a reader that allocates what a header claims fails here.
# Corpora grow in fuzz/corpus/TARGET (not committed), seeded from fuzz/seeds/TARGET;
# crashes land in fuzz/artifacts/TARGET; logs in fuzz/logs/TARGET.log.
# Environment: CARGO_TARGET_DIR (default: target/ of the fuzz crate),
# FUZZ_MAX_LEN (65600), FUZZ_EXTRA (more libFuzzer flags).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
targets=(detect_open elf kdump lime avml raw_ram_map vmcoreinfo notes cpu_state_json walk convert batch_manifest split qcow2 migration ramscan_roots page_filter)
target=${1:-all}
seconds=${2:-300}

if [[ $target == list ]]; then
    printf '%s\n' "${targets[@]}"
    exit 0
fi
if [[ $target != all ]]; then
    found=0
    for t in "${targets[@]}"; do [[ $t == "$target" ]] && found=1; done
    if [[ $found == 0 ]]; then
        echo "fuzz.sh: unknown target $target (known: ${targets[*]})" >&2
        exit 2
    fi
    targets=("$target")
fi

cargo +nightly fuzz --version >/dev/null 2>&1 || {
    echo "fuzz.sh: needs cargo-fuzz and a nightly toolchain: cargo install cargo-fuzz; rustup toolchain install nightly" >&2
    exit 2
}

mkdir -p fuzz/logs
scratch=$(mktemp -d /tmp/dumpconv-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    seeds=()
    [[ -d fuzz/seeds/$t ]] && seeds=("fuzz/seeds/$t")
    dict=()
    [[ -f fuzz/dicts/$t.dict ]] && dict=("-dict=fuzz/dicts/$t.dict")
    # The kdump writer's worker threads end inside std::thread::scope, which returns
    # before their thread-local destructors have run: LeakSanitizer then sometimes sees
    # those (crossbeam's per-thread context, 112 bytes) as leaked. Not reproducible on
    # the input; memory stays bounded by -rss_limit_mb/-malloc_limit_mb.
    [[ $t == convert ]] && dict+=("-detect_leaks=0")
    echo "== $t: ${seconds}s"
    if ! DUMPCONV_FUZZ_TMP=$scratch cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
        -max_len="${FUZZ_MAX_LEN:-65600}" \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 "${dict[@]}" ${FUZZ_EXTRA:-} \
        >"fuzz/logs/$t.log" 2>&1; then
        echo "   FINDING: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        status=1
    fi
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "fuzz/logs/$t.log" | sed 's/^/   /' || true
    grep -E '^#[0-9]+.*(DONE|pulse)' "fuzz/logs/$t.log" | tail -1 | sed 's/^/   /' || true
done
exit $status
