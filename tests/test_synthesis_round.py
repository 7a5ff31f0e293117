"""A step's synthesis round against a text source: deadline, abort, failures counted; the
whole-batch augmenter (workers/synthesis_round.py; no Ray, no trainer)."""

import numpy as np
import pytest

from recipe_tapo.workers.synthesis_plan import SynthesisPlanner, synthesis_metrics

from rollout_batches import (
    GROUPS,
    RESPONSE_WIDTH,
    make_augmenter,
    tapo_config,
    verbatim_writer,
    verl_rollout_batch,
)


def test_a_failing_text_source_fails_its_requests_not_the_run(tapo_tokenizer):
    def broken(requests, timeout_s):
        raise ConnectionError("synthesis server went away")

    result = make_augmenter(tapo_tokenizer, writer=broken).augment(verl_rollout_batch(tapo_tokenizer, GROUPS), 0)
    assert result.rows is None
    assert {record["status"] for record in result.records} == {"request_failed"}
    assert result.metrics["tapo/round_failed"] == 1.0
    assert result.metrics["tapo/fail/request_failed"] == 5


class _FakeClient:
    """verl's LLMServerClient.generate as a rollout server answers it (token ids out): each request
    takes `delays[request_id]` seconds (default 0), or fails, or hangs; an abort ends the requests
    still running (or, with honours_abort=False, leaves them running)."""

    def __init__(self, tokenizer, delays=None, failing=(), hanging=(), honours_abort=True):
        self.tokenizer, self.delays, self.failing, self.hanging = tokenizer, delays or {}, set(failing), set(hanging)
        self.honours_abort = honours_abort
        self.calls, self.aborts, self.resumes = [], 0, 0
        self._aborted = None

    async def generate(self, request_id, *, prompt_ids, sampling_params):
        import asyncio
        from types import SimpleNamespace

        self.calls.append((request_id, list(prompt_ids), dict(sampling_params)))
        self._aborted = self._aborted or asyncio.Event()
        delay = None if request_id in self.hanging else self.delays.get(request_id, 0.0)
        try:
            await asyncio.wait_for(self._aborted.wait(), timeout=delay)
            if self.honours_abort:
                return SimpleNamespace(token_ids=[], stop_reason="aborted")
            await asyncio.sleep(3600)
        except TimeoutError:
            pass
        if request_id in self.failing:
            raise ConnectionError("server went away")
        return SimpleNamespace(token_ids=self.tokenizer.encode("<reconstruction>x</reconstruction>"), stop_reason="completed")

    async def abort(self):
        self.aborts += 1
        self._aborted.set()

    async def resume(self):
        self.resumes += 1


def _round(tokenizer, client, **config_sections):
    from recipe_tapo.workers.synthesis_round import RolloutServerTextSource, SynthesisRound

    config = tapo_config(synthesis={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 123}, **config_sections)
    # Stable ids (as under full_determinism), so the client can name the requests it delays or fails.
    planner = SynthesisPlanner(config, tokenizer, RESPONSE_WIDTH, [tokenizer.eos_token_id], stable_request_ids=True)
    source = RolloutServerTextSource(client, tokenizer, temperature=0.7, top_p=0.9, max_new_tokens=123)
    return SynthesisRound(planner, source, step=3, abort=client.abort, resume=client.resume, abort_grace_s=1.0)


def test_rollout_server_requests_carry_prompt_ids_stable_ids_and_the_synthesis_sampling(tapo_tokenizer):
    import asyncio
    import time

    client = _FakeClient(tapo_tokenizer, failing={"tapo-synthesis-s3-1"})
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)

    async def run():
        synthesis = _round(tapo_tokenizer, client)
        synthesis.submit(batch)
        return synthesis, await synthesis.finish(deadline=time.monotonic() + 30)

    synthesis, outcome = asyncio.run(run())
    statuses = [record["status"] for record in outcome.records]
    assert statuses[1] == "request_failed"  # one failed request is one failure, not a failed round
    assert statuses.count("missing_reconstruction") == 0 and not outcome.failed
    assert sorted(call[0] for call in client.calls) == [f"tapo-synthesis-s3-{attempt}" for attempt in range(5)]
    for request_id, prompt_ids, params in client.calls:
        attempt = int(request_id.rsplit("-", 1)[1])
        assert prompt_ids == synthesis.attempts[attempt].request.prompt_ids  # never truncated
        assert params == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 123}
    assert client.aborts == 0


