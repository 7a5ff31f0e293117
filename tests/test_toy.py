"""The toy task: chains of additions/subtractions from a 2-digit start, with natural, checkable mistakes."""

import json
import os
import random
from collections import Counter

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe_tapo.config import SplicingConfig, TapoConfig
from recipe_tapo.data.rows import build_prompt
from recipe_tapo.splicing import splice_trajectory
from recipe_tapo.synthesis import build_synthesis_prompt, parse_synthesis_output
from recipe_tapo.toy.build import build_data
from recipe_tapo.toy.task import (
    ChainProblem,
    first_uncaught_wrong_step,
    first_wrong_step,
    is_hard_step,
    kept_step_lines,
    parse_problem,
    sample_problem,
    slip,
    step_line_indices,
    write_solution,
)
from recipe_tapo.toy.teacher import ToyTeacher
from recipe_tapo.workers.synthesis_plan import SynthesisRequest

PROBLEM = ChainProblem((47, 5, 8, 6), ("+", "-", "+"))
TOY_TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "config", "prompts", "toy_synthesis_anchor.txt")


def test_a_right_solution_is_one_step_per_line():
    text, correct = write_solution(PROBLEM, random.Random(0))
    assert text == "47 + 5 = 52\n52 - 8 = 44\n44 + 6 = 50\n\\boxed{50}"
    assert correct and PROBLEM.answer == 50 and first_wrong_step(text) is None
    assert parse_problem(build_prompt(PROBLEM.text)[0]["content"]) == PROBLEM
    assert parse_problem(build_prompt(PROBLEM.text, suffix="")[0]["content"]) == PROBLEM


def test_problems_keep_the_running_total_within_0_to_99():
    rng = random.Random(7)
    problems = [sample_problem(rng) for _ in range(2000)]
    for problem in problems:
        assert 10 <= problem.terms[0] <= 99 and all(2 <= term <= 9 or 11 <= term <= 49 for term in problem.terms[1:])
        assert all(0 <= value <= 99 for value in problem.partial_results())
    assert {len(problem.terms) for problem in problems} == {3, 4, 5}
    assert 0.4 < sum(op == "+" for problem in problems for op in problem.ops) / sum(len(p.ops) for p in problems) < 0.6


def test_a_slip_carries_forward_and_is_found():
    rng = random.Random(3)
    wrong = [write_solution(sample_problem(rng), rng, error_rate=0.5) for _ in range(200)]
    assert 0.3 < sum(not correct for _, correct in wrong) / len(wrong) < 0.95
    for text, correct in wrong:
        step = first_wrong_step(text)
        if not correct:  # a wrong answer always comes from a wrong step (a later slip may cancel one)
            assert step is not None
        if step is not None:
            assert step.line == text.split("\n")[step.line_index]


@pytest.mark.parametrize("value", [0, 7, 59, 100, 147, -31])
def test_a_slip_is_always_wrong(value):
    assert all(slip(value, random.Random(seed)) != value for seed in range(50))


def test_problems_are_deterministic_by_seed():
    assert sample_problem(random.Random(5)) == sample_problem(random.Random(5))


def test_a_wider_range_keeps_the_total_within_0_to_99_and_mixes_term_sizes():
    rng = random.Random(8)
    problems = [sample_problem(rng, 3, 7, two_digit_share=0.5) for _ in range(3000)]
    terms = [term for problem in problems for term in problem.terms[1:]]
    assert all(0 <= value <= 99 for problem in problems for value in problem.partial_results())
    assert all(2 <= term <= 9 or 11 <= term <= 49 for term in terms)
    assert 0.45 < sum(term >= 11 for term in terms) / len(terms) < 0.55
    assert {len(problem.terms) for problem in problems} == {3, 4, 5, 6, 7}


def test_the_default_draws_are_the_toy_tasks_and_share_zero_gives_the_first_toys_terms():
    # other tools (the probe, the quick start, users' checks) sample the training distribution by
    # sample_problem(rng) alone: 3-5 terms, one term in five 2-digit
    assert [sample_problem(random.Random(seed)) for seed in range(50)] == \
        [sample_problem(random.Random(seed), 3, 5, two_digit_share=0.2) for seed in range(50)]
    rng = random.Random(3)
    default_terms = [term for _ in range(2000) for term in sample_problem(rng).terms[1:]]
    assert 0.17 < sum(term >= 11 for term in default_terms) / len(default_terms) < 0.23
    rng = random.Random(3)
    assert all(2 <= term <= 9 for _ in range(500) for term in sample_problem(rng, two_digit_share=0.0).terms[1:])
    problem = ChainProblem((61, 7, 8, 9, 4), ("-", "+", "-", "+"))
    # reflect_rate 0 draws exactly what a solution without the option drew: slips carried forward
    assert [write_solution(problem, random.Random(seed), 0.3) for seed in range(20)] == \
        [write_solution(problem, random.Random(seed), 0.3, reflect_rate=0.0) for seed in range(20)]


