"""The toy experiment end to end under QUICK=1: every stage of run_scripts/run_toy_reproduction.sh
(data, base SFT and both cold-start SFT rounds through verl's SFT trainer, the cold-start builder, the pre-RL
measurements, GRPO, TAPO and the teacher-written TAPO arm through verl's PPO trainer with the hf
rollout, evaluation sampled and greedy, the probe, the seed-0 checkpoints, report), shrunk to
minutes; the OPSD arm alone from the shipped cold start; and ZPD=1 from the shipped cold start: the
filter's pool is what the arm trains on. Smoke tests: their few RL steps measure nothing."""

import json
import os

import pytest

from verl_run import run_logged

pytestmark = pytest.mark.slow


def test_quick_toy_reproduction_runs_every_stage(tmp_path):
    work = tmp_path / "toy"
    log = run_logged(["bash", "run_scripts/run_toy_reproduction.sh"], log_path=str(tmp_path / "toy.log"),
                     timeout_s=1500, env={"QUICK": "1", "WORK_DIR": str(work)})
    arms = ("grpo", "tapo", "tapo_teacher")
    for stage in ("data", "base_sft", "measure_base", "cold_start_data", "cold_start_sft", "cold_start_more_data",
                  "cold_start_more_sft", "measure_cold_start",
                  "measure_opsd_teacher", "measure_cold_start_synthesis", "eval_cold_start", "probe_set", "probe_cold_start",
                  *(f"{kind}_{arm}_s0" for arm in arms for kind in ("rl", "eval", "probe")), *(f"export_{arm}" for arm in arms)):
        assert (work / ".stages" / f"{stage}.done").is_file(), stage
        assert f"stage {stage}: done" in log
    # The report is built from the results kept after every stage alone (summaries of the large files).
    results = work / "results"
    report = (results / "report.md").read_text()
    assert (results / "runs" / "tapo_s0" / "tapo_dump_summary.json").is_file()
    assert not list(results.rglob("samples.jsonl")) and not list(results.rglob("*.safetensors"))
    assert "| grpo | 1/1 |" in report and "| tapo | 1/1 |" in report
    assert "| tapo_teacher (oracle/upper bound, not TAPO) | 1/1 |" in report
    assert "| cold start (before RL) |" in report and "Paired difference to GRPO" in report
    assert "| cold start under the OPSD privileged prompt (its self-teacher) | " in report
    assert "| cold start under the OPSD privileged prompt (its self-teacher) | missing |" not in report
    assert "**tapo**" in report  # the TAPO arm's per-step synthesis table
    assert "## Forced-prefix recovery probe" in report and "| grpo | 0 |" in report
    assert (results / "plot.png").stat().st_size > 1000
    # Every arm ran verl's trainer for the same number of steps and logged through the file logger.
    for arm in arms:
        steps = [json.loads(line)["step"] for line in (work / "runs" / f"{arm}_s0" / "metrics.jsonl").open()]
        assert max(steps) == 2
        for evaluation in ("", "greedy"):
            assert (work / "eval" / f"{arm}_s0" / evaluation / "eval_results.json").is_file()
        assert (work / "eval" / "probe" / f"{arm}_s0" / "probe_results.json").is_file()
        # seed 0's final HF folder, exported (under QUICK into the work folder, never into docs/)
        exported = sorted(os.listdir(work / "export" / arm))
        assert "config.json" in exported and "model.safetensors" in exported and "optim" not in " ".join(exported)
    tapo_steps = [json.loads(line)["data"] for line in (work / "runs" / "tapo_s0" / "metrics.jsonl").open()]
    assert any("tapo/pairs" in data for data in tapo_steps)
    assert os.listdir(work / "runs" / "tapo_s0" / "tapo_dump")

    # A rerun resumes: every stage is skipped, the report is rebuilt.
    log = run_logged(["bash", "run_scripts/run_toy_reproduction.sh"], log_path=str(tmp_path / "toy2.log"),
                     timeout_s=300, env={"QUICK": "1", "WORK_DIR": str(work)})
    assert "stage rl_tapo_s0: done before" in log and ": running" not in log


