"""The TAPO trainer: verl's legacy `RayPPOTrainer`, its own `fit`, TAPO on the methods `fit` calls.

One step (docs/trainer.md). verl 0.9.1's `fit` runs unchanged; TAPO attaches at four seams:

1. rollout and synthesis: `TapoAgentLoopManager.generate_sequences` (the run's agent loop manager
   class) generates the rollouts and, on the same awake replicas, the synthesis of each finished
   group; parse and splice happen there too;
2. `_balance_batch` (called by `fit` after the rollout, before the rewards are fixed; needs
   `trainer.balance_batch=true`): the constructed rows join the batch under the original prompt,
   scored with the run's reward, each carrying its G_ref in its uid, plus zero-loss padding rows to
   keep the row count divisible; then verl balances the batch;
3. `_compute_old_log_prob`: with the old log-probs and entropies of every row, the per-token factor
   lambda x OTS of constructed rows, and rollout correction over the original rows only
   (constructed rows get importance weight 1);
4. `_update_actor`: DAE advantages (the registered `tapo` estimator, which `fit` called) times the
   factor and the loss-normalisation scales, GRPO's number of mini-batches each a little larger,
   then the `tapo/` metrics and the dump; after the update the batch keeps its original rows only,
   so verl's data metrics (scores, advantages, lengths) and rollout logs describe the rollouts;
   the actor's own metrics cover the constructed rows too (docs/metrics.md says which see what).

With `tapo.enable=false` every seam is verl's own method, so the run is verl's GRPO.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict
from verl import DataProto
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from recipe_tapo.advantage import compute_constructed_token_factor, compute_ots_weights, use_advantage_settings
from recipe_tapo.loss_normalization import mini_batch_of_rows, ref_loss_share, separate_loss_scales
from recipe_tapo.opsd import HAS_TEACHER, TEACHER_LOG_PROBS, build_teacher_rows, opsd_advantages, opsd_metrics
from recipe_tapo.run_config import check_opsd_run_config, check_tapo_run_config
from recipe_tapo.step_metrics import constructed_row_metrics, prefix_net_advantage
from recipe_tapo.textio import write_json_line
from recipe_tapo.workers.batch_rows import (
    ATTEMPT,
    CUT_TOKENS,
    IS_CONSTRUCTED,
    IS_PADDING,
    SOURCE_ROW,
    build_padding_rows,
    constructed_rows,
    mark_original_rows,
    pad_token_id,
)
from recipe_tapo.workers.synthesis_plan import SynthesisOutcome, synthesis_metrics

logger = logging.getLogger(__name__)

# Tensors the trainer keeps on the batch between the old log-prob pass and the update; they never
# reach a worker (`_update_actor` takes them off first).
TOKEN_FACTOR = "tapo_token_factor"  # lambda x OTS on constructed rows, 1 on original rows
OTS_WEIGHTS = "tapo_ots_weights"  # OTS alone, for the metrics and the dump


class RayTAPOTrainer(RayPPOTrainer):
    """verl's `RayPPOTrainer` running TAPO (`tapo.enable=true`, `algorithm.adv_estimator=tapo`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tapo_config = check_tapo_run_config(self.config)
        self.opsd_config = check_opsd_run_config(self.config)
        self._opsd_step: dict[str, Any] = {}
        self._eos_token_ids = eos_token_ids(self.tokenizer, self.config.actor_rollout_ref.model.path)
        use_advantage_settings(self.tapo_config.advantage)
        self._failed_rounds = 0
        self._outcome: SynthesisOutcome | None = None
        self._pending_metrics: dict[str, float] = {}

    def init_workers(self) -> None:
        super().init_workers()
        if not self.tapo_config.enable:
            return
        from recipe_tapo.workers.agent_loop import TapoAgentLoopManager

        manager = self.async_rollout_manager
        if not isinstance(manager, TapoAgentLoopManager):
            raise TypeError(
                f"tapo.enable=true needs TAPO's agent loop manager, got {type(manager).__name__}: set "
                "actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                "recipe_tapo.workers.agent_loop.TapoAgentLoopManager"
            )

        # Late synthesis requests are aborted on the replicas, which refuse any still in transit until resumed.
        async def abort() -> None:
            await self.checkpoint_manager.abort_replicas(reject_request=True)

        async def resume() -> None:
            await self.checkpoint_manager.resume_generation_replicas()

        manager.attach_replica_control(abort, resume)

    def _score_rows(self, rows: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """The run's own reward (verl's reward loop workers) on constructed rows."""
        scored = self.reward_loop_manager.compute_rm_score(rows)
        return scored.batch["rm_scores"], dict(scored.non_tensor_batch)

    # -- seam 2: the constructed rows join the batch ----------------------------------------------

    def _balance_batch(self, batch: DataProto, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if self.tapo_config.enable:
            self._insert_constructions(batch, metrics)
        super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)

    def _insert_constructions(self, batch: DataProto, metrics: dict[str, Any]) -> None:
        """This step's constructed rows (and padding rows) appended to `batch` in place."""
        outcome = self.async_rollout_manager.take_outcome(self.global_steps)
        if outcome is None:
            raise RuntimeError(f"TAPO: the agent loop manager holds no synthesis outcome for step {self.global_steps}")
        started = time.perf_counter()
        mark_original_rows(batch)
        rows = constructed_rows(batch, outcome.records, self._score_rows, self.tapo_config, pad_token_id(self.tokenizer))
        metrics.update(synthesis_metrics(outcome))
        metrics["tapo/augment_seconds"] = time.perf_counter() - started
        self._count_failed_round(outcome)
        parts = [batch] if rows is None else [batch, rows]
        padding = padding_rows_needed(sum(len(part) for part in parts), self._row_multiple())
        if padding:
            parts.append(build_padding_rows(batch, padding, pad_token_id(self.tokenizer)))
        if len(parts) > 1:
            _replace_rows(batch, DataProto.concat(parts))
        self._outcome = outcome

    def _count_failed_round(self, outcome: SynthesisOutcome) -> None:
        if not outcome.failed:
            self._failed_rounds = 0
            return
        self._failed_rounds += 1
        limit = self.tapo_config.synthesis.max_failed_rounds
        print(
            f"[tapo] WARNING step {self.global_steps}: no synthesis request was answered "
            f"({outcome.failure_cause}); GRPO step ({self._failed_rounds} of {limit} failed rounds in a row)"
        )
        if self._failed_rounds >= limit:
            raise RuntimeError(
                f"TAPO: {self._failed_rounds} synthesis rounds in a row answered no request "
                f"(tapo.synthesis.max_failed_rounds={limit}); last cause: {outcome.failure_cause}"
            )

    def _row_multiple(self) -> int:
        """Row counts verl can dispatch and split: `row_multiple` of this run's settings."""
        config = self.config.actor_rollout_ref
        return row_multiple(
            dp_size=self._actor_dp_size(),
            rollout_n=int(config.rollout.n),
            num_mini_batches=self._num_mini_batches(),
            ppo_micro=None if config.actor.use_dynamic_bsz else config.actor.ppo_micro_batch_size_per_gpu,
            log_prob_micro=(
                None if config.rollout.log_prob_use_dynamic_bsz else config.rollout.log_prob_micro_batch_size_per_gpu
            ),
        )

    def _actor_dp_size(self) -> int:
        return self._get_dp_size(self.actor_rollout_wg, "actor")

    def _num_mini_batches(self) -> int:
        return max(1, int(self.config.data.train_batch_size) // int(self.config.actor_rollout_ref.actor.ppo_mini_batch_size))

    # -- seam 3: OTS factor and rollout correction ------------------------------------------------

    def _compute_old_log_prob(self, batch: DataProto):
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        if self.tapo_config.enable:
            self._prepare_constructed_rows(batch, old_log_prob)
        if self.opsd_config.enable:
            self._teacher_log_probs(batch)
        return old_log_prob, mfu

    def _teacher_log_probs(self, batch: DataProto) -> None:
        """OPSD: each row's response scored under its privileged prompt, by the policy itself (the
        same log-prob pass as the student's) or by verl's reference worker (`opsd.teacher=initial`)."""
        started = time.perf_counter()
        teacher = build_teacher_rows(batch, self.tokenizer, self.opsd_config, chat_template_kwargs(self.config),
                                     self._eos_token_ids)
        if self.opsd_config.teacher == "initial":
            log_probs = self._compute_ref_log_prob(teacher.rows).batch["ref_log_prob"]
        else:
            log_probs = super()._compute_old_log_prob(teacher.rows)[0].batch["old_log_probs"]
        batch.batch[TEACHER_LOG_PROBS] = log_probs
        batch.batch[HAS_TEACHER] = torch.as_tensor(teacher.has_teacher)
        self._opsd_step = {"sources": teacher.sources, "prompt_ids": teacher.prompt_ids,
                           "seconds": time.perf_counter() - started}

    def _prepare_constructed_rows(self, batch: DataProto, old_log_prob: DataProto) -> None:
        """lambda x OTS from this pass's log-probs and entropies, the entropy of each kind of row,
        and rollout correction over the original rows (popping `rollout_log_probs`, so that verl's
        own correction, which would take in every row, does not run)."""
        original, constructed, _ = row_kinds(batch)
        log_probs, entropys = old_log_prob.batch["old_log_probs"], old_log_prob.batch["entropys"]
        mask = batch.batch["response_mask"]
        ots = None
        if self.tapo_config.ots.enable:
            ots = compute_ots_weights(
                log_probs, entropys, mask, constructed, self.tapo_config.ots.w_min, self.tapo_config.ots.w_max
            )
            batch.batch[OTS_WEIGHTS] = ots
        batch.batch[TOKEN_FACTOR] = compute_constructed_token_factor(
            log_probs, entropys, mask, constructed, self.tapo_config, ots_weights=ots
        )
        actor = self.config.actor_rollout_ref.actor
        pending = {}
        for name, rows in (("original", original), ("constructed", constructed)):
            if rows.any():
                entropy = agg_loss(entropys[rows], mask[rows], actor.loss_agg_mode, loss_scale_factor=actor.loss_scale_factor)
                pending[f"tapo/entropy/{name}"] = float(entropy)
        if "rollout_log_probs" in batch.batch.keys():
            pending.update(self._rollout_correction_of_original_rows(batch, log_probs, original))
        self._pending_metrics = pending

    def _rollout_correction_of_original_rows(self, batch: DataProto, log_probs: torch.Tensor, original: np.ndarray):
        from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
        from verl.utils.debug.metrics import calculate_debug_metrics

        rows = torch.as_tensor(original)
        rollouts = DataProto.from_dict(
            tensors={
                "old_log_probs": log_probs[rows],
                "rollout_log_probs": batch.batch["rollout_log_probs"][rows],
                "response_mask": batch.batch["response_mask"][rows].clone(),
                "responses": batch.batch["responses"][rows],
            }
        )
        metrics = calculate_debug_metrics(rollouts)
        rollout_corr_config = self.config.algorithm.get("rollout_correction", None)
        if rollout_corr_config is not None:
            corrected, corr_metrics = compute_rollout_correction_and_add_to_batch(rollouts, rollout_corr_config)
            metrics.update(corr_metrics)
            mask = batch.batch["response_mask"]
            mask[rows] = corrected.batch["response_mask"].to(mask.dtype)  # rejection sampling, original rows only
            if "rollout_is_weights" in corrected.batch.keys():
                weights = mask.to(torch.float32).clone()  # constructed rows: weight 1 on their tokens
                weights[rows] = corrected.batch["rollout_is_weights"].to(torch.float32)
                batch.batch["rollout_is_weights"] = weights
        batch.batch.pop("rollout_log_probs")
        return {key: float(value) for key, value in metrics.items()}

    # -- seam 4: the update ------------------------------------------------------------------------

    def _update_actor(self, batch: DataProto) -> DataProto:
        """verl's actor update on advantages x lambda x OTS x loss-normalisation scales, with GRPO's
        number of mini-batches, each a little larger; then metrics, the dump, and the batch back to
        its original rows."""
        if self.opsd_config.enable:
            return self._update_actor_opsd(batch)
        if not self.tapo_config.enable:
            return super()._update_actor(batch)
        factor = batch.batch.pop(TOKEN_FACTOR)
        ots = batch.batch.pop(OTS_WEIGHTS) if OTS_WEIGHTS in batch.batch.keys() else None
        original, constructed, padding = row_kinds(batch)
        dae = batch.batch["advantages"]
        mini_batch = self._mini_batch_of_rows(len(batch))
        scales = self._loss_scales(batch, original, constructed, mini_batch)
        batch.batch["advantages"] = dae * factor * scales.unsqueeze(-1)
        with self._mini_batch_size_for(len(batch)):
            output = super()._update_actor(batch)
        batch.batch["advantages"] = dae  # verl's data metrics show the DAE advantages

        cut, source = (np.asarray(batch.non_tensor_batch[key], dtype=np.int64) for key in (CUT_TOKENS, SOURCE_ROW))
        prefix_net = prefix_net_advantage(dae, factor, scales, cut, source, original, constructed)
        old_log_probs = batch.batch["old_log_probs"] if "old_log_probs" in batch.batch.keys() else None
        metrics = constructed_row_metrics(
            dae, factor, ots, batch.batch["response_mask"], cut, prefix_net, original, constructed, padding, old_log_probs
        )
        metrics.update(self._loss_scale_metrics(batch, scales, original, constructed, mini_batch))
        metrics.update(self._pending_metrics)
        output.meta_info["metrics"].update(metrics)
        self._maybe_dump(batch, dae, ots, constructed, prefix_net)
        _replace_rows(batch, batch.select_idxs(original))
        return output

    def _update_actor_opsd(self, batch: DataProto) -> DataProto:
        """OPSD: the actor update on coef x (log p_teacher - log p_student) per token (the student's
        log-probs are the old-log-prob pass's), plus GRPO's advantage with `opsd.outcome_advantage`;
        verl's data metrics then show the advantages trained."""
        teacher = batch.batch.pop(TEACHER_LOG_PROBS)
        has_teacher = batch.batch.pop(HAS_TEACHER).numpy()
        student, mask = batch.batch["old_log_probs"], batch.batch["response_mask"]
        distill = opsd_advantages(teacher, student, mask, has_teacher, self.opsd_config.coef)
        if self.opsd_config.outcome_advantage:
            batch.batch["advantages"] = batch.batch["advantages"] + distill
        else:
            batch.batch["advantages"] = distill
        output = super()._update_actor(batch)
        metrics = opsd_metrics(teacher, student, mask, has_teacher, self._opsd_step["sources"], batch.batch["advantages"])
        metrics["opsd/teacher_seconds"] = self._opsd_step["seconds"]
        output.meta_info["metrics"].update(metrics)
        self._maybe_dump_opsd(batch, teacher, student, has_teacher)
        return output

    def _maybe_dump_opsd(self, batch: DataProto, teacher, student, has_teacher) -> None:
        every = self.opsd_config.dump_every
        if not every or self.global_steps % every:
            return
        folder = self.opsd_config.dump_dir or os.path.join(self.config.trainer.default_local_dir, "opsd_dump")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step_{self.global_steps:06d}.jsonl")
        mask = batch.batch["response_mask"].bool()
        with open(path, "w", encoding="utf-8") as sink:
            for row in range(len(batch)):
                tokens = mask[row]
                write_json_line(sink, {
                    "step": self.global_steps,
                    "uid": str(batch.non_tensor_batch["uid"][row]),
                    "context": self._opsd_step["sources"][row],
                    "has_teacher": bool(has_teacher[row]),
                    "teacher_prompt_ids": list(self._opsd_step["prompt_ids"][row]),
                    "response_ids": batch.batch["responses"][row][tokens].tolist(),
                    "teacher_log_probs": teacher[row][tokens].tolist(),
                    "student_log_probs": student[row][tokens].tolist(),
                })
        print(f"[opsd] step {self.global_steps}: {len(batch)} rows written to {path}")

    def _mini_batch_of_rows(self, rows: int) -> np.ndarray:
        shuffled = bool(self.config.actor_rollout_ref.actor.get("shuffle", False))
        return mini_batch_of_rows(rows, self._actor_dp_size(), self._num_mini_batches(), shuffled=shuffled)

    def _loss_scales(self, batch: DataProto, original: np.ndarray, constructed: np.ndarray, mini_batch: np.ndarray):
        if self.tapo_config.advantage.loss_normalization == "joint" or not constructed.any():
            return torch.ones(len(batch), dtype=torch.float32)
        mode = self.config.actor_rollout_ref.actor.loss_agg_mode
        return separate_loss_scales(batch.batch["response_mask"], original, constructed, mini_batch, mode)

    def _loss_scale_metrics(self, batch, scales, original, constructed, mini_batch) -> dict[str, float]:
        """Mean scale per row kind, the constructed rows' largest and smallest, and what L_ref weighed."""
        metrics = {}
        for name, rows in (("original", original), ("constructed", constructed)):
            if rows.any():
                metrics[f"tapo/loss_scale/{name}"] = float(scales[torch.as_tensor(rows)].mean())
        if constructed.any():
            of_constructed = scales[torch.as_tensor(constructed)]
            metrics["tapo/loss_scale/constructed_max"] = float(of_constructed.max())
            metrics["tapo/loss_scale/constructed_min"] = float(of_constructed.min())
            mode = self.config.actor_rollout_ref.actor.loss_agg_mode
            share = ref_loss_share(batch.batch["response_mask"], scales, constructed, mini_batch, mode)
            if not math.isnan(share):
                metrics["tapo/effective_lambda"] = share * self.tapo_config.advantage.ref_loss_weight
        return metrics

    @contextlib.contextmanager
    def _mini_batch_size_for(self, rows: int):
        """verl's `_update_actor` reads `actor.ppo_mini_batch_size` (prompts, times `rollout.n` rows):
        for this call it is the augmented batch's rows per mini-batch, so the update makes as many
        optimizer steps per epoch as GRPO. `_insert_constructions` padded the batch so it is whole."""
        actor = self.config.actor_rollout_ref.actor
        configured = actor.ppo_mini_batch_size
        per_prompt = rows // self._num_mini_batches() // int(self.config.actor_rollout_ref.rollout.n)
        with open_dict(actor):
            actor.ppo_mini_batch_size = per_prompt
        try:
            yield
        finally:
            with open_dict(actor):
                actor.ppo_mini_batch_size = configured

    def _log_rollout_data(self, batch: DataProto, reward_extra_infos_dict: dict, timing_raw: dict, rollout_data_dir: str):
        """verl's per-row log of the original rollouts: `batch` holds only those after the update,
        and the reward's extra infos are taken from it."""
        if self.tapo_config.enable:
            reward_extra_infos_dict = {
                key: batch.non_tensor_batch[key] for key in reward_extra_infos_dict if key in batch.non_tensor_batch
            }
        super()._log_rollout_data(batch, reward_extra_infos_dict, timing_raw, rollout_data_dir)

    # -- the inspection dump ---------------------------------------------------------------------

    def _maybe_dump(self, batch, dae, ots, constructed, prefix_net) -> None:
        every = self.tapo_config.dump.every
        if self._outcome is None or not every or self.global_steps % every:
            return
        records = [dict(record) for record in self._outcome.records]
        mask = batch.batch["response_mask"].bool()
        for net, row in zip(prefix_net, np.flatnonzero(constructed).tolist(), strict=True):
            record = records[int(batch.non_tensor_batch[ATTEMPT][row])]
            tokens = mask[row]
            record["advantage"] = float(dae[row][tokens][0]) if tokens.any() else 0.0
            record["ots_weights"] = ots[row][tokens].tolist() if ots is not None else None
            record["prefix_net_advantage"] = float(net)
        folder = self.tapo_config.dump.dir or os.path.join(self.config.trainer.default_local_dir, "tapo_dump")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step_{self.global_steps:06d}.jsonl")
        with open(path, "w", encoding="utf-8") as sink:
            for record in records:
                write_json_line(sink, record)
        print(f"[tapo] step {self.global_steps}: {len(records)} synthesis attempts written to {path}")


def row_kinds(batch: DataProto) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(original, constructed, padding) row flags of a training batch; every row is original when
    the batch has no TAPO columns."""
    if IS_CONSTRUCTED not in batch.non_tensor_batch:
        rows = len(batch)
        return np.ones(rows, dtype=bool), np.zeros(rows, dtype=bool), np.zeros(rows, dtype=bool)
    constructed = np.asarray(batch.non_tensor_batch[IS_CONSTRUCTED], dtype=bool)
    padding = np.asarray(batch.non_tensor_batch[IS_PADDING], dtype=bool)
    return ~constructed & ~padding, constructed, padding


def _replace_rows(batch: DataProto, rows: DataProto) -> None:
    # `fit` keeps its reference to the batch it passed: the rows change in place, as verl's own
    # `DataProto.reorder` does inside `_balance_batch`; meta_info stays.
    batch.batch = rows.batch
    batch.non_tensor_batch = rows.non_tensor_batch


def chat_template_kwargs(config: Any) -> dict[str, Any]:
    """`data.apply_chat_template_kwargs` as a plain dict (the rollout renders prompts with them)."""
    kwargs = config.data.get("apply_chat_template_kwargs", None) or {}
    return OmegaConf.to_container(kwargs, resolve=True) if OmegaConf.is_config(kwargs) else dict(kwargs)


def row_multiple(
    dp_size: int,
    rollout_n: int,
    num_mini_batches: int,
    ppo_micro: int | None = None,
    log_prob_micro: int | None = None,
) -> int:
    """The smallest row count step of a TAPO batch that verl 0.9.1 can run.

    Dispatch splits the batch evenly over the data-parallel ranks; the update makes GRPO's number
    of mini-batches, each a whole number of `rollout.n` rows split evenly over the ranks; without
    dynamic batch sizes, every rank's share (log-prob pass) and every rank's mini-batch (update)
    must also split into whole micro-batches. With dynamic batch sizes (the GPU scripts) the step
    is num_mini_batches x lcm(dp_size, rollout_n).
    """
    multiple = num_mini_batches * math.lcm(dp_size, rollout_n)
    if ppo_micro:
        multiple = math.lcm(multiple, dp_size * num_mini_batches * int(ppo_micro))
    if log_prob_micro:
        multiple = math.lcm(multiple, dp_size * int(log_prob_micro))
    return multiple


def padding_rows_needed(rows: int, multiple: int) -> int:
    """How many padding rows bring `rows` to a multiple of `multiple`."""
    return -rows % multiple


def eos_token_ids(tokenizer: Any, model_path: str) -> list[int]:
    """Every id that ends a rollout: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    try:
        from transformers import GenerationConfig

        generation_eos = GenerationConfig.from_pretrained(os.path.expanduser(model_path)).eos_token_id
    except (OSError, ValueError):  # no generation_config.json: the tokenizer's EOS alone
        generation_eos = None
    if generation_eos is not None:
        ids.extend(int(token) for token in (generation_eos if isinstance(generation_eos, list) else [generation_eos]))
    return list(dict.fromkeys(ids))