def test_hard_steps_are_carries_borrows_and_two_digit_terms():
    assert is_hard_step(47, "+", 5) and is_hard_step(40, "-", 3) and is_hard_step(12, "+", 11)
    assert not is_hard_step(43, "+", 5) and not is_hard_step(47, "-", 3) and not is_hard_step(40, "+", 9)


def test_with_a_hard_step_rate_only_hard_steps_slip_and_without_it_the_draws_are_unchanged():
    rng = random.Random(5)
    for _ in range(300):
        problem = sample_problem(rng)
        text, _ = write_solution(problem, rng, error_rate=0.0, hard_error_rate=1.0)
        steps = [line for line in text.split("\n") if " = " in line]
        values = [problem.terms[0]] + [int(line.rsplit(" = ", 1)[1]) for line in steps]
        for left, op, term, shown in zip(values, problem.ops, problem.terms[1:], values[1:]):
            right = left + term if op == "+" else left - term
            assert (shown != right) == is_hard_step(left, op, term)
    # one rate for both kinds of step draws exactly what the single rate drew: the option spends no draws
    problem = ChainProblem((61, 7, 8, 9, 4), ("-", "+", "-", "+"))
    assert [write_solution(problem, random.Random(seed), 0.3, 0.5) for seed in range(40)] == \
        [write_solution(problem, random.Random(seed), 0.3, 0.5, hard_error_rate=0.3) for seed in range(40)]


def test_the_builder_writes_hard_step_slips_into_the_sft_file(tmp_path):
    import pandas as pd

    from recipe_tapo.toy.build import main

    main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--test", "1", "--sft", "200",
          "--error-rate", "0", "--hard-error-rate", "0.5", "--reflect-rate", "0"])
    slipped = 0
    for messages in pd.read_parquet(tmp_path / "data" / "sft.parquet")["messages"]:
        problem, solution = parse_problem(messages[0]["content"]), messages[-1]["content"]
        values = [problem.terms[0]] + [int(line.rsplit(" = ", 1)[1]) for line in solution.split("\n") if " = " in line]
        for left, op, term, shown in zip(values, problem.ops, problem.terms[1:], values[1:]):
            if shown != (left + term if op == "+" else left - term):
                slipped += 1
                assert is_hard_step(left, op, term)  # easy steps never slip at --error-rate 0
    assert slipped > 50


def test_a_caught_slip_is_reflected_on_and_the_solution_goes_on_from_the_right_value():
    problem = ChainProblem((47, 5, 8, 6), ("+", "-", "+"))
    rng = random.Random(1)
    text, correct = write_solution(problem, rng, error_rate=1.0, reflect_rate=1.0)
    lines = text.split("\n")
    assert correct and len(lines) == 7 and lines[-1] == "\\boxed{50}"
    assert lines[1] == f"Wait, 47 + 5 = 52, not {lines[0].rsplit('= ', 1)[1]}." and lines[2].startswith("52 - 8 = ")
    assert first_wrong_step(text) is not None and first_uncaught_wrong_step(text) is None
    assert kept_step_lines(text) == []  # every step slipped and was caught


@given(seed=st.integers(0, 10_000), reflect_rate=st.sampled_from([0.0, 0.3, 1.0]))
@settings(max_examples=200, deadline=None)
def test_an_answer_is_wrong_exactly_when_a_slip_goes_uncaught(seed, reflect_rate):
    rng = random.Random(seed)
    problem = sample_problem(rng, 3, 6, two_digit_share=0.5)
    text, correct = write_solution(problem, rng, error_rate=0.3, reflect_rate=reflect_rate)
    steps, kept = step_line_indices(text), kept_step_lines(text)
    assert len(steps) == len(problem.ops) and len(steps) - len(kept) == text.count("Wait,")  # caught slips
    found = first_uncaught_wrong_step(text)
    if not correct:
        assert found is not None
    if found is None:  # no uncaught slip: the kept lines are the problem's right steps
        assert correct
    else:
        position, step = found
        assert step.line_index in kept and text.split("\n")[steps[position]] == step.line
        assert problem.terms[position + 1] == step.term and problem.ops[position] == step.op
    if reflect_rate == 1.0:
        assert correct and found is None


