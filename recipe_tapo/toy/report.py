"""The toy experiment's report: one markdown file and one PNG plot from a work folder.

    python -m recipe_tapo.toy.report --work-dir DIR --arms grpo tapo --seeds 0 1 2 --rl-steps 12

Reads what `run_scripts/run_toy_reproduction.sh` leaves in DIR:
- `.stages/<stage>.done`: each stage's wall time in seconds;
- `eval/pre_rl_base`, `eval/pre_rl_cold_start` (validation set, groups of n samples) and
  `eval/<arm>_s<seed>` (held-out test set): `eval_results.json` and `samples.jsonl` of
  `python -m recipe_tapo.evaluation.evaluate`;
- `cold_start/stats.json` of `python -m recipe_tapo.cold_start`;
- `runs/<arm>_s<seed>/metrics.jsonl`: verl's file logger (one line per step: validation and `tapo/`
  metrics); `runs/<arm>_s<seed>/tapo_dump/step_*.jsonl`: the TAPO trainer's synthesis attempts.

Writes DIR/report.md and DIR/plot.png (validation accuracy per step per arm, mean and spread over
seeds; for the TAPO arms the synthesis parse rate and the constructed/inserted rows per step).
Missing pieces are reported as missing, never invented.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
from collections import Counter, defaultdict

from recipe_tapo.textio import iter_json_lines

BENCHMARK = "toy_chain"
VAL_KEY = re.compile(r"^val-core/[^/]+/(acc|score|reward)/mean@(\d+)$")


def _read_json(path: str):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_jsonl(path: str) -> list[dict]:
    """The JSON objects of a JSONL file; a broken line (bad bytes, cut short by a killed run) is
    skipped with a warning, never the end of the report."""
    if not os.path.isfile(path):
        return []
    records = []
    for line in iter_json_lines(path):
        if line.ok and isinstance(line.value, dict):
            records.append(line.value)
        else:
            print(f"[report] {path}: skipped {line.error or f'line {line.line_number}: not a JSON object'}",
                  file=sys.stderr)
    return records


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [value for value in values if value is not None and not math.isnan(value)]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _synthesis_rates(stats: dict) -> str:
    """The synthesis part of a cold-start builder's `stats.json`, in words."""
    return (f"{stats['synthesis_requests']} synthesis requests, {stats.get('synthesis_answered', 'n/a')} answered, "
            f"parse rate {_percent(stats.get('parse_rate'))}, splice rate {_percent(stats.get('splice_rate'))}, "
            f"constructions verified correct {_percent(stats.get('verified_rate'))}")


def fmt(mean: float | None, std: float | None = None, digits: int = 1) -> str:
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def stage_times(work_dir: str) -> dict[str, int]:
    times = {}
    for path in sorted(glob.glob(os.path.join(work_dir, ".stages", "*.done")), key=os.path.getmtime):
        try:
            times[os.path.basename(path)[: -len(".done")]] = int(open(path, encoding="utf-8").read().strip())
        except ValueError:
            continue
    return times


def step_metrics(run_dir: str) -> dict[int, dict[str, float]]:
    """verl's file-logger lines as {step: metrics} (a step's lines merged)."""
    steps: dict[int, dict[str, float]] = defaultdict(dict)
    for record in _read_jsonl(os.path.join(run_dir, "metrics.jsonl")):
        for key, value in record.get("data", {}).items():
            if isinstance(value, int | float):
                steps[int(record["step"])][key] = float(value)
    return dict(steps)


def val_accuracy(metrics: dict[str, float]) -> float | None:
    """Validation accuracy (percent) from one step's metrics: `acc` preferred, else the score."""
    found = {}
    for key, value in metrics.items():
        match = VAL_KEY.match(key)
        if match:
            found[match.group(1)] = value
    for name in ("acc", "score", "reward"):
        if name in found:
            return 100.0 * found[name]
    return None


