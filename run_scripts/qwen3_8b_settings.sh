# The settings GRPO and TAPO share on Qwen3-8B in non-thinking mode, the paper's setting (sourced by
# run_grpo_qwen3_8b.sh and run_tapo_qwen3_8b.sh; reproduce.sh also hands QWEN3_8B_TAPO_ARGS to the
# cold-start data builder, so its synthesis prompts are the RL run's). Both runs start from the
# cold-start SFT checkpoint, with the same data, lengths, batch, optimiser, rollout and validation.
#
# Lengths (Qwen3-8B: 40960 positions). Prompts 1024; responses 8192, which holds nearly all
# non-thinking answers to competition problems (the paper states none). TAPO runs in the paper's
# verbatim mode, which fits here (it does not fit Qwen2.5-Math's 4k context): a synthesis prompt holds
# the template (~500 tokens), the question and two answers of up to 8192 tokens each -> 18432; the
# output re-emits up to 8192 tokens of the wrong answer plus the analysis and the correction -> 10240;
# 18432 + 10240 = 28672 <= rollout.max_model_len 32768 (checked at start-up). The cold-start SFT's
# data.max_length (28800, config/cold_start_sft_settings.yaml) holds the longest synthesis example.
# Environment:
#   MODEL       the starting point (default: the cold-start SFT's HF folder, run_cold_start_sft.sh's output)
#   DATA_DIR    output of run_scripts/prepare_data.sh (default $HOME/data/tapo)
#   TRAIN_FILE  the difficulty-filtered training set (default $DATA_DIR/deepscaler_zpd_qwen3_8b.parquet)
#   NNODES, GPUS_PER_NODE  the Ray cluster (multi-node: start Ray on every node first, as verl documents)
#   LOGGER      verl's trainer.logger (default: wandb too when it is configured)
MODEL=${MODEL:-checkpoints/tapo_reproduction/cold_start_sft_qwen3_8b/huggingface}
DATA_DIR=${DATA_DIR:-$HOME/data/tapo}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/deepscaler_zpd_qwen3_8b.parquet}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
LOGGER=${LOGGER:-$(default_logger)}

source run_scripts/gpu_settings.sh

QWEN3_8B_ARGS=(
    "${SHARED_GPU_ARGS[@]}"
    data.train_files="$TRAIN_FILE"
    data.val_files="[$DATA_DIR/aime2024.parquet,$DATA_DIR/aime2025.parquet,$DATA_DIR/hmmt2025.parquet]"
    data.max_response_length=8192
    +data.apply_chat_template_kwargs.enable_thinking=false
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=20480
    actor_rollout_ref.rollout.max_model_len=32768
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=40960
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=40960
    trainer.max_actor_ckpt_to_keep=2
)

# TAPO's settings (the paper's: K=8 above, DCS 2/4, m_max 4, lambda 1, OTS clamps 0.01-10; verbatim
# synthesis). The cold-start data builder takes the same, so its prompts are the trainer's.
QWEN3_8B_TAPO_ARGS=(
    "${PAPER_TAPO_ARGS[@]}"
    tapo.synthesis.mode=verbatim
    tapo.synthesis.max_prompt_tokens=18432
    tapo.synthesis.min_right_answer_tokens=256
    tapo.synthesis.max_new_tokens=10240
)
