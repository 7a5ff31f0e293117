"""The math reward: answer equivalence, extraction, time limits and verl integration.

The verifier processes started here belong to this pytest process and are killed at its exit.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe_tapo.reward.answer import last_boxed_answer, normalize_answer, to_text
from recipe_tapo.reward.math_reward import REASONS, compute_score, judge_answer
from recipe_tapo.reward.verifier import KILL_GRACE_S, get_pool

# Verdict tests get a generous limit (they test answers, and CI machines are loaded); time-limit
# tests a short one and a wall-clock bound: the limit, the kill grace and slack for a busy machine.
VERDICT_TIMEOUT_S = 30.0
TEST_TIMEOUT_S = 2.0
WALL_CLOCK_BOUND_S = TEST_TIMEOUT_S + 2.0
RESULT_KEYS = {"score", "acc", "pred", "reason"}


def score(response, ground_truth, **kwargs):
    return compute_score("aime2024", response, ground_truth, **{"timeout": VERDICT_TIMEOUT_S, **kwargs})


def timed_score(response, ground_truth, **kwargs):
    started = time.monotonic()
    result = score(response, ground_truth, timeout=TEST_TIMEOUT_S, **kwargs)
    return result, time.monotonic() - started


@pytest.fixture(scope="module", autouse=True)
def warm_verifier():
    """Start the default verifier once, so that no bound below includes the first import of sympy."""
    assert score("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}")["reason"] == "math_verify_equal"


EQUIVALENT = [
    # fractions
    ("\\frac{1}{2}", "1/2"),
    ("\\frac{3}{4}", "\\dfrac{3}{4}"),
    ("\\frac{3}{4}", "\\tfrac34"),
    ("\\frac{14}{3}", "\\frac{28}{6}"),
    ("-\\frac{1}{2}", "\\frac{-1}{2}"),
    # decimals
    ("\\frac{1}{2}", "0.5"),
    ("0.5", ".5"),
    ("2.50", "2.5"),
    ("5", "5.0"),
    ("\\frac{1}{3}", "0.333333"),
    # integers
    ("42", "042"),
    ("1000", "1,000"),
    ("1000", "1{,}000"),
    ("1000000", "1\\,000\\,000"),
    # radicals
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("3\\sqrt{3}", "\\sqrt{27}"),
    ("2\\sqrt{2}", "2\\sqrt2"),
    ("\\frac{9\\sqrt{23}}{23}", "\\frac{9}{\\sqrt{23}}"),
    # intervals and sets
    ("(0, 1]", "(0,1]"),
    ("[2, 5)", "\\left[2, 5\\right)"),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty,2)\\cup(3,\\infty)"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    # units, degrees, percent, dollars
    ("10", "10\\text{ cm}"),
    ("12", "12 \\mbox{ inches}"),
    ("5", "5\\text{ units}^2"),
    ("7", "7 dollars"),
    ("90", "90^\\circ"),
    ("90", "90^{\\circ}"),
    ("50", "50\\%"),
    ("18.90", "\\$18.90"),
    # text answers
    ("\\text{Evelyn}", "Evelyn"),
    ("\\text{odd}", "\\textbf{Odd}"),
    ("\\text{(C)}", "C"),
    ("C", "(C)"),
    # expressions, equations, tuples
    ("x^2+2x+1", "(x+1)^2"),
    ("5", "x = 5"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
    ("\\pi r^2", "r^2\\pi"),
]

NOT_EQUIVALENT = [
    ("42", "43"),
    ("1000", "100"),
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("0.5", "0.55"),
    ("\\frac{1}{3}", "0.33"),
    ("\\sqrt{2}", "2"),
    ("2\\sqrt{2}", "\\sqrt{2}"),
    ("(0, 1]", "[0, 1]"),
    ("(1, 2)", "(2, 1)"),
    ("\\text{Evelyn}", "nylevE"),
    ("\\text{odd}", "even"),
    ("C", "D"),
    ("x^2+2x+1", "(x-1)^2"),
    ("\\frac{\\pi}{2}", "90"),
    ("-5", "5"),
]


@pytest.mark.parametrize("ground_truth, answer", EQUIVALENT)
def test_equivalent_answers_score_one(ground_truth, answer):
    result = score(f"So the answer is $\\boxed{{{answer}}}$.", ground_truth)
    assert result["score"] == 1.0 and result["acc"] is True, result


@pytest.mark.parametrize("ground_truth, answer", NOT_EQUIVALENT)
def test_non_equivalent_answers_score_zero(ground_truth, answer):
    result = score(f"So the answer is $\\boxed{{{answer}}}$.", ground_truth)
    assert result["score"] == 0.0 and result["acc"] is False, result


# Issue 8: each a defect of the answer clean-up that math-verify alone grades correctly.
CLEAN_UP_DEFECTS = [
    # 1. `\\ ` (a row break followed by a space) lost its second backslash as a control space,
    #    collapsing both vectors to one entry: a false positive.
    pytest.param(
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", False, id="row-break"
    ),
    pytest.param(
        "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True, id="row-break-spacing"
    ),
    # 2. `\!` became a space, so `10,\!000` became the list `10, 000`.
    pytest.param("10,\\!000", "10000", True, id="thousands-negative-space"),
    pytest.param("10000", "10,\\!000", True, id="thousands-negative-space-answer"),
    # 3. `y =` was stripped from one side only, turning an equation into an expression.
    pytest.param("y = 2x+3", "2x - y + 3 = 0", True, id="equivalent-equations"),
    pytest.param("y = 2x+3", "y = 2x - 3", False, id="different-equations"),
    # 4. `%` was stripped, the word "percent" was not.
    pytest.param("28\\%", "28 percent", True, id="percent-word"),
    # 5. A relation answered for a set (math-verify's allow_set_relation_comp).
    pytest.param("x \\in [-2,7]", "-2 \\le x \\le 7", True, id="set-relation"),
    pytest.param("x \\in [-2,7]", "-2 < x \\le 7", False, id="set-relation-open-end"),
]


@pytest.mark.parametrize("ground_truth, answer, expected", CLEAN_UP_DEFECTS)
def test_clean_up_keeps_what_math_verify_grades_right(ground_truth, answer, expected):
    result = score(f"So the answer is $\\boxed{{{answer}}}$.", ground_truth)
    assert result["acc"] is expected, result


def test_variable_is_stripped_only_where_it_names_the_answer():
    assert score("\\boxed{x = 5}", "5")["reason"] == "exact_match"
    assert score("\\boxed{x = 5}", "5")["pred"] == "5"
    assert score("\\boxed{2x - y + 3 = 0}", "y = 2x+3")["pred"] == "2x - y + 3 = 0"
    assert normalize_answer("x = 1, y = 2") == "x = 1, y = 2"  # two equations, not a name
    assert normalize_answer("y = 2x+3", strip_variable=False) == "y = 2x+3"


def test_spacing_commands_keep_row_breaks():
    assert normalize_answer("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}") == "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"
    assert normalize_answer("a \\\\\\ b") == "a \\\\ b"  # `\\` then the control space `\ `
    assert normalize_answer("1\\,000\\,000") == "1000000"
    assert normalize_answer("1,\\!234,\\!567") == "1234567"


# Ordered answers: permuting distinct entries must never score 1, whatever the spacing.
_ORDERED_FORMS = {
    "column vector": lambda entries, gap: (
        "\\begin{pmatrix}" + gap + (gap + "\\\\" + gap).join(entries) + gap + "\\end{pmatrix}"
    ),
    "row vector": lambda entries, gap: "\\begin{bmatrix}" + (gap + "&" + gap).join(entries) + "\\end{bmatrix}",
    "tuple": lambda entries, gap: "\\left(" + ("," + gap).join(entries) + "\\right)",
    "angle vector": lambda entries, gap: "\\langle " + ("," + gap).join(entries) + " \\rangle",
    "2x2 matrix": lambda entries, gap: (
        "\\begin{pmatrix}" + entries[0] + " & " + entries[1] + gap + "\\\\" + gap + entries[2] + " & " + entries[3]
        + "\\end{pmatrix}"
    ),
}
_GAPS = [" ", "", "\\ ", "\\,", "\\;", "\\!", "~", "\\quad "]
# One spelling per value (fractions in lowest terms, square roots of non-squares), so distinct
# spellings are distinct values.
_ENTRIES = st.one_of(
    st.integers(-30, 30).map(str),
    st.tuples(st.integers(1, 9), st.integers(2, 9))
    .filter(lambda pair: math.gcd(*pair) == 1)
    .map(lambda pair: f"\\frac{{{pair[0]}}}{{{pair[1]}}}"),
    st.sampled_from([2, 3, 5, 6, 7, 8, 10]).map(lambda n: f"\\sqrt{{{n}}}"),
)


@st.composite
def _permuted_ordered_answer(draw):
    form = draw(st.sampled_from(sorted(_ORDERED_FORMS)))
    size = 4 if form == "2x2 matrix" else draw(st.integers(2, 4))
    entries = draw(st.lists(_ENTRIES, min_size=size, max_size=size, unique=True))
    permuted = draw(st.permutations(entries).filter(lambda order: list(order) != entries))
    # A vector or tuple may be answered in another ordered form, or as a bare list.
    answer_forms = [form] if form == "2x2 matrix" else [name for name in _ORDERED_FORMS if name != "2x2 matrix"]
    answer_form = draw(st.sampled_from(sorted(answer_forms) + ([] if form == "2x2 matrix" else ["bare list"])))
    build_answer = _ORDERED_FORMS.get(answer_form, lambda entries, gap: ("," + gap).join(entries))
    ground_truth = _ORDERED_FORMS[form](entries, draw(st.sampled_from(_GAPS)))
    return ground_truth, build_answer(list(permuted), draw(st.sampled_from(_GAPS)))


@given(case=_permuted_ordered_answer())
@settings(max_examples=80, deadline=None)
def test_permuted_ordered_answer_never_scores_one(case):
    ground_truth, answer = case
    result = score(f"\\boxed{{{answer}}}", ground_truth)
    assert result["score"] == 0.0, (ground_truth, answer, result)


@pytest.mark.parametrize(
    "answer, ground_truth, verdict",
    [
        ("42", "42", (True, "exact_match")),
        ("042", "42", (True, "numeric_match")),
        ("41", "42", (False, "numeric_mismatch")),
        ("\\text{EVELYN}", "\\text{Evelyn}", (True, "text_match")),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", (True, "math_verify_equal")),
        ("0.33", "\\frac{1}{3}", (False, "math_verify_unequal")),
        ("\\text{}", "1", (False, "empty_answer")),
    ],
)
def test_verdict_reason_tells_which_check_decided(answer, ground_truth, verdict):
    assert judge_answer(answer, ground_truth, timeout=VERDICT_TIMEOUT_S) == verdict


@pytest.mark.parametrize(
    "response, expected",
    [
        ("\\boxed{5}", "5"),
        ("first \\boxed{1}, finally \\boxed{2}", "2"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{7}", "7"),
        ("\\boxed {8}", "8"),
        ("$\\boxed 9$", "9"),
        ("\\boxed{\\boxed{3}}", "3"),
        ("\\boxed{4} and then a cut-off \\boxed{\\frac{1}{", "4"),
        ("\\boxed{ 6 }", "6"),
        ("no answer here", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_last_boxed_answer(response, expected):
    assert last_boxed_answer(response) == expected


@given(
    answer=st.text(alphabet="0123456789+-*/^()xy\\ {}", max_size=40).filter(
        lambda text: text.count("{") == text.count("}") and last_boxed_answer("\\boxed{" + text + "}") is not None
    ),
    before=st.text(alphabet="abc ={}0123456789$", max_size=40),
    after=st.text(alphabet="abc =0123456789$.", max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_last_box_is_found_whatever_surrounds_it(answer, before, after):
    balanced = last_boxed_answer("\\boxed{" + answer + "}")
    assert last_boxed_answer(before + "\\boxed{" + answer + "}" + after) == balanced


def test_ground_truth_forms_are_accepted():
    assert score("\\boxed{204}", 204)["score"] == 1.0  # AIME 2024's Answer column is an integer
    assert score("\\boxed{204}", "\\boxed{204}")["score"] == 1.0
    assert score("\\boxed{204}", " 204 ")["score"] == 1.0
    assert score("\\boxed{204}", "")["reason"] == "no_ground_truth"
    assert score("\\boxed{204}", None)["reason"] == "no_ground_truth"


def test_pred_is_normalised_for_verl_majority_vote():
    assert score("\\boxed{10\\text{ cm}}", "10")["pred"] == "10"
    assert score("\\boxed{\\dfrac{1}{2}}", "7")["pred"] == "\\frac{1}{2}"
    assert score("no answer", "7")["pred"] == ""


def test_non_utf8_text_is_scored_not_rejected():
    assert to_text(b"\xff\xfe 12") == "\ufffd\ufffd 12"
    assert score(b"\xff\xfe\xc3 therefore \\boxed{12}", "12")["score"] == 1.0
    surrogates = "\udcff\ud800 broken \\boxed{12}"  # e.g. text decoded with surrogateescape
    assert score(surrogates, "12")["score"] == 1.0
    assert score("\\boxed{\udcff}", "12")["score"] == 0.0


# Inputs that hang or explode math-verify/sympy, or are merely huge. Each must give 0 in time.
PATHOLOGICAL = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "huge power": "\\boxed{10^{10^{10}}}",
    "huge factorial": "\\boxed{100000000!}",
    "nested braces": "\\boxed{" + "{" * 400 + "1" + "}" * 400 + "}",
    "nested parentheses": "\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}",
    "long answer": "\\boxed{" + "\\frac{1}{" * 1000 + "2" + "}" * 1000 + "}",
    "100k response, no box": "Let me think. " * 7200,
    "100k response of open boxes": "\\boxed{" * 15000,
    "100k response of nested boxes": "\\boxed{" * 7000 + "}" * 7000,
    "100k response, wrong box at the end": "x = y + 1. " * 10000 + "\\boxed{7}",
    "only braces": "}{" * 50000,
    "empty": "",
    "empty box": "\\boxed{}",
}


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_input_scores_zero_within_the_limit(name):
    result, seconds = timed_score(PATHOLOGICAL[name], "2")
    assert seconds < WALL_CLOCK_BOUND_S, f"{name}: {seconds:.2f} s"
    assert result["score"] == 0.0 and set(result) == RESULT_KEYS
    assert result["reason"] in REASONS


def test_nested_boxes_are_not_copied_once_each():
    import tracemalloc

    text = "\\boxed{" * 7000 + "5" + "}" * 7000  # 56k characters, 7000 candidate answers
    tracemalloc.start()
    try:
        assert last_boxed_answer(text) == "5"
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Linear bookkeeping (brace positions, match spans) stays near 30 bytes per character; one
    # copy per candidate would be about 3500 (7000 copies of 28k characters on average).
    assert peak_bytes < 100 * len(text)


@given(response=st.text(alphabet=st.sampled_from(list("\\boxed{}fracsqt^_()[],.=-+ 0123456789x$%")), max_size=300))
@settings(max_examples=60, deadline=None)
def test_any_response_gets_a_well_formed_result(response):
    result = compute_score("math500", response, "\\frac{1}{2}", timeout=TEST_TIMEOUT_S)
    assert set(result) == RESULT_KEYS and result["reason"] in REASONS
    assert result["score"] == float(result["acc"])


def test_100k_response_with_the_right_answer_is_fast():
    result, seconds = timed_score("x = y + 1. " * 10000 + "\\boxed{2}", "2")
    assert result["score"] == 1.0 and seconds < 0.5


def test_hung_verifier_is_killed_and_replaced():
    """A worker that no signal can interrupt (here: stopped) is killed at the hard deadline."""
    isolated = {"verifier_processes": 1, "verifier_memory_mb": 1536}
    assert score("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", **isolated)["score"] == 1.0
    pool = get_pool(1, 1536)
    [stuck_pid] = pool.worker_pids()
    os.kill(stuck_pid, signal.SIGSTOP)
    try:
        result, seconds = timed_score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", **isolated)
    finally:
        try:
            os.kill(stuck_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert result["reason"] == "timeout" and result["score"] == 0.0
    assert TEST_TIMEOUT_S <= seconds < TEST_TIMEOUT_S + KILL_GRACE_S + 1.0
    [replacement_pid] = pool.worker_pids()
    assert replacement_pid != stuck_pid
    result = score("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", **isolated)
    assert result["reason"] == "math_verify_equal"


def test_concurrent_calls_from_threads_are_all_right():
    """More threads than verifier processes, one of them stuck on a hanging answer meanwhile."""
    cases = [(f"\\boxed{{\\sqrt{{{n * n * 2}}}}}", f"{n}\\sqrt{{2}}", VERDICT_TIMEOUT_S, True) for n in range(2, 10)]
    cases += [(f"\\boxed{{\\sqrt{{{n * n * 3}}}}}", f"{n}\\sqrt{{2}}", VERDICT_TIMEOUT_S, False) for n in range(2, 10)]
    cases += [("\\boxed{" + "(" * 400 + "1" + ")" * 400 + "}", "1", TEST_TIMEOUT_S, False)]
    results = [None] * len(cases)

    def run(position):
        response, ground_truth, timeout, _ = cases[position]
        results[position] = compute_score("hmmt2025", response, ground_truth, timeout=timeout)

    threads = [threading.Thread(target=run, args=(position,)) for position in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [result["acc"] for result in results] == [expected for *_, expected in cases]


def test_works_from_a_script_without_main_guard(tmp_path):
    """verl's spawn-pool math_verify scores 0 here: a spawned child re-runs the unguarded script."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, threading
            from recipe_tapo.reward.math_reward import compute_score

            results = [compute_score("aime2025", "\\\\boxed{\\\\sqrt{2}/2}", "\\\\frac{\\\\sqrt{2}}{2}")]
            worker = threading.Thread(
                target=lambda: results.append(compute_score("aime2025", "\\\\boxed{3\\\\sqrt{3}}", "\\\\sqrt{27}"))
            )
            worker.start()
            worker.join()
            print(json.dumps([result["reason"] for result in results]))
            """
        )
    )
    completed = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == ["math_verify_equal", "math_verify_equal"]


def test_works_with_more_than_1024_open_files(tmp_path):
    """Ray workers hold many sockets: the verifier's pipe may get a descriptor above select()'s limit."""
    script = tmp_path / "many_files.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, resource
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
            held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
            from recipe_tapo.reward.math_reward import compute_score
            print(compute_score("x", "\\\\boxed{\\\\sqrt{8}}", "2\\\\sqrt{2}")["reason"])
            """
        )
    )
    completed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    if "Too many open files" in completed.stderr:
        pytest.skip("the hard limit on open files is below 1100 here")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "math_verify_equal"


