"""The data-augmentation worker: a rollout batch in, constructed trajectories out (TAPO_METHOD.md 2, 9).

One entry point, `TrajectoryAugmenter.augment(batch, step)`: DCS picks (wrong, right) pairs from the
scored rollout rows -> one synthesis prompt per pair -> the synthesis text source (the run's own
rollout servers; `RolloutServerTextSource`) -> parse -> splice -> score with the run's reward ->
rows in the batch's exact layout, under the original prompt and the source group's `uid`.

The algorithm lives in `recipe_tapo.{selection,synthesis,splicing}`; this module only moves data
between them and verl's `DataProto`. It imports no trainer; the trainer owns the rollout servers
and the reward and hands them in (`text_source`, `score_fn`).

Rows are read as verl holds them after the agent loop: response ids under `response_mask`, the
trailing EOS stripped (any of the model's EOS ids), decoded once with special tokens kept (the text
the splice cuts), and once without them for the synthesis prompt, which never carries a special
token taken from a response.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.utils.model import compute_position_id_with_mask

from recipe_tapo.config import TapoConfig
from recipe_tapo.selection import CandidatePair, select_candidate_pairs
from recipe_tapo.splicing import SpliceFailure, splice_trajectory
from recipe_tapo.synthesis import SynthesisFailure, build_synthesis_prompt, parse_synthesis_output

logger = logging.getLogger(__name__)

# Non-tensor columns the TAPO trainer carries on every row of the training batch. They travel with
# the rows when verl reorders the batch (`balance_batch`), unlike row positions.
IS_CONSTRUCTED = "tapo_is_constructed"  # bool: a constructed trajectory
IS_PADDING = "tapo_is_padding"  # bool: a zero-loss row that only makes the row count divisible
ATTEMPT = "tapo_attempt"  # int: index of the synthesis attempt of this step (-1 = not constructed)
CUT_TOKENS = "tapo_cut_tokens"  # int: kept prefix of y- in tokens (0 = not constructed)
TAPO_COLUMNS = (IS_CONSTRUCTED, IS_PADDING, ATTEMPT, CUT_TOKENS)

# Tensor keys a constructed row is built with. Other keys of the batch are per-prompt (e.g. the
# dataset's `dummy_tensor`) and are copied from the source row, except these, which describe the
# sampled tokens themselves and have no meaning for a constructed row: such a batch is refused.
ROW_KEYS = frozenset(
    {"prompts", "responses", "response_mask", "input_ids", "attention_mask", "position_ids", "rollout_log_probs", "rm_scores"}
)
TOKEN_LEVEL_KEYS_REFUSED = frozenset({"routed_experts", "teacher_logprobs", "teacher_ids"})

# Statuses of an attempt besides the parse and splice failure reasons.
OK = "ok"
REQUEST_FAILED = "request_failed"  # the text source gave no text for this request
DROPPED_INCORRECT = "dropped_incorrect"  # scoring.keep=correct_only and the construction scored wrong
ERROR = "error"  # an unexpected exception on this attempt (logged); the others go on
ATTEMPT_STATUSES = (
    OK,
    REQUEST_FAILED,
    DROPPED_INCORRECT,
    ERROR,
    *(reason.value for reason in SynthesisFailure),
    *(reason.value for reason in SpliceFailure),
)


@dataclass(frozen=True)
class SynthesisRequest:
    """One synthesis prompt, as the text source receives it."""

    attempt: int
    uid: str
    question: str
    wrong: str  # y- as shown in the prompt (special tokens removed)
    right: str
    mode: str
    messages: list[dict[str, str]]
    prompt_ids: list[int]


@dataclass(frozen=True)
class GeneratedText:
    text: str
    num_tokens: int


# A text source answers every request, in order: a GeneratedText, or None for a failed request.
# It may raise (or time out) for the whole round; the trainer then keeps the step a GRPO step.
SynthesisTextSource = Callable[[list[SynthesisRequest], float], list["GeneratedText | None"]]
# The run's reward on rows in the batch layout: (rm_scores (n, R), reward extra-info arrays).
ScoreFn = Callable[[DataProto], tuple[torch.Tensor, dict[str, np.ndarray]]]


@dataclass
class Augmentation:
    """What one step's augmentation produced.

    `rows`: the constructed rows in the batch's layout (None when there are none), carrying the
    TAPO columns; `records`: one dict per synthesis attempt (the inspection dump's fields known at
    this point; the trainer adds `advantage` and `ots_weights`); `metrics`: `tapo/...` scalars.
    """

    rows: DataProto | None
    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


class TrajectoryAugmenter:
    """Builds the constructed trajectories of one training step (see the module docstring).

    Args:
        config: the `tapo:` section.
        tokenizer: the policy's tokenizer.
        response_length: the batch's response width; no constructed response is longer (EOS
            included) unless `tapo.splicing.max_response_length` is smaller.
        eos_token_ids: every id that ends a rollout (tokenizer and generation config).
        text_source: writes the synthesis outputs; `RolloutServerTextSource` in training.
        score_fn: the run's reward on constructed rows.
        chat_template_kwargs: as the rollout renders prompts (`data.apply_chat_template_kwargs`).
    """

    def __init__(
        self,
        config: TapoConfig,
        tokenizer: Any,
        response_length: int,
        eos_token_ids: Sequence[int],
        text_source: SynthesisTextSource,
        score_fn: ScoreFn,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not eos_token_ids:
            raise ValueError("the TAPO augmenter needs the model's EOS token ids")
        self.config = config
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(int(token) for token in eos_token_ids)
        self.text_source = text_source
        self.score_fn = score_fn
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.response_length = response_length
        self.max_response_tokens = min(response_length, config.splicing.max_response_length or response_length)
        self.splicing_config = _with_max_length(config.splicing, self.max_response_tokens)
        self.special_token_texts = sorted(set(tokenizer.all_special_tokens), key=len, reverse=True)

    def augment(self, batch: DataProto, step: int) -> Augmentation:
        """Constructed rows for `batch`, the scored rollout rows of training step `step`.

        `batch` needs the tensors of `ROW_KEYS` (`rm_scores` holding each row's reward), the
        non-tensor `uid` and `raw_prompt` columns, and whatever the reward reads (`data_source`,
        `reward_model`, `extra_info`). A row is correct when its reward extra info `acc` says so,
        else when its reward is > 0. Every failure of one attempt is counted by reason; exceptions
        of the text source or the reward (a failed round) propagate to the caller.
        """
        started = time.perf_counter()
        refused = sorted(set(batch.batch.keys()) & TOKEN_LEVEL_KEYS_REFUSED)
        if refused:
            raise ValueError(f"the TAPO augmenter cannot build constructed rows for batch keys {refused}")
        uids = batch.non_tensor_batch["uid"]
        rewards = batch.batch["rm_scores"].sum(dim=-1)
        correct = _correctness(batch, rewards)
        pairs = select_candidate_pairs(uids, correct, self.config.selection, seed=self.config.selection.seed + step)
        statuses: Counter[str] = Counter()
        records: list[dict[str, Any]] = []
        requests: list[SynthesisRequest] = []
        # Only the rows of a pair are decoded (a handful of a 1024-row batch).
        texts = {row: self._row_texts(batch, row) for pair in pairs for row in (pair.wrong_row, pair.right_row)}
        rows_by_uid: dict[Any, list[int]] = {}
        for row, uid in enumerate(uids):
            rows_by_uid.setdefault(uid, []).append(row)
        for attempt, pair in enumerate(pairs):
            records.append(self._new_record(batch, pair, step, texts, rewards, rows_by_uid[pair.group_id]))
            request = self._request(batch, pair, attempt, texts)
            if isinstance(request, str):
                records[-1]["status"] = request
            else:
                requests.append(request)

        synthesis_started = time.perf_counter()
        generated = self.text_source(requests, self.config.synthesis.timeout_s) if requests else []
        synthesis_seconds = time.perf_counter() - synthesis_started
        if len(generated) != len(requests):
            raise RuntimeError(f"the synthesis text source answered {len(generated)} of {len(requests)} requests")

        spliced: list[tuple[int, tuple[int, ...], int]] = []  # (attempt, response ids, cut tokens)
        for request, output in zip(requests, generated, strict=True):
            record = records[request.attempt]
            try:
                self._splice(request, output, texts[pairs[request.attempt].wrong_row], record)
            except Exception:  # noqa: BLE001  one bad sample never ends the round
                logger.exception("TAPO: synthesis attempt %d failed unexpectedly", request.attempt)
                record["status"] = ERROR
            if record["status"] == OK:
                spliced.append((request.attempt, tuple(record["token_ids"]), record["cut_tokens"]))

        rows = None
        if spliced:
            source_rows = [pairs[attempt].wrong_row for attempt, _, _ in spliced]
            rows = build_constructed_rows(
                batch,
                source_rows,
                [ids for _, ids, _ in spliced],
                pad_token_id=_pad_token_id(self.tokenizer),
            )
            rows.non_tensor_batch[ATTEMPT] = np.array([attempt for attempt, _, _ in spliced], dtype=np.int64)
            rows.non_tensor_batch[CUT_TOKENS] = np.array([cut for _, _, cut in spliced], dtype=np.int64)
            rows = self._score(rows, records)

        for record in records:
            statuses[record["status"]] += 1
        metrics = self._metrics(batch, uids, correct, pairs, requests, generated, records, statuses)
        metrics["tapo/synthesis_seconds"] = synthesis_seconds
        metrics["tapo/augment_seconds"] = time.perf_counter() - started
        return Augmentation(rows=rows, records=records, metrics=metrics)

    # -- reading rows ---------------------------------------------------------------------------

    def _row_texts(self, batch: DataProto, row: int) -> dict[str, Any]:
        ids = response_ids(batch, row, self.eos_token_ids)
        return {
            "ids": ids,
            "text": self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "prompt_text": self._without_special_tokens(
                self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            ),
            "eos": _ending_eos(batch, row, self.eos_token_ids),
        }

    def _without_special_tokens(self, text: str) -> str:
        # Text that spells a special token (written by the model in ordinary tokens) would become
        # that token when the synthesis prompt is tokenised.
        for special in self.special_token_texts:
            text = text.replace(special, "")
        return text

    def _new_record(self, batch, pair: CandidatePair, step: int, texts, rewards, group: list[int]) -> dict[str, Any]:
        return {
            "step": step,
            "uid": str(pair.group_id),
            "status": OK,
            # Positions in the rollout batch as generated (verl's order, before balancing).
            "wrong_row": pair.wrong_row,
            "right_row": pair.right_row,
            "question": question_text(batch.non_tensor_batch["raw_prompt"][pair.wrong_row]),
            "wrong": texts[pair.wrong_row]["text"],
            "wrong_ids": list(texts[pair.wrong_row]["ids"]),
            "right": texts[pair.right_row]["text"],
            "synthesis": None,
            "analysis": None,
            "cut_tokens": None,
            "prefix_fraction": None,
            "trajectory": None,
            "token_ids": None,
            "reward": None,
            "acc": None,
            "orig_rewards": [float(rewards[row]) for row in group],
            "advantage": None,
            "ots_weights": None,
            "synthesis_tokens": 0,
        }

    def _request(self, batch, pair: CandidatePair, attempt: int, texts) -> SynthesisRequest | str:
        question = self._without_special_tokens(question_text(batch.non_tensor_batch["raw_prompt"][pair.wrong_row]))
        wrong, right = texts[pair.wrong_row]["prompt_text"], texts[pair.right_row]["prompt_text"]
        prompt = build_synthesis_prompt(
            question, wrong, right, self.tokenizer, self.config.synthesis, self.chat_template_kwargs
        )
        if not prompt.ok:
            return prompt.failure.value
        prompt_ids = self.tokenizer.apply_chat_template(
            prompt.messages, add_generation_prompt=True, tokenize=True, **self.chat_template_kwargs
        )
        if hasattr(prompt_ids, "keys"):  # transformers 5 returns a BatchEncoding
            prompt_ids = prompt_ids["input_ids"]
        return SynthesisRequest(
            attempt=attempt,
            uid=str(pair.group_id),
            question=question,
            wrong=wrong,
            right=right,
            mode=self.config.synthesis.mode,
            messages=prompt.messages,
            prompt_ids=list(prompt_ids),
        )

    # -- parse, splice, score -------------------------------------------------------------------

    def _splice(self, request: SynthesisRequest, output: GeneratedText | None, wrong: dict, record: dict) -> None:
        if output is None:
            record["status"] = REQUEST_FAILED
            return
        record["synthesis"] = output.text
        record["synthesis_tokens"] = output.num_tokens
        parsed = parse_synthesis_output(output.text, request.mode)
        if not parsed.ok:
            record["status"] = parsed.failure.value
            return
        record["analysis"] = parsed.analysis
        eos = wrong["eos"] if wrong["eos"] is not None else self.eos_token_ids[0]
        spliced = splice_trajectory(
            wrong["text"],
            list(wrong["ids"]),
            parsed,
            self.tokenizer,
            self.splicing_config,
            eos,
            prefix_end=self.config.synthesis.prefix_end,
        )
        record.update(
            cut_tokens=spliced.cut_tokens,
            prefix_fraction=spliced.prefix_fraction,
            trajectory=spliced.text,
            token_ids=list(spliced.token_ids) if spliced.ok else None,
            status=OK if spliced.ok else spliced.failure.value,
        )

    def _score(self, rows: DataProto, records: list[dict[str, Any]]) -> DataProto | None:
        rm_scores, extra_infos = self.score_fn(rows)
        rows.batch["rm_scores"] = rm_scores.to(rows.batch["responses"].device, torch.float32)
        for key, values in extra_infos.items():
            if key in rows.non_tensor_batch:  # the reward's extra-info columns the batch already has
                rows.non_tensor_batch[key] = np.asarray(values)
        rewards = rm_scores.sum(dim=-1)
        correct = _correctness(rows, rewards)
        for position, attempt in enumerate(rows.non_tensor_batch[ATTEMPT].tolist()):
            records[attempt]["reward"] = float(rewards[position])
            records[attempt]["acc"] = bool(correct[position])
        if self.config.scoring.keep == "correct_only":
            for position, attempt in enumerate(rows.non_tensor_batch[ATTEMPT].tolist()):
                if not correct[position]:
                    records[attempt]["status"] = DROPPED_INCORRECT
            if not correct.any():
                return None
            rows = rows.select_idxs(correct)
        return rows

    def _metrics(self, batch, uids, correct, pairs, requests, generated, records, statuses) -> dict[str, float]:
        groups = {}
        for uid, is_correct in zip(uids, correct, strict=True):
            right, wrong = groups.get(uid, (0, 0))
            groups[uid] = (right + int(is_correct), wrong + int(not is_correct))
        selection = self.config.selection
        mixed = sum(1 for right, wrong in groups.values() if right and wrong)
        eligible = sum(1 for right, wrong in groups.values() if right >= selection.n_pos and wrong >= selection.n_neg)
        answered = [output for output in generated if output is not None]
        parse_failures = {reason.value for reason in SynthesisFailure} - {SynthesisFailure.PROMPT_TOO_LONG.value}
        splice_failures = {reason.value for reason in SpliceFailure}
        parsed = len(answered) - sum(statuses[reason] for reason in parse_failures)
        spliced = [record for record in records if record["token_ids"] is not None]
        inserted = [record for record in records if record["status"] == OK]
        metrics = {
            "tapo/groups": float(len(groups)),
            "tapo/mixed_groups": float(mixed),
            "tapo/eligible_groups": float(eligible),
            "tapo/pairs": float(len(pairs)),
            "tapo/synthesis_requests": float(len(requests)),
            "tapo/synthesis_answered": float(len(answered)),
            "tapo/parse_rate": parsed / len(answered) if answered else 0.0,
            "tapo/splice_rate": len(spliced) / parsed if parsed else 0.0,
            "tapo/constructed_acc": float(np.mean([record["acc"] for record in spliced])) if spliced else 0.0,
            "tapo/constructed_rows": float(len(inserted)),
            "tapo/prefix_fraction_mean": (
                float(np.mean([record["prefix_fraction"] for record in inserted])) if inserted else 0.0
            ),
            "tapo/synthesis_tokens": float(sum(output.num_tokens for output in answered)),
            "tapo/synthesis_tokens_per_request": (
                float(np.mean([output.num_tokens for output in answered])) if answered else 0.0
            ),
        }
        for status in ATTEMPT_STATUSES:
            if status == OK:
                continue
            group = "parse_fail" if status in parse_failures else "splice_fail" if status in splice_failures else "fail"
            metrics[f"tapo/{group}/{status}"] = float(statuses[status])
        return metrics


# ---------------------------------------------------------------------------------------------
# Rows in verl's layout


def response_ids(batch: DataProto, row: int, eos_token_ids: Sequence[int]) -> list[int]:
    """The response ids of `row` under its response mask, trailing EOS ids stripped."""
    mask = batch.batch["response_mask"][row].bool()
    ids = batch.batch["responses"][row][mask].tolist()
    while ids and ids[-1] in eos_token_ids:
        ids.pop()
    return ids


def _ending_eos(batch: DataProto, row: int, eos_token_ids: Sequence[int]) -> int | None:
    mask = batch.batch["response_mask"][row].bool()
    ids = batch.batch["responses"][row][mask].tolist()
    return ids[-1] if ids and ids[-1] in eos_token_ids else None


def question_text(raw_prompt: Any) -> str:
    """The question of a row: the content of the last user turn of its chat (`raw_prompt`)."""
    messages = list(raw_prompt) if not isinstance(raw_prompt, str) else None
    if messages is None:
        return raw_prompt
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    raise ValueError(f"raw_prompt holds no user turn with text content: {raw_prompt!r:.200}")


def build_constructed_rows(
    batch: DataProto, source_rows: Sequence[int], responses: Sequence[Sequence[int]], pad_token_id: int
) -> DataProto:
    """Rows with the prompts of `batch[source_rows]` and the given responses, in the batch layout.

    Every non-tensor column is copied from the source row (uid, data source, ground truth, ...) and
    the TAPO columns are set (`IS_CONSTRUCTED` true). Responses are right-padded with
    `pad_token_id` to the batch's response width; `rollout_log_probs`, if the batch has them, are
    0 until the trainer sets them to the actor's old log-probs (IS ratio 1); `rm_scores` are 0
    until scored. Position ids are verl's `compute_position_id_with_mask`.
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
    non_tensor[IS_CONSTRUCTED] = np.ones(len(index), dtype=bool)
    non_tensor[IS_PADDING] = np.zeros(len(index), dtype=bool)
    non_tensor[ATTEMPT] = np.full(len(index), -1, dtype=np.int64)
    non_tensor[CUT_TOKENS] = np.zeros(len(index), dtype=np.int64)
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensor, meta_info=dict(batch.meta_info))


