#!/usr/bin/env bash
# The GPU environment check (GPU count, CUDA, vLLM, flash-attn, verl's pin, free disk, wandb) of the
# node it runs on: run it on every node of a multi-node cluster.
#   [DRY_RUN=1] bash run_scripts/check_env.sh [--gpus N] [--work-dir DIR] [--min-free-gb G] [--report-only]
# Flags (each default from the environment the run scripts read, so the check asks what the run will):
#   --gpus N          GPUs this node must show (default GPUS_PER_NODE, 8; the count is per node, so
#                     NNODES does not change it)
#   --work-dir DIR    where free disk is measured (default WORK_DIR, $HOME/tapo_work)
#   --min-free-gb G   free disk needed there (default MIN_FREE_GB, 1000: the whole reproduction's
#                     checkpoints and merged models, docs/reproduction.md; one 8B run alone keeps 2
#                     actor checkpoints, an estimated 200 GB). NNODES does not change it: a multi-node
#                     run keeps one set of checkpoints, on storage every node shares
#   --report-only     print every check, never fail (what DRY_RUN=1 does)
# Exit status 1 when a required check fails.
set -euo pipefail
source "$(dirname "$0")/common.sh"
DEFAULTS=(--gpus "$GPUS_PER_NODE" --work-dir "$WORK_DIR" --min-free-gb "${MIN_FREE_GB:-1000}")
[[ "${DRY_RUN:-0}" == 1 ]] && DEFAULTS+=(--report-only)
exec python -m recipe_tapo.cold_start_env "${DEFAULTS[@]}" "$@"
