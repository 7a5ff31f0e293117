"""Every GPU script validates under DRY_RUN=1: run as a subprocess, it prints the command it would run
and a "DRY RUN" report (hydra composition, verl's and TAPO's checks, the files each stage needs) and
starts no Ray. reproduce.sh names every stage in order and says which are done.
"""

import os
import re
import shlex
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RL_SCRIPTS = {
    "run_grpo_qwen2.5_math.sh": ("grpo", "False", None),
    "run_tapo_qwen2.5_math.sh": ("tapo", "True", "anchor"),
    "run_grpo_qwen3_8b.sh": ("grpo", "False", None),
    "run_tapo_qwen3_8b.sh": ("tapo", "True", "verbatim"),
}
STAGES = ["data", "filter", "cold_start_data", "sft", "grpo", "tapo", "merge_grpo", "merge_tapo", "eval_grpo",
          "eval_tapo", "table"]


def run_script(name: str, *args: str, env: dict | None = None, dry_run: bool = True, timeout: int = 120):
    full_env = {**os.environ, "HOME": "/home/user", "HF_HUB_OFFLINE": "1", "WANDB_API_KEY": "",
                "RAY_ADDRESS": "", **(env or {})}
    if dry_run:
        full_env["DRY_RUN"] = "1"
    return subprocess.run(["bash", f"run_scripts/{name}", *args], cwd=REPO_ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def printed_command(stdout: str, program: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith("+ ") and program in line)
    return shlex.split(line[2:])


def _no_ray(result) -> None:
    text = result.stdout + result.stderr
    assert "Started a local Ray instance" not in text and "ray.init" not in text, text[-2000:]


@pytest.mark.parametrize("script", sorted(RL_SCRIPTS))
def test_rl_script_dry_run_validates_and_starts_no_ray(script, tmp_path):
    estimator, tapo_enabled, mode = RL_SCRIPTS[script]
    result = run_script(script, f"trainer.default_local_dir={tmp_path}/ckpt", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _no_ray(result)
    command = printed_command(result.stdout, "recipe_tapo.main")
    assert command[:3] == ["python", "-m", "recipe_tapo.main"]
    assert f"algorithm.adv_estimator={estimator}" in command
    assert "actor_rollout_ref.rollout.name=vllm" in command
    assert command[-1] == f"trainer.default_local_dir={tmp_path}/ckpt"  # hydra overrides pass through last
    assert "DRY RUN: the config composes and passes verl's and TAPO's start-up checks; no Ray started." in result.stdout
    assert f"algorithm.adv_estimator={estimator} tapo.enable={tapo_enabled}" in result.stdout
    if mode:
        assert f"tapo.synthesis.mode={mode}" in result.stdout
    # The files the run reads are named, each present or missing.
    for name in ("aime2024", "aime2025", "hmmt2025"):
        assert f"data.val_files: {tmp_path}/{name}.parquet (missing here)" in result.stdout
    assert "actor_rollout_ref.model.path:" in result.stdout
    # wandb only when it is configured: the first run never stops at a login prompt.
    assert "trainer.logger=[console]" in command


def test_qwen3_pair_shares_settings_and_runs_non_thinking(tmp_path):
    commands = {}
    for script in ("run_grpo_qwen3_8b.sh", "run_tapo_qwen3_8b.sh"):
        result = run_script(script, env={"DATA_DIR": str(tmp_path), "MODEL": "/ckpt/sft/huggingface"})
        assert result.returncode == 0, result.stderr[-3000:]
        commands[script] = printed_command(result.stdout, "recipe_tapo.main")
        assert "data.max_prompt_length=1024 data.max_response_length=8192 rollout.n=8" in result.stdout
    grpo, tapo = commands["run_grpo_qwen3_8b.sh"], commands["run_tapo_qwen3_8b.sh"]
    shared = [item for item in grpo if not item.startswith(("algorithm.", "tapo.", "trainer.experiment_name"))]
    assert all(item in tapo for item in shared), set(shared) - set(tapo)
    assert "+data.apply_chat_template_kwargs.enable_thinking=false" in shared
    assert "actor_rollout_ref.model.path=/ckpt/sft/huggingface" in shared  # from the cold-start checkpoint
    assert "trainer.total_training_steps=500" in shared
    for item in ("tapo.selection.n_pos=2", "tapo.selection.n_neg=4", "tapo.selection.m_max=4",
                 "tapo.advantage.ref_loss_weight=1.0", "tapo.ots.w_min=0.01", "tapo.ots.w_max=10.0"):
        assert item in tapo


def test_tapo_dry_run_refuses_inconsistent_lengths(tmp_path):
    # The trainer's start-up check runs under DRY_RUN: a synthesis budget over the context is refused.
    result = run_script("run_tapo_qwen3_8b.sh", "tapo.synthesis.max_new_tokens=20000", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "exceeds the rollout's context of 32768 tokens" in result.stderr
    _no_ray(result)


def test_cold_start_sft_length_holds_the_longest_synthesis_example():
    settings = open(os.path.join(REPO_ROOT, "run_scripts", "qwen3_8b_settings.sh")).read()
    prompt = int(re.search(r"tapo\.synthesis\.max_prompt_tokens=(\d+)", settings).group(1))
    new = int(re.search(r"tapo\.synthesis\.max_new_tokens=(\d+)", settings).group(1))
    sft = open(os.path.join(REPO_ROOT, "config", "cold_start_sft_settings.yaml")).read()
    max_length = int(re.search(r"^  max_length: (\d+)$", sft, flags=re.M).group(1))
    assert prompt + new < max_length <= prompt + new + 256


def test_cold_start_sft_dry_run(tmp_path):
    result = run_script("run_cold_start_sft.sh", "optim.lr=2e-5",
                        env={"WORK_DIR": str(tmp_path), "GPUS_PER_NODE": "4"})
    assert result.returncode == 0, result.stderr[-3000:]
    command = printed_command(result.stdout, "recipe_tapo.cold_start_sft")
    assert command[:5] == ["torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=4", "-m"]
    assert command[-1] == "optim.lr=2e-5"
    assert "DRY RUN: the SFT config composes" in result.stdout
    assert "optim.lr=2e-05" in result.stdout
    assert f"data: {tmp_path}/cold_start/train.parquet (missing here)" in result.stdout
    assert f"output: {tmp_path}/checkpoints/cold_start_sft_qwen3_8b/huggingface" in result.stdout
    _no_ray(result)


def test_cold_start_sft_stops_on_a_bad_input_naming_the_file(tmp_path):
    bad = tmp_path / "train.parquet"
    bad.write_text("not parquet")
    result = run_script("run_cold_start_sft.sh", env={"SFT_DATA": str(bad), "WORK_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert f"data file {bad}: not a readable parquet file" in result.stderr


def test_eval_and_prepare_data_dry_runs(tmp_path):
    result = run_script("eval.sh", env={"MODEL": str(tmp_path / "model"), "DATA_DIR": str(tmp_path),
                                        "MAX_NEW_TOKENS": "8192"})
    assert result.returncode == 0, result.stderr[-3000:]
    command = printed_command(result.stdout, "recipe_tapo.evaluation.evaluate")
    assert command[command.index("--max-new-tokens") + 1] == "8192"
    assert "DRY RUN: the evaluation options parse" in result.stdout
    assert f"--model: {tmp_path}/model (missing here)" in result.stdout
    assert f"--data: {tmp_path}/hmmt2025.parquet (missing here)" in result.stdout
    result = run_script("eval.sh", "--n", "not-a-number", env={"MODEL": "m/x", "DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "--n" in result.stderr

    (tmp_path / "aime2024.parquet").write_bytes(b"")
    result = run_script("prepare_data.sh", "--limit", "3", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert printed_command(result.stdout, "recipe_tapo.data.prepare")[-2:] == ["--limit", "3"]
    assert "DRY RUN" in result.stdout
    assert f"{tmp_path}/aime2024.parquet (present)" in result.stdout
    assert f"{tmp_path}/hmmt2025.parquet (missing here)" in result.stdout


def test_reproduce_dry_run_names_every_stage_in_order_and_which_are_done(tmp_path):
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    stages = re.findall(r"^== stage (\w+): (done|pending)", result.stdout, flags=re.M)
    assert stages == [(name, "pending") for name in STAGES]
    assert "DRY RUN" in result.stdout and "[env]" in result.stdout  # the environment check only reports
    assert not (tmp_path / ".stages").exists()  # nothing ran, nothing marked

    (tmp_path / ".stages").mkdir()
    for name in STAGES[:4]:
        (tmp_path / ".stages" / f"{name}.done").write_text("2026-01-01")
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path)})
    stages = re.findall(r"^== stage (\w+): (done|pending)", result.stdout, flags=re.M)
    assert stages == [(name, "done" if index < 4 else "pending") for index, name in enumerate(STAGES)]
    # The RL runs start from the cold-start checkpoint and read the filtered data.
    sft_hf = f"{tmp_path}/checkpoints/cold_start_sft_qwen3_8b/huggingface"
    assert f"MODEL={sft_hf}" in result.stdout
    assert f"needs {tmp_path}/data/deepscaler_zpd_qwen3_8b.parquet" in result.stdout


def test_reproduce_stops_a_stage_whose_input_is_missing(tmp_path):
    # data and filter marked done, but the training file is gone: cold_start_data stops naming it.
    (tmp_path / ".stages").mkdir()
    for name in STAGES[:2]:
        (tmp_path / ".stages" / f"{name}.done").write_text("x")
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path), "SKIP_ENV_CHECK": "1"}, dry_run=False)
    assert result.returncode != 0
    assert f"stage cold_start_data: missing input {tmp_path}/data/deepscaler_train.parquet" in result.stderr
    assert not (tmp_path / ".stages" / "cold_start_data.done").exists()


def test_reproduce_checks_the_environment_before_the_first_unfinished_stage(tmp_path):
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path), "GPUS_PER_NODE": "99"}, dry_run=False)
    assert result.returncode != 0
    assert "== environment check before stage data" in result.stdout
    assert "[env] FAIL gpus" in result.stdout and "environment check failed" in result.stderr
    assert not (tmp_path / ".stages").exists()


def test_check_env_reports_every_check():
    result = subprocess.run(["bash", "run_scripts/check_env.sh", "--gpus", "0", "--report-only", "--work-dir", "/tmp"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("torch", "gpus", "vllm", "flash_attn", "verl", "disk", "wandb"):
        assert re.search(rf"^\[env\] (ok|FAIL|note) +{name}:", result.stdout, flags=re.M), result.stdout
