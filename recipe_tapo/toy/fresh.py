"""Fresh problems for the toy's committed checkpoints: does a checkpoint score, on problems drawn anew,
what the comparison's report says it scores?

    python -m recipe_tapo.toy.fresh problems --out DIR [--seed 1] [--count 1000] --seen PARQUET [PARQUET ...]
    python -m recipe_tapo.toy.fresh compare --results-dir docs/toy_experiment/comparison --fresh-eval-dir DIR \\
        --arms grpo tapo opsd tapo_teacher --seeds 0 1 2 [--checkpoint-seed 0] [--out FILE.md]

`problems` draws `--count` problems from the task's distribution with another seed, the way the
build draws its test split (so the draw is not biased toward problems the build left over), writes
them as `DIR/fresh.parquet` and lists in `DIR/seen.json` the ones that also occur in the `--seen`
files (the build's RL splits, its SFT chats, any cold-start chats: every problem a checkpoint could
have trained or been selected on). `compare` reads the checkpoints' evaluations on that file
(`DIR/<arm>/eval_results.json` and `samples.jsonl`, as `recipe_tapo.evaluation.evaluate` writes
them) and the comparison's committed test evaluations, and writes, per arm: the report's Pass@1
interval over seeds, the checkpoint seed's test Pass@1, its Pass@1 on the fresh problems (all, and
those never seen) with the standard error over problems, and whether the fresh figure reproduces
the report's (inside its interval over seeds, or within two standard errors of the same
checkpoint's test figure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections import defaultdict

from recipe_tapo.textio import iter_json_lines
from recipe_tapo.toy.build import draw_rows
from recipe_tapo.toy.report import BENCHMARK, arm_label, eval_metrics, fmt_interval, t_interval

FRESH_FILE = "fresh.parquet"
SEEN_FILE = "seen.json"


def problem_texts(path: str) -> list[str]:
    """The problem statements of a parquet file: RL rows (`extra_info.problem`) or chats (`messages`,
    the first user turn, which is the bare problem in the toy's chats)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    texts = []
    if "extra_info" in frame.columns:
        for number, info in enumerate(frame["extra_info"]):
            problem = info.get("problem") if isinstance(info, dict) else None
            if not isinstance(problem, str) or not problem:
                raise ValueError(f"{path}: row {number} has no extra_info.problem")
            texts.append(problem)
    elif "messages" in frame.columns:
        for number, messages in enumerate(frame["messages"]):
            users = [turn.get("content") for turn in (messages if messages is not None else []) if isinstance(turn, dict)
                     and turn.get("role") == "user"]
            if not users or not isinstance(users[0], str):
                raise ValueError(f"{path}: chat {number} has no user turn")
            texts.append(users[0])
    else:
        raise ValueError(f"{path}: neither RL rows (extra_info) nor chats (messages); columns: {list(frame.columns)}")
    return texts


def draw_fresh(seed: int, count: int, seen: set[str]) -> tuple[list[dict], list[str]]:
    """`count` rows drawn with `seed` (ids `fresh-<i>`) and the ids of those whose problem is in `seen`."""
    rows = draw_rows(random.Random(seed), set(), "fresh", count)
    return rows, [row["extra_info"]["source_id"] for row in rows if row["extra_info"]["problem"] in seen]


def per_problem_verdicts(samples_path: str) -> dict[str, list[bool]]:
    """Each problem's verdicts (one a sample) in an evaluation's samples.jsonl."""
    verdicts = defaultdict(list)
    for line in iter_json_lines(samples_path):
        if not line.ok or not isinstance(line.value, dict):
            raise ValueError(f"{samples_path}: {line.error or f'line {line.line_number}: not a JSON object'}")
        record = line.value
        if record.get("benchmark") == BENCHMARK:
            verdicts[str(record["problem_id"])].append(bool(record["correct"]))
    return dict(verdicts)


def mean_and_se(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and standard error over problems (in the values' units)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def binomial_se_bound(pass1_percent: float, problems: int) -> float:
    """An upper bound on the standard error over problems of a Pass@1 whose per-problem values are not
    kept (a per-problem mean in [0, 1] has variance at most p(1 - p))."""
    p = pass1_percent / 100
    return 100 * math.sqrt(p * (1 - p) / problems)


def compare(results_dir: str, fresh_eval_dir: str, arms: list[str], seeds: list[str], checkpoint_seed: str,
            seen_ids: set[str]) -> list[dict]:
    """One row per arm with a fresh evaluation (see the module docstring); percent throughout."""
    rows = []
    for arm in arms:
        arm_dir = os.path.join(fresh_eval_dir, arm)
        samples = os.path.join(arm_dir, "samples.jsonl")
        if not os.path.isfile(samples):
            print(f"[fresh] {arm}: no evaluation in {arm_dir}, skipped", file=sys.stderr)
            continue
        verdicts = per_problem_verdicts(samples)
        per_problem = {problem: sum(values) / len(values) for problem, values in verdicts.items()}
        fresh, fresh_se = mean_and_se([100 * value for value in per_problem.values()])
        unseen, unseen_se = mean_and_se([100 * value for problem, value in per_problem.items() if problem not in seen_ids])
        per_seed = {seed: eval_metrics(os.path.join(results_dir, "eval", f"{arm}_s{seed}")) for seed in seeds}
        test = {seed: metrics["pass@1"] for seed, metrics in per_seed.items() if metrics}
        mean, half = t_interval(list(test.values()))
        own = test.get(checkpoint_seed)
        own_se = binomial_se_bound(own, per_seed[checkpoint_seed]["problems"]) if own is not None else None
        difference = fresh - own if own is not None else None
        difference_se = math.sqrt(fresh_se ** 2 + own_se ** 2) if own is not None and fresh_se is not None else None
        inside = half is not None and mean - half <= fresh <= mean + half
        close = difference is not None and difference_se is not None and abs(difference) <= 2 * difference_se
        rows.append({"arm": arm, "seeds": sorted(test), "test_mean": mean, "test_half": half, "test_own": own,
                     "test_own_se_bound": own_se, "fresh": fresh, "fresh_se": fresh_se, "fresh_problems": len(per_problem),
                     "samples": max(len(values) for values in verdicts.values()),
                     "unseen": unseen, "unseen_se": unseen_se, "unseen_problems": len(per_problem) - len(seen_ids & set(per_problem)),
                     "difference": difference, "difference_se": difference_se, "inside_interval": inside,
                     "within_two_se": close, "reproduced": inside or close})
    return rows


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(rows: list[dict], checkpoint_seed: str, fresh_count: int, seen_count: int, seed: int) -> str:
    samples = "/".join(sorted({str(row["samples"]) for row in rows}))
    lines = ["# The committed checkpoints on fresh problems", "",
             f"{fresh_count} problems drawn with seed {seed} from the task's distribution ({seen_count} of them also occur in "
             f"the data the checkpoints were built or trained on); each checkpoint (seed {checkpoint_seed} of its arm) "
             f"sampled as in the report ({samples} answers a problem, temperature 1). Standard errors are over problems; the "
             "test figure's is an upper bound (its per-problem verdicts are not kept). Reproduced: the fresh Pass@1 lies "
             "inside the report's interval over seeds, or within two standard errors of the same checkpoint's test Pass@1.",
             "", "| arm | report: test Pass@1 over seeds (95% t) | test Pass@1, this checkpoint | fresh Pass@1 (SE) | "
             "fresh, never-seen problems (SE) | fresh - test (SE) | reproduced |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        interval = fmt_interval(row["test_mean"], row["test_half"])
        seeds = f"{_num(row['test_mean'])} {interval} (seeds {', '.join(row['seeds'])})"
        verdict = "yes" if row["reproduced"] else "**no**"
        reason = "inside the interval" if row["inside_interval"] else ("within 2 SE" if row["within_two_se"] else "")
        lines.append(f"| {arm_label(row['arm'])} | {seeds} | {_num(row['test_own'])} | {_num(row['fresh'])} "
                     f"({_num(row['fresh_se'], 2)}) | {_num(row['unseen'])} ({_num(row['unseen_se'], 2)}, "
                     f"{row['unseen_problems']} problems) | {_num(row['difference'], 2)} ({_num(row['difference_se'], 2)}) | "
                     f"{verdict}{f' ({reason})' if reason else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    problems = commands.add_parser("problems", help="draw fresh problems and mark those already seen")
    problems.add_argument("--out", required=True)
    problems.add_argument("--seed", type=int, default=1)
    problems.add_argument("--count", type=int, default=1000)
    problems.add_argument("--seen", nargs="+", required=True, help="parquet files of RL rows or chats")
    comparing = commands.add_parser("compare", help="fresh Pass@1 of each checkpoint against the report")
    comparing.add_argument("--results-dir", required=True)
    comparing.add_argument("--fresh-eval-dir", required=True, help="holds seen.json and <arm>/samples.jsonl")
    comparing.add_argument("--arms", nargs="+", required=True)
    comparing.add_argument("--seeds", nargs="+", required=True)
    comparing.add_argument("--checkpoint-seed", default="0")
    comparing.add_argument("--out", help="markdown file (default: print)")
    args = parser.parse_args(argv)

    if args.command == "problems":
        import pandas as pd

        if args.count < 1:
            parser.error(f"--count must be at least 1, got {args.count}")
        seen: set[str] = set()
        for path in args.seen:
            if not os.path.isfile(path):
                parser.error(f"--seen file {path} does not exist")
            seen.update(problem_texts(path))
        rows, seen_ids = draw_fresh(args.seed, args.count, seen)
        os.makedirs(args.out, exist_ok=True)
        pd.DataFrame(rows).to_parquet(os.path.join(args.out, FRESH_FILE), index=False)
        with open(os.path.join(args.out, SEEN_FILE), "w", encoding="utf-8") as handle:
            json.dump({"seed": args.seed, "count": args.count, "seen_problems": len(seen), "seen_ids": seen_ids}, handle,
                      indent=1)
        print(f"[fresh] {args.count} problems (seed {args.seed}) in {os.path.join(args.out, FRESH_FILE)}; "
              f"{len(seen_ids)} of them among the {len(seen)} problems of --seen")
        return

    seen_path = os.path.join(args.fresh_eval_dir, SEEN_FILE)
    if not os.path.isfile(seen_path):
        parser.error(f"{seen_path} does not exist: run `problems --out {args.fresh_eval_dir}` first")
    with open(seen_path, encoding="utf-8") as handle:
        seen_record = json.load(handle)
    rows = compare(args.results_dir, args.fresh_eval_dir, args.arms, args.seeds, args.checkpoint_seed,
                   set(seen_record["seen_ids"]))
    if not rows:
        parser.error(f"no arm of {args.arms} has an evaluation in {args.fresh_eval_dir}")
    text = render(rows, args.checkpoint_seed, seen_record["count"], len(seen_record["seen_ids"]), seen_record["seed"])
    with open(os.path.join(args.fresh_eval_dir, "fresh_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(rows, handle, indent=1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
