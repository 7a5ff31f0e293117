r"""Forced-prefix recovery probe: does a checkpoint reflect and recover right after a wrong line?

    python -m recipe_tapo.toy.probe build --model COLD_START --data test.parquet --out probe_set.jsonl \
        [--prefixes 200] [--samples 1] [--seed 0]
    python -m recipe_tapo.toy.probe run --model CHECKPOINT --probe-set probe_set.jsonl --out-dir DIR \
        [--k 4] [--seed 0]

`build` (once, from a reference policy: the cold start) samples the reference's answers to the
problems of `--data` and writes the probe set, seeded, so every arm is probed on the same prefixes:
- `wrong_line` prefixes: a wrong answer (scored wrong, with a first wrong line, `first_wrong_step`)
  cut right after its first wrong line and that line's line break;
- `right_line` prefixes (false-alarm probes): a right answer with no wrong line cut after one of its
  step lines, drawn at random.
At most one prefix of each kind per problem, then at most `--prefixes` of each kind, drawn by seed.
A kind may have no prefix (a policy that writes no checkable step line); its figures are then n/a.

`run` continues every prefix `--k` times with the checkpoint, sampled as the toy's evaluation
samples (temperature 1, no nucleus cut), and classifies each continuation: it *reflects* when its
first line opens a reflection in the constructions' form (`recipe_tapo.toy.task.begins_reflection`:
"Wait,"), it *ends right* when the math reward scores prefix + continuation right (the last
`\boxed{}` equals the answer). It writes DIR/probe_results.json:
- after a wrong line: the share of continuations that reflect, that end right, and that end right
  among those that reflect; after a right line: the share that reflect (false alarms);
- each with a 95% interval: a cluster bootstrap over prefixes (the K continuations of one prefix
  share it and are correlated, so a Wilson interval over all N x K continuations would be too
  narrow). When the count is 0 or all, every resample repeats it and the bootstrap collapses to a
  point; there the Wilson interval over the N prefixes is given instead (the effective sample size
  lies between N and N x K, so counting prefixes is the conservative end);
- the reflection shares again by the step the prefix was cut after, hard or easy
  (`recipe_tapo.toy.task.is_hard_step`: a carry, a borrow or a 2-digit term), the `_hard` and `_easy`
  keys: whether reflection follows a wrong line or merely a hard one;
- the model's next-token probability of the reflection's first token (the first token of
  "Wait," under the checkpoint's tokenizer) right after the cut, averaged over prefixes of each kind:
  one forward pass per prefix;
and DIR/continuations.jsonl (every continuation with its verdicts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from recipe_tapo.textio import iter_json_lines, write_json_line
from recipe_tapo.toy.task import (REFLECTION_OPENER, begins_reflection, first_wrong_step, is_hard_step_line,
                                  step_line_indices)

WRONG_LINE, RIGHT_LINE = "wrong_line", "right_line"
BOOTSTRAP_RESAMPLES = 2000
Z_95 = 1.959964


def cut_after_line(answer: str, line_index: int) -> str | None:
    """`answer`'s text through line `line_index` and its line break; None when no line break follows it."""
    lines = answer.split("\n")
    if not 0 <= line_index < len(lines) - 1:
        return None
    return "\n".join(lines[: line_index + 1]) + "\n"


def wrong_line_prefix(answer: str) -> str | None:
    """A wrong answer cut right after its first wrong line; None without one (or when nothing follows it)."""
    step = first_wrong_step(answer)
    return None if step is None else cut_after_line(answer, step.line_index)


def right_line_prefix(answer: str, rng: random.Random) -> str | None:
    """An answer with no wrong line cut after one of its step lines, drawn by `rng`; None when it has a
    wrong line or no step line with a line break after it."""
    if first_wrong_step(answer) is not None:
        return None
    last = len(answer.split("\n")) - 1
    candidates = [index for index in step_line_indices(answer) if index < last]
    return cut_after_line(answer, rng.choice(candidates)) if candidates else None


