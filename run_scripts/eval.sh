#!/usr/bin/env bash
# Evaluate a checkpoint on the paper's benchmarks (AIME 2024, AIME 2025, HMMT 2025 Feb): Pass@k,
# DSR and ERR beside the paper's numbers.
#   MODEL=/path/to/hf_checkpoint bash run_scripts/eval.sh [extra evaluate options...]
# Environment: MODEL (required), DATA_DIR (run_scripts/prepare_data.sh's output, default
# $HOME/data/tapo), OUT_DIR (default eval/<model folder name>).
set -euo pipefail

: "${MODEL:?set MODEL to an HF checkpoint folder (a merged verl actor, or a hub id)}"
DATA_DIR=${DATA_DIR:-$HOME/data/tapo}
OUT_DIR=${OUT_DIR:-eval/$(basename "$MODEL")}

python -m recipe_tapo.evaluation.evaluate \
    --model "$MODEL" \
    --data "$DATA_DIR/aime2024.parquet" "$DATA_DIR/aime2025.parquet" "$DATA_DIR/hmmt2025.parquet" \
    --n 16 --temperature 0.6 --top-p 0.95 --max-new-tokens 3072 --k 1 2 4 8 16 \
    --out-dir "$OUT_DIR" \
    "$@"