def mark_original_rows(batch: DataProto) -> None:
    """Give every row of a rollout batch the TAPO columns of an original (not constructed) row."""
    rows = len(batch)
    batch.non_tensor_batch[IS_CONSTRUCTED] = np.zeros(rows, dtype=bool)
    batch.non_tensor_batch[IS_PADDING] = np.zeros(rows, dtype=bool)
    batch.non_tensor_batch[ATTEMPT] = np.full(rows, -1, dtype=np.int64)
    batch.non_tensor_batch[CUT_TOKENS] = np.zeros(rows, dtype=np.int64)


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
    non_tensor[IS_CONSTRUCTED] = np.zeros(count, dtype=bool)
    non_tensor[IS_PADDING] = np.ones(count, dtype=bool)
    non_tensor[ATTEMPT] = np.full(count, -1, dtype=np.int64)
    non_tensor[CUT_TOKENS] = np.zeros(count, dtype=np.int64)
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensor, meta_info=dict(batch.meta_info))


def _correctness(batch: DataProto, rewards: torch.Tensor) -> np.ndarray:
    if "acc" in batch.non_tensor_batch:
        return np.asarray(batch.non_tensor_batch["acc"], dtype=float) > 0
    return rewards.detach().cpu().numpy() > 0


def _pad_token_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _with_max_length(config: Any, max_length: int) -> Any:
    import dataclasses

    return dataclasses.replace(config, max_response_length=max_length)


