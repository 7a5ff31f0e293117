#!/usr/bin/env bash
# Cold-start SFT (docs/method.md, section 8) through verl's own SFT trainer on GPUs (FSDP2, torchrun),
# on the output of `python -m recipe_tapo.cold_start`. Writes the checkpoints to OUT_DIR and points
# OUT_DIR/huggingface at the last one's HF model: the GRPO and TAPO runs start from it.
#   [DRY_RUN=1] bash run_scripts/run_cold_start_sft.sh [hydra overrides of config/cold_start_sft.yaml...]
# Environment:
#   BASE_MODEL  the model before SFT (default Qwen/Qwen3-8B, run_scripts/qwen3_8b_settings.sh)
#   SFT_DATA    the builder's train.parquet (default $WORK_DIR/cold_start/train.parquet)
#   WORK_DIR, NNODES, GPUS_PER_NODE (common.sh);  OUT_DIR default $WORK_DIR/checkpoints/$EXPERIMENT
#   multi-node: run it on every node, with NODE_RANK, MASTER_ADDR, MASTER_PORT
#   EXPERIMENT  default cold_start_sft_qwen3_8b, where run_{grpo,tapo}_qwen3_8b.sh look for its output
#   LOGGER      as the RL scripts (wandb only when configured)
# DRY_RUN=1 composes the config, checks the inputs (files not made yet are listed as missing), prints
# the command; nothing loads.
set -euo pipefail
source "$(dirname "$0")/common.sh"
source run_scripts/qwen3_8b_settings.sh
SFT_DATA=$(absolute_path "${SFT_DATA:-$COLD_START_DATA_DIR/train.parquet}")
EXPERIMENT=${EXPERIMENT:-$COLD_START_SFT_NAME}
OUT_DIR=$(absolute_path "${OUT_DIR:-$WORK_DIR/checkpoints/$EXPERIMENT}")

ARGS=(
    model.path="$BASE_MODEL"
    data.train_files="$SFT_DATA"
    +data.apply_chat_template_kwargs.enable_thinking="$ENABLE_THINKING"
    trainer.default_local_dir="$OUT_DIR"
    trainer.experiment_name="$EXPERIMENT"
    trainer.logger="$LOGGER"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$GPUS_PER_NODE"
    "$@"
)
if [[ "$NNODES" == 1 ]]; then
    LAUNCH=(torchrun --standalone --nnodes=1 --nproc_per_node="$GPUS_PER_NODE")
else
    LAUNCH=(torchrun --nnodes="$NNODES" --nproc_per_node="$GPUS_PER_NODE" --node_rank="${NODE_RANK:?set NODE_RANK}"
            --master_addr="${MASTER_ADDR:?set MASTER_ADDR}" --master_port="${MASTER_PORT:-29500}")
fi

printf '+'
printf ' %q' "${LAUNCH[@]}" -m recipe_tapo.cold_start_sft "${ARGS[@]}"
printf '\n'
if [[ "${DRY_RUN:-0}" == 1 ]]; then
    TAPO_DRY_RUN=1 python -m recipe_tapo.cold_start_sft "${ARGS[@]}"
else
    "${LAUNCH[@]}" -m recipe_tapo.cold_start_sft "${ARGS[@]}"
fi
