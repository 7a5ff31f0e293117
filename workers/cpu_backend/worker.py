"""verl's fused actor/rollout/ref worker, made to start on a CPU-only machine.

Two things stop verl 0.9.1's `ActorRolloutRefWorker` on CPU, each cleared here through an extension
point verl designed for it, not by patching verl:

- `TrainingWorker.__init__` builds the process-group backend as ``"cpu:gloo,<device>:<backend>"``;
  with device ``cpu`` that is ``"cpu:gloo,cpu:gloo"``, which torch rejects (duplicate device). The
  worker classes are class attributes of `ActorRolloutRefWorker` (`actor_worker_cls`,
  `ref_worker_cls`); ours joins a plain gloo group first, after which verl's own call is a no-op.
- The FSDP engines are registered for devices ``cuda`` and ``npu`` only; `EngineRegistry.register`
  adds the same classes for ``cpu``.
"""

import os
from datetime import timedelta

import torch.distributed

from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

# Once per process, on import: the registry refuses a second registration of the same key.
EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(FSDPEngineWithLMHead)
EngineRegistry.register(model_type="value_model", backend=["fsdp", "fsdp2"], device="cpu")(FSDPEngineWithValueHead)


def init_gloo_process_group() -> None:
    """Join the worker group's default process group with the gloo backend (idempotent).

    RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set by verl's `Worker.__init__`.
    """
    if torch.distributed.is_initialized():
        return
    torch.distributed.init_process_group(
        backend="gloo",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timedelta(minutes=30),
    )


class GlooTrainingWorker(TrainingWorker):
    def __init__(self, config):
        init_gloo_process_group()
        super().__init__(config)


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """`ActorRolloutRefWorker` whose inner actor and ref engines run on CPU with gloo."""

    actor_worker_cls = GlooTrainingWorker
    ref_worker_cls = GlooTrainingWorker
