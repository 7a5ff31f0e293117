"""The toy's forced-prefix recovery probe: the cut, the classification, the intervals, end to end."""

import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe_tapo.evaluation.sampling import ScoredRow
from recipe_tapo.toy.probe import (
    RIGHT_LINE,
    WRONG_LINE,
    classify,
    clustered_share,
    cut_after_hard_step,
    cut_after_line,
    load_probe_set,
    main,
    probe_records,
    right_line_prefix,
    summarize,
    wilson_interval,
    wrong_line_prefix,
)
from recipe_tapo.toy.task import (
    REFLECTION_OPENER,
    ChainProblem,
    begins_reflection,
    first_wrong_step,
    reflection_line,
    sample_problem,
    step_line_indices,
    write_solution,
)

REPO = os.path.dirname(os.path.dirname(__file__))
COLD_START = os.path.join(REPO, "recipe_tapo", "toy", "cold_start_model")


def _answer(seed: int, error_rate: float) -> tuple[str, bool]:
    rng = random.Random(seed)
    return write_solution(sample_problem(rng), rng, error_rate)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9))
def test_a_wrong_prefix_is_the_answer_through_its_first_wrong_line_and_its_line_break(seed):
    answer, _ = _answer(seed, 0.5)
    step = first_wrong_step(answer)
    prefix = wrong_line_prefix(answer)
    if step is None:
        assert prefix is None
        return
    assert prefix == "\n".join(answer.split("\n")[: step.line_index + 1]) + "\n"
    assert answer.startswith(prefix) and prefix.endswith(step.line + "\n")
    assert first_wrong_step(prefix) == step  # the cut keeps the wrong line, and nothing wrong before it


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab= 1\\{}", max_size=6), min_size=1, max_size=6), st.integers(0, 8))
def test_a_cut_keeps_the_lines_through_the_index_and_its_line_break(lines, index):
    answer = "\n".join(lines)
    prefix = cut_after_line(answer, index)
    if index >= len(lines) - 1:
        assert prefix is None  # no line break follows the last line
    else:
        assert prefix.split("\n")[:-1] == lines[: index + 1] and prefix.endswith("\n") and answer.startswith(prefix)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9))
def test_a_right_prefix_ends_after_a_step_line_of_an_answer_without_wrong_lines(seed):
    answer, _ = _answer(seed, 0.3)
    prefix = right_line_prefix(answer, random.Random(seed))
    if first_wrong_step(answer) is not None:
        assert prefix is None
        return
    assert answer.startswith(prefix) and prefix.endswith("\n")
    assert len(prefix.split("\n")) - 2 in step_line_indices(answer)  # cut after a step line, never the \boxed line


def test_a_continuation_reflects_when_its_first_line_opens_with_the_constructions_wording():
    step = first_wrong_step("47 + 5 = 52\n52 - 8 = 45\n45 + 6 = 51\n\\boxed{51}")
    line = reflection_line(step)
    assert line == "Wait, 52 - 8 = 44, not 45." and begins_reflection(line + "\n44 + 6 = 50\n\\boxed{50}")
    assert begins_reflection("  Wait, that is off")
    assert not begins_reflection("45 + 6 = 51\nWait, 52 - 8 = 44, not 45.")  # a later reflection is not the probe's
    assert not begins_reflection("wait, lower case") and not begins_reflection("Waiting") and not begins_reflection("")


def test_the_synthesis_template_names_the_opener_the_probe_counts():
    with open(os.path.join(REPO, "config", "prompts", "toy_synthesis_verbatim.txt"), encoding="utf-8") as handle:
        assert f"then {REFLECTION_OPENER} ..." in handle.read()


def test_a_continuation_is_classified_by_its_first_line_and_its_final_answer():
    record = {"prefix": "47 + 5 = 52\n52 - 8 = 45\n", "ground_truth": "50", "data_source": "toy_chain"}

    def boxed(data_source, text, truth):
        return text.rsplit("\\boxed{", 1)[-1].rstrip("}") == truth

    assert classify(record, "Wait, 52 - 8 = 44, not 45.\n44 + 6 = 50\n\\boxed{50}", boxed) == {"reflects": True, "right": True}
    assert classify(record, "45 + 6 = 51\n\\boxed{51}", boxed) == {"reflects": False, "right": False}
    assert classify(record, "Wait, 52 - 8 = 44, not 45.\n44 + 6 = 51\n\\boxed{51}", boxed) == {"reflects": True, "right": False}


