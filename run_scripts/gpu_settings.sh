# verl settings every GPU run of the recipe shares, whatever the model (sourced by the model's
# *_settings.sh once it has set MODEL, TRAIN_FILE, RESPONSE_LENGTH, CONTEXT_LENGTH and LOGGER): FSDP actor with padding removal,
# gradient checkpointing and dynamic batch sizes; vLLM rollout, K=8 at temperature 1; 128 prompts a
# step in 4 mini-batches, lr 1e-6, no KL or entropy term; validation with 16 samples at 0.6 / 0.95;
# the recipe's math reward; 500 steps, a checkpoint every 50, validation every 25.
# The values the difficulty filter and the evaluation also use are named, so they match the runs.
PROMPT_LENGTH=1024
GROUP_SIZE=8                 # K, the rollouts per prompt
ROLLOUT_TEMPERATURE=1.0
VAL_SAMPLES=16
VAL_TEMPERATURE=0.6
VAL_TOP_P=0.95
SHARED_GPU_ARGS=(
    data.train_batch_size=128
    data.max_prompt_length="$PROMPT_LENGTH"
    data.filter_overlong_prompts=true
    data.train_files="$TRAIN_FILE"
    data.val_files="[$(IFS=,; echo "${BENCHMARK_FILES[*]}")]"
    data.max_response_length="$RESPONSE_LENGTH"
    actor_rollout_ref.model.path="$MODEL"
    actor_rollout_ref.model.use_remove_padding=true
    actor_rollout_ref.model.enable_gradient_checkpointing=true
    actor_rollout_ref.actor.optim.lr=1e-6
    actor_rollout_ref.actor.ppo_mini_batch_size=32
    actor_rollout_ref.actor.use_dynamic_bsz=true
    actor_rollout_ref.actor.use_kl_loss=false
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n="$GROUP_SIZE"
    actor_rollout_ref.rollout.temperature="$ROLLOUT_TEMPERATURE"
    actor_rollout_ref.rollout.tensor_model_parallel_size=1
    actor_rollout_ref.rollout.gpu_memory_utilization=0.7
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
    actor_rollout_ref.rollout.val_kwargs.n="$VAL_SAMPLES"
    actor_rollout_ref.rollout.val_kwargs.do_sample=true
    actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE"
    actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true
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

# The paper's TAPO values (DCS 2/4 at K=8, m_max 4, lambda 1, OTS clamps 0.01-10), sampled like the
# rollouts; the model's settings add the synthesis mode and lengths that fit its context.
PAPER_TAPO_ARGS=(
    algorithm.adv_estimator=tapo
    tapo.enable=true
    tapo.selection.n_pos=2
    tapo.selection.n_neg=4
    tapo.selection.m_max=4
    tapo.synthesis.temperature="$ROLLOUT_TEMPERATURE"
    tapo.advantage.ref_loss_weight=1.0
    tapo.ots.enable=true
    tapo.ots.w_min=0.01
    tapo.ots.w_max=10.0
    tapo.dump.every=10
)

# OPSD, the paper's third column (docs/method.md, "OPSD"): GRPO's settings with the advantage replaced
# by the OPSD term, coef x (log p_teacher - log p_student) per sampled token, the teacher being the
# policy itself under a privileged prompt (the row's reference solution, else a right sibling). The
# paper does not say which OPSD configuration it ran: these are the recipe's defaults, written out.
# A privileged prompt holds the question (<= PROMPT_LENGTH), the template (< 256 tokens) and a reference
# solution or a right answer (<= RESPONSE_LENGTH), so that is its budget, cut to what the model's
# context leaves beside a response (the start-up check); a longer one gives its row no teacher,
# counted in opsd/context/prompt_too_long.
OPSD_PROMPT_TOKENS=$((PROMPT_LENGTH + 256 + RESPONSE_LENGTH))
if ((OPSD_PROMPT_TOKENS > CONTEXT_LENGTH - RESPONSE_LENGTH)); then
    OPSD_PROMPT_TOKENS=$((CONTEXT_LENGTH - RESPONSE_LENGTH))
fi
OPSD_ARGS=(
    algorithm.adv_estimator=grpo
    tapo.enable=false
    opsd.enable=true
    opsd.coef=1.0
    opsd.outcome_advantage=false
    opsd.teacher=current
    opsd.context=reference_then_sibling
    opsd.max_prompt_tokens="$OPSD_PROMPT_TOKENS"
    opsd.dump_every=10
)
