#!/usr/bin/env bash
# Cold-start SFT (docs/method.md, section 8) through verl's own SFT trainer on GPUs (FSDP2, torchrun),
# on the output of `python -m recipe_tapo.cold_start`. Writes the checkpoints to OUT_DIR and points
# OUT_DIR/huggingface at the last one's HF model: the GRPO and TAPO runs start from it.
#   [DRY_RUN=1] bash run_scripts/run_cold_start_sft.sh [hydra overrides of config/cold_start_sft.yaml...]
# Environment:
#   BASE_MODEL  the model before SFT (default Qwen/Qwen3-8B)
#   SFT_DATA    the builder's train.parquet (default $WORK_DIR/cold_start/train.parquet)
#   WORK_DIR    default $HOME/tapo_work;  OUT_DIR default $WORK_DIR/checkpoints/$EXPERIMENT
#   NNODES, GPUS_PER_NODE; multi-node: NODE_RANK, MASTER_ADDR, MASTER_PORT on every node
#   EXPERIMENT  default cold_start_sft_qwen3_8b;  LOGGER as the RL scripts (wandb only when configured)
# DRY_RUN=1 composes the config, checks the inputs (files not made yet are listed as missing), prints
# the command; nothing loads.
set -euo pipefail
cd "$(dirname "$0")/.."
source run_scripts/common.sh
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen3-8B}
WORK_DIR=${WORK_DIR:-$HOME/tapo_work}
SFT_DATA=${SFT_DATA:-$WORK_DIR/cold_start/train.parquet}
EXPERIMENT=${EXPERIMENT:-cold_start_sft_qwen3_8b}
OUT_DIR=${OUT_DIR:-$WORK_DIR/checkpoints/$EXPERIMENT}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
LOGGER=${LOGGER:-$(default_logger)}

ARGS=(
    model.path="$BASE_MODEL"
    data.train_files="$SFT_DATA"
    +data.apply_chat_template_kwargs.enable_thinking=false
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
