#!/usr/bin/env bash
# The recipe end to end on a CPU-only machine: build the tiny offline assets, then run verl's real
# trainer (Ray, FSDP2 actor, the hf rollout backend, weight sync) for a few steps.
#   bash run_scripts/run_tapo_tiny_cpu.sh [hydra overrides...]
# Environment: TINY_DIR (assets, default /tmp/tapo_tiny), STEPS (default 2).
set -euo pipefail

TINY_DIR=${TINY_DIR:-/tmp/tapo_tiny}
STEPS=${STEPS:-2}

python -m recipe_tapo.tiny_assets --out "$TINY_DIR"

export VERL_PLATFORM=cpu          # opt in to the recipe's CPU platform (never auto-detected)
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled
export RAY_DEDUP_LOGS=0

python -m recipe_tapo.main "profile=[tiny_cpu,tiny_run]" \
    actor_rollout_ref.model.path="$TINY_DIR/model" \
    data.train_files="$TINY_DIR/data/train.parquet" \
    data.val_files="$TINY_DIR/data/val.parquet" \
    trainer.total_training_steps="$STEPS" \
    trainer.default_local_dir="$TINY_DIR/checkpoints" \
    "$@"
