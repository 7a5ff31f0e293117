#!/usr/bin/env bash
# Evaluate a checkpoint on the paper's benchmarks (AIME 2024, AIME 2025, HMMT 2025 Feb): Pass@k,
# DSR and ERR beside the paper's numbers.
#   [DRY_RUN=1] MODEL=/path/to/hf_checkpoint bash run_scripts/eval.sh [extra evaluate options...]
# Environment: MODEL (required), DATA_DIR (run_scripts/prepare_data.sh's output, default
# $HOME/data/tapo), OUT_DIR (default eval/<model folder name>), MAX_NEW_TOKENS (default 3072: Qwen2.5-Math's
# context; reproduce.sh passes 8192 for Qwen3-8B).
# DRY_RUN=1 checks the options, lists the files each is read from (present or missing here) and
# prints the command; no model loads.
set -euo pipefail

: "${MODEL:?set MODEL to an HF checkpoint folder (a merged verl actor, or a hub id)}"
DATA_DIR=${DATA_DIR:-$HOME/data/tapo}
OUT_DIR=${OUT_DIR:-eval/$(basename "$MODEL")}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-3072}

ARGS=(
    --model "$MODEL"
    --data "$DATA_DIR/aime2024.parquet" "$DATA_DIR/aime2025.parquet" "$DATA_DIR/hmmt2025.parquet"
    --n 16 --temperature 0.6 --top-p 0.95 --max-new-tokens "$MAX_NEW_TOKENS" --k 1 2 4 8 16
    --out-dir "$OUT_DIR"
    "$@"
)
printf '+ python -m recipe_tapo.evaluation.evaluate'
printf ' %q' "${ARGS[@]}"
printf '\n'
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    python - "${ARGS[@]}" <<'PY'
import os, sys
from recipe_tapo.evaluation.evaluate import parse_args
args = parse_args(sys.argv[1:])
print("DRY RUN: the evaluation options parse; no model loaded.")
state = lambda path: "present" if os.path.exists(os.path.expanduser(path)) else "missing here"
print(f"  --model: {args.model} ({state(args.model)})")
for path in args.data:
    print(f"  --data: {path} ({state(path)})")
print(f"  --out-dir: {args.out_dir} (eval_results.json, eval_results.md, samples.jsonl)")
PY
    exit 0
fi
python -m recipe_tapo.evaluation.evaluate "${ARGS[@]}"
