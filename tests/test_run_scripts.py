"""The GPU run scripts' overrides compose on verl's config and pass verl's own validation.

No GPU is needed to catch a misspelt key (hydra refuses it) or what verl's `validate_config` refuses.
"""

import os
import re
import shlex

import pytest
from hydra import compose, initialize_config_module

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_SCRIPTS = ["run_grpo_qwen2.5_math.sh"]


def script_overrides(name: str) -> list[str]:
    """The hydra overrides a run script passes to `recipe_tapo.main`, with its env defaults filled in."""
    text = open(os.path.join(REPO_ROOT, "run_scripts", name)).read()
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]*)\}$", text, flags=re.M))
    defaults["HOME"] = "/home/user"
    body = text.split("python -m recipe_tapo.main", 1)[1].split('"$@"', 1)[0]
    for _ in range(2):  # defaults may refer to other variables ($HOME)
        body = re.sub(r"\$(\w+)", lambda m: defaults.get(m.group(1), m.group(0)), body)
    return shlex.split(body.replace("\\\n", " "))


@pytest.mark.parametrize("script", GPU_SCRIPTS)
def test_gpu_script_is_a_valid_verl_config(script):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    overrides = script_overrides(script)
    assert not any("$" in item for item in overrides), overrides
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        config = compose(config_name="tapo_trainer", overrides=overrides)
    assert config.actor_rollout_ref.rollout.name == "vllm"
    assert config.reward.custom_reward_function.path == "pkg://recipe_tapo.reward.math_reward"
    # Mini-batches must tile the batch (verl checks this only inside the workers, on the GPUs).
    assert config.data.train_batch_size % config.actor_rollout_ref.actor.ppo_mini_batch_size == 0
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
