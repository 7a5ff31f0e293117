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

QWEN25_MATH_ARGS=(
    data.train_files="$DATA_DIR/deepscaler_train.parquet"
    data.val_files="[$DATA_DIR/aime2024.parquet,$DATA_DIR/aime2025.parquet,$DATA_DIR/hmmt2025.parquet]"
    data.train_batch_size=128
    data.max_prompt_length=1024
    data.max_response_length=3072
    data.filter_overlong_prompts=true
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.ppo_mini_batch_size=32
    actor_rollout_ref.actor.use_dynamic_bsz=true
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384
    actor_rollout_ref.actor.use_kl_loss=false
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n=8
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.gpu_memory_utilization=0.7
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=32768
    actor_rollout_ref.rollout.val_kwargs.n=16
    actor_rollout_ref.rollout.val_kwargs.do_sample=true
    actor_rollout_ref.rollout.val_kwargs.temperature=0.6
    actor_rollout_ref.rollout.val_kwargs.top_p=0.95
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=32768
    reward.custom_reward_function.path=pkg://recipe_tapo.reward.math_reward
    reward.custom_reward_function.name=compute_score
    trainer.project_name=tapo_reproduction
    trainer.logger="$LOGGER"
    trainer.nnodes="$NNODES"
    trainer.n_gpus_per_node="$GPUS_PER_NODE"
    trainer.total_training_steps=500
    trainer.save_freq=50
    trainer.test_freq=25
    trainer.val_before_train=true
)
