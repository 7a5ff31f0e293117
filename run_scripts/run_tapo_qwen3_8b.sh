#!/usr/bin/env bash
# TAPO in the paper's setting: Qwen3-8B (non-thinking) from the cold-start SFT checkpoint, every GRPO
# setting of run_grpo_qwen3_8b.sh, and the paper's TAPO values (K=8, DCS 2/4, m_max 4, lambda 1,
# OTS clamps 0.01-10) with verbatim synthesis (lengths: run_scripts/qwen3_8b_settings.sh).
#   [DRY_RUN=1] bash run_scripts/run_tapo_qwen3_8b.sh [hydra overrides...]
# Environment: see run_scripts/qwen3_8b_settings.sh; EXPERIMENT names the run and
# its checkpoint folder, $WORK_DIR/checkpoints/$EXPERIMENT.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen3_8b_settings.sh
EXPERIMENT=${EXPERIMENT:-tapo_qwen3_8b}

run_training "$EXPERIMENT" "${QWEN3_8B_ARGS[@]}" "${QWEN3_8B_TAPO_ARGS[@]}" \
    "$@"
