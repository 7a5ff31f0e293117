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

QWEN3_8B_ARGS=(
    data.train_files="$TRAIN_FILE"
    data.val_files="[$DATA_DIR/aime2024.parquet,$DATA_DIR/aime2025.parquet,$DATA_DIR/hmmt2025.parquet]"
    data.train_batch_size=128
    data.max_prompt_length=1024
    data.max_response_length=8192
    data.filter_overlong_prompts=true
    +data.apply_chat_template_kwargs.enable_thinking=false
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.ppo_mini_batch_size=32
    actor_rollout_ref.actor.use_dynamic_bsz=true
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=20480
    actor_rollout_ref.actor.use_kl_loss=false
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=8
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.gpu_memory_utilization=0.7
    actor_rollout_ref.rollout.max_model_len=32768
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=40960
    actor_rollout_ref.rollout.val_kwargs.n=16
    actor_rollout_ref.rollout.val_kwargs.do_sample=true
    actor_rollout_ref.rollout.val_kwargs.temperature=0.6
    actor_rollout_ref.rollout.val_kwargs.top_p=0.95
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=40960
    reward.custom_reward_function.path=pkg://recipe_tapo.reward.math_reward
    reward.custom_reward_function.name=compute_score
    trainer.project_name=tapo_reproduction
    trainer.logger="$LOGGER"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$GPUS_PER_NODE"
    trainer.total_training_steps=500
    trainer.save_freq=50
    trainer.max_actor_ckpt_to_keep=2
    trainer.test_freq=25
    trainer.val_before_train=true
)

# TAPO's settings (the paper's: K=8 above, DCS 2/4, m_max 4, lambda 1, OTS clamps 0.01-10; verbatim
# synthesis). The cold-start data builder takes the same, so its prompts are the trainer's.
QWEN3_8B_TAPO_ARGS=(
    tapo.selection.n_pos=2
    tapo.selection.n_neg=4
    tapo.selection.m_max=4
    tapo.synthesis.mode=verbatim
    tapo.synthesis.max_prompt_tokens=18432
    tapo.synthesis.min_right_answer_tokens=256
    tapo.synthesis.max_new_tokens=10240
    tapo.synthesis.temperature=1.0
    tapo.advantage.ref_loss_weight=1.0
    tapo.ots.enable=true
    tapo.ots.w_min=0.01
    tapo.ots.w_max=10.0
)
