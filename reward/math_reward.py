"""Verifiable math reward with verl's custom-reward signature, for every data source we ship.

    reward.custom_reward_function.path=pkg://recipe_tapo.reward.math_reward
    reward.custom_reward_function.name=compute_score
    # optional, passed to compute_score as keyword arguments:
    +reward.custom_reward_function.reward_kwargs.timeout=10

The verdict does not depend on `data_source` (verl 0.9.1's default scorer sends `aime*` to its
`math_dapo` checker, which reads the last "Answer:" line, falls back to the last `\\boxed{}` only
when there is none, compares strings and scores a wrong answer -1; it raises NotImplementedError on
`hmmt*` and on our other source names): the answer is always the last `\\boxed{}` of the response,
normalised, then compared by, in order and stopping at the first that decides, exact comparison,
exact rational arithmetic, case-insensitive word comparison (text answers) and math-verify
equivalence in a separate process under a hard time limit (`recipe_tapo.reward.verifier`). Only
the last step leaves this process, so most AIME/HMMT answers (integers) cost microseconds.

The normalisation (`recipe_tapo.reward.answer.normalize_answer`) only removes notation (spacing,
units, `%`, `$`, thousands separators) and never reorders or merges entries, so tuples, vectors,
matrices and intervals are compared entry by entry, in order (by math-verify). A leading `x =` is
stripped from the answer only where the ground truth is not itself an equation.

Every result has the same keys (verl stacks the extras of a batch per key): `score` (1.0 or 0.0),
`acc` (bool), `pred` (the extracted answer, normalised so that verl's majority vote (maj@N, which
groups equal `pred` strings) counts `10\\text{ cm}` and `10` as one answer; at most
`REPORTED_PRED_CHARS` characters; "" when there is none) and `reason` (how the verdict was reached,
one of `REASONS`).

Imports are absolute so that verl may also load this file by path (`path=reward/math_reward.py`).
"""

import time

from recipe_tapo.reward.answer import (
    as_rational,
    comparison_key,
    is_equation,
    is_text_answer,
    last_boxed_answer,
    normalize_answer,
    text_key,
    to_text,
)
from recipe_tapo.reward.verifier import get_pool

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_ANSWER_CHARS = 1000
DEFAULT_VERIFIER_PROCESSES = 2
DEFAULT_VERIFIER_MEMORY_MB = 2048
REPORTED_PRED_CHARS = 300

REASONS = (
    "exact_match",
    "numeric_match",
    "numeric_mismatch",
    "text_match",
    "text_mismatch",
    "math_verify_equal",
    "math_verify_unequal",
    "timeout",  # math-verify did not decide in time: scored 0
    "verifier_error",  # math-verify raised (malformed LaTeX): scored 0
    "verifier_crashed",  # the verifier process died: scored 0, a new one is started
    "no_boxed_answer",
    "empty_answer",
    "answer_too_long",
    "no_ground_truth",
)


def judge_answer(
    pred: str,
    ground_truth: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    verifier_processes: int = DEFAULT_VERIFIER_PROCESSES,
    verifier_memory_mb: int = DEFAULT_VERIFIER_MEMORY_MB,
) -> tuple[bool, str]:
    """(equivalent, reason) for an extracted answer against the ground truth, within `timeout` s."""
    gold = normalize_answer(ground_truth, strip_variable=False)
    guess = normalize_answer(pred, strip_variable=not is_equation(gold))
    return _judge_normalized(
        guess, gold, timeout=timeout, verifier_processes=verifier_processes, verifier_memory_mb=verifier_memory_mb
    )


def _judge_normalized(
    guess: str, gold: str, *, timeout: float, verifier_processes: int, verifier_memory_mb: int
) -> tuple[bool, str]:
    started = time.monotonic()
    gold_key, guess_key = comparison_key(gold), comparison_key(guess)
    if not guess_key:
        return False, "empty_answer"
    if not gold_key:
        return False, "no_ground_truth"
    if gold_key == guess_key:
        return True, "exact_match"
    if is_text_answer(gold):
        equal = text_key(gold) == text_key(guess)
        return equal, "text_match" if equal else "text_mismatch"
    gold_number, guess_number = as_rational(gold_key), as_rational(guess_key)
    if gold_number and guess_number:
        if gold_number[0] == guess_number[0]:
            return True, "numeric_match"
        if gold_number[1] and guess_number[1]:
            return False, "numeric_mismatch"
    remaining = timeout - (time.monotonic() - started)
    if remaining <= 0:
        return False, "timeout"
    verdict = get_pool(verifier_processes, verifier_memory_mb).check(gold, guess, remaining)
    return verdict.equal, verdict.reason


def compute_score(
    data_source,
    solution_str,
    ground_truth,
    extra_info=None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
    verifier_processes: int = DEFAULT_VERIFIER_PROCESSES,
    verifier_memory_mb: int = DEFAULT_VERIFIER_MEMORY_MB,
    **kwargs,
) -> dict:
    """Score one response: 1.0 iff its last `\\boxed{}` answer is equivalent to `ground_truth`.

    Args:
        data_source, extra_info: accepted for verl's signature; the verdict ignores them.
        solution_str: the decoded response (str; bytes are decoded with replacement characters).
        ground_truth: the reference answer (str, or anything `str()` turns into one; a `\\boxed{}`
            inside it is unwrapped).
        timeout: hard limit in seconds on the call, extraction included; the call returns within
            it plus `verifier.KILL_GRACE_S` (the first call of a process may also wait for the
            verifier process to start). A timeout scores 0 with reason "timeout".
        max_answer_chars: a boxed answer longer than this is scored 0 without verification.
        verifier_processes: verifier processes per calling process (concurrent calls from threads).
        verifier_memory_mb: address-space limit of each verifier process; 0 for none.
        **kwargs: other keys verl passes (e.g. reward_router_address) are ignored.
    """
    started = time.monotonic()
    response = to_text(solution_str)
    gold = to_text(ground_truth).strip()
    gold = last_boxed_answer(gold) or gold
    pred = last_boxed_answer(response)
    if pred is None:
        return _result(False, "", "no_boxed_answer")
    if not gold:
        return _result(False, pred, "no_ground_truth")
    if len(pred) > max_answer_chars:
        return _result(False, pred, "answer_too_long")  # not normalised: it may be anything
    gold = normalize_answer(gold, strip_variable=False)
    guess = normalize_answer(pred, strip_variable=not is_equation(gold))
    equal, reason = _judge_normalized(
        guess,
        gold,
        timeout=timeout - (time.monotonic() - started),
        verifier_processes=verifier_processes,
        verifier_memory_mb=verifier_memory_mb,
    )
    return _result(equal, guess, reason)


def _result(equal: bool, pred: str, reason: str) -> dict:
    return {"score": 1.0 if equal else 0.0, "acc": equal, "pred": pred[:REPORTED_PRED_CHARS], "reason": reason}
