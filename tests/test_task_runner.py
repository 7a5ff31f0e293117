"""The recipe's task runner picks the CPU worker on the cpu platform only, without starting Ray.

Each case runs in a fresh process: verl fixes its platform once per process, from VERL_PLATFORM
(the recipe's cpu platform) or, without it, by detection (nvidia on a machine without a GPU too).
"""

import json
import os
import subprocess
import sys

import pytest

_ADD_WORKER = """
import json, ray
from hydra import compose, initialize_config_module
from verl.utils.device import get_device_name
from recipe_tapo.main import TapoTaskRunner

with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
    config = compose(config_name="tapo_trainer")
runner = TapoTaskRunner()  # the plain class under verl's Ray task runner: no Ray needed
worker_cls, group_cls = runner.add_actor_rollout_worker(config)
print(json.dumps({
    "device": get_device_name(),
    "returned": worker_cls.__name__,
    "group": group_cls.__name__,
    "mapped": sorted(w.__ray_actor_class__.__name__ for w in runner.role_worker_mapping.values()),
    "ray_started": ray.is_initialized(),
}))
"""


def _add_actor_rollout_worker(platform):
    env = {key: value for key, value in os.environ.items() if key != "VERL_PLATFORM"}
    if platform:
        env["VERL_PLATFORM"] = platform
    out = subprocess.run([sys.executable, "-c", _ADD_WORKER], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_platform_keeps_verls_worker():
    """Off the cpu platform (here verl's nvidia fallback, as on a GPU cluster) nothing is swapped."""
    result = _add_actor_rollout_worker(platform=None)
    assert result["device"] == "cuda"
    assert result["returned"] == "ActorRolloutRefWorker"
    assert result["mapped"] == ["ActorRolloutRefWorker"]
    assert result["group"] == "RayWorkerGroup"
    assert result["ray_started"] is False


def test_cpu_platform_swaps_in_the_cpu_worker():
    result = _add_actor_rollout_worker(platform="cpu")
    assert result["device"] == "cpu"
    assert result["returned"] == "CPUActorRolloutRefWorker"
    assert result["mapped"] == ["CPUActorRolloutRefWorker"]
    assert result["group"] == "RayWorkerGroup"
    assert result["ray_started"] is False
