#!/usr/bin/env bash
# GRPO baseline for the AIME/HMMT reproduction on GPUs (vLLM rollout, FSDP actor), through the
# recipe's entry point with the settings it shares with run_tapo_qwen2.5_math.sh.
#   [DRY_RUN=1] bash run_scripts/run_grpo_qwen2.5_math.sh [hydra overrides...]
# Environment: see run_scripts/qwen2.5_math_settings.sh; EXPERIMENT names the run and
# its checkpoint folder, $WORK_DIR/checkpoints/$EXPERIMENT.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen2.5_math_settings.sh
EXPERIMENT=${EXPERIMENT:-grpo_qwen2.5_math_7b}

run_training "$EXPERIMENT" "${QWEN25_MATH_ARGS[@]}" \
    algorithm.adv_estimator=grpo \
    tapo.enable=false \
    "$@"
