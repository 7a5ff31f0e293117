"""Sample n responses per verl row and score them: the shared core of evaluation and the difficulty filter.

Rows are verl parquet rows (`prompt` chat list, `data_source`, `reward_model.ground_truth`,
`extra_info`). A malformed row is skipped with a reason and counted, never fatal: one bad row must
not lose a run.
"""

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from recipe_tapo.generation import SamplingSettings, TextGenerator, chat_prompt_ids


@dataclass(frozen=True)
class ScoredRow:
    """The samples of one row; `correct[i]` is the reward's verdict on `responses[i]`."""

    row_index: int
    problem_id: str
    data_source: str
    responses: list[str]
    correct: list[bool]

    @property
    def num_correct(self) -> int:
        return sum(self.correct)


@dataclass
class SamplingOutcome:
    scored: list[ScoredRow] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows


def load_rows(path: str) -> list[dict]:
    import pandas as pd

    return pd.read_parquet(path).to_dict(orient="records")


def _messages(row: dict):
    prompt = row.get("prompt")
    messages = list(prompt) if prompt is not None and not isinstance(prompt, str) else None
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _ground_truth(row: dict) -> str | None:
    reward_model = row.get("reward_model")
    truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    return str(truth) if truth is not None and str(truth).strip() else None


def problem_id_of(row: dict, row_index: int) -> str:
    """The problem's id in its source (`extra_info.source_id`), else its index, else its row number."""
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    for key in ("source_id", "index"):
        if extra.get(key) is not None:
            return str(extra[key])
    return str(row_index)


def sample_and_score(rows: list[dict], tokenizer, generator: TextGenerator, settings: SamplingSettings,
                     max_prompt_tokens: int | None = None, reward_kwargs: dict | None = None) -> SamplingOutcome:
    """Generate `settings.n` responses for every valid row in one batch, then score each.

    Skip reasons: `malformed_prompt` (no chat list of role/content messages), `missing_ground_truth`,
    `prompt_too_long` (over `max_prompt_tokens`, never truncated).
    """
    from recipe_tapo.reward.math_reward import compute_score

    outcome = SamplingOutcome()
    valid, prompts = [], []
    for row_index, row in enumerate(rows):
        messages, truth = _messages(row), _ground_truth(row)
        if messages is None:
            outcome.skipped["malformed_prompt"] += 1
            continue
        if truth is None:
            outcome.skipped["missing_ground_truth"] += 1
            continue
        ids = chat_prompt_ids(tokenizer, messages)
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            outcome.skipped["prompt_too_long"] += 1
            continue
        valid.append((row_index, row, truth))
        prompts.append(ids)

    samples = generator.generate(prompts, settings) if prompts else []
    start = time.monotonic()
    for done, ((row_index, row, truth), responses_ids) in enumerate(zip(valid, samples), start=1):
        responses = [tokenizer.decode(ids, skip_special_tokens=True) for ids in responses_ids]
        data_source = str(row.get("data_source", ""))
        verdicts = [
            bool(compute_score(data_source, response, truth, row.get("extra_info"), **(reward_kwargs or {}))["acc"])
            for response in responses
        ]
        outcome.scored.append(ScoredRow(row_index, problem_id_of(row, row_index), data_source, responses, verdicts))
        if done % 100 == 0 or done == len(valid):
            print(f"[score] {done}/{len(valid)} problems, {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
    return outcome
