"""The TAPO trainer's pure parts: start-up refusals, row counts, EOS ids."""

import json

import pytest
from hydra import compose, initialize_config_module

from recipe_tapo.run_config import check_tapo_run_config, model_context_length
from recipe_tapo.trainer import eos_token_ids, padding_rows_needed, row_multiple
from recipe_tapo.workers.agent_loop import TapoAgentLoopManager


def _compose(overrides=()):
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        return compose(config_name="tapo_trainer", overrides=list(overrides))


def test_defaults_are_a_tapo_run():
    config = _compose()
    assert config.algorithm.adv_estimator == "tapo" and config.tapo.enable is True
    tapo = check_tapo_run_config(_compose(["actor_rollout_ref.rollout.max_model_len=32768"]))
    assert tapo.enable


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.adv_estimator=grpo"], "needs algorithm.adv_estimator=tapo"),
        (["algorithm.rollout_correction.bypass_mode=true"], "bypass_mode"),
        (["actor_rollout_ref.rollout.multi_turn.enable=true"], "multi_turn.enable=false"),
        (["tapo.splicing.max_response_length=4096", "data.max_response_length=1024"], "exceeds data.max_response_length"),
        (
            ["actor_rollout_ref.rollout.max_model_len=8192", "tapo.synthesis.max_prompt_tokens=6000"],
            r"max_prompt_tokens \(6000\) \+ tapo.synthesis.max_new_tokens \(4096\) = 10096 exceeds",
        ),
        (
            ["actor_rollout_ref.rollout.max_model_len=32768", "data.max_response_length=8192"],
            "mode=verbatim re-emits the wrong answer",
        ),
        # The seams TAPO attaches through.
        (["trainer.balance_batch=false"], "needs trainer.balance_batch=true"),
        (["actor_rollout_ref.rollout.agent.agent_loop_manager_class=null"], "needs actor_rollout_ref.rollout.agent"),
        (
            ["actor_rollout_ref.rollout.agent.agent_loop_manager_class=verl.experimental.agent_loop.AgentLoopManager"],
            "needs actor_rollout_ref.rollout.agent.agent_loop_manager_class",
        ),
        (["trainer.critic_warmup=2"], "needs trainer.critic_warmup=0"),
        # verl features TAPO cannot serve.
        (["critic.enable=true"], "critic.enable=true"),
        (["actor_rollout_ref.actor.use_kl_loss=true"], "use_kl_loss=true"),
        (["algorithm.use_kl_in_reward=true"], "use_kl_in_reward=true"),
        (["reward.reward_model.enable=true"], "a colocated reward model"),
        (["actor_rollout_ref.actor.use_prefix_grouper=true"], "use_prefix_grouper=true"),
        (["actor_rollout_ref.rollout.enable_rollout_routing_replay=true"], "routed-expert replay"),
        (["distillation.enabled=true"], "distillation.enabled=true"),
        (["skip.rollout.enable=true"], "skip.rollout.enable=true"),
        (["actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov"], "loss_mode='clip_cov'"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_their_keys(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_tapo_run_config(_compose(["actor_rollout_ref.rollout.max_model_len=32768", *overrides]))


@pytest.mark.parametrize("loss_mode", ["vanilla", "gspo", "gpg", "cispo"])
def test_policy_losses_linear_in_the_advantage_are_accepted(loss_mode):
    overrides = ["actor_rollout_ref.rollout.max_model_len=32768", f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}"]
    assert check_tapo_run_config(_compose(overrides)).enable


def test_a_subclass_of_the_tapo_agent_loop_manager_is_accepted():
    overrides = [
        "actor_rollout_ref.rollout.max_model_len=32768",
        "actor_rollout_ref.rollout.agent.agent_loop_manager_class=test_trainer.MyManager",
    ]
    assert check_tapo_run_config(_compose(overrides)).enable


class MyManager(TapoAgentLoopManager):
    """A user's own manager on top of TAPO's (named by the test above)."""


def test_a_reward_model_in_its_own_pool_is_accepted():
    overrides = [
        "actor_rollout_ref.rollout.max_model_len=32768",
        "reward.reward_model.enable=true",
        "reward.reward_model.enable_resource_pool=true",
    ]
    assert check_tapo_run_config(_compose(overrides)).enable


@pytest.mark.parametrize("enable", ["true", "false"])
def test_verls_v1_trainer_is_refused_by_name_with_tapo_on_or_off(enable):
    """recipe_tapo.main always runs the legacy trainer: use_v1=true would otherwise be ignored."""
    overrides = ["actor_rollout_ref.rollout.max_model_len=32768", f"tapo.enable={enable}", "trainer.use_v1=true"]
    with pytest.raises(ValueError, match=r"trainer.use_v1=true: recipe_tapo.main runs verl's legacy trainer"):
        check_tapo_run_config(_compose(overrides))


def test_disabled_tapo_accepts_any_estimator():
    assert not check_tapo_run_config(_compose(["tapo.enable=false", "algorithm.adv_estimator=grpo"])).enable


def test_the_context_is_the_rollouts(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    config = _compose([f"actor_rollout_ref.model.path={model}"])
    assert model_context_length(config) == 4096
    with pytest.raises(ValueError, match="exceeds the rollout's context of 4096 tokens"):
        check_tapo_run_config(config)
    assert model_context_length(_compose(["actor_rollout_ref.rollout.max_model_len=9000"])) == 9000
    # The CPU backend's server serves prompt + response lengths when max_model_len is unset.
    tiny = ["profile=tiny_cpu", "data.max_prompt_length=64", "data.max_response_length=32"]
    assert model_context_length(_compose(tiny)) == 64 + 32
    assert model_context_length(_compose(["actor_rollout_ref.model.path=hub/unknown-model"])) is None


@pytest.mark.parametrize(
    "settings, expected",
    [
        # Dynamic batch sizes (the GPU scripts): GRPO's mini-batch count x lcm(dp, n).
        (dict(dp_size=8, rollout_n=8, num_mini_batches=4), 32),
        (dict(dp_size=16, rollout_n=8, num_mini_batches=4), 64),
        (dict(dp_size=6, rollout_n=8, num_mini_batches=2), 48),
        # Fixed micro-batches: every rank's share splits into whole micro-batches too.
        (dict(dp_size=1, rollout_n=4, num_mini_batches=1, ppo_micro=8, log_prob_micro=8), 8),
        (dict(dp_size=2, rollout_n=4, num_mini_batches=2, ppo_micro=2, log_prob_micro=6), 24),
    ],
)
def test_row_multiple(settings, expected):
    assert row_multiple(**settings) == expected


def test_padding_is_the_fewest_rows_to_the_next_multiple():
    assert [padding_rows_needed(rows, 8) for rows in (16, 17, 23, 24)] == [0, 7, 1, 0]
    # The paper's batch (128 prompts x 8) on 8 ranks with 4 mini-batches never needs more than 31.
    assert max(padding_rows_needed(1024 + extra, row_multiple(8, 8, 4)) for extra in range(256)) == 31


def test_eos_ids_include_the_generation_configs(tmp_path, qwen_tokenizer):
    tokenizer = qwen_tokenizer
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert eos_token_ids(tokenizer, str(tmp_path)) == [tokenizer.eos_token_id]
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end, endoftext]}))
    assert eos_token_ids(tokenizer, str(tmp_path)) == [im_end, endoftext]