def test_the_math_reward_scores_the_prefix_and_continuation_together():
    from recipe_tapo.toy.probe import math_reward_verdict

    assert math_reward_verdict("toy_chain", "47 + 5 = 52\n52 - 8 = 45\nWait, 52 - 8 = 44, not 45.\n44 + 6 = 50\n\\boxed{50}", "50")
    assert not math_reward_verdict("toy_chain", "47 + 5 = 52\n52 - 8 = 45\n45 + 6 = 51\n\\boxed{51}", "50")


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(5, 10)
    assert abs(low - 0.2366) < 1e-4 and abs(high - 0.7634) < 1e-4
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and abs(high - 0.2775) < 1e-4
    with pytest.raises(ValueError, match="need 0 <= count <= total"):
        wilson_interval(3, 2)


def test_the_cluster_bootstrap_widens_for_correlated_continuations():
    # 40 prefixes x 4: all-or-nothing prefixes (perfectly correlated) against the same share spread evenly
    correlated = clustered_share([(4, 4)] * 10 + [(0, 4)] * 30, seed=0)
    spread = clustered_share([(1, 4)] * 40, seed=0)
    assert correlated.value == spread.value == 0.25
    assert correlated.method == "cluster bootstrap over 40 prefixes"
    assert correlated.low < 0.25 < correlated.high
    assert spread.high - spread.low < 1e-9  # identical prefixes: no spread between them
    assert correlated.high - correlated.low > 0.2  # about as wide as 40 draws, not 160
    assert clustered_share([(4, 4)] * 10 + [(0, 4)] * 30, seed=0) == correlated  # seeded


def test_a_share_of_none_or_all_gets_the_wilson_interval_over_prefixes():
    none = clustered_share([(0, 4)] * 10)
    assert (none.count, none.total, none.low) == (0, 40, 0.0)
    assert abs(none.high - wilson_interval(0, 10)[1]) < 1e-12 and none.method == "Wilson over 10 prefixes"
    every = clustered_share([(2, 2)] * 10)
    assert every.high == 1.0 and abs(every.low - wilson_interval(10, 10)[0]) < 1e-12
    assert clustered_share([(0, 0), (0, 0)]) is None and clustered_share([]) is None


def _verdicts(kind, index, pairs):
    return [{"kind": kind, "prefix_index": index, "reflects": reflects, "right": right} for reflects, right in pairs]


def test_the_summary_counts_each_share_over_its_own_continuations():
    verdicts = (_verdicts(WRONG_LINE, 0, [(True, True), (True, False), (False, False), (False, True)])
                + _verdicts(WRONG_LINE, 1, [(False, False)] * 4)
                + _verdicts(RIGHT_LINE, 2, [(True, True), (False, True), (False, True), (False, True)]))
    summary = summarize(verdicts, {WRONG_LINE: [0.2, 0.4], RIGHT_LINE: [0.01]})
    assert (summary["wrong_line_prefixes"], summary["right_line_prefixes"]) == (2, 1)
    assert (summary["reflect_after_wrong"]["count"], summary["reflect_after_wrong"]["total"]) == (2, 8)
    assert (summary["right_after_wrong"]["count"], summary["right_after_wrong"]["total"]) == (2, 8)
    assert (summary["right_among_reflecting"]["count"], summary["right_among_reflecting"]["total"]) == (1, 2)
    assert (summary["false_alarm"]["count"], summary["false_alarm"]["total"]) == (1, 4)
    assert abs(summary["reflection_token_probability_after_wrong"] - 0.3) < 1e-12
    assert summary["reflection_token_probability_after_right"] == 0.01


