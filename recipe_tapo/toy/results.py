"""The small results of a toy work folder, kept apart so that a comparison survives its machine.

    python -m recipe_tapo.toy.results --work-dir WORK --results-dir RESULTS

`run_scripts/run_toy_reproduction.sh` calls this after every stage (with `COMMIT_RESULTS=1` it then
commits RESULTS to git), and builds the report from RESULTS, not from WORK: a comparison interrupted
after some runs resumes from what was saved, and its report is rebuilt from the committed files
alone. RESULTS mirrors WORK's layout (what `recipe_tapo.toy.report` reads), holding only files of a
few kilobytes to a few hundred:

- copied as they are: `.stages/*.done` (wall times), every `eval_results.json` (evaluations, greedy
  ones included), every `probe_results.json`, `runs/<run>/metrics.jsonl` (verl's file logger), the
  cold-start builders' `stats.json`, the ZPD filter's per-problem counts;
- summarised, since the originals run to megabytes: an evaluation's `samples.jsonl` becomes
  `group_stats.json` (`report.group_stats`), a builder's `synthesis_records.jsonl` becomes
  `construction_counts.json` (`report.construction_counts`), a TAPO run's `tapo_dump/` becomes
  `tapo_dump_summary.json` (statuses, counts and the first inserted constructions the report shows).

The report reads a summary where the original is absent. Checkpoints are not results: seed 0's
final checkpoints go to the script's EXPORT_DIR.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil

from recipe_tapo.toy.report import (DUMP_SUMMARY, GROUP_STATS, SYNTHESIS_COUNTS, builder_counts, eval_group_stats,
                                    run_dump_summary)

# The work folder's small files kept as they are (globs under the work folder): what the report reads.
COPIED_RESULT_PATTERNS = (".stages/*.done", "**/eval_results.json", "**/probe_results.json", "runs/*/metrics.jsonl",
                          "cold_start/stats.json", "eval/pre_rl_synthesis/stats.json", "zpd/*.counts.jsonl")


def save_results(work_dir: str, results_dir: str) -> list[str]:
    """Copy and summarise WORK's small results into RESULTS (see the module docstring).

    Returns the paths written, relative to RESULTS. Files already in RESULTS are overwritten, and
    files there whose source is gone are kept: RESULTS only grows, as a run's commits do. A summary
    newer than everything it summarises is not recomputed: the script saves after every stage, and a
    finished run's dumps are read once, not once per later stage.
    """
    if os.path.abspath(work_dir) == os.path.abspath(results_dir):
        raise ValueError(f"the results folder must differ from the work folder, got {results_dir} for both")
    written = []
    for pattern in COPIED_RESULT_PATTERNS:
        for source in _sources(work_dir, results_dir, pattern):
            relative = os.path.relpath(source, work_dir)
            _place(results_dir, relative)
            shutil.copyfile(source, os.path.join(results_dir, relative))
            written.append(relative)
    summaries = ((os.path.join("eval", "pre_rl_*", "samples.jsonl"), GROUP_STATS, eval_group_stats),
                 (os.path.join("**", "synthesis_records.jsonl"), SYNTHESIS_COUNTS, builder_counts),
                 (os.path.join("runs", "*", "tapo_dump"), DUMP_SUMMARY, run_dump_summary))
    for pattern, name, summarise in summaries:
        for source in _sources(work_dir, results_dir, pattern):
            folder = os.path.dirname(source)
            target = os.path.join(results_dir, os.path.relpath(folder, work_dir), name)
            if not _newer_than(target, source):
                written.append(_write_json(work_dir, results_dir, folder, name, summarise(folder)))
    return written


def _newer_than(target: str, source: str) -> bool:
    """Whether `target` exists and was written after `source` (a file, or a folder's files) last changed."""
    if not os.path.isfile(target):
        return False
    files = glob.glob(os.path.join(source, "*")) if os.path.isdir(source) else [source]
    return all(os.path.getmtime(path) < os.path.getmtime(target) for path in files)


def _sources(work_dir: str, results_dir: str, pattern: str) -> list[str]:
    """WORK's files matching `pattern`, except those in RESULTS when it lies inside WORK."""
    inside = os.path.abspath(results_dir) + os.sep
    return [path for path in sorted(glob.glob(os.path.join(work_dir, pattern), recursive=True))
            if not os.path.abspath(path).startswith(inside)]


def _place(results_dir: str, relative: str) -> None:
    os.makedirs(os.path.dirname(os.path.join(results_dir, relative)) or results_dir, exist_ok=True)


def _write_json(work_dir: str, results_dir: str, folder: str, name: str, value) -> str:
    relative = os.path.join(os.path.relpath(folder, work_dir), name)
    _place(results_dir, relative)
    with open(os.path.join(results_dir, relative), "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return relative


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True, help="a work folder of run_scripts/run_toy_reproduction.sh")
    parser.add_argument("--results-dir", required=True, help="where its small results are kept (created)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.work_dir):
        parser.error(f"--work-dir {args.work_dir} is not a folder")
    written = save_results(args.work_dir, args.results_dir)
    print(f"saved {len(written)} result files of {args.work_dir} in {args.results_dir}")


if __name__ == "__main__":
    main()
