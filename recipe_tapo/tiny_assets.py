"""Tiny, deterministic stand-ins for a real model, tokenizer and dataset, built offline in seconds.

There is no model hub on CI or on a laptop without credentials, yet every part of the recipe must
run through verl's real trainer. This module builds, into one folder:

- ``tokenizer/`` and ``model/`` (the same folder, loadable with ``AutoTokenizer`` and
  ``AutoModelForCausalLM``): a byte-level BPE tokenizer trained from scratch on synthetic arithmetic
  text, with a ChatML chat template (eos ``<|im_end|>``, pad ``<|endoftext|>``) like Qwen2.5's, and a
  randomly initialised 2-layer Qwen2 model (about 0.1M parameters);
- ``data/train.parquet`` and ``data/val.parquet``: arithmetic questions in the recipe's verl row
  layout (`recipe_tapo.data.rows`), the same as the real datasets'.

Everything is seeded: two builds give identical files.

    python -m recipe_tapo.tiny_assets --out /tmp/tapo_tiny
"""

import argparse
import os
import random

from recipe_tapo.data.rows import build_prompt, make_row

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_DATA_SOURCE = "tiny_arithmetic"


def arithmetic_question(rng: random.Random) -> tuple[str, str]:
    """One synthetic question and its answer, e.g. ("What is 12 + 7?", "19")."""
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    op = rng.choice(["+", "-", "*"])
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"What is {a} {op} {b}?", str(answer)


def _tokenizer_corpus(seed: int, size: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(size):
        question, answer = arithmetic_question(rng)
        lines.append(build_prompt(question)[0]["content"])
        lines.append(f"First, compute the value step by step.\nWait, let me check: the answer is \\boxed{{{answer}}}.")
    lines.append("<analysis> The first error is here. </analysis> <reconstruction> Correct: </reconstruction>")
    return lines


def build_tokenizer(out_dir: str, vocab_size: int = 512, seed: int = 0):
    """Train a byte-level BPE tokenizer with a ChatML template and save it to ``out_dir``.

    Returns:
        transformers.PreTrainedTokenizerFast: eos ``<|im_end|>``, pad ``<|endoftext|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(seed, size=2000), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHATML_TEMPLATE,
        model_max_length=4096,
    )
    os.makedirs(out_dir, exist_ok=True)
    wrapped.save_pretrained(out_dir)
    return wrapped


def build_model(out_dir: str, tokenizer, seed: int = 0, hidden_size: int = 64, num_layers: int = 2):
    """Save a randomly initialised Qwen2 causal LM sized for ``tokenizer`` to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out_dir)
    return model


def build_dataset(out_dir: str, num_train: int = 64, num_val: int = 16, seed: int = 0) -> dict[str, str]:
    """Write ``train.parquet`` and ``val.parquet`` in verl's RL row format; returns their paths."""
    import pandas as pd

    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split, count in (("train", num_train), ("val", num_val)):
        rows = []
        for index in range(count):
            question, answer = arithmetic_question(rng)
            rows.append(make_row(TINY_DATA_SOURCE, question, answer, split, index, source_id=f"{split}-{index}",
                                 solution=f"The answer is \\boxed{{{answer}}}."))
        paths[split] = os.path.join(out_dir, f"{split}.parquet")
        pd.DataFrame(rows).to_parquet(paths[split], index=False)
    return paths


def build_all(out_dir: str, seed: int = 0) -> dict[str, str]:
    """Build tokenizer + model (``out_dir/model``) and data (``out_dir/data``); returns the paths."""
    model_dir = os.path.join(out_dir, "model")
    tokenizer = build_tokenizer(model_dir, seed=seed)
    build_model(model_dir, tokenizer, seed=seed)
    data = build_dataset(os.path.join(out_dir, "data"), seed=seed)
    return {"model": model_dir, "train": data["train"], "val": data["val"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to build into (created if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, path in build_all(args.out, seed=args.seed).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