def _teacher_request(problem, wrong, mode):
    """A synthesis request on `problem` for `wrong`, with the right solution as its sibling."""
    question = build_prompt(problem.text, suffix="")[0]["content"]
    return SynthesisRequest(0, "u", question, wrong, write_solution(problem, random.Random(0))[0], mode, [], [])


def test_the_teacher_fixes_the_uncaught_slip_after_a_caught_one():
    problem = ChainProblem((51, 5, 9, 8, 9), ("+", "-", "-", "+"))
    wrong = "51 + 5 = 57\nWait, 51 + 5 = 56, not 57.\n56 - 9 = 47\n47 - 8 = 38\n38 + 9 = 47\n\\boxed{47}"
    assert ToyTeacher().write(_teacher_request(problem, wrong, "verbatim")) == (
        "<analysis>56 - 9 = 47 ok. 47 - 8 = 39, not 38.</analysis>\n<reconstruction>\n"
        "51 + 5 = 57\nWait, 51 + 5 = 56, not 57.\n56 - 9 = 47\n47 - 8 = 38\n"
        "Wait, 47 - 8 = 39, not 38.\n39 + 9 = 48\n\\boxed{48}\n</reconstruction>"
    )


def _wrong_and_right(seed=11):
    rng = random.Random(seed)
    problem = sample_problem(rng, 4, 4)
    while True:
        wrong, correct = write_solution(problem, rng, 0.4)
        if not correct and first_wrong_step(wrong):
            return problem, wrong, write_solution(problem, rng)[0]


@pytest.mark.parametrize("mode", ["anchor", "verbatim"])
@pytest.mark.parametrize("prefix_end", ["after_error", "before_error"])
def test_the_teachers_targets_parse_splice_and_are_right(tapo_tokenizer, mode, prefix_end):
    from recipe_tapo.reward.math_reward import compute_score

    problem, wrong, right = _wrong_and_right()
    question = build_prompt(problem.text)[0]["content"]
    teacher = ToyTeacher({"tapo": {"synthesis": {"prefix_end": prefix_end}}}, tapo_tokenizer)
    (output,) = teacher([SynthesisRequest(0, "u", question, wrong, right, mode, [], [])], timeout_s=1)
    parsed = parse_synthesis_output(output.text, mode)
    assert parsed.ok and output.num_tokens > 0
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    spliced = splice_trajectory(wrong, ids, parsed, tapo_tokenizer, SplicingConfig(min_prefix_tokens=1),
                                prefix_end=prefix_end)
    assert spliced.ok, spliced.failure
    step = first_wrong_step(wrong)
    # the analysis checks the wrong answer's steps in order and stops at the first wrong one
    checked = [f"{line} ok." for line in wrong.split("\n")[: step.line_index]]
    wrong_result = step.line.rsplit("= ", 1)[1]
    assert parsed.analysis == " ".join([*checked, f"{step.left} {step.op} {step.term} = {step.correct}, not {wrong_result}."])
    kept = "\n".join(wrong.split("\n")[: step.line_index + (prefix_end == "after_error")])
    assert spliced.text.startswith(kept)
    if prefix_end == "after_error":
        assert spliced.text[len(kept):].lstrip().startswith(f"Wait, {step.left} {step.op} {step.term} = {step.correct}")
    assert compute_score("toy_chain", spliced.text, str(problem.answer))["score"] == 1.0


def test_the_teachers_analysis_checks_each_step_up_to_the_first_wrong_one():
    problem = ChainProblem((51, 5, 9, 9, 9), ("+", "-", "-", "+"))
    wrong = "51 + 5 = 56\n56 - 9 = 47\n47 - 9 = 37\n37 + 9 = 46\n\\boxed{46}"
    assert ToyTeacher().write(_teacher_request(problem, wrong, "anchor")) == (
        "<analysis>51 + 5 = 56 ok. 56 - 9 = 47 ok. 47 - 9 = 38, not 37.</analysis>\n"
        "<anchor>47 - 9 = 37</anchor>\n"
        "<reconstruction>\nWait, 47 - 9 = 38, not 37.\n38 + 9 = 47\n\\boxed{47}\n</reconstruction>"
    )


