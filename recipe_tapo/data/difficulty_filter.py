r"""Keep the training problems in the starting model's "zone of proximal development".

Each problem is answered K times by the starting model and scored by the math reward; problems
solved between `--min-correct` and `--max-correct` times are kept (paper: 1 to 7 of 8; about 16k of
DeepScaleR remain for its model).

    python -m recipe_tapo.data.difficulty_filter --model MODEL --input deepscaler_train.parquet \
        --output deepscaler_zpd.parquet [--k 8 --min-correct 1 --max-correct 7]

Writes the kept rows unchanged (same schema as the input) and, beside them, `<output>.counts.jsonl`
with one line per input problem, in input order: its correct count (so other bounds can be applied
later without sampling again), or, for a problem that was not sampled, `correct: null` and the
reason in `skipped`.
Generation uses vLLM on a GPU machine, an engine replica per GPU by default (`--data-parallel-size`),
and the recipe's hf engine on CPU (`--backend`).
"""

import argparse
import json
import sys
from collections import Counter

from recipe_tapo.evaluation.sampling import SamplingOutcome, ScoredRow, load_table, sample_and_score
from recipe_tapo.generation import add_generation_arguments, generator_from_args, settings_from_args
from recipe_tapo.textio import write_json_line


def within_bounds(scored: list[ScoredRow], min_correct: int, max_correct: int) -> list[ScoredRow]:
    """The rows whose correct count lies in [min_correct, max_correct]."""
    return [row for row in scored if min_correct <= row.num_correct <= max_correct]


def count_records(outcome: SamplingOutcome) -> list[dict]:
    """One record per input problem, in input order: scored ones with their correct count, skipped
    ones with `correct: None` and their skip reason."""
    records = [(row.row_index, {"problem_id": row.problem_id, "row": row.row_index, "correct": row.num_correct,
                                "samples": len(row.correct), "skipped": None}) for row in outcome.scored]
    records += [(row.row_index, {"problem_id": row.problem_id, "row": row.row_index, "correct": None,
                                 "samples": 0, "skipped": row.reason}) for row in outcome.skipped_rows]
    return [record for _, record in sorted(records, key=lambda item: item[0])]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the starting model (HF folder or id)")
    parser.add_argument("--input", required=True, help="training parquet in verl's row format")
    parser.add_argument("--output", required=True)
    parser.add_argument("--k", type=int, default=8, help="samples per problem")
    parser.add_argument("--min-correct", type=int, default=1)
    parser.add_argument("--max-correct", type=int, default=7)
    # Sample as the RL rollout does (temperature 1, no nucleus cut).
    add_generation_arguments(parser, temperature=1.0, top_p=1.0)
    args = parser.parse_args(argv)
    if not 0 <= args.min_correct <= args.max_correct <= args.k:
        parser.error(f"need 0 <= --min-correct <= --max-correct <= --k, got {args.min_correct}, "
                     f"{args.max_correct}, {args.k}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    table = load_table(args.input).iloc[: args.limit]
    rows = table.to_dict(orient="records")
    print(f"[filter] {args.input}: {len(rows)} problems, {args.k} samples each", file=sys.stderr)
    outcome = sample_and_score(rows, AutoTokenizer.from_pretrained(args.model), generator_from_args(args.model, args),
                               settings_from_args(args.k, args), max_prompt_tokens=args.max_prompt_tokens,
                               chat_template_kwargs=args.chat_template_kwargs)

    kept = within_bounds(outcome.scored, args.min_correct, args.max_correct)
    table.iloc[[row.row_index for row in kept]].to_parquet(args.output, index=False)
    with open(f"{args.output}.counts.jsonl", "w", encoding="utf-8") as counts_file:
        for record in count_records(outcome):
            write_json_line(counts_file, record)
    histogram = Counter(row.num_correct for row in outcome.scored)
    summary = {
        "problems": len(rows),
        "scored": len(outcome.scored),
        "kept": len(kept),
        "skipped": dict(outcome.skipped),
        "bad_responses": dict(outcome.bad_responses),
        "correct_count_histogram": {str(c): histogram[c] for c in range(args.k + 1)},
    }
    print(f"[filter] kept {len(kept)} of {len(rows)} ({args.min_correct}..{args.max_correct} of {args.k} correct); "
          f"{json.dumps(summary)}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
