#!/bin/bash
# Run a tiltbench suite as a SLURM array job: task i of n runs `tiltbench benchmark --shard i/n`.
#
#   sbatch --array=0-15 scripts/slurm_array.sh default          # 16 slices of the `default` suite
#   sbatch --array=0-15%4 scripts/slurm_array.sh full           # at most 4 at a time
#
# Every task writes its cells' records atomically under $RUNS (default results/runs) on a shared
# file system; finished cells are skipped, so re-submitting the same array resumes a grid after
# pre-emption or a time-out. When the array is done, rebuild the leaderboard once:
#
#   sbatch --dependency=afterany:<jobid> --wrap ".venv/bin/tiltbench leaderboard"
#
# Without a shared file system, point RUNS at node-local storage, copy each task's directory back
# and pool them with `tiltbench merge DIR... --out results/runs` (it checks that all records come
# from one commit). Each task uses all the GPUs it is given (data parallelism over the particle
# batch, samplers/parallel.py); one GPU per task is the usual choice. See docs/cluster.md.
#
#SBATCH --job-name=tiltbench
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=slurm-%A_%a.out
# Edit or pass on the sbatch command line: --partition, --account, --qos, --mem.

set -euo pipefail

SUITE="${1:-default}"
RUNS="${RUNS:-results/runs}"
cd "${SLURM_SUBMIT_DIR:-.}"

: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-<n-1>}"
: "${SLURM_ARRAY_TASK_COUNT:?submit with sbatch --array=0-<n-1>}"
# SLURM_ARRAY_TASK_COUNT counts the tasks of --array; the slices must be 0 .. n-1 for i/n to cover the grid.
SHARD="${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}"

echo "tiltbench suite=${SUITE} shard=${SHARD} runs=${RUNS} host=$(hostname) gpus=${CUDA_VISIBLE_DEVICES:-none}"
exec .venv/bin/tiltbench benchmark --suite "${SUITE}" --shard "${SHARD}" --out "${RUNS}" \
    --no-progress --no-leaderboard
