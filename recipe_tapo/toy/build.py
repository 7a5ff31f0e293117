"""Build the toy task's model and data, deterministically by seed.

    python -m recipe_tapo.toy.build --out DIR [--seed 0] [--train 4000] [--val 500] [--test 1000] \\
        [--sft 20000] [--error-rate 0.02] [--hard-error-rate 0.5] [--reflect-rate 0.5] [--min-terms 3] \\
        [--max-terms 5] [--two-digit-share 0.2] [--data-only]

writes into DIR:
- `model/`: a character-level tokenizer (byte-level BPE with no merges: one token per ASCII
  character; ChatML template, eos `<|im_end|>`) and a randomly initialised Qwen2 (0.6M: 4 layers, width 128);
- `data/{train,val,test}.parquet`: problems in the recipe's RL row layout (data source `toy_chain`),
  disjoint by problem text, drawn by `sample_problem` with `--min-terms`, `--max-terms` and
  `--two-digit-share` (the defaults are the shipped toy's task). The held-out splits are sized to
  separate arms (issue 16): 1000 test problems and 500 validation problems, the split every setting
  of the toy experiment is chosen on.
  The prompt is the bare problem: the recipe's instruction suffix would be 70 of a ~100-character
  prompt, pure cost for a character-level model that learns the `\\boxed{}` format from SFT anyway;
- `data/sft.parquet`: `messages` chats (prompt, then a step-per-line solution in which an easy step
  is wrong with probability `--error-rate` and a hard one (a carry, a borrow or a 2-digit term) with
  probability `--hard-error-rate`, and a wrong step is caught, with probability `--reflect-rate`,
  by a reflection line and the right value: `recipe_tapo.toy.task.write_solution`), for the plain
  SFT that gives the policy its starting skill and its natural mistakes (with `--data-only`: the RL splits alone, for a run from a trained
  checkpoint; the same seed and sizes give the same splits).
"""

from __future__ import annotations

import argparse
import os
import random

from recipe_tapo.data.rows import build_prompt, make_row
from recipe_tapo.tiny_assets import SPECIAL_TOKENS, build_model, build_tokenizer
from recipe_tapo.toy.task import DATA_SOURCE, sample_problem, write_solution

BYTE_ALPHABET = 256
MODEL_WIDTH, MODEL_LAYERS = 128, 4


def build_model_dir(out_dir: str, seed: int = 0) -> str:
    """Character-level tokenizer + random Qwen2 in `out_dir`; returns `out_dir`."""
    tokenizer = build_tokenizer(out_dir, vocab_size=len(SPECIAL_TOKENS) + BYTE_ALPHABET, seed=seed)
    build_model(out_dir, tokenizer, seed=seed, hidden_size=MODEL_WIDTH, num_layers=MODEL_LAYERS)
    return out_dir


def draw_rows(rng: random.Random, seen: set[str], split: str, count: int, difficulty: dict | None = None) -> list[dict]:
    """`count` RL rows of problems not in `seen` (which gains them), ids `{split}-{index}`."""
    rows = []
    while len(rows) < count:
        problem = sample_problem(rng, **(difficulty or {}))
        if problem.text in seen:
            continue
        seen.add(problem.text)
        # the right solution as the toy's reference (OPSD's privileged context); its own rng, so the
        # splits' draws stay as they were
        solution, _ = write_solution(problem, random.Random(0))
        index = len(rows)
        rows.append(make_row(DATA_SOURCE, problem.text, str(problem.answer), split, index, f"{split}-{index}",
                             suffix="", solution=solution))
    return rows


def build_data(out_dir: str, seed: int, train: int, val: int, test: int, sft: int, error_rate: float,
               reflect_rate: float = 0.0, difficulty: dict | None = None,
               hard_error_rate: float | None = None) -> dict[str, str]:
    """The RL splits (disjoint problems) and the SFT chats; returns the paths by name. `difficulty`:
    `sample_problem`'s keyword arguments (`min_terms`, `max_terms`, `two_digit_share`)."""
    import pandas as pd

    rng = random.Random(seed)
    seen: set[str] = set()
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split, count in (("test", test), ("val", val), ("train", train)):
        rows = draw_rows(rng, seen, split, count, difficulty)
        paths[split] = os.path.join(out_dir, f"{split}.parquet")
        pd.DataFrame(rows).to_parquet(paths[split], index=False)
    if not sft:
        return paths
    held_out = set(seen)
    chats = []
    while len(chats) < sft:
        problem = sample_problem(rng, **(difficulty or {}))
        if problem.text in held_out:
            continue
        solution, _ = write_solution(problem, rng, error_rate, reflect_rate, hard_error_rate)
        chats.append({"messages": [*build_prompt(problem.text, suffix=""), {"role": "assistant", "content": solution}]})
    paths["sft"] = os.path.join(out_dir, "sft.parquet")
    pd.DataFrame(chats).to_parquet(paths["sft"], index=False)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--sft", type=int, default=20000)
    parser.add_argument("--error-rate", type=float, default=0.02,
                        help="chance that an SFT solution's easy step (a units-digit fact) is wrong")
    parser.add_argument("--hard-error-rate", type=float, default=0.5,
                        help="chance that a hard step (a carry or borrow across a ten, or a 2-digit term) is wrong; "
                             "set it to --error-rate for one rate on every step")
    parser.add_argument("--reflect-rate", type=float, default=0.5,
                        help="chance that an SFT solution's slipped step is followed by a reflection and the right value")
    parser.add_argument("--min-terms", type=int, default=3)
    parser.add_argument("--max-terms", type=int, default=5)
    parser.add_argument("--two-digit-share", type=float, default=0.2, help="chance that a term has 2 digits (11-49)")
    parser.add_argument("--data-only", action="store_true", help="the RL splits only: no model, no SFT file")
    args = parser.parse_args(argv)
    if not 0.0 <= args.error_rate < 1.0:
        parser.error(f"--error-rate must be in [0, 1), got {args.error_rate}")
    if not 0.0 <= args.hard_error_rate < 1.0:
        parser.error(f"--hard-error-rate must be in [0, 1), got {args.hard_error_rate}")
    if not 0.0 <= args.reflect_rate <= 1.0 or not 0.0 <= args.two_digit_share <= 1.0:
        parser.error(f"--reflect-rate and --two-digit-share must be in [0, 1], got {args.reflect_rate} and {args.two_digit_share}")
    if not 2 <= args.min_terms <= args.max_terms:
        parser.error(f"--min-terms and --max-terms need 2 <= min <= max, got {args.min_terms} and {args.max_terms}")
    if not args.data_only:
        print(f"model: {build_model_dir(os.path.join(args.out, 'model'), args.seed)}")
    sft = 0 if args.data_only else args.sft
    difficulty = {"min_terms": args.min_terms, "max_terms": args.max_terms, "two_digit_share": args.two_digit_share}
    paths = build_data(os.path.join(args.out, "data"), args.seed, args.train, args.val, args.test, sft, args.error_rate,
                       args.reflect_rate, difficulty, args.hard_error_rate)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