def test_the_teacher_skips_answers_without_a_wrong_step():
    _, _, right = _wrong_and_right()
    question = build_prompt(PROBLEM.text)[0]["content"]
    assert ToyTeacher()([SynthesisRequest(0, "u", question, "no steps here \\boxed{3}", right, "anchor", [], [])], 1) == [None]


def test_the_toy_template_is_short_and_complete(tapo_tokenizer):
    config = TapoConfig.from_dict({"synthesis": {"mode": "anchor", "template_path": TOY_TEMPLATE}}).synthesis
    problem, wrong, right = _wrong_and_right()
    prompt = build_synthesis_prompt(build_prompt(problem.text)[0]["content"], wrong, right, tapo_tokenizer, config)
    assert prompt.ok and "Fix the first wrong step." in prompt.messages[0]["content"]
    assert len(prompt.messages[0]["content"]) < 600


def test_splits_are_disjoint_rows_and_sft_chats(tmp_path):
    paths = build_data(str(tmp_path), seed=0, train=50, val=10, test=20, sft=30, error_rate=0.2)
    frames = {name: pd.read_parquet(path) for name, path in paths.items()}
    problems = {name: {row["problem"] for row in frame["extra_info"]} for name, frame in frames.items() if name != "sft"}
    assert not problems["train"] & problems["test"] and not problems["val"] & problems["test"]
    assert len(frames["train"]) == 50 and set(frames["train"]["data_source"]) == {"toy_chain"}
    chats = frames["sft"]["messages"]
    assert len(chats) == 30 and all(chat[-1]["role"] == "assistant" for chat in chats)
    # the prompt is the bare problem, in the RL rows and the SFT chats alike
    assert list(frames["train"]["prompt"][0]) == [{"role": "user", "content": frames["train"]["extra_info"][0]["problem"]}]
    assert all(chat[0]["content"].startswith("Compute ") and chat[0]["content"].endswith(".") for chat in chats)
    sft_problems = {parse_problem(chat[0]["content"]).text for chat in chats}
    assert not sft_problems & (problems["test"] | problems["val"] | problems["train"])


def test_a_template_shipped_in_a_package_is_named_without_an_absolute_path():
    config = TapoConfig.from_dict(
        {"synthesis": {"mode": "anchor", "template_path": "pkg://recipe_tapo.conf/prompts/toy_synthesis_anchor.txt"}}
    )
    from recipe_tapo.synthesis import load_template

    assert load_template(config.synthesis) == open(TOY_TEMPLATE, encoding="utf-8").read()
    with pytest.raises(ValueError, match="no such file"):
        TapoConfig.from_dict({"synthesis": {"template_path": "pkg://recipe_tapo.conf/prompts/missing.txt"}})
    with pytest.raises(ValueError, match="no package"):
        TapoConfig.from_dict({"synthesis": {"template_path": "pkg://no_such_package_xyz/t.txt"}})


