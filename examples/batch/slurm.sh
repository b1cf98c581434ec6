#!/usr/bin/env bash
# A dumpconv batch as a Slurm job array: task K of N converts every N-th job of the
# manifest starting at K (`--shard K/N`, K from 0). No coordinator: the tasks share
# the out dir, each appends to its own journal, and a resubmission skips what is done.
#
#   sbatch --array=0-3 examples/batch/slurm.sh            # 4 tasks
#   MANIFEST=/data/manifest.csv OUT=/data/out sbatch --array=0-15%4 examples/batch/slurm.sh
#
# Without Slurm the script runs the whole manifest as one shard (0/1).
#SBATCH --job-name=dumpconv-batch
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --output=dumpconv-batch-%A_%a.log
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifest=${MANIFEST:-$here/manifest.csv}
out=${OUT:-$PWD/dumpconv-out}
dumpconv=${DUMPCONV:-dumpconv}
# --array must start at 0 (use $((SLURM_ARRAY_TASK_ID - 1)) for --array=1-N).
k=${SLURM_ARRAY_TASK_ID:-0}
n=${SLURM_ARRAY_TASK_COUNT:-1}
# --jobs follows the task's CPUs; a failed conversion exits 1 after the others ran,
# and the per-task report says which one and why.
exec "$dumpconv" batch "$manifest" --out-dir "$out" --shard "$k/$n" \
    --jobs "${SLURM_CPUS_PER_TASK:-$(nproc)}" --verify -q \
    --report "$out/report-$k-of-$n.json"
