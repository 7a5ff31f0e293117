"""TAPO's agent loop manager: verl's rollout, and the step's synthesis on the same awake replicas.

verl 0.9.1 lets a run name its agent loop manager class
(`actor_rollout_ref.rollout.agent.agent_loop_manager_class`, read in `RayPPOTrainer.init_workers`);
its `generate_sequences` runs while the rollout replicas hold this step's weights, before `fit`
puts them to sleep, and this manager holds the run's LLM client. So the synthesis of TAPO runs
here (docs/trainer.md):

- `tapo.synthesis.stream=true` (default): the batch goes to verl's agent loop workers one group
  (the K rollouts of one prompt) per call, and as soon as a group's K rollouts are finished and
  scored its synthesis requests go out, while other groups still generate. Each group's DCS draw
  is seeded by (selection seed, step, group position), so it does not depend on which group
  finishes first.
- `stream=false`: verl's own rollout of the whole batch, then one synthesis round over it (one DCS
  draw seeded by selection seed + step).

Either way the rollout output is exactly what verl's manager returns (same rows, order and
keys), and the synthesis outcome waits for the trainer (`take_outcome`), which inserts the
constructed rows (`RayTAPOTrainer._balance_batch`). Requests still running `tapo.synthesis.timeout_s`
after the last rollout finished are aborted on the replicas (`attach_replica_control`) and counted.
Validation generation is verl's, untouched.
"""

from __future__ import annotations

import asyncio
import copy
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.agent_loop import AgentLoopManager
from verl.utils.import_utils import load_class_from_fqn
from verl.utils.ray_utils import auto_await

from recipe_tapo.config import TapoConfig
from recipe_tapo.workers.synthesis_plan import SynthesisOutcome, SynthesisPlanner
from recipe_tapo.workers.synthesis_round import RolloutServerTextSource, SynthesisRound


class TapoAgentLoopManager(AgentLoopManager):
    """verl's `AgentLoopManager` that also runs each training step's TAPO synthesis (module docstring)."""

    def __init__(self, config, llm_client, teacher_client=None, reward_loop_worker_handles=None):
        super().__init__(config, llm_client, teacher_client, reward_loop_worker_handles)
        self.tapo = TapoConfig.from_omegaconf(config.get("tapo"))
        self.planner: SynthesisPlanner | None = None
        self.text_source: Any = None
        if self.tapo.enable:
            self.planner, self.text_source = _synthesis_parts(config, self.tapo, llm_client)
        self._abort = None
        self._resume = None
        self._outcomes: dict[int, SynthesisOutcome] = {}
        # A synchronous text source's batches, one at a time, across groups and steps.
        self._source_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapo-synthesis")

    def attach_replica_control(self, abort, resume) -> None:
        """Coroutine functions that abort every request on the rollout replicas and let them take
        requests again (the trainer passes its checkpoint manager's `abort_replicas` and
        `resume_generation_replicas`); without them late requests are only cancelled here."""
        self._abort, self._resume = abort, resume

    def take_outcome(self, step: int) -> SynthesisOutcome | None:
        """The synthesis outcome of training step `step` (once), or None if that step had none."""
        return self._outcomes.pop(step, None)

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        if self.planner is None or prompts.meta_info.get("validate", False):
            return await super().generate_sequences(prompts)
        step = int(prompts.meta_info.get("global_steps", -1))
        started = time.monotonic()
        synthesis = SynthesisRound(
            self.planner, self.text_source, step, self._abort, self._resume, executor=self._source_thread
        )
        if self.tapo.synthesis.stream:
            output = await self._generate_by_group(prompts, synthesis)
            rollout_done = time.monotonic()
        else:
            output = await super().generate_sequences(prompts)
            rollout_done = time.monotonic()
            synthesis.submit(_rollout_view(output, prompts))
        outcome = await synthesis.finish(deadline=rollout_done + self.tapo.synthesis.timeout_s)
        last_output = max(synthesis.last_output_time or rollout_done, rollout_done)
        outcome.timings.update(
            rollout_seconds=rollout_done - started,
            after_rollout_seconds=last_output - rollout_done,
            # what the step waited past its rollouts: at most timeout_s plus the abort's grace
            wait_after_rollout_seconds=time.monotonic() - rollout_done,
            rollout_to_last_synthesis_seconds=last_output - started,
        )
        self._outcomes[step] = outcome
        return output

    async def _generate_by_group(self, prompts: DataProto, synthesis: SynthesisRound) -> DataProto:
        """verl's rollout, one group per agent loop worker call, each group's synthesis sent as soon
        as its rollouts are scored; the output is the groups' outputs in batch order."""
        if "priority" not in prompts.non_tensor_batch:
            # verl numbers the rows of the whole batch before splitting it (stable request ids).
            prompts.non_tensor_batch["priority"] = np.arange(len(prompts), dtype=np.int64)
        bounds = group_bounds(prompts.non_tensor_batch["uid"])

        async def one_group(position: int, start: int, end: int) -> DataProto:
            worker = self.agent_loop_workers[position % len(self.agent_loop_workers)]
            chunk = prompts.slice(start, end)
            output = await worker.generate_sequences.remote(chunk)
            synthesis.submit(_rollout_view(output, chunk), group_position=position, row_offset=start)
            return output

        outputs = await asyncio.gather(*(one_group(position, *bound) for position, bound in enumerate(bounds)))
        merged = DataProto.concat(list(outputs))
        per_sample = [part.meta_info.pop("metrics") for part in outputs]
        merged.meta_info = {**outputs[0].meta_info, "timing": self._performance_metrics(per_sample, merged)}
        return merged


