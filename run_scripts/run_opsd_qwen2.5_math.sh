#!/usr/bin/env bash
# OPSD (on-policy self-distillation with a privileged-context self-teacher) on Qwen2.5-Math-7B, with
# every GRPO setting of run_grpo_qwen2.5_math.sh and OPSD_ARGS (run_scripts/gpu_settings.sh).
#   [DRY_RUN=1] bash run_scripts/run_opsd_qwen2.5_math.sh [hydra overrides...]
# Environment: see run_scripts/qwen2.5_math_settings.sh; EXPERIMENT names the run and
# its checkpoint folder, $WORK_DIR/checkpoints/$EXPERIMENT.
#
# Lengths in a 4096-token context (checked at start-up): a 3072-token response leaves a privileged
# prompt 1024 tokens, question, template and reference solution together; a row whose privileged
# prompt is longer gets no teacher signal and is counted (opsd/context/prompt_too_long).
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen2.5_math_settings.sh
EXPERIMENT=${EXPERIMENT:-opsd_qwen2.5_math_7b}

run_training "$EXPERIMENT" "${QWEN25_MATH_ARGS[@]}" "${OPSD_ARGS[@]}" \
    actor_rollout_ref.rollout.max_model_len="$CONTEXT_LENGTH" \
    "$@"
