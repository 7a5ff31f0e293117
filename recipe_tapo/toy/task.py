"""Chains of 3-5 terms: a 2-digit start, then additions and subtractions of 1-digit terms and, one
time in five, a 2-digit term (11-49); one step per line.

    Compute 47 + 5 - 28 + 6.          ->   47 + 5 = 52
                                           52 - 28 = 24
                                           24 + 6 = 30
                                           \\boxed{30}

The running total stays within 0..99 (an operation that would leave it flips its sign). Why this
range (issue 23, measured on the 2-core machine with the 0.6M character-level model; the pilots in
docs/toy_experiment/pilots/): with 1-digit terms only (the first toy) the cold start solved 80% of
problems and few groups reached the paper's DCS band; with half the terms 2-digit and up to 6 terms the
base reached 4.8% after 2000 SFT steps; one 2-digit term in five is what a 4000-step base learns
(62% sampled). With slips imitated at one rate on every step (pilot 3) per-problem accuracy still
concentrates (three problems in four solved 4-7 times of 8); `write_solution`'s `hard_error_rate`
moves the slips onto hard steps so that problems differ in difficulty: the shipped toy's base slips
half of its hard steps and 2% of its easy ones (pilot 4's slip model, `recipe_tapo.toy.build`'s
defaults).

`write_solution`'s `reflect_rate` gives solutions that catch some of their slips ("Wait, 52 - 8 = 44,
not 45." on the next line, then the right value), in the form the TAPO constructions use: the base
policy's native habit of reflecting, as a pretrained reasoning model has it.

Mistakes are natural and checkable: a step's result is off (a carry or borrow slip of 1 or 10, or
two digits swapped) and the following steps carry the wrong value forward correctly, so the final
answer is wrong. `first_wrong_step` finds the first line whose arithmetic is wrong, which is what a
programmatic teacher needs to write a synthesis target (`recipe_tapo.toy.teacher`).

Everything is deterministic by seed. Rows use the recipe's layout (`recipe_tapo.data.rows`) and are
scored by the math reward (`recipe_tapo.reward.math_reward`), data source `toy_chain`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

DATA_SOURCE = "toy_chain"
# Numbers of at most 18 digits: the toy's are 1-3, and a longer run of digits in model text is no step
# (int() refuses strings past 4300 digits, and a parser of model output must not raise).
_STEP = re.compile(r"^\s*(-?\d{1,18})\s*([+-])\s*(\d{1,18})\s*=\s*(-?\d{1,18})\s*$")
_PROBLEM = re.compile(r"Compute ((?:\d{1,18} [+-] )+\d{1,18})\.")


@dataclass(frozen=True)
class ChainProblem:
    """`terms[0] ops[0] terms[1] ops[1] ...`; ops are "+" or "-"."""

    terms: tuple[int, ...]
    ops: tuple[str, ...]

    @property
    def text(self) -> str:
        expression = str(self.terms[0]) + "".join(f" {op} {term}" for op, term in zip(self.ops, self.terms[1:]))
        return f"Compute {expression}."

    @property
    def answer(self) -> int:
        return self.partial_results()[-1]

    def partial_results(self) -> list[int]:
        value, results = self.terms[0], []
        for op, term in zip(self.ops, self.terms[1:], strict=True):
            value = value + term if op == "+" else value - term
            results.append(value)
        return results


def sample_problem(rng: random.Random, min_terms: int = 3, max_terms: int = 5, two_digit_share: float = 0.2) -> ChainProblem:
    """A 2-digit start, then terms of 1 digit (2-9) or, each with probability `two_digit_share`, of 2 digits
    (11-49); an operation that would take the total out of 0..99 flips.

    Why the flip always lands inside: a term is at most 49 and a total at most 99, so when total + term
    exceeds 99 the total exceeds 50 and total - term stays at least 0.
    """
    count = rng.randint(min_terms, max_terms)
    value = rng.randint(10, 99)
    terms, ops = [value], []
    for _ in range(count - 1):
        term = rng.randint(11, 49) if two_digit_share and rng.random() < two_digit_share else rng.randint(2, 9)
        op = rng.choice("+-")
        if not 0 <= (value + term if op == "+" else value - term) <= 99:
            op = "-" if op == "+" else "+"
        value = value + term if op == "+" else value - term
        terms.append(term)
        ops.append(op)
    return ChainProblem(tuple(terms), tuple(ops))


def parse_problem(text: str) -> ChainProblem | None:
    """The problem stated in `text` ("Compute 47 + 25 - 13.", anywhere in it), or None."""
    match = _PROBLEM.search(text)
    if not match:
        return None
    tokens = match.group(1).split()
    return ChainProblem(tuple(int(token) for token in tokens[0::2]), tuple(tokens[1::2]))


def slip(value: int, rng: random.Random) -> int:
    """A plausible wrong result for `value`: off by 1 or 10 either way, or two digits swapped."""
    candidates = {value + 1, value - 1, value + 10, value - 10}
    digits = str(abs(value))
    if len(digits) >= 2 and digits[-1] != digits[-2]:
        swapped = int(digits[:-2] + digits[-1] + digits[-2])
        candidates.add(-swapped if value < 0 else swapped)
    candidates.discard(value)
    return rng.choice(sorted(candidates))


def is_hard_step(left: int, op: str, term: int) -> bool:
    """A step that needs more than a units-digit fact: a 2-digit term, or a carry (borrow) across a ten."""
    if term >= 10:
        return True
    return left % 10 + term >= 10 if op == "+" else left % 10 < term


def is_hard_step_line(line: str) -> bool | None:
    """Whether the step line `line` (`a op b = c`, right or wrong) is a hard step (`is_hard_step`); None
    when it is no step line."""
    match = _STEP.match(line)
    return None if match is None else is_hard_step(int(match.group(1)), match.group(2), int(match.group(3)))


def write_solution(problem: ChainProblem, rng: random.Random, error_rate: float = 0.0,
                   reflect_rate: float = 0.0, hard_error_rate: float | None = None) -> tuple[str, bool]:
    """A step-per-line solution; each step is slipped with probability `error_rate` (`hard_error_rate`
    for a hard step, `is_hard_step`, when given: slips where a learner's skill ends, so that problems
    differ in difficulty), and a slipped step is followed, with probability `reflect_rate`, by a
    reflection line in the constructions' form ("Wait, 52 - 8 = 44, not 45.") and the rest from the
    right value: the habit of a reasoning model that sometimes catches its own slip. Unreflected slips
    carry forward.

    Returns the text and whether its final answer is right.
    """
    lines, value = [], problem.terms[0]
    for op, term in zip(problem.ops, problem.terms[1:], strict=True):
        correct = value + term if op == "+" else value - term
        result = correct
        rate = hard_error_rate if hard_error_rate is not None and is_hard_step(value, op, term) else error_rate
        if rng.random() < rate:
            result = slip(correct, rng)
        lines.append(f"{value} {op} {term} = {result}")
        if result != correct and reflect_rate and rng.random() < reflect_rate:
            lines.append(reflection_line(WrongStep(len(lines) - 1, lines[-1], value, op, term, correct)))
            result = correct
        value = result
    lines.append(f"\\boxed{{{value}}}")
    return "\n".join(lines), value == problem.answer


@dataclass(frozen=True)
class WrongStep:
    """The first line whose arithmetic is wrong: its index among the lines, text and right result."""

    line_index: int
    line: str
    left: int
    op: str
    term: int
    correct: int


def step_line_indices(solution: str) -> list[int]:
    """Indices (among the lines of `solution`) of its step lines `a op b = c`, right or wrong."""
    return [index for index, line in enumerate(solution.split("\n")) if _STEP.match(line)]


def _wrong_step(index: int, line: str) -> WrongStep | None:
    """`line` (at `index`) as a wrong step; None when it is no step line or a right one."""
    match = _STEP.match(line)
    if not match:
        return None
    left, op, term, result = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
    correct = left + term if op == "+" else left - term
    return None if result == correct else WrongStep(index, line, left, op, term, correct)


def first_wrong_step(solution: str) -> WrongStep | None:
    """The first step line `a op b = c` with c != a op b; None when every step line is right."""
    return next(filter(None, (_wrong_step(index, line) for index, line in enumerate(solution.split("\n")))), None)


# How the toy's constructions open a reflection right after the wrong line ("Wait, 52 - 8 = 44, not 45."):
# the teacher writes it, the synthesis template names it, and the probe (`recipe_tapo.toy.probe`)
# counts a continuation as reflecting when its first line begins with it.
REFLECTION_OPENER = "Wait,"


def reflection_line(step: WrongStep) -> str:
    """The reflection on `step` in the constructions' form: the opener, the right result, the wrong one."""
    wrong_result = step.line.rsplit("=", 1)[1].strip()
    return f"{REFLECTION_OPENER} {step.left} {step.op} {step.term} = {step.correct}, not {wrong_result}."


