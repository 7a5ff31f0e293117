"""Running one step's synthesis requests against a text source, and a whole batch's augmentation.

`SynthesisRound` sends the requests `synthesis_plan.SynthesisPlanner` builds, as a batch or group by
group, and keeps what came back by a deadline (`tapo.synthesis.timeout_s` after the last rollout):
the rest is aborted on the servers and counted as timeouts. The text source is either the rollout
servers through verl's client (`RolloutServerTextSource`, one request at a time) or a synchronous
callable (`synthesis_plan.SynthesisTextSource`, a batch per call, e.g. the toy teacher).

`TrajectoryAugmenter.augment(batch, step)` is a round without a deadline over a whole batch, then
its rows (`batch_rows.constructed_rows`): the cold-start builder and the tests use it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from verl import DataProto

from recipe_tapo.config import TapoConfig
from recipe_tapo.workers.batch_rows import ScoreFn, constructed_rows, pad_token_id
from recipe_tapo.workers.synthesis_plan import (
    TIMEOUT,
    Attempt,
    GeneratedText,
    SelectionCounts,
    SynthesisOutcome,
    SynthesisPlanner,
    SynthesisRequest,
    SynthesisTextSource,
    synthesis_metrics,
)

logger = logging.getLogger(__name__)


class SynthesisRound:
    """One training step's synthesis requests in flight, and what came back by the deadline.

    `submit` plans a batch or a group (`SynthesisPlanner.plan`) and sends its requests at once;
    `finish` waits until every request is answered or the deadline passes, then aborts the rest on
    the servers (`abort`, then `resume` so the servers take new requests), marks them TIMEOUT and
    parses and splices the rest. A per-request async source (`RolloutServerTextSource`) is
    cancelled request by request; a synchronous source (`SynthesisTextSource`) runs its batches
    one at a time in `executor` (by default a single worker thread of the round's own): such a
    source, and the HF tokenizer it may hold, need not be thread-safe. Its late answers are dropped.
    `finish(deadline=None)` waits for every answer: nothing is aborted.
    """

    def __init__(
        self,
        planner: SynthesisPlanner,
        source: Any,
        step: int,
        abort: Callable[[], Awaitable[Any]] | None = None,
        resume: Callable[[], Awaitable[Any]] | None = None,
        abort_grace_s: float = 5.0,
        executor: Executor | None = None,
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

    async def finish(self, deadline: float | None) -> SynthesisOutcome:
        """Wait for the requests until `deadline` (time.monotonic(); None: until all are answered),
        then abort the rest, collect, splice."""
        futures = list(self._pending.values())
        if futures:
            await asyncio.wait(futures, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
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
                     executor: Executor):
    """A synchronous source's batch in `executor`'s thread, as one future per request (an exception,
    or a wrong number of answers, fails them all)."""
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
# The whole batch at once (the cold-start builder, tests)


@dataclass
class Augmentation:
    """Rows and records of one step: `rows` the constructed rows in the batch's layout (None when
    there are none) carrying the TAPO columns; `records` one dict per synthesis attempt; `metrics`
    the `tapo/` scalars of the synthesis."""

    rows: DataProto | None
    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


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
        failure of one attempt is counted by reason; an exception of the text source, or a wrong
        number of answers, fails every request of the round (REQUEST_FAILED)."""
        started = time.perf_counter()
        outcome = asyncio.run(self._round(batch, step))
        rows = constructed_rows(batch, outcome.records, self.score_fn, self.config, pad_token_id(self.tokenizer))
        metrics = synthesis_metrics(outcome)
        metrics["tapo/augment_seconds"] = time.perf_counter() - started
        return Augmentation(rows=rows, records=outcome.records, metrics=metrics)

    async def _round(self, batch: DataProto, step: int) -> SynthesisOutcome:
        # No deadline, and the source called in this thread: the one that owns it (e.g. the cold
        # start's vLLM engine, which also generates the rollouts).
        synthesis = SynthesisRound(self.planner, self.text_source, step, executor=_CallingThread())
        synthesis.submit(batch)
        return await synthesis.finish(deadline=None)


class _CallingThread(Executor):
    """Runs each call at once, in the thread that submits it."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:  # noqa: BLE001  handed to the future's reader, as a thread pool does
            future.set_exception(error)
        return future
