"""Hydra entry point of the TAPO recipe: verl's legacy `RayPPOTrainer` path, one Ray task runner.

    python -m recipe_tapo.main [--config-name tapo_trainer] key=value ...

Configs come from `config/` (installed as `recipe_tapo.conf`) on top of verl's own `ppo_trainer`.
The trainer is `recipe_tapo.trainer.RayTAPOTrainer`; a bad `tapo:` section or a setting TAPO
cannot run with is refused before Ray starts.
"""

import os
import socket
from pprint import pprint

import hydra
import ray
from omegaconf import OmegaConf
from verl.trainer.main_ppo import run_ppo
from verl.trainer.main_ppo_v0 import TaskRunner
from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler, need_critic, need_reference_policy
from verl.utils.config import validate_config

from recipe_tapo.run_config import check_tapo_run_config
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
        """verl 0.9.1's `TaskRunner.run` (which names `RayPPOTrainer` itself), building
        `RayTAPOTrainer` instead; a test pins verl's method so a change there is noticed."""
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.dataset.rl_dataset import collate_fn
        from verl.workers.config import HFModelConfig

        from recipe_tapo.trainer import RayTAPOTrainer

        print(f"TaskRunner hostname: {socket.gethostname()}, PID: {os.getpid()}")
        pprint(OmegaConf.to_container(config, resolve=True))
        OmegaConf.resolve(config)

        actor_rollout_cls, ray_worker_group_cls = self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        self.add_ref_policy_worker(config, actor_rollout_cls)
        validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))

        model_config: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        resource_pool_manager = self.init_resource_pool_mgr(config)
        train_dataset = create_rl_dataset(
            config.data.train_files,
            config.data,
            model_config.tokenizer,
            model_config.processor,
            is_train=True,
            max_samples=config.data.get("train_max_samples", -1),
        )
        val_dataset = create_rl_dataset(
            config.data.val_files,
            config.data,
            model_config.tokenizer,
            model_config.processor,
            is_train=False,
            max_samples=config.data.get("val_max_samples", -1),
        )
        trainer = RayTAPOTrainer(
            config=config,
            tokenizer=model_config.tokenizer,
            processor=model_config.processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=resource_pool_manager,
            ray_worker_group_cls=ray_worker_group_cls,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            collate_fn=collate_fn,
            train_sampler=create_rl_sampler(config.data, train_dataset),
        )
        trainer.init_workers()
        trainer.fit()


def check_config(config) -> None:
    """Everything that can be refused before Ray starts: the `tapo:` section, its fit with verl's
    settings, and verl's own validation."""
    check_tapo_run_config(config)
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
