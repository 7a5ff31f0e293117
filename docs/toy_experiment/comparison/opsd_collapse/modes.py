"""Which mode a toy checkpoint answers in, asked as OPSD's student (the plain prompt) and as its
self-teacher (the privileged prompt with the reference solution): the share of sampled answers that
carry the synthesis format's `<analysis>` tag (the cold start taught that format for TAPO's
synthesis prompts, which also hold a solution) and the share with the right boxed answer.

    python docs/toy_experiment/comparison/opsd_collapse/modes.py --data VAL.parquet --model DIR [DIR ...] \
        [--problems 50] [--samples 4]

VAL.parquet: the toy's validation split (`python -m recipe_tapo.toy.build --out D --seed 0 --data-only`
writes D/data/val.parquet). Sampling at temperature 1, 160 new tokens, as the RL rollouts.
"""

import argparse

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipe_tapo.opsd import privileged_messages

TEMPLATE = "config/prompts/toy_opsd_privileged.txt"


def prompt_ids(tokenizer, messages):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return ids if isinstance(ids, list) else ids["input_ids"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = pd.read_parquet(args.data).iloc[: args.problems]
    template = open(TEMPLATE, encoding="utf-8").read()
    print("| checkpoint | asked as | answers | with an `<analysis>` tag | with the right boxed answer |")
    print("|---|---|---|---|---|")
    for model_dir in args.model:
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        counts = {"student": [0, 0, 0], "teacher": [0, 0, 0]}
        for _, row in rows.iterrows():
            prompt = [dict(message) for message in row["prompt"]]
            teacher = privileged_messages(prompt, row["extra_info"]["solution"], template)
            for mode, messages in (("student", prompt), ("teacher", teacher)):
                ids = prompt_ids(tokenizer, messages)
                batch = torch.tensor([ids] * args.samples)
                with torch.no_grad():
                    out = model.generate(batch, attention_mask=torch.ones_like(batch), do_sample=True, temperature=1.0,
                                         max_new_tokens=160, eos_token_id=tokenizer.eos_token_id,
                                         pad_token_id=tokenizer.eos_token_id)
                for sequence in out:
                    text = tokenizer.decode(sequence[len(ids):], skip_special_tokens=True)
                    counts[mode][0] += 1
                    counts[mode][1] += "analysis>" in text
                    counts[mode][2] += f"\\boxed{{{row['reward_model']['ground_truth']}}}" in text
        for mode, (total, tagged, right) in counts.items():
            print(f"| {model_dir} | {mode} | {total} | {tagged} ({100 * tagged / total:.1f}%) | {right} ({100 * right / total:.1f}%) |")


if __name__ == "__main__":
    main()
