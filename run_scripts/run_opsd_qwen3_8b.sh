#!/usr/bin/env bash
# OPSD (on-policy self-distillation with a privileged-context self-teacher), the paper's third column,
# in the paper's setting: Qwen3-8B (non-thinking) from the cold-start SFT checkpoint, every GRPO
# setting of run_grpo_qwen3_8b.sh, and OPSD_ARGS (run_scripts/gpu_settings.sh: the policy scores each
# response a second time under a prompt holding the problem's reference solution, else a right
# sibling; privileged prompts of up to 9472 tokens beside 8192-token responses in the 32768 context).
#   [DRY_RUN=1] bash run_scripts/run_opsd_qwen3_8b.sh [hydra overrides...]
# Environment: see run_scripts/qwen3_8b_settings.sh; EXPERIMENT names the run and
# its checkpoint folder, $WORK_DIR/checkpoints/$EXPERIMENT.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen3_8b_settings.sh
EXPERIMENT=${EXPERIMENT:-opsd_qwen3_8b}

run_training "$EXPERIMENT" "${QWEN3_8B_ARGS[@]}" "${OPSD_ARGS[@]}" \
    "$@"
