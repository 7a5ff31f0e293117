"""The toy experiment's report: one markdown file and one PNG plot from a work folder.

    python -m recipe_tapo.toy.report --work-dir DIR --arms grpo tapo tapo_teacher --seeds 0 1 2 --rl-steps 40 \
        [--eval-split test]

Reads what `run_scripts/run_toy_reproduction.sh` leaves in DIR:
- `.stages/<stage>.done`: each stage's wall time in seconds;
- `eval/pre_rl_base`, `eval/pre_rl_cold_start`, `eval/pre_rl_opsd_teacher` (validation set, groups of
  n samples; the last under the OPSD arm's privileged prompt), and
  `eval/cold_start` and `eval/<arm>_s<seed>` (the split the arms are scored on: n samples at
  temperature 1, and one greedy answer per problem in `greedy/`): `eval_results.json` and
  `samples.jsonl` of `python -m recipe_tapo.evaluation.evaluate`;
- `cold_start/` and `eval/pre_rl_synthesis/`: `stats.json` and `synthesis_records.jsonl` of
  `python -m recipe_tapo.cold_start` (the teacher's synthesis for the cold-start data; the cold-started
  policy's own synthesis on the RL prompts, before RL);
- `eval/probe/cold_start` and `eval/probe/<arm>_s<seed>`: `probe_results.json` of
  `python -m recipe_tapo.toy.probe run` (the forced-prefix recovery probe);
- `zpd/train.parquet.counts.jsonl` (with ZPD=1): each training problem's correct count of K by the
  cold start, from `python -m recipe_tapo.data.difficulty_filter`;
- `runs/<arm>_s<seed>/metrics.jsonl`: verl's file logger (one line per step: validation, `tapo/`
  and `opsd/` metrics); `runs/<arm>_s<seed>/tapo_dump/step_*.jsonl`: the TAPO trainer's synthesis attempts.

DIR may also be a results folder (`recipe_tapo.toy.results`: what the script keeps after every
stage), which holds `group_stats.json`, `construction_counts.json` and `tapo_dump_summary.json` in
place of the samples, the synthesis records and the dumps; each is read where its original is absent.

Writes DIR/report.md and DIR/plot.png (validation accuracy per step per arm, mean and spread over
seeds; for the TAPO arms the synthesis parse rate and the constructed/inserted rows per step).
Per arm: the mean and sample standard deviation over seeds, a 95% t-interval over seeds, and the
paired per-seed difference to GRPO (a seed gives both arms the same data order and rollout seed)
with its 95% t-interval. `tapo_teacher` (the programmatic teacher writes every synthesis) is an
oracle / upper bound and is labelled so wherever it appears; `opsd` is a real arm (the paper's
third column), with its `opsd/` metrics per step. Missing pieces are reported as missing, never invented.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import statistics
import sys
from collections import Counter, defaultdict

from recipe_tapo.evaluation.metrics import reflects
from recipe_tapo.textio import iter_json_lines
from recipe_tapo.toy.task import begins_reflection

BENCHMARK = "toy_chain"
VAL_KEY = re.compile(r"^val-core/[^/]+/(acc|score|reward)/mean@(\d+)$")
BASELINE_ARM = "grpo"
ARM_LABELS = {"tapo_teacher": "tapo_teacher (oracle/upper bound, not TAPO)",
              "opsd": "opsd (privileged-context self-distillation)"}
OPSD_ARM_PREFIX = "opsd"
SPLIT_NAMES = {"test": "Test set (held out)", "val": "Validation set (the split settings are chosen on)"}
# The per-step TAPO metrics of the report's table; the last two come from the reworked trainer and
# are shown when a run logged them.
TAPO_STEP_KEYS = ("tapo/eligible_groups", "tapo/pairs", "tapo/parse_rate", "tapo/splice_rate", "tapo/constructed_rows",
                  "tapo/constructed_acc", "tapo/constructed_token_share", "tapo/prefix_net_advantage",
                  "tapo/ots_weight_max/inserted")
OPTIONAL_STEP_KEYS = ("tapo/prefix_net_advantage", "tapo/ots_weight_max/inserted")
# What TAPO's mechanism did over a run (issue 25): each a mean over the run's steps, then over seeds;
# the constructed rows' own figures (accuracy, OTS, loss scale, entropy) over the steps that had some
# (a step without constructions logs constructed_acc 0).
MECHANISM_KEYS = (("tapo/eligible_groups", "eligible groups"), ("tapo/constructed_rows", "constructed rows"),
                  ("tapo/constructed_token_share", "constructed token share"),
                  ("tapo/constructed_acc", "constructed right"),
                  ("tapo/ots_weight_median/first_inserted", "OTS, first inserted token (step median)"),
                  ("tapo/probability_median/first_inserted", "P(first inserted token) (step median)"),
                  ("tapo/ots_weight_mean/inserted", "OTS, inserted tokens"),
                  ("tapo/loss_scale/constructed", "loss scale, constructed"),
                  ("tapo/loss_scale/original", "loss scale, rollouts"),
                  ("tapo/entropy/constructed", "entropy, constructed"), ("tapo/entropy/original", "entropy, rollouts"))
PER_CONSTRUCTION_KEYS = ("tapo/constructed_acc", "tapo/ots_weight_median/first_inserted",
                         "tapo/probability_median/first_inserted", "tapo/ots_weight_mean/inserted",
                         "tapo/loss_scale/constructed", "tapo/entropy/constructed")
# The per-step OPSD metrics of the report's table, each shown when a run logged it (the KL estimate
# and the advantage statistics only exist at steps with a teacher signal).
OPSD_STEP_KEYS = ("opsd/kl_estimate", "opsd/teacher_row_share", "opsd/context/reference", "opsd/context/sibling",
                  "opsd/context/prompt_too_long", "opsd/advantage_mean", "opsd/advantage_std", "opsd/teacher_seconds")
# Two-sided 95% quantiles of Student's t by degrees of freedom (1-30); the normal's 1.96 beyond.
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
          2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
          2.045, 2.042)


# The order the report lists arms in (the script's main arms, then its ablations); others follow.
ARM_ORDER = ("grpo", "tapo", "opsd", "tapo_teacher", "tapo_degenerate_zero", "tapo_batch_ref", "tapo_before_error",
             "tapo_joint_loss", "tapo_no_dae", "tapo_no_ots", "tapo_full_reconstruction")
_EVALUATED_MARKER = re.compile(r"^eval_(.+)_s(\d+)\.done$")


def with_evaluated(work_dir: str, arms: list[str], seeds: list[str]) -> tuple[list[str], list[str]]:
    """The arms and seeds given, plus every arm and seed whose evaluation the folder keeps
    (`.stages/eval_<arm>_s<seed>.done`): several work folders sharing one results folder each
    rebuild the report over all of it, not over their own arms alone. Arms in ARM_ORDER, seeds by number."""
    arms, seeds = list(dict.fromkeys(arms)), set(seeds)
    stages = os.path.join(work_dir, ".stages")
    for name in sorted(os.listdir(stages)) if os.path.isdir(stages) else ():
        match = _EVALUATED_MARKER.match(name)
        if match:
            if match.group(1) not in arms:
                arms.append(match.group(1))
            seeds.add(match.group(2))
    rank = {arm: index for index, arm in enumerate(ARM_ORDER)}
    return (sorted(arms, key=lambda arm: rank.get(arm, len(ARM_ORDER))),
            sorted(seeds, key=lambda seed: (int(seed) if seed.isdigit() else math.inf, seed)))


def arm_label(arm: str) -> str:
    """The arm's name as the report prints it (the oracle arm says what it is)."""
    return ARM_LABELS.get(arm, arm)


