"""Planning one step's synthesis, and reading what came back (docs/method.md).

`SynthesisPlanner` works on scored rollout rows as verl holds them after the agent loop: DCS picks
(wrong, right) pairs, each pair becomes one synthesis prompt (`SynthesisRequest`, with an id unique
per step), and later what the text source answered is parsed and spliced into the pair's record
(`finish`). It runs per finished group or over the whole batch (`recipe_tapo.workers.agent_loop`),
and offline in the cold-start builder.

Also here: the attempt statuses, the step's `SynthesisOutcome` (records, DCS counts, timings) and
its `tapo/` metrics (`synthesis_metrics`), and how a rollout row is read: response ids under
`response_mask`, the trailing EOS stripped (any of the model's EOS ids), decoded once with special
tokens kept (the text the splice cuts); the synthesis prompt takes the response ids themselves
without special tokens (`SynthesisPromptBuilder`). The algorithm lives in
`recipe_tapo.{selection,synthesis,splicing}`; sending the requests is `synthesis_round`, the rows
the trainer inserts are `batch_rows`.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from verl import DataProto

from recipe_tapo.config import TapoConfig
from recipe_tapo.selection import CandidatePair, select_candidate_pairs
from recipe_tapo.splicing import SpliceFailure, splice_trajectory
from recipe_tapo.synthesis import SynthesisFailure, SynthesisPromptBuilder, parse_synthesis_output

logger = logging.getLogger(__name__)

# Tensor keys that describe the sampled tokens themselves, which a constructed row never had:
# a batch carrying them is refused before any request goes out.
TOKEN_LEVEL_KEYS_REFUSED = frozenset({"routed_experts", "teacher_logprobs", "teacher_ids"})

# Statuses of an attempt besides the parse and splice failure reasons.
OK = "ok"
REQUEST_FAILED = "request_failed"  # the text source gave no text for this request
TIMEOUT = "timeout"  # not answered by the round's deadline: aborted on the server
DROPPED_INCORRECT = "dropped_incorrect"  # scoring.keep=correct_only and the construction scored wrong
ERROR = "error"  # an unexpected exception on this attempt (logged); the others go on
ATTEMPT_STATUSES = (
    OK,
    REQUEST_FAILED,
    TIMEOUT,
    DROPPED_INCORRECT,
    ERROR,
    *(reason.value for reason in SynthesisFailure),
    *(reason.value for reason in SpliceFailure),
)
_PARSE_FAILURES = frozenset(reason.value for reason in SynthesisFailure) - {SynthesisFailure.PROMPT_TOO_LONG.value}
_SPLICE_FAILURES = frozenset(reason.value for reason in SpliceFailure)
# Statuses of an attempt whose request got no text: a round made only of these is a failed round.
UNANSWERED = frozenset({REQUEST_FAILED, TIMEOUT})


@dataclass(frozen=True)
class SynthesisRequest:
    """One synthesis prompt, as the text source receives it.

    `attempt` is unique within the step (the record's index in whole-batch rounds; in streamed
    rounds a key from the group's position, renumbered in batch order when the round ends);
    `request_id` is unique per step (`SynthesisPlanner.request_id`); `step` is the training step
    the request belongs to.
    """

    attempt: int
    uid: str
    question: str
    wrong: str  # y- as shown in the prompt (special tokens removed)
    right: str
    mode: str
    messages: list[dict[str, str]]
    prompt_ids: list[int]
    request_id: str = ""
    step: int = -1


@dataclass(frozen=True)
class GeneratedText:
    text: str
    num_tokens: int


# A synchronous text source answers every request, in order: a GeneratedText, or None for a failed
# request. An exception fails all of its requests (counted, never the run).
SynthesisTextSource = Callable[[list[SynthesisRequest], float], list["GeneratedText | None"]]


@dataclass
class Attempt:
    """One (wrong, right) pair of a step: its dump record, its request (None when skipped) and the
    wrong answer's ids and text the splice needs."""

    record: dict[str, Any]
    request: SynthesisRequest | None
    wrong_ids: list[int]
    wrong_text: str
    wrong_eos: int | None
    order: tuple[int, int] = (0, 0)  # (group position, draw): the attempt's place in batch order


@dataclass
class SelectionCounts:
    groups: int = 0
    mixed_groups: int = 0
    eligible_groups: int = 0

    def add(self, other: SelectionCounts) -> None:
        self.groups += other.groups
        self.mixed_groups += other.mixed_groups
        self.eligible_groups += other.eligible_groups


@dataclass
class SynthesisOutcome:
    """What one step's synthesis produced, for the trainer: one record per attempt (the dump's
    fields known here; `constructed_rows` adds the reward, the trainer the advantage and OTS
    weights), the DCS counts, timings in seconds, and the cause when no request was answered."""

    step: int
    records: list[dict[str, Any]] = field(default_factory=list)
    selection: SelectionCounts = field(default_factory=SelectionCounts)
    timings: dict[str, float] = field(default_factory=dict)
    failure_cause: str | None = None

    @property
    def failed(self) -> bool:
        """A failed round: it sent requests and none of them was answered."""
        statuses = [record["status"] for record in self.records if record["requested"]]
        return bool(statuses) and all(status in UNANSWERED for status in statuses)



def synthesis_metrics(outcome: SynthesisOutcome) -> dict[str, float]:
    """The `tapo/` metrics of one step's synthesis, from its records (after `constructed_rows`)."""
    records = outcome.records
    statuses = Counter(record["status"] for record in records)
    requested = [record for record in records if record["requested"]]
    answered = [record for record in requested if record["status"] not in UNANSWERED]
    parsed = len(answered) - sum(statuses[reason] for reason in _PARSE_FAILURES) - statuses[ERROR]
    spliced = [record for record in records if record["token_ids"] is not None]
    inserted = [record for record in records if record["status"] == OK]
    tokens = [record["synthesis_tokens"] for record in answered]
    metrics = {
        "tapo/groups": float(outcome.selection.groups),
        "tapo/mixed_groups": float(outcome.selection.mixed_groups),
        "tapo/eligible_groups": float(outcome.selection.eligible_groups),
        "tapo/pairs": float(len(records)),
        "tapo/synthesis_requests": float(len(requested)),
        "tapo/synthesis_answered": float(len(answered)),
        "tapo/parse_rate": parsed / len(answered) if answered else 0.0,
        "tapo/splice_rate": len(spliced) / parsed if parsed > 0 else 0.0,
        "tapo/constructed_acc": float(np.mean([bool(record["acc"]) for record in spliced])) if spliced else 0.0,
        "tapo/constructed_rows": float(len(inserted)),
        "tapo/prefix_fraction_mean": (
            float(np.mean([record["prefix_fraction"] for record in inserted])) if inserted else 0.0
        ),
        "tapo/synthesis_tokens": float(sum(tokens)),
        "tapo/synthesis_tokens_per_request": float(np.mean(tokens)) if tokens else 0.0,
        "tapo/round_failed": float(outcome.failed),
    }
    for status in ATTEMPT_STATUSES:
        if status == OK:
            continue
        group = "parse_fail" if status in _PARSE_FAILURES else "splice_fail" if status in _SPLICE_FAILURES else "fail"
        metrics[f"tapo/{group}/{status}"] = float(statuses[status])
    for name, seconds in outcome.timings.items():
        metrics[f"tapo/{name}"] = float(seconds)
    return metrics


class SynthesisPlanner:
    """Pairs, prompts, then parse and splice: the text side of the augmentation worker.

    Args:
        config: the `tapo:` section.
        tokenizer: the policy's tokenizer.
        response_length: the batch's response width; no constructed response is longer (EOS
            included) unless `tapo.splicing.max_response_length` is smaller.
        eos_token_ids: every id that ends a rollout (tokenizer and generation config).
        chat_template_kwargs: as the rollout renders prompts (`data.apply_chat_template_kwargs`).
        stable_request_ids: verl's `actor_rollout_ref.rollout.full_determinism`: request ids the
            same in every run (`request_id`).
    """

    def __init__(
        self,
        config: TapoConfig,
        tokenizer: Any,
        response_length: int,
        eos_token_ids: Sequence[int],
        chat_template_kwargs: dict[str, Any] | None = None,
        stable_request_ids: bool = False,
    ) -> None:
        if not eos_token_ids:
            raise ValueError("the TAPO augmentation worker needs the model's EOS token ids")
        self.config = config
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(int(token) for token in eos_token_ids)
        self.prompts = SynthesisPromptBuilder(tokenizer, config.synthesis, chat_template_kwargs)
        max_response_tokens = min(response_length, config.splicing.max_response_length or response_length)
        self.splicing_config = dataclasses.replace(config.splicing, max_response_length=max_response_tokens)
        self.stable_request_ids = stable_request_ids

    def request_id(self, step: int, group_position: int | None, draw: int) -> str:
        """The id a synthesis request is sent with, unique per step.

        verl's router sends an id it has seen before back to the replica it went to then, busy or
        not, so an id repeated every step would pin that request to one replica. Under
        full_determinism the id is the same in every run (the router hashes it to a replica and the
        CPU backend seeds the request's sampling from it); otherwise a random part makes it new, so
        the router sends it to the least-loaded replica.
        """
        where = f"s{step}-{draw}" if group_position is None else f"s{step}-g{group_position}-{draw}"
        if self.stable_request_ids:
            return f"tapo-synthesis-{where}"
        return f"tapo-synthesis-{where}-{uuid.uuid4().hex}"

    def plan(self, rollouts: DataProto, step: int, group_position: int | None = None, row_offset: int = 0):
        """The attempts of one step's rollouts, with their requests built.

        `rollouts` holds the scored rollout rows: the tensors `responses`, `response_mask`,
        `rm_scores` (each row's reward) and the non-tensor `uid` and `raw_prompt` columns (plus
        the reward's `acc` when it gives one: a row is correct when `acc` says so, else when its
        reward is > 0). Either the whole batch (`group_position` None: one DCS draw seeded by
        `selection.seed + step`, attempts numbered in batch order) or one group (its K rows, at
        `group_position` among the batch's groups, whose first row is batch row `row_offset`:
        a draw of its own seeded by (selection.seed, step, group_position), so the draw does not
        depend on the order in which groups finish).

        Returns:
            (attempts, selection counts).
        """
        refused = sorted(set(rollouts.batch.keys()) & TOKEN_LEVEL_KEYS_REFUSED)
        if refused:
            raise ValueError(f"the TAPO augmentation worker cannot build constructed rows for batch keys {refused}")
        uids = rollouts.non_tensor_batch["uid"]
        rewards = rollouts.batch["rm_scores"].sum(dim=-1)
        correct = row_correctness(rollouts, rewards)
        selection = self.config.selection
        if group_position is None:
            seed: Any = selection.seed + step
        else:
            seed = [selection.seed, step, group_position]
        pairs = select_candidate_pairs(uids, correct, selection, seed=seed)
        rows_by_uid: dict[Any, list[int]] = {}
        for row, uid in enumerate(uids):
            rows_by_uid.setdefault(uid, []).append(row)
        texts = {row: self._row_texts(rollouts, row) for pair in pairs for row in (pair.wrong_row, pair.right_row)}
        attempts = []
        for draw, pair in enumerate(pairs):
            key = draw if group_position is None else group_position * selection.m_max + draw
            request_id = self.request_id(step, group_position, draw)
            group = rows_by_uid[pair.group_id]
            record = _new_record(rollouts, pair, step, texts, rewards, group, row_offset)
            try:
                request = self._request(rollouts, pair, key, request_id, texts, step)
            except Exception:  # noqa: BLE001  one pair's texts never end the round
                logger.exception("TAPO: building synthesis request %s failed", request_id)
                request = ERROR
            if isinstance(request, str):
                record["status"] = request
                request = None
            record["requested"] = request is not None
            wrong = texts[pair.wrong_row]
            order = (group_position or 0, draw)
            attempts.append(Attempt(record, request, list(wrong["ids"]), wrong["text"], wrong["eos"], order))
        return attempts, _selection_counts(uids, correct, selection)

    def finish(self, attempt: Attempt, output: GeneratedText | None, status: str | None = None) -> None:
        """Parse and splice what the text source answered into the attempt's record (or set
        `status`, e.g. TIMEOUT, for a request that got no text). One bad sample never stops the
        round: an unexpected exception marks this attempt ERROR and is logged."""
        record = attempt.record
        if status is not None:
            record["status"] = status
            return
        if output is None:
            record["status"] = REQUEST_FAILED
            return
        try:
            self._splice(attempt, output)
        except Exception:  # noqa: BLE001  model text: one bad sample never ends the round
            logger.exception("TAPO: synthesis request %s failed unexpectedly", attempt.request and attempt.request.request_id)
            record["status"] = ERROR

    # -- reading rows ---------------------------------------------------------------------------

    def _row_texts(self, rollouts: DataProto, row: int) -> dict[str, Any]:
        ids = response_ids(rollouts, row, self.eos_token_ids)
        return {
            "ids": ids,
            "text": self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "prompt": self.prompts.answer(ids),
            "eos": _ending_eos(rollouts, row, self.eos_token_ids),
        }

    def _request(self, rollouts, pair: CandidatePair, key: int, request_id: str, texts, step: int) -> SynthesisRequest | str:
        question = question_text(rollouts.non_tensor_batch["raw_prompt"][pair.wrong_row])
        wrong, right = texts[pair.wrong_row]["prompt"], texts[pair.right_row]["prompt"]
        prompt = self.prompts.build(question, wrong, right)
        if not prompt.ok:
            return prompt.failure.value
        return SynthesisRequest(
            attempt=key,
            uid=str(pair.group_id),
            question=self.prompts.without_special_tokens(question),
            wrong=wrong.text,
            right=right.text,
            mode=self.config.synthesis.mode,
            messages=prompt.messages,
            prompt_ids=prompt.prompt_ids,
            request_id=request_id,
            step=step,
        )

    def _splice(self, attempt: Attempt, output: GeneratedText) -> None:
        record = attempt.record
        record["synthesis"] = output.text
        record["synthesis_tokens"] = output.num_tokens
        parsed = parse_synthesis_output(output.text, self.config.synthesis.mode)
        if not parsed.ok:
            record["status"] = parsed.failure.value
            return
        record["analysis"] = parsed.analysis
        eos = attempt.wrong_eos if attempt.wrong_eos is not None else self.eos_token_ids[0]
        spliced = splice_trajectory(
            attempt.wrong_text,
            list(attempt.wrong_ids),
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


def _new_record(rollouts, pair: CandidatePair, step: int, texts, rewards, group: list[int], offset: int) -> dict:
    return {
        "step": step,
        "uid": str(pair.group_id),
        "status": OK,
        # Positions in the rollout batch as generated (verl's order, before balancing).
        "wrong_row": pair.wrong_row + offset,
        "right_row": pair.right_row + offset,
        "question": question_text(rollouts.non_tensor_batch["raw_prompt"][pair.wrong_row]),
        "wrong": texts[pair.wrong_row]["text"],
        "wrong_ids": list(texts[pair.wrong_row]["ids"]),
        "right": texts[pair.right_row]["text"],
        "requested": False,
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


def _selection_counts(uids, correct, selection) -> SelectionCounts:
    groups: dict[Any, tuple[int, int]] = {}
    for uid, is_correct in zip(uids, correct, strict=True):
        right, wrong = groups.get(uid, (0, 0))
        groups[uid] = (right + int(is_correct), wrong + int(not is_correct))
    return SelectionCounts(
        groups=len(groups),
        mixed_groups=sum(1 for right, wrong in groups.values() if right and wrong),
        eligible_groups=sum(
            1 for right, wrong in groups.values() if right >= selection.n_pos and wrong >= selection.n_neg
        ),
    )


# ---------------------------------------------------------------------------------------------
# Reading rollout rows


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


def row_correctness(batch: DataProto, rewards: torch.Tensor) -> np.ndarray:
    """Which rows are correct: the reward's `acc` column when it gives one, else reward > 0."""
    if "acc" in batch.non_tensor_batch:
        return np.asarray(batch.non_tensor_batch["acc"], dtype=float) > 0
    return rewards.detach().cpu().numpy() > 0
