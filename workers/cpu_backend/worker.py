"""verl's fused actor/rollout/ref worker, made to start on a CPU-only machine.

Two things stop verl 0.9.1's `ActorRolloutRefWorker` on CPU, each cleared here through an extension
point verl designed for it, not by patching verl:

- `TrainingWorker.__init__` calls verl's `initialize_global_process_group_ray()` with no backend,
  which builds ``"cpu:gloo,<device>:<backend>"``; with device ``cpu`` that is ``"cpu:gloo,cpu:gloo"``,
  which torch rejects (duplicate device). The worker classes are class attributes of
  `ActorRolloutRefWorker` (`actor_worker_cls`, `ref_worker_cls`); ours first calls the same verl
  function with its public ``backend="gloo"`` argument. verl's own call then finds the group
  initialised and skips (verl 0.9.1 checks `torch.distributed.is_initialized()` first; no argument
  of `TrainingWorker` reaches that call, so this reliance is listed in README).
- The FSDP engines are registered for devices ``cuda`` and ``npu`` only; `EngineRegistry.register`
  adds the same classes for ``cpu``.
"""

from verl.utils.distributed import initialize_global_process_group_ray
from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead
from verl.workers.engine_workers import ActorRolloutRefWorker, TrainingWorker

# Once per process, on import: the registry refuses a second registration of the same key.
EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device="cpu")(FSDPEngineWithLMHead)
EngineRegistry.register(model_type="value_model", backend=["fsdp", "fsdp2"], device="cpu")(FSDPEngineWithValueHead)


def init_gloo_process_group() -> None:
    """Join the worker group's default process group with the gloo backend (idempotent).

    verl's own initialiser, with its `backend` argument: RANK, WORLD_SIZE, MASTER_ADDR and
    MASTER_PORT come from the environment verl's `Worker.__init__` sets, the timeout is verl's.
    """
    initialize_global_process_group_ray(timeout_second=None, backend="gloo")


class GlooTrainingWorker(TrainingWorker):
    def __init__(self, config):
        init_gloo_process_group()
        super().__init__(config)


class CPUActorRolloutRefWorker(ActorRolloutRefWorker):
    """`ActorRolloutRefWorker` whose inner actor and ref engines run on CPU with gloo."""

    actor_worker_cls = GlooTrainingWorker
    ref_worker_cls = GlooTrainingWorker