def _read_json(path: str):
    """A JSON file's value; None when it is absent, or broken (bad bytes, cut short by a killed run:
    reported as missing, with a warning)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError alike
        print(f"[report] {path}: skipped, not readable JSON ({error})", file=sys.stderr)
        return None


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


def t_interval(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and half-width of the two-sided 95% Student-t interval of the mean (None below 2 values)."""
    values = [value for value in values if value is not None and not math.isnan(value)]
    mean, std = mean_std(values)
    if mean is None or len(values) < 2:
        return mean, None
    df = len(values) - 1
    quantile = _T_975[df - 1] if df <= len(_T_975) else 1.96
    return mean, quantile * std / math.sqrt(len(values))


def fmt_interval(mean: float | None, half: float | None, digits: int = 1) -> str:
    """[low, high] of a mean and half-width, or n/a."""
    if mean is None or half is None:
        return "n/a"
    return f"[{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def paired_differences(values: dict[str, float | None], baseline: dict[str, float | None]) -> list[float]:
    """value - baseline for each seed both have."""
    return [values[seed] - baseline[seed] for seed in values
            if values.get(seed) is not None and baseline.get(seed) is not None]


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({_percent(part / whole if whole else None)})"


COUNT_KEYS = ("inserted", "right", "reflecting", "opening_with_reflection")


def construction_counts(records: list[dict]) -> dict[str, int]:
    """Inserted constructions (status ok) among synthesis attempts, how many end right, how many
    reflect anywhere (a self-correction marker of `recipe_tapo.evaluation.metrics`, e.g. "Wait,") and
    how many are in TAPO's form: the policy's text opens with a reflection right where the wrong
    answer's kept text ends (`opening_with_reflection`; a copy that silently rewrote the wrong step
    and then "reflects" on the right value is not)."""
    inserted = [record for record in records if record.get("status") == "ok"]
    return {"inserted": len(inserted), "right": sum(1 for record in inserted if record.get("acc")),
            "reflecting": sum(1 for record in inserted if reflects(record.get("trajectory") or "")),
            "opening_with_reflection": sum(1 for record in inserted if begins_reflection(_after_wrong_text(record)))}


def _after_wrong_text(record: dict) -> str:
    """The trajectory's text after the longest prefix it shares with the wrong answer: where the
    policy's own continuation departs from what it copied (at most the splice's departure)."""
    trajectory, wrong = record.get("trajectory") or "", record.get("wrong") or ""
    shared = len(os.path.commonprefix([trajectory, wrong]))
    return trajectory[shared:]


def _synthesis_rates(stats: dict, counts: dict[str, int] | None) -> str:
    """The synthesis part of a cold-start builder's `stats.json` (and its records), in words."""
    text = (f"{stats['synthesis_requests']} synthesis requests, {stats.get('synthesis_answered', 'n/a')} answered, "
            f"parse rate {_percent(stats.get('parse_rate'))}, splice rate {_percent(stats.get('splice_rate'))} of parsed")
    if counts:
        text += (f"; inserted constructions: {_share(counts['inserted'], stats['synthesis_requests'])} of the requests, "
                 f"ending right: {_share(counts['right'], counts['inserted'])}, "
                 f"reflecting: {_share(counts['reflecting'], counts['inserted'])}, opening with a reflection "
                 f"right after the wrong answer's kept text: {_share(counts['opening_with_reflection'], counts['inserted'])}")
    return text


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
    """An evaluation's metrics (percent) and its size (`problems`, `samples` per problem), or None."""
    report = _read_json(os.path.join(eval_dir, "eval_results.json"))
    if not report:
        return None
    benchmark = report.get("benchmarks", {}).get(BENCHMARK)
    if benchmark is None:
        return None
    return {**benchmark["metrics"], "problems": benchmark.get("num_problems"),
            "samples": max(benchmark.get("samples_per_problem") or [0])}


# The probe's shares (`python -m recipe_tapo.toy.probe`): key in probe_results.json, column heading
PROBE_SHARES = (("reflect_after_wrong", "reflect after a wrong line"), ("right_after_wrong", "end right after a wrong line"),
                ("right_among_reflecting", "right among reflecting"), ("false_alarm", "false alarm (reflect after a right line)"))
