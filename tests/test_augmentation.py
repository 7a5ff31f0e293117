"""The data-augmentation worker on rollout batches in verl's layout (no Ray, no trainer)."""

import numpy as np
import pytest
import torch
from verl import DataProto

from recipe_tapo.advantage import parse_constructed_uid
from recipe_tapo.config import TapoConfig
from recipe_tapo.workers.augmentation import (
    ATTEMPT,
    CUT_TOKENS,
    IS_CONSTRUCTED,
    IS_PADDING,
    ATTEMPT_STATUSES,
    GeneratedText,
    TrajectoryAugmenter,
    synthesis_metrics,
    build_constructed_rows,
    build_padding_rows,
    mark_original_rows,
    question_text,
    response_ids,
)

PROMPT_WIDTH, RESPONSE_WIDTH = 48, 64
QUESTION = "What is 7 * 8 + 1?"
RIGHT = "First, 7 * 8 = 56.\nThen 56 + 1 = 57.\nSo the answer is \\boxed{57}."
WRONG = "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nSo the answer is \\boxed{55}."


def _config(**sections) -> TapoConfig:
    values = {
        "selection": {"n_pos": 1, "n_neg": 1, "m_max": 4},
        "splicing": {"min_prefix_tokens": 1},
        "synthesis": {"max_prompt_tokens": 4096, "max_new_tokens": 256},
    }
    for name, overrides in sections.items():
        values.setdefault(name, {}).update(overrides)
    return TapoConfig.from_dict(values)


