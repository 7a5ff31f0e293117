r"""Cold-start SFT data from the model's own rollouts (docs/method.md, section 8).

    python -m recipe_tapo.cold_start --model MODEL --input deepscaler_train.parquet --output-dir DIR \
        [--k 8] [--num-solutions 30000] [--num-synthesis 15000] [--teacher MODEL] [hydra overrides...]

From K rollouts per training problem (offline generation: vLLM on GPUs, an engine replica per GPU
by default (`--data-parallel-size`), the recipe's hf engine on CPU) it builds two kinds of SFT example:

- **solution** examples: the model's own answers that the reward verifies correct (rejection
  sampling): messages = the problem's chat prompt + the answer;
- **synthesis** examples: the exact synthesis task the TAPO trainer sends during RL, answered well.
  The rollouts are put into verl's rollout layout (a `DataProto`, one `uid` per problem) and handed
  to the trainer's own augmentation worker (`recipe_tapo.workers.synthesis_round.TrajectoryAugmenter`):
  DCS picks (wrong, right) pairs, the synthesis prompt is built, the synthesizer writes
  `<analysis>`/`<reconstruction>` (the model itself by default, `--teacher MODEL` for a stronger
  one, `--synthesis-source CLASS` for a programmatic one), the output is parsed, spliced into the
  wrong answer's own tokens and scored. An attempt becomes an example (messages = the synthesis
  prompt, assistant = the synthesizer's raw output) only when it parsed, spliced and the spliced
  trajectory verifies correct.

The `tapo:` section and `data.*` (lengths, `apply_chat_template_kwargs` such as
`enable_thinking=false` for Qwen3) come from the trainer's own hydra config (`--config-name`,
default `tapo_trainer`) with the given overrides, so prompts match the RL run's exactly: pass the
same `tapo.*` and `data.*` overrides as the run script. Responses are up to `data.max_response_length`
tokens; `--max-prompt-tokens` defaults to `data.max_prompt_length`; rollouts sample as the RL rollout
(`--temperature 1 --top-p 1` by default).

Writes into `--output-dir`:
    train.parquet           the SFT data in verl's multi-turn format (`messages` column; also
                            `kind` = solution|synthesis, `data_source`, `problem_id`, and
                            `enable_thinking` when the chat kwargs set it)
    stats.json              parse, splice and verified rates, lengths, per-source counts
    synthesis_records.jsonl every synthesis attempt with its status (inspection)
Progress goes to stderr, one line per chunk of problems.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_REWARD = "recipe_tapo.reward.math_reward.compute_score"
KIND_SOLUTION = "solution"
KIND_SYNTHESIS = "synthesis"


class ColdStartInputError(ValueError):
    """A missing or unusable input file; the message names it."""


# ---------------------------------------------------------------------------------------------
# Inputs


def check_model_path(path: str, option: str) -> None:
    """A local model folder must hold a config.json; anything that is not a folder is taken as a hub id
    (refused when it looks like a path)."""
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ColdStartInputError(f"{option} {path}: the folder holds no config.json (not an HF model folder)")
        return
    # A hub id is "org/name"; anything else that is not a folder is a missing local path.
    if path.startswith(("/", ".", "~")) or path.count("/") != 1:
        raise ColdStartInputError(f"{option} {path}: no such model folder")


def load_problems(path: str, limit: int | None = None) -> list[dict]:
    """The rows of a training parquet in verl's RL format, or a ColdStartInputError naming the file."""
    if not os.path.isfile(path):
        raise ColdStartInputError(f"--input {path}: no such file (a training parquet in verl's row format)")
    import pandas as pd

    try:
        table = pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad input file
        raise ColdStartInputError(f"--input {path}: not a readable parquet file ({error})") from error
    missing = [column for column in ("prompt", "reward_model") if column not in table.columns]
    if missing:
        raise ColdStartInputError(
            f"--input {path}: missing column(s) {missing} (has {list(table.columns)}); "
            "expected verl's RL rows (prompt, reward_model.ground_truth, data_source)"
        )
    if len(table) == 0:
        raise ColdStartInputError(f"--input {path}: no rows")
    return table.iloc[:limit].to_dict(orient="records")


