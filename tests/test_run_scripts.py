"""Every GPU script validates under DRY_RUN=1: run as a subprocess, it prints the command it would run
and a "DRY RUN" report (hydra composition, verl's and TAPO's checks, the files each stage needs) and
starts no Ray. reproduce.sh names every stage in order and says which are done.
"""

import json
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
    "run_opsd_qwen2.5_math.sh": ("grpo", "False", None),
    "run_opsd_qwen3_8b.sh": ("grpo", "False", None),
}
STAGES = ["data", "filter", "cold_start_data", "sft", "grpo", "tapo", "opsd", "merge_grpo", "merge_tapo", "merge_opsd",
          "eval_grpo", "eval_tapo", "eval_opsd", "table"]


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
    shared = [item for item in grpo
              if not item.startswith(("algorithm.", "tapo.", "trainer.experiment_name", "trainer.default_local_dir"))]
    # Each run's checkpoints in its own absolute folder under WORK_DIR.
    assert "trainer.default_local_dir=/home/user/tapo_work/checkpoints/grpo_qwen3_8b" in grpo
    assert "trainer.default_local_dir=/home/user/tapo_work/checkpoints/tapo_qwen3_8b" in tapo
    assert all(item in tapo for item in shared), set(shared) - set(tapo)
    assert "+data.apply_chat_template_kwargs.enable_thinking=false" in shared
    assert "actor_rollout_ref.model.path=/ckpt/sft/huggingface" in shared  # from the cold-start checkpoint
    assert "trainer.total_training_steps=500" in shared
    for item in ("tapo.selection.n_pos=2", "tapo.selection.n_neg=4", "tapo.selection.m_max=4",
                 "tapo.advantage.ref_loss_weight=1.0", "tapo.ots.w_min=0.01", "tapo.ots.w_max=10.0"):
        assert item in tapo


