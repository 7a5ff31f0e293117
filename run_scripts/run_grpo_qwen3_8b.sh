#!/usr/bin/env bash
# GRPO baseline in the paper's setting: Qwen3-8B (non-thinking) from the cold-start SFT checkpoint,
# K=8, about 500 steps, vLLM rollout, FSDP actor; the settings it shares with run_tapo_qwen3_8b.sh.
#   [DRY_RUN=1] bash run_scripts/run_grpo_qwen3_8b.sh [hydra overrides...]
# Environment: see run_scripts/qwen3_8b_settings.sh; EXPERIMENT names the run and
# its checkpoint folder, $WORK_DIR/checkpoints/$EXPERIMENT.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen3_8b_settings.sh
EXPERIMENT=${EXPERIMENT:-grpo_qwen3_8b}

run_training "$EXPERIMENT" "${QWEN3_8B_ARGS[@]}" \
    algorithm.adv_estimator=grpo \
    tapo.enable=false \
    "$@"
