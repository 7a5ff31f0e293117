"""The reproduction's final table: our GRPO, TAPO and OPSD runs beside the paper's numbers.

    python -m recipe_tapo.reproduction_table --run GRPO=eval/grpo/eval_results.json \
        --run TAPO=eval/tapo/eval_results.json --run OPSD=eval/opsd/eval_results.json [--run SFT=...] [--out results.md]

Reads each run's `eval_results.json` (`recipe_tapo.evaluation.evaluate`) and the paper's numbers
(`recipe_tapo.evaluation.report.PAPER_RESULTS`), and writes one markdown table: a row per run, each
followed by the paper's row for the same method when the paper has one; columns Pass@1, Pass@2, DSR
and ERR on AIME 2024, AIME 2025 and HMMT 2025 (percent; "-" where a number does not exist).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from recipe_tapo.evaluation.report import PAPER_APPROXIMATE, PAPER_NOTE, PAPER_RESULTS

BENCHMARKS = (("aime2024", "AIME24"), ("aime2025", "AIME25"), ("hmmt2025", "HMMT25"))
METRICS = (("pass@1", "Pass@1"), ("pass@2", "Pass@2"), ("dsr", "DSR"), ("err", "ERR"))


class TableInputError(ValueError):
    """A missing or unusable eval_results.json; the message names the file."""


def load_results(path: str) -> dict:
    if not os.path.isfile(path):
        raise TableInputError(f"{path}: no such file (run_scripts/eval_qwen3_8b.sh, eval_qwen2.5_math.sh or eval.sh write it)")
    try:
        with open(path, encoding="utf-8") as file:
            report = json.load(file)
    except (OSError, ValueError) as error:
        raise TableInputError(f"{path}: not a readable JSON report ({error})") from error
    if not isinstance(report, dict) or not isinstance(report.get("benchmarks"), dict):
        raise TableInputError(f"{path}: no 'benchmarks' section (not an eval_results.json of recipe_tapo.evaluation)")
    return report


def _cell(value, approximate: bool = False) -> str:
    if value is None:
        return "-"
    return f"{'~' if approximate else ''}{float(value):.2f}"


def render_table(runs: list[tuple[str, dict]]) -> str:
    """Markdown: our rows (name, report) each followed by the paper's row for that method."""
    header = "| run | " + " | ".join(f"{bench} {label}" for _, bench in BENCHMARKS for _, label in METRICS) + " |"
    lines = [header, "|---|" + "---:|" * (len(BENCHMARKS) * len(METRICS))]
    for name, report in runs:
        cells = []
        for benchmark, _ in BENCHMARKS:
            metrics = report["benchmarks"].get(benchmark, {}).get("metrics", {})
            cells += [_cell(metrics.get(metric)) for metric, _ in METRICS]
        lines.append(f"| {name} (ours) | " + " | ".join(cells) + " |")
        method = name.upper()
        if any(method in PAPER_RESULTS[benchmark].get(metric, {}) for benchmark, _ in BENCHMARKS for metric, _ in METRICS):
            paper = [
                _cell(PAPER_RESULTS[benchmark].get(metric, {}).get(method), (benchmark, metric, method) in PAPER_APPROXIMATE)
                for benchmark, _ in BENCHMARKS
                for metric, _ in METRICS
            ]
            lines.append(f"| {method} (paper) | " + " | ".join(paper) + " |")
    return "\n".join(lines)


def render_document(runs: list[tuple[str, dict]], paths: list[str]) -> str:
    sources = ", ".join(f"{name}: {path}" for (name, _), path in zip(runs, paths, strict=True))
    settings = runs[0][1].get("settings", {}) if runs else {}
    sampling = ", ".join(f"{key}={settings[key]}" for key in ("n", "temperature", "top_p", "max_new_tokens") if key in settings)
    return "\n".join([
        "# TAPO reproduction: results", "",
        render_table(runs), "",
        f"Ours: {sources}. Sampling: {sampling}. All numbers in %.", "",
        PAPER_NOTE, "",
    ])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=EVAL_RESULTS_JSON",
                        help="one of our runs (repeat); NAME GRPO, TAPO or OPSD gets the paper's row beside it")
    parser.add_argument("--out", default=None, help="also write the markdown here")
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    runs, paths = [], []
    try:
        for item in args.run:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise TableInputError(f"--run {item!r}: expected NAME=PATH")
            runs.append((name, load_results(path)))
            paths.append(path)
    except TableInputError as error:
        print(f"[table] ERROR: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    document = render_document(runs, paths)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as file:
            file.write(document)
    print(document)
    return document


if __name__ == "__main__":
    main()
