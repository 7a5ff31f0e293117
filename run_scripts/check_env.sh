#!/usr/bin/env bash
# The GPU environment check (GPU count, CUDA, vLLM, flash-attn, verl's pin, free disk, wandb).
#   bash run_scripts/check_env.sh [--gpus 8] [--work-dir DIR] [--min-free-gb 800] [--report-only]
set -euo pipefail
exec python -m recipe_tapo.cold_start_env "$@"