# ---------------------------------------------------------------------------------------------
# The synthesis text source of a training run: the run's own rollout servers


class RolloutServerTextSource:
    """Sends synthesis prompts, as token ids, to the rollout servers through verl's client.

    `client` is the trainer's `LLMServerClient` (`llm_server_manager.get_client()`): requests are
    load-balanced over the replicas like rollouts, and the prompt ids go as they are (no
    left-truncation to `data.max_prompt_length`; the server only needs them to fit its context).
    Sampling follows `tapo.synthesis.{temperature,top_p,max_new_tokens}`.
    """

    def __init__(self, client: Any, tokenizer: Any, temperature: float, top_p: float, max_new_tokens: int) -> None:
        self.client = client
        self.tokenizer = tokenizer
        self.sampling_params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_new_tokens}

    def __call__(self, requests: list[SynthesisRequest], timeout_s: float) -> list[GeneratedText | None]:
        from verl.utils.ray_utils import auto_await

        return auto_await(self._generate_all)(requests, timeout_s)

    async def _generate_all(self, requests: list[SynthesisRequest], timeout_s: float) -> list[GeneratedText | None]:
        results = await asyncio.wait_for(
            asyncio.gather(*(self._generate(request) for request in requests), return_exceptions=True), timeout_s
        )
        outputs = []
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("TAPO: synthesis request %d failed: %r", request.attempt, result)
                outputs.append(None)
            else:
                outputs.append(result)
        return outputs

    async def _generate(self, request: SynthesisRequest) -> GeneratedText:
        # A stable id per attempt: under rollout.full_determinism verl passes it to the server as is,
        # and the CPU backend draws the request's random stream from it (row-for-row reproducible).
        output = await self.client.generate(
            request_id=f"tapo-synthesis-{request.attempt}",
            prompt_ids=request.prompt_ids,
            sampling_params=dict(self.sampling_params),
        )
        text = self.tokenizer.decode(output.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return GeneratedText(text=text, num_tokens=len(output.token_ids))
