"""Hydra entry point of the TAPO recipe: verl's legacy `RayPPOTrainer` path, one Ray task runner.

    python -m recipe_tapo.main [--config-name tapo_trainer] key=value ...

Configs come from `config/` (installed as `recipe_tapo.conf`) on top of verl's own `ppo_trainer`.
The trainer is `recipe_tapo.trainer.RayTAPOTrainer`; a bad `tapo:` section or a setting TAPO
cannot run with is refused before Ray starts.
"""

import os

import hydra
import ray
from omegaconf import OmegaConf
from verl.trainer.main_ppo import run_ppo
from verl.trainer.main_ppo_v0 import TaskRunner
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

from recipe_tapo.run_config import check_opsd_run_config, check_paths_reach_every_node, check_tapo_run_config
from recipe_tapo.workers.cpu_backend import is_cpu_platform


class TapoTaskRunner(TaskRunner.__ray_actor_class__):
    """verl's task runner building the TAPO trainer; on the CPU platform its fused worker is the
    CPU-capable subclass."""

    def add_actor_rollout_worker(self, config):
        actor_rollout_cls, ray_worker_group_cls = super().add_actor_rollout_worker(config)
        if not is_cpu_platform():
            return actor_rollout_cls, ray_worker_group_cls
        from recipe_tapo.workers.cpu_backend.worker import CPUActorRolloutRefWorker

        for role, worker in list(self.role_worker_mapping.items()):
            if worker.__ray_actor_class__ is actor_rollout_cls:
                self.role_worker_mapping[role] = ray.remote(CPUActorRolloutRefWorker)
        return CPUActorRolloutRefWorker, ray_worker_group_cls

    def run(self, config):
        """verl 0.9.1's `TaskRunner.run`, building the TAPO trainer.

        verl's `run` constructs its trainer by the global name `RayPPOTrainer` and has no parameter
        for another class. This task runner is a Ray actor of its own, one run per process, so that
        name is bound to `RayTAPOTrainer` in the globals `run` reads, here, rather than `run` being
        copied (the one rebinding of a verl name in the recipe; docs/trainer.md). Those globals are
        the function's own: Ray ships verl's task-runner class to this process by value, with its
        module globals copied, so rebinding the name in `verl.trainer.main_ppo_v0` would not reach it.
        """
        from recipe_tapo.trainer import RayTAPOTrainer

        verl_run = super().run
        verl_run.__func__.__globals__["RayPPOTrainer"] = RayTAPOTrainer
        verl_run(config)


def check_config(config) -> None:
    """Everything that can be refused before Ray starts: the `tapo:` and `opsd:` sections, their fit
    with verl's settings, the paths every node reads, and verl's own validation."""
    check_tapo_run_config(config)
    check_opsd_run_config(config)
    check_paths_reach_every_node(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def dry_run_report(config) -> str:
    """What a run would use, for `DRY_RUN=1` (environment TAPO_DRY_RUN=1): the config passed every
    check; the files it reads are listed, each marked present or missing on this machine."""
    data = config.data
    files = {"actor_rollout_ref.model.path": [str(config.actor_rollout_ref.model.path)]}
    for key in ("train_files", "val_files"):
        value = data.get(key)
        files[f"data.{key}"] = [str(item) for item in value] if OmegaConf.is_list(value) else [str(value)]
    lines = [
        "DRY RUN: the config composes and passes verl's and TAPO's start-up checks; no Ray started.",
        f"  algorithm.adv_estimator={config.algorithm.adv_estimator} tapo.enable={config.tapo.enable} "
        f"tapo.synthesis.mode={config.tapo.synthesis.mode}",
        f"  data.max_prompt_length={data.max_prompt_length} data.max_response_length={data.max_response_length} "
        f"rollout.n={config.actor_rollout_ref.rollout.n} trainer.nnodes={config.trainer.nnodes} "
        f"trainer.n_gpus_per_node={config.trainer.n_gpus_per_node}",
    ]
    opsd = config.get("opsd")
    if opsd is not None and opsd.enable:
        lines.append(f"  opsd.enable=True opsd.coef={opsd.coef} opsd.outcome_advantage={opsd.outcome_advantage} "
                     f"opsd.teacher={opsd.teacher} opsd.context={opsd.context} opsd.max_prompt_tokens={opsd.max_prompt_tokens}")
    for key, paths in files.items():
        for path in paths:
            state = "present" if os.path.exists(os.path.expanduser(path)) else "missing here"
            lines.append(f"  {key}: {path} ({state})")
    return "\n".join(lines)


@hydra.main(config_path="pkg://recipe_tapo.conf", config_name="tapo_trainer", version_base=None)
def main(config):
    check_config(config)
    if os.environ.get("TAPO_DRY_RUN") == "1":
        print(dry_run_report(config))
        return
    run_ppo(config, task_runner_class=ray.remote(TapoTaskRunner))


if __name__ == "__main__":
    main()
