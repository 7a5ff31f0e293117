"""Wall time of a TAPO step against GRPO's on the toy main job, arms interleaved on one machine.

    python -m recipe_tapo.step_benchmark [--pairs 2] [--steps 8] [--skip-steps 1]
        [--arms grpo,tapo_stream,tapo_batch] [--out outputs/step_benchmark] [-- hydra overrides...]

Each round runs every arm once, in order, through `run_scripts/run_tapo_toy_cpu.sh` (verl's real
trainer, the hf rollout, the shipped toy cold start, the same seed and batch in every arm) without
validation or checkpoints; `--pairs` rounds interleave the arms so that drift in the machine's load
falls on all of them. Per arm and round, from verl's file logger, over the steps after
`--skip-steps`, the medians of:
  - `timing_s/step`, and its ratio to GRPO's step of the same round (equal batch: the same prompts);
  - `timing_s/gen` (rollout plus synthesis: both run inside the agent loop manager);
  - `tapo/rollout_seconds` and `tapo/rollout_to_last_synthesis_seconds` (rollout start to the last
    synthesis output: the figure streaming shortens) and `tapo/after_rollout_seconds`.
Arms: `grpo` (tapo.enable=false, verl's GRPO), `tapo_stream` (synthesis sent per finished group),
`tapo_batch` (tapo.synthesis.stream=false: one round after the whole batch). The table is printed
and written to OUT/step_benchmark.json; each run's log and metrics stay in OUT/<arm>_<round>/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from recipe_tapo.view.metrics import file_logger_step_metrics

ARMS = {
    "grpo": ["tapo.enable=false", "algorithm.adv_estimator=grpo"],
    "tapo_stream": ["tapo.synthesis.stream=true"],
    "tapo_batch": ["tapo.synthesis.stream=false"],
}
FIGURES = (
    "timing_s/step",
    "timing_s/gen",
    "tapo/rollout_seconds",
    "tapo/rollout_to_last_synthesis_seconds",
    "tapo/after_rollout_seconds",
    "tapo/pairs",
    "tapo/synthesis_tokens",
    "tapo/constructed_rows",
)
# No validation, no checkpoint: the step is what is timed.
QUIET_RUN = ["trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1"]
REPO = Path(__file__).resolve().parent.parent


def run_arm(arm: str, out_dir: Path, steps: int, extra: list[str], timeout_s: float) -> dict[int, dict[str, float]]:
    """One run of `arm`; its metrics by step (verl's file logger, broken lines left out)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    env = {**os.environ, "TOY_DIR": str(out_dir), "STEPS": str(steps)}
    command = ["bash", str(REPO / "run_scripts" / "run_tapo_toy_cpu.sh"), *QUIET_RUN, *ARMS[arm], *extra]
    with open(out_dir / "run.log", "w") as log:
        # Its own session, so that a timeout takes Ray's whole process tree down with it.
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RuntimeError(f"{arm}: no result within {timeout_s:.0f} s; log {out_dir / 'run.log'}") from None
    if code != 0:
        raise RuntimeError(f"{arm}: the run failed (exit code {code}); log {out_dir / 'run.log'}")
    if not metrics_path.is_file():
        raise RuntimeError(f"{arm}: the run wrote no {metrics_path}; log {out_dir / 'run.log'}")
    return file_logger_step_metrics(str(metrics_path))[0]


def summarize(metrics_by_step: dict[int, dict[str, float]], skip_steps: int) -> dict[str, float]:
    """Median of each figure over the training steps after `skip_steps` (step 1 warms caches)."""
    steps = [metrics for step, metrics in sorted(metrics_by_step.items())
             if step > skip_steps and "timing_s/step" in metrics]
    if not steps:
        raise ValueError(f"no training step after step {skip_steps} in the run's metrics")
    return {
        name: statistics.median(step[name] for step in steps)
        for name in FIGURES
        if all(name in step for step in steps)
    } | {"steps": len(steps)}


def step_time_ratios(rounds: list[dict[str, dict[str, float]]]) -> dict[str, list[float]]:
    """Per TAPO arm, its median step time over GRPO's, one ratio per round."""
    ratios: dict[str, list[float]] = {}
    for results in rounds:
        if "grpo" not in results:
            continue
        for arm, figures in results.items():
            if arm != "grpo":
                ratios.setdefault(arm, []).append(figures["timing_s/step"] / results["grpo"]["timing_s/step"])
    return ratios


def format_table(rounds: list[dict[str, dict[str, float]]], ratios: dict[str, list[float]]) -> str:
    names = [name for name in FIGURES if any(name in figures for results in rounds for figures in results.values())]
    lines = ["| round | arm | " + " | ".join(names) + " | step / GRPO step |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for number, results in enumerate(rounds):
        for arm, figures in results.items():
            values = [f"{figures[name]:.2f}" if name in figures else "" for name in names]
            ratio = f"{ratios[arm][number]:.2f}x" if arm in ratios and number < len(ratios[arm]) else ""
            lines.append(f"| {number} | {arm} | " + " | ".join(values) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipe_tapo.step_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2, help="rounds of all arms, interleaved")
    parser.add_argument("--steps", type=int, default=8, help="training steps per run")
    parser.add_argument("--skip-steps", type=int, default=1, help="first steps left out of the medians")
    parser.add_argument("--arms", default="grpo,tapo_stream,tapo_batch")
    parser.add_argument("--out", default="outputs/step_benchmark")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="per run")
    parser.add_argument("overrides", nargs="*", help="hydra overrides for every arm (after --)")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {sorted(ARMS)}")
    if args.steps <= args.skip_steps:
        parser.error(f"--steps ({args.steps}) must exceed --skip-steps ({args.skip_steps})")
    out = Path(args.out).resolve()
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(args.pairs):
        results = {}
        for arm in arms:
            print(f"[step_benchmark] round {number}: {arm} ({args.steps} steps) ...", flush=True)
            records = run_arm(arm, out / f"{arm}_{number}", args.steps, args.overrides, args.timeout_s)
            results[arm] = summarize(records, args.skip_steps)
            print(f"[step_benchmark] round {number}: {arm}: step {results[arm]['timing_s/step']:.2f} s", flush=True)
        rounds.append(results)
    ratios = step_time_ratios(rounds)
    table = format_table(rounds, ratios)
    print(table)
    for arm, values in ratios.items():
        print(f"{arm}: step time / GRPO's = " + ", ".join(f"{value:.2f}x" for value in values))
    (out / "step_benchmark.json").write_text(json.dumps(
        {"arms": arms, "steps": args.steps, "skip_steps": args.skip_steps, "overrides": args.overrides,
         "rounds": rounds, "ratios": ratios}, indent=2))
    print(f"[step_benchmark] written {out / 'step_benchmark.json'}")


if __name__ == "__main__":
    sys.exit(main())
