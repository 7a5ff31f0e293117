"""The toy cold start's SFT file: the cold-start builder's examples plus plain solution chats, and
chats that read a right solution given in the prompt.

    python -m recipe_tapo.toy.mix --cold-start DIR/cold_start/train.parquet --sft DIR/data/sft.parquet \\
        --solutions 600 --out DIR/cold_start/mixed.parquet [--privileged 1000] \\
        [--privileged-template pkg://recipe_tapo.conf/prompts/toy_opsd_privileged.txt] [--seed 0]

The builder (`python -m recipe_tapo.cold_start`) keeps only solutions the reward verifies correct
(rejection sampling). Trained on those alone, the toy policy would lose the natural slips that give
GRPO and TAPO something to fix, so the toy adds `--solutions` chats from the plain SFT file (the same
distribution as the base SFT, with its slips and reflections), drawn at random by seed. The builder's
synthesis examples (the exact prompt the trainer sends, the target from the programmatic teacher)
are all kept.

`--privileged` chats give the policy the habit OPSD's self-teacher needs (docs/method.md, "OPSD"): a
prompt in the OPSD arm's privileged form (the template filled with the problem and its right
solution, as `recipe_tapo.opsd` builds the teacher's prompt) answered with that solution. A
pretrained LLM reads a solution in its prompt unasked; the first toy's cold start never learnt to, so
its self-teacher was worse than the student. Problems come from the plain SFT file (never a held-out
split), drawn by seed.

Rows are shuffled; the `kind` column says where each came from (solution, synthesis, sft_solution,
privileged).
"""

from __future__ import annotations

import argparse
import json
import random

KIND_SFT = "sft_solution"
KIND_PRIVILEGED = "privileged"
OPSD_TEMPLATE = "pkg://recipe_tapo.conf/prompts/toy_opsd_privileged.txt"


def privileged_chat(prompt: list[dict], template: str) -> list[dict]:
    """`prompt` (a toy problem's chat) in the OPSD arm's privileged form, its right solution in the
    context, answered with that solution."""
    from recipe_tapo.opsd import privileged_messages
    from recipe_tapo.toy.task import parse_problem, write_solution

    problem = parse_problem(prompt[-1]["content"])
    if problem is None:
        raise ValueError(f"not a toy problem: {prompt[-1]['content']!r}")
    solution, _ = write_solution(problem, random.Random(0))  # no slips: the reference the toy rows carry
    return [*privileged_messages(prompt, solution, template), {"role": "assistant", "content": solution}]


def mix(cold_start: str, sft: str, solutions: int, out: str, seed: int = 0, privileged: int = 0,
        privileged_template: str = OPSD_TEMPLATE) -> dict:
    import pandas as pd

    from recipe_tapo.config import OPSD_TEMPLATE_PLACEHOLDERS, check_template_file

    built = pd.read_parquet(cold_start)
    plain = pd.read_parquet(sft)
    extra = plain.sample(n=min(solutions, len(plain)), random_state=seed)
    extra = pd.DataFrame({"messages": list(extra["messages"]), "kind": KIND_SFT, "data_source": "toy_chain",
                          "problem_id": [f"sft-{index}" for index in extra.index]})
    parts = [built[["messages", "kind", "data_source", "problem_id"]], extra]
    if privileged:
        template = check_template_file(privileged_template, "--privileged-template", OPSD_TEMPLATE_PLACEHOLDERS)
        drawn = plain.sample(n=min(privileged, len(plain)), random_state=seed + 1)
        parts.append(pd.DataFrame({
            "messages": [privileged_chat([dict(m) for m in messages if m["role"] != "assistant"], template)
                         for messages in drawn["messages"]],
            "kind": KIND_PRIVILEGED, "data_source": "toy_chain", "problem_id": [f"sft-{index}" for index in drawn.index]}))
    table = pd.concat(parts, ignore_index=True)
    table = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    table.to_parquet(out, index=False)
    return {"rows": len(table), "kinds": {str(k): int(v) for k, v in table["kind"].value_counts().items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold-start", required=True, help="train.parquet of python -m recipe_tapo.cold_start")
    parser.add_argument("--sft", required=True, help="sft.parquet of python -m recipe_tapo.toy.build")
    parser.add_argument("--solutions", type=int, required=True, help="plain solution chats to add")
    parser.add_argument("--out", required=True)
    parser.add_argument("--privileged", type=int, default=0,
                        help="chats answering a problem whose right solution the prompt gives, in the OPSD arm's form")
    parser.add_argument("--privileged-template", default=OPSD_TEMPLATE,
                        help="the privileged user turn ({{question}}, {{context}}): the OPSD arm's opsd.template_path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.solutions < 0 or args.privileged < 0:
        parser.error(f"--solutions and --privileged must be >= 0, got {args.solutions} and {args.privileged}")
    print(json.dumps(mix(args.cold_start, args.sft, args.solutions, args.out, args.seed, args.privileged,
                         args.privileged_template)))


if __name__ == "__main__":
    main()