@pytest.mark.parametrize("path", ["pkg://recipe_tapo.reward.math_reward", "reward/math_reward.py"])
def test_verl_loads_it_as_custom_reward_function(path):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not path.startswith("pkg://"):
        path = os.path.join(repo_root, path)
    config = OmegaConf.create(
        {"reward": {"custom_reward_function": {"path": path, "name": "compute_score", "reward_kwargs": {"timeout": 5}}}}
    )
    reward_fn = get_custom_reward_fn(config)
    for data_source in ["deepscaler", "dapo_math_17k", "math500", "aime2024", "aime2025", "hmmt2025"]:
        result = reward_fn(
            data_source=data_source, solution_str="\\boxed{\\dfrac{1}{2}}", ground_truth="0.5", extra_info={}
        )
        assert result["score"] == 1.0, data_source


def test_normalisation_keeps_latex_words_apart():
    assert normalize_answer("\\pi r^2") == "\\pi r^2"
    assert normalize_answer("\\left( 1, 2 \\right)") == "( 1, 2 )"
    assert normalize_answer("5x") == "5x"


def test_benchmark_command_prints_rates(capsys):
    from recipe_tapo.reward import benchmark

    benchmark.main(["--responses", "5", "--response-chars", "200"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.endswith("responses/s")]
    assert len(rows) == len(benchmark.KINDS) + 1


def test_a_verifier_that_cannot_start_is_an_error_not_a_zero():
    from recipe_tapo.reward.verifier import VerifierUnavailable

    # 40 MB of address space cannot even hold sympy: the environment, not the answer, is broken.
    with pytest.raises(VerifierUnavailable):
        compute_score("x", "\\boxed{\\sqrt{8}}", "2\\sqrt{2}", verifier_processes=1, verifier_memory_mb=40)
    assert compute_score("x", "\\boxed{8}", "8", verifier_processes=1, verifier_memory_mb=40)["score"] == 1.0


def test_verl_naive_reward_manager_scores_through_it(tapo_tokenizer):
    """verl's reward loop decodes the response and calls the function from an executor thread."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    prompt = tapo_tokenizer("Compute it.")["input_ids"]
    response = tapo_tokenizer("So the answer is \\boxed{\\sqrt{2}/2}.")["input_ids"]
    padding = [tapo_tokenizer.pad_token_id] * 3
    data = DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt]),
            "responses": torch.tensor([response + padding]),
            "attention_mask": torch.tensor([[1] * (len(prompt) + len(response)) + [0] * len(padding)]),
        },
        non_tensors={
            "data_source": np.array(["hmmt2025"], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": "\\frac{\\sqrt{2}}{2}"}], dtype=object),
            "extra_info": np.array([{"index": 0}], dtype=object),
        },
    )
    manager = NaiveRewardManager(OmegaConf.create({}), tapo_tokenizer, compute_score)
    output = manager.loop.run_until_complete(manager.run_single(data))
    assert output["reward_score"] == 1.0
    assert output["reward_extra_info"] == {
        "score": 1.0,
        "acc": True,
        "pred": "\\sqrt{2}/2",
        "reason": "math_verify_equal",
    }
