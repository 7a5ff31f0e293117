r"""Keep the training problems in the starting model's "zone of proximal development".

Each problem is answered K times by the starting model and scored by the math reward; problems
solved between `--min-correct` and `--max-correct` times are kept (paper: 1 to 7 of 8; about 16k of
DeepScaleR remain for its model).

    python -m recipe_tapo.data.difficulty_filter --model MODEL --input deepscaler_train.parquet \
        --output deepscaler_zpd.parquet [--k 8 --min-correct 1 --max-correct 7]

Writes the kept rows unchanged (same schema as the input) and, beside them, `<output>.counts.jsonl`
with one line per input problem, in input order: its correct count (so other bounds can be applied
later without sampling again), or, for a problem that was not sampled, `correct: null` and the
reason in `skipped`. With `--counts-from` a previous run's counts file for the same input takes the
place of sampling (no model is loaded): other bounds, or the same pool rebuilt on a fresh machine
from a committed counts file, without sampling again.
Generation uses vLLM on a GPU machine, an engine replica per GPU by default (`--data-parallel-size`),
and the recipe's hf engine on CPU (`--backend`).
"""

import argparse
import json
import sys
from collections import Counter

from recipe_tapo.evaluation.sampling import SamplingOutcome, load_table, problem_id_of, sample_and_score
from recipe_tapo.generation import add_generation_arguments, generator_from_args, settings_from_args
from recipe_tapo.textio import iter_json_lines, write_json_line


def count_records(outcome: SamplingOutcome) -> list[dict]:
    """One record per input problem, in input order: scored ones with their correct count, skipped
    ones with `correct: None` and their skip reason."""
    records = [(row.row_index, {"problem_id": row.problem_id, "row": row.row_index, "correct": row.num_correct,
                                "samples": len(row.correct), "skipped": None}) for row in outcome.scored]
    records += [(row.row_index, {"problem_id": row.problem_id, "row": row.row_index, "correct": None,
                                 "samples": 0, "skipped": row.reason}) for row in outcome.skipped_rows]
    return [record for _, record in sorted(records, key=lambda item: item[0])]


def read_counts(path: str, rows: list[dict], k: int) -> list[dict]:
    """A counts file written by this filter for exactly `rows` (one record per row, in order, the same
    problem ids, `k` samples per scored problem); anything else stops with the first mismatch named."""
    records = []
    for line in iter_json_lines(path):
        if not line.ok or not isinstance(line.value, dict) or "correct" not in line.value:
            raise SystemExit(f"--counts-from {path}: line {line.line_number} is not a counts record ({line.error or line.value!r:.80})")
        records.append(line.value)
    if len(records) != len(rows):
        raise SystemExit(f"--counts-from {path} has {len(records)} records, the input has {len(rows)} problems: "
                         "it was written for another input")
    for index, (record, row) in enumerate(zip(records, rows)):
        expected = problem_id_of(row, index)
        if record.get("row") != index or str(record.get("problem_id")) != expected:
            raise SystemExit(f"--counts-from {path}: record {index} is row {record.get('row')}, problem "
                             f"{record.get('problem_id')!r}; the input's row {index} is problem {expected!r}")
        correct = record["correct"]
        if correct is not None and (not isinstance(correct, int) or isinstance(correct, bool) or not 0 <= correct <= k):
            raise SystemExit(f"--counts-from {path}: problem {expected!r} has correct count {correct!r}, "
                             f"not a whole number from 0 to --k {k}")
        if correct is not None and record.get("samples") != k:
            raise SystemExit(f"--counts-from {path}: problem {expected!r} was sampled {record.get('samples')} times, "
                             f"not --k {k}")
    return records


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="the starting model (HF folder or id); not needed with --counts-from")
    parser.add_argument("--input", required=True, help="training parquet in verl's row format")
    parser.add_argument("--output", required=True)
    parser.add_argument("--k", type=int, default=8, help="samples per problem")
    parser.add_argument("--min-correct", type=int, default=1)
    parser.add_argument("--max-correct", type=int, default=7)
    parser.add_argument("--counts-from", help="a previous run's <output>.counts.jsonl for this input: apply the "
                                              "bounds to its counts instead of sampling")
    # Sample as the RL rollout does (temperature 1, no nucleus cut).
    add_generation_arguments(parser, temperature=1.0, top_p=1.0)
    args = parser.parse_args(argv)
    if not 0 <= args.min_correct <= args.max_correct <= args.k:
        parser.error(f"need 0 <= --min-correct <= --max-correct <= --k, got {args.min_correct}, "
                     f"{args.max_correct}, {args.k}")
    if args.model is None and args.counts_from is None:
        parser.error("--model is required (the model that samples each problem), unless --counts-from gives the counts")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    table = load_table(args.input).iloc[: args.limit]
    rows = table.to_dict(orient="records")
    if args.counts_from:
        records = read_counts(args.counts_from, rows, args.k)
        skipped, bad_responses = Counter(r["skipped"] for r in records if r["correct"] is None), {}
        print(f"[filter] {args.input}: {len(rows)} problems, counts from {args.counts_from}", file=sys.stderr)
    else:
        from transformers import AutoTokenizer

        print(f"[filter] {args.input}: {len(rows)} problems, {args.k} samples each", file=sys.stderr)
        outcome = sample_and_score(rows, AutoTokenizer.from_pretrained(args.model),
                                   generator_from_args(args.model, args), settings_from_args(args.k, args),
                                   max_prompt_tokens=args.max_prompt_tokens,
                                   chat_template_kwargs=args.chat_template_kwargs)
        records, skipped, bad_responses = count_records(outcome), outcome.skipped, outcome.bad_responses

    scored = [record for record in records if record["correct"] is not None]
    kept = [record["row"] for record in scored if args.min_correct <= record["correct"] <= args.max_correct]
    table.iloc[kept].to_parquet(args.output, index=False)
    with open(f"{args.output}.counts.jsonl", "w", encoding="utf-8") as counts_file:
        for record in records:
            write_json_line(counts_file, record)
    histogram = Counter(record["correct"] for record in scored)
    summary = {
        "problems": len(rows),
        "scored": len(scored),
        "kept": len(kept),
        "skipped": dict(skipped),
        "bad_responses": dict(bad_responses),
        "correct_count_histogram": {str(c): histogram[c] for c in range(args.k + 1)},
    }
    print(f"[filter] kept {len(kept)} of {len(rows)} ({args.min_correct}..{args.max_correct} of {args.k} correct); "
          f"{json.dumps(summary)}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
