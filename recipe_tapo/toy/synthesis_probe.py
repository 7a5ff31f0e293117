"""How well a toy policy follows the synthesis format, whatever its own accuracy.

    python -m recipe_tapo.toy.synthesis_probe --model HF_DIR --data DIR/data/val.parquet \\
        --template config/prompts/toy_synthesis_anchor.txt [--count 48] [--seed 0]

The trainer only asks for a synthesis where the policy's own group holds a right and a wrong answer,
so a policy that solves nothing is never asked. This probe asks anyway: for each of the first
`--count` problems it writes a wrong answer (steps slipped at random until the answer is wrong, as
the toy's SFT data slips them) and a right one, builds the RL run's synthesis prompt (anchor mode,
the given template, the toy profile's budgets), samples one output at temperature 1 and parses it.
Prints one JSON line: prompts, parsed, parse_rate and the first output.
"""

from __future__ import annotations

import argparse
import json
import random


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="toy rows (recipe_tapo.toy.build), e.g. val.parquet")
    parser.add_argument("--template", required=True, help="the anchor-mode template the RL runs use")
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pandas as pd
    from transformers import AutoTokenizer

    from recipe_tapo.config import TapoConfig
    from recipe_tapo.data.rows import build_prompt
    from recipe_tapo.generation import HFGenerator, SamplingSettings, chat_prompt_ids
    from recipe_tapo.synthesis import build_synthesis_prompt, parse_synthesis_output
    from recipe_tapo.toy.task import first_wrong_step, parse_problem, write_solution

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    config = TapoConfig.from_dict({"synthesis": {"mode": "anchor", "max_prompt_tokens": 768,
                                                 "min_right_answer_tokens": 64,
                                                 "template_path": args.template}}).synthesis
    rng = random.Random(args.seed)
    prompts = []
    for row in pd.read_parquet(args.data).to_dict(orient="records")[: args.count]:
        problem = parse_problem(row["extra_info"]["problem"])
        while True:
            wrong, correct = write_solution(problem, rng, 0.4)
            if not correct and first_wrong_step(wrong):
                break
        right, _ = write_solution(problem, rng)
        prompt = build_synthesis_prompt(build_prompt(problem.text)[0]["content"], wrong, right, tokenizer, config)
        prompts.append(chat_prompt_ids(tokenizer, prompt.messages))
    outputs = HFGenerator(args.model).generate(
        prompts, SamplingSettings(n=1, temperature=1.0, top_p=1.0, max_new_tokens=256, seed=args.seed))
    texts = [tokenizer.decode(samples[0], skip_special_tokens=True) for samples in outputs]
    parsed = sum(parse_synthesis_output(text, "anchor").ok for text in texts)
    result = {"model": args.model, "prompts": len(texts), "parsed": parsed,
              "parse_rate": parsed / len(texts) if texts else None, "first_output": texts[0] if texts else None}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
