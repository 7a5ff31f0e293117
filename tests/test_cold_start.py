"""Cold start: the data builder on the tiny model (a scripted synthesizer stands in for the synthesis
text only), its output in verl's SFT dataset, verl's SFT trainer on CPU, and the RL trainer starting
from the SFT checkpoint. Bad inputs stop each stage with the file's name."""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from verl_run import REPO_ROOT, run_logged, step_metrics, training_steps

TEMPLATE = "Q: {{question}}\nWrong: {{wrong_answer}}\nRight: {{right_answer}}\nFix the wrong answer.\n"
TINY_OVERRIDES = [
    "data.max_prompt_length=64",
    "data.max_response_length=32",
    "actor_rollout_ref.rollout.max_model_len=4096",
    "tapo.synthesis.max_prompt_tokens=512",
    "tapo.synthesis.max_new_tokens=64",
    "tapo.selection.n_pos=1",
    "tapo.selection.n_neg=1",
    "tapo.splicing.min_prefix_tokens=1",
    "tapo.splicing.final_answer_marker=''",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from recipe_tapo.tiny_assets import build_all

    directory = tmp_path_factory.mktemp("cold_start_tiny")
    build_all(str(directory))
    template = directory / "template.txt"
    template.write_text(TEMPLATE)
    return directory


def _builder_args(tiny, out, *extra):
    return [
        "--model", str(tiny / "model"), "--input", str(tiny / "data" / "train.parquet"), "--output-dir", str(out),
        "--k", "4", "--limit", "24", "--chunk-size", "12", "--num-synthesis", "1000", "--num-solutions", "1000",
        "--reward-fn", "recipe_tapo.reward.tiny_reward.compute_score", *extra,
        *TINY_OVERRIDES, f"tapo.synthesis.template_path={tiny / 'template.txt'}",
    ]


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    """The builder end to end on the tiny model; HalfThenRight writes the synthesis text."""
    from recipe_tapo.cold_start import main

    out = tmp_path_factory.mktemp("cold_start_data")
    stats = main(_builder_args(tiny, out, "--synthesis-source", "doubles.synthesis_doubles.HalfThenRight"))
    return out, stats


@pytest.mark.slow
def test_builder_end_to_end_on_the_tiny_model(built, tiny):
    out, stats = built
    table = pd.read_parquet(out / "train.parquet")
    counts = table["kind"].value_counts().to_dict()
    assert counts.get("synthesis", 0) > 0 and counts.get("solution", 0) > 0, stats
    assert stats["examples"] == {"solution": counts["solution"], "synthesis": counts["synthesis"]}
    assert json.loads((out / "stats.json").read_text())["examples"] == stats["examples"]
    assert stats["rollouts"] == 24 * 4 and stats["synthesis_requests"] > 0
    for key in ("parse_rate", "splice_rate", "verified_rate"):
        assert 0.0 < stats[key] <= 1.0, (key, stats)
    assert stats["per_source"]["tiny_arithmetic"] == counts
    assert stats["lengths"]["synthesis_prompt_tokens"]["count"] == stats["synthesis_requests"]

    records = [json.loads(line) for line in (out / "synthesis_records.jsonl").read_text().splitlines()]
    kept = [record for record in records if record["kept"]]
    assert len(kept) == counts["synthesis"]  # every verified synthesis is an example (cap not reached)
    assert all(record["status"] == "ok" and record["acc"] for record in kept)
    assert {record["status"] for record in records} - {"ok"}  # failures are recorded too

    for row in table.itertuples():
        messages = [dict(message) for message in row.messages]
        assert [message["role"] for message in messages][-1] == "assistant"
        if row.kind == "synthesis":
            # The exact synthesis prompt the trainer sends (the template filled in), and the raw output.
            prompt = messages[0]["content"]
            assert prompt.startswith("Q: ") and "\nWrong: " in prompt and prompt.endswith("Fix the wrong answer.\n")
            assert messages[1]["content"].startswith("<analysis>") and "<reconstruction>" in messages[1]["content"]
        else:
            # A verified answer of the model to the problem's own chat prompt (tiny reward: even length).
            assert messages[0]["content"].startswith("What is") and len(messages[1]["content"]) % 2 == 0


@pytest.mark.slow
def test_builder_output_loads_in_verls_sft_dataset(built, tiny):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    out, _ = built
    tokenizer = AutoTokenizer.from_pretrained(tiny / "model")
    config = OmegaConf.create({"messages_key": "messages", "pad_mode": "no_padding", "max_length": 2048,
                               "truncation": "error"})
    dataset = MultiTurnSFTDataset(str(out / "train.parquet"), tokenizer, config)
    assert len(dataset) == len(pd.read_parquet(out / "train.parquet"))
    for index in range(len(dataset)):
        item = dataset[index]
        ids, mask = item["input_ids"], item["loss_mask"]
        assert 0 < int(mask.sum()) < len(ids)  # the prompt is masked, the assistant turn is trained
        trained = tokenizer.decode(ids[mask.bool()])
        assert trained.rstrip("\n").endswith("<|im_end|>")  # the answer and its end of turn are trained


@pytest.mark.slow
def test_sft_on_cpu_trains_and_the_rl_trainer_starts_from_its_checkpoint(built, tiny, tmp_path):
    out, _ = built
    sft_dir = tmp_path / "sft"
    # The builder's output on a random tiny model may hold only a few examples: repeat them so three
    # steps of verl's batch of 4 exist whatever the sampled rollouts were.
    examples = pd.read_parquet(out / "train.parquet")
    assert len(examples) > 0
    train_file = tmp_path / "sft_train.parquet"
    pd.concat([examples] * math.ceil(12 / len(examples)), ignore_index=True).to_parquet(train_file, index=False)
    log = run_logged(
        [sys.executable, "-m", "recipe_tapo.cold_start_sft", "--config-name", "cold_start_sft_cpu",
         f"model.path={tiny / 'model'}", f"data.train_files={train_file}",
         f"trainer.default_local_dir={sft_dir}", "trainer.total_training_steps=3"],
        str(tmp_path / "sft.log"), timeout_s=240,
        env={"VERL_PLATFORM": "cpu", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )
    steps = step_metrics(log)
    assert sorted(steps) == [1, 2, 3], log[-2000:]
    losses = [steps[step]["train/loss"] for step in (1, 2, 3)]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    assert losses[-1] < losses[0], losses
    hf = sft_dir / "huggingface"
    assert os.readlink(hf) == os.path.join("global_step_3", "huggingface")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (hf / name).is_file(), name

    from safetensors.torch import load_file

    before, after = load_file(tiny / "model" / "model.safetensors"), load_file(hf / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [key for key in before if not torch.equal(before[key].float(), after[key].float())]
    assert len(changed) > len(before) // 2, changed

    # The RL trainer (TAPO's, on CPU) takes the SFT checkpoint as its starting model: one step.
    rl_log = run_logged(
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", f"actor_rollout_ref.model.path={hf}",
         "trainer.total_training_steps=1", "trainer.val_before_train=false"],
        str(tmp_path / "rl.log"), timeout_s=300, env={"TINY_DIR": str(tmp_path / "rl_tiny")},
    )
    assert str(hf) in rl_log
    rl_steps = training_steps(rl_log)
    assert sorted(rl_steps) == [1] and math.isfinite(rl_steps[1]["actor/grad_norm"])


# -- bad or missing inputs: each stage stops with a message naming the file --------------------------


def _run_module(*args, env=None):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def test_builder_stops_on_a_missing_or_bad_input_naming_the_file(tiny, tmp_path):
    missing = tmp_path / "nowhere.parquet"
    args = _builder_args(tiny, tmp_path / "out")
    args[args.index("--input") + 1] = str(missing)
    result = _run_module("recipe_tapo.cold_start", *args)
    assert result.returncode == 2 and f"--input {missing}: no such file" in result.stderr

    no_prompt = tmp_path / "no_prompt.parquet"
    pd.DataFrame({"question": ["1+1"], "answer": ["2"]}).to_parquet(no_prompt)
    args[args.index("--input") + 1] = str(no_prompt)
    result = _run_module("recipe_tapo.cold_start", *args)
    assert result.returncode == 2 and f"--input {no_prompt}: missing column(s) ['prompt', 'reward_model']" in result.stderr

    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    args = _builder_args(tiny, tmp_path / "out")
    args[args.index("--model") + 1] = str(not_a_model)
    result = _run_module("recipe_tapo.cold_start", *args)
    assert result.returncode == 2 and f"--model {not_a_model}: the folder holds no config.json" in result.stderr


def test_sft_stops_on_a_missing_or_bad_input_naming_the_file(tiny, tmp_path):
    common = ["recipe_tapo.cold_start_sft", "--config-name", "cold_start_sft_cpu", f"model.path={tiny / 'model'}",
              f"trainer.default_local_dir={tmp_path / 'ckpt'}"]
    missing = tmp_path / "missing.parquet"
    result = _run_module(*common, f"data.train_files={missing}", env={"VERL_PLATFORM": "cpu"})
    assert result.returncode == 2 and f"data file {missing}: no such file" in result.stderr
    no_messages = tmp_path / "rl_rows.parquet"
    pd.DataFrame({"prompt": ["x"] * 8}).to_parquet(no_messages)
    result = _run_module(*common, f"data.train_files={no_messages}", env={"VERL_PLATFORM": "cpu"})
    assert result.returncode == 2 and f"data file {no_messages}: no 'messages' column" in result.stderr
    assert not (tmp_path / "ckpt").exists()


def test_builder_takes_its_sampling_options_from_the_shared_generation_arguments(monkeypatch, capsys):
    import recipe_tapo.generation as generation
    from recipe_tapo.cold_start import parse_args

    calls = []
    shared = generation.add_generation_arguments

    def recording(parser, *args, **kwargs):
        calls.append((args, kwargs))
        return shared(parser, *args, **kwargs)

    monkeypatch.setattr(generation, "add_generation_arguments", recording)
    required = ["--model", "m", "--input", "in.parquet", "--output-dir", "out"]
    args = parse_args(required)
    assert len(calls) == 1
    # Cold start's own defaults: rollouts sample as the RL rollout; the prompt cap falls back to data.*.
    assert (args.temperature, args.top_p, args.max_prompt_tokens, args.seed, args.limit, args.backend,
            args.tensor_parallel_size, args.data_parallel_size, args.gpu_memory_utilization) \
        == (1.0, 1.0, None, 0, None, "auto", 1, None, 0.85)
    args = parse_args([*required, "--temperature", "0.7", "--top-p", "0.9", "--max-prompt-tokens", "40", "--seed",
                       "3", "--limit", "5", "--backend", "hf", "--tensor-parallel-size", "2",
                       "--data-parallel-size", "4", "--gpu-memory-utilization", "0.5", "data.max_response_length=32"])
    assert (args.temperature, args.top_p, args.max_prompt_tokens, args.seed, args.limit, args.backend,
            args.tensor_parallel_size, args.data_parallel_size, args.gpu_memory_utilization) \
        == (0.7, 0.9, 40, 3, 5, "hf", 2, 4, 0.5)
    assert args.overrides == ["data.max_response_length=32"]
    # The response length and chat kwargs come from the trainer config (data.*), never from an option.
    assert not hasattr(args, "max_new_tokens") and not hasattr(args, "chat_template_kwargs")
    for option, value in (("--max-new-tokens", "64"), ("--chat-template-kwargs", "{}")):
        with pytest.raises(SystemExit):
            parse_args([*required, option, value])
        assert f"unrecognized arguments: {option}" in capsys.readouterr().err


def test_reproduction_table_beside_the_papers_numbers(tmp_path):
    from recipe_tapo.reproduction_table import main

    def report(pass1):
        return {"settings": {"n": 16, "temperature": 0.6}, "benchmarks": {
            name: {"metrics": {"pass@1": pass1, "pass@2": pass1 + 5, "dsr": 30.0, "err": 50.0}}
            for name in ("aime2024", "aime2025", "hmmt2025")}}

    paths = {}
    for name, value in (("GRPO", 40.0), ("TAPO", 45.0), ("OPSD", 42.0)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(report(value)))
    document = main(["--run", f"GRPO={paths['GRPO']}", "--run", f"TAPO={paths['TAPO']}", "--run", f"OPSD={paths['OPSD']}",
                     "--out", str(tmp_path / "results.md")])
    lines = [line for line in document.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| GRPO (ours)", "| GRPO (paper)", "| TAPO (ours)",
                                                              "| TAPO (paper)", "| OPSD (ours)", "| OPSD (paper)"]
    # The paper gives OPSD's Pass@1 on AIME24 and (approximately) HMMT25 only.
    opsd_paper = lines[6].split(" | ")
    assert opsd_paper[1] == "57.71" and opsd_paper[9] == "~24.17"
    assert opsd_paper[2:9] == ["-"] * 7 and opsd_paper[10:12] == ["-", "-"]
    assert "AIME24 Pass@1" in lines[0] and "HMMT25 ERR" in lines[0]
    assert lines[1].split(" | ")[1] == "40.00" and lines[3].split(" | ")[1] == "45.00"
    assert lines[2].split(" | ")[1] == "52.92" and lines[4].split(" | ")[1] == "62.50"  # paper AIME24 Pass@1
    assert lines[2].split(" | ")[2] == "-"  # Pass@2 on AIME24: not in the paper
    assert (tmp_path / "results.md").read_text() == document

    with pytest.raises(SystemExit):
        main(["--run", f"GRPO={tmp_path / 'absent.json'}"])
