"""The toy cold start's SFT file: the cold-start builder's examples plus plain solution chats.

    python -m recipe_tapo.toy.mix --cold-start DIR/cold_start/train.parquet --sft DIR/data/sft.parquet \\
        --solutions 600 --out DIR/cold_start/mixed.parquet [--seed 0]

The builder (`python -m recipe_tapo.cold_start`) keeps only solutions the reward verifies correct
(rejection sampling). Trained on those alone, the toy policy would lose the natural slips that give
GRPO and TAPO something to fix, so the toy adds `--solutions` chats from the plain SFT file (the same
distribution as the base SFT, 8% of steps wrong by default), drawn at random by seed. The builder's
synthesis examples (the exact prompt the trainer sends, the target from the programmatic teacher)
are all kept. Rows are shuffled; the `kind` column says where each came from (solution, synthesis,
sft_solution).
"""

from __future__ import annotations

import argparse
import json

KIND_SFT = "sft_solution"


def mix(cold_start: str, sft: str, solutions: int, out: str, seed: int = 0) -> dict:
    import pandas as pd

    built = pd.read_parquet(cold_start)
    plain = pd.read_parquet(sft)
    extra = plain.sample(n=min(solutions, len(plain)), random_state=seed)
    extra = pd.DataFrame({"messages": list(extra["messages"]), "kind": KIND_SFT, "data_source": "toy_chain",
                          "problem_id": [f"sft-{index}" for index in extra.index]})
    table = pd.concat([built[["messages", "kind", "data_source", "problem_id"]], extra], ignore_index=True)
    table = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    table.to_parquet(out, index=False)
    return {"rows": len(table), "kinds": {str(k): int(v) for k, v in table["kind"].value_counts().items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold-start", required=True, help="train.parquet of python -m recipe_tapo.cold_start")
    parser.add_argument("--sft", required=True, help="sft.parquet of python -m recipe_tapo.toy.build")
    parser.add_argument("--solutions", type=int, required=True, help="plain solution chats to add")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(mix(args.cold_start, args.sft, args.solutions, args.out, args.seed)))


if __name__ == "__main__":
    main()