# the reflection shares split by the step the prefix was cut after (probes written before the split have none)
PROBE_SPLIT = (("reflect_after_wrong_hard", "after a wrong hard step"), ("reflect_after_wrong_easy", "after a wrong easy step"),
               ("false_alarm_hard", "after a right hard step"), ("false_alarm_easy", "after a right easy step"))
PROBE_PROBABILITIES = (("reflection_token_probability_after_wrong", "P(reflection token) after a wrong line"),
                       ("reflection_token_probability_after_right", "after a right line"))


def probe_results(probe_dir: str) -> dict | None:
    """A probe's `probe_results.json` (its settings and `metrics`), or None."""
    return _read_json(os.path.join(probe_dir, "probe_results.json"))


def zpd_pool(counts_path: str, n_pos: int = 2, n_neg: int = 4) -> dict | None:
    """The ZPD filter's pool from its `.counts.jsonl`: problems scored, kept (1 to K-1 right of K), the
    kept problems' mean accuracy, and how many of them are in the DCS band (>= n_pos right, >= n_neg wrong)."""
    scored = [record for record in _read_jsonl(counts_path) if record.get("correct") is not None]
    if not scored:
        return None
    kept = [record for record in scored if 0 < record["correct"] < record["samples"]]
    band = [record for record in kept if record["correct"] >= n_pos and record["samples"] - record["correct"] >= n_neg]
    return {"scored": len(scored), "k": max(record["samples"] for record in scored), "kept": len(kept),
            "kept_accuracy": (100.0 * sum(r["correct"] for r in kept) / sum(r["samples"] for r in kept)) if kept else None,
            "dcs_band": len(band), "n_pos": n_pos, "n_neg": n_neg}


def dump_records(run_dir: str) -> list[dict]:
    """Every synthesis attempt in a TAPO run's dumps, in step order."""
    records = []
    for path in sorted(glob.glob(os.path.join(run_dir, "tapo_dump", "step_*.jsonl"))):
        records.extend(_read_jsonl(path))
    return records


# Where a results folder (`recipe_tapo.toy.results`) keeps what a work folder's large files give the report.
GROUP_STATS = "group_stats.json"
SYNTHESIS_COUNTS = "construction_counts.json"
DUMP_SUMMARY = "tapo_dump_summary.json"
# Inserted constructions a run's summary keeps to show, and the fields kept of each.
SHOWN_EXAMPLES = 2
EXAMPLE_FIELDS = ("step", "wrong", "synthesis", "trajectory")


def builder_counts(folder: str) -> dict[str, int] | None:
    """`construction_counts` of a cold-start builder's `synthesis_records.jsonl` (or of its summary in
    a results folder), None when neither is there."""
    path = os.path.join(folder, "synthesis_records.jsonl")
    if os.path.isfile(path):
        return construction_counts(_read_jsonl(path))
    return _read_json(os.path.join(folder, SYNTHESIS_COUNTS))


def eval_group_stats(eval_dir: str) -> dict | None:
    """`group_stats` of an evaluation's `samples.jsonl` (or its summary in a results folder), or None."""
    path = os.path.join(eval_dir, "samples.jsonl")
    if os.path.isfile(path):
        return group_stats(path)
    return _read_json(os.path.join(eval_dir, GROUP_STATS))


OPSD_DUMP_SUMMARY = "opsd_dump_summary.json"
# A teacher log-prob this far below the student's on the sampled token counts as the teacher rejecting it.
OPSD_REJECT_GAP = 2.0
OPSD_EXAMPLE_CHARS = 240


def _final_tokenizer(run_dir: str):
    """The tokenizer of a run's last saved checkpoint, None when the run kept none."""
    folders = sorted(glob.glob(os.path.join(run_dir, "global_step_*", "actor", "huggingface")),
                     key=lambda path: int(path.split("global_step_")[1].split(os.sep)[0]))
    if not folders:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folders[-1])


def opsd_dump_summary(run_dir: str) -> list[dict]:
    """Per dumped step of an OPSD run's `opsd_dump/`: rows, tokens a response, the student's and the
    teacher's mean log-prob of the sampled tokens (rows with a teacher), their gap (the negated mean
    advantage per unit coef), the share of tokens the teacher rejects (log-prob at least
    `OPSD_REJECT_GAP` below the student's), and the first response decoded (cut to
    `OPSD_EXAMPLE_CHARS`; token ids when the run kept no tokenizer)."""
    tokenizer = _final_tokenizer(run_dir)
    steps = []
    for path in sorted(glob.glob(os.path.join(run_dir, "opsd_dump", "step_*.jsonl"))):
        records = _read_jsonl(path)
        if not records:
            continue
        taught = [record for record in records if record.get("has_teacher")]
        student = [value for record in taught for value in record.get("student_log_probs", [])]
        teacher = [value for record in taught for value in record.get("teacher_log_probs", [])]
        gaps = [s - t for s, t in zip(student, teacher)]
        ids = records[0].get("response_ids", [])
        example = tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))
        steps.append({
            "step": records[0].get("step"), "rows": len(records), "rows_with_teacher": len(taught),
            "tokens_per_response": sum(len(record.get("response_ids", [])) for record in records) / len(records),
            "student_log_prob": sum(student) / len(student) if student else None,
            "teacher_log_prob": sum(teacher) / len(teacher) if teacher else None,
            "gap": sum(gaps) / len(gaps) if gaps else None,
            "teacher_rejects": sum(gap >= OPSD_REJECT_GAP for gap in gaps) / len(gaps) if gaps else None,
            "example": example[:OPSD_EXAMPLE_CHARS],
        })
    return steps


def run_opsd_dump_summary(run_dir: str) -> list[dict]:
    """`opsd_dump_summary` of a run's `opsd_dump/`, or the one a results folder kept, or []."""
    if os.path.isdir(os.path.join(run_dir, "opsd_dump")):
        return opsd_dump_summary(run_dir)
    return _read_json(os.path.join(run_dir, OPSD_DUMP_SUMMARY)) or []