def group_bounds(uids: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal uids: verl repeats every prompt K times in a row."""
    bounds, start = [], 0
    for row in range(1, len(uids) + 1):
        if row == len(uids) or uids[row] != uids[start]:
            bounds.append((start, row))
            start = row
    seen = [uids[start] for start, _ in bounds]
    if len(set(seen)) != len(seen):
        raise ValueError("the rollout batch's rows of one prompt are not consecutive; TAPO streams by group")
    return bounds


def _rollout_view(output: DataProto, prompts: DataProto) -> DataProto:
    """The scored rollout rows with the prompts' uids (verl's agent loop output has no uid)."""
    return DataProto(
        batch=output.batch,
        non_tensor_batch={**output.non_tensor_batch, "uid": prompts.non_tensor_batch["uid"]},
        meta_info=output.meta_info,
    )


def _synthesis_parts(config, tapo: TapoConfig, llm_client) -> tuple[SynthesisPlanner, Any]:
    """The planner and the text source of a run: the policy through the rollout servers, or the
    class named by `tapo.synthesis.text_source`, built as cls(trainer_config, tokenizer)."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig

    from recipe_tapo.trainer import chat_template_kwargs, eos_token_ids

    model_config: HFModelConfig = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    tokenizer = model_config.tokenizer
    planner = SynthesisPlanner(
        tapo,
        tokenizer,
        response_length=int(config.data.max_response_length),
        eos_token_ids=eos_token_ids(tokenizer, model_config.local_path),
        chat_template_kwargs=chat_template_kwargs(config),
        stable_request_ids=bool(config.actor_rollout_ref.rollout.get("full_determinism", False)),
    )
    synthesis = tapo.synthesis
    if synthesis.text_source:
        # A tokenizer of its own: the source runs in a worker thread while the planner tokenises
        # prompts in the event loop, and an HF fast tokenizer is not safe to share across threads.
        source_class = load_class_from_fqn(synthesis.text_source, "synthesis text source")
        return planner, source_class(config, copy.deepcopy(tokenizer))
    source = RolloutServerTextSource(
        llm_client, tokenizer, temperature=synthesis.temperature, top_p=synthesis.top_p, max_new_tokens=synthesis.max_new_tokens
    )
    return planner, source
