"""The toy cold start's SFT mix: the builder's examples, plain solution chats and privileged chats."""

import re

import pandas as pd
import pytest

from recipe_tapo.config import check_template_file
from recipe_tapo.opsd import privileged_messages, reference_solution
from recipe_tapo.reward.math_reward import compute_score
from recipe_tapo.toy.build import build_data
from recipe_tapo.toy.mix import KIND_PRIVILEGED, KIND_SFT, OPSD_TEMPLATE, mix, privileged_chat

TEMPLATE = check_template_file(OPSD_TEMPLATE, "t", ("question", "context"))


@pytest.fixture
def toy(tmp_path):
    paths = build_data(str(tmp_path / "data"), seed=0, train=5, val=5, test=5, sft=60, error_rate=0.3, reflect_rate=0.5)
    built = pd.DataFrame({"messages": [[{"role": "user", "content": "Compute 1 + 2."}, {"role": "assistant", "content": "x"}]] * 3,
                          "kind": "synthesis", "data_source": "toy_chain", "problem_id": ["train-0", "train-1", "train-2"]})
    built.to_parquet(tmp_path / "built.parquet", index=False)
    return tmp_path, paths


def test_a_privileged_chat_is_the_opsd_arms_teacher_prompt_answered_with_the_reference(toy):
    _, paths = toy
    for row in pd.read_parquet(paths["val"]).to_dict("records"):
        prompt = [dict(message) for message in row["prompt"]]
        chat = privileged_chat(prompt, TEMPLATE)
        reference = reference_solution(row["extra_info"])
        # exactly the prompt the OPSD arm's teacher pass builds for this row during RL
        assert chat[:-1] == privileged_messages(prompt, reference, TEMPLATE)
        assert chat[-1] == {"role": "assistant", "content": reference}
        assert compute_score("toy_chain", reference, str(row["reward_model"]["ground_truth"]))["acc"]


def test_the_mix_adds_privileged_chats_beside_the_rest_and_keeps_them_without_it(toy):
    tmp_path, paths = toy
    out = str(tmp_path / "mixed.parquet")
    stats = mix(str(tmp_path / "built.parquet"), paths["sft"], 10, out, seed=0, privileged=7)
    assert stats == {"rows": 20, "kinds": {"sft_solution": 10, "privileged": 7, "synthesis": 3}}
    table = pd.read_parquet(out)
    for messages in table[table["kind"] == KIND_PRIVILEGED]["messages"]:
        user, answer = messages[0]["content"], messages[-1]["content"]
        assert user.startswith("Right:\n" + answer + "\n") and "Compute " in user
    plain = mix(str(tmp_path / "built.parquet"), paths["sft"], 10, str(tmp_path / "plain.parquet"), seed=0)
    assert plain == {"rows": 13, "kinds": {"sft_solution": 10, "synthesis": 3}}
    assert set(pd.read_parquet(str(tmp_path / "plain.parquet"))["kind"]) == {KIND_SFT, "synthesis"}


def test_a_template_without_the_context_placeholder_is_refused_by_name(toy, tmp_path):
    _, paths = toy
    bad = tmp_path / "bad.txt"
    bad.write_text("{{question}} only\n")
    with pytest.raises(ValueError, match=r"--privileged-template: template .* lacks the placeholders \['\{\{context\}\}'\]"):
        mix(str(tmp_path / "built.parquet"), paths["sft"], 1, str(tmp_path / "m.parquet"), privileged=1, privileged_template=str(bad))


def test_a_prompt_that_is_no_toy_problem_is_named():
    with pytest.raises(ValueError, match=re.escape("not a toy problem: 'What is 2 times 3?'")):
        privileged_chat([{"role": "user", "content": "What is 2 times 3?"}], TEMPLATE)