def dump_summary(records: list[dict]) -> dict:
    """What the report uses of a TAPO run's synthesis attempts: statuses, counts, inserted examples."""
    inserted = [record for record in records if record.get("status") == "ok"][:SHOWN_EXAMPLES]
    return {"statuses": dict(Counter(str(record.get("status")) for record in records)),
            "counts": construction_counts(records),
            "examples": [{field: record.get(field) for field in EXAMPLE_FIELDS} for record in inserted]}


def run_dump_summary(run_dir: str) -> dict:
    """`dump_summary` of a run's `tapo_dump/`, or the summary a results folder kept, or an empty one."""
    if os.path.isdir(os.path.join(run_dir, "tapo_dump")):
        return dump_summary(dump_records(run_dir))
    return _read_json(os.path.join(run_dir, DUMP_SUMMARY)) or dump_summary([])


def collect(work_dir: str, arms: list[str], seeds: list[str]) -> dict:
    eval_root = os.path.join(work_dir, "eval")
    data = {"stages": stage_times(work_dir), "runs": {}, "pre_rl": {},
            "cold_start": _read_json(os.path.join(work_dir, "cold_start", "stats.json")),
            "cold_start_counts": builder_counts(os.path.join(work_dir, "cold_start")),
            "pre_rl_synthesis": _read_json(os.path.join(eval_root, "pre_rl_synthesis", "stats.json")),
            "pre_rl_synthesis_counts": builder_counts(os.path.join(eval_root, "pre_rl_synthesis")),
            "cold_start_probe": probe_results(os.path.join(eval_root, "probe", "cold_start")),
            "zpd": zpd_pool(os.path.join(work_dir, "zpd", "train.parquet.counts.jsonl")),
            "cold_start_eval": {"test": eval_metrics(os.path.join(eval_root, "cold_start")),
                                "greedy": eval_metrics(os.path.join(eval_root, "cold_start", "greedy"))}}
    for name in ("base", "cold_start", "opsd_teacher"):
        data["pre_rl"][name] = eval_group_stats(os.path.join(eval_root, f"pre_rl_{name}"))
    for arm in arms:
        for seed in seeds:
            run_dir = os.path.join(work_dir, "runs", f"{arm}_s{seed}")
            dump = run_dump_summary(run_dir)
            data["runs"][(arm, seed)] = {
                "steps": step_metrics(run_dir),
                "test": eval_metrics(os.path.join(eval_root, f"{arm}_s{seed}")),
                "greedy": eval_metrics(os.path.join(eval_root, f"{arm}_s{seed}", "greedy")),
                "probe": probe_results(os.path.join(eval_root, "probe", f"{arm}_s{seed}")),
                "dump": Counter(dump["statuses"]),
                "counts": dump["counts"],
                "examples": dump["examples"],
                "opsd_dumps": run_opsd_dump_summary(run_dir),
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


def _errorbar(ax, series: dict[int, tuple[float | None, float | None]], label: str, scale: float = 1.0,
              color: str | None = None) -> None:
    """One arm's mean ± std per step (`_series`) on `ax`; nothing when no step has a value."""
    points = [(step, mean, std) for step, (mean, std) in series.items() if mean is not None]
    if points:
        ax.errorbar([step for step, _, _ in points], [scale * mean for _, mean, _ in points],
                    yerr=[scale * (std or 0.0) for _, _, std in points], marker="o", capsize=3, label=label,
                    color=color)


def plot(data: dict, arms: list[str], seeds: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tapo_arms = [arm for arm in arms if arm.startswith("tapo")]
    # one colour per arm in every panel
    colors = {arm: f"C{index % 10}" for index, arm in enumerate(arms)}
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
        ax.plot(steps, means, marker="o", color=colors[arm],
                label=f"{arm_label(arm)} (n={sum(1 for curve in curves if curve)})")  # seeds run
        ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                        color=colors[arm], alpha=0.2)
    ax.set_title("validation accuracy (sampled, %)")
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax = axes[1]
    for arm in arms:
        _errorbar(ax, _series([data["runs"][(arm, seed)] for seed in seeds], "critic/score/mean"), arm_label(arm),
                  scale=100, color=colors[arm])
    ax.set_title("training rollouts: accuracy (original rows, %)")
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    for ax, key, title in ((axes[2], "tapo/parse_rate", "TAPO: synthesis parse rate"),
                           (axes[3], "tapo/constructed_rows", "TAPO: constructed rows inserted per step")):
        for arm in tapo_arms:
            when = "tapo/synthesis_answered" if key == "tapo/parse_rate" else None
            _errorbar(ax, _series([data["runs"][(arm, seed)] for seed in seeds], key, when), arm_label(arm),
                      color=colors[arm])
        if key == "tapo/constructed_rows":
            for arm in tapo_arms:
                series = _series([data["runs"][(arm, seed)] for seed in seeds], "tapo/pairs")
                if series:
                    ax.plot(list(series), [value[0] for value in series.values()], linestyle="--", color=colors[arm],
                            label=f"{arm_label(arm)}: pairs (synthesis requests)")
        ax.set_title(title + (" (steps with synthesis outputs)" if key == "tapo/parse_rate" else ""))
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _final_val(run: dict) -> float | None:
    curve = _val_curve(run["steps"])
    return curve[max(curve)] if curve else None


def _per_seed(data: dict, arm: str, seeds: list[str], source: str, key: str) -> dict[str, float | None]:
    """{seed: metric} of one arm from its evaluation (`source` "test" or "greedy")."""
    return {seed: (data["runs"][(arm, seed)][source] or {}).get(key) for seed in seeds}


def _size(data: dict, arms: list[str], seeds: list[str], source: str) -> str:
    """"N problems x n samples" of the arms' evaluations (the first one found)."""
    for arm in arms:
        for seed in seeds:
            found = data["runs"][(arm, seed)][source]
            if found and found.get("problems"):
                return f"{found['problems']} problems x {found['samples']}"
    return "missing"


def _results_table(data: dict, arms: list[str], seeds: list[str]) -> list[str]:
    ks = sorted({int(key.split("@")[1]) for run in data["runs"].values() if run["test"]
                 for key in run["test"] if key.startswith("pass@")})
    header = (["arm", "seeds", "Pass@1", "Pass@1 95% CI"] + [f"Pass@{k}" for k in ks if k > 1]
              + ["greedy", "greedy 95% CI", "DSR", "ERR", "reflecting", "val acc first", "val acc last"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cold, cold_greedy = data["cold_start_eval"]["test"] or {}, data["cold_start_eval"]["greedy"] or {}
    if cold or cold_greedy:
        cells = ["cold start (before RL)", "-", fmt(cold.get("pass@1")), "-"]
        cells += [fmt(cold.get(f"pass@{k}")) for k in ks if k > 1]
        cells += [fmt(cold_greedy.get("pass@1")), "-"] + [fmt(cold.get(key)) for key in ("dsr", "err", "reflection_rate")]
        lines.append("| " + " | ".join(cells + ["-", "-"]) + " |")
    for arm in arms:
        runs = [data["runs"][(arm, seed)] for seed in seeds]
        done = [run for run in runs if run["test"]]
        pass1 = list(_per_seed(data, arm, seeds, "test", "pass@1").values())
        greedy = list(_per_seed(data, arm, seeds, "greedy", "pass@1").values())
        cells = [arm_label(arm), f"{len(done)}/{len(runs)}", fmt(*mean_std(pass1)), fmt_interval(*t_interval(pass1))]
        cells += [fmt(*mean_std([run["test"].get(f"pass@{k}") for run in done])) for k in ks if k > 1]
        cells += [fmt(*mean_std(greedy)), fmt_interval(*t_interval(greedy))]
        cells += [fmt(*mean_std([run["test"].get(key) for run in done])) for key in ("dsr", "err", "reflection_rate")]
        firsts = [curve[min(curve)] for curve in map(_val_curve, (run["steps"] for run in runs)) if curve]
        cells += [fmt(*mean_std(firsts)), fmt(*mean_std([_final_val(run) for run in runs]))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float] | None:
    """Least-squares line through (xs, ys): (slope, intercept, Pearson r); None below 3 points or
    with no spread in either."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    slope, intercept = statistics.linear_regression(xs, ys)
    return slope, intercept, statistics.correlation(xs, ys)


def _reflecting_line(data: dict, arms: list[str], seeds: list[str]) -> list[str]:
    """Test Pass@1 against the share of answers that reflect, over every scored run of the arms
    that train on outcome reward (OPSD's runs left out: its advantage is the teacher's)."""
    points = [(run["test"]["reflection_rate"], run["test"]["pass@1"]) for arm in arms
              if not arm.startswith(OPSD_ARM_PREFIX) for run in (data["runs"][(arm, seed)] for seed in seeds)
              if run["test"] and run["test"].get("reflection_rate") is not None and run["test"].get("pass@1") is not None]
    fit = linear_fit([x for x, _ in points], [y for _, y in points])
    if fit is None:
        return []
    slope, intercept, r = fit
    return ["", f"Pass@1 against the reflecting share, over the {len(points)} runs above (OPSD's left out): "
                f"Pass@1 = {intercept:.1f} {slope:+.3f} x reflecting (least squares), Pearson r = {r:+.2f}."]


def _paired_table(data: dict, arms: list[str], seeds: list[str]) -> list[str]:
    """Each arm minus GRPO, seed by seed: mean, 95% t-interval and the per-seed differences."""
    lines = ["| arm | Pass@1 - GRPO | 95% CI | per seed | greedy - GRPO | 95% CI | per seed |",
             "|---|---|---|---|---|---|---|"]
    for arm in arms:
        if arm == BASELINE_ARM:
            continue
        cells = [arm_label(arm)]
        for source in ("test", "greedy"):
            differences = paired_differences(_per_seed(data, arm, seeds, source, "pass@1"),
                                             _per_seed(data, BASELINE_ARM, seeds, source, "pass@1"))
            mean, half = t_interval(differences)
            cells += [fmt(mean, digits=1) if mean is None else f"{mean:+.1f}", fmt_interval(mean, half),
                      ", ".join(f"{value:+.1f}" for value in differences) or "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _step_table(arm: str, runs: list[dict], keys: list[str], digits: int) -> list[str]:
    """The arm's name, then a table of `keys` per step (mean over `runs`), named without their prefix."""
    series = {key: _series(runs, key) for key in keys}
    steps = sorted({step for values in series.values() for step in values})
    lines = [f"**{arm_label(arm)}**", "", "| step | " + " | ".join(key.split("/", 1)[1] for key in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(fmt(series[key].get(step, (None, None))[0], digits=digits)
                                               for key in keys) + " |")
    return lines


def _tapo_section(data: dict, arm: str, seeds: list[str]) -> list[str]:
    runs = [data["runs"][(arm, seed)] for seed in seeds]
    keys = [key for key in TAPO_STEP_KEYS
            if key not in OPTIONAL_STEP_KEYS or any(key in metrics for run in runs for metrics in run["steps"].values())]
    lines = _step_table(arm, runs, keys, digits=2)
    parsed = [run["steps"][step].get("tapo/parse_rate") for run in runs for step in run["steps"]
              if "tapo/parse_rate" in run["steps"][step] and run["steps"][step].get("tapo/pairs", 0) > 0]
    with_rows = [run["steps"][step].get("tapo/constructed_rows", 0) > 0 for run in runs for step in run["steps"]
                 if "tapo/pairs" in run["steps"][step]]
    requests = int(sum(metrics.get("tapo/synthesis_requests", 0) for run in runs for metrics in run["steps"].values()))
    counts = {key: sum(run["counts"][key] for run in runs) for key in COUNT_KEYS}
    statuses = sum((run["dump"] for run in runs), Counter())
    lines += ["", f"Over all steps and seeds: parse rate {fmt(100 * (sum(parsed) / len(parsed)) if parsed else None)}% "
              f"(mean over steps with pairs), constructions inserted in {sum(with_rows)} of {len(with_rows)} steps; "
              f"inserted constructions: {_share(counts['inserted'], requests)} of the synthesis requests, ending right: "
              f"{_share(counts['right'], counts['inserted'])}, reflecting: {_share(counts['reflecting'], counts['inserted'])}, "
              f"opening with a reflection right after the kept text: "
              f"{_share(counts['opening_with_reflection'], counts['inserted'])}; "
              f"dump statuses: {dict(statuses.most_common())}.", ""]
    for example in runs[0]["examples"][:1] if runs else []:
        lines += ["One inserted construction (dump of seed " + seeds[0] + f", step {example['step']}): the "
                  "wrong answer, the synthesis output, the trained trajectory:", "", "```",
                  example["wrong"], "---", example["synthesis"], "---", example["trajectory"], "```", ""]
    return lines


def run_mechanism(steps: dict[int, dict[str, float]]) -> dict[str, float | None]:
    """{key: mean over the steps that logged it} for each of MECHANISM_KEYS (None if none did); the
    keys of the constructed rows over the steps with constructed rows."""
    means = {}
    for key, _ in MECHANISM_KEYS:
        per_step = key in PER_CONSTRUCTION_KEYS
        values = [metrics[key] for metrics in steps.values() if metrics.get(key) is not None
                  and (not per_step or metrics.get("tapo/constructed_rows", 0) > 0)]
        means[key] = sum(values) / len(values) if values else None
    return means


def _mechanism_section(data: dict, arms: list[str], seeds: list[str]) -> list[str]:
    """One row per TAPO arm: MECHANISM_KEYS per run (`run_mechanism`), mean ± sd over seeds."""
    lines = ["| arm | " + " | ".join(name for _, name in MECHANISM_KEYS) + " |", "|---|" + "---|" * len(MECHANISM_KEYS)]
    for arm in arms:
        per_run = [run_mechanism(data["runs"][(arm, seed)]["steps"]) for seed in seeds]
        cells = [fmt(*mean_std([means[key] for means in per_run]), digits=3) for key, _ in MECHANISM_KEYS]
        lines.append(f"| {arm_label(arm)} | " + " | ".join(cells) + " |")
    return lines


def _opsd_section(data: dict, arm: str, seeds: list[str]) -> list[str]:
    """The arm's `opsd/` metrics per step (mean over seeds), the keys some run logged."""
    runs = [data["runs"][(arm, seed)] for seed in seeds]
    keys = [key for key in OPSD_STEP_KEYS if any(key in metrics for run in runs for metrics in run["steps"].values())]
    if not keys:
        return [f"**{arm_label(arm)}**: no `opsd/` metrics logged.", ""]
    return _step_table(arm, runs, keys, digits=3) + [""] + _opsd_dump_lines(arm, seeds, runs)


def _opsd_dump_lines(arm: str, seeds: list[str], runs: list[dict]) -> list[str]:
    """Each seed's dumped steps (`opsd_dump_summary`): what the self-teacher made of the rollouts."""
    lines = []
    for seed, run in zip(seeds, runs):
        dumps = run.get("opsd_dumps") or []
        if not dumps:
            continue
        lines += [f"{arm_label(arm)}, seed {seed}: the dumped steps (log-probs per sampled token, rows with a "
                  f"teacher; rejects: teacher at least {OPSD_REJECT_GAP:g} nats below the student; the step's first "
                  "response, cut):", "",
                  "| step | rows (with teacher) | tokens a response | student log-prob | teacher log-prob | gap | "
                  "tokens the teacher rejects | first response |", "|---|---|---|---|---|---|---|---|"]
        for dump in dumps:
            example = (dump.get("example") or "").replace("\n", " / ").replace("|", "\\|")
            lines.append(f"| {dump['step']} | {dump['rows']} ({dump['rows_with_teacher']}) | "
                         f"{dump['tokens_per_response']:.1f} | {fmt(dump['student_log_prob'], digits=3)} | "
                         f"{fmt(dump['teacher_log_prob'], digits=3)} | {fmt(dump['gap'], digits=3)} | "
                         f"{_percent(dump['teacher_rejects'])} | `{example}` |")
        lines.append("")
    return lines


def _probe_share(probe: dict | None, key: str) -> float | None:
    """One share of a probe, in percent (None when the probe or its share is missing)."""
    share = ((probe or {}).get("metrics") or {}).get(key)
    return None if share is None else 100.0 * share["share"]


def _probe_cell(probe: dict | None, key: str) -> str:
    """A probe's share with its own interval and count: "1.9 [0.9, 3.2] (15/780)"."""
    share = ((probe or {}).get("metrics") or {}).get(key)
    if share is None:
        return "n/a" if probe else "missing"
    return (f"{100 * share['share']:.1f} [{100 * share['low']:.1f}, {100 * share['high']:.1f}] "
            f"({share['count']}/{share['total']})")


def _probe_section(data: dict, arms: list[str], seeds: list[str]) -> list[str]:
    probes = [run["probe"] for run in data["runs"].values() if run.get("probe")] + [data.get("cold_start_probe")]
    probes = [probe for probe in probes if probe]
    if not probes:
        return []
    first = probes[0]
    sizes = first["metrics"]
    lines = ["", "## Forced-prefix recovery probe (recipe_tapo.toy.probe)", "",
             f"The cold start's own answers on this split, cut right after their first wrong line "
             f"({sizes['wrong_line_prefixes']} prefixes), and right answers cut after a right line "
             f"({sizes['right_line_prefixes']} prefixes, for false alarms), each continued {first['k']} times by "
             f"the checkpoint at temperature {first['temperature']:g}. A continuation reflects when its first line "
             "opens with the constructions' \"Wait,\". Percentages; the probability of the reflection's first token "
             "right after the cut is the model's, averaged over prefixes. DSR, ERR and reflecting are the sampled "
             "evaluation's.", "",
             "Per arm: mean ± sample standard deviation over seeds [95% Student-t interval over seeds, from 2 "
             "seeds on]; the cold start: its one probe [95% interval over prefixes] (count):", ""]
    header = ["arm", "seeds"] + [title for _, title in PROBE_SHARES]
    header += [title for _, title in PROBE_PROBABILITIES] + ["DSR", "ERR", "reflecting"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cold, cold_test = data.get("cold_start_probe"), data["cold_start_eval"]["test"] or {}
    if cold:
        cells = ["cold start (the probe set's own policy)", "-"] + [_probe_cell(cold, key) for key, _ in PROBE_SHARES]
        cells += [fmt(cold["metrics"].get(key), digits=6) for key, _ in PROBE_PROBABILITIES]
        cells += [fmt(cold_test.get(key)) for key in ("dsr", "err", "reflection_rate")]
        lines.append("| " + " | ".join(cells) + " |")
    for arm in arms:
        runs = [data["runs"][(arm, seed)] for seed in seeds]
        probed = [run["probe"] for run in runs if run.get("probe")]
        cells = [arm_label(arm), f"{len(probed)}/{len(runs)}"]
        for key, _ in PROBE_SHARES:
            values = [_probe_share(probe, key) for probe in probed]
            interval = fmt_interval(*t_interval(values))
            cells.append(fmt(*mean_std(values)) + ("" if interval == "n/a" else f" {interval}"))
        cells += [fmt(*mean_std([probe["metrics"].get(key) for probe in probed]), digits=6) for key, _ in PROBE_PROBABILITIES]
        cells += [fmt(*mean_std([(run["test"] or {}).get(key) for run in runs if run["test"]]))
                  for key in ("dsr", "err", "reflection_rate")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Per seed, each with its own 95% interval over prefixes (cluster bootstrap: the continuations of "
              "one prefix are correlated; Wilson over prefixes when the count is 0 or all) and count:", "",
              "| arm | seed | " + " | ".join(title for _, title in PROBE_SHARES) + " |", "|---|---|" + "---|" * len(PROBE_SHARES)]
    for arm in arms:
        for seed in seeds:
            probe = data["runs"][(arm, seed)].get("probe")
            lines.append(f"| {arm_label(arm)} | {seed} | " + " | ".join(_probe_cell(probe, key) for key, _ in PROBE_SHARES) + " |")
    return lines + _probe_split_section(data, arms, seeds, cold)


def _probe_split_section(data: dict, arms: list[str], seeds: list[str], cold: dict | None) -> list[str]:
    """Reflection shares by the cut step: whether a policy reflects after wrong lines or merely after hard ones."""
    def has_split(probe):
        return any(key in ((probe or {}).get("metrics") or {}) for key, _ in PROBE_SPLIT)

    if not has_split(cold) and not any(has_split(run.get("probe")) for run in data["runs"].values()):
        return []
    lines = ["", "Reflecting continuations by the step the prefix was cut after (hard: a carry, a borrow or a 2-digit "
             "term; `recipe_tapo.toy.task.is_hard_step`), in percent: a policy that checks its arithmetic reflects "
             "after a wrong hard step far more often than after a right one. Per arm mean ± standard deviation over "
             "seeds; the cold start with its interval and count:", "",
             "| arm | " + " | ".join(title for _, title in PROBE_SPLIT) + " |", "|---|" + "---|" * len(PROBE_SPLIT)]
    if has_split(cold):
        lines.append("| cold start | " + " | ".join(_probe_cell(cold, key) for key, _ in PROBE_SPLIT) + " |")
    for arm in arms:
        probed = [data["runs"][(arm, seed)].get("probe") for seed in seeds]
        probed = [probe for probe in probed if has_split(probe)]
        cells = [fmt(*mean_std([_probe_share(probe, key) for probe in probed])) for key, _ in PROBE_SPLIT]
        lines.append(f"| {arm_label(arm)} | " + " | ".join(cells) + " |")
    return lines


def _zpd_section(data: dict) -> list[str]:
    pool = data.get("zpd")
    if not pool:
        return []
    return ["", "## The RL training pool: the paper's ZPD filter (ZPD=1)", "",
            f"The cold start answered {pool['scored']} training problems {pool['k']} times each "
            f"(recipe_tapo.data.difficulty_filter, temperature 1); the arms trained on the "
            f"{_share(pool['kept'], pool['scored'])} solved 1 to {pool['k'] - 1} times. Their mean accuracy: "
            f"{fmt(pool['kept_accuracy'])}%; in the DCS band (>= {pool['n_pos']} right and >= {pool['n_neg']} wrong): "
            f"{_share(pool['dcs_band'], pool['kept'])} of the kept problems."]


def _pre_rl_section(data: dict) -> list[str]:
    lines = ["", "## Before RL (validation set, sampled at temperature 1)", ""]
    lines += ["| model | accuracy | groups | mixed | in the DCS band (>=2 right, >=4 wrong) | all right | all wrong |",
              "|---|---|---|---|---|---|---|"]
    for name, label in (("base", "base SFT"), ("cold_start", "cold start"),
                        ("opsd_teacher", "cold start under the OPSD privileged prompt (its self-teacher)")):
        stats = data["pre_rl"].get(name)
        if stats:
            lines.append(f"| {label} | {fmt(stats['accuracy'])} | {stats['groups']} x {stats['group_size']} | "
                         f"{stats['mixed']} | {stats['dcs_band']} | {stats['all_right']} | {stats['all_wrong']} |")
        else:
            lines.append(f"| {label} | missing | | | | | |")
    cold = data.get("cold_start")
    if cold:
        lines += ["", f"Cold-start data: {cold['examples']} examples (plus plain solution chats, see the script); "
                  f"rollout accuracy {_percent(cold.get('rollout_acc'))}, "
                  f"{_synthesis_rates(cold, data.get('cold_start_counts'))}; synthesizer: the programmatic teacher."]
    own = data.get("pre_rl_synthesis")
    if own:
        lines += ["", f"The cold-started policy's own synthesis before RL (its rollouts on training problems the "
                  f"cold-start data never used, K={own['k']}, the RL runs' prompts, budgets and DCS band): "
                  f"{_synthesis_rates(own, data.get('pre_rl_synthesis_counts'))}; statuses {own.get('synthesis_statuses')}."]
    return lines


def render(data: dict, arms: list[str], seeds: list[str], rl_steps: int, quick: bool, command: str,
           eval_split: str = "test") -> str:
    lines = ["# Toy experiment: TAPO vs GRPO on CPU", ""]
    lines += [f"Made by `{command}`" + (" (QUICK=1: a smoke run, not a measurement)." if quick else "."), ""]
    lines += [f"Arms: {', '.join(map(arm_label, arms))}; seeds: {', '.join(seeds)}; {rl_steps} RL steps each, from "
              "the same cold-start checkpoint. Mean ± sample standard deviation over seeds; 95% CI: Student-t "
              "interval over seeds. Percentages.", ""]

    lines += [f"## {SPLIT_NAMES[eval_split]}", "",
              f"Sampled: {_size(data, arms, seeds, 'test')} samples at temperature 1 (Pass@k, DSR, ERR, reflecting); "
              f"greedy: {_size(data, arms, seeds, 'greedy')} answer at temperature 0.", ""]
    lines += _results_table(data, arms, seeds)
    if BASELINE_ARM in arms and len(arms) > 1:
        lines += ["", "Paired difference to GRPO (a seed gives both arms the same data order and rollout seed):", ""]
        lines += _paired_table(data, arms, seeds)
    lines += ["", "Per seed (Pass@1 / greedy / DSR / ERR / reflecting; last validation accuracy):", ""]
    lines += ["| arm | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for arm in arms:
        cells = [arm_label(arm)]
        for seed in seeds:
            run = data["runs"][(arm, seed)]
            test, greedy = run["test"] or {}, run["greedy"] or {}
            cells.append(" / ".join([fmt(test.get("pass@1")), fmt(greedy.get("pass@1"))]
                                    + [fmt(test.get(key)) for key in ("dsr", "err", "reflection_rate")])
                         + f"; {fmt(_final_val(run))}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += _reflecting_line(data, arms, seeds)
    if BASELINE_ARM in arms and "tapo" in arms and not quick and eval_split == "test":
        # imported here: the predictions module builds on this one's helpers
        from recipe_tapo.toy.predictions import predictions_section

        lines += predictions_section(data, seeds)

    lines += _probe_section(data, arms, seeds)
    lines += _zpd_section(data)
    tapo_arms = [arm for arm in arms if arm.startswith("tapo")]
    if tapo_arms:
        lines += ["", "## TAPO's mechanism over the runs", "",
                  "Each a mean over a run's steps (the constructed rows' accuracy, OTS weights, loss scale and entropy: "
                  "over the steps that had constructions), then mean ± sd over seeds. OTS weights multiply each "
                  "constructed token's advantage (1 = unchanged; the first inserted token opens the reflection); "
                  "P(first inserted token) is the policy's own probability of opening it right after its wrong step "
                  "(n/a: a run from before that metric was logged); loss scales are each row kind's factor in the "
                  "step's loss (docs/metrics.md).", ""]
        lines += _mechanism_section(data, tapo_arms, seeds)
        lines += ["", "## TAPO: the synthesis during RL, per step (mean over seeds)", ""]
    for arm in tapo_arms:
        lines += _tapo_section(data, arm, seeds)
    opsd_arms = [arm for arm in arms if arm.startswith(OPSD_ARM_PREFIX)]
    if opsd_arms:
        lines += ["", "## OPSD: the teacher signal during RL, per step (mean over seeds)", "",
                  "kl_estimate: mean over the sampled response tokens of log p_student - log p_teacher (nats per "
                  "token, rows with a teacher); context/*: share of rows by where their privileged context came "
                  "from; advantage_*: the trained per-token advantage (docs/metrics.md).", ""]
        for arm in opsd_arms:
            lines += _opsd_section(data, arm, seeds)

    lines += _pre_rl_section(data)
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
    parser.add_argument("--eval-split", choices=sorted(SPLIT_NAMES), default="test",
                        help="the split the arms were scored on (the script's EVAL_SPLIT)")
    parser.add_argument("--quick", default="0")
    parser.add_argument("--command", default=None, help="the command that made the work folder (for the report)")
    parser.add_argument("--add-evaluated", action="store_true",
                        help="also report every arm and seed evaluated in the folder (its .stages/eval_<arm>_s<seed>.done)")
    args = parser.parse_args(argv)
    if args.add_evaluated:
        args.arms, args.seeds = with_evaluated(args.work_dir, args.arms, args.seeds)
    quick = args.quick == "1"
    command = args.command or (("QUICK=1 " if quick else "") + "bash run_scripts/run_toy_reproduction.sh")
    data = collect(args.work_dir, args.arms, args.seeds)
    report_path = os.path.join(args.work_dir, "report.md")
    with open(report_path, "w", encoding="utf-8") as handle:
        handle.write(render(data, args.arms, args.seeds, args.rl_steps, quick, command, args.eval_split))
    plot(data, args.arms, args.seeds, os.path.join(args.work_dir, "plot.png"))
    print(f"wrote {report_path} and {os.path.join(args.work_dir, 'plot.png')}")


if __name__ == "__main__":
    main()
