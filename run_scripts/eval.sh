#!/usr/bin/env bash
# Evaluate a checkpoint of a model that no settings file describes, on AIME 2024, AIME 2025 and
# HMMT 2025 (Pass@k, DSR, ERR beside the paper's numbers). A model the recipe trains has its own
# script, which samples as its runs did: eval_qwen3_8b.sh, eval_qwen2.5_math.sh. Here the two settings
# that change what is scored are required, never guessed: the response length and the chat template.
#   [DRY_RUN=1] MODEL=DIR MAX_NEW_TOKENS=N CHAT_TEMPLATE_KWARGS='{...}' bash run_scripts/eval.sh [evaluate options...]
# Environment: MODEL, MAX_NEW_TOKENS, CHAT_TEMPLATE_KWARGS (a JSON object, '{}' for the template's
# default; Qwen3 non-thinking: '{"enable_thinking": false}'), all required; DATA_DIR, WORK_DIR,
# GPUS_PER_NODE (common.sh: a vLLM replica per GPU); OUT_DIR (default $WORK_DIR/eval/<model folder
# name>). Sampling: the evaluate command's defaults (16 samples at temperature 0.6, top-p 0.95) unless
# given as options.
# DRY_RUN=1 checks the options, lists the files read and written and prints the command; no model loads.
set -euo pipefail
source "$(dirname "$0")/common.sh"
for name in MODEL MAX_NEW_TOKENS CHAT_TEMPLATE_KWARGS; do
    if [[ -z "${!name:-}" ]]; then
        echo "eval.sh: set $name (required: it changes what is scored). For a checkpoint of a recipe run use" \
             "run_scripts/eval_qwen3_8b.sh or run_scripts/eval_qwen2.5_math.sh, which sample as it was trained." >&2
        exit 2
    fi
done
MODEL=$(model_path "$MODEL")
OUT_DIR=$(absolute_path "${OUT_DIR:-$WORK_DIR/eval/$(basename "$MODEL")}")

run_evaluation --out-dir "$OUT_DIR" --max-new-tokens "$MAX_NEW_TOKENS" --chat-template-kwargs "$CHAT_TEMPLATE_KWARGS" "$@"