def test_quick_opsd_arm_runs_from_the_shipped_cold_start(tmp_path):
    # The OPSD arm alone, from the shipped cold start and without the pre-RL measurements (TAPO's
    # synthesis among them): the data, the arm's RL run, its evaluation, export and report.
    work = tmp_path / "toy"
    log = run_logged(["bash", "run_scripts/run_toy_reproduction.sh"], log_path=str(tmp_path / "opsd.log"),
                     timeout_s=900, env={"QUICK": "1", "ARMS": "opsd", "COLD_START": "shipped", "PRE_RL": "0",
                                         "WORK_DIR": str(work)})
    for stage in ("data", "rl_opsd_s0", "eval_opsd_s0", "export_opsd"):
        assert f"stage {stage}: done" in log, stage
    assert "stage base_sft" not in log and "stage measure_cold_start" not in log
    steps = [json.loads(line) for line in (work / "runs" / "opsd_s0" / "metrics.jsonl").open()]
    trained = [line["data"] for line in steps if "actor/grad_norm" in line["data"]]
    assert len(trained) == 2
    for data in trained:
        # every toy row carries its right solution: every row has a teacher, none over the budget
        assert data["opsd/context/reference"] == 1.0 and data["opsd/context/prompt_too_long"] == 0.0
        assert data["opsd/kl_estimate"] > 0.0
    assert not any(key.startswith("tapo/") for data in trained for key in data)
    report = (work / "results" / "report.md").read_text()
    assert "| opsd (privileged-context self-distillation) | 1/1 |" in report
    assert "| step | kl_estimate |" in report
    assert (work / "eval" / "opsd_s0" / "eval_results.json").is_file()


def test_zpd_trains_the_arms_on_the_problems_the_cold_start_solves_sometimes(tmp_path):
    import pandas as pd

    work = tmp_path / "toy"
    run_logged(["bash", "run_scripts/run_toy_reproduction.sh"], log_path=str(tmp_path / "toy.log"), timeout_s=900,
               env={"QUICK": "1", "ZPD": "1", "COLD_START": "shipped", "PRE_RL": "0", "ARMS": "grpo", "RL_STEPS": "1",
                    "WORK_DIR": str(work)})
    counts = [json.loads(line) for line in (work / "zpd" / "train.parquet.counts.jsonl").open()]
    kept = pd.read_parquet(work / "zpd" / "train.parquet")
    assert len(counts) == 200 and len(kept) == sum(1 for record in counts if 1 <= record["correct"] <= 3)
    assert 0 < len(kept) < 200
    assert f"dataset len: {len(kept)}" in (work / "logs" / "rl_grpo_s0.log").read_text()  # the arm's training pool
    report = (work / "results" / "report.md").read_text()
    assert f"the arms trained on the {len(kept)} of 200" in report


def test_a_comparison_resumes_in_a_fresh_work_folder_from_its_kept_results(tmp_path):
    # A session ends and its work folder is lost; the results (committed) remain. The next session's
    # fresh work folder skips the finished run, rebuilds the ZPD pool from the kept counts, and
    # refuses to add results of other settings to the same folder.
    import subprocess

    import pandas as pd

    results, export = tmp_path / "results", tmp_path / "export"
    env = {"QUICK": "1", "ARMS": "grpo", "COLD_START": "shipped", "PRE_RL": "0", "ZPD": "1",
           "RESULTS_DIR": str(results), "EXPORT_DIR": str(export)}
    first = run_logged(["bash", "run_scripts/run_toy_reproduction.sh"], log_path=str(tmp_path / "first.log"),
                       timeout_s=900, env={**env, "WORK_DIR": str(tmp_path / "first")})
    assert "stage zpd_filter: done" in first and "stage export_grpo: done" in first
    second = run_logged(["bash", "run_scripts/run_toy_reproduction.sh"], log_path=str(tmp_path / "second.log"),
                        timeout_s=600, env={**env, "WORK_DIR": str(tmp_path / "second")})
    assert "restored 5 finished stages" in second
    for stage in ("probe_set", "rl_grpo_s0", "eval_grpo_s0", "probe_grpo_s0", "export_grpo"):
        assert f"stage {stage}: done before" in second, stage
    assert "ZPD pool rebuilt from the kept counts" in second and "stage zpd_filter: done before" in second
    assert "counts from" in (tmp_path / "second" / "logs" / "zpd_pool.log").read_text()
    kept = (results / ".stages" / "zpd_filter.done").read_text()  # the filter's own time, not the rebuild's
    assert kept == (tmp_path / "first" / ".stages" / "zpd_filter.done").read_text()
    pools = [pd.read_parquet(tmp_path / work / "zpd" / "train.parquet") for work in ("first", "second")]
    assert len(pools[0]) > 0 and pools[0].equals(pools[1])
    assert not (tmp_path / "second" / "runs").exists()
    assert "| grpo | 1/1 |" in (results / "report.md").read_text()
    other = subprocess.run(["bash", "run_scripts/run_toy_reproduction.sh"], cwd=os.path.dirname(os.path.dirname(__file__)),
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, **env, "EVAL_SPLIT": "val", "WORK_DIR": str(tmp_path / "third")})
    assert other.returncode == 2
    assert "holds the results of other settings (eval_split: 'test' there, 'val' now)" in other.stderr
