"""Evaluation report: our metrics per benchmark beside the paper's, as JSON and a markdown table.

All numbers in the report are percentages (the paper's unit), unrounded in JSON and with two
decimals in markdown.
"""

import json
import os
from collections.abc import Mapping

from recipe_tapo.evaluation.metrics import REFLECTION_MARKERS, BenchmarkMetrics

PAPER_METHODS = ("GRPO", "OPSD", "TAPO")
# docs/method.md, section 10: second-hand, Qwen3-8B after the cold-start SFT, percent.
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "aime2024": {
        "pass@1": {"GRPO": 52.92, "OPSD": 57.71, "TAPO": 62.50},
        "dsr": {"GRPO": 34.0, "TAPO": 47.5},
        "err": {"GRPO": 52.0, "TAPO": 63.4},
    },
    "aime2025": {
        "pass@1": {"GRPO": 46.88, "TAPO": 46.88},
        "pass@2": {"GRPO": 57.08, "TAPO": 56.46},
        "dsr": {"GRPO": 22.1, "TAPO": 38.0},
        "err": {"GRPO": 51.5, "TAPO": 56.3},
    },
    "hmmt2025": {
        "pass@1": {"GRPO": 28.75, "OPSD": 24.17, "TAPO": 31.46},
        "dsr": {"GRPO": 28.0, "TAPO": 50.4},
        "err": {"GRPO": 33.8, "TAPO": 36.8},
    },
}
# Entries the summary gives only approximately ("~24.17").
PAPER_APPROXIMATE = {("hmmt2025", "pass@1", "OPSD")}
PAPER_NOTE = (
    "Paper columns: docs/method.md section 10 (second-hand; Qwen3-8B after cold start; Pass@1 from 16 samples per "
    "problem, inferred). DSR/ERR follow this project's definitions (docs/method.md section 9; markers in "
    "recipe_tapo.evaluation.metrics.REFLECTION_MARKERS); the paper's exact definitions are not public."
)

METRIC_LABELS = {"dsr": "DSR", "err": "ERR", "reflection_rate": "reflection rate"}


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def our_metrics(metrics: BenchmarkMetrics) -> dict[str, float | None]:
    """Metric name -> percent, named like PAPER_RESULTS ("pass@1", "dsr", ...)."""
    named = {f"pass@{k}": _percent(rate) for k, rate in metrics.pass_at_k.items()}
    named.update(
        dsr=_percent(metrics.dsr), err=_percent(metrics.err), reflection_rate=_percent(metrics.reflection_rate)
    )
    return named


def build_report(metrics_by_benchmark: Mapping[str, BenchmarkMetrics], *, model: str, settings: Mapping) -> dict:
    """The JSON-ready report. `settings`: how the samples were drawn (n, temperature, top_p, ...)."""
    return {
        "model": model,
        "settings": dict(settings),
        "units": "percent",
        "reflection_markers": list(REFLECTION_MARKERS),
        "paper_note": PAPER_NOTE,
        "benchmarks": {
            name: {
                "num_problems": metrics.num_problems,
                "num_responses": metrics.num_responses,
                "samples_per_problem": [metrics.min_samples_per_problem, metrics.max_samples_per_problem],
                "num_reflective": metrics.num_reflective,
                "metrics": our_metrics(metrics),
                "paper": PAPER_RESULTS.get(name, {}),
            }
            for name, metrics in metrics_by_benchmark.items()
        },
    }


def _cell(value: float | None, approximate: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'~' if approximate else ''}{value:.2f}"


def _label(metric: str) -> str:
    return f"Pass@{metric.split('@')[1]}" if metric.startswith("pass@") else METRIC_LABELS[metric]


def render_markdown(report: dict) -> str:
    """A table per report: one row per benchmark and metric, ours then the paper's methods."""
    settings = ", ".join(f"{key}={value}" for key, value in report["settings"].items())
    lines = [
        f"# Evaluation of {report['model']}",
        "",
        f"Sampling: {settings}. All numbers in %.",
        "",
        "| benchmark | metric | ours | " + " | ".join(f"paper {method}" for method in PAPER_METHODS) + " |",
        "|---|---|---:|" + "---:|" * len(PAPER_METHODS),
    ]
    for name, entry in report["benchmarks"].items():
        for metric, value in entry["metrics"].items():
            paper = entry["paper"].get(metric, {})
            cells = [_cell(paper.get(method), (name, metric, method) in PAPER_APPROXIMATE) for method in PAPER_METHODS]
            lines.append(f"| {name} | {_label(metric)} | {_cell(value)} | " + " | ".join(cells) + " |")
    lines += ["", report["paper_note"], ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir: str, stem: str = "eval_results") -> tuple[str, str]:
    """Write `<stem>.json` and `<stem>.md` into `out_dir`; returns both paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path, markdown_path = os.path.join(out_dir, f"{stem}.json"), os.path.join(out_dir, f"{stem}.md")
    with open(json_path, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    with open(markdown_path, "w", encoding="utf-8") as file:
        file.write(render_markdown(report))
    return json_path, markdown_path
