"""CPU backend for verl's real trainer: a CPU platform and the "hf" rollout backend.

verl 0.9.1 cannot run on a CPU-only machine (verl issue #3266). `register()` (called by the recipe's
`verl.plugins` entry point in every process) only adds names to verl's registries; nothing changes
until a run opts in explicitly with BOTH

- ``VERL_PLATFORM=cpu`` (verl's own platform override; auto-detection never picks "cpu"), and
- ``actor_rollout_ref.rollout.name=hf``,

as `config/profile/tiny_cpu.yaml` and `run_scripts/run_tapo_tiny_cpu.sh` do. A GPU run is unchanged.
"""

HF_ROLLOUT_NAME = "hf"


def _load_hf_replica():
    from recipe_tapo.workers.cpu_backend.hf_rollout import HFReplica

    return HFReplica


def register() -> None:
    """Add the "cpu" platform and the "hf" rollout backend to verl's registries (cheap, idempotent)."""
    from verl.plugin.platform import PlatformRegistry
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from recipe_tapo.workers.cpu_backend.platform import PLATFORM_NAME, PlatformCPU

    if PlatformRegistry.get(PLATFORM_NAME) is None:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
    RolloutReplicaRegistry.register(HF_ROLLOUT_NAME, _load_hf_replica)
    # verl 0.9.1 has no register function for rollout adapters: its registry is this module dict,
    # holding fully qualified names that are imported on use.
    rollout_base._ROLLOUT_REGISTRY[(HF_ROLLOUT_NAME, "async")] = (
        "recipe_tapo.workers.cpu_backend.hf_rollout.HFServerAdapter"
    )


def is_cpu_platform() -> bool:
    """True when this process runs verl on the CPU platform (``VERL_PLATFORM=cpu``)."""
    from verl.utils.device import get_device_name

    return get_device_name() == "cpu"
