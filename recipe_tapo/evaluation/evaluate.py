r"""Evaluate a checkpoint on benchmark files: Pass@1, Pass@k, DSR and ERR beside the paper's numbers.

    python -m recipe_tapo.evaluation.evaluate --model CKPT_HF_DIR \
        --data $DATA_DIR/aime2024.parquet $DATA_DIR/aime2025.parquet $DATA_DIR/hmmt2025.parquet \
        --n 16 --temperature 0.6 --top-p 0.95 --max-new-tokens 3072 --out-dir eval/

Writes `eval_results.json` and `eval_results.md` (metrics per benchmark, paper columns beside) and
`samples.jsonl` (every response with its verdict, whatever text the model wrote) into `--out-dir`. Generation uses vLLM on a GPU
machine, an engine replica per GPU by default (`--data-parallel-size`), and the recipe's hf engine on CPU (`--backend`). A benchmark is named by its rows'
`data_source`.
"""

import argparse
import os
import sys
from collections import defaultdict

from recipe_tapo.evaluation.metrics import ScoredSample, benchmark_metrics
from recipe_tapo.evaluation.report import build_report, render_markdown, write_report
from recipe_tapo.evaluation.sampling import load_rows, sample_and_score
from recipe_tapo.generation import add_generation_arguments, generator_from_args, settings_from_args
from recipe_tapo.textio import write_json_line


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="HF checkpoint folder (model and tokenizer)")
    parser.add_argument("--data", nargs="+", required=True, help="benchmark parquet files in verl's row format")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--n", type=int, default=16, help="samples per problem")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="Pass@k values")
    add_generation_arguments(parser, temperature=0.6, top_p=0.95)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from transformers import AutoTokenizer

    settings = settings_from_args(args.n, args)
    rows = []
    for path in args.data:
        file_rows = load_rows(path)[: args.limit]
        print(f"[evaluate] {path}: {len(file_rows)} problems", file=sys.stderr)
        rows.extend(file_rows)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    outcome = sample_and_score(rows, tokenizer, generator_from_args(args.model, args), settings,
                               max_prompt_tokens=args.max_prompt_tokens, chat_template_kwargs=args.chat_template_kwargs)
    for reason, count in sorted(outcome.skipped.items()):
        print(f"[evaluate] skipped {count} rows: {reason}", file=sys.stderr)
    for reason, count in sorted(outcome.bad_responses.items()):
        print(f"[evaluate] {count} responses kept but flagged: {reason}", file=sys.stderr)

    samples_by_benchmark = defaultdict(list)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "samples.jsonl"), "w", encoding="utf-8") as samples_file:
        for row in outcome.scored:
            for response, correct in zip(row.responses, row.correct):
                samples_by_benchmark[row.data_source].append(ScoredSample(row.problem_id, response, correct))
                # Model text may hold any string (a lone surrogate too): written escaped, read back exactly.
                write_json_line(samples_file, {"benchmark": row.data_source, "problem_id": row.problem_id,
                                               "correct": correct, "response": response})

    metrics = {name: benchmark_metrics(samples, ks=args.k) for name, samples in samples_by_benchmark.items()}
    report_settings = {**vars(settings), "backend": args.backend, "chat_template_kwargs": args.chat_template_kwargs,
                       "skipped_rows": dict(outcome.skipped), "bad_responses": dict(outcome.bad_responses)}
    report = build_report(metrics, model=args.model, settings=report_settings)
    json_path, markdown_path = write_report(report, args.out_dir)
    print(render_markdown(report))
    print(f"[evaluate] wrote {json_path} and {markdown_path}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