def test_the_split_by_the_cut_step_counts_hard_and_easy_prefixes_apart():
    def tagged(kind, index, hard, pairs):
        return [{**verdict, "hard_step": hard} for verdict in _verdicts(kind, index, pairs)]

    verdicts = (tagged(WRONG_LINE, 0, True, [(True, True), (False, False)])
                + tagged(WRONG_LINE, 1, False, [(False, False)] * 2)
                + tagged(RIGHT_LINE, 2, True, [(True, True), (False, True)])
                + tagged(RIGHT_LINE, 3, True, [(False, True)] * 2)
                + tagged(RIGHT_LINE, 4, None, [(True, True)] * 2))  # no step line: in neither half
    summary = summarize(verdicts, {})
    counts = {key: (summary[key]["count"], summary[key]["total"]) for key in
              ("reflect_after_wrong_hard", "reflect_after_wrong_easy", "false_alarm_hard")}
    assert counts == {"reflect_after_wrong_hard": (1, 2), "reflect_after_wrong_easy": (0, 2), "false_alarm_hard": (1, 4)}
    assert summary["false_alarm_easy"] is None
    assert (summary["false_alarm"]["count"], summary["false_alarm"]["total"]) == (3, 6)


def test_the_cut_line_is_hard_after_a_carry_a_borrow_or_a_two_digit_term():
    assert cut_after_hard_step("47 + 5 = 52\n") and cut_after_hard_step("40 + 5 = 45\n45 - 27 = 17\n")
    assert cut_after_hard_step("52 - 8 = 45\n")  # a borrow, though the line is wrong
    assert cut_after_hard_step("40 + 5 = 45\n") is False and cut_after_hard_step("\\boxed{45}\n") is None


def test_without_reflections_the_share_right_among_them_is_missing_not_zero():
    summary = summarize(_verdicts(WRONG_LINE, 0, [(False, True)] * 2), {})
    assert summary["right_among_reflecting"] is None and summary["false_alarm"] is None
    assert summary["reflection_token_probability_after_right"] is None


def _row(problem: ChainProblem, index: int) -> dict:
    return {"prompt": [{"role": "user", "content": problem.text}], "reward_model": {"ground_truth": str(problem.answer)},
            "data_source": "toy_chain", "extra_info": {"index": f"test-{index}"}}


def test_the_probe_set_takes_one_prefix_of_each_kind_per_problem_at_most_the_cap():
    rng = random.Random(4)
    problems = [sample_problem(rng, 4, 4) for _ in range(12)]
    rows, scored = [], []
    for index, problem in enumerate(problems):
        right = write_solution(problem, random.Random(0))[0]
        wrong = right.replace(f"= {problem.partial_results()[1]}\n", f"= {problem.partial_results()[1] + 1}\n", 1)
        rows.append(_row(problem, index))
        scored.append(ScoredRow(index, f"test-{index}", "toy_chain", [wrong, wrong, right, right], [False, False, True, True]))
    records = probe_records(rows, scored, max_prefixes=5, seed=0)
    assert [record["kind"] for record in records] == [WRONG_LINE] * 5 + [RIGHT_LINE] * 5
    for kind in (WRONG_LINE, RIGHT_LINE):
        assert len({record["problem_id"] for record in records if record["kind"] == kind}) == 5
    for record in records:
        assert record["answer"].startswith(record["prefix"]) and record["prompt"][0]["content"].startswith("Compute")
        if record["kind"] == WRONG_LINE:
            assert record["prefix"] == wrong_line_prefix(record["answer"]) and record["prefix"].count("\n") == 2
    assert probe_records(rows, scored, max_prefixes=5, seed=0) == records
    assert probe_records(rows, scored, max_prefixes=5, seed=1) != records


