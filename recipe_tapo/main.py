"""Hydra entry point of the TAPO recipe: verl's legacy `RayPPOTrainer` path, one Ray task runner.

    python -m recipe_tapo.main [--config-name tapo_trainer] key=value ...

Configs come from `config/` (installed as `recipe_tapo.conf`) on top of verl's own `ppo_trainer`.
Until the TAPO trainer lands this runs verl's stock trainer with whatever `algorithm.adv_estimator`
the config names (GRPO by default).
"""

import hydra
import ray

from verl.trainer.main_ppo import run_ppo
from verl.trainer.main_ppo_v0 import TaskRunner
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config

from recipe_tapo.config import TapoConfig
from recipe_tapo.workers.cpu_backend import is_cpu_platform


class TapoTaskRunner(TaskRunner.__ray_actor_class__):
    """verl's task runner; on the CPU platform its fused worker is the CPU-capable subclass."""

    def add_actor_rollout_worker(self, config):
        actor_rollout_cls, ray_worker_group_cls = super().add_actor_rollout_worker(config)
        if not is_cpu_platform():
            return actor_rollout_cls, ray_worker_group_cls
        from recipe_tapo.workers.cpu_backend.worker import CPUActorRolloutRefWorker

        for role, worker in list(self.role_worker_mapping.items()):
            if worker.__ray_actor_class__ is actor_rollout_cls:
                self.role_worker_mapping[role] = ray.remote(CPUActorRolloutRefWorker)
        return CPUActorRolloutRefWorker, ray_worker_group_cls


@hydra.main(config_path="pkg://recipe_tapo.conf", config_name="tapo_trainer", version_base=None)
def main(config):
    # Refuse a bad `tapo:` section before Ray starts, with the offending key in the message.
    TapoConfig.from_omegaconf(config.tapo)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=ray.remote(TapoTaskRunner))


if __name__ == "__main__":
    main()
