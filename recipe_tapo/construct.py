"""Build TAPO trajectories offline from saved synthesis outputs, for users and for inspection.

    python -m recipe_tapo.construct --tokenizer DIR --input IN.jsonl --output OUT.jsonl \\
        [--mode verbatim|anchor] [--prefix-end after_error|before_error] [--full-reconstruction] \\
        [--min-prefix-tokens N] [--min-prefix-fraction F] [--max-length N] [--line-boundary] \\
        [--final-answer-marker TEXT]

Each input line is a JSON object with the texts `wrong` (the wrong answer y-) and `synthesis` (the
model's raw synthesis output), optionally `prompt`, `right` (carried for the user's reference only),
`ground_truth` (then the trajectory is scored with `recipe_tapo.reward.math_reward`) and
`data_source`. Each output line answers the input line at the same position (blank lines are
skipped; a line that is not valid UTF-8 or not JSON gives an "invalid_row" record) with:

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
`status`. A bad row never stops the others (input is read as bytes and output written as ASCII
JSON through `recipe_tapo.textio`, so no byte and no string, lone surrogates included, can end the
run); the exit status is 0 unless the files or the tokenizer cannot be opened.
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Any

from recipe_tapo.config import PREFIX_ENDS, SYNTHESIS_MODES, SplicingConfig, SynthesisConfig, TapoConfig
from recipe_tapo.splicing import splice_trajectory
from recipe_tapo.synthesis import parse_synthesis_output
from recipe_tapo.textio import iter_json_lines, write_json_line

REQUIRED_TEXT_FIELDS = ("wrong", "synthesis")
OPTIONAL_TEXT_FIELDS = ("prompt", "right", "ground_truth", "data_source")
DEFAULT_DATA_SOURCE = "tapo_construct"


def construct_row(
    row: Any, tokenizer: Any, mode: str, config: SplicingConfig, prefix_end: str = "after_error"
) -> dict[str, Any]:
    """One output record for one decoded input line (see the module docstring); `prefix_end` is
    the reading the synthesis prompt asked for (`tapo.synthesis.prefix_end`)."""
    problem = _invalid_row_problem(row)
    if problem:
        return _record("invalid_row", error=problem)
    parsed = parse_synthesis_output(row["synthesis"], mode)
    if not parsed.ok:
        return _record(parsed.failure.value)
    wrong_ids = tokenizer.encode(row["wrong"], add_special_tokens=False)
    spliced = splice_trajectory(row["wrong"], wrong_ids, parsed, tokenizer, config, prefix_end=prefix_end)
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
        "--prefix-end",
        choices=PREFIX_ENDS,
        default="after_error",
        help="where the kept prefix ends, as the synthesis prompt asked (anchor mode: after the quoted step, "
        "or where it begins; default after_error)",
    )
    parser.add_argument(
        "--full-reconstruction",
        action="store_true",
        help="the paper's ablation: train the whole reconstruction, none of the wrong answer's ids (verbatim only)",
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
        "--reject-inside-line-departure",
        action="store_true",
        help="drop a construction whose copy leaves the wrong answer inside one of its lines (a rewritten step)",
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
            reject_inside_line_departure=args.reject_inside_line_departure,
            final_answer_marker=args.final_answer_marker,
            max_response_length=args.max_length,
            full_reconstruction=args.full_reconstruction,
        )
        # The same refusals as at training start-up (e.g. full reconstruction with anchor output).
        TapoConfig(synthesis=SynthesisConfig(mode=args.mode, prefix_end=args.prefix_end), splicing=config)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    counts: collections.Counter[str] = collections.Counter()
    with open(args.output, "w", encoding="utf-8") as sink:
        for line in iter_json_lines(args.input):
            if not line.ok:
                record = _record("invalid_row", error=line.error)
            else:
                try:
                    record = construct_row(line.value, tokenizer, args.mode, config, prefix_end=args.prefix_end)
                except Exception as error:  # noqa: BLE001  a bad row must not stop the others
                    record = _record("error", error=f"{type(error).__name__}: {error}")
            counts[record["status"]] += 1
            write_json_line(sink, record)
    print(" ".join(f"{status}={count}" for status, count in sorted(counts.items())) or "no rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