def probe_records(rows: Sequence[dict], scored: Sequence, max_prefixes: int, seed: int) -> list[dict]:
    """The probe set from scored answers (`ScoredRow`s of `rows`): at most one prefix of each kind per
    problem, then at most `max_prefixes` of each kind drawn by `seed`, wrong-line ones first."""
    rng = random.Random(seed)
    chosen: dict[str, list[dict]] = {WRONG_LINE: [], RIGHT_LINE: []}
    for scored_row in scored:
        row = rows[scored_row.row_index]
        found: dict[str, tuple[str, str]] = {}
        for answer, correct in zip(scored_row.responses, scored_row.correct):
            kind, prefix = (RIGHT_LINE, right_line_prefix(answer, rng)) if correct else (WRONG_LINE, wrong_line_prefix(answer))
            if prefix is not None and kind not in found:
                found[kind] = (answer, prefix)
        for kind, (answer, prefix) in found.items():
            chosen[kind].append({
                "kind": kind, "problem_id": scored_row.problem_id, "data_source": scored_row.data_source,
                "prompt": [{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
                "ground_truth": str(row["reward_model"]["ground_truth"]), "answer": answer, "prefix": prefix,
            })
    records = []
    for kind in (WRONG_LINE, RIGHT_LINE):
        candidates = chosen[kind]
        picked = sorted(rng.sample(range(len(candidates)), min(max_prefixes, len(candidates))))
        records += [candidates[index] for index in picked]
    return records


def load_probe_set(path: str) -> list[dict]:
    """The probe set's records; a missing file or a line that is not a probe record stops with its name."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path}: no such probe set (python -m recipe_tapo.toy.probe build writes it)")
    records = []
    for line in iter_json_lines(path):
        record = line.value if line.ok and isinstance(line.value, dict) else None
        missing = {"kind", "prompt", "prefix", "ground_truth"} - set(record or {})
        if record is None or missing or record["kind"] not in (WRONG_LINE, RIGHT_LINE):
            why = line.error or (f"missing {sorted(missing)}" if record is not None and missing else "not a probe record")
            raise SystemExit(f"error: {path}: line {line.line_number}: {why}")
        records.append(record)
    return records


@dataclass(frozen=True)
class Share:
    """`count` of `total`, with a 95% interval and the method that gave it."""

    count: int
    total: int
    low: float
    high: float
    method: str

    @property
    def value(self) -> float:
        return self.count / self.total

    def as_dict(self) -> dict:
        return {"share": self.value, "count": self.count, "total": self.total, "low": self.low, "high": self.high,
                "interval": self.method}


def wilson_interval(count: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the proportion count / total."""
    if not 0 <= count <= total or total < 1:
        raise ValueError(f"need 0 <= count <= total and total >= 1, got {count} of {total}")
    share = count / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    # at 0 and at all, the bound on that side is exact (float rounding would leave 1e-16 off it)
    low = 0.0 if count == 0 else max(0.0, centre - half)
    high = 1.0 if count == total else min(1.0, centre + half)
    return low, high


def clustered_share(clusters: Sequence[tuple[int, int]], seed: int = 0,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> Share | None:
    """The pooled share sum(count) / sum(total) of `clusters` ((count, total) per prefix) with a 95%
    percentile interval from resampling the clusters; None when no cluster has a total. A count of 0
    or all gets the Wilson interval over the clusters instead (the bootstrap would collapse to a point)."""
    clusters = [(count, total) for count, total in clusters if total > 0]
    if not clusters:
        return None
    count, total = sum(c for c, _ in clusters), sum(t for _, t in clusters)
    if count in (0, total):
        low, high = wilson_interval(0 if count == 0 else len(clusters), len(clusters))
        return Share(count, total, low, high, f"Wilson over {len(clusters)} prefixes")
    rng = random.Random(seed)
    shares = []
    for _ in range(resamples):
        drawn = [clusters[rng.randrange(len(clusters))] for _ in clusters]
        drawn_total = sum(t for _, t in drawn)
        if drawn_total:
            shares.append(sum(c for c, _ in drawn) / drawn_total)
    shares.sort()
    low = shares[int(0.025 * (len(shares) - 1))]
    high = shares[math.ceil(0.975 * (len(shares) - 1))]
    return Share(count, total, low, high, f"cluster bootstrap over {len(clusters)} prefixes")


def cut_after_hard_step(prefix: str) -> bool | None:
    """Whether the last line of `prefix` (the line it was cut after) is a hard step; None when it is no step line."""
    return is_hard_step_line(prefix.rstrip("\n").rsplit("\n", 1)[-1])


def summarize(verdicts: Sequence[dict], token_probabilities: dict[str, list[float]], seed: int = 0) -> dict:
    """The probe's figures from per-continuation verdicts (`kind`, `prefix_index`, `reflects`, `right`, and
    `hard_step` for the split by the cut line's step)."""
    by_prefix: dict[tuple[str, int], list[dict]] = {}
    for verdict in verdicts:
        by_prefix.setdefault((verdict["kind"], verdict["prefix_index"]), []).append(verdict)
    wrong = [group for (kind, _), group in by_prefix.items() if kind == WRONG_LINE]
    right = [group for (kind, _), group in by_prefix.items() if kind == RIGHT_LINE]

    def share(groups, hit, among=lambda v: True):
        found = clustered_share([(sum(1 for v in group if among(v) and hit(v)), sum(1 for v in group if among(v)))
                                 for group in groups], seed)
        return found.as_dict() if found else None

    def mean(values):
        return sum(values) / len(values) if values else None

    def of_step(groups, hard):
        return [group for group in groups if group[0].get("hard_step") is hard]

    split = {f"{key}_{name}": share(of_step(groups, hard), lambda v: v["reflects"])
             for key, groups in (("reflect_after_wrong", wrong), ("false_alarm", right))
             for name, hard in (("hard", True), ("easy", False))}
    return {
        "wrong_line_prefixes": len(wrong), "right_line_prefixes": len(right),
        "reflect_after_wrong": share(wrong, lambda v: v["reflects"]),
        "right_after_wrong": share(wrong, lambda v: v["right"]),
        "right_among_reflecting": share(wrong, lambda v: v["right"], among=lambda v: v["reflects"]),
        "false_alarm": share(right, lambda v: v["reflects"]),
        "reflection_token_probability_after_wrong": mean(token_probabilities.get(WRONG_LINE, [])),
        "reflection_token_probability_after_right": mean(token_probabilities.get(RIGHT_LINE, [])),
        **split,
    }


def classify(record: dict, continuation: str, scorer: Callable[[str, str, str], bool]) -> dict:
    """One continuation's verdicts: whether it opens a reflection and whether prefix + it ends right."""
    return {"reflects": begins_reflection(continuation),
            "right": scorer(record.get("data_source", ""), record["prefix"] + continuation, record["ground_truth"])}


def math_reward_verdict(data_source: str, answer: str, ground_truth: str) -> bool:
    from recipe_tapo.reward.math_reward import compute_score

    return bool(compute_score(data_source, answer, ground_truth)["acc"])


def prefix_ids(tokenizer, record: dict) -> list[int]:
    """The chat prompt with the generation prompt, then the answer's prefix, as token ids."""
    from recipe_tapo.generation import chat_prompt_ids

    return chat_prompt_ids(tokenizer, record["prompt"]) + tokenizer.encode(record["prefix"], add_special_tokens=False)


def next_token_probability(model, ids: list[int], token_id: int) -> float:
    """The model's probability of `token_id` right after `ids` (one forward pass)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(torch.softmax(logits.float(), dim=-1)[token_id])


def run_probe(model_path: str, records: list[dict], k: int, seed: int, temperature: float, top_p: float,
              max_new_tokens: int) -> tuple[dict, list[dict]]:
    """Continue every prefix `k` times with the model at `model_path`; the figures and every continuation."""
    from transformers import AutoTokenizer

    from recipe_tapo.generation import HFGenerator, SamplingSettings

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    generator = HFGenerator(model_path)
    prompts = [prefix_ids(tokenizer, record) for record in records]
    settings = SamplingSettings(n=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    samples = generator.generate(prompts, settings) if prompts else []
    opener_id = tokenizer.encode(REFLECTION_OPENER, add_special_tokens=False)[0]
    token_probabilities: dict[str, list[float]] = {}
    continuations = []
    for index, (record, ids, responses) in enumerate(zip(records, prompts, samples)):
        token_probabilities.setdefault(record["kind"], []).append(next_token_probability(generator.model, ids, opener_id))
        for response in responses:
            text = tokenizer.decode(response, skip_special_tokens=True)
            continuations.append({"kind": record["kind"], "prefix_index": index, "problem_id": record.get("problem_id"),
                                  "hard_step": cut_after_hard_step(record["prefix"]), "continuation": text,
                                  **classify(record, text, math_reward_verdict)})
    return summarize(continuations, token_probabilities, seed), continuations


def build_main(args) -> None:
    from transformers import AutoTokenizer

    from recipe_tapo.evaluation.sampling import load_rows, sample_and_score
    from recipe_tapo.generation import HFGenerator, SamplingSettings

    rows = load_rows(args.data)[: args.limit]
    settings = SamplingSettings(n=args.samples, temperature=args.temperature, top_p=args.top_p,
                                max_new_tokens=args.max_new_tokens, seed=args.seed)
    outcome = sample_and_score(rows, AutoTokenizer.from_pretrained(args.model), HFGenerator(args.model), settings)
    records = probe_records(rows, outcome.scored, args.prefixes, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as sink:
        for record in records:
            write_json_line(sink, record)
    counts = {kind: sum(1 for record in records if record["kind"] == kind) for kind in (WRONG_LINE, RIGHT_LINE)}
    for kind, count in counts.items():
        if not count:  # e.g. a policy that never writes a checkable step line: the probe then reports n/a
            print(f"[probe] warning: no {kind} prefix in {args.data}", file=sys.stderr)
    print(json.dumps({"problems": len(rows), "answers": sum(len(row.responses) for row in outcome.scored),
                      "wrong_answers": sum(row.correct.count(False) for row in outcome.scored), "prefixes": counts}))


def run_main(args) -> None:
    records = load_probe_set(args.probe_set)
    metrics, continuations = run_probe(args.model, records, args.k, args.seed, args.temperature, args.top_p,
                                       args.max_new_tokens)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "continuations.jsonl"), "w", encoding="utf-8") as sink:
        for continuation in continuations:
            write_json_line(sink, continuation)
    result = {"model": args.model, "probe_set": args.probe_set, "k": args.k, "seed": args.seed,
              "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
              "metrics": metrics}
    with open(os.path.join(args.out_dir, "probe_results.json"), "w", encoding="utf-8") as sink:
        json.dump(result, sink, indent=2)
    print(json.dumps(metrics, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="the probe set, from a reference policy's answers")
    build.add_argument("--model", required=True, help="the reference policy (HF folder): the cold start")
    build.add_argument("--data", required=True, help="toy split parquet (python -m recipe_tapo.toy.build)")
    build.add_argument("--out", required=True, help="the probe set (JSONL)")
    build.add_argument("--prefixes", type=int, default=200, help="at most this many prefixes of each kind")
    build.add_argument("--samples", type=int, default=1, help="answers sampled per problem")
    build.add_argument("--limit", type=int, default=None, help="first N problems")
    run = commands.add_parser("run", help="probe a checkpoint on a probe set")
    run.add_argument("--model", required=True, help="the checkpoint under evaluation (HF folder)")
    run.add_argument("--probe-set", required=True)
    run.add_argument("--out-dir", required=True)
    run.add_argument("--k", type=int, default=4, help="continuations per prefix")
    for command in (build, run):
        # sampled as the toy's evaluation samples
        command.add_argument("--temperature", type=float, default=1.0)
        command.add_argument("--top-p", type=float, default=1.0)
        command.add_argument("--max-new-tokens", type=int, default=160)
        command.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("prefixes", "samples", "limit", "k", "max_new_tokens"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    (build_main if args.command == "build" else run_main)(args)


if __name__ == "__main__":
    main()
