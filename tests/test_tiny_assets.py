"""The offline tiny assets: deterministic, loadable by transformers and by verl's dataset."""

import hashlib
import os

import pytest

from recipe_tapo.tiny_assets import TINY_DATA_SOURCE, build_all


def _digests(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return str(out), build_all(str(out))


def test_two_builds_are_byte_identical(assets, tmp_path):
    folder, _ = assets
    build_all(str(tmp_path))
    assert _digests(folder) == _digests(str(tmp_path))


def test_tokenizer_has_chatml_and_the_qwen_special_tokens(assets):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets[1]["model"])
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                         add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    sample = "Wait, 7 * 8 = 56, so \\boxed{56}."
    assert tokenizer.decode(tokenizer.encode(sample, add_special_tokens=False)) == sample


def test_model_is_a_small_qwen2_matching_the_tokenizer(assets):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(assets[1]["model"])
    tokenizer = AutoTokenizer.from_pretrained(assets[1]["model"])
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_data_loads_in_verls_rl_dataset(assets):
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer = AutoTokenizer.from_pretrained(assets[1]["model"])
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 64, "filter_overlong_prompts": True,
                               "truncation": "error", "return_raw_chat": True})
    dataset = RLHFDataset(data_files=[assets[1]["train"]], tokenizer=tokenizer, config=config)
    assert len(dataset) == 64
    row = dataset[0]
    assert row["data_source"] == TINY_DATA_SOURCE
    assert row["reward_model"]["ground_truth"].lstrip("-").isdigit()
    assert "\\boxed{}" in row["raw_prompt"][0]["content"]