def test_a_bad_probe_set_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no such probe set"):
        load_probe_set(str(tmp_path / "missing.jsonl"))
    path = tmp_path / "bad.jsonl"
    path.write_text('{"kind": "wrong_line", "prompt": [], "prefix": "1\\n"}\n')
    with pytest.raises(SystemExit, match=r"line 1: missing \['ground_truth'\]"):
        load_probe_set(str(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(SystemExit, match="line 1: not a probe record"):
        load_probe_set(str(path))


def test_a_count_below_one_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--model", COLD_START, "--probe-set", "x.jsonl", "--out-dir", "out", "--k", "0"])
    assert "--k must be at least 1, got 0" in capsys.readouterr().err


def test_an_empty_probe_set_gives_missing_figures_not_a_failure(tmp_path):
    probe_set = tmp_path / "empty.jsonl"
    probe_set.write_text("")
    main(["run", "--model", COLD_START, "--probe-set", str(probe_set), "--out-dir", str(tmp_path / "probe"), "--k", "2"])
    metrics = json.loads((tmp_path / "probe" / "probe_results.json").read_text())["metrics"]
    assert metrics["wrong_line_prefixes"] == 0 and metrics["reflect_after_wrong"] is None
    assert metrics["reflection_token_probability_after_wrong"] is None


def test_the_probe_builds_and_runs_on_the_shipped_cold_start(tmp_path):
    from recipe_tapo.toy.build import build_data

    data = build_data(str(tmp_path / "data"), seed=0, train=1, val=1, test=40, sft=0, error_rate=0.0)
    probe_set = str(tmp_path / "probe_set.jsonl")
    main(["build", "--model", COLD_START, "--data", data["test"], "--out", probe_set, "--prefixes", "4", "--samples", "2"])
    records = load_probe_set(probe_set)
    kinds = [record["kind"] for record in records]
    assert kinds.count(WRONG_LINE) == 4 and kinds.count(RIGHT_LINE) == 4
    main(["run", "--model", COLD_START, "--probe-set", probe_set, "--out-dir", str(tmp_path / "probe"), "--k", "2"])
    result = json.loads((tmp_path / "probe" / "probe_results.json").read_text())
    metrics = result["metrics"]
    assert result["k"] == 2 and result["temperature"] == 1.0
    assert metrics["reflect_after_wrong"]["total"] == 8 and metrics["false_alarm"]["total"] == 8
    for key in ("reflect_after_wrong", "right_after_wrong", "false_alarm"):
        assert 0.0 <= metrics[key]["low"] <= metrics[key]["share"] <= metrics[key]["high"] <= 1.0
    assert 0.0 < metrics["reflection_token_probability_after_wrong"] < 1.0
    continuations = [json.loads(line) for line in (tmp_path / "probe" / "continuations.jsonl").open()]
    assert len(continuations) == 16
    assert sum(c["right"] for c in continuations if c["kind"] == WRONG_LINE) == metrics["right_after_wrong"]["count"]
    # the same seed, the same prefixes: every arm is probed on the same set
    main(["build", "--model", COLD_START, "--data", data["test"], "--out", str(tmp_path / "again.jsonl"),
          "--prefixes", "4", "--samples", "2"])
    assert (tmp_path / "again.jsonl").read_text() == open(probe_set).read()


def _write_probe(folder, right_share, right_count, split=None):
    share = {"share": right_share, "count": right_count, "total": 40, "low": 0.01, "high": 0.2, "interval": "x"}
    none = {"share": 0.0, "count": 0, "total": 40, "low": 0.0, "high": 0.1, "interval": "x"}
    metrics = {"wrong_line_prefixes": 10, "right_line_prefixes": 10, "reflect_after_wrong": none,
               "right_after_wrong": share, "right_among_reflecting": None, "false_alarm": none,
               "reflection_token_probability_after_wrong": 0.0002, "reflection_token_probability_after_right": 0.0001,
               **(split or {})}
    os.makedirs(folder)
    with open(os.path.join(folder, "probe_results.json"), "w", encoding="utf-8") as handle:
        json.dump({"k": 4, "temperature": 1.0, "metrics": metrics}, handle)


def test_the_report_shows_each_arms_probe_over_seeds_and_each_seeds_own_interval(tmp_path):
    from recipe_tapo.toy.report import collect, render

    _write_probe(str(tmp_path / "eval" / "probe" / "grpo_s0"), 0.05, 2)
    _write_probe(str(tmp_path / "eval" / "probe" / "grpo_s1"), 0.10, 4)
    _write_probe(str(tmp_path / "eval" / "probe" / "cold_start"), 0.025, 1)
    report = render(collect(str(tmp_path), ["grpo", "tapo"], ["0", "1"]), ["grpo", "tapo"], ["0", "1"], 40, False, "x")
    section = report.split("## Forced-prefix recovery probe")[1].split("\n## ")[0]
    assert "(10 prefixes)" in section and "continued 4 times" in section
    # grpo: mean 7.5, std 3.5, t(1) interval 7.5 +- 12.706 * 2.5
    assert "| grpo | 2/2 | 0.0 ± 0.0 [0.0, 0.0] | 7.5 ± 3.5 [-24.3, 39.3] | n/a |" in section
    assert "| tapo | 0/2 | n/a | n/a | n/a | n/a |" in section
    assert "| cold start (the probe set's own policy) | - | 0.0 [0.0, 10.0] (0/40) | 2.5 [1.0, 20.0] (1/40) | n/a |" in section
    assert "| grpo | 1 | 0.0 [0.0, 10.0] (0/40) | 10.0 [1.0, 20.0] (4/40) | n/a |" in section
    assert "| tapo | 0 | missing | missing | missing | missing |" in section
    assert "0.000200 ± 0.000000" in section
    assert "by the step the prefix was cut after" not in section  # probes written before the split have none


def test_the_report_splits_reflection_by_the_cut_step_when_the_probes_have_it(tmp_path):
    from recipe_tapo.toy.report import collect, render

    def split(hard_wrong, hard_right):
        def share(value, count):
            return {"share": value, "count": count, "total": 20, "low": 0.0, "high": 0.5, "interval": "x"}
        return {"reflect_after_wrong_hard": share(hard_wrong, int(20 * hard_wrong)), "reflect_after_wrong_easy": None,
                "false_alarm_hard": share(hard_right, int(20 * hard_right)), "false_alarm_easy": share(0.0, 0)}

    _write_probe(str(tmp_path / "eval" / "probe" / "grpo_s0"), 0.05, 2, split(0.30, 0.10))
    _write_probe(str(tmp_path / "eval" / "probe" / "grpo_s1"), 0.10, 4, split(0.20, 0.20))
    _write_probe(str(tmp_path / "eval" / "probe" / "cold_start"), 0.025, 1, split(0.25, 0.05))
    report = render(collect(str(tmp_path), ["grpo"], ["0", "1"]), ["grpo"], ["0", "1"], 40, False, "x")
    section = report.split("by the step the prefix was cut after")[1].split("\n## ")[0]
    assert "| cold start | 25.0 [0.0, 50.0] (5/20) | n/a | 5.0 [0.0, 50.0] (1/20) | 0.0 [0.0, 50.0] (0/20) |" in section
    assert "| grpo | 25.0 ± 7.1 | n/a | 15.0 ± 7.1 | 0.0 ± 0.0 |" in section


def test_the_report_states_the_zpd_pool_from_the_filters_counts(tmp_path):
    from recipe_tapo.toy.report import collect, render, zpd_pool

    (tmp_path / "zpd").mkdir()
    counts = tmp_path / "zpd" / "train.parquet.counts.jsonl"
    lines = [{"correct": c, "samples": 8} for c in (0, 8, 1, 2, 3, 7)] + [{"correct": None, "samples": 0}]
    counts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    pool = zpd_pool(str(counts))
    assert (pool["scored"], pool["k"], pool["kept"], pool["dcs_band"]) == (6, 8, 4, 2)  # 2 and 3 right of 8
    assert abs(pool["kept_accuracy"] - 100 * 13 / 32) < 1e-9
    assert zpd_pool(str(tmp_path / "missing.jsonl")) is None
    report = render(collect(str(tmp_path), ["grpo"], ["0"]), ["grpo"], ["0"], 40, False, "x")
    assert ("trained on the 4 of 6 (66.7%) solved 1 to 7 times. Their mean accuracy: 40.6%; in the DCS band "
            "(>= 2 right and >= 4 wrong): 2 of 4 (50.0%) of the kept problems.") in report