def test_a_round_keeps_what_finished_by_its_deadline_and_aborts_the_rest(tapo_tokenizer):
    import asyncio
    import time

    # Of the five requests, two hang until aborted and one finishes after the deadline.
    client = _FakeClient(
        tapo_tokenizer, delays={"tapo-synthesis-s3-4": 3.0}, hanging={"tapo-synthesis-s3-0", "tapo-synthesis-s3-2"}
    )
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)

    async def run():
        synthesis = _round(tapo_tokenizer, client)
        started = time.monotonic()
        synthesis.submit(batch)
        outcome = await synthesis.finish(deadline=started + 0.5)
        return outcome, time.monotonic() - started

    outcome, seconds = asyncio.run(run())
    assert seconds < 0.5 + 0.5  # the deadline plus a small margin (the hanging ones return on abort)
    statuses = [record["status"] for record in outcome.records]
    assert statuses[0] == statuses[2] == statuses[4] == "timeout"
    # The two answered in time are used: parsed and spliced (they fail the splice, having no departure).
    assert statuses[1] == statuses[3] != "timeout" and outcome.records[1]["synthesis"] is not None
    assert client.aborts == 1 and client.resumes == 1
    assert not outcome.failed
    assert synthesis_metrics(outcome)["tapo/fail/timeout"] == 3


def test_a_round_with_no_answer_is_failed_with_its_cause(tapo_tokenizer):
    import asyncio
    import time

    client = _FakeClient(tapo_tokenizer, failing={f"tapo-synthesis-s3-{attempt}" for attempt in range(5)})

    async def run():
        synthesis = _round(tapo_tokenizer, client)
        synthesis.submit(verl_rollout_batch(tapo_tokenizer, GROUPS))
        return await synthesis.finish(deadline=time.monotonic() + 30)

    outcome = asyncio.run(run())
    assert outcome.failed and "5 x ConnectionError: server went away" in outcome.failure_cause


def test_a_server_that_ignores_the_abort_still_leaves_the_round_at_its_deadline(tapo_tokenizer):
    import asyncio
    import time

    client = _FakeClient(tapo_tokenizer, hanging={"tapo-synthesis-s3-0"}, honours_abort=False)

    async def run():
        synthesis = _round(tapo_tokenizer, client)  # abort grace 1 s
        started = time.monotonic()
        synthesis.submit(verl_rollout_batch(tapo_tokenizer, GROUPS))
        outcome = await synthesis.finish(deadline=started + 0.3)
        return outcome, time.monotonic() - started

    outcome, seconds = asyncio.run(run())
    assert 1.3 <= seconds < 1.3 + 0.5
    assert [record["status"] for record in outcome.records].count("timeout") == 1


def test_a_synchronous_source_is_never_entered_by_two_threads_at_once(tapo_tokenizer):
    """Submitted group by group, a synchronous source's batches run one after the other in one
    worker thread, so a source holding an HF tokenizer (not thread-safe) is safe."""
    import asyncio
    import threading
    import time

    from recipe_tapo.workers.synthesis_round import SynthesisRound

    class Recording:
        def __init__(self):
            self.inside, self.overlaps, self.threads, self.steps = threading.Lock(), 0, set(), set()

        def __call__(self, requests, timeout_s):
            if not self.inside.acquire(blocking=False):
                self.overlaps += 1
                self.inside.acquire()
            try:
                self.threads.add(threading.get_ident())
                self.steps.update(request.step for request in requests)
                time.sleep(0.05)
                return verbatim_writer(requests, timeout_s)
            finally:
                self.inside.release()

    config = tapo_config()
    source = Recording()
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    starts = [0, *np.cumsum([len(group) for group in GROUPS])]

    async def run():
        synthesis = SynthesisRound(SynthesisPlanner(config, tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id]),
                                   source, step=7)
        for position, (start, end) in enumerate(zip(starts[:-1], starts[1:])):
            synthesis.submit(batch.slice(int(start), int(end)), group_position=position, row_offset=int(start))
        return await synthesis.finish(deadline=time.monotonic() + 30)

    outcome = asyncio.run(run())
    assert source.overlaps == 0 and len(source.threads) == 1 and source.steps == {7}
    assert threading.get_ident() not in source.threads  # never the event loop's thread
    assert sum(record["requested"] for record in outcome.records) >= 2