def group_stats(samples_path: str, n_pos: int = 2, n_neg: int = 4) -> dict | None:
    """Per problem group: mixed (some right, some wrong) and in the DCS band (>= n_pos right, >= n_neg wrong)."""
    rows = _read_jsonl(samples_path)
    if not rows:
        return None
    groups: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        groups[row["problem_id"]].append(bool(row["correct"]))
    sizes = {len(values) for values in groups.values()}
    return {
        "groups": len(groups),
        "group_size": max(sizes),
        "accuracy": 100.0 * sum(sum(values) for values in groups.values()) / sum(len(values) for values in groups.values()),
        "mixed": sum(1 for values in groups.values() if 0 < sum(values) < len(values)),
        "all_right": sum(1 for values in groups.values() if all(values)),
        "all_wrong": sum(1 for values in groups.values() if not any(values)),
        "dcs_band": sum(1 for values in groups.values()
                        if sum(values) >= n_pos and len(values) - sum(values) >= n_neg),
    }


def eval_metrics(eval_dir: str) -> dict[str, float | None] | None:
    report = _read_json(os.path.join(eval_dir, "eval_results.json"))
    if not report:
        return None
    benchmark = report.get("benchmarks", {}).get(BENCHMARK)
    return None if benchmark is None else dict(benchmark["metrics"])


def dump_statuses(run_dir: str) -> Counter:
    statuses: Counter = Counter()
    for path in glob.glob(os.path.join(run_dir, "tapo_dump", "step_*.jsonl")):
        for record in _read_jsonl(path):
            statuses[str(record.get("status"))] += 1
    return statuses


def dump_examples(run_dir: str, limit: int = 2) -> list[dict]:
    """A few inserted constructions (the policy's own synthesis), for the report."""
    examples = []
    for path in sorted(glob.glob(os.path.join(run_dir, "tapo_dump", "step_*.jsonl"))):
        for record in _read_jsonl(path):
            if record.get("status") == "ok" and len(examples) < limit:
                examples.append(record)
    return examples


def collect(work_dir: str, arms: list[str], seeds: list[str]) -> dict:
    data = {"stages": stage_times(work_dir), "runs": {}, "pre_rl": {},
            "cold_start": _read_json(os.path.join(work_dir, "cold_start", "stats.json")),
            "pre_rl_synthesis": _read_json(os.path.join(work_dir, "eval", "pre_rl_synthesis", "stats.json"))}
    for name in ("base", "cold_start"):
        eval_dir = os.path.join(work_dir, "eval", f"pre_rl_{name}")
        data["pre_rl"][name] = group_stats(os.path.join(eval_dir, "samples.jsonl"))
    for arm in arms:
        for seed in seeds:
            run_dir = os.path.join(work_dir, "runs", f"{arm}_s{seed}")
            data["runs"][(arm, seed)] = {
                "steps": step_metrics(run_dir),
                "test": eval_metrics(os.path.join(work_dir, "eval", f"{arm}_s{seed}")),
                "dump": dump_statuses(run_dir),
                "examples": dump_examples(run_dir),
            }
    return data


def _val_curve(steps: dict[int, dict[str, float]]) -> dict[int, float]:
    curve = {}
    for step, metrics in steps.items():
        value = val_accuracy(metrics)
        if value is not None:
            curve[step] = value
    return curve


def _series(runs: list[dict], key: str, when: str | None = None) -> dict[int, tuple[float | None, float | None]]:
    """Mean and std over runs of `key` per step; with `when`, only steps where that metric is > 0."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, metrics in run["steps"].items():
            if key in metrics and (when is None or metrics.get(when, 0) > 0):
                by_step[step].append(metrics[key])
    return {step: mean_std(values) for step, values in sorted(by_step.items())}


def _errorbar(ax, series: dict[int, tuple[float | None, float | None]], label: str, scale: float = 1.0) -> None:
    """One arm's mean ± std per step (`_series`) on `ax`; nothing when no step has a value."""
    points = [(step, mean, std) for step, (mean, std) in series.items() if mean is not None]
    if points:
        ax.errorbar([step for step, _, _ in points], [scale * mean for _, mean, _ in points],
                    yerr=[scale * (std or 0.0) for _, _, std in points], marker="o", capsize=3, label=label)