def _messages(row: dict) -> list[dict] | None:
    prompt = row.get("prompt")
    if prompt is None or isinstance(prompt, str):
        return None
    messages = list(prompt)
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        return None
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _ground_truth(row: dict) -> str | None:
    reward_model = row.get("reward_model")
    truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    return str(truth) if truth is not None and str(truth).strip() else None


def _plain(value: Any) -> Any:
    """numpy containers from parquet as plain Python (dicts of arrays -> dicts of lists)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Problem:
    row_index: int
    problem_id: str
    data_source: str
    messages: list[dict]
    ground_truth: str
    extra_info: dict
    prompt_ids: list[int]


def prepare_problems(rows: list[dict], tokenizer, chat_kwargs: dict, max_prompt_tokens: int, skipped: Counter):
    """Problems with their chat prompt ids (rendered as verl's rollout renders them), skipping and
    counting malformed rows and prompts over `max_prompt_tokens`."""
    problems = []
    for row_index, row in enumerate(rows):
        messages, truth = _messages(row), _ground_truth(row)
        if messages is None:
            skipped["malformed_prompt"] += 1
            continue
        if truth is None:
            skipped["missing_ground_truth"] += 1
            continue
        ids = chat_ids(tokenizer, messages, chat_kwargs)
        if len(ids) > max_prompt_tokens:
            skipped["prompt_too_long"] += 1
            continue
        extra = _plain(row.get("extra_info")) if isinstance(row.get("extra_info"), dict) else {}
        problem_id = next((str(extra[key]) for key in ("source_id", "index") if extra.get(key) is not None), None)
        problems.append(
            Problem(
                row_index=row_index,
                problem_id=problem_id if problem_id is not None else str(row_index),
                data_source=str(row.get("data_source", "")),
                messages=messages,
                ground_truth=truth,
                extra_info=extra,
                prompt_ids=ids,
            )
        )
    return problems


def chat_ids(tokenizer, messages: list[dict], chat_kwargs: dict) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **chat_kwargs)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


# ---------------------------------------------------------------------------------------------
# The trainer's config, composed as the RL run composes it


def compose_run_config(config_name: str, overrides: list[str], model: str):
    """The trainer's hydra config (`recipe_tapo.conf/<config_name>`) with `overrides`, the model path
    set to `model`; checked by the trainer's own start-up check (synthesis budgets vs context)."""
    from hydra import compose, initialize_config_module

    from recipe_tapo.run_config import check_tapo_run_config

    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        config = compose(config_name=config_name, overrides=[*overrides, f"actor_rollout_ref.model.path={model}"])
    check_tapo_run_config(config)
    return config


# ---------------------------------------------------------------------------------------------
# Synthesis text sources


class GeneratorTextSource:
    """The synthesis writer as an offline generator (`recipe_tapo.generation`): the model itself, or a
    teacher. Same interface as the trainer's text sources: (requests, timeout_s) -> GeneratedText|None.

    With its own tokenizer (a teacher's), the request's chat messages are rendered with it; else the
    request's prompt ids (rendered by the policy's tokenizer, exactly as the trainer sends them) go as
    they are. Output text is decoded without special tokens, as the trainer's source decodes it.
    """

    def __init__(self, generator, tokenizer, settings, chat_kwargs: dict | None = None, render_messages: bool = False):
        self.generator = generator
        self.tokenizer = tokenizer
        self.settings = settings
        self.chat_kwargs = dict(chat_kwargs or {})
        self.render_messages = render_messages

    def __call__(self, requests, timeout_s):
        from recipe_tapo.workers.synthesis_plan import GeneratedText

        prompts = [
            chat_ids(self.tokenizer, request.messages, self.chat_kwargs) if self.render_messages else request.prompt_ids
            for request in requests
        ]
        outputs = self.generator.generate(prompts, self.settings)
        results = []
        for samples in outputs:
            ids = list(samples[0])
            try:
                text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            except Exception:  # noqa: BLE001 - ids from a model: a failed request, not a failed build
                results.append(None)
                continue
            results.append(GeneratedText(text=text, num_tokens=len(ids)))
        return results


class RecordingTextSource:
    """Wraps a text source and keeps each request's synthesis prompt (`SynthesisRequest.messages`)
    and prompt length, by attempt, so the SFT example is exactly what the trainer would send."""

    def __init__(self, inner):
        self.inner = inner
        self.messages: dict[int, list[dict]] = {}
        self.prompt_tokens: dict[int, int] = {}

    def reset(self) -> None:
        self.messages.clear()
        self.prompt_tokens.clear()

    def __call__(self, requests, timeout_s):
        for request in requests:
            self.messages[request.attempt] = [dict(message) for message in request.messages]
            self.prompt_tokens[request.attempt] = len(request.prompt_ids)
        return self.inner(requests, timeout_s)


# ---------------------------------------------------------------------------------------------
# Rollouts in verl's layout, and the reward on rows


def rollout_batch(problems: list[Problem], samples: list[list[list[int]]], tokenizer, response_length: int,
                  eos_ids: list[int], acc: list[list[bool]], rewards: list[list[float]], uid_prefix: str):
    """The offline generations as verl holds rollouts after the agent loop: left-padded prompts,
    right-padded responses (EOS kept), response mask, reward at the last response token
    (`rm_scores`), the reward's `acc`, and one `uid` per problem (its K rows consecutive)."""
    import torch
    from verl import DataProto
    from verl.utils.model import compute_position_id_with_mask

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    prompt_width = max(len(problem.prompt_ids) for problem in problems)
    prompts, prompt_masks, responses, response_masks = [], [], [], []
    uids, raw, data_sources, reward_models, extra_infos, accs, scores = [], [], [], [], [], [], []
    for index, (problem, outputs) in enumerate(zip(problems, samples, strict=True)):
        for sample, (ids, is_correct, reward) in enumerate(zip(outputs, acc[index], rewards[index], strict=True)):
            ids = list(ids)[:response_length]
            if not ids:  # an empty generation: a lone EOS, as a rollout that stopped at once
                ids = [eos_ids[0]]
            padding = prompt_width - len(problem.prompt_ids)
            prompts.append([pad] * padding + problem.prompt_ids)
            prompt_masks.append([0] * padding + [1] * len(problem.prompt_ids))
            responses.append(ids + [pad] * (response_length - len(ids)))
            response_masks.append([1] * len(ids) + [0] * (response_length - len(ids)))
            uids.append(f"{uid_prefix}-{problem.problem_id}-{problem.row_index}")
            raw.append(problem.messages)
            data_sources.append(problem.data_source)
            reward_models.append({"style": "rule", "ground_truth": problem.ground_truth})
            extra_infos.append(problem.extra_info)
            accs.append(bool(is_correct))
            scores.append(float(reward))
    prompts_t, responses_t = torch.tensor(prompts), torch.tensor(responses)
    response_mask = torch.tensor(response_masks)
    attention = torch.cat([torch.tensor(prompt_masks), response_mask], dim=1)
    rm_scores = torch.zeros(len(scores), response_length)
    rm_scores[torch.arange(len(scores)), response_mask.sum(-1) - 1] = torch.tensor(scores)
    raw_prompts = np.empty(len(raw), dtype=object)
    raw_prompts[:] = raw
    return DataProto.from_dict(
        tensors={
            "prompts": prompts_t,
            "responses": responses_t,
            "response_mask": response_mask,
            "input_ids": torch.cat([prompts_t, responses_t], dim=1),
            "attention_mask": attention,
            "position_ids": compute_position_id_with_mask(attention),
            "rm_scores": rm_scores,
        },
        non_tensors={
            "uid": np.array(uids, dtype=object),
            "raw_prompt": raw_prompts,
            "data_source": np.array(data_sources, dtype=object),
            "reward_model": np.array(reward_models, dtype=object),
            "extra_info": np.array(extra_infos, dtype=object),
            "acc": np.array(accs, dtype=bool),
        },
        meta_info={"reward_extra_keys": ["acc"]},
    )


def load_reward(name: str):
    """A reward function in verl's custom-reward signature, by dotted name (module.function)."""
    import importlib

    module_name, _, function = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as error:
        raise ColdStartInputError(f"--reward-fn {name}: cannot import it ({error})") from error


def score_text(reward_fn, data_source: str, text: str, ground_truth: str, extra_info: dict) -> tuple[float, bool]:
    """The reward's (score, acc) for one response; a reward error scores it wrong."""
    try:
        result = reward_fn(data_source, text, ground_truth, extra_info)
    except Exception:  # noqa: BLE001 - model text: any failure scores this response wrong
        return 0.0, False
    if isinstance(result, dict):
        score = float(result.get("score", 0.0))
        return score, bool(result.get("acc", score > 0))
    return float(result), float(result) > 0


def make_score_fn(reward_fn, tokenizer, eos_ids: list[int]):
    """The augmenter's `score_fn`: the reward on rows in the batch layout, as
    (rm_scores (n, R) with the reward at the last response token, {"acc": array})."""
    import torch

    from recipe_tapo.workers.synthesis_plan import response_ids

    def score(rows):
        width = rows.batch["responses"].shape[1]
        rm_scores = torch.zeros(len(rows), width)
        accs = []
        for row in range(len(rows)):
            ids = response_ids(rows, row, eos_ids)
            text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            truth = rows.non_tensor_batch["reward_model"][row]["ground_truth"]
            extra = rows.non_tensor_batch["extra_info"][row] if "extra_info" in rows.non_tensor_batch else None
            value, is_correct = score_text(reward_fn, str(rows.non_tensor_batch["data_source"][row]), text, truth, extra)
            rm_scores[row, max(int(rows.batch["response_mask"][row].sum()) - 1, 0)] = value
            accs.append(is_correct)
        return rm_scores, {"acc": np.array(accs, dtype=bool)}

    return score


# ---------------------------------------------------------------------------------------------
# The build


@dataclass
class BuildState:
    solutions: list[dict] = field(default_factory=list)
    synthesis: list[dict] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    rollouts: int = 0
    rollouts_correct: int = 0
    rollouts_finished: int = 0
    groups: int = 0
    mixed_groups: int = 0
    eligible_groups: int = 0
    requests: int = 0
    answered: int = 0
    parsed: int = 0
    spliced: int = 0
    verified: int = 0
    synthesis_prompt_tokens: list[int] = field(default_factory=list)
    synthesis_output_tokens: list[int] = field(default_factory=list)


def _length_stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    array = np.asarray(values, dtype=float)
    return {"count": len(values), "mean": float(array.mean()), "p50": float(np.percentile(array, 50)),
            "p95": float(np.percentile(array, 95)), "max": float(array.max())}


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def build(args, config, out) -> dict:
    """Generate, score, select and synthesise chunk by chunk; write the outputs; return the stats."""
    from transformers import AutoTokenizer
    from verl.utils.import_utils import load_class_from_fqn

    from recipe_tapo.config import TapoConfig
    from recipe_tapo.generation import SamplingSettings, engine_options_from_args, make_generator
    from recipe_tapo.textio import write_json_line
    from recipe_tapo.trainer import chat_template_kwargs, eos_token_ids
    from recipe_tapo.workers.synthesis_plan import OK
    from recipe_tapo.workers.synthesis_round import TrajectoryAugmenter

    tapo = TapoConfig.from_omegaconf(config.tapo)
    chat_kwargs = chat_template_kwargs(config)
    response_length = int(config.data.max_response_length)
    max_prompt_tokens = args.max_prompt_tokens or int(config.data.max_prompt_length)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    eos_ids = eos_token_ids(tokenizer, args.model)
    reward_fn = load_reward(args.reward_fn)
    state = BuildState()

    rows = load_problems(args.input, args.limit)
    problems = prepare_problems(rows, tokenizer, chat_kwargs, max_prompt_tokens, state.skipped)
    if not problems:
        raise ColdStartInputError(f"--input {args.input}: no usable problem ({dict(state.skipped)})")
    print(f"[cold-start] {args.input}: {len(problems)} problems ({len(rows) - len(problems)} skipped: "
          f"{dict(state.skipped)}), {args.k} rollouts each, responses up to {response_length} tokens",
          file=sys.stderr, flush=True)

    engine_options = engine_options_from_args(args)
    policy = make_generator(args.model, args.backend, **engine_options)
    synthesis_settings = SamplingSettings(n=1, temperature=tapo.synthesis.temperature, top_p=tapo.synthesis.top_p,
                                          max_new_tokens=tapo.synthesis.max_new_tokens, seed=args.seed)
    if args.synthesis_source:
        inner = load_class_from_fqn(args.synthesis_source, "synthesis text source")(config, tokenizer)
    elif args.teacher:
        inner = GeneratorTextSource(make_generator(args.teacher, args.backend, **engine_options),
                                    AutoTokenizer.from_pretrained(args.teacher), synthesis_settings, chat_kwargs,
                                    render_messages=True)
    else:
        inner = GeneratorTextSource(policy, tokenizer, synthesis_settings)
    text_source = RecordingTextSource(inner)
    augmenter = TrajectoryAugmenter(tapo, tokenizer, response_length=response_length, eos_token_ids=eos_ids,
                                    text_source=text_source, score_fn=make_score_fn(reward_fn, tokenizer, eos_ids),
                                    chat_template_kwargs=chat_kwargs)

    started = time.monotonic()
    records_path = os.path.join(out, "synthesis_records.jsonl")
    with open(records_path, "w", encoding="utf-8") as records_file:
        for chunk_index, begin in enumerate(range(0, len(problems), args.chunk_size)):
            chunk = problems[begin: begin + args.chunk_size]
            settings = SamplingSettings(n=args.k, temperature=args.temperature, top_p=args.top_p,
                                        max_new_tokens=response_length, seed=args.seed + chunk_index)
            samples = policy.generate([problem.prompt_ids for problem in chunk], settings)
            acc, rewards = _score_chunk(chunk, samples, tokenizer, eos_ids, reward_fn, state)
            batch = rollout_batch(chunk, samples, tokenizer, response_length, eos_ids, acc, rewards,
                                  uid_prefix=f"c{chunk_index}")
            text_source.reset()
            augmentation = augmenter.augment(batch, step=chunk_index)
            _collect_synthesis(augmentation, text_source, chunk, state, records_file, write_json_line, OK)
            metrics = augmentation.metrics
            state.groups += int(metrics["tapo/groups"])
            state.mixed_groups += int(metrics["tapo/mixed_groups"])
            state.eligible_groups += int(metrics["tapo/eligible_groups"])
            done = begin + len(chunk)
            print(f"[cold-start] {done}/{len(problems)} problems, {time.monotonic() - started:.1f}s: "
                  f"{len(state.solutions)} verified solutions, {state.requests} synthesis requests, "
                  f"{state.verified} verified syntheses", file=sys.stderr, flush=True)

    solutions = _pick_solutions(state.solutions, args.num_solutions, args.solutions_per_problem, args.seed)
    syntheses = _pick(state.synthesis, args.num_synthesis, args.seed + 1)
    examples = solutions + syntheses
    random.Random(args.seed + 2).shuffle(examples)
    train_path = os.path.join(out, "train.parquet")
    write_examples(examples, train_path, chat_kwargs)
    stats = _stats(args, state, solutions, syntheses, tokenizer, chat_kwargs, time.monotonic() - started)
    stats["outputs"] = {"train": train_path, "records": records_path}
    with open(os.path.join(out, "stats.json"), "w", encoding="utf-8") as stats_file:
        json.dump(stats, stats_file, indent=2, sort_keys=True)
    return stats


def _score_chunk(chunk, samples, tokenizer, eos_ids, reward_fn, state):
    acc, rewards = [], []
    for problem, outputs in zip(chunk, samples, strict=True):
        problem_acc, problem_rewards = [], []
        for ids in outputs:
            ids = list(ids)
            finished = bool(ids) and ids[-1] in eos_ids
            body = ids[:-1] if finished else ids
            try:
                text = tokenizer.decode(body, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            except Exception:  # noqa: BLE001 - undecodable model ids score wrong
                text, finished = "", False
            reward, is_correct = score_text(reward_fn, problem.data_source, text, problem.ground_truth,
                                            problem.extra_info)
            state.rollouts += 1
            state.rollouts_correct += int(is_correct)
            state.rollouts_finished += int(finished)
            # Rejection sampling: a verified-correct answer that ended by itself (not cut at the length).
            if is_correct and finished:
                state.solutions.append({
                    "kind": KIND_SOLUTION,
                    "messages": [*problem.messages, {"role": "assistant", "content": text}],
                    "data_source": problem.data_source,
                    "problem_id": problem.problem_id,
                    "response_tokens": len(body),
                })
            problem_acc.append(is_correct)
            problem_rewards.append(reward)
        acc.append(problem_acc)
        rewards.append(problem_rewards)
    return acc, rewards


def _collect_synthesis(augmentation, text_source, chunk, state, records_file, write_json_line, ok_status):
    uid_to_problem = {f"{problem.problem_id}-{problem.row_index}": problem for problem in chunk}
    for attempt, record in enumerate(augmentation.records):
        state.statuses[record["status"]] += 1
        requested = attempt in text_source.messages
        if requested:
            state.requests += 1
            state.synthesis_prompt_tokens.append(text_source.prompt_tokens[attempt])
        if record["synthesis"] is not None:
            state.answered += 1
            state.synthesis_output_tokens.append(int(record["synthesis_tokens"]))
        if record["analysis"] is not None:
            state.parsed += 1
        if record["token_ids"] is not None:
            state.spliced += 1
        problem = uid_to_problem.get(record["uid"].split("-", 1)[1])
        verified = record["status"] == ok_status and bool(record["acc"]) and requested
        if verified:
            state.verified += 1
            state.synthesis.append({
                "kind": KIND_SYNTHESIS,
                "messages": [*text_source.messages[attempt], {"role": "assistant", "content": record["synthesis"]}],
                "data_source": problem.data_source if problem else "",
                "problem_id": problem.problem_id if problem else record["uid"],
                "response_tokens": int(record["synthesis_tokens"]),
            })
        write_json_line(records_file, {
            key: record[key] for key in ("step", "uid", "status", "wrong_row", "right_row", "question", "wrong",
                                         "right", "synthesis", "analysis", "cut_tokens", "prefix_fraction",
                                         "trajectory", "reward", "acc", "synthesis_tokens")
        } | {"kept": verified})


def _pick(examples: list[dict], limit: int, seed: int) -> list[dict]:
    chosen = list(examples)
    random.Random(seed).shuffle(chosen)
    return chosen[:limit]


def _pick_solutions(examples: list[dict], limit: int, per_problem: int, seed: int) -> list[dict]:
    """At most `per_problem` verified answers per problem, spread over as many problems as possible."""
    by_problem = defaultdict(list)
    for example in examples:
        by_problem[(example["data_source"], example["problem_id"])].append(example)
    rng = random.Random(seed)
    keys = sorted(by_problem)
    rng.shuffle(keys)
    for key in keys:
        rng.shuffle(by_problem[key])
    chosen = []
    for round_index in range(per_problem):  # round-robin: one answer of every problem before a second
        for key in keys:
            if len(chosen) >= limit:
                return chosen
            if round_index < len(by_problem[key]):
                chosen.append(by_problem[key][round_index])
    return chosen


def write_examples(examples: list[dict], path: str, chat_kwargs: dict) -> None:
    """The SFT parquet verl's `MultiTurnSFTDataset` reads (`messages`: list of {role, content})."""
    import pandas as pd

    table = pd.DataFrame({
        "messages": [example["messages"] for example in examples],
        "kind": [example["kind"] for example in examples],
        "data_source": [example["data_source"] for example in examples],
        "problem_id": [example["problem_id"] for example in examples],
    })
    if "enable_thinking" in chat_kwargs:  # the dataset renders each row with its own enable_thinking
        table["enable_thinking"] = bool(chat_kwargs["enable_thinking"])
    table.to_parquet(path, index=False)


def _stats(args, state: BuildState, solutions, syntheses, tokenizer, chat_kwargs, seconds) -> dict:
    def example_tokens(example):
        ids = tokenizer.apply_chat_template(example["messages"], tokenize=True, **chat_kwargs)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    per_source: dict[str, Counter] = defaultdict(Counter)
    for example in solutions + syntheses:
        per_source[example["data_source"]][example["kind"]] += 1
    return {
        "model": args.model,
        "synthesizer": args.synthesis_source or args.teacher or args.model,
        "input": args.input,
        "k": args.k,
        "seconds": seconds,
        "problems_skipped": dict(state.skipped),
        "rollouts": state.rollouts,
        "rollout_acc": _rate(state.rollouts_correct, state.rollouts),
        "rollouts_finished": state.rollouts_finished,
        "groups": state.groups,
        "mixed_groups": state.mixed_groups,
        "eligible_groups": state.eligible_groups,
        "verified_solutions_available": len(state.solutions),
        "synthesis_requests": state.requests,
        "synthesis_answered": state.answered,
        # As the trainer's tapo/ metrics: parsed of answered, spliced of parsed, verified of spliced.
        "parse_rate": _rate(state.parsed, state.answered),
        "splice_rate": _rate(state.spliced, state.parsed),
        "verified_rate": _rate(state.verified, state.spliced),
        "synthesis_statuses": dict(state.statuses),
        "examples": {KIND_SOLUTION: len(solutions), KIND_SYNTHESIS: len(syntheses)},
        "requested": {KIND_SOLUTION: args.num_solutions, KIND_SYNTHESIS: args.num_synthesis},
        "per_source": {source: dict(counts) for source, counts in sorted(per_source.items())},
        "lengths": {
            "solution_response_tokens": _length_stats([example["response_tokens"] for example in solutions]),
            "synthesis_output_tokens": _length_stats([example["response_tokens"] for example in syntheses]),
            "synthesis_prompt_tokens": _length_stats(state.synthesis_prompt_tokens),
            "example_tokens": _length_stats([example_tokens(example) for example in solutions + syntheses]),
        },
    }


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    from recipe_tapo.generation import add_generation_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the starting model (HF folder or hub id): rollouts")
    parser.add_argument("--input", required=True, help="training parquet in verl's RL row format (e.g. DeepScaleR)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--k", type=int, default=8, help="rollouts per problem (the RL group size)")
    parser.add_argument("--num-solutions", type=int, default=30000, help="solution examples (paper: 30k)")
    parser.add_argument("--num-synthesis", type=int, default=15000, help="synthesis-task examples (paper: 15k)")
    parser.add_argument("--solutions-per-problem", type=int, default=2,
                        help="most verified answers kept per problem (spread over problems first)")
    parser.add_argument("--teacher", default=None, help="a stronger model writes the synthesis outputs")
    parser.add_argument("--synthesis-source", default=None,
                        help="dotted class name, as tapo.synthesis.text_source: cls(config, tokenizer)(requests, "
                             "timeout_s) (tests: a scripted synthesizer)")
    parser.add_argument("--reward-fn", default=DEFAULT_REWARD, help="dotted reward function (verl's signature)")
    parser.add_argument("--config-name", default="tapo_trainer", help="the trainer's hydra config")
    parser.add_argument("--chunk-size", type=int, default=1024, help="problems per generation round (progress)")
    # Rollout sampling as the RL rollout (temperature 1, top-p 1); --max-prompt-tokens unset means
    # data.max_prompt_length. The response length and chat kwargs come from the trainer config (data.*),
    # so the shared --max-new-tokens and --chat-template-kwargs are left out.
    add_generation_arguments(parser, temperature=1.0, top_p=1.0, omit=("--max-new-tokens", "--chat-template-kwargs"))
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the trainer config (tapo.*, data.*)")
    args = parser.parse_args(argv)
    for name in ("k", "chunk_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("num_solutions", "num_synthesis", "solutions_per_problem"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        check_model_path(args.model, "--model")
        if args.teacher:
            check_model_path(args.teacher, "--teacher")
        load_problems(args.input, 1)  # fail fast, before any model loads
        config = compose_run_config(args.config_name, args.overrides, args.model)
        os.makedirs(args.output_dir, exist_ok=True)
        stats = build(args, config, args.output_dir)
    except ColdStartInputError as error:
        print(f"[cold-start] ERROR: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    summary = {key: stats[key] for key in ("examples", "parse_rate", "splice_rate", "verified_rate",
                                           "synthesis_requests", "rollout_acc")}
    print(f"[cold-start] wrote {stats['outputs']['train']}: {json.dumps(summary)}", file=sys.stderr)
    print(json.dumps(stats, indent=2, sort_keys=True))
    return stats


if __name__ == "__main__":
    main()