def test_opsd_runs_share_grpos_settings_and_fit_the_privileged_prompt_in_the_context(tmp_path):
    for grpo_script, opsd_script, budget, context in (("run_grpo_qwen3_8b.sh", "run_opsd_qwen3_8b.sh", 9472, 32768),
                                                       ("run_grpo_qwen2.5_math.sh", "run_opsd_qwen2.5_math.sh", 1024, 4096)):
        commands = {}
        for script in (grpo_script, opsd_script):
            result = run_script(script, env={"DATA_DIR": str(tmp_path), "MODEL": "/ckpt/sft/huggingface"})
            assert result.returncode == 0, result.stderr[-3000:]
            commands[script] = printed_command(result.stdout, "recipe_tapo.main")
        grpo, opsd = commands[grpo_script], commands[opsd_script]
        shared = [item for item in grpo if not item.startswith(("trainer.experiment_name", "trainer.default_local_dir"))]
        assert all(item in opsd for item in shared), set(shared) - set(opsd)  # GRPO's settings, estimator included
        # prompt 1024 + template 256 + a reference or sibling answer of up to a response, within the context
        assert f"opsd.max_prompt_tokens={budget}" in opsd and f"actor_rollout_ref.rollout.max_model_len={context}" in opsd
        response = int(next(item for item in opsd if item.startswith("data.max_response_length=")).split("=")[1])
        assert budget + response <= context
        assert "opsd.enable=true" in opsd and "opsd.outcome_advantage=false" in opsd and "tapo.enable=false" in opsd
        assert (f"opsd.enable=True opsd.coef=1.0 opsd.outcome_advantage=False opsd.teacher=current "
                f"opsd.context=reference_then_sibling opsd.max_prompt_tokens={budget}") in result.stdout
    # The start-up check runs under DRY_RUN: a privileged prompt that leaves no room for a response is refused.
    result = run_script("run_opsd_qwen3_8b.sh", "opsd.max_prompt_tokens=30000", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "opsd.max_prompt_tokens (30000) + data.max_response_length (8192) = 38192 exceeds" in result.stderr
    _no_ray(result)


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


def settings_args(settings: str, array: str, env: dict | None = None) -> list[str]:
    """The hydra arguments a settings file composes (bash only: no python, no dry run)."""
    script = f"source run_scripts/common.sh && source run_scripts/{settings} && printf '%s\\n' \"${{{array}[@]}}\""
    out = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env={**os.environ, "HOME": "/home/user", **(env or {})},
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def hydra_value(args: list[str], key: str) -> str:
    return next(arg.split("=", 1)[1] for arg in args if arg.lstrip("+").split("=", 1)[0] == key)


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize("model, settings, array", [
    ("qwen3_8b", "qwen3_8b_settings.sh", "QWEN3_8B_ARGS"),
    ("qwen2.5_math", "qwen2.5_math_settings.sh", "QWEN25_MATH_ARGS"),
])
def test_each_model_is_evaluated_as_it_was_trained(model, settings, array, tmp_path):
    trained = settings_args(settings, array)
    result = run_script(f"eval_{model}.sh", env={"MODEL": str(tmp_path / "model"), "DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    command = printed_command(result.stdout, "recipe_tapo.evaluation.evaluate")
    assert option(command, "--max-new-tokens") == hydra_value(trained, "data.max_response_length")
    assert option(command, "--max-prompt-tokens") == hydra_value(trained, "data.max_prompt_length")
    assert option(command, "--n") == hydra_value(trained, "actor_rollout_ref.rollout.val_kwargs.n")
    assert option(command, "--temperature") == hydra_value(trained, "actor_rollout_ref.rollout.val_kwargs.temperature")
    assert option(command, "--top-p") == hydra_value(trained, "actor_rollout_ref.rollout.val_kwargs.top_p")
    thinking = [arg for arg in trained if arg.startswith("+data.apply_chat_template_kwargs.")]
    kwargs = json.loads(option(command, "--chat-template-kwargs"))
    assert kwargs == {arg.split("=")[0].rsplit(".", 1)[1]: arg.endswith("=true") for arg in thinking}
    assert "DRY RUN: the evaluation options parse" in result.stdout
    assert "--data-parallel-size 8, --tensor-parallel-size 1" in result.stdout  # a vLLM replica on every GPU
    assert f"--model: {tmp_path}/model (missing here)" in result.stdout
    assert f"--data: {tmp_path}/hmmt2025.parquet (missing here)" in result.stdout
    assert "the files it writes:\n  /home/user/tapo_work/eval/model/eval_results.json (missing here)" in result.stdout


def test_qwen3_8b_evaluation_runs_non_thinking_at_the_trained_length(tmp_path):
    result = run_script("eval_qwen3_8b.sh", env={"MODEL": "/ckpt/hf/tapo_qwen3_8b", "DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    command = printed_command(result.stdout, "recipe_tapo.evaluation.evaluate")
    assert json.loads(option(command, "--chat-template-kwargs")) == {"enable_thinking": False}
    assert int(option(command, "--max-new-tokens")) >= 8192


def test_evaluation_runs_a_vllm_replica_on_each_gpu_of_the_node_unless_told_otherwise(tmp_path):
    env = {"MODEL": "/ckpt/hf/tapo_qwen3_8b", "DATA_DIR": str(tmp_path), "GPUS_PER_NODE": "4"}
    result = run_script("eval_qwen3_8b.sh", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert option(printed_command(result.stdout, "recipe_tapo.evaluation.evaluate"), "--data-parallel-size") == "4"
    assert "--data-parallel-size 4, --tensor-parallel-size 1" in result.stdout
    # The caller's options come after the script's, and win.
    result = run_script("eval_qwen3_8b.sh", "--data-parallel-size", "2", "--tensor-parallel-size", "2", env=env)
    assert "--data-parallel-size 2, --tensor-parallel-size 2" in result.stdout


def test_generic_eval_refuses_to_guess_the_settings_that_change_the_score(tmp_path):
    for missing in ("MAX_NEW_TOKENS", "CHAT_TEMPLATE_KWARGS"):
        env = {"MODEL": "/ckpt/x", "MAX_NEW_TOKENS": "8192", "CHAT_TEMPLATE_KWARGS": "{}", missing: ""}
        result = run_script("eval.sh", env=env)
        assert result.returncode == 2
        assert f"eval.sh: set {missing}" in result.stderr
        assert "run_scripts/eval_qwen3_8b.sh or run_scripts/eval_qwen2.5_math.sh" in result.stderr
    env = {"MODEL": "m/x", "DATA_DIR": str(tmp_path), "MAX_NEW_TOKENS": "4096", "CHAT_TEMPLATE_KWARGS": "{}"}
    result = run_script("eval.sh", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert option(printed_command(result.stdout, "recipe_tapo.evaluation.evaluate"), "--max-new-tokens") == "4096"
    result = run_script("eval.sh", "--n", "not-a-number", env=env)
    assert result.returncode != 0 and "--n" in result.stderr


def test_prepare_data_dry_run_lists_the_files_it_writes(tmp_path):
    (tmp_path / "aime2024.parquet").write_bytes(b"")
    result = run_script("prepare_data.sh", "--limit", "3", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert printed_command(result.stdout, "recipe_tapo.data.prepare")[-2:] == ["--limit", "3"]
    assert "DRY RUN: nothing downloaded; the files it writes:" in result.stdout
    assert f"{tmp_path}/aime2024.parquet (present)" in result.stdout
    assert f"{tmp_path}/hmmt2025.parquet (missing here)" in result.stdout


def test_filter_samples_as_the_qwen3_runs_do(tmp_path):
    trained = settings_args("qwen3_8b_settings.sh", "QWEN3_8B_ARGS", env={"DATA_DIR": str(tmp_path)})
    result = run_script("filter_qwen3_8b.sh", "--limit", "4", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    command = printed_command(result.stdout, "recipe_tapo.data.difficulty_filter")
    assert option(command, "--input") == f"{tmp_path}/deepscaler_train.parquet"
    assert option(command, "--output") == hydra_value(trained, "data.train_files")
    assert option(command, "--model") == "Qwen/Qwen3-8B"
    assert option(command, "--k") == hydra_value(trained, "actor_rollout_ref.rollout.n")
    assert option(command, "--temperature") == hydra_value(trained, "actor_rollout_ref.rollout.temperature")
    assert option(command, "--max-new-tokens") == hydra_value(trained, "data.max_response_length")
    assert option(command, "--max-prompt-tokens") == hydra_value(trained, "data.max_prompt_length")
    assert json.loads(option(command, "--chat-template-kwargs")) == {"enable_thinking": False}
    assert command[-2:] == ["--limit", "4"]
    assert option(command, "--data-parallel-size") == "8"  # GPUS_PER_NODE: a vLLM replica on every GPU
    assert f"the files it writes:\n  {tmp_path}/deepscaler_zpd_qwen3_8b.parquet (missing here)" in result.stdout
    result = run_script("filter_qwen3_8b.sh", "--k", "0", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "--min-correct" in result.stderr


def test_reproduce_dry_run_names_every_stage_in_order_and_which_are_done(tmp_path):
    env = {"WORK_DIR": str(tmp_path), "DATA_DIR": str(tmp_path / "data")}
    result = run_script("reproduce.sh", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = re.findall(r"^== stage (\w+): (done|pending)", result.stdout, flags=re.M)
    assert stages == [(name, "pending") for name in STAGES]
    assert "DRY RUN" in result.stdout and "[env]" in result.stdout  # the environment check only reports
    assert not (tmp_path / ".stages").exists()  # nothing ran, nothing marked
    # The filter and the evaluations are the per-model scripts, which sample as the runs do.
    assert "   + bash run_scripts/filter_qwen3_8b.sh" in result.stdout
    assert f"OUT_DIR={tmp_path}/eval/tapo bash run_scripts/eval_qwen3_8b.sh" in result.stdout
    assert option(printed_command(result.stdout.replace("   + ", "+ "), "recipe_tapo.cold_start"),
                  "--data-parallel-size") == "8"  # the cold-start rollouts on every GPU of the node
    assert f"OUT_DIR={tmp_path}/eval/opsd bash run_scripts/eval_qwen3_8b.sh" in result.stdout
    assert f"--run OPSD={tmp_path}/eval/opsd/eval_results.json" in result.stdout  # the table's OPSD row

    (tmp_path / ".stages").mkdir()
    for name in STAGES[:4]:
        (tmp_path / ".stages" / f"{name}.done").write_text("2026-01-01")
    result = run_script("reproduce.sh", env=env)
    stages = re.findall(r"^== stage (\w+): (done|pending)", result.stdout, flags=re.M)
    assert stages == [(name, "done" if index < 4 else "pending") for index, name in enumerate(STAGES)]
    # The RL runs start from the cold-start checkpoint and read the filtered data.
    sft_hf = f"{tmp_path}/checkpoints/cold_start_sft_qwen3_8b/huggingface"
    assert f"MODEL={sft_hf}" in result.stdout
    assert f"needs {tmp_path}/data/deepscaler_zpd_qwen3_8b.parquet" in result.stdout


def test_reproduce_keeps_data_where_the_other_scripts_do(tmp_path):
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path), "HOME": str(tmp_path / "home")})
    assert f"needs {tmp_path}/home/data/tapo/deepscaler_train.parquet" in result.stdout


def test_reproduce_stops_a_stage_whose_input_is_missing(tmp_path):
    # data and filter marked done, but the training file is gone: cold_start_data stops naming it.
    (tmp_path / ".stages").mkdir()
    for name in STAGES[:2]:
        (tmp_path / ".stages" / f"{name}.done").write_text("x")
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path), "DATA_DIR": str(tmp_path / "data"),
                                             "SKIP_ENV_CHECK": "1"}, dry_run=False)
    assert result.returncode != 0
    assert f"stage cold_start_data: missing input {tmp_path}/data/deepscaler_train.parquet" in result.stderr
    assert not (tmp_path / ".stages" / "cold_start_data.done").exists()


def test_reproduce_checks_the_environment_before_the_first_unfinished_stage(tmp_path):
    result = run_script("reproduce.sh", env={"WORK_DIR": str(tmp_path), "GPUS_PER_NODE": "99"}, dry_run=False)
    assert result.returncode != 0
    assert "== environment check before stage data" in result.stdout
    assert "[env] FAIL gpus" in result.stdout and "environment check failed" in result.stderr
    assert not (tmp_path / ".stages").exists()


def test_check_env_defaults_follow_the_run_settings_and_dry_run_only_reports(tmp_path):
    env = {"GPUS_PER_NODE": "3", "NNODES": "2", "WORK_DIR": str(tmp_path), "MIN_FREE_GB": "1"}
    result = run_script("check_env.sh", env=env)
    assert result.returncode == 0, result.stderr  # DRY_RUN=1: reports, never fails
    assert re.search(r"^\[env\] (ok|FAIL) +gpus: .* need 3 on this node$", result.stdout, flags=re.M), result.stdout
    assert re.search(rf"^\[env\] ok +disk: \d+ GB free under {tmp_path}, need 1 GB", result.stdout, flags=re.M)
    result = run_script("check_env.sh", env={"GPUS_PER_NODE": "99"}, dry_run=False)
    assert result.returncode == 1 and "[env] FAIL gpus" in result.stdout
    result = run_script("check_env.sh", "--gpus", "0", "--min-free-gb", "0", "--work-dir", str(tmp_path),
                        env={"GPUS_PER_NODE": "99"}, dry_run=False)  # a flag wins over the environment
    assert re.search(r"^\[env\] ok +gpus: .* need 0 on this node$", result.stdout, flags=re.M), result.stdout


def test_check_env_reports_every_check():
    result = subprocess.run(["bash", "run_scripts/check_env.sh", "--gpus", "0", "--report-only", "--work-dir", "/tmp"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("torch", "gpus", "vllm", "flash_attn", "verl", "disk", "wandb"):
        assert re.search(rf"^\[env\] (ok|FAIL|note) +{name}:", result.stdout, flags=re.M), result.stdout


def test_multi_node_runs_get_absolute_paths_from_relative_settings(tmp_path):
    # Run from tmp_path with relative settings: the scripts read them against the caller's directory
    # and pass absolute paths, which the multi-node start-up check accepts.
    env = {"NNODES": "2", "MODEL": "ckpt/sft/huggingface", "DATA_DIR": "data", "WORK_DIR": "work",
           "HOME": "/home/user", "HF_HUB_OFFLINE": "1", "WANDB_API_KEY": "", "RAY_ADDRESS": "", "DRY_RUN": "1"}
    result = subprocess.run(["bash", os.path.join(REPO_ROOT, "run_scripts", "run_grpo_qwen3_8b.sh")], cwd=tmp_path,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    command = printed_command(result.stdout, "recipe_tapo.main")
    assert f"actor_rollout_ref.model.path={tmp_path}/ckpt/sft/huggingface" in command
    assert f"data.train_files={tmp_path}/data/deepscaler_zpd_qwen3_8b.parquet" in command
    assert f"trainer.default_local_dir={tmp_path}/work/checkpoints/grpo_qwen3_8b" in command
    assert "trainer.nnodes=2" in command
    # A hub id stays a hub id.
    assert hydra_value(settings_args("qwen2.5_math_settings.sh", "QWEN25_MATH_ARGS"),
                       "actor_rollout_ref.model.path") == "Qwen/Qwen2.5-Math-7B"


def _text(script: str) -> str:
    return open(os.path.join(REPO_ROOT, "run_scripts", script)).read()


def _top_level(text: str) -> str:
    """The script less its functions' bodies (where "$@" is the function's own arguments)."""
    return re.sub(r"^[\w-]+\(\) \{\n.*?^\}\n", "", text, flags=re.M | re.S)


SCRIPTS = sorted(name for name in os.listdir(os.path.join(REPO_ROOT, "run_scripts")) if _text(name).startswith("#!"))
HYDRA_ENTRY_POINTS = ("run_training ", "python -m recipe_tapo.main", "-m recipe_tapo.cold_start_sft")


def _takes_arguments(text: str) -> bool:
    return '"$@"' in _top_level(text).replace('refuse_arguments "$@"', "")


def _passes_arguments_to_hydra(text: str) -> bool:
    return _takes_arguments(text) and any(entry in _top_level(text) for entry in HYDRA_ENTRY_POINTS)


def _header(text: str) -> str:
    """The comment block under the shebang."""
    lines = text.splitlines()[1:]
    return "\n".join(lines[:next(index for index, line in enumerate(lines) if not line.startswith("#"))])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_says_what_its_arguments_are(script):
    text = _text(script)
    if _passes_arguments_to_hydra(text):
        assert "[hydra overrides" in _header(text), f"{script} passes its arguments to hydra: its header must say so"
    elif not _takes_arguments(text):
        result = run_script(script, "trainer.total_training_steps=10", env={"WORK_DIR": "/nonexistent"})
        assert result.returncode == 2, f"{script} takes no arguments but ran with one"
        assert f"{script} takes no arguments (got: trainer.total_training_steps=10)" in result.stderr


def test_the_argument_check_above_sees_both_kinds():
    assert {"run_tapo_qwen3_8b.sh", "run_cold_start_sft.sh", "run_tapo_toy_cpu.sh"} <= {
        name for name in SCRIPTS if _passes_arguments_to_hydra(_text(name))}
    assert {"reproduce.sh", "run_toy_reproduction.sh"} <= {name for name in SCRIPTS if not _takes_arguments(_text(name))}
