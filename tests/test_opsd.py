"""OPSD's pure parts: which context each row gets, the privileged prompt, the teacher rows in verl's
layout, the advantage and metrics, the `opsd:` config and its start-up refusals."""

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from verl import DataProto

from recipe_tapo.config import OpsdConfig
from recipe_tapo.opsd import (
    NO_CONTEXT,
    PROMPT_TOO_LONG,
    REFERENCE,
    SIBLING,
    build_teacher_rows,
    choose_contexts,
    opsd_advantages,
    opsd_metrics,
    privileged_messages,
)
from recipe_tapo.run_config import check_opsd_run_config

UIDS = ["a", "a", "a", "b", "b"]


def test_a_reference_solution_comes_first_then_a_right_sibling_never_the_row_itself():
    correct = np.array([True, False, True, False, True])
    references = [None, None, "ref-a", None, None]
    chosen = choose_contexts(UIDS, correct, references, "reference_then_sibling")
    assert chosen == [(SIBLING, 2), (SIBLING, 0), (REFERENCE, None), (SIBLING, 4), (NO_CONTEXT, None)]


def test_each_context_policy_takes_only_its_source():
    correct = np.array([True, False, True, False, False])
    references = ["r0", None, None, None, None]
    assert choose_contexts(UIDS, correct, references, "reference") == [(REFERENCE, None)] + [(NO_CONTEXT, None)] * 4
    assert choose_contexts(UIDS, correct, references, "sibling")[:3] == [(SIBLING, 2), (SIBLING, 0), (SIBLING, 0)]
    assert choose_contexts(UIDS, correct, references, "sibling")[3:] == [(NO_CONTEXT, None)] * 2


def test_the_privileged_prompt_replaces_only_the_last_user_turn():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    messages = privileged_messages(chat, "2 + 3 = 5", "{{question}}\nReference: {{context}}")
    assert messages == [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "What is 2 + 3?\nReference: 2 + 3 = 5"}]
    assert chat[1]["content"] == "What is 2 + 3?"  # the row's own prompt is untouched


