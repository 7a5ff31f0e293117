"""Build TAPO trajectories offline from saved synthesis outputs, for users and for inspection.

    python -m recipe_tapo.construct --tokenizer DIR --input IN.jsonl --output OUT.jsonl \\
        [--mode verbatim|anchor] [--min-prefix-tokens N] [--min-prefix-fraction F] \\
        [--max-length N] [--line-boundary] [--final-answer-marker TEXT]

Each input line is a JSON object with the texts `wrong` (the wrong answer y-) and `synthesis` (the
model's raw synthesis output), optionally `prompt`, `right` (carried for the user's reference only),
`ground_truth` (then the trajectory is scored with `recipe_tapo.reward.math_reward`) and
`data_source`. Each output line answers the input line at the same position (blank lines are
skipped) with:

    status          "ok", or why not: a parse reason (missing_reconstruction, ...), a splice reason
                    (no_departure, prefix_too_short, ...), "invalid_row" or "error" (with `error`)
    trajectory      the constructed response text (EOS not included)
    token_ids       the trained response ids, EOS included ([] unless ok)
    cut_chars       how much of `wrong` is kept, in its characters ...
    cut_tokens      ... and in ids of tokenizer.encode(wrong, add_special_tokens=False)
    prefix_fraction cut_tokens / number of ids of `wrong`
    analysis        the model's <analysis> text
    reward, acc, pred   when `ground_truth` is given and status is ok (else null)

On a failed row the fields computed before the failing check are kept for inspection: filter on
`status`. A bad row never stops the others; the exit status is 0 unless the files or the tokenizer
cannot be opened.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from typing import Any

from recipe_tapo.config import SYNTHESIS_MODES, SplicingConfig
from recipe_tapo.splicing import splice_trajectory
from recipe_tapo.synthesis import parse_synthesis_output

REQUIRED_TEXT_FIELDS = ("wrong", "synthesis")
OPTIONAL_TEXT_FIELDS = ("prompt", "right", "ground_truth", "data_source")
DEFAULT_DATA_SOURCE = "tapo_construct"


def construct_row(row: Any, tokenizer: Any, mode: str, config: SplicingConfig) -> dict[str, Any]:
    """One output record for one decoded input line (see the module docstring)."""
    problem = _invalid_row_problem(row)
    if problem:
        return _record("invalid_row", error=problem)
    parsed = parse_synthesis_output(row["synthesis"], mode)
    if not parsed.ok:
        return _record(parsed.failure.value)
    wrong_ids = tokenizer.encode(row["wrong"], add_special_tokens=False)
    spliced = splice_trajectory(row["wrong"], wrong_ids, parsed, tokenizer, config)
    record = _record(
        spliced.failure.value if spliced.failure else "ok",
        trajectory=spliced.text,
        token_ids=list(spliced.token_ids) if spliced.ok else [],
        cut_chars=spliced.cut_chars,
        cut_tokens=spliced.cut_tokens,
        prefix_fraction=spliced.prefix_fraction,
        analysis=parsed.analysis,
    )
    if spliced.ok and row.get("ground_truth") is not None:
        record.update(_score(spliced.text, row["ground_truth"], row.get("data_source", DEFAULT_DATA_SOURCE)))
    return record


def _invalid_row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return f"a row must be a JSON object, got {type(row).__name__}"
    for name in REQUIRED_TEXT_FIELDS:
        if not isinstance(row.get(name), str):
            return f"field {name!r} must be a string"
    for name in OPTIONAL_TEXT_FIELDS:
        if row.get(name) is not None and not isinstance(row[name], str):
            return f"field {name!r} must be a string when given"
    return None


def _record(status: str, **fields: Any) -> dict[str, Any]:
    record = {
        "status": status,
        "trajectory": "",
        "token_ids": [],
        "cut_chars": 0,
        "cut_tokens": 0,
        "prefix_fraction": 0.0,
        "analysis": "",
        "reward": None,
        "acc": None,
        "pred": None,
    }
    record.update(fields)
    return record


def _score(trajectory: str, ground_truth: str, data_source: str) -> dict[str, Any]:
    # Imported here: the reward module starts verifier processes and is only needed with answers.
    from recipe_tapo.reward.math_reward import compute_score

    result = compute_score(data_source, trajectory, ground_truth)
    return {"reward": result["score"], "acc": result["acc"], "pred": result["pred"]}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SplicingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m recipe_tapo.construct",
        description="Build TAPO trajectories from saved synthesis outputs (one JSON object per line).",
    )
    parser.add_argument("--tokenizer", required=True, help="folder of the policy's HF tokenizer")
    parser.add_argument("--input", required=True, help="input .jsonl: wrong, synthesis[, prompt, right, ground_truth]")
    parser.add_argument("--output", required=True, help="output .jsonl, one record per input row, in order")
    parser.add_argument(
        "--mode", choices=SYNTHESIS_MODES, default="verbatim", help="synthesis format (default verbatim)"
    )
    parser.add_argument(
        "--min-prefix-tokens",
        type=int,
        default=defaults.min_prefix_tokens,
        help=f"shortest kept prefix of the wrong answer, in tokens (default {defaults.min_prefix_tokens})",
    )
    parser.add_argument(
        "--min-prefix-fraction",
        type=float,
        default=defaults.min_prefix_fraction,
        help="shortest kept prefix as a fraction of the wrong answer's tokens (default 0)",
    )
    parser.add_argument(
        "--max-length", type=int, default=None, help="longest response in tokens, EOS included (default: no limit)"
    )
    parser.add_argument(
        "--line-boundary", action="store_true", help="cut at the start of the line where the reconstruction departs"
    )
    parser.add_argument(
        "--final-answer-marker",
        default=defaults.final_answer_marker,
        help=f"text the continuation must contain (default {defaults.final_answer_marker!r}; '' disables)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        config = SplicingConfig(
            min_prefix_tokens=args.min_prefix_tokens,
            min_prefix_fraction=args.min_prefix_fraction,
            cut_at_line_boundary=args.line_boundary,
            final_answer_marker=args.final_answer_marker,
            max_response_length=args.max_length,
        )
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    counts: collections.Counter[str] = collections.Counter()
    with open(args.input, encoding="utf-8") as source, open(args.output, "w", encoding="utf-8") as sink:
        for line in source:
            if not line.strip():
                continue
            try:
                record = construct_row(json.loads(line), tokenizer, args.mode, config)
            except json.JSONDecodeError as error:
                record = _record("invalid_row", error=f"not JSON: {error}")
            except Exception as error:  # noqa: BLE001  a bad row must not stop the others
                record = _record("error", error=f"{type(error).__name__}: {error}")
            counts[record["status"]] += 1
            sink.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(" ".join(f"{status}={count}" for status, count in sorted(counts.items())) or "no rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