def _rollout_batch(tokenizer, groups: list[list[str]], extra_eos: int | None = None) -> DataProto:
    """Rows as verl holds them after the agent loop: left-padded prompts, right-padded responses
    ending in EOS, rewards at the last response token, one uid per group.

    Not `recipe_tapo.cold_start.rollout_batch`: this pads prompts to a fixed width (as verl pads to
    max_prompt_length), carries verl's extra tensors (`rollout_log_probs`) and can end with any EOS id."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts, responses, prompt_masks, response_masks, uids, raw, scores = [], [], [], [], [], [], []
    for group, answers in enumerate(groups):
        chat = [{"role": "user", "content": f"{QUESTION} (group {group})"}]
        prompt_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
        for answer in answers:
            ids = tokenizer.encode(answer, add_special_tokens=False) + [eos]
            if extra_eos is not None:
                ids[-1] = extra_eos
            prompts.append([pad] * (PROMPT_WIDTH - len(prompt_ids)) + prompt_ids)
            prompt_masks.append([0] * (PROMPT_WIDTH - len(prompt_ids)) + [1] * len(prompt_ids))
            responses.append(ids + [pad] * (RESPONSE_WIDTH - len(ids)))
            response_masks.append([1] * len(ids) + [0] * (RESPONSE_WIDTH - len(ids)))
            uids.append(f"uid-{group}")
            raw.append(chat)
            scores.append(1.0 if "\\boxed{57}" in answer else 0.0)
    prompts, responses = torch.tensor(prompts), torch.tensor(responses)
    attention = torch.cat([torch.tensor(prompt_masks), torch.tensor(response_masks)], dim=1)
    rm_scores = torch.zeros(len(scores), RESPONSE_WIDTH)
    lengths = torch.tensor(response_masks).sum(-1) - 1
    rm_scores[torch.arange(len(scores)), lengths] = torch.tensor(scores)
    raw_prompts = np.empty(len(raw), dtype=object)
    raw_prompts[:] = raw
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "response_mask": torch.tensor(response_masks),
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention,
            "position_ids": torch.clip(torch.cumsum(attention, dim=-1) - 1, min=0),
            "rollout_log_probs": -torch.rand(len(scores), RESPONSE_WIDTH),
            "rm_scores": rm_scores,
            "dummy_tensor": torch.zeros(len(scores), 1, dtype=torch.uint8),
        },
        non_tensors={
            "uid": np.array(uids, dtype=object),
            "raw_prompt": raw_prompts,
            "data_source": np.array(["toy"] * len(uids), dtype=object),
            "reward_model": np.array([{"ground_truth": "57"}] * len(uids), dtype=object),
            "acc": np.array([score > 0 for score in scores]),
        },
        meta_info={"reward_extra_keys": ["acc"]},
    )


def _verbatim_writer(requests, timeout_s):
    """Well-formed verbatim synthesis: the wrong answer's first line, its error, a reflection, the right ending."""
    outputs = []
    for request in requests:
        first_line = request.wrong.split("\n")[0]
        reconstruction = f"{first_line}\nWait, 7 * 8 is 56, not 54. Then 56 + 1 = 57.\nSo the answer is \\boxed{{57}}."
        text = f"<analysis>7 * 8 was miscomputed.</analysis>\n<reconstruction>\n{reconstruction}\n</reconstruction>"
        outputs.append(GeneratedText(text=text, num_tokens=len(text) // 3))
    return outputs


def _score(tokenizer):
    def score(rows: DataProto):
        scores = torch.zeros(len(rows), RESPONSE_WIDTH)
        acc = []
        for row in range(len(rows)):
            ids = response_ids(rows, row, [tokenizer.eos_token_id])
            correct = "\\boxed{57}" in tokenizer.decode(ids)
            scores[row, int(rows.batch["response_mask"][row].sum()) - 1] = float(correct)
            acc.append(correct)
        return scores, {"acc": np.array(acc)}

    return score


def _augmenter(tokenizer, config=None, writer=_verbatim_writer):
    return TrajectoryAugmenter(
        config or _config(),
        tokenizer,
        response_length=RESPONSE_WIDTH,
        eos_token_ids=[tokenizer.eos_token_id],
        text_source=writer,
        score_fn=_score(tokenizer),
    )


GROUPS = [[RIGHT, WRONG, WRONG, RIGHT], [RIGHT] * 4, [WRONG, RIGHT, WRONG, WRONG]]


def test_rebuilding_a_rollout_row_from_its_own_response_gives_the_same_row(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
    own = [batch.batch["responses"][row][batch.batch["response_mask"][row].bool()].tolist() for row in range(3)]
    rebuilt = build_constructed_rows(batch, [0, 1, 2], own, pad_token_id=tapo_tokenizer.pad_token_id)
    for key in ("prompts", "responses", "response_mask", "input_ids", "attention_mask", "position_ids", "dummy_tensor"):
        assert torch.equal(rebuilt.batch[key], batch.batch[key][:3]), key
    assert list(rebuilt.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"][:3])
    assert rebuilt.non_tensor_batch[IS_CONSTRUCTED].all()


def test_constructions_keep_the_wrong_answers_own_ids_then_reflect_then_correct(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
    result = _augmenter(tapo_tokenizer).augment(batch, step=3)
    wrong_rows = [1, 2, 8, 10, 11]  # every wrong row of the two mixed groups (m_max 4, n_neg 1)
    assert result.metrics["tapo/pairs"] == len(wrong_rows)
    assert result.metrics["tapo/eligible_groups"] == 2
    rows = result.rows
    assert len(rows) == len(wrong_rows) == result.metrics["tapo/constructed_rows"]
    eos = tapo_tokenizer.eos_token_id
    for position in range(len(rows)):
        record = result.records[int(rows.non_tensor_batch[ATTEMPT][position])]
        ids = rows.batch["responses"][position][rows.batch["response_mask"][position].bool()].tolist()
        assert ids == record["token_ids"] and ids[-1] == eos
        cut = record["cut_tokens"]
        assert cut == rows.non_tensor_batch[CUT_TOKENS][position] > 0
        assert ids[:cut] == record["wrong_ids"][:cut]
        text = tapo_tokenizer.decode(ids[:-1])
        # Own reasoning up to and including the mistake, then the reflection on it.
        assert text.startswith("First, 7 * 8 = 54.\nWait, 7 * 8 is 56, not 54.")
        assert record["reward"] == 1.0 and record["acc"] is True
        assert record["orig_rewards"] == [1.0, 0.0, 0.0, 1.0] if record["uid"] == "uid-0" else [0.0, 1.0, 0.0, 0.0]
        # The row's uid carries its G_ref: the constructions of its source group (DAE, per question).
        assert parse_constructed_uid(rows.non_tensor_batch["uid"][position]) == ("query", record["uid"])
        assert torch.equal(rows.batch["prompts"][position], batch.batch["prompts"][0 if record["uid"] == "uid-0" else 8])
    assert rows.batch["rm_scores"].sum() == len(rows)
    assert list(rows.non_tensor_batch["acc"]) == [True] * len(rows)
    assert result.metrics["tapo/parse_rate"] == 1.0 and result.metrics["tapo/splice_rate"] == 1.0
    assert result.metrics["tapo/constructed_acc"] == 1.0


def test_the_draw_depends_only_on_seed_and_step(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, [[RIGHT, WRONG, WRONG, WRONG, RIGHT, WRONG]])
    config = _config(selection={"m_max": 2})

    def chosen(step):
        records = _augmenter(tapo_tokenizer, config).augment(batch, step).records
        return tuple((record["wrong_row"], record["right_row"]) for record in records)

    assert chosen(5) == chosen(5)
    draws = {chosen(step) for step in range(8)}
    assert len(draws) > 1


def test_unparsable_and_failed_requests_are_counted_by_reason(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
    answers = iter(
        [
            GeneratedText("no tags at all", 4),
            None,
            GeneratedText("<analysis>x</analysis><reconstruction></reconstruction>", 9),
            GeneratedText("", 0),
            GeneratedText("<reconstruction>Something else entirely \\boxed{57}</reconstruction>", 12),
        ]
    )
    result = _augmenter(tapo_tokenizer, writer=lambda requests, timeout: [next(answers) for _ in requests]).augment(
        batch, step=0
    )
    assert result.rows is None
    statuses = [record["status"] for record in result.records]
    assert statuses == [
        "missing_reconstruction",
        "request_failed",
        "empty_reconstruction",
        "empty_output",
        "prefix_too_short",
    ]
    metrics = result.metrics
    assert metrics["tapo/parse_fail/missing_reconstruction"] == 1
    assert metrics["tapo/parse_fail/empty_output"] == 1
    assert metrics["tapo/fail/request_failed"] == 1
    assert metrics["tapo/splice_fail/prefix_too_short"] == 1
    assert metrics["tapo/parse_rate"] == pytest.approx(1 / 4)
    assert metrics["tapo/constructed_rows"] == 0
    assert set(ATTEMPT_STATUSES) >= set(statuses)


def test_keep_correct_only_drops_wrong_constructions(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, GROUPS)

    def half_wrong(requests, timeout_s):
        outputs = _verbatim_writer(requests, timeout_s)
        return [
            GeneratedText(output.text.replace("boxed{57}", "boxed{58}"), output.num_tokens) if index % 2 else output
            for index, output in enumerate(outputs)
        ]

    kept = _augmenter(tapo_tokenizer, _config(scoring={"keep": "correct_only"}), half_wrong).augment(batch, 0)
    every = _augmenter(tapo_tokenizer, _config(scoring={"keep": "all"}), half_wrong).augment(batch, 0)
    assert len(every.rows) == 5 and len(kept.rows) == 3
    assert [record["status"] for record in kept.records].count("dropped_incorrect") == 2
    assert kept.rows.batch["rm_scores"].sum() == 3
    assert every.metrics["tapo/constructed_acc"] == pytest.approx(3 / 5)


def test_a_failing_text_source_fails_its_requests_not_the_run(tapo_tokenizer):
    def broken(requests, timeout_s):
        raise ConnectionError("synthesis server went away")

    result = _augmenter(tapo_tokenizer, writer=broken).augment(_rollout_batch(tapo_tokenizer, GROUPS), 0)
    assert result.rows is None
    assert {record["status"] for record in result.records} == {"request_failed"}
    assert result.metrics["tapo/round_failed"] == 1.0
    assert result.metrics["tapo/fail/request_failed"] == 5


def test_one_bad_attempt_does_not_stop_the_others(tapo_tokenizer, monkeypatch):
    import recipe_tapo.workers.augmentation as augmentation

    real = augmentation.splice_trajectory
    calls = []

    def splice_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("unexpected")
        return real(*args, **kwargs)

    monkeypatch.setattr(augmentation, "splice_trajectory", splice_failing_once)
    result = _augmenter(tapo_tokenizer).augment(_rollout_batch(tapo_tokenizer, GROUPS), 0)
    assert [record["status"] for record in result.records].count("error") == 1
    assert len(result.rows) == 4


def test_a_question_the_tokenizer_refuses_fails_its_pair_not_the_round(tapo_tokenizer):
    """A lone surrogate cannot be tokenised (HF raises TypeError): that pair is ERROR, the others go on."""
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
    prompts = batch.non_tensor_batch["raw_prompt"]
    bad_group_rows = range(len(GROUPS[0]))
    for row in bad_group_rows:
        prompts[row] = [{"role": "user", "content": "What is 2 + \ud800 3?"}]
    result = _augmenter(tapo_tokenizer).augment(batch, 0)
    statuses = [(record["wrong_row"] in bad_group_rows, record["status"]) for record in result.records]
    assert all(status == "error" for bad, status in statuses if bad) and any(bad for bad, _ in statuses)
    assert any(status == "ok" for bad, status in statuses if not bad)


def test_synthesis_prompts_carry_no_special_token_from_a_response(tapo_tokenizer):
    im_start = tapo_tokenizer.convert_tokens_to_ids("<|im_start|>")
    wrong_ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    # A response with a special token in its middle, and one spelling it in ordinary characters.
    polluted = tapo_tokenizer.decode(wrong_ids[:5] + [im_start] + wrong_ids[5:]) + "<|im_start|>"
    batch = _rollout_batch(tapo_tokenizer, [[RIGHT, polluted]])
    seen = []

    def recording(requests, timeout_s):
        seen.extend(requests)
        return _verbatim_writer(requests, timeout_s)

    _augmenter(tapo_tokenizer, writer=recording).augment(batch, 0)
    (request,) = seen
    template_only = tapo_tokenizer.apply_chat_template(
        request.messages, add_generation_prompt=True, tokenize=True
    )
    template_only = list(template_only["input_ids"] if hasattr(template_only, "keys") else template_only)
    assert request.prompt_ids == template_only
    assert request.prompt_ids.count(im_start) == 2  # the user turn and the assistant turn of the template
    assert "<|im_start|>" not in request.wrong


def test_trailing_eos_of_any_id_is_stripped(tapo_tokenizer):
    other_eos = tapo_tokenizer.pad_token_id
    batch = _rollout_batch(tapo_tokenizer, [[WRONG]], extra_eos=other_eos)
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    assert response_ids(batch, 0, [tapo_tokenizer.eos_token_id, other_eos]) == ids
    assert response_ids(batch, 0, [tapo_tokenizer.eos_token_id]) == ids + [other_eos]


def test_padding_rows_take_no_part_in_the_loss(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
    padding = build_padding_rows(batch, 3, tapo_tokenizer.pad_token_id)
    assert len(padding) == 3
    assert padding.batch["response_mask"].sum() == 0 and padding.batch["rm_scores"].sum() == 0
    assert padding.batch["attention_mask"].sum(dim=-1).tolist() == [2, 2, 2]
    assert padding.non_tensor_batch[IS_PADDING].all() and not padding.non_tensor_batch[IS_CONSTRUCTED].any()
    assert len(set(padding.non_tensor_batch["uid"])) == 3
    assert not set(padding.non_tensor_batch["uid"]) & set(batch.non_tensor_batch["uid"])
    mark_original_rows(batch)
    joined = DataProto.concat([batch, padding])  # same columns: verl can concatenate them
    assert len(joined) == len(batch) + 3


def test_the_question_is_the_last_user_turn():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    assert question_text(chat) == "What is 2+2?"
    assert question_text(np.array(chat, dtype=object)) == "What is 2+2?"
    with pytest.raises(ValueError, match="no user turn"):
        question_text([{"role": "system", "content": "x"}])


def test_response_width_bounds_constructions(tapo_tokenizer):
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
    config = _config(splicing={"max_response_length": 20})
    result = _augmenter(tapo_tokenizer, config).augment(batch, 0)
    assert result.rows is None
    assert {record["status"] for record in result.records} == {"too_long"}


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
    from recipe_tapo.workers.augmentation import RolloutServerTextSource, SynthesisPlanner, SynthesisRound

    config = _config(synthesis={"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 123}, **config_sections)
    # Stable ids (as under full_determinism), so the client can name the requests it delays or fails.
    planner = SynthesisPlanner(config, tokenizer, RESPONSE_WIDTH, [tokenizer.eos_token_id], stable_request_ids=True)
    source = RolloutServerTextSource(client, tokenizer, temperature=0.7, top_p=0.9, max_new_tokens=123)
    return SynthesisRound(planner, source, step=3, abort=client.abort, resume=client.resume, abort_grace_s=1.0)


def test_rollout_server_requests_carry_prompt_ids_stable_ids_and_the_synthesis_sampling(tapo_tokenizer):
    import asyncio
    import time

    client = _FakeClient(tapo_tokenizer, failing={"tapo-synthesis-s3-1"})
    batch = _rollout_batch(tapo_tokenizer, GROUPS)

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
    batch = _rollout_batch(tapo_tokenizer, GROUPS)

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
        synthesis.submit(_rollout_batch(tapo_tokenizer, GROUPS))
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
        synthesis.submit(_rollout_batch(tapo_tokenizer, GROUPS))
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

    from recipe_tapo.workers.augmentation import SynthesisPlanner, SynthesisRound

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
                return _verbatim_writer(requests, timeout_s)
            finally:
                self.inside.release()

    config = _config()
    source = Recording()
    batch = _rollout_batch(tapo_tokenizer, GROUPS)
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


def _planned_ids(planner, batch, step, group_position=None):
    attempts, _ = planner.plan(batch, step, group_position)
    return [attempt.request.request_id for attempt in attempts if attempt.request]


def test_next_steps_synthesis_goes_to_the_idle_replica_not_the_one_it_went_to_before(tapo_tokenizer):
    """verl's router sends an id it has seen back to the replica it went to, busy or not: each
    step's synthesis ids must be new to it, so they go to the least-loaded replica."""
    from recipe_tapo.workers.augmentation import SynthesisPlanner
    from verl.workers.rollout.router import GlobalRequestLoadBalancer

    planner = SynthesisPlanner(_config(), tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id])
    group = _rollout_batch(tapo_tokenizer, GROUPS[:1])  # one group: two pairs (n_neg 1, two wrong rows)
    router = GlobalRequestLoadBalancer({"replica-0": "handle-0", "replica-1": "handle-1"})
    idle, _ = router.acquire_server("holds-one-replica")  # while it runs, new ids go to the other one
    busy = next(server for server in router.get_all_servers() if server != idle)
    rollouts = [f"rollout-{row}" for row in range(5)]
    for request_id in [*_planned_ids(planner, group, step=1, group_position=0), *rollouts]:
        server, _ = router.acquire_server(request_id)
        assert server == busy
        router.release_server(server)
    router.release_server(idle)
    for request_id in rollouts:  # step 2's rollouts keep their replica (verl's sticky sessions)
        router.acquire_server(request_id)
    assert (router.get_inflight_count(busy), router.get_inflight_count(idle)) == (5, 0)

    step_2 = _planned_ids(planner, group, step=2, group_position=0)
    assert len(step_2) == 2
    assert [router.acquire_server(request_id)[0] for request_id in step_2] == [idle, idle]


def test_request_ids_are_the_same_in_every_run_only_under_full_determinism(tapo_tokenizer):
    from recipe_tapo.workers.augmentation import SynthesisPlanner

    batch = _rollout_batch(tapo_tokenizer, GROUPS)

    def planner(stable):
        return SynthesisPlanner(_config(), tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id],
                                stable_request_ids=stable)

    first, second = planner(True), planner(True)
    assert _planned_ids(first, batch, 3) == _planned_ids(second, batch, 3) == [f"tapo-synthesis-s3-{i}" for i in range(5)]
    assert _planned_ids(first, batch, 3, 1) == _planned_ids(second, batch, 3, 1)
    assert not set(_planned_ids(first, batch, 3)) & set(_planned_ids(first, batch, 4))
    assert not set(_planned_ids(first, batch, 3, 1)) & set(_planned_ids(first, batch, 4, 1))
    # Otherwise every id is new, even for the same step in the same run.
    ids = _planned_ids(planner(False), batch, 3) + _planned_ids(planner(False), batch, 3)
    assert len(set(ids)) == len(ids) == 10
    assert all(request_id.startswith(f"tapo-synthesis-s3-{i % 5}-") for i, request_id in enumerate(ids))


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
    from recipe_tapo.workers.augmentation import RolloutServerTextSource, SynthesisPlanner, SynthesisRound
    from recipe_tapo.workers.cpu_backend.hf_rollout import HFGenerationServer
    from verl.workers.config import HFModelConfig, RolloutConfig

    build_model(str(tmp_path), build_tokenizer(str(tmp_path)))  # the vocabulary of tapo_tokenizer
    server = HFGenerationServer(RolloutConfig(name="hf", prompt_length=512, response_length=8, max_model_len=4096),
                                HFModelConfig(path=str(tmp_path)), replica_rank=0)
    late_id = "tapo-synthesis-s3-0"
    client = _ServerClient(server, transit_s={late_id: 1.3})
    planner = SynthesisPlanner(_config(), tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id],
                               stable_request_ids=True)
    source = RolloutServerTextSource(client, tapo_tokenizer, temperature=1.0, top_p=1.0, max_new_tokens=4)

    async def run():
        synthesis = SynthesisRound(planner, source, step=3, abort_grace_s=1.0,
                                   abort=lambda: server.abort_all_requests(reject_request=reject_request),
                                   resume=server.resume_generation)
        started = time.monotonic()
        synthesis.submit(_rollout_batch(tapo_tokenizer, GROUPS))
        outcome = await synthesis.finish(deadline=started + 0.8)
        return outcome, await asyncio.wait_for(client.deliveries[late_id], timeout=30)

    outcome, late = asyncio.run(run())
    assert outcome.records[0]["status"] == "timeout" and outcome.records[0]["synthesis"] is None
    assert synthesis_metrics(outcome)["tapo/fail/timeout"] >= 1
    if reject_request:
        assert late.stop_reason == "aborted" and late.token_ids == []
    else:
        assert late.stop_reason == "completed" and len(late.token_ids) > 0
