"""How many responses per second `compute_score` scores on this machine.

    python -m recipe_tapo.reward.benchmark [--responses 2000] [--threads 1] [--response-chars 2000]

Synthetic responses of about `--response-chars` characters of reasoning followed by a boxed answer,
in five kinds; the mix approximates RL on AIME-style data (mostly integers, decided in-process)
with a share of LaTeX answers that need math-verify in the verifier process. Each kind is timed
on its own, then the mix. Threads call `compute_score` concurrently, as verl's reward executor does.
"""

import argparse
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from recipe_tapo.reward.math_reward import compute_score

Case = tuple[str, str, bool]  # (response, ground truth, expected verdict)


def _integer_right(rng: random.Random) -> Case:
    answer = rng.randint(0, 999)
    return f"\\boxed{{{answer}}}", str(answer), True


def _integer_wrong(rng: random.Random) -> Case:
    answer = rng.randint(0, 999)
    return f"\\boxed{{{answer + rng.randint(1, 50)}}}", str(answer), False


def _latex_equivalent(rng: random.Random) -> Case:
    n = rng.randint(2, 30)
    return f"\\boxed{{\\sqrt{{{2 * n * n}}}}}", f"{n}\\sqrt{{2}}", True


def _latex_different(rng: random.Random) -> Case:
    n = rng.randint(2, 30)
    return f"\\boxed{{\\frac{{{n}}}{{\\sqrt{{3}}}}}}", f"\\frac{{{n}\\sqrt{{2}}}}{{2}}", False


def _no_answer(rng: random.Random) -> Case:
    return "I could not finish.", str(rng.randint(0, 999)), False


KINDS: dict[str, tuple[Callable[[random.Random], Case], float]] = {
    "integer, right": (_integer_right, 0.40),
    "integer, wrong": (_integer_wrong, 0.35),
    "latex, equivalent (math-verify)": (_latex_equivalent, 0.10),
    "latex, different (math-verify)": (_latex_different, 0.05),
    "no boxed answer": (_no_answer, 0.10),
}


def make_cases(kind_names: list[str], count: int, response_chars: int, rng: random.Random) -> list[Case]:
    weights = [KINDS[name][1] for name in kind_names]
    reasoning_line = "We expand, collect terms and check the constraint again. "
    reasoning = reasoning_line * max(1, response_chars // len(reasoning_line))
    cases = []
    for name in rng.choices(kind_names, weights=weights, k=count):
        answer_text, ground_truth, expected = KINDS[name][0](rng)
        cases.append((f"{reasoning}Therefore the answer is {answer_text}.", ground_truth, expected))
    return cases


def responses_per_second(cases: list[Case], threads: int) -> float:
    def score(case: Case) -> None:
        response, ground_truth, expected = case
        result = compute_score("benchmark", response, ground_truth)
        if result["acc"] != expected:
            raise AssertionError(f"wrong verdict {result} for {ground_truth!r}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as executor:
        list(executor.map(score, cases))
    return len(cases) / (time.perf_counter() - started)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--responses", type=int, default=2000, help="responses per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--response-chars", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    # The first math-verify call starts the verifier process; keep that out of the figures.
    responses_per_second(make_cases(["latex, equivalent (math-verify)"], 1, args.response_chars, rng), 1)
    print(f"responses of ~{args.response_chars} characters, {args.threads} thread(s), {args.responses} per row")
    for name in KINDS:
        rate = responses_per_second(make_cases([name], args.responses, args.response_chars, rng), args.threads)
        print(f"  {name:34s} {rate:10.0f} responses/s")
    rate = responses_per_second(make_cases(list(KINDS), args.responses, args.response_chars, rng), args.threads)
    print(f"  {'mix of the above (weights in KINDS)':34s} {rate:10.0f} responses/s")


if __name__ == "__main__":
    main()
