"""Rollout batches in verl's layout for the tests of the synthesis worker (workers/synthesis_plan.py,
synthesis_round.py, batch_rows.py): a batch builder, a well-formed synthesis writer, a reward, and
the whole-batch augmenter built on them."""

import numpy as np
import torch
from verl import DataProto

from recipe_tapo.config import TapoConfig
from recipe_tapo.workers.synthesis_plan import GeneratedText, response_ids
from recipe_tapo.workers.synthesis_round import TrajectoryAugmenter

PROMPT_WIDTH, RESPONSE_WIDTH = 48, 64
QUESTION = "What is 7 * 8 + 1?"
RIGHT = "First, 7 * 8 = 56.\nThen 56 + 1 = 57.\nSo the answer is \\boxed{57}."
WRONG = "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nSo the answer is \\boxed{55}."


def tapo_config(**sections) -> TapoConfig:
    values = {
        "selection": {"n_pos": 1, "n_neg": 1, "m_max": 4},
        "splicing": {"min_prefix_tokens": 1},
        "synthesis": {"max_prompt_tokens": 4096, "max_new_tokens": 256},
    }
    for name, overrides in sections.items():
        values.setdefault(name, {}).update(overrides)
    return TapoConfig.from_dict(values)


def verl_rollout_batch(tokenizer, groups: list[list[str]], extra_eos: int | None = None) -> DataProto:
    """Rows as verl holds them after the agent loop: left-padded prompts, right-padded responses
    ending in EOS, rewards at the last response token, one uid per group.

    Not `recipe_tapo.cold_start.rollout_batch`: this pads prompts to a fixed width (as verl pads to
    max_prompt_length), carries verl's extra tensors (`rollout_log_probs`) and can end with any EOS id."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts, responses, prompt_masks, response_masks, uids, raw, scores = [], [], [], [], [], [], []
    for group, answers in enumerate(groups):
        chat = [{"role": "user", "content": f"{QUESTION} (group {group})"}]
        prompt_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        prompt_ids = list(prompt_ids["input_ids"] if hasattr(prompt_ids, "keys") else prompt_ids)
        for answer in answers:
            ids = tokenizer.encode(answer, add_special_tokens=False) + [eos]
            if extra_eos is not None:
                ids[-1] = extra_eos
            prompts.append([pad] * (PROMPT_WIDTH - len(prompt_ids)) + prompt_ids)
            prompt_masks.append([0] * (PROMPT_WIDTH - len(prompt_ids)) + [1] * len(prompt_ids))
            responses.append(ids + [pad] * (RESPONSE_WIDTH - len(ids)))
            response_masks.append([1] * len(ids) + [0] * (RESPONSE_WIDTH - len(ids)))
            uids.append(f"uid-{group}")
            raw.append(chat)
            scores.append(1.0 if "\\boxed{57}" in answer else 0.0)
    prompts, responses = torch.tensor(prompts), torch.tensor(responses)
    attention = torch.cat([torch.tensor(prompt_masks), torch.tensor(response_masks)], dim=1)
    rm_scores = torch.zeros(len(scores), RESPONSE_WIDTH)
    lengths = torch.tensor(response_masks).sum(-1) - 1
    rm_scores[torch.arange(len(scores)), lengths] = torch.tensor(scores)
    raw_prompts = np.empty(len(raw), dtype=object)
    raw_prompts[:] = raw
    return DataProto.from_dict(
        tensors={
            "prompts": prompts,
            "responses": responses,
            "response_mask": torch.tensor(response_masks),
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention,
            "position_ids": torch.clip(torch.cumsum(attention, dim=-1) - 1, min=0),
            "rollout_log_probs": -torch.rand(len(scores), RESPONSE_WIDTH),
            "rm_scores": rm_scores,
            "dummy_tensor": torch.zeros(len(scores), 1, dtype=torch.uint8),
        },
        non_tensors={
            "uid": np.array(uids, dtype=object),
            "raw_prompt": raw_prompts,
            "data_source": np.array(["toy"] * len(uids), dtype=object),
            "reward_model": np.array([{"ground_truth": "57"}] * len(uids), dtype=object),
            "acc": np.array([score > 0 for score in scores]),
        },
        meta_info={"reward_extra_keys": ["acc"]},
    )


def verbatim_writer(requests, timeout_s):
    """Well-formed verbatim synthesis: the wrong answer's first line, its error, a reflection, the right ending."""
    outputs = []
    for request in requests:
        first_line = request.wrong.split("\n")[0]
        reconstruction = f"{first_line}\nWait, 7 * 8 is 56, not 54. Then 56 + 1 = 57.\nSo the answer is \\boxed{{57}}."
        text = f"<analysis>7 * 8 was miscomputed.</analysis>\n<reconstruction>\n{reconstruction}\n</reconstruction>"
        outputs.append(GeneratedText(text=text, num_tokens=len(text) // 3))
    return outputs


def scorer(tokenizer):
    def score(rows: DataProto):
        scores = torch.zeros(len(rows), RESPONSE_WIDTH)
        acc = []
        for row in range(len(rows)):
            ids = response_ids(rows, row, [tokenizer.eos_token_id])
            correct = "\\boxed{57}" in tokenizer.decode(ids)
            scores[row, int(rows.batch["response_mask"][row].sum()) - 1] = float(correct)
            acc.append(correct)
        return scores, {"acc": np.array(acc)}

    return score


def make_augmenter(tokenizer, config=None, writer=verbatim_writer):
    return TrajectoryAugmenter(
        config or tapo_config(),
        tokenizer,
        response_length=RESPONSE_WIDTH,
        eos_token_ids=[tokenizer.eos_token_id],
        text_source=writer,
        score_fn=scorer(tokenizer),
    )


GROUPS = [[RIGHT, WRONG, WRONG, RIGHT], [RIGHT] * 4, [WRONG, RIGHT, WRONG, WRONG]]
