"""The recipe's hydra configs compose on top of verl's, and bad settings stop a run before Ray."""

import subprocess
import sys

from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import recipe_tapo.conf

from recipe_tapo.config import TapoConfig


def _compose(overrides=()):
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        return compose(config_name="tapo_trainer", overrides=list(overrides))


def test_trainer_config_is_verls_plus_the_tapo_section():
    config = _compose()
    assert config.trainer.use_v1 is False
    assert config.algorithm.adv_estimator == "tapo"
    assert config.actor_rollout_ref.rollout.n == 8
    assert TapoConfig.from_omegaconf(config.tapo) == TapoConfig()
    # verl's own defaults are all there, untouched where the recipe says nothing.
    assert config.actor_rollout_ref.actor.clip_ratio == 0.2


def test_tiny_cpu_profile_selects_the_cpu_backend():
    config = _compose(["profile=tiny_cpu"])
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.actor_rollout_ref.actor.strategy == "fsdp2"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    # Rows get stable request ids, from which the hf server derives each row's random stream.
    assert config.actor_rollout_ref.rollout.full_determinism is True


def test_tiny_cpu_profile_holds_cpu_needs_only():
    """The run's size and reward are the tiny run's choices (`tiny_run`), not CPU needs."""
    base, cpu = _compose(), _compose(["profile=tiny_cpu"])
    for key in ("data.train_batch_size", "data.max_prompt_length", "data.max_response_length",
                "actor_rollout_ref.rollout.n", "actor_rollout_ref.actor.ppo_mini_batch_size",
                "actor_rollout_ref.actor.optim.lr", "trainer.total_training_steps", "trainer.logger",
                "trainer.val_before_train", "reward.custom_reward_function.path"):
        assert OmegaConf.select(cpu, key) == OmegaConf.select(base, key), key


def test_tiny_run_profile_on_top_of_the_cpu_needs():
    config = _compose(["profile=[tiny_cpu,tiny_run]"])
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.reward.custom_reward_function.path == "pkg://recipe_tapo.reward.tiny_reward"
    # The profiles override the recipe's values, not the other way round.
    assert config.actor_rollout_ref.rollout.n == 4
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    assert config.ray_kwargs.ray_init.runtime_env.env_vars.HF_HUB_OFFLINE == "1"


def test_every_cpu_setting_gives_its_reason():
    """Each value line of the CPU profile carries a comment saying why CPU needs it."""
    path = Path(recipe_tapo.conf.__file__).parent / "profile" / "tiny_cpu.yaml"
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        code, _, reason = line.partition("#")
        key, colon, value = code.partition(":")
        if colon and value.strip():  # a leaf setting (sections have no value)
            assert len(reason.strip()) > 10, f"tiny_cpu.yaml line {number} has no reason: {line.strip()}"


def test_run_script_uses_both_profiles():
    script = (Path(__file__).resolve().parent.parent / "run_scripts" / "run_tapo_tiny_cpu.sh").read_text()
    assert '"profile=[tiny_cpu,tiny_run]"' in script


# Run as `python -c`: ray.init refuses (prints a marker and raises) before recipe_tapo.main runs, so
# any path that would start a Ray session shows in the output.
_MAIN_WITHOUT_RAY = """
import sys, ray
def refuse(*args, **kwargs):
    print("RAY-INIT-CALLED", file=sys.stderr, flush=True)
    raise RuntimeError("ray.init refused by the test")
ray.init = refuse
sys.argv = ["recipe_tapo.main", *sys.argv[1:]]
import runpy
try:
    runpy.run_module("recipe_tapo.main", run_name="__main__")
finally:
    print("RAY-INITIALIZED" if ray.is_initialized() else "RAY-NOT-INITIALIZED", file=sys.stderr, flush=True)
"""


def _main_with_ray_refused(*overrides):
    return subprocess.run([sys.executable, "-c", _MAIN_WITHOUT_RAY, *overrides],
                          capture_output=True, text=True, timeout=300)


def test_bad_tapo_setting_stops_the_run_before_ray_starts():
    out = _main_with_ray_refused("tapo.selection.n_pos=0")
    assert out.returncode != 0
    assert "n_pos" in out.stderr
    assert "RAY-INIT-CALLED" not in out.stderr
    assert "RAY-NOT-INITIALIZED" in out.stderr


def test_the_ray_check_above_can_fail():
    """Control: a valid config reaches ray.init, and the harness sees it."""
    out = _main_with_ray_refused("profile=[tiny_cpu,tiny_run]", "tapo.enable=false")
    assert "RAY-INIT-CALLED" in out.stderr, out.stderr[-2000:]
