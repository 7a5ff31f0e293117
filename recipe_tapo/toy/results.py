"""The small results of a toy work folder, kept apart so that a comparison survives its machine.

    python -m recipe_tapo.toy.results --work-dir WORK --results-dir RESULTS

`run_scripts/run_toy_reproduction.sh` calls this after every stage (with `COMMIT_RESULTS=1` it then
commits RESULTS to git), and builds the report from RESULTS, not from WORK: a comparison interrupted
after some runs resumes from what was saved, and its report is rebuilt from the committed files
alone. RESULTS mirrors WORK's layout (what `recipe_tapo.toy.report` reads), holding only files of a
few kilobytes to a few hundred:

- copied as they are: `.stages/*.done` (wall times), every `eval_results.json` (evaluations, greedy
  ones included), every `probe_results.json`, `runs/<run>/metrics.jsonl` (verl's file logger), the
  cold-start builders' `stats.json`, the ZPD filter's per-problem counts, the probe set;
- summarised, since the originals run to megabytes: an evaluation's `samples.jsonl` becomes
  `group_stats.json` (`report.group_stats`), a builder's `synthesis_records.jsonl` becomes
  `construction_counts.json` (`report.construction_counts`), a TAPO run's `tapo_dump/` becomes
  `tapo_dump_summary.json` (statuses, counts and the first inserted constructions the report shows), an
  OPSD run's `opsd_dump/` becomes `opsd_dump_summary.json` (per dumped step: log-probs of student and
  self-teacher, tokens the teacher rejects, the first response).

The report reads a summary where the original is absent. Checkpoints are not results: seed 0's
final checkpoints go to the script's EXPORT_DIR.

    python -m recipe_tapo.toy.results --restore --work-dir WORK --results-dir RESULTS --export-dir EXPORT \
        [--setting KEY=VALUE ...]

resumes a comparison in a fresh work folder (a new machine, a clone) from RESULTS: the stages whose
outputs later stages read only through RESULTS (the pre-RL measurements; a run's RL, evaluation,
probe and, for seed 0, its export in EXPORT) get their markers back and are skipped; the probe set
comes back as the file every later probe reads. What later stages need from the work folder (the
data, the cold-start checkpoints, an RL checkpoint not yet evaluated) is rebuilt; the script's ZPD
stage re-applies the kept counts instead of sampling again. The settings (`--setting`, e.g. the
cold start and the evaluation split) are recorded in RESULTS the first time, and a later run with
other settings stops: its results would be mixed with those of another experiment.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil

from recipe_tapo.toy.report import (DUMP_SUMMARY, GROUP_STATS, OPSD_DUMP_SUMMARY, SYNTHESIS_COUNTS, builder_counts,
                                    eval_group_stats, run_dump_summary, run_opsd_dump_summary)

# The forced-prefix probe's set: every probe stage reads it, so a resumed comparison needs it back.
PROBE_SET = "eval/probe/probe_set.jsonl"
# The work folder's small files kept as they are (globs under the work folder): what the report reads.
COPIED_RESULT_PATTERNS = (".stages/*.done", "**/eval_results.json", "**/probe_results.json", "runs/*/metrics.jsonl",
                          "cold_start/stats.json", "eval/pre_rl_synthesis/stats.json", "zpd/*.counts.jsonl",
                          PROBE_SET)
# Stages no later stage reads from the work folder: their kept marker (and results) are enough.
MEASUREMENT_STAGES = ("measure_base", "measure_cold_start", "measure_opsd_teacher", "measure_cold_start_synthesis",
                      "eval_cold_start", "probe_cold_start")
RUN_STAGE = re.compile(r"rl_(?P<arm>.+)_s(?P<seed>\d+)")
SETTINGS_FILE = "settings.json"


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
                 (os.path.join("runs", "*", "tapo_dump"), DUMP_SUMMARY, run_dump_summary),
                 (os.path.join("runs", "*", "opsd_dump"), OPSD_DUMP_SUMMARY, run_opsd_dump_summary))
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


def restore_stages(work_dir: str, results_dir: str, export_dir: str) -> list[str]:
    """Give WORK the markers of RESULTS' finished stages that need nothing from a work folder.

    A run (`rl_<arm>_s<seed>`) comes back whole or not at all: its RL, evaluation and probe markers,
    and for seed 0 its export, which also needs `<export_dir>/<arm>/model.safetensors`; a run with
    any of them missing runs again from its RL stage. The probe set comes back with its file.
    Markers WORK already has are left alone. Returns the restored stage names, sorted.
    """
    kept = {os.path.basename(path)[: -len(".done")] for path in glob.glob(os.path.join(results_dir, ".stages", "*.done"))}
    present = {os.path.basename(path)[: -len(".done")] for path in glob.glob(os.path.join(work_dir, ".stages", "*.done"))}
    restore = [name for name in MEASUREMENT_STAGES if name in kept]
    if "probe_set" in kept and os.path.isfile(os.path.join(results_dir, PROBE_SET)):
        restore.append("probe_set")
        if "probe_set" not in present:
            _place(work_dir, PROBE_SET)
            shutil.copy2(os.path.join(results_dir, PROBE_SET), os.path.join(work_dir, PROBE_SET))
    for name in sorted(kept):
        match = RUN_STAGE.fullmatch(name)
        if not match:
            continue
        run, arm = name[len("rl_"):], match["arm"]
        group = [name, f"eval_{run}", f"probe_{run}"]
        if match["seed"] == "0":
            group.append(f"export_{arm}")
            if not os.path.isfile(os.path.join(export_dir, arm, "model.safetensors")):
                continue
        if all(stage in kept for stage in group):
            restore += group
    restored = sorted(name for name in set(restore) if name not in present)
    for name in restored:
        _place(work_dir, os.path.join(".stages", f"{name}.done"))
        shutil.copy2(os.path.join(results_dir, ".stages", f"{name}.done"), os.path.join(work_dir, ".stages", f"{name}.done"))
    return restored


def check_settings(results_dir: str, settings: dict[str, str]) -> None:
    """Record `settings` in RESULTS, or stop if RESULTS holds another experiment's (a key they share
    with another value)."""
    path = os.path.join(results_dir, SETTINGS_FILE)
    recorded = _read_settings(path)
    differing = {key: (recorded[key], value) for key, value in settings.items() if key in recorded and recorded[key] != value}
    if differing:
        listed = "; ".join(f"{key}: {old!r} there, {new!r} now" for key, (old, new) in sorted(differing.items()))
        raise SystemExit(f"{results_dir} holds the results of other settings ({listed}): choose another RESULTS_DIR "
                         f"(or remove {path} if those results are to be replaced)")
    os.makedirs(results_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({**recorded, **settings}, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _read_settings(path: str) -> dict[str, str]:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            recorded = json.load(handle)
    except (OSError, ValueError) as error:
        raise SystemExit(f"{path} is not a settings file ({error}): remove it or choose another RESULTS_DIR") from error
    if not isinstance(recorded, dict):
        raise SystemExit(f"{path} is not a settings file (a JSON object): remove it or choose another RESULTS_DIR")
    return recorded


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--setting takes KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", required=True, help="a work folder of run_scripts/run_toy_reproduction.sh")
    parser.add_argument("--results-dir", required=True, help="where its small results are kept (created)")
    parser.add_argument("--restore", action="store_true",
                        help="resume: give the work folder the markers of the finished stages kept in the results")
    parser.add_argument("--export-dir", help="with --restore: where seed 0's checkpoints were exported")
    parser.add_argument("--setting", type=_setting, action="append", default=[],
                        help="with --restore: KEY=VALUE, recorded in the results; other values there stop the run")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.work_dir):
        parser.error(f"--work-dir {args.work_dir} is not a folder")
    if args.restore:
        if args.export_dir is None:
            parser.error("--restore needs --export-dir (a run of seed 0 is only done once its checkpoint is exported)")
        check_settings(args.results_dir, dict(args.setting))
        restored = restore_stages(args.work_dir, args.results_dir, args.export_dir)
        print(f"restored {len(restored)} finished stages from {args.results_dir}: {' '.join(restored) or '-'}")
        return
    written = save_results(args.work_dir, args.results_dir)
    print(f"saved {len(written)} result files of {args.work_dir} in {args.results_dir}")


if __name__ == "__main__":
    main()
