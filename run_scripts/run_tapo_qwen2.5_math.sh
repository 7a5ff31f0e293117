#!/usr/bin/env bash
# TAPO on Qwen2.5-Math-7B for the AIME/HMMT reproduction on GPUs (vLLM rollout, FSDP actor), with
# every GRPO setting of run_grpo_qwen2.5_math.sh and the paper's TAPO values (K=8, DCS 2/4, m_max 4,
# lambda 1, OTS clamps 0.01-10).
#   [DRY_RUN=1] bash run_scripts/run_tapo_qwen2.5_math.sh [hydra overrides...]
# Environment: see run_scripts/qwen2.5_math_settings.sh; EXPERIMENT names the run and
# its checkpoint folder, $WORK_DIR/checkpoints/$EXPERIMENT.
#
# Lengths in a 4096-token context (checked at start-up): a synthesis prompt holds the question and
# two answers of up to 3072 tokens each, so it cannot hold them whole. Anchor mode generates only
# the quoted step, the reflection and the corrected ending (<= 1024 new tokens), which leaves 3072
# tokens of prompt; the right answer's middle is cut first (down to 256 tokens), and a pair whose
# wrong answer alone is too long is skipped and counted (tapo/fail/prompt_too_long). The trained
# trajectories are the same as in verbatim mode; they are at most data.max_response_length long.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen2.5_math_settings.sh
EXPERIMENT=${EXPERIMENT:-tapo_qwen2.5_math_7b}

run_training "$EXPERIMENT" "${QWEN25_MATH_ARGS[@]}" "${PAPER_TAPO_ARGS[@]}" \
    tapo.synthesis.mode=anchor \
    tapo.synthesis.max_prompt_tokens=3072 \
    tapo.synthesis.min_right_answer_tokens=256 \
    tapo.synthesis.max_new_tokens=1024 \
    actor_rollout_ref.rollout.max_model_len=4096 \
    "$@"
