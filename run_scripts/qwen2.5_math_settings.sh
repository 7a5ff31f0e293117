# The settings GRPO, TAPO and OPSD share on Qwen2.5-Math-7B (sourced by run_grpo_qwen2.5_math.sh,
# run_tapo_qwen2.5_math.sh and run_opsd_qwen2.5_math.sh), so the runs are fair to compare: same
# data, lengths, batch, optimiser, rollout and validation. Qwen2.5-Math-7B has a 4096-token context:
# prompts 1024 + responses 3072.
# Environment (besides common.sh's WORK_DIR, DATA_DIR, NNODES, GPUS_PER_NODE):
#   MODEL       HF id or local folder (default Qwen/Qwen2.5-Math-7B)
#   TRAIN_FILE  default $DATA_DIR/deepscaler_train.parquet (prepare_data.sh's output)
#   LOGGER      verl's trainer.logger (default: wandb too when it is configured)
# Local paths are made absolute (common.sh): multi-node workers would read a relative one elsewhere.
MODEL=$(model_path "${MODEL:-Qwen/Qwen2.5-Math-7B}")
TRAIN_FILE=$(absolute_path "${TRAIN_FILE:-$DATA_DIR/deepscaler_train.parquet}")
LOGGER=${LOGGER:-$(default_logger)}
RESPONSE_LENGTH=3072
CONTEXT_LENGTH=4096
CHAT_TEMPLATE_KWARGS="{}"   # its chat template has no switch; verl renders it with none

source run_scripts/gpu_settings.sh

QWEN25_MATH_ARGS=(
    "${SHARED_GPU_ARGS[@]}"
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=32768
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=32768
)
