"""The data-augmentation worker: scored rollouts in, constructed trajectories out (docs/method.md).

Two halves, so that synthesis can start while the rollout still runs:

- `SynthesisPlanner` works on rollout rows: DCS picks (wrong, right) pairs -> one synthesis
  prompt per pair (`SynthesisRequest`) -> later, what the text source answered is parsed and
  spliced (`finish`). It runs in TAPO's agent loop manager, per finished group or for the whole
  batch (`recipe_tapo.workers.agent_loop`), and offline in the cold-start builder.
- `constructed_rows` works on the training batch: the spliced trajectories become rows in the
  batch's exact layout, under the original prompt, scored with the run's reward; the trainer
  inserts them (`recipe_tapo.trainer`).

`TrajectoryAugmenter.augment(batch, step)` chains both over a whole batch with a synchronous
text source (the cold-start builder and the tests). `SynthesisRound` runs one training step's
requests against a text source with a deadline (`tapo.synthesis.timeout_s`): what finished by then
is kept, what did not is aborted and counted.

The algorithm lives in `recipe_tapo.{selection,synthesis,splicing}`; this module only moves data
between them and verl's `DataProto`. Rows are read as verl holds them after the agent loop: response
ids under `response_mask`, the trailing EOS stripped (any of the model's EOS ids), decoded once with
special tokens kept (the text the splice cuts); the synthesis prompt takes the response ids
themselves without special tokens (`SynthesisPromptBuilder`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.utils.model import compute_position_id_with_mask

from recipe_tapo.advantage import constructed_row_uid
from recipe_tapo.config import TapoConfig
from recipe_tapo.selection import CandidatePair, select_candidate_pairs
from recipe_tapo.splicing import SpliceFailure, splice_trajectory
from recipe_tapo.synthesis import SynthesisFailure, SynthesisPromptBuilder, parse_synthesis_output

logger = logging.getLogger(__name__)

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
# dataset's `dummy_tensor`) and are copied from the source row, except these, which describe the
# sampled tokens themselves and have no meaning for a constructed row: such a batch is refused.
ROW_KEYS = frozenset(
    {"prompts", "responses", "response_mask", "input_ids", "attention_mask", "position_ids", "rollout_log_probs", "rm_scores"}
)
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
# The run's reward on rows in the batch layout: (rm_scores (n, R), reward extra-info arrays).
ScoreFn = Callable[[DataProto], tuple[torch.Tensor, dict[str, np.ndarray]]]


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


@dataclass
class Augmentation:
    """Rows and records of one step: `rows` the constructed rows in the batch's layout (None when
    there are none) carrying the TAPO columns; `records` one dict per synthesis attempt; `metrics`
    the `tapo/` scalars of the synthesis."""

    rows: DataProto | None
    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


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
        correct = _correctness(rollouts, rewards)
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
# One step's synthesis against a text source, with a deadline


class SynthesisRound:
    """One training step's synthesis requests in flight, and what came back by the deadline.

    `submit` plans a batch or a group (`SynthesisPlanner.plan`) and sends its requests at once;
    `finish` waits until every request is answered or the deadline passes, then aborts the rest on
    the servers (`abort`, then `resume` so the servers take new requests), marks them TIMEOUT and
    parses and splices the rest. A per-request async source (`RolloutServerTextSource`) is
    cancelled request by request; a synchronous source (`SynthesisTextSource`) runs its batches
    one at a time in `executor`'s single worker thread (a round's own when none is given): such a
    source, and the HF tokenizer it may hold, need not be thread-safe. Its late answers are dropped.
    """

    def __init__(
        self,
        planner: SynthesisPlanner,
        source: Any,
        step: int,
        abort: Callable[[], Awaitable[Any]] | None = None,
        resume: Callable[[], Awaitable[Any]] | None = None,
        abort_grace_s: float = 5.0,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.planner = planner
        self.source = source
        self.step = step
        self.abort = abort
        self.resume = resume
        self.abort_grace_s = abort_grace_s
        self._executor = executor
        self._own_executor = executor is None
        self.attempts: list[Attempt] = []
        self.selection = SelectionCounts()
        self._pending: dict[int, asyncio.Future] = {}  # attempt index -> its output
        self._first_request: float | None = None
        self._last_output: float | None = None
        self._failures: Counter[str] = Counter()

    def submit(self, rollouts: DataProto, group_position: int | None = None, row_offset: int = 0) -> None:
        attempts, counts = self.planner.plan(rollouts, self.step, group_position, row_offset)
        self.selection.add(counts)
        requested = [(len(self.attempts) + index, attempt) for index, attempt in enumerate(attempts) if attempt.request]
        self.attempts.extend(attempts)
        if not requested:
            return
        if self._first_request is None:
            self._first_request = time.monotonic()
        requests = [attempt.request for _, attempt in requested]
        if hasattr(self.source, "generate"):  # one task per request: each can finish or be cancelled alone
            futures = [asyncio.ensure_future(self.source.generate(request)) for request in requests]
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapo-synthesis")
            futures = _batch_in_thread(self.source, requests, self.planner.config.synthesis.timeout_s, self._executor)
        for (index, _), future in zip(requested, futures, strict=True):
            future.add_done_callback(self._note_output)
            self._pending[index] = future

    def _note_output(self, future: asyncio.Future) -> None:
        if not future.cancelled():
            self._last_output = time.monotonic()

    async def finish(self, deadline: float) -> SynthesisOutcome:
        """Wait for the requests until `deadline` (time.monotonic()); then abort, collect, splice."""
        futures = list(self._pending.values())
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
        late = [index for index, future in self._pending.items() if not future.done()]
        if late:
            await self._abort([self._pending[index] for index in late])
        for index, attempt in enumerate(self.attempts):
            if index in late:
                self.planner.finish(attempt, None, status=TIMEOUT)
            elif index in self._pending:
                self.planner.finish(attempt, self._result(attempt, self._pending[index]))
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)  # a late batch finishes unread
        return self._outcome(len(late))

    async def _abort(self, late: list[asyncio.Future]) -> None:
        if self.abort is not None:
            await self.abort()
            await asyncio.wait(late, timeout=self.abort_grace_s)
        for future in late:
            future.cancel()
        if self.abort is not None and self.resume is not None:
            await self.resume()

    def _result(self, attempt: Attempt, future: asyncio.Future) -> GeneratedText | None:
        error = future.exception()
        if error is None:
            return future.result()
        # An expected failure of one request: counted by its cause, never the run.
        self._failures[f"{type(error).__name__}: {error}"[:200]] += 1
        logger.warning("TAPO: synthesis request %s failed: %r", attempt.request.request_id, error)
        return None

    def _outcome(self, timeouts: int) -> SynthesisOutcome:
        # Records in batch order (by group, then draw), whatever order the groups finished in.
        records = [attempt.record for attempt in sorted(self.attempts, key=lambda attempt: attempt.order)]
        timings = {}
        if self._first_request is not None:
            timings["synthesis_seconds"] = (self._last_output or time.monotonic()) - self._first_request
        outcome = SynthesisOutcome(self.step, records, self.selection, timings)
        if outcome.failed:
            causes = dict(self._failures)
            if timeouts:
                causes[f"no answer within tapo.synthesis.timeout_s={self.planner.config.synthesis.timeout_s}"] = timeouts
            outcome.failure_cause = "; ".join(f"{count} x {cause}" for cause, count in causes.items())
        return outcome

    @property
    def last_output_time(self) -> float | None:
        return self._last_output


def _batch_in_thread(source: SynthesisTextSource, requests: list[SynthesisRequest], timeout_s: float,
                     executor: ThreadPoolExecutor):
    """A synchronous source's batch in `executor`'s thread, as one future per request (an exception
    fails them all)."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in requests]
    batch = loop.run_in_executor(executor, source, requests, timeout_s)

    def settle(done: asyncio.Future) -> None:
        error = None if done.cancelled() else done.exception()
        outputs = None if done.cancelled() or error is not None else done.result()
        if outputs is not None and len(outputs) != len(requests):
            error = RuntimeError(f"the synthesis text source answered {len(outputs)} of {len(requests)} requests")
        for position, future in enumerate(futures):
            if future.done():
                continue
            if done.cancelled():
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(outputs[position])

    batch.add_done_callback(settle)
    return futures


