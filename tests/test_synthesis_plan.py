"""Planning a step's synthesis: DCS pairs, prompts and request ids, then parse and splice of the
answers, counted by reason (workers/synthesis_plan.py; no Ray, no trainer)."""

import numpy as np
import pytest

from recipe_tapo.workers.synthesis_plan import (
    ATTEMPT_STATUSES,
    GeneratedText,
    SynthesisPlanner,
    question_text,
    response_ids,
)

from rollout_batches import (
    GROUPS,
    RESPONSE_WIDTH,
    RIGHT,
    WRONG,
    make_augmenter,
    tapo_config,
    verbatim_writer,
    verl_rollout_batch,
)


def test_the_draw_depends_only_on_seed_and_step(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, [[RIGHT, WRONG, WRONG, WRONG, RIGHT, WRONG]])
    config = tapo_config(selection={"m_max": 2})

    def chosen(step):
        records = make_augmenter(tapo_tokenizer, config).augment(batch, step).records
        return tuple((record["wrong_row"], record["right_row"]) for record in records)

    assert chosen(5) == chosen(5)
    draws = {chosen(step) for step in range(8)}
    assert len(draws) > 1


def test_unparsable_and_failed_requests_are_counted_by_reason(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    answers = iter(
        [
            GeneratedText("no tags at all", 4),
            None,
            GeneratedText("<analysis>x</analysis><reconstruction></reconstruction>", 9),
            GeneratedText("", 0),
            GeneratedText("<reconstruction>Something else entirely \\boxed{57}</reconstruction>", 12),
        ]
    )
    result = make_augmenter(tapo_tokenizer, writer=lambda requests, timeout: [next(answers) for _ in requests]).augment(
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


def test_one_bad_attempt_does_not_stop_the_others(tapo_tokenizer, monkeypatch):
    import recipe_tapo.workers.synthesis_plan as synthesis_plan

    real = synthesis_plan.splice_trajectory
    calls = []

    def splice_failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("unexpected")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthesis_plan, "splice_trajectory", splice_failing_once)
    result = make_augmenter(tapo_tokenizer).augment(verl_rollout_batch(tapo_tokenizer, GROUPS), 0)
    assert [record["status"] for record in result.records].count("error") == 1
    assert len(result.rows) == 4


def test_a_question_the_tokenizer_refuses_fails_its_pair_not_the_round(tapo_tokenizer):
    """A lone surrogate cannot be tokenised (HF raises TypeError): that pair is ERROR, the others go on."""
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    prompts = batch.non_tensor_batch["raw_prompt"]
    bad_group_rows = range(len(GROUPS[0]))
    for row in bad_group_rows:
        prompts[row] = [{"role": "user", "content": "What is 2 + \ud800 3?"}]
    result = make_augmenter(tapo_tokenizer).augment(batch, 0)
    statuses = [(record["wrong_row"] in bad_group_rows, record["status"]) for record in result.records]
    assert all(status == "error" for bad, status in statuses if bad) and any(bad for bad, _ in statuses)
    assert any(status == "ok" for bad, status in statuses if not bad)


def test_synthesis_prompts_carry_no_special_token_from_a_response(tapo_tokenizer):
    im_start = tapo_tokenizer.convert_tokens_to_ids("<|im_start|>")
    wrong_ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    # A response with a special token in its middle, and one spelling it in ordinary characters.
    polluted = tapo_tokenizer.decode(wrong_ids[:5] + [im_start] + wrong_ids[5:]) + "<|im_start|>"
    batch = verl_rollout_batch(tapo_tokenizer, [[RIGHT, polluted]])
    seen = []

    def recording(requests, timeout_s):
        seen.extend(requests)
        return verbatim_writer(requests, timeout_s)

    make_augmenter(tapo_tokenizer, writer=recording).augment(batch, 0)
    (request,) = seen
    template_only = tapo_tokenizer.apply_chat_template(
        request.messages, add_generation_prompt=True, tokenize=True
    )
    template_only = list(template_only["input_ids"] if hasattr(template_only, "keys") else template_only)
    assert request.prompt_ids == template_only
    assert request.prompt_ids.count(im_start) == 2  # the user turn and the assistant turn of the template
    assert "<|im_start|>" not in request.wrong


def test_response_width_bounds_constructions(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    config = tapo_config(splicing={"max_response_length": 20})
    result = make_augmenter(tapo_tokenizer, config).augment(batch, 0)
    assert result.rows is None
    assert {record["status"] for record in result.records} == {"too_long"}


def test_trailing_eos_of_any_id_is_stripped(tapo_tokenizer):
    other_eos = tapo_tokenizer.pad_token_id
    batch = verl_rollout_batch(tapo_tokenizer, [[WRONG]], extra_eos=other_eos)
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    assert response_ids(batch, 0, [tapo_tokenizer.eos_token_id, other_eos]) == ids
    assert response_ids(batch, 0, [tapo_tokenizer.eos_token_id]) == ids + [other_eos]


def test_the_question_is_the_last_user_turn():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    assert question_text(chat) == "What is 2+2?"
    assert question_text(np.array(chat, dtype=object)) == "What is 2+2?"
    with pytest.raises(ValueError, match="no user turn"):
        question_text([{"role": "system", "content": "x"}])


def _planned_ids(planner, batch, step, group_position=None):
    attempts, _ = planner.plan(batch, step, group_position)
    return [attempt.request.request_id for attempt in attempts if attempt.request]


def test_next_steps_synthesis_goes_to_the_idle_replica_not_the_one_it_went_to_before(tapo_tokenizer):
    """verl's router sends an id it has seen back to the replica it went to, busy or not: each
    step's synthesis ids must be new to it, so they go to the least-loaded replica."""
    from verl.workers.rollout.router import GlobalRequestLoadBalancer

    planner = SynthesisPlanner(tapo_config(), tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id])
    group = verl_rollout_batch(tapo_tokenizer, GROUPS[:1])  # one group: two pairs (n_neg 1, two wrong rows)
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

    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)

    def planner(stable):
        return SynthesisPlanner(tapo_config(), tapo_tokenizer, RESPONSE_WIDTH, [tapo_tokenizer.eos_token_id],
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
