#!/usr/bin/env bash
# Evaluate a Qwen3-8B checkpoint, non-thinking, on AIME 2024, AIME 2025 and HMMT 2025 (Pass@k, DSR, ERR
# beside the paper's numbers), sampled as run_scripts/qwen3_8b_settings.sh trains and validates.
#   [DRY_RUN=1] MODEL=/path/to/hf_checkpoint bash run_scripts/eval_qwen3_8b.sh [evaluate options...]
# Environment: MODEL (required: an HF folder, e.g. a verl actor merged by verl.model_merger, or a hub
# id); DATA_DIR, WORK_DIR, GPUS_PER_NODE (common.sh: a vLLM replica per GPU); OUT_DIR (default
# $WORK_DIR/eval/<model folder name>).
# DRY_RUN=1 checks the options, lists the files read and written and prints the command; no model loads.
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${MODEL:?set MODEL to the HF checkpoint to evaluate}"
source run_scripts/qwen3_8b_settings.sh
evaluate_as_trained "$@"