class RequestAborted(RuntimeError):
    """A synthesis request the rollout server aborted before it finished."""


class RolloutServerTextSource:
    """Sends synthesis prompts, as token ids, to the rollout servers through verl's client.

    `client` is the run's `LLMServerClient` (`llm_server_manager.get_client()`): requests are
    load-balanced over the replicas like rollouts, and the prompt ids go as they are (no
    left-truncation to `data.max_prompt_length`; the server only needs them to fit its context).
    Sampling follows `tapo.synthesis.{temperature,top_p,max_new_tokens}`.
    """

    def __init__(self, client: Any, tokenizer: Any, temperature: float, top_p: float, max_new_tokens: int) -> None:
        self.client = client
        self.tokenizer = tokenizer
        self.sampling_params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_new_tokens}

    async def generate(self, request: SynthesisRequest) -> GeneratedText:
        # verl routes by the id (`SynthesisPlanner.request_id`); under rollout.full_determinism it also
        # passes it to the server, whose CPU backend draws the request's random stream from it.
        output = await self.client.generate(
            request_id=request.request_id,
            prompt_ids=request.prompt_ids,
            sampling_params=dict(self.sampling_params),
        )
        if getattr(output, "stop_reason", None) in ("aborted", "abort"):
            raise RequestAborted(f"the rollout server aborted synthesis request {request.request_id}")
        text = self.tokenizer.decode(output.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return GeneratedText(text=text, num_tokens=len(output.token_ids))


# ---------------------------------------------------------------------------------------------
# Constructed rows in the training batch


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
    correct = _correctness(rows, rewards)
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


# ---------------------------------------------------------------------------------------------
# The whole batch at once (the cold-start builder, tests)


class TrajectoryAugmenter:
    """A whole batch's augmentation with a synchronous text source: plan, generate, parse, splice,
    build and score rows (`SynthesisPlanner`, then `constructed_rows`).

    Args:
        config, tokenizer, response_length, eos_token_ids, chat_template_kwargs: as
            `SynthesisPlanner`.
        text_source: writes the synthesis outputs (`SynthesisTextSource`).
        score_fn: the run's reward on constructed rows.
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
        self.config = config
        self.tokenizer = tokenizer
        self.planner = SynthesisPlanner(config, tokenizer, response_length, eos_token_ids, chat_template_kwargs)
        self.text_source = text_source
        self.score_fn = score_fn

    def augment(self, batch: DataProto, step: int) -> Augmentation:
        """Constructed rows for `batch`, the scored rollout rows of step `step` (its tensors and
        columns as `SynthesisPlanner.plan` reads them, plus whatever the reward reads). Every
        failure of one attempt is counted by reason; an exception of the text source fails every
        request of the round (REQUEST_FAILED)."""
        started = time.perf_counter()
        attempts, counts = self.planner.plan(batch, step)
        requested = [attempt for attempt in attempts if attempt.request is not None]
        outputs: list[GeneratedText | None] = [None] * len(requested)
        if requested:
            try:
                outputs = list(self.text_source([attempt.request for attempt in requested], self.config.synthesis.timeout_s))
            except Exception as error:  # noqa: BLE001  the text source's failure is its requests' failure
                logger.warning("TAPO: the synthesis text source failed its whole round: %r", error)
                outputs = [None] * len(requested)
            if len(outputs) != len(requested):
                raise RuntimeError(f"the synthesis text source answered {len(outputs)} of {len(requested)} requests")
        synthesis_seconds = time.perf_counter() - started
        for attempt, output in zip(requested, outputs, strict=True):
            self.planner.finish(attempt, output)
        outcome = SynthesisOutcome(step, [attempt.record for attempt in attempts], counts)
        rows = constructed_rows(batch, outcome.records, self.score_fn, self.config, pad_token_id(self.tokenizer))
        metrics = synthesis_metrics(outcome)
        metrics["tapo/synthesis_seconds"] = synthesis_seconds
        metrics["tapo/augment_seconds"] = time.perf_counter() - started
        return Augmentation(rows=rows, records=outcome.records, metrics=metrics)


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


def _correctness(batch: DataProto, rewards: torch.Tensor) -> np.ndarray:
    if "acc" in batch.non_tensor_batch:
        return np.asarray(batch.non_tensor_batch["acc"], dtype=float) > 0
    return rewards.detach().cpu().numpy() > 0


def pad_token_id(tokenizer: Any) -> int:
    """The id constructed and padding rows are padded with: the tokenizer's pad id, else its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

