#!/usr/bin/env bash
# The difficulty filter ("zone of proximal development") for the Qwen3-8B runs: BASE_MODEL answers
# each DeepScaleR problem K times, sampled as the RL rollouts are (non-thinking, the runs' prompt and
# response lengths, temperature and K, all from run_scripts/qwen3_8b_settings.sh), and the problems
# it solves 1 to K-1 times are kept: the training set of run_{grpo,tapo}_qwen3_8b.sh. A vLLM replica
# runs on each of the node's GPUS_PER_NODE GPUs (common.sh), each sampling its share of the problems.
#   [DRY_RUN=1] bash run_scripts/filter_qwen3_8b.sh [difficulty_filter options, e.g. --limit 100]
# Environment: see run_scripts/qwen3_8b_settings.sh: BASE_MODEL, DATA_DIR (input
# $DATA_DIR/deepscaler_train.parquet, from prepare_data.sh), TRAIN_FILE (the output).
# DRY_RUN=1 checks the options, lists the files it reads and writes (present or missing here) and
# prints the command; no model loads.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen3_8b_settings.sh

ARGS=(
    --model "$BASE_MODEL" --input "$DATA_DIR/deepscaler_train.parquet" --output "$TRAIN_FILE"
    --k "$GROUP_SIZE" --min-correct 1 --max-correct "$((GROUP_SIZE - 1))"
    --temperature "$ROLLOUT_TEMPERATURE" --max-new-tokens "$RESPONSE_LENGTH" --max-prompt-tokens "$PROMPT_LENGTH"
    --chat-template-kwargs "$CHAT_TEMPLATE_KWARGS" "${OFFLINE_GENERATION_ARGS[@]}"
    "$@"
)
printf '+ python -m recipe_tapo.data.difficulty_filter'
printf ' %q' "${ARGS[@]}"
printf '\n'
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    python -c "from recipe_tapo.data.difficulty_filter import parse_args; import sys; parse_args(sys.argv[1:])" "${ARGS[@]}"
    list_files "DRY RUN: the options parse; no model loaded. The file it reads:" "$DATA_DIR/deepscaler_train.parquet"
    list_files "the files it writes:" "$TRAIN_FILE" "$TRAIN_FILE.counts.jsonl"
    exit 0
fi
python -m recipe_tapo.data.difficulty_filter "${ARGS[@]}"
