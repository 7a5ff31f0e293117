"""CPU cost of TAPO's host-side work per construction, on one core.

    python -m recipe_tapo.benchmark [--tokenizer DIR] [--prompts 128] [--samples 8]
        [--wrong-tokens 3000] [--response-length 8192] [--mode verbatim] [--repeats 3]

A synthetic batch shaped like the paper's run: 128 prompts x 8 samples, wrong answers of
`--wrong-tokens` tokens, half of the groups in the DCS band, so 4 constructions per eligible group.
Timed per step: selection, parsing of every synthesis output, splicing (the wrong answer's rollout
ids are given, as in the trainer), and advantages (lambda x OTS token factor + the `tapo` estimator over the whole
batch). Building the synthesis prompts (`SynthesisPromptBuilder`: each pair's wrong answer from its
rollout ids, each right answer once per row, the budget counted in ids) is timed and printed apart.
The figure is the median over `--repeats` steps, in ms per construction.
Without `--tokenizer`, the recipe's tiny byte-level BPE tokenizer is built in a temporary folder; a
real model's tokenizer (e.g. Qwen3-8B's folder) gives the figure for a real run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recipe_tapo.advantage import compute_constructed_token_factor, compute_tapo_advantage, constructed_row_uid
from recipe_tapo.config import TapoConfig
from recipe_tapo.selection import select_candidate_pairs
from recipe_tapo.splicing import splice_trajectory
from recipe_tapo.synthesis import SynthesisPromptBuilder, parse_synthesis_output

QUESTION = "Let x be the sum of all products a * b over the table. What is x? Put the answer in \\boxed{}."


def pin_to_one_core() -> str:
    """Run this process (and the tokenizer's and torch's threads) on a single core."""
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "core pinning unavailable on this platform: torch threads = 1"


def _reasoning_text(tokenizer: Any, target_tokens: int, rng: random.Random, final: int) -> str:
    lines: list[str] = []
    step = 0
    while True:
        step += 1
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        lines.append(f"Step {step}: we multiply {a} * {b} = {a * b}, then add it to the running total.\n")
        if step % 16 == 0 and len(tokenizer.encode("".join(lines), add_special_tokens=False)) >= target_tokens:
            return "".join(lines) + f"So the answer is \\boxed{{{final}}}."


def _synthesis_output(wrong: str, tokenizer: Any, rng: random.Random, mode: str) -> str:
    lines = wrong.splitlines(keepends=True)
    error_line = rng.randint(len(lines) // 3, 4 * len(lines) // 5)
    correction = "Wait, that product is wrong; let me recompute it carefully.\n"
    continuation = _reasoning_text(tokenizer, 1000, rng, final=57)
    # The default reading (prefix_end=after_error): the erroneous step is kept, then reflected on.
    if mode == "anchor":
        anchor = lines[error_line].strip()
        blocks = f"<anchor>{anchor}</anchor>\n<reconstruction>\n{correction}{continuation}\n</reconstruction>"
    else:
        prefix = "".join(lines[: error_line + 1])
        blocks = f"<reconstruction>\n{prefix}{correction}{continuation}\n</reconstruction>"
    return f"<analysis>Step {error_line + 1} is wrong.</analysis>\n{blocks}"


def _timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.process_time()
    result = function()
    return result, time.process_time() - started


def run(tokenizer: Any, args: argparse.Namespace) -> None:
    rng = random.Random(0)
    config = TapoConfig.from_dict({"synthesis": {"mode": args.mode, "max_prompt_tokens": 10 * args.wrong_tokens}})
    rows = args.prompts * args.samples
    distinct_answers = 8  # texts are reused across rows; every row is still spliced on its own
    wrong_texts = [_reasoning_text(tokenizer, args.wrong_tokens, rng, final=55) for _ in range(distinct_answers)]
    wrong_ids = [tokenizer.encode(text, add_special_tokens=False) for text in wrong_texts]
    right_ids = tokenizer.encode(_reasoning_text(tokenizer, args.wrong_tokens // 2, rng, final=57), add_special_tokens=False)
    prompts = SynthesisPromptBuilder(tokenizer, config.synthesis)

    uids = np.array([f"prompt-{row // args.samples}" for row in range(rows)], dtype=object)
    correct = np.zeros(rows, dtype=bool)
    for group in range(args.prompts):
        # Half of the groups in the DCS band (2-4 correct of 8), half outside it.
        count = rng.choice([2, 3, 4]) if group % 2 == 0 else rng.choice([0, 1, 5, 6, 7, 8])
        correct[group * args.samples : group * args.samples + count] = True
    outputs = {text: _synthesis_output(text, tokenizer, rng, args.mode) for text in wrong_texts}

    mean_wrong_tokens = statistics.mean(map(len, wrong_ids))
    print(
        f"tokenizer: {type(tokenizer).__name__}, {len(tokenizer)} tokens; wrong answers: {mean_wrong_tokens:.0f} tokens"
    )
    print(f"batch: {args.prompts} prompts x {args.samples} samples; synthesis mode {args.mode}")
    stage_times: dict[str, list[float]] = {
        "selection": [],
        "parsing": [],
        "splicing": [],
        "advantage": [],
        "prompts": [],
    }
    constructions = 0
    for step in range(args.repeats):
        pairs, elapsed = _timed(lambda: select_candidate_pairs(uids, correct, config.selection, seed=step))
        stage_times["selection"].append(elapsed)
        constructions = len(pairs)
        texts = [wrong_texts[pair.wrong_row % distinct_answers] for pair in pairs]
        ids = [wrong_ids[pair.wrong_row % distinct_answers] for pair in pairs]

        def build_prompts() -> list:
            right = {pair.right_row: prompts.answer(right_ids) for pair in pairs}  # once per right row
            return [prompts.build(QUESTION, prompts.answer(own), right[pair.right_row]) for own, pair in zip(ids, pairs)]

        built, elapsed = _timed(build_prompts)
        if not all(prompt.ok for prompt in built):
            raise RuntimeError("synthetic prompts must all fit the budget")
        stage_times["prompts"].append(elapsed)
        parsed, elapsed = _timed(lambda: [parse_synthesis_output(outputs[text], args.mode) for text in texts])
        stage_times["parsing"].append(elapsed)
        spliced, elapsed = _timed(
            lambda: [
                splice_trajectory(text, own, result, tokenizer, config.splicing)
                for text, own, result in zip(texts, ids, parsed)
            ]
        )
        stage_times["splicing"].append(elapsed)
        failures = [result.failure for result in spliced if not result.ok]
        if failures:
            raise RuntimeError(f"synthetic constructions must all splice, got {failures[:3]}")

        total_rows = rows + len(pairs)
        generator = torch.Generator().manual_seed(step)
        rewards = torch.zeros(total_rows, args.response_length)
        rewards[:, -1] = torch.tensor(np.concatenate([correct, np.ones(len(pairs), dtype=bool)]), dtype=torch.float32)
        mask = torch.ones(total_rows, args.response_length)
        constructed_uids = [constructed_row_uid(pair.group_id, config.advantage) for pair in pairs]
        index = np.concatenate([uids, np.array(constructed_uids, dtype=object)])
        is_constructed = np.arange(total_rows) >= rows
        old_log_probs = -torch.rand(total_rows, args.response_length, generator=generator) * 3
        entropys = torch.rand(total_rows, args.response_length, generator=generator) * 2

        def advantages() -> torch.Tensor:
            factor = compute_constructed_token_factor(old_log_probs, entropys, mask, is_constructed, config)
            return compute_tapo_advantage(rewards, mask, index=index, tapo_config=config)[0] * factor

        _, elapsed = _timed(advantages)
        stage_times["advantage"].append(elapsed)

    medians = {stage: statistics.median(times) for stage, times in stage_times.items()}
    core = medians["selection"] + medians["parsing"] + medians["splicing"] + medians["advantage"]
    print(f"constructions per step: {constructions}")
    for stage in ("selection", "parsing", "splicing", "advantage"):
        per_step, per_construction = medians[stage] * 1e3, medians[stage] * 1e3 / constructions
        print(f"  {stage:<10} {per_step:9.1f} ms/step  {per_construction:7.3f} ms/construction")
    core_ms, prompts_ms = core * 1e3 / constructions, medians["prompts"] * 1e3 / constructions
    print(f"selection + parsing + splicing + advantage: {core_ms:.3f} ms CPU per construction (one core)")
    print(f"apart: synthesis prompt building with budget check: {prompts_ms:.3f} ms CPU per construction (one core)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recipe_tapo.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", help="HF tokenizer folder (default: build the tiny test tokenizer)")
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--wrong-tokens", type=int, default=3000, help="length of each wrong answer in tokens")
    parser.add_argument("--response-length", type=int, default=8192, help="padded response width of the batch")
    parser.add_argument("--mode", choices=["verbatim", "anchor"], default="verbatim")
    parser.add_argument("--repeats", type=int, default=3, help="steps timed; the median is reported")
    args = parser.parse_args(argv)
    # Before anything starts threads: affinity set now is inherited by every later thread.
    print(pin_to_one_core())
    from transformers import AutoTokenizer

    if args.tokenizer:
        run(AutoTokenizer.from_pretrained(args.tokenizer), args)
        return
    from recipe_tapo.tiny_assets import build_tokenizer

    with tempfile.TemporaryDirectory() as folder:
        build_tokenizer(folder)
        run(AutoTokenizer.from_pretrained(folder), args)


if __name__ == "__main__":
    main()
