# The settings GRPO, TAPO and OPSD share on Qwen3-8B in non-thinking mode, the paper's setting
# (sourced by run_grpo_qwen3_8b.sh, run_tapo_qwen3_8b.sh and run_opsd_qwen3_8b.sh, and by the steps
# around them so they sample as the runs do: filter_qwen3_8b.sh, run_cold_start_sft.sh,
# eval_qwen3_8b.sh; reproduce.sh also hands QWEN3_8B_TAPO_ARGS to the cold-start data builder, so its
# synthesis prompts are the RL run's). All runs start from the cold-start SFT checkpoint, with the
# same data, lengths, batch, optimiser, rollout and validation.
#
# Lengths (Qwen3-8B: 40960 positions). Prompts 1024; responses 8192, which holds nearly all
# non-thinking answers to competition problems (the paper states none). TAPO runs in the paper's
# verbatim mode, which fits here (it does not fit Qwen2.5-Math's 4k context): a synthesis prompt holds
# the template (~500 tokens), the question and two answers of up to 8192 tokens each -> 18432; the
# output re-emits up to 8192 tokens of the wrong answer plus the analysis and the correction -> 10240;
# 18432 + 10240 = 28672 <= rollout.max_model_len 32768 (checked at start-up). The cold-start SFT's
# data.max_length (28800, config/cold_start_sft_settings.yaml) holds the longest synthesis example.
# Environment (besides common.sh's WORK_DIR, DATA_DIR, NNODES, GPUS_PER_NODE):
#   MODEL       where training starts (default: the cold-start SFT's HF folder, run_cold_start_sft.sh's
#               output, $WORK_DIR/checkpoints/cold_start_sft_qwen3_8b/huggingface; or a hub id, e.g.
#               Qwen/Qwen3-8B, to train from the base model)
#   BASE_MODEL  the model before any training: the difficulty filter and the cold start sample it
#               (default Qwen/Qwen3-8B)
#   TRAIN_FILE  the difficulty-filtered training set (default $DATA_DIR/deepscaler_zpd_qwen3_8b.parquet,
#               filter_qwen3_8b.sh's output)
#   LOGGER      verl's trainer.logger (default: wandb too when it is configured)
# Local paths are made absolute (common.sh): multi-node workers would read a relative one elsewhere.
COLD_START_SFT_NAME=cold_start_sft_qwen3_8b
COLD_START_DATA_DIR="$WORK_DIR/cold_start"
MODEL=$(model_path "${MODEL:-$WORK_DIR/checkpoints/$COLD_START_SFT_NAME/huggingface}")
BASE_MODEL=$(model_path "${BASE_MODEL:-Qwen/Qwen3-8B}")
TRAIN_FILE=$(absolute_path "${TRAIN_FILE:-$DATA_DIR/deepscaler_zpd_qwen3_8b.parquet}")
LOGGER=${LOGGER:-$(default_logger)}
RESPONSE_LENGTH=8192
CONTEXT_LENGTH=32768   # the rollout's max_model_len (Qwen3-8B has 40960 positions)
# Non-thinking mode: the chat template's switch, for verl's data config and (as JSON) for the
# commands that render prompts themselves (filter, cold start, evaluation).
ENABLE_THINKING=false
CHAT_TEMPLATE_KWARGS="{\"enable_thinking\": $ENABLE_THINKING}"

source run_scripts/gpu_settings.sh

QWEN3_8B_ARGS=(
    "${SHARED_GPU_ARGS[@]}"
    +data.apply_chat_template_kwargs.enable_thinking="$ENABLE_THINKING"
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=20480
    actor_rollout_ref.rollout.max_model_len="$CONTEXT_LENGTH"
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=40960
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=40960
    trainer.max_actor_ckpt_to_keep=2
)

QWEN3_8B_TAPO_ARGS=(
    "${PAPER_TAPO_ARGS[@]}"
    tapo.synthesis.mode=verbatim
    tapo.synthesis.max_prompt_tokens=18432
    tapo.synthesis.min_right_answer_tokens=256
    tapo.synthesis.max_new_tokens=10240
)
