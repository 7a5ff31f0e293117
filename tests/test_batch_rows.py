"""Rows of the training batch: constructed rows in verl's layout, scored, and padding rows
(workers/batch_rows.py; no Ray, no trainer)."""

import pytest
import torch
from verl import DataProto

from recipe_tapo.advantage import parse_constructed_uid
from recipe_tapo.workers.batch_rows import (
    ATTEMPT,
    CUT_TOKENS,
    IS_CONSTRUCTED,
    IS_PADDING,
    build_constructed_rows,
    build_padding_rows,
    mark_original_rows,
)
from recipe_tapo.workers.synthesis_plan import GeneratedText

from rollout_batches import GROUPS, make_augmenter, tapo_config, verbatim_writer, verl_rollout_batch


def test_rebuilding_a_rollout_row_from_its_own_response_gives_the_same_row(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    own = [batch.batch["responses"][row][batch.batch["response_mask"][row].bool()].tolist() for row in range(3)]
    rebuilt = build_constructed_rows(batch, [0, 1, 2], own, pad_token_id=tapo_tokenizer.pad_token_id)
    for key in ("prompts", "responses", "response_mask", "input_ids", "attention_mask", "position_ids", "dummy_tensor"):
        assert torch.equal(rebuilt.batch[key], batch.batch[key][:3]), key
    assert list(rebuilt.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"][:3])
    assert rebuilt.non_tensor_batch[IS_CONSTRUCTED].all()


def test_constructions_keep_the_wrong_answers_own_ids_then_reflect_then_correct(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    result = make_augmenter(tapo_tokenizer).augment(batch, step=3)
    wrong_rows = [1, 2, 8, 10, 11]  # every wrong row of the two mixed groups (m_max 4, n_neg 1)
    assert result.metrics["tapo/pairs"] == len(wrong_rows)
    assert result.metrics["tapo/eligible_groups"] == 2
    rows = result.rows
    assert len(rows) == len(wrong_rows) == result.metrics["tapo/constructed_rows"]
    eos = tapo_tokenizer.eos_token_id
    for position in range(len(rows)):
        record = result.records[int(rows.non_tensor_batch[ATTEMPT][position])]
        ids = rows.batch["responses"][position][rows.batch["response_mask"][position].bool()].tolist()
        assert ids == record["token_ids"] and ids[-1] == eos
        cut = record["cut_tokens"]
        assert cut == rows.non_tensor_batch[CUT_TOKENS][position] > 0
        assert ids[:cut] == record["wrong_ids"][:cut]
        text = tapo_tokenizer.decode(ids[:-1])
        # Own reasoning up to and including the mistake, then the reflection on it.
        assert text.startswith("First, 7 * 8 = 54.\nWait, 7 * 8 is 56, not 54.")
        assert record["reward"] == 1.0 and record["acc"] is True
        assert record["orig_rewards"] == [1.0, 0.0, 0.0, 1.0] if record["uid"] == "uid-0" else [0.0, 1.0, 0.0, 0.0]
        # The row's uid carries its G_ref: the constructions of its source group (DAE, per question).
        assert parse_constructed_uid(rows.non_tensor_batch["uid"][position]) == ("query", record["uid"])
        assert torch.equal(rows.batch["prompts"][position], batch.batch["prompts"][0 if record["uid"] == "uid-0" else 8])
    assert rows.batch["rm_scores"].sum() == len(rows)
    assert list(rows.non_tensor_batch["acc"]) == [True] * len(rows)
    assert result.metrics["tapo/parse_rate"] == 1.0 and result.metrics["tapo/splice_rate"] == 1.0
    assert result.metrics["tapo/constructed_acc"] == 1.0


def test_keep_correct_only_drops_wrong_constructions(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)

    def half_wrong(requests, timeout_s):
        outputs = verbatim_writer(requests, timeout_s)
        return [
            GeneratedText(output.text.replace("boxed{57}", "boxed{58}"), output.num_tokens) if index % 2 else output
            for index, output in enumerate(outputs)
        ]

    kept = make_augmenter(tapo_tokenizer, tapo_config(scoring={"keep": "correct_only"}), half_wrong).augment(batch, 0)
    every = make_augmenter(tapo_tokenizer, tapo_config(scoring={"keep": "all"}), half_wrong).augment(batch, 0)
    assert len(every.rows) == 5 and len(kept.rows) == 3
    assert [record["status"] for record in kept.records].count("dropped_incorrect") == 2
    assert kept.rows.batch["rm_scores"].sum() == 3
    assert every.metrics["tapo/constructed_acc"] == pytest.approx(3 / 5)


def test_padding_rows_take_no_part_in_the_loss(tapo_tokenizer):
    batch = verl_rollout_batch(tapo_tokenizer, GROUPS)
    padding = build_padding_rows(batch, 3, tapo_tokenizer.pad_token_id)
    assert len(padding) == 3
    assert padding.batch["response_mask"].sum() == 0 and padding.batch["rm_scores"].sum() == 0
    assert padding.batch["attention_mask"].sum(dim=-1).tolist() == [2, 2, 2]
    assert padding.non_tensor_batch[IS_PADDING].all() and not padding.non_tensor_batch[IS_CONSTRUCTED].any()
    assert len(set(padding.non_tensor_batch["uid"])) == 3
    assert not set(padding.non_tensor_batch["uid"]) & set(batch.non_tensor_batch["uid"])
    mark_original_rows(batch)
    joined = DataProto.concat([batch, padding])  # same columns: verl can concatenate them
    assert len(joined) == len(batch) + 3
