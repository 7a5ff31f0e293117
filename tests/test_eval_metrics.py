"""Evaluation metrics with hand-computed values, and the report writer."""

import itertools
import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recipe_tapo.evaluation.metrics import (
    REFLECTION_MARKERS,
    ProblemCounts,
    ScoredSample,
    benchmark_metrics,
    count_by_problem,
    pass_at_k,
    reflects,
)
from recipe_tapo.evaluation.report import build_report, render_markdown, write_report


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (16, 4, 1, 0.25),  # Pass@1 is the accuracy
        (16, 0, 8, 0.0),
        (16, 16, 8, 1.0),
        (8, 5, 4, 1.0),  # only 3 wrong samples: every 4 drawn hold a correct one
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    """Share of all k-subsets of n samples (the first c correct) that contain a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(sample < c for sample in subset) for subset in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12), (n, c, k)


@given(n=st.integers(1, 64), data=st.data())
def test_pass_at_k_is_monotone_in_k_and_c(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "response",
    [
        "Wait, 7*8 is 56, not 54.",
        "so x = 3. WAIT. That breaks the constraint.",
        "Let me re-check the second case.",
        "Let me recheck this.",
        "let me double check the sum",
        "Let me double-check the sum",
        "I made a mistake in the sign.",
        "That’s not right: the area is 12.",
        "That's incorrect, since b > 0.",
        "Hold on,\nthe base case fails.",
        "Let me  re-examine step 2.",
    ],
)
def test_reflection_markers_are_found(response):
    assert reflects(response)


@pytest.mark.parametrize(
    "response",
    [
        "We await the result: 12.",
        "The bus is waiting at stop 3, so the answer is 12.",
        "Check: 3 + 4 = 7. Actually the sum is 7.",
        "We verify that x = 2 satisfies the equation.",
        "This is right, so the answer is 5.",
        "",
    ],
)
def test_direct_solutions_do_not_reflect(response):
    assert not reflects(response)


def test_every_marker_matches_itself():
    for marker in REFLECTION_MARKERS:
        assert reflects(f"Step 3. {marker.capitalize()}, the value changes."), marker


REFLECT = "Wait, I made a mistake above."
DIRECT = "Directly: the answer follows."
# Problem a: 4 samples, 1 correct; problem b: 4 samples, 2 correct. Reflecting: a0 (right),
# a3 (wrong), b1 (right); direct: a1, a2, b2, b3 (wrong), b0 (right).
SAMPLES = [
    ScoredSample("a", REFLECT, True),
    ScoredSample("a", DIRECT, False),
    ScoredSample("a", DIRECT, False),
    ScoredSample("a", "Let me re-check: no.", False),
    ScoredSample("b", DIRECT, True),
    ScoredSample("b", "Hold on, the sign flips.", True),
    ScoredSample("b", DIRECT, False),
    ScoredSample("b", DIRECT, False),
]


def test_counts_by_problem():
    assert count_by_problem(SAMPLES) == {"a": ProblemCounts(4, 1), "b": ProblemCounts(4, 2)}


def test_benchmark_metrics_hand_computed():
    metrics = benchmark_metrics(SAMPLES, ks=(1, 2, 4, 8))
    assert metrics.num_problems == 2 and metrics.num_responses == 8
    assert (metrics.min_samples_per_problem, metrics.max_samples_per_problem) == (4, 4)
    assert sorted(metrics.pass_at_k) == [1, 2, 4]  # 8 > 4 samples per problem: left out
    assert metrics.pass_at_k[1] == pytest.approx((1 / 4 + 2 / 4) / 2)  # 0.375
    assert metrics.pass_at_k[2] == pytest.approx((1 / 2 + 5 / 6) / 2)  # 2/3
    assert metrics.pass_at_k[4] == pytest.approx(1.0)
    assert metrics.num_reflective == 3
    assert metrics.reflection_rate == pytest.approx(3 / 8)
    assert metrics.err == pytest.approx(2 / 3)
    assert metrics.dsr == pytest.approx(1 / 5)


def test_dsr_and_err_are_none_without_responses_of_their_kind():
    direct_only = benchmark_metrics([ScoredSample("a", DIRECT, True), ScoredSample("a", DIRECT, False)], ks=(1,))
    assert direct_only.err is None and direct_only.dsr == 0.5


def test_unequal_sample_counts_use_the_smallest_for_k():
    samples = [ScoredSample("a", DIRECT, True)] * 2 + [ScoredSample("b", DIRECT, False)] * 3
    metrics = benchmark_metrics(samples, ks=(2, 3))
    assert sorted(metrics.pass_at_k) == [1, 2]
    assert metrics.pass_at_k[1] == pytest.approx(0.5)


def test_benchmark_metrics_rejects_no_samples():
    with pytest.raises(ValueError):
        benchmark_metrics([])


def test_report_json_and_markdown(tmp_path):
    metrics = {"aime2024": benchmark_metrics(SAMPLES, ks=(1, 2)), "math500": benchmark_metrics(SAMPLES, ks=(1,))}
    report = build_report(metrics, model="ckpt/step_500", settings={"n": 4, "temperature": 0.6, "top_p": 0.95})
    json_path, markdown_path = write_report(report, str(tmp_path))

    saved = json.loads(open(json_path).read())
    aime = saved["benchmarks"]["aime2024"]
    assert aime["metrics"] == {
        "pass@1": pytest.approx(37.5),
        "pass@2": pytest.approx(200 / 3),
        "dsr": pytest.approx(20.0),
        "err": pytest.approx(200 / 3),
        "reflection_rate": pytest.approx(37.5),
    }
    assert aime["paper"]["pass@1"] == {"GRPO": 52.92, "OPSD": 57.71, "TAPO": 62.50}
    assert saved["benchmarks"]["math500"]["paper"] == {}
    assert saved["reflection_markers"] == list(REFLECTION_MARKERS)

    table = open(markdown_path).read().splitlines()
    assert "Sampling: n=4, temperature=0.6, top_p=0.95. All numbers in %." in table
    assert "| aime2024 | Pass@1 | 37.50 | 52.92 | 57.71 | 62.50 |" in table
    assert "| aime2024 | Pass@2 | 66.67 | - | - | - |" in table
    assert "| aime2024 | DSR | 20.00 | 34.00 | - | 47.50 |" in table
    assert "| aime2024 | ERR | 66.67 | 52.00 | - | 63.40 |" in table
    assert "| math500 | reflection rate | 37.50 | - | - | - |" in table


def test_markdown_marks_approximate_paper_numbers():
    report = build_report({"hmmt2025": benchmark_metrics(SAMPLES, ks=(1,))}, model="m", settings={"n": 4})
    assert "| hmmt2025 | Pass@1 | 37.50 | 28.75 | ~24.17 | 31.46 |" in render_markdown(report)