class _ServerClient:
    """verl's LLMServerClient in front of the CPU backend's real server: a request reaches the server
    after `transit_s[request_id]` seconds, and, like a Ray call already sent, still reaches it when
    its caller has given up on it."""

    def __init__(self, server, transit_s):
        self.server, self.transit_s, self.deliveries = server, transit_s, {}

    async def generate(self, request_id, *, prompt_ids, sampling_params):
        import asyncio

        async def deliver():
            await asyncio.sleep(self.transit_s.get(request_id, 0.0))
            return await self.server.generate(prompt_ids, sampling_params, request_id=request_id)

        self.deliveries[request_id] = asyncio.ensure_future(deliver())
        return await asyncio.shield(self.deliveries[request_id])


@pytest.mark.parametrize("reject_request", [True, False])
def test_a_request_still_in_transit_at_the_abort_is_refused_and_counted(tmp_path, tapo_tokenizer, reject_request):
    """The trainer aborts late synthesis with reject_request=True: a request reaching a replica
    between the abort and the resume is refused, never generated, and counted as a timeout. With
    parking instead (reject_request=False) it would enter the engine once the replica resumes."""
    import asyncio
    import time

    from recipe_tapo.tiny_assets import build_model, build_tokenizer
    from recipe_tapo.workers.synthesis_round import RolloutServerTextSource, SynthesisRound
    from recipe_tapo.workers.cpu_backend.hf_rollout import HFGenerationServer
    from verl.workers.config import HFModelConfig, RolloutConfig

    build_model(str(tmp_path), build_tokenizer(str(tmp_path)))  # the vocabulary of tapo_tokenizer
    server = HFGenerationServer(RolloutConfig(name="hf", prompt_length=512, response_length=8, max_model_len=4096),
                                HFModelConfig(path=str(tmp_path)), replica_rank=0)
    late_id = "tapo-synthesis-s3-0"
    client = _ServerClient(server, transit_s={late_id: 1.3})
    planner = SynthesisPlanner(tapo_config(), tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id],
                               stable_request_ids=True)
    source = RolloutServerTextSource(client, tapo_tokenizer, temperature=1.0, top_p=1.0, max_new_tokens=4)

    async def run():
        synthesis = SynthesisRound(planner, source, step=3, abort_grace_s=1.0,
                                   abort=lambda: server.abort_all_requests(reject_request=reject_request),
                                   resume=server.resume_generation)
        started = time.monotonic()
        synthesis.submit(verl_rollout_batch(tapo_tokenizer, GROUPS))
        outcome = await synthesis.finish(deadline=started + 0.8)
        return outcome, await asyncio.wait_for(client.deliveries[late_id], timeout=30)

    outcome, late = asyncio.run(run())
    assert outcome.records[0]["status"] == "timeout" and outcome.records[0]["synthesis"] is None
    assert synthesis_metrics(outcome)["tapo/fail/timeout"] >= 1
    if reject_request:
        assert late.stop_reason == "aborted" and late.token_ids == []
    else:
        assert late.stop_reason == "completed" and len(late.token_ids) > 0


def test_the_whole_batch_augmenter_waits_for_its_source_in_the_callers_thread(tapo_tokenizer):
    """The cold start's round has no deadline: a source slower than tapo.synthesis.timeout_s is
    waited for, and it runs in the thread that owns it (the builder's vLLM or HF generator)."""
    import threading
    import time

    threads = []

    def slow(requests, timeout_s):
        threads.append(threading.get_ident())
        time.sleep(0.3)
        return verbatim_writer(requests, timeout_s)

    config = tapo_config(synthesis={"timeout_s": 0.05})
    result = make_augmenter(tapo_tokenizer, config, writer=slow).augment(verl_rollout_batch(tapo_tokenizer, GROUPS), 0)
    assert threads == [threading.get_ident()]
    assert [record["status"] for record in result.records] == ["ok"] * 5 and len(result.rows) == 5


def test_a_source_answering_the_wrong_number_of_requests_fails_them_all(tapo_tokenizer):
    result = make_augmenter(tapo_tokenizer, writer=lambda requests, timeout_s: verbatim_writer(requests[1:], timeout_s)
                            ).augment(verl_rollout_batch(tapo_tokenizer, GROUPS), 0)
    assert {record["status"] for record in result.records} == {"request_failed"} and result.rows is None
    assert result.metrics["tapo/round_failed"] == 1.0
