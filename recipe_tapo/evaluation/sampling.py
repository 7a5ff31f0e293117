"""Sample n responses per verl row and score them: the shared core of evaluation and the difficulty filter.

Rows are verl parquet rows (`prompt` chat list, `data_source`, `reward_model.ground_truth`,
`extra_info`). A malformed row is skipped with a reason and counted, never fatal: one bad row must
not lose a run.
"""

import os
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


@dataclass(frozen=True)
class SkippedRow:
    row_index: int
    problem_id: str
    reason: str


@dataclass
class SamplingOutcome:
    scored: list[ScoredRow] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows
    skipped_rows: list[SkippedRow] = field(default_factory=list)  # in input order
    # Responses kept, but flagged: reason -> responses (see `sample_and_score`).
    bad_responses: Counter = field(default_factory=Counter)

    def skip(self, row_index: int, row: dict, reason: str) -> None:
        self.skipped[reason] += 1
        self.skipped_rows.append(SkippedRow(row_index, problem_id_of(row, row_index), reason))


def load_table(path: str):
    """The parquet file at `path` as a DataFrame; a missing or unreadable file is a SystemExit
    naming it (evaluation and the difficulty filter stop with that message, not a traceback)."""
    import pandas as pd

    if not os.path.isfile(path):
        raise SystemExit(f"error: {path}: no such file")
    try:
        return pd.read_parquet(path)
    except Exception as error:  # noqa: BLE001  pyarrow raises several types for a bad file
        raise SystemExit(f"error: {path}: not a readable parquet file ({error})") from error


def load_rows(path: str) -> list[dict]:
    return load_table(path).to_dict(orient="records")


def is_valid_text(text: str) -> bool:
    """False for a string that is not valid Unicode text (e.g. a lone surrogate such as "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _messages(row: dict):
    if not isinstance(row, dict):
        return None
    prompt = row.get("prompt")
    messages = list(prompt) if prompt is not None and not isinstance(prompt, str) else None
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _ground_truth(row: dict) -> str | None:
    reward_model = row.get("reward_model") if isinstance(row, dict) else None
    truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
    return str(truth) if truth is not None and str(truth).strip() else None


def problem_id_of(row: dict, row_index: int) -> str:
    """The problem's id in its source (`extra_info.source_id`), else its index, else its row number."""
    extra = row.get("extra_info") if isinstance(row, dict) and isinstance(row.get("extra_info"), dict) else {}
    for key in ("source_id", "index"):
        if extra.get(key) is not None:
            return str(extra[key])
    return str(row_index)


def sample_and_score(rows: list[dict], tokenizer, generator: TextGenerator, settings: SamplingSettings,
                     max_prompt_tokens: int | None = None, reward_kwargs: dict | None = None,
                     chat_template_kwargs: dict | None = None) -> SamplingOutcome:
    """Generate `settings.n` responses for every valid row in one batch, then score each.

    Skip reasons: `malformed_prompt` (no chat list of role/content messages), `missing_ground_truth`,
    `prompt_too_long` (over `max_prompt_tokens`, never truncated); each skipped row is also listed
    in `skipped_rows`.

    Model text is untrusted and never stops the run: every response is kept and scored, and the bad
    ones are counted in `bad_responses`: `invalid_unicode` (not valid Unicode text, e.g. a lone
    surrogate; kept as is), `decode_error` (the ids could not be decoded; kept as "" and scored
    wrong), `score_error` (the reward raised; scored wrong).
    """
    from recipe_tapo.reward.math_reward import compute_score

    outcome = SamplingOutcome()
    valid, prompts = [], []
    for row_index, row in enumerate(rows):
        messages, truth = _messages(row), _ground_truth(row)
        if messages is None:
            outcome.skip(row_index, row, "malformed_prompt")
            continue
        if truth is None:
            outcome.skip(row_index, row, "missing_ground_truth")
            continue
        ids = chat_prompt_ids(tokenizer, messages, chat_template_kwargs)
        if max_prompt_tokens is not None and len(ids) > max_prompt_tokens:
            outcome.skip(row_index, row, "prompt_too_long")
            continue
        valid.append((row_index, row, truth))
        prompts.append(ids)

    samples = generator.generate(prompts, settings) if prompts else []
    start = time.monotonic()
    for done, ((row_index, row, truth), responses_ids) in enumerate(zip(valid, samples), start=1):
        data_source = str(row.get("data_source", ""))
        responses, verdicts = [], []
        for ids in responses_ids:
            try:
                response = tokenizer.decode(ids, skip_special_tokens=True)
            except Exception:  # noqa: BLE001 - ids from a model: any failure is one bad response
                outcome.bad_responses["decode_error"] += 1
                responses.append("")
                verdicts.append(False)
                continue
            if not is_valid_text(response):
                outcome.bad_responses["invalid_unicode"] += 1
            try:
                verdict = bool(compute_score(data_source, response, truth, row.get("extra_info"),
                                             **(reward_kwargs or {}))["acc"])
            except Exception:  # noqa: BLE001 - model text: any failure scores this response wrong
                outcome.bad_responses["score_error"] += 1
                verdict = False
            responses.append(response)
            verdicts.append(verdict)
        outcome.scored.append(ScoredRow(row_index, problem_id_of(row, row_index), data_source, responses, verdicts))
        if done % 100 == 0 or done == len(valid):
            print(f"[score] {done}/{len(valid)} problems, {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
    return outcome
