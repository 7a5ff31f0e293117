#!/usr/bin/env bash
# The main job on a CPU-only machine: TAPO through verl's real trainer (Ray, FSDP2 actor, the hf
# rollout backend) on the toy task, from the toy cold-start checkpoint shipped in
# recipe_tapo/toy/cold_start_model/ (made by run_scripts/run_toy_reproduction.sh; its README says
# how). The policy writes its own synthesis: its reflections are parsed, spliced into its own wrong
# answers, scored and trained on, and every step prints the tapo/* metrics.
#   bash run_scripts/run_tapo_toy_cpu.sh [hydra overrides...]
# Environment: TOY_DIR (data, checkpoints, metrics and dumps; default /tmp/tapo_toy), STEPS
# (default 12: the GRPO sweep's training accuracy rose over its first 12 steps), MODEL (default the
# shipped checkpoint). Validation on 128 problems x 2 samples before training and every 4 steps.
set -euo pipefail
cd "$(dirname "$0")/.."

TOY_DIR=${TOY_DIR:-/tmp/tapo_toy}
STEPS=${STEPS:-12}
MODEL=${MODEL:-$(pwd)/recipe_tapo/toy/cold_start_model}

# The toy splits with the reproduction's seed and sizes (no SFT file, no random model: only the data):
# validation problems the shipped checkpoint never saw in SFT; the first 2000 of the 4000 training
# problems were in its cold-start data (recipe_tapo/toy/cold_start_model/README.md).
python -m recipe_tapo.toy.build --out "$TOY_DIR" --seed 0 --data-only

export VERL_PLATFORM=cpu          # opt in to the recipe's CPU platform (never auto-detected)
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled RAY_AUTH_MODE=disabled RAY_DEDUP_LOGS=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one torch thread per process (README, toy experiment)

python -m recipe_tapo.main "profile=[tiny_cpu,toy_run]" \
    actor_rollout_ref.model.path="$MODEL" \
    data.train_files="$TOY_DIR/data/train.parquet" \
    data.val_files="$TOY_DIR/data/val.parquet" \
    data.val_max_samples=128 \
    trainer.test_freq=4 \
    trainer.total_training_steps="$STEPS" \
    trainer.save_freq=-1 \
    trainer.default_local_dir="$TOY_DIR/checkpoints" \
    tapo.dump.dir="$TOY_DIR/tapo_dump" \
    +ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH="$TOY_DIR/metrics.jsonl" \
    "$@"