def test_the_report_skips_broken_jsonl_lines(tmp_path, capsys):
    from recipe_tapo.toy.report import _read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n\xff\xfe\n{"step": 2, "text": "\\ud800"}\n[1, 2]\n{"step": 3, "cut sh')
    assert _read_jsonl(str(path)) == [{"step": 1}, {"step": 2, "text": "\ud800"}]
    assert capsys.readouterr().err.count("skipped") == 3


CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipe_tapo", "toy", "cold_start_model")
BEFORE_ERROR_TEMPLATE = os.path.join(os.path.dirname(TOY_TEMPLATE), "toy_synthesis_verbatim_before_error.txt")


@pytest.mark.parametrize("prefix_end", ["after_error", "before_error"])
def test_the_teacher_is_a_trainer_text_source(prefix_end):
    """The tapo_teacher arm (`tapo.synthesis.text_source=recipe_tapo.toy.teacher.ToyTeacher`): the teacher
    built as the trainer builds it (cls(trainer_config, tokenizer), from the toy profile), its outputs
    through the trainer's own augmenter: every wrong answer of a group in the DCS band becomes a
    constructed row that is the wrong answer's own ids up to the cut and scores right."""
    from transformers import AutoTokenizer
    from verl.utils.import_utils import load_class_from_fqn

    from recipe_tapo.cold_start import DEFAULT_REWARD, compose_run_config, load_reward, make_score_fn, prepare_problems, rollout_batch
    from recipe_tapo.config import TapoConfig
    from recipe_tapo.data.rows import make_row
    from recipe_tapo.trainer import eos_token_ids
    from recipe_tapo.workers.synthesis_plan import OK
    from recipe_tapo.workers.synthesis_round import TrajectoryAugmenter

    overrides = ["profile=[tiny_cpu,toy_run]", "tapo.synthesis.text_source=recipe_tapo.toy.teacher.ToyTeacher",
                 f"tapo.synthesis.prefix_end={prefix_end}"]
    if prefix_end == "before_error":
        overrides.append(f"tapo.synthesis.template_path={BEFORE_ERROR_TEMPLATE}")
    config = compose_run_config("tapo_trainer", overrides, CHECKPOINT)
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    tapo = TapoConfig.from_omegaconf(config.tapo)
    teacher = load_class_from_fqn(tapo.synthesis.text_source, "synthesis text source")(config, tokenizer)
    assert teacher.prefix_end == prefix_end

    rng = random.Random(4)
    problem = sample_problem(rng, 4, 4)
    answers = [write_solution(problem, rng)[0] for _ in range(3)]
    while len(answers) < 8:  # 3 right and 5 wrong: inside the DCS band (>= 2 right, >= 4 wrong)
        wrong, correct = write_solution(problem, rng, 0.5)
        if not correct and first_wrong_step(wrong):
            answers.append(wrong)
    row = make_row("toy_chain", problem.text, str(problem.answer), "train", 0, "train-0", suffix="")
    (chat,) = prepare_problems([row], tokenizer, {}, 64, skipped=Counter())
    eos_ids = eos_token_ids(tokenizer, CHECKPOINT)
    correct = [[index < 3 for index in range(8)]]
    samples = [[tokenizer.encode(answer, add_special_tokens=False) + [eos_ids[0]] for answer in answers]]
    batch = rollout_batch([chat], samples, tokenizer, 128, eos_ids, correct, [[float(c) for c in correct[0]]], "t")
    score = make_score_fn(load_reward(DEFAULT_REWARD), tokenizer, eos_ids)
    augmenter = TrajectoryAugmenter(tapo, tokenizer, response_length=128, eos_token_ids=eos_ids, text_source=teacher,
                                    score_fn=score)
    augmentation = augmenter.augment(batch, step=1)
    assert [record["status"] for record in augmentation.records] == [OK] * tapo.selection.m_max
    assert all(record["acc"] for record in augmentation.records)
    assert len(augmentation.rows) == tapo.selection.m_max
    for record in augmentation.records:
        kept = record["wrong"].split("\n")[: first_wrong_step(record["wrong"]).line_index + (prefix_end == "after_error")]
        assert record["trajectory"].startswith("\n".join(kept))
        assert ("Wait," in record["trajectory"]) == (prefix_end == "after_error")


def test_the_report_gives_t_intervals_and_paired_differences():
    from recipe_tapo.toy.report import fmt_interval, paired_differences, t_interval

    mean, half = t_interval([50.0, 52.0, 54.0])  # std 2, n 3: t(2) = 4.303
    assert mean == 52.0 and abs(half - 4.303 * 2 / 3 ** 0.5) < 1e-9
    assert fmt_interval(mean, half) == "[47.0, 57.0]"
    assert t_interval([51.0]) == (51.0, None) and fmt_interval(51.0, None) == "n/a"
    assert t_interval([]) == (None, None)
    assert paired_differences({"0": 55.0, "1": 50.0, "2": None}, {"0": 52.0, "1": 51.0, "2": 49.0}) == [3.0, -1.0]


def test_the_report_adds_every_arm_and_seed_a_shared_results_folder_evaluated(tmp_path):
    # Two work folders keep results in one folder; each invocation's report covers both.
    from recipe_tapo.toy.report import with_evaluated

    stages = tmp_path / ".stages"
    stages.mkdir()
    for name in ("eval_cold_start", "eval_grpo_s0", "eval_grpo_s10", "eval_tapo_teacher_s2", "rl_opsd_s3",
                 "eval_my_arm_s1", "probe_tapo_s4"):
        (stages / f"{name}.done").write_text("1")
    arms, seeds = with_evaluated(str(tmp_path), ["tapo_no_ots", "tapo"], ["1"])
    # the script's order, unknown arms last; seeds by number; unfinished runs (no eval marker) left out
    assert arms == ["grpo", "tapo", "tapo_teacher", "tapo_no_ots", "my_arm"]
    assert seeds == ["0", "1", "2", "10"]
    assert with_evaluated(str(tmp_path / "elsewhere"), ["tapo", "grpo"], ["2", "0"]) == (["grpo", "tapo"], ["0", "2"])


def test_the_reports_command_line_adds_the_evaluated_arms(tmp_path):
    # What the script runs after every invocation: its own arm and seed, plus the other lane's.
    from recipe_tapo.toy.report import main

    (tmp_path / ".stages").mkdir()
    for name in ("eval_grpo_s0", "eval_tapo_s1"):
        (tmp_path / ".stages" / f"{name}.done").write_text("1")
    main(["--work-dir", str(tmp_path), "--arms", "tapo", "--seeds", "1", "--add-evaluated", "--rl-steps", "2"])
    report = (tmp_path / "report.md").read_text()
    assert "Arms: grpo, tapo; seeds: 0, 1;" in report and "| grpo | 0/2 |" in report
    main(["--work-dir", str(tmp_path), "--arms", "tapo", "--seeds", "1", "--rl-steps", "2"])
    assert "Arms: tapo; seeds: 1;" in (tmp_path / "report.md").read_text()


def test_the_reports_line_of_pass1_against_the_reflecting_share():
    from recipe_tapo.toy.report import linear_fit

    slope, intercept, r = linear_fit([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
    assert (slope, intercept, r) == pytest.approx((2.0, 1.0, 1.0))
    slope, intercept, r = linear_fit([0.0, 10.0, 20.0, 30.0], [95.0, 92.0, 94.0, 85.0])
    # centred: sxx 500, syy 61, sxy -140
    assert slope == pytest.approx(-0.28) and intercept == pytest.approx(95.7)
    assert r == pytest.approx(-140 / (500 * 61) ** 0.5)
    assert linear_fit([1.0, 2.0], [3.0, 4.0]) is None  # two points always fit
    assert linear_fit([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]) is None  # no spread


def test_the_report_counts_inserted_right_and_reflecting_constructions():
    from recipe_tapo.toy.report import arm_label, construction_counts

    wrong = "47 + 5 = 53\n53 - 8 = 45\n\\boxed{45}"
    records = [{"status": "ok", "acc": True, "wrong": wrong,
                "trajectory": "47 + 5 = 53\nWait, 47 + 5 = 52, not 53.\n52 - 8 = 44\n\\boxed{44}"},
               # the copy rewrote the wrong step, then "reflected" on the right value: reflecting, not in TAPO's form
               {"status": "ok", "acc": True, "wrong": wrong,
                "trajectory": "47 + 5 = 52\nWait, 47 + 5 = 52, not 52.\n52 - 8 = 44\n\\boxed{44}"},
               {"status": "ok", "acc": False, "wrong": wrong, "trajectory": "47 + 5 = 52\n\\boxed{51}"},
               {"status": "prefix_too_short", "acc": None, "wrong": wrong, "trajectory": "4"}]
    assert construction_counts(records) == {"inserted": 3, "right": 2, "reflecting": 2, "opening_with_reflection": 1}
    assert arm_label("tapo_teacher") == "tapo_teacher (oracle/upper bound, not TAPO)" and arm_label("grpo") == "grpo"


def test_the_report_shows_the_opsd_arms_logged_metrics_per_step(tmp_path):
    from recipe_tapo.toy.report import collect, render

    run = tmp_path / "runs" / "opsd_s0"
    run.mkdir(parents=True)
    lines = [{"step": 1, "data": {"opsd/kl_estimate": 1.1, "opsd/teacher_row_share": 1.0, "opsd/context/reference": 1.0}},
             {"step": 2, "data": {"opsd/kl_estimate": 0.9, "opsd/teacher_row_share": 1.0, "opsd/context/reference": 1.0}}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = render(collect(str(tmp_path), ["opsd"], ["0"]), ["opsd"], ["0"], rl_steps=2, quick=True, command="x")
    assert "| opsd (privileged-context self-distillation) | 0/1 |" in report  # a real arm, not evaluated here
    assert "## OPSD: the teacher signal during RL" in report and "## TAPO" not in report
    # only the keys the run logged, in the report's order
    assert "| step | kl_estimate | teacher_row_share | context/reference |" in report
    assert "| 1 | 1.100 | 1.000 | 1.000 |" in report and "| 2 | 0.900 | 1.000 | 1.000 |" in report


@pytest.mark.parametrize("args, message", [
    (["--reflect-rate", "1.5"], "--reflect-rate and --two-digit-share must be in [0, 1], got 1.5 and 0.2"),
    (["--two-digit-share", "-0.1"], "--reflect-rate and --two-digit-share must be in [0, 1], got 0.5 and -0.1"),
    (["--hard-error-rate", "1.0"], "--hard-error-rate must be in [0, 1), got 1.0"),
    (["--min-terms", "5", "--max-terms", "4"], "--min-terms and --max-terms need 2 <= min <= max, got 5 and 4"),
])
def test_the_builder_refuses_options_that_cannot_work(tmp_path, capsys, args, message):
    from recipe_tapo.toy.build import main

    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), *args])
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_a_run_of_digits_too_long_for_int_is_no_step_and_no_problem():
    from recipe_tapo.toy.probe import cut_after_hard_step
    from recipe_tapo.toy.task import first_wrong_step, is_hard_step_line, parse_problem, step_line_indices

    huge = "1" * 5000
    assert is_hard_step_line(f"{huge} + 2 = 3") is None and is_hard_step_line("47 + 5 = 52") is True
    assert first_wrong_step(f"{huge} + 2 = 3\n4 + 1 = 6").line_index == 1
    assert step_line_indices(f"{huge} + 2 = 3\n4 + 1 = 5") == [1]
    assert parse_problem(f"Compute {huge} + 2.") is None
    assert cut_after_hard_step(f"47 + 5 = 52\n{huge} - 1 = 0\n") is None
    assert cut_after_hard_step("\udc80 broken\n47 + 5 = 52\n") is True


def test_the_report_tables_tapos_mechanism_per_arm_over_steps_then_seeds(tmp_path):
    from recipe_tapo.toy.report import MECHANISM_KEYS, collect, render, run_mechanism

    # Seed 0: constructions on step 2 only (step 1 logs constructed_acc 0 without any: left out).
    steps = {1: {"tapo/eligible_groups": 1.0, "tapo/constructed_rows": 0.0, "tapo/constructed_token_share": 0.0,
                 "tapo/constructed_acc": 0.0, "tapo/loss_scale/original": 1.0, "tapo/entropy/original": 0.2},
             2: {"tapo/eligible_groups": 3.0, "tapo/constructed_rows": 4.0, "tapo/constructed_token_share": 0.04,
                 "tapo/constructed_acc": 0.75, "tapo/ots_weight_median/first_inserted": 0.3,
                 "tapo/ots_weight_mean/inserted": 0.9, "tapo/loss_scale/original": 1.0,
                 "tapo/loss_scale/constructed": 30.0, "tapo/entropy/original": 0.4, "tapo/entropy/constructed": 0.5}}
    means = run_mechanism(steps)
    assert means["tapo/eligible_groups"] == 2.0 and means["tapo/constructed_token_share"] == pytest.approx(0.02)
    assert means["tapo/ots_weight_median/first_inserted"] == 0.3 and means["tapo/constructed_acc"] == 0.75
    assert run_mechanism({1: {}})["tapo/constructed_rows"] is None
    for seed, shift in (("0", 0.0), ("1", 1.0)):
        run = tmp_path / "runs" / f"tapo_s{seed}"
        run.mkdir(parents=True)
        lines = [{"step": step, "data": {key: value + (0.0 if key == "tapo/constructed_rows" else shift)
                                         for key, value in data.items()}} for step, data in steps.items()]
        (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = render(collect(str(tmp_path), ["grpo", "tapo"], ["0", "1"]), ["grpo", "tapo"], ["0", "1"], rl_steps=2,
                    quick=True, command="x")
    assert "## TAPO's mechanism over the runs" in report
    assert "| arm | " + " | ".join(name for _, name in MECHANISM_KEYS) + " |" in report
    # eligible groups 2.0 and 3.0 over the two seeds: 2.5 ± 0.707; the first inserted token's OTS 0.3 and 1.3
    assert "| tapo | 2.500 ± 0.707 | 2.000 ± 0.000 | 0.520 ± 0.707 | 1.250 ± 0.707 | 0.800 ± 0.707 |" in report
    assert "| grpo |" not in report.split("## TAPO's mechanism")[1].split("##")[0]
