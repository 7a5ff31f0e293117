"""Rows in the training batch: the TAPO columns, constructed rows and padding rows in verl's layout.

`constructed_rows` turns a step's spliced trajectories (`synthesis_plan`'s records) into rows of
the rollout batch, under the wrong answer's prompt, scored with the run's reward; the trainer
inserts them (`recipe_tapo.trainer`), with zero-loss padding rows (`build_padding_rows`) where verl
needs a divisible row count. Every row of the training batch carries the TAPO columns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.utils.model import compute_position_id_with_mask

from recipe_tapo.advantage import constructed_row_uid
from recipe_tapo.config import TapoConfig
from recipe_tapo.workers.synthesis_plan import DROPPED_INCORRECT, OK, row_correctness

# Non-tensor columns the TAPO trainer carries on every row of the training batch. They travel with
# the rows when verl reorders the batch (`balance_batch`), unlike row positions.
IS_CONSTRUCTED = "tapo_is_constructed"  # bool: a constructed trajectory
IS_PADDING = "tapo_is_padding"  # bool: a zero-loss row that only makes the row count divisible
ATTEMPT = "tapo_attempt"  # int: index of the synthesis attempt of this step (-1 = not constructed)
CUT_TOKENS = "tapo_cut_tokens"  # int: kept prefix of y- in tokens (0 = not constructed)
# int: the row's position in the rollout batch; for a constructed row, its wrong answer's (-1 = padding)
SOURCE_ROW = "tapo_source_row"
TAPO_COLUMNS = (IS_CONSTRUCTED, IS_PADDING, ATTEMPT, CUT_TOKENS, SOURCE_ROW)

# Tensor keys a constructed row is built with. Other keys of the batch are per-prompt (e.g. the
# dataset's `dummy_tensor`) and are copied from the source row (the planner refuses the keys that
# describe sampled tokens, `synthesis_plan.TOKEN_LEVEL_KEYS_REFUSED`).
ROW_KEYS = frozenset(
    {"prompts", "responses", "response_mask", "input_ids", "attention_mask", "position_ids", "rollout_log_probs", "rm_scores"}
)

# The run's reward on rows in the batch layout: (rm_scores (n, R), reward extra-info arrays).
ScoreFn = Callable[[DataProto], tuple[torch.Tensor, dict[str, np.ndarray]]]


def constructed_rows(
    batch: DataProto,
    records: list[dict[str, Any]],
    score_fn: ScoreFn,
    config: TapoConfig,
    pad_token_id: int,
) -> DataProto | None:
    """The spliced trajectories of `records` as rows of `batch`, scored; None when there are none.

    `batch` is the step's rollout batch in the order the records' `wrong_row` refers to. Each row
    takes its wrong answer's prompt and non-tensor columns, the TAPO columns (`ATTEMPT` = the
    record's index) and, under DAE, the uid that carries its G_ref (`constructed_row_uid`). Scores
    and `acc` go into the records; with `scoring.keep=correct_only` wrong ones are dropped
    (status DROPPED_INCORRECT).
    """
    spliced = [index for index, record in enumerate(records) if record["status"] == OK]
    if not spliced:
        return None
    source_rows = [records[index]["wrong_row"] for index in spliced]
    rows = build_constructed_rows(batch, source_rows, [records[index]["token_ids"] for index in spliced], pad_token_id)
    rows.non_tensor_batch[ATTEMPT] = np.array(spliced, dtype=np.int64)
    rows.non_tensor_batch[CUT_TOKENS] = np.array([records[index]["cut_tokens"] for index in spliced], dtype=np.int64)
    rows.non_tensor_batch[SOURCE_ROW] = np.array(source_rows, dtype=np.int64)
    rows.non_tensor_batch["uid"] = np.array(
        [constructed_row_uid(records[index]["uid"], config.advantage) for index in spliced], dtype=object
    )
    rm_scores, extra_infos = score_fn(rows)
    rows.batch["rm_scores"] = rm_scores.to(rows.batch["responses"].device, torch.float32)
    for key, values in extra_infos.items():
        if key in rows.non_tensor_batch:  # the reward's extra-info columns the batch already has
            rows.non_tensor_batch[key] = np.asarray(values)
    rewards = rm_scores.sum(dim=-1)
    correct = row_correctness(rows, rewards)
    for position, index in enumerate(spliced):
        records[index]["reward"] = float(rewards[position])
        records[index]["acc"] = bool(correct[position])
    if config.scoring.keep == "correct_only":
        for position, index in enumerate(spliced):
            if not correct[position]:
                records[index]["status"] = DROPPED_INCORRECT
        if not correct.any():
            return None
        rows = rows.select_idxs(correct)
    return rows



def build_constructed_rows(
    batch: DataProto, source_rows: Sequence[int], responses: Sequence[Sequence[int]], pad_token_id: int
) -> DataProto:
    """Rows with the prompts of `batch[source_rows]` and the given responses, in the batch layout.

    Every non-tensor column is copied from the source row (uid, data source, ground truth, ...) and
    the TAPO columns are set (`IS_CONSTRUCTED` true). Responses are right-padded with
    `pad_token_id` to the batch's response width; `rollout_log_probs`, if the batch has them, are
    0 (the trainer gives constructed rows importance weight 1); `rm_scores` are 0 until scored.
    Position ids are verl's `compute_position_id_with_mask`.
    """
    index = torch.as_tensor(list(source_rows), dtype=torch.long)
    prompts = batch.batch["prompts"][index]
    prompt_mask = batch.batch["attention_mask"][index, : prompts.shape[1]]
    width = batch.batch["responses"].shape[1]
    response_tensor = torch.full((len(index), width), pad_token_id, dtype=batch.batch["responses"].dtype)
    response_mask = torch.zeros((len(index), width), dtype=batch.batch["response_mask"].dtype)
    for position, ids in enumerate(responses):
        if len(ids) > width:
            raise ValueError(f"constructed response of {len(ids)} tokens exceeds the batch's response width {width}")
        response_tensor[position, : len(ids)] = torch.as_tensor(list(ids), dtype=response_tensor.dtype)
        response_mask[position, : len(ids)] = 1
    attention_mask = torch.cat([prompt_mask, response_mask.to(prompt_mask.dtype)], dim=1)
    if batch.batch["position_ids"].dim() != 2:
        raise ValueError("constructed rows support text-only position ids (batch, seq), not multi-modal rope")
    tensors = {
        "prompts": prompts,
        "responses": response_tensor,
        "response_mask": response_mask,
        "input_ids": torch.cat([prompts, response_tensor], dim=1),
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask).to(batch.batch["position_ids"].dtype),
    }
    for key in ("rollout_log_probs", "rm_scores"):
        if key in batch.batch.keys():
            tensors[key] = torch.zeros((len(index), width), dtype=batch.batch[key].dtype)
    for key in set(batch.batch.keys()) - ROW_KEYS:
        tensors[key] = batch.batch[key][index].clone()
    non_tensor = {key: values[index.numpy()].copy() for key, values in batch.non_tensor_batch.items()}
    non_tensor.update(_tapo_columns(len(index), constructed=True))
    non_tensor[SOURCE_ROW] = index.numpy().astype(np.int64)
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensor, meta_info=dict(batch.meta_info))


def mark_original_rows(batch: DataProto) -> None:
    """Give every row of a rollout batch the TAPO columns of an original (not constructed) row."""
    batch.non_tensor_batch.update(_tapo_columns(len(batch)))
    batch.non_tensor_batch[SOURCE_ROW] = np.arange(len(batch), dtype=np.int64)


def build_padding_rows(batch: DataProto, count: int, pad_token_id: int) -> DataProto:
    """`count` zero-loss rows that only make the batch's row count divisible by what verl needs.

    Each is the first row's prompt cut to its last token and a one-token response under response
    mask 0 (reward 0, its own uid), so it costs two tokens of compute where padding is removed and
    never takes part in the loss, the advantages of other rows or a metric.
    """
    index = torch.zeros(count, dtype=torch.long)
    prompt_width = batch.batch["prompts"].shape[1]
    tensors = {}
    for key, values in batch.batch.items():
        tensors[key] = torch.zeros((count, *values.shape[1:]), dtype=values.dtype)
    tensors["prompts"][:, -1] = batch.batch["prompts"][index, -1]
    tensors["responses"][:] = pad_token_id
    tensors["input_ids"] = torch.cat([tensors["prompts"], tensors["responses"]], dim=1)
    tensors["attention_mask"][:, prompt_width - 1 : prompt_width + 1] = 1
    tensors["position_ids"] = compute_position_id_with_mask(tensors["attention_mask"]).to(
        batch.batch["position_ids"].dtype
    )
    non_tensor = {key: values[index.numpy()].copy() for key, values in batch.non_tensor_batch.items()}
    non_tensor["uid"] = np.array([f"tapo-padding-{uuid.uuid4()}" for _ in range(count)], dtype=object)
    non_tensor.update(_tapo_columns(count, padding=True))
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensor, meta_info=dict(batch.meta_info))


def _tapo_columns(rows: int, constructed: bool = False, padding: bool = False) -> dict[str, np.ndarray]:
    return {
        IS_CONSTRUCTED: np.full(rows, constructed, dtype=bool),
        IS_PADDING: np.full(rows, padding, dtype=bool),
        ATTEMPT: np.full(rows, -1, dtype=np.int64),
        CUT_TOKENS: np.zeros(rows, dtype=np.int64),
        SOURCE_ROW: np.full(rows, -1, dtype=np.int64),
    }



def pad_token_id(tokenizer: Any) -> int:
    """The id constructed and padding rows are padded with: the tokenizer's pad id, else its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