def begins_reflection(continuation: str) -> bool:
    """Whether the first line of `continuation` (text written after a step line's line break) opens a
    reflection in the constructions' form."""
    return continuation.split("\n", 1)[0].lstrip().startswith(REFLECTION_OPENER)


def kept_step_lines(solution: str) -> list[int]:
    """Indices of the step lines the solution goes on from: every step line except one followed by a
    reflection (a caught slip, whose right value the reflection line gives)."""
    lines = solution.split("\n")
    return [index for index in step_line_indices(solution)
            if not (index + 1 < len(lines) and begins_reflection(lines[index + 1]))]


def first_uncaught_wrong_step(solution: str) -> tuple[int, WrongStep] | None:
    """The first wrong step line that no reflection follows (the slip that makes the answer wrong), with
    the problem's step index (its position among all step lines: a caught slip's reflection is not a
    step line); None when there is none."""
    lines, kept = solution.split("\n"), set(kept_step_lines(solution))
    for position, index in enumerate(step_line_indices(solution)):
        step = _wrong_step(index, lines[index]) if index in kept else None
        if step is not None:
            return position, step
    return None


def continue_from(left: int, problem: ChainProblem, step_index: int) -> list[str]:
    """Correct step lines from step `step_index` on, starting from the value `left`, and the answer."""
    lines, value = [], left
    for op, term in zip(problem.ops[step_index:], problem.terms[step_index + 1 :], strict=True):
        result = value + term if op == "+" else value - term
        lines.append(f"{value} {op} {term} = {result}")
        value = result
    lines.append(f"\\boxed{{{value}}}")
    return lines