def test_the_advantage_is_coef_times_the_log_prob_gap_on_rows_with_a_teacher():
    teacher = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    student = torch.tensor([[-1.5, -1.0, -3.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = opsd_advantages(teacher, student, mask, np.array([True, False]), coef=2.0)
    assert advantages.tolist() == [[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]]


def test_metrics_estimate_the_kl_on_teacher_rows_only():
    teacher = torch.tensor([[-1.0, -2.0], [-9.0, -9.0]])
    student = torch.tensor([[-0.5, -1.0], [-1.0, -1.0]])
    mask = torch.ones(2, 2)
    advantages = opsd_advantages(teacher, student, mask, np.array([True, False]), coef=1.0)
    metrics = opsd_metrics(teacher, student, mask, np.array([True, False]), [REFERENCE, NO_CONTEXT], advantages)
    assert metrics["opsd/kl_estimate"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["opsd/advantage_mean"] == pytest.approx(-0.75)
    assert metrics["opsd/context/reference"] == 0.5 and metrics["opsd/context/none"] == 0.5
    assert metrics["opsd/teacher_row_share"] == 0.5


def _batch(tokenizer, questions, responses, rewards, extra):
    """A rollout batch in verl's layout: left-padded prompts, right-padded responses."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True) for q in questions]
    prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
    width, response_width = max(map(len, prompts)), max(map(len, responses))
    pad = tokenizer.pad_token_id
    prompt_tensor = torch.full((len(prompts), width), pad)
    response_tensor = torch.full((len(prompts), response_width), pad)
    attention = torch.zeros((len(prompts), width + response_width), dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        prompt_tensor[row, width - len(prompt):] = torch.tensor(prompt)
        response_tensor[row, : len(response)] = torch.tensor(response)
        attention[row, width - len(prompt): width + len(response)] = 1
    response_mask = attention[:, width:]
    scores = torch.zeros(len(prompts), response_width)
    scores[:, 0] = torch.tensor(rewards, dtype=torch.float32)
    return DataProto.from_dict(
        tensors={"prompts": prompt_tensor, "responses": response_tensor, "response_mask": response_mask,
                 "input_ids": torch.cat([prompt_tensor, response_tensor], 1), "attention_mask": attention,
                 "position_ids": (attention.cumsum(-1) - 1).clamp(min=0), "rm_scores": scores},
        non_tensors={"uid": np.array(["a", "a", "b"], dtype=object),
                     "raw_prompt": np.array([[{"role": "user", "content": q}] for q in questions] + [None], dtype=object)[:-1],
                     "extra_info": np.array(extra, dtype=object)},
    )


def test_teacher_rows_hold_the_same_responses_under_privileged_prompts(qwen_tokenizer):
    tokenizer = qwen_tokenizer
    answer = tokenizer.encode("The sum is \\boxed{5}.", add_special_tokens=False)
    batch = _batch(tokenizer, ["What is 2 + 3?", "What is 2 + 3?", "What is 7 - 7?"],
                   [answer, answer[:3], answer[:2]], [1.0, 0.0, 0.0],
                   [{"solution": ""}, {"solution": ""}, {"solution": "7 - 7 = 0, so \\boxed{0}."}])
    config = OpsdConfig(enable=True, max_prompt_tokens=200)
    teacher = build_teacher_rows(batch, tokenizer, config, {"enable_thinking": False}, [tokenizer.eos_token_id])
    assert teacher.sources == [NO_CONTEXT, SIBLING, REFERENCE]
    assert teacher.has_teacher.tolist() == [False, True, True]
    rows = teacher.rows.batch
    assert torch.equal(rows["responses"], batch.batch["responses"])
    assert torch.equal(rows["response_mask"], batch.batch["response_mask"])
    # Row 1's prompt carries its right sibling's answer; row 2's the reference; row 0 its own prompt.
    texts = [tokenizer.decode(ids) for ids in teacher.prompt_ids]
    assert "The sum is \\boxed{5}." in texts[1] and "7 - 7 = 0" in texts[2]
    assert texts[0] == tokenizer.decode(batch.batch["prompts"][0][batch.batch["attention_mask"][0, :batch.batch["prompts"].shape[1]].bool()])
    assert "<think>\n\n</think>" in texts[2]  # the run's chat-template kwargs: non-thinking
    # Left-padded prompts: the ids end where the responses begin; positions count the real tokens.
    width = rows["prompts"].shape[1]
    for row, ids in enumerate(teacher.prompt_ids):
        assert rows["input_ids"][row, width - len(ids): width].tolist() == ids
        assert int(rows["attention_mask"][row, :width].sum()) == len(ids)
        assert int(rows["position_ids"][row, width]) == len(ids)
    too_long = build_teacher_rows(batch, tokenizer, dataclasses.replace(config, max_prompt_tokens=30),
                                  {"enable_thinking": False}, [tokenizer.eos_token_id])
    assert too_long.sources == [NO_CONTEXT, PROMPT_TOO_LONG, PROMPT_TOO_LONG]
    assert not too_long.has_teacher.any()


def test_the_yaml_defaults_are_the_dataclass_defaults():
    with open("config/opsd_defaults.yaml", encoding="utf-8") as file:
        assert OpsdConfig(**yaml.safe_load(file)["opsd"]) == OpsdConfig()


def test_settings_that_train_nothing_or_name_no_file_are_refused():
    with pytest.raises(ValueError, match="trains nothing"):
        OpsdConfig(enable=True, coef=0.0, outcome_advantage=False)
    with pytest.raises(ValueError, match="opsd.teacher must be one of"):
        OpsdConfig(teacher="frozen")
    with pytest.raises(ValueError, match="opsd.template_path: no such file"):
        OpsdConfig(template_path="/nonexistent/template.txt")
    with pytest.raises(ValueError, match="unknown key opsd.coeff"):
        OpsdConfig.from_omegaconf(OmegaConf.create({"coeff": 1.0}))
    assert "{{context}}" in OpsdConfig().template() and "{{question}}" in OpsdConfig().template()


def _compose(*overrides):
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        return compose(config_name="tapo_trainer", overrides=["opsd.enable=true", *overrides])


@pytest.mark.parametrize("overrides, message", [
    ((), "opsd.enable=true needs tapo.enable=false"),
    (("tapo.enable=false", "algorithm.adv_estimator=gae"), "needs algorithm.adv_estimator=grpo"),
    (("tapo.enable=false", "opsd.teacher=initial"), "opsd.teacher=initial scores with verl's reference worker"),
    (("tapo.enable=false", "actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov"), "loss_mode='clip_cov'"),
    (("tapo.enable=false", "actor_rollout_ref.rollout.max_model_len=4096", "data.max_response_length=3072"),
     r"opsd.max_prompt_tokens \(2048\) \+ data.max_response_length \(3072\) = 5120 exceeds"),
])
def test_opsd_runs_that_cannot_work_are_refused_by_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_opsd_run_config(_compose(*overrides))


def test_an_opsd_run_of_the_paper_shape_passes():
    config = _compose("tapo.enable=false", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.max_model_len=32768",
                      "data.max_response_length=8192")
    assert check_opsd_run_config(config) == OpsdConfig(enable=True)
