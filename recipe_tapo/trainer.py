"""The TAPO trainer: verl's legacy `RayPPOTrainer` with constructed trajectories in each step's batch.

One step (TAPO_METHOD.md section 2; the marked `TAPO` blocks of `fit`):
rollout and reward as in GRPO -> the augmentation worker (DCS, synthesis through the same rollout
servers while they still hold this step's weights, parse, splice, score with the run's reward) ->
the rollout servers sleep -> constructed rows join the batch under the original prompt and the
source group's uid (+ zero-loss padding rows to keep the row count divisible) -> old log-probs and
entropies for all rows -> per-token factor lambda x OTS -> `tapo` advantages (DAE) -> verl's
actor update, with as many mini-batches as GRPO, each a little larger.

Why `fit` is overridden rather than verl's narrower seams (written against verl 0.9.1, whose
`fit` a test pins by hash): no overridable method lies between the rollout and the reward
extraction when `trainer.balance_batch` is off, so rows cannot be inserted before the rewards are
fixed; the module-level `compute_advantage` gives a custom estimator neither `is_constructed` nor
the old log-probs and entropies OTS needs; and verl's data, rollout-correction and debug metrics
would otherwise count constructed and padding rows. The loop below is verl's, in verl's order,
without the branches a `tapo` run never takes (critic, REMAX, GDPO metrics: refused at start-up
or not applicable); every TAPO change is marked `# TAPO:`.
"""

from __future__ import annotations

import logging
import math
import os
import traceback
import uuid
from pprint import pprint
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm
from verl import DataProto
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.metric_utils import (
    compute_data_metrics,
    compute_throughout_metrics,
    compute_timing_metrics,
    compute_variance_proxy_metrics,
)
from verl.trainer.ppo.ray_trainer import (
    RayPPOTrainer,
    apply_kl_penalty,
    compute_advantage,
    compute_response_mask,
    compute_spec_decode_metrics,
)
from verl.trainer.ppo.reward import extract_reward
from verl.utils.checkpoint.checkpoint_manager import should_save_ckpt_esi
from verl.utils.debug import marked_timer
from verl.utils.metric import reduce_metrics
from verl.utils.skip.skip_manager import SkipManager

from recipe_tapo.advantage import compute_constructed_token_factor, compute_tapo_advantage
from recipe_tapo.run_config import TAPO_ESTIMATOR, check_tapo_run_config
from recipe_tapo.textio import write_json_line
from recipe_tapo.workers.augmentation import (
    ATTEMPT,
    CUT_TOKENS,
    IS_CONSTRUCTED,
    IS_PADDING,
    Augmentation,
    RolloutServerTextSource,
    TrajectoryAugmenter,
    build_padding_rows,
    mark_original_rows,
)

logger = logging.getLogger(__name__)