def plot(data: dict, arms: list[str], seeds: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tapo_arms = [arm for arm in arms if arm.startswith("tapo")]
    figure, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    ax = axes[0]
    for arm in arms:
        curves = [_val_curve(data["runs"][(arm, seed)]["steps"]) for seed in seeds]
        steps = sorted({step for curve in curves for step in curve})
        if not steps:
            continue
        stats = [mean_std([curve.get(step) for curve in curves]) for step in steps]
        means = [mean for mean, _ in stats]
        stds = [std for _, std in stats]
        ax.plot(steps, means, marker="o", label=f"{arm} (n={len(seeds)})")
        ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.2)
    ax.set_title("validation accuracy (sampled, %)")
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax = axes[1]
    for arm in arms:
        _errorbar(ax, _series([data["runs"][(arm, seed)] for seed in seeds], "critic/score/mean"), arm, scale=100)
    ax.set_title("training rollouts: accuracy (original rows, %)")
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    for ax, key, title in ((axes[2], "tapo/parse_rate", "TAPO: synthesis parse rate"),
                           (axes[3], "tapo/constructed_rows", "TAPO: constructed rows inserted per step")):
        for arm in tapo_arms:
            when = "tapo/synthesis_answered" if key == "tapo/parse_rate" else None
            _errorbar(ax, _series([data["runs"][(arm, seed)] for seed in seeds], key, when), arm)
        if key == "tapo/constructed_rows":
            for arm in tapo_arms:
                series = _series([data["runs"][(arm, seed)] for seed in seeds], "tapo/pairs")
                if series:
                    ax.plot(list(series), [value[0] for value in series.values()], linestyle="--",
                            label=f"{arm}: pairs (synthesis requests)")
        ax.set_title(title + (" (steps with synthesis outputs)" if key == "tapo/parse_rate" else ""))
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def render(data: dict, arms: list[str], seeds: list[str], rl_steps: int, quick: bool, command: str) -> str:
    lines = ["# Toy experiment: TAPO vs GRPO on CPU", ""]
    lines += [f"Made by `{command}`" + (" (QUICK=1: a smoke run, not a measurement)." if quick else "."), ""]
    lines += [f"Arms: {', '.join(arms)}; seeds: {', '.join(seeds)}; {rl_steps} RL steps each, from the same "
              "cold-start checkpoint. Mean ± sample standard deviation over seeds. Percentages.", ""]

    lines += ["## Test set (held out)", ""]
    ks = sorted({int(key.split("@")[1]) for run in data["runs"].values() if run["test"]
                 for key in run["test"] if key.startswith("pass@")})
    header = ["arm", "seeds"] + [f"Pass@{k}" for k in ks] + ["DSR", "ERR", "reflecting", "val acc first", "val acc last"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        runs = [data["runs"][(arm, seed)] for seed in seeds]
        done = [run for run in runs if run["test"]]
        cells = [arm, f"{len(done)}/{len(runs)}"]
        for k in ks:
            cells.append(fmt(*mean_std([run["test"].get(f"pass@{k}") for run in done])))
        for key in ("dsr", "err", "reflection_rate"):
            cells.append(fmt(*mean_std([run["test"].get(key) for run in done])))
        firsts, lasts = [], []
        for run in runs:
            curve = _val_curve(run["steps"])
            if curve:
                firsts.append(curve[min(curve)])
                lasts.append(curve[max(curve)])
        cells += [fmt(*mean_std(firsts)), fmt(*mean_std(lasts))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per seed (test Pass@1 / DSR / ERR / reflecting; last validation accuracy):", ""]
    lines += ["| arm | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for arm in arms:
        cells = [arm]
        for seed in seeds:
            run = data["runs"][(arm, seed)]
            test = run["test"] or {}
            curve = _val_curve(run["steps"])
            cells.append(" / ".join(fmt(test.get(key)) for key in ("pass@1", "dsr", "err", "reflection_rate"))
                         + f"; {fmt(curve[max(curve)]) if curve else 'n/a'}")
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## TAPO: the policy's own synthesis, per step (mean over seeds)", ""]
    keys = ["tapo/eligible_groups", "tapo/pairs", "tapo/parse_rate", "tapo/splice_rate", "tapo/constructed_rows",
            "tapo/constructed_acc", "tapo/constructed_token_share"]
    for arm in [arm for arm in arms if arm.startswith("tapo")]:
        runs = [data["runs"][(arm, seed)] for seed in seeds]
        series = {key: _series(runs, key) for key in keys}
        steps = sorted({step for values in series.values() for step in values})
        lines += [f"**{arm}**", "", "| step | " + " | ".join(key.split("/", 1)[1] for key in keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for step in steps:
            lines.append(f"| {step} | " + " | ".join(fmt(series[key].get(step, (None, None))[0], digits=2)
                                                   for key in keys) + " |")
        parsed = [run["steps"][step].get("tapo/parse_rate") for run in runs for step in run["steps"]
                  if "tapo/parse_rate" in run["steps"][step] and run["steps"][step].get("tapo/pairs", 0) > 0]
        with_rows = [run["steps"][step].get("tapo/constructed_rows", 0) > 0 for run in runs for step in run["steps"]
                     if "tapo/pairs" in run["steps"][step]]
        statuses = sum((run["dump"] for run in runs), Counter())
        lines += ["", f"Over all steps and seeds: parse rate {fmt(100 * (sum(parsed) / len(parsed)) if parsed else None)}% "
                  f"(mean over steps with pairs), constructions inserted in {sum(with_rows)} of {len(with_rows)} steps; "
                  f"dump statuses: {dict(statuses.most_common())}.", ""]
        for example in runs[0]["examples"][:1] if runs else []:
            lines += ["One inserted construction (dump of seed " + seeds[0] + f", step {example['step']}): the "
                      "wrong answer, the policy's synthesis output, the trained trajectory:", "", "```",
                      example["wrong"], "---", example["synthesis"], "---", example["trajectory"], "```", ""]

    lines += ["## Before RL (validation set, sampled at temperature 1)", ""]
    lines += ["| model | accuracy | groups | mixed | in the DCS band (>=2 right, >=4 wrong) | all right | all wrong |",
              "|---|---|---|---|---|---|---|"]
    for name, label in (("base", "base SFT"), ("cold_start", "cold start")):
        stats = data["pre_rl"].get(name)
        if stats:
            lines.append(f"| {label} | {fmt(stats['accuracy'])} | {stats['groups']} x {stats['group_size']} | "
                         f"{stats['mixed']} | {stats['dcs_band']} | {stats['all_right']} | {stats['all_wrong']} |")
        else:
            lines.append(f"| {label} | missing | | | | | |")
    cold = data.get("cold_start")
    if cold:
        lines += ["", f"Cold-start data: {cold['examples']} examples (plus plain solution chats, see the script); "
                  f"rollout accuracy {_percent(cold.get('rollout_acc'))}, {_synthesis_rates(cold)}; synthesizer: "
                  "the programmatic teacher."]
    own = data.get("pre_rl_synthesis")
    if own:
        lines += ["", f"The cold-started policy's own synthesis before RL (validation problems, K={own['k']}, any mixed "
                  f"group, the RL runs' prompts): {_synthesis_rates(own)}; statuses {own.get('synthesis_statuses')}."]

    lines += ["", "## Wall time per stage (seconds)", "", "| stage | seconds |", "|---|---|"]
    for name, seconds in data["stages"].items():
        lines.append(f"| {name} | {seconds} |")
    lines.append(f"| total | {sum(data['stages'].values())} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", required=True)
    parser.add_argument("--rl-steps", type=int, required=True)
    parser.add_argument("--quick", default="0")
    parser.add_argument("--command", default=None, help="the command that made the work folder (for the report)")
    args = parser.parse_args(argv)
    quick = args.quick == "1"
    command = args.command or (("QUICK=1 " if quick else "") + "bash run_scripts/run_toy_reproduction.sh")
    data = collect(args.work_dir, args.arms, args.seeds)
    report_path = os.path.join(args.work_dir, "report.md")
    with open(report_path, "w", encoding="utf-8") as handle:
        handle.write(render(data, args.arms, args.seeds, args.rl_steps, quick, command))
    plot(data, args.arms, args.seeds, os.path.join(args.work_dir, "plot.png"))
    print(f"wrote {report_path} and {os.path.join(args.work_dir, 'plot.png')}")


if __name__ == "__main__":
    main()
