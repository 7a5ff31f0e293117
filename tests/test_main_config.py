"""The recipe's hydra configs compose on top of verl's, and bad settings stop a run before Ray."""

import subprocess
import sys

from hydra import compose, initialize_config_module

from recipe_tapo.config import TapoConfig


def _compose(overrides=()):
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        return compose(config_name="tapo_trainer", overrides=list(overrides))


def test_trainer_config_is_verls_plus_the_tapo_section():
    config = _compose()
    assert config.trainer.use_v1 is False
    assert config.algorithm.adv_estimator == "grpo"
    assert config.actor_rollout_ref.rollout.n == 8
    assert TapoConfig.from_omegaconf(config.tapo) == TapoConfig()
    # verl's own defaults are all there, untouched where the recipe says nothing.
    assert config.actor_rollout_ref.actor.clip_ratio == 0.2


def test_tiny_cpu_profile_selects_the_cpu_backend():
    config = _compose(["profile=tiny_cpu"])
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.actor_rollout_ref.actor.strategy == "fsdp2"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    assert config.reward.custom_reward_function.path == "pkg://recipe_tapo.reward.tiny_reward"
    # The profile overrides the recipe's values, not the other way round.
    assert config.actor_rollout_ref.rollout.n == 4


def test_bad_tapo_setting_stops_the_run_before_ray_starts():
    out = subprocess.run([sys.executable, "-m", "recipe_tapo.main", "tapo.selection.n_pos=0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "n_pos" in out.stderr
    assert "ray init" not in out.stdout + out.stderr