class RayTAPOTrainer(RayPPOTrainer):
    """verl's `RayPPOTrainer` running TAPO (`tapo.enable=true`, `algorithm.adv_estimator=tapo`).

    With `tapo.enable=false` and the `tapo` estimator the same loop runs with nothing constructed,
    which is exactly GRPO; with another estimator the run is verl's own `fit`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tapo_config = check_tapo_run_config(self.config)
        self.augmenter: TrajectoryAugmenter | None = None

    def init_workers(self) -> None:
        super().init_workers()
        if self.tapo_config.enable:
            self.augmenter = self._build_augmenter()

    def _build_augmenter(self) -> TrajectoryAugmenter:
        synthesis = self.tapo_config.synthesis
        text_source_path = synthesis.text_source
        if text_source_path:
            from verl.utils.import_utils import load_class_from_fqn

            # A user's own synthesis writer (e.g. a programmatic teacher for a toy task); it is
            # built with the trainer's config and tokenizer.
            text_source = load_class_from_fqn(text_source_path, "synthesis text source")(self.config, self.tokenizer)
        else:
            text_source = RolloutServerTextSource(
                self.llm_server_manager.get_client(),
                self.tokenizer,
                temperature=synthesis.temperature,
                top_p=synthesis.top_p,
                max_new_tokens=synthesis.max_new_tokens,
            )
        return TrajectoryAugmenter(
            self.tapo_config,
            self.tokenizer,
            response_length=int(self.config.data.max_response_length),
            eos_token_ids=eos_token_ids(self.tokenizer, self.config.actor_rollout_ref.model.path),
            text_source=text_source,
            score_fn=self._score_rows,
            chat_template_kwargs=chat_template_kwargs(self.config),
        )

    def _score_rows(self, rows: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """The run's own reward (verl's reward loop workers) on constructed rows."""
        scored = self.reward_loop_manager.compute_rm_score(rows)
        return scored.batch["rm_scores"], dict(scored.non_tensor_batch)

    # -- the TAPO steps called from fit ------------------------------------------------------------

    def _tapo_augment(self, batch: DataProto, metrics: dict[str, Any]) -> Augmentation | None:
        """Constructed rows for this step, or None (a failed round leaves a GRPO step)."""
        try:
            augmentation = self.augmenter.augment(batch, self.global_steps)
        except Exception as error:  # noqa: BLE001  a failed synthesis round must not end the run
            logger.warning("TAPO: synthesis round of step %d failed, the step stays GRPO: %r", self.global_steps, error)
            print(f"[tapo] WARNING step {self.global_steps}: synthesis round failed ({error!r}); GRPO step")
            traceback.print_exc()
            metrics["tapo/round_failed"] = 1.0
            metrics["tapo/constructed_rows"] = 0.0
            return None
        metrics["tapo/round_failed"] = 0.0
        metrics.update(augmentation.metrics)
        return augmentation

    def _tapo_insert(self, batch: DataProto, augmentation: Augmentation | None) -> DataProto:
        """The batch with the constructed rows, padded to a row count verl can dispatch and split."""
        mark_original_rows(batch)
        parts = [batch]
        if augmentation is not None and augmentation.rows is not None:
            rows = augmentation.rows
            rows.meta_info = dict(batch.meta_info)
            parts.append(rows)
        total = sum(len(part) for part in parts)
        padding = padding_rows_needed(total, self._row_multiple())
        if padding:
            parts.append(build_padding_rows(batch, padding, pad_token_id(self.tokenizer)))
        return DataProto.concat(parts) if len(parts) > 1 else batch

    def _row_multiple(self) -> int:
        """Row counts verl can dispatch and split: `row_multiple` of this run's settings."""
        config = self.config.actor_rollout_ref
        return row_multiple(
            dp_size=self._get_dp_size(self.actor_rollout_wg, "actor"),
            rollout_n=int(config.rollout.n),
            num_mini_batches=self._num_mini_batches(),
            ppo_micro=None if config.actor.use_dynamic_bsz else config.actor.ppo_micro_batch_size_per_gpu,
            log_prob_micro=(
                None if config.rollout.log_prob_use_dynamic_bsz else config.rollout.log_prob_micro_batch_size_per_gpu
            ),
            ref_log_prob_micro=(
                config.ref.log_prob_micro_batch_size_per_gpu
                if self.use_reference_policy and not config.ref.log_prob_use_dynamic_bsz
                else None
            ),
        )

    def _num_mini_batches(self) -> int:
        return max(1, int(self.config.data.train_batch_size) // int(self.config.actor_rollout_ref.actor.ppo_mini_batch_size))

    def _tapo_advantage(self, batch: DataProto, entropys: torch.Tensor) -> torch.Tensor:
        """DAE advantages with lambda x OTS on constructed rows, written into the batch; returns the
        per-token factor of the constructed rows (for the metrics and the dump)."""
        is_constructed = batch.non_tensor_batch[IS_CONSTRUCTED]
        factor = compute_constructed_token_factor(
            batch.batch["old_log_probs"], entropys, batch.batch["response_mask"], is_constructed, self.tapo_config
        )
        advantages, returns = self._dae(batch, factor)
        batch.batch["advantages"] = advantages
        batch.batch["returns"] = returns
        return factor

    def _dae(self, batch: DataProto, constructed_token_factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The `tapo` estimator on the batch, its constructed rows scaled by the given factor."""
        return compute_tapo_advantage(
            token_level_rewards=batch.batch["token_level_rewards"],
            response_mask=batch.batch["response_mask"],
            index=batch.non_tensor_batch["uid"],
            norm_adv_by_std_in_grpo=self.config.algorithm.get("norm_adv_by_std_in_grpo", True),
            config=self.config.algorithm,
            is_constructed=batch.non_tensor_batch[IS_CONSTRUCTED],
            constructed_token_factor=constructed_token_factor,
            tapo_config=self.tapo_config,
        )

    def _tapo_metrics_and_dump(self, batch: DataProto, factor: torch.Tensor | None, augmentation, metrics) -> None:
        """`tapo/` metrics that need the final batch, and the inspection dump of this step."""
        constructed = np.asarray(batch.non_tensor_batch[IS_CONSTRUCTED], dtype=bool)
        padding = np.asarray(batch.non_tensor_batch[IS_PADDING], dtype=bool)
        original = ~constructed & ~padding
        mask = batch.batch["response_mask"].bool()
        tokens = mask.sum(dim=-1)
        metrics["tapo/padding_rows"] = float(padding.sum())
        metrics["tapo/constructed_token_share"] = float(tokens[constructed].sum() / max(int(tokens.sum()), 1))
        advantages = batch.batch["advantages"]
        row_advantage = (advantages * mask).sum(dim=-1) / tokens.clamp(min=1)
        metrics["tapo/original_advantage_mean"] = float(row_advantage[original].mean()) if original.any() else 0.0
        metrics["tapo/constructed_advantage_mean"] = (
            float(row_advantage[constructed].mean()) if constructed.any() else 0.0
        )
        ots = None
        if factor is not None and constructed.any():
            ots = factor / self.tapo_config.advantage.ref_loss_weight
            positions = torch.arange(mask.shape[1]).unsqueeze(0)
            cut = torch.as_tensor(np.asarray(batch.non_tensor_batch[CUT_TOKENS], dtype=np.int64)).unsqueeze(1)
            rows = torch.as_tensor(constructed)
            prefix = mask & (positions < cut) & rows.unsqueeze(1)
            inserted = mask & (positions >= cut) & rows.unsqueeze(1)
            for name, part in (("prefix", prefix), ("inserted", inserted)):
                values = ots[part]
                metrics[f"tapo/ots_weight_mean/{name}"] = float(values.mean()) if values.numel() else 0.0
                metrics[f"tapo/ots_weight_min/{name}"] = float(values.min()) if values.numel() else 0.0
        every = self.tapo_config.dump.every
        if augmentation is None or not every or self.global_steps % every:
            return
        self._write_dump(batch, augmentation, ots)

    def _write_dump(self, batch: DataProto, augmentation: Augmentation, ots: torch.Tensor | None) -> None:
        records = [dict(record) for record in augmentation.records]
        dae = None
        constructed = np.asarray(batch.non_tensor_batch[IS_CONSTRUCTED], dtype=bool)
        if constructed.any():
            # The row's DAE advantage before lambda and OTS: the estimator with a unit factor.
            dae, _ = self._dae(batch, batch.batch["response_mask"].to(torch.float32))
        for row in np.flatnonzero(constructed).tolist():
            record = records[int(batch.non_tensor_batch[ATTEMPT][row])]
            mask = batch.batch["response_mask"][row].bool()
            record["advantage"] = float(dae[row][mask][0]) if mask.any() else 0.0
            record["ots_weights"] = ots[row][mask].tolist() if ots is not None else None
        folder = self.tapo_config.dump.dir or os.path.join(self.config.trainer.default_local_dir, "tapo_dump")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step_{self.global_steps:06d}.jsonl")
        with open(path, "w", encoding="utf-8") as sink:
            for record in records:
                write_json_line(sink, record)
        print(f"[tapo] step {self.global_steps}: {len(records)} synthesis attempts written to {path}")

    def _update_actor(self, batch: DataProto) -> DataProto:
        """verl's actor update with GRPO's number of mini-batches, each a little larger.

        verl's `_update_actor` takes the mini-batch size from `actor.ppo_mini_batch_size` (prompts,
        times `rollout.n` rows). The augmented batch has more rows; `_tapo_insert` padded it to a
        multiple of (number of mini-batches) x lcm(dp size, n), so the size below is whole, and the
        update makes as many optimizer steps per epoch as GRPO would.
        """
        actor = self.config.actor_rollout_ref.actor
        rows_per_mini_batch = len(batch) // self._num_mini_batches()
        configured = actor.ppo_mini_batch_size
        per_prompt = rows_per_mini_batch // int(self.config.actor_rollout_ref.rollout.n)
        if per_prompt == configured:
            return super()._update_actor(batch)
        actor.ppo_mini_batch_size = per_prompt
        try:
            return super()._update_actor(batch)
        finally:
            actor.ppo_mini_batch_size = configured

    # -- verl's loop ------------------------------------------------------------------------------

    def fit(self):
        """verl 0.9.1's `RayPPOTrainer.fit` with the TAPO steps (blocks marked `# TAPO:`)."""
        # TAPO: a run with another estimator is verl's own loop (tapo.enable=false only).
        if str(self.config.algorithm.adv_estimator) != TAPO_ESTIMATOR:
            return super().fit()
        if self._dump_executor._shutdown:
            self._init_dump_executor()

        from verl.utils.tracking import Tracking

        logger_ = Tracking(
            project_name=self.config.trainer.project_name,
            experiment_name=self.config.trainer.experiment_name,
            default_backend=self.config.trainer.logger,
            config=OmegaConf.to_container(self.config, resolve=True),
        )

        self.global_steps = 0
        self._load_checkpoint()
        self.checkpoint_manager.update_weights(self.global_steps)
        current_epoch = self.global_steps // len(self.train_dataloader)
        SkipManager.init(self.config)

        if self.config.trainer.get("val_before_train", True):
            val_metrics = self._validate()
            assert val_metrics, f"{val_metrics=}"
            pprint(f"Initial validation metrics: {val_metrics}")
            logger_.log(data=val_metrics, step=self.global_steps)
            if self.config.trainer.get("val_only", False):
                self._shutdown_dump_executor()
                return

        progress_bar = tqdm(total=self.total_training_steps, initial=self.global_steps, desc="Training Progress")
        self.global_steps += 1
        last_val_metrics = None
        self.max_steps_duration = 0
        SkipManager.set_step(self.global_steps)

        prev_step_profile = False
        curr_step_profile = (
            self.global_steps in self.config.global_profiler.steps
            if self.config.global_profiler.steps is not None
            else False
        )
        next_step_profile = False

        for epoch in range(current_epoch, self.config.trainer.total_epochs):
            for batch_dict in self.train_dataloader:
                if hasattr(self.actor_rollout_wg, "async_calls_finalize_fn_exec"):
                    self.actor_rollout_wg.async_calls_finalize_fn_exec(blocking=False)
                metrics = {}
                timing_raw = {}

                with marked_timer("start_profile", timing_raw):
                    self._start_profiling(
                        not prev_step_profile and curr_step_profile
                        if self.config.global_profiler.profile_continuous_steps
                        else curr_step_profile
                    )
                batch: DataProto = DataProto.from_single_dict(batch_dict)
                batch.meta_info["temperature"] = self.config.actor_rollout_ref.rollout.temperature
                batch.non_tensor_batch["uid"] = np.array(
                    [str(uuid.uuid4()) for _ in range(len(batch.batch))], dtype=object
                )
                gen_batch = self._get_gen_batch(batch)
                gen_batch.meta_info["global_steps"] = self.global_steps
                gen_batch_output = gen_batch.repeat(repeat_times=self.config.actor_rollout_ref.rollout.n, interleave=True)
                # TAPO: the chats of the rows, for the synthesis prompts (the rollout output drops them).
                raw_prompts = gen_batch_output.non_tensor_batch["raw_prompt"]

                is_last_step = self.global_steps >= self.total_training_steps
                with marked_timer("step", timing_raw):
                    with marked_timer("gen", timing_raw, color="red"):
                        if curr_step_profile:
                            self.llm_server_manager.start_profile()
                        gen_output = self.async_rollout_manager.generate_sequences(gen_batch_output)
                        # TAPO: with TAPO on, the replicas stay awake for the synthesis round below.
                        if curr_step_profile:
                            self.llm_server_manager.stop_profile()
                        timing_raw.update(gen_output.meta_info["timing"])
                        gen_output.meta_info.pop("timing", None)

                    batch = batch.repeat(repeat_times=self.config.actor_rollout_ref.rollout.n, interleave=True)
                    batch = batch.union(gen_output)
                    if "response_mask" not in batch.batch.keys():
                        batch.batch["response_mask"] = compute_response_mask(batch)
                    if self.augmenter is None:
                        self.checkpoint_manager.sleep_replicas()
                    if self.use_rm and "rm_scores" not in batch.batch.keys():
                        with marked_timer("reward", timing_raw, color="yellow"):
                            batch = batch.union(self._compute_reward_colocate(batch))

                    # TAPO: synthesis needs the rewards and this step's weights; the replicas sleep after it.
                    augmentation = None
                    if self.augmenter is not None:
                        with marked_timer("tapo_synthesis", timing_raw, color="purple"):
                            if "raw_prompt" not in batch.non_tensor_batch:
                                batch.non_tensor_batch["raw_prompt"] = raw_prompts
                            augmentation = self._tapo_augment(batch, metrics)
                        self.checkpoint_manager.sleep_replicas()
                    batch = self._tapo_insert(batch, augmentation)

                    if self.config.trainer.balance_batch:
                        self._balance_batch(batch, metrics=metrics)

                    batch.meta_info["global_token_num"] = torch.sum(batch.batch["attention_mask"], dim=-1).tolist()
                    images_seqlens_all = []
                    for multi_modal_input in batch.non_tensor_batch.get("multi_modal_inputs", []):
                        if "image_grid_thw" not in multi_modal_input.keys():
                            continue
                        images_seqlens_all.extend(multi_modal_input["images_seqlens"].tolist())
                    batch.meta_info["images_seqlens"] = images_seqlens_all
                    with marked_timer("reward", timing_raw, color="yellow"):
                        reward_tensor, reward_extra_infos_dict = extract_reward(batch)

                    rollout_corr_config = self.config.algorithm.get("rollout_correction", None)
                    with marked_timer("old_log_prob", timing_raw, color="blue"):
                        old_log_prob, old_log_prob_mfu = self._compute_old_log_prob(batch)
                        entropys = old_log_prob.batch["entropys"]
                        response_masks = batch.batch["response_mask"]
                        actor_config = self.config.actor_rollout_ref.actor
                        # TAPO: the policy's entropy is that of the original rollouts, as in GRPO.
                        original = original_rows(batch)
                        entropy_agg = agg_loss(
                            loss_mat=entropys[original],
                            loss_mask=response_masks[original],
                            loss_agg_mode=actor_config.loss_agg_mode,
                            loss_scale_factor=actor_config.loss_scale_factor,
                        )
                        metrics.update(
                            {"actor/entropy": entropy_agg.detach().item(), "perf/mfu/actor_infer": old_log_prob_mfu}
                        )
                        # TAPO: the entropies stay for OTS (verl drops them here).
                        old_log_prob.batch.pop("entropys")
                        batch = batch.union(old_log_prob)
                        if "rollout_log_probs" in batch.batch.keys():
                            # TAPO: rows the rollout did not sample get importance ratio 1 and are
                            # left out of the debug metrics.
                            added = ~original
                            batch.batch["rollout_log_probs"][added] = batch.batch["old_log_probs"][added]
                            from verl.utils.debug.metrics import calculate_debug_metrics

                            metrics.update(calculate_debug_metrics(batch.select_idxs(original)))

                    if self.use_reference_policy:
                        with marked_timer("ref", timing_raw, color="olive"):
                            batch = batch.union(self._compute_ref_log_prob(batch))

                    with marked_timer("adv", timing_raw, color="brown"):
                        batch.batch["token_level_scores"] = reward_tensor
                        if reward_extra_infos_dict:
                            batch.non_tensor_batch.update({k: np.array(v) for k, v in reward_extra_infos_dict.items()})
                        if self.config.algorithm.use_kl_in_reward:
                            batch, kl_metrics = apply_kl_penalty(
                                batch, kl_ctrl=self.kl_ctrl_in_reward, kl_penalty=self.config.algorithm.kl_penalty
                            )
                            metrics.update(kl_metrics)
                        else:
                            batch.batch["token_level_rewards"] = batch.batch["token_level_scores"]

                        if rollout_corr_config is not None and "rollout_log_probs" in batch.batch:
                            from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch

                            batch, _ = compute_rollout_correction_and_add_to_batch(batch, rollout_corr_config)
                            # TAPO: the metrics of the original rollouts only.
                            _, is_metrics = compute_rollout_correction_and_add_to_batch(
                                batch.select_idxs(original_rows(batch)), rollout_corr_config
                            )
                            metrics.update(is_metrics)

                        # TAPO: DAE + lambda x OTS when TAPO runs; otherwise verl's call, i.e. GRPO.
                        factor = None
                        if self.augmenter is not None:
                            factor = self._tapo_advantage(batch, entropys)
                        else:
                            batch = compute_advantage(
                                batch,
                                adv_estimator=self.config.algorithm.adv_estimator,
                                gamma=self.config.algorithm.gamma,
                                lam=self.config.algorithm.lam,
                                num_repeat=self.config.actor_rollout_ref.rollout.n,
                                norm_adv_by_std_in_grpo=self.config.algorithm.get("norm_adv_by_std_in_grpo", True),
                                config=self.config.algorithm,
                            )
                        del entropys

                    if self.config.trainer.critic_warmup > self.global_steps:
                        self.checkpoint_manager.update_weights(self.global_steps)
                    else:
                        with marked_timer("update_actor", timing_raw, color="red"):
                            actor_output = self._update_actor(batch)
                        esi_close_to_expiration = should_save_ckpt_esi(
                            max_steps_duration=self.max_steps_duration,
                            redundant_time=self.config.trainer.esi_redundant_time,
                        )
                        if self.config.trainer.save_freq > 0 and (
                            is_last_step
                            or self.global_steps % self.config.trainer.save_freq == 0
                            or esi_close_to_expiration
                        ):
                            if esi_close_to_expiration:
                                print("Force saving checkpoint: ESI instance expiration approaching.")
                            with marked_timer("save_checkpoint", timing_raw, color="green"):
                                self._save_checkpoint()
                        with marked_timer("update_weights", timing_raw, color="red"):
                            self.checkpoint_manager.update_weights(self.global_steps)
                        metrics.update(reduce_metrics(actor_output.meta_info["metrics"]))

                    # TAPO: metrics of the constructed rows and the inspection dump.
                    if self.augmenter is not None:
                        self._tapo_metrics_and_dump(batch, factor, augmentation, metrics)

                    # TAPO: verl's per-row logs and metrics describe the original rollouts.
                    original_batch = batch.select_idxs(original_rows(batch))
                    rollout_data_dir = self.config.trainer.get("rollout_data_dir", None)
                    if rollout_data_dir:
                        self._log_rollout_data(original_batch, reward_extra_infos_dict_of(original_batch, reward_extra_infos_dict), timing_raw, rollout_data_dir)

                if self.config.trainer.test_freq > 0 and (
                    is_last_step or self.global_steps % self.config.trainer.test_freq == 0
                ):
                    with marked_timer("testing", timing_raw, color="green"):
                        val_metrics: dict = self._validate()
                        if is_last_step:
                            last_val_metrics = val_metrics
                    metrics.update(val_metrics)

                with marked_timer("stop_profile", timing_raw):
                    next_step_profile = (
                        self.global_steps + 1 in self.config.global_profiler.steps
                        if self.config.global_profiler.steps is not None
                        else False
                    )
                    profiled_steps = self.config.global_profiler.steps
                    run_finish_command = bool(
                        curr_step_profile
                        and profiled_steps
                        and (self.global_steps == max(profiled_steps) or is_last_step)
                    )
                    self._stop_profiling(
                        curr_step_profile and not next_step_profile
                        if self.config.global_profiler.profile_continuous_steps
                        else curr_step_profile,
                        run_command=run_finish_command,
                    )
                    prev_step_profile = curr_step_profile
                    curr_step_profile = next_step_profile

                steps_duration = timing_raw["step"]
                self.max_steps_duration = max(self.max_steps_duration, steps_duration)
                metrics.update({"training/global_step": self.global_steps, "training/epoch": epoch})
                metrics.update(compute_data_metrics(batch=original_batch, use_critic=self.use_critic))
                metrics.update(compute_timing_metrics(batch=original_batch, timing_raw=timing_raw))
                n_gpus = self.resource_pool_manager.get_n_gpus()
                metrics.update(compute_throughout_metrics(batch=batch, timing_raw=timing_raw, n_gpus=n_gpus))
                gradient_norm = metrics.get("actor/grad_norm", None)
                metrics.update(compute_variance_proxy_metrics(batch=original_batch, gradient_norm=gradient_norm))
                metrics.update(
                    compute_spec_decode_metrics(
                        batch.non_tensor_batch.get("spec_num_draft_tokens", None),
                        batch.non_tensor_batch.get("spec_num_accepted_tokens", None),
                        batch.non_tensor_batch.get("spec_num_verify_steps", None),
                    )
                )
                logger_.log(data=metrics, step=self.global_steps)

                progress_bar.update(1)
                self.global_steps += 1
                SkipManager.set_step(self.global_steps)

                if is_last_step:
                    if hasattr(self.actor_rollout_wg, "async_calls_finalize_fn_exec"):
                        self.actor_rollout_wg.async_calls_finalize_fn_exec(blocking=True)
                    self._shutdown_dump_executor()
                    pprint(f"Final validation metrics: {last_val_metrics}")
                    progress_bar.close()
                    return

                if hasattr(self.train_dataset, "on_batch_end"):
                    self.train_dataset.on_batch_end(batch=original_batch)

        self._shutdown_dump_executor()


def original_rows(batch: DataProto) -> np.ndarray:
    """Rows the rollout sampled (neither constructed nor padding); all rows without TAPO columns."""
    if IS_CONSTRUCTED not in batch.non_tensor_batch:
        return np.ones(len(batch), dtype=bool)
    return ~np.asarray(batch.non_tensor_batch[IS_CONSTRUCTED], dtype=bool) & ~np.asarray(
        batch.non_tensor_batch[IS_PADDING], dtype=bool
    )


def reward_extra_infos_dict_of(batch: DataProto, reward_extra_infos_dict: dict) -> dict:
    """The reward's extra-info columns, taken from `batch` (after the rows were selected)."""
    return {key: batch.non_tensor_batch[key] for key in reward_extra_infos_dict if key in batch.non_tensor_batch}


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
    ref_log_prob_micro: int | None = None,
) -> int:
    """The smallest row count step of a TAPO batch that verl 0.9.1 can run.

    Dispatch splits the batch evenly over the data-parallel ranks; the update makes GRPO's number
    of mini-batches, each a whole number of `rollout.n` rows split evenly over the ranks; without
    dynamic batch sizes, every rank's share (log-prob passes) and every rank's mini-batch (update)
    must also split into whole micro-batches. With dynamic batch sizes (the GPU scripts) the step
    is num_mini_batches x lcm(dp_size, rollout_n).
    """
    multiple = num_mini_batches * math.lcm(dp_size, rollout_n)
    if ppo_micro:
        multiple = math.lcm(multiple, dp_size * num_mini_batches * int(ppo_micro))
    for micro in (log_prob_micro, ref_log_prob_micro):
        if micro:
            multiple = math.lcm(multiple, dp_size * int(micro))
    return multiple


def padding_rows_needed(rows: int, multiple: int) -> int:
    """How many padding rows bring `rows` to a multiple of `multiple`."""
    return -rows % multiple


def pad_token_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


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
