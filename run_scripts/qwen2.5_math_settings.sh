# The settings GRPO and TAPO share on Qwen2.5-Math-7B (sourced by run_grpo_qwen2.5_math.sh and
# run_tapo_qwen2.5_math.sh), so the two runs are a fair pair: same data, lengths, batch, optimiser,
# rollout and validation. Qwen2.5-Math-7B has a 4096-token context: prompts 1024 + responses 3072.
# Environment:
#   MODEL       HF id or local folder (default Qwen/Qwen2.5-Math-7B)
#   DATA_DIR    output of run_scripts/prepare_data.sh (default $HOME/data/tapo)
#   NNODES, GPUS_PER_NODE  the Ray cluster (multi-node: start Ray on every node first, as verl documents)
#   LOGGER      verl's trainer.logger (default: wandb too when it is configured)
MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
DATA_DIR=${DATA_DIR:-$HOME/data/tapo}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
LOGGER=${LOGGER:-$(default_logger)}

source run_scripts/gpu_settings.sh

QWEN25_MATH_ARGS=(
    "${SHARED_GPU_ARGS[@]}"
    data.train_files="$DATA_DIR/deepscaler_train.parquet"
    data.val_files="[$DATA_DIR/aime2024.parquet,$DATA_DIR/aime2025.parquet,$DATA_DIR/hmmt2025.parquet]"
    data.max_response_length=3072
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=32768
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=32768
)
