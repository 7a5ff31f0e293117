"""Benchmark metrics from scored samples: Pass@k (unbiased), and DSR / ERR (docs/method.md, section 9).

Pure functions: samples in, numbers out, all as fractions in [0, 1].

- Pass@k: per problem with n samples of which c are correct, the unbiased estimator
  1 - C(n-c, k) / C(n, k) (the chance that k samples drawn without replacement from the n contain a
  correct one), averaged over problems. Pass@1 is the mean per-problem accuracy.
- A response *reflects* when it contains one of `REFLECTION_MARKERS`.
- DSR (direct solution rate) = accuracy over the responses that do not reflect;
  ERR (effective reflection rate) = accuracy over the responses that do. Both pool all responses
  of a benchmark (not per-problem means). The paper's exact definitions are not public; this is
  the project's reading (docs/method.md, section 9).
"""

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

# The one list of self-correction markers. Matched case-insensitively, as whole words; in a
# phrase, any run of spaces matches any whitespace, a hyphen is optional ("re-check", "recheck",
# "double check") and an apostrophe matches ' or ’. Deliberately narrow: words that also occur in
# ordinary solutions ("check", "actually", "verify that") would count direct answers as reflective.
REFLECTION_MARKERS: tuple[str, ...] = (
    "wait",
    "hold on",
    "on second thought",
    "let me re-check",
    "let me double-check",
    "let me check again",
    "let me verify",
    "let me reconsider",
    "let me re-examine",
    "let me re-evaluate",
    "let me re-calculate",
    "let me redo",
    "let me correct",
    "i made a mistake",
    "i made an error",
    "my mistake",
    "i was wrong",
    "that's not right",
    "that is not right",
    "that's incorrect",
    "that is incorrect",
    "this is incorrect",
    "that's wrong",
    "that is wrong",
    "this is wrong",
)


def _marker_pattern(marker: str) -> str:
    words = []
    for word in marker.split():
        parts = [re.escape(part).replace("'", "['’]") for part in word.split("-")]
        words.append(r"[-\s]?".join(parts))
    return r"\s+".join(words)


_REFLECTION = re.compile(r"\b(?:" + "|".join(_marker_pattern(marker) for marker in REFLECTION_MARKERS) + r")\b", re.I)


def reflects(response: str) -> bool:
    """Whether `response` contains a self-correction marker (`REFLECTION_MARKERS`)."""
    return _REFLECTION.search(response) is not None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k for one problem: n samples, c of them correct, 1 <= k <= n."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass(frozen=True)
class ScoredSample:
    problem_id: str
    response: str
    correct: bool


@dataclass(frozen=True)
class ProblemCounts:
    samples: int
    correct: int


@dataclass(frozen=True)
class BenchmarkMetrics:
    num_problems: int
    num_responses: int
    min_samples_per_problem: int
    max_samples_per_problem: int
    pass_at_k: dict[int, float]  # k -> mean over problems; k = 1 always present
    num_reflective: int
    reflection_rate: float
    dsr: float | None  # None when no response is direct
    err: float | None  # None when no response reflects


def count_by_problem(samples: Iterable[ScoredSample]) -> dict[str, ProblemCounts]:
    """Samples and correct samples per problem, in order of first appearance."""
    totals: dict[str, list[int]] = {}
    for sample in samples:
        counts = totals.setdefault(sample.problem_id, [0, 0])
        counts[0] += 1
        counts[1] += int(sample.correct)
    return {problem_id: ProblemCounts(samples, correct) for problem_id, (samples, correct) in totals.items()}


def benchmark_metrics(samples: Iterable[ScoredSample], ks: Iterable[int] = (1, 2, 4, 8, 16)) -> BenchmarkMetrics:
    """All metrics of one benchmark. A k larger than some problem's sample count is left out."""
    samples = list(samples)
    if not samples:
        raise ValueError("no samples")
    counts = count_by_problem(samples).values()
    fewest = min(problem.samples for problem in counts)
    pass_rates = {
        k: sum(pass_at_k(problem.samples, problem.correct, k) for problem in counts) / len(counts)
        for k in sorted({1, *ks})
        if k <= fewest
    }
    reflective, direct = [], []
    for sample in samples:
        (reflective if reflects(sample.response) else direct).append(sample.correct)
    return BenchmarkMetrics(
        num_problems=len(counts),
        num_responses=len(samples),
        min_samples_per_problem=fewest,
        max_samples_per_problem=max(problem.samples for problem in counts),
        pass_at_k=pass_rates,
        num_reflective=len(reflective),
        reflection_rate=len(reflective) / len(samples),
        dsr=sum(direct) / len(direct) if direct else None,
        err=sum(reflective) / len(reflective) if reflective else None,
    )
