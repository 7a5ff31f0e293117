"""TAPO's agent loop manager without Ray: verl's agent loop workers and the rollout servers are
doubles, the manager, the planner and the synthesis round are the real ones."""

import asyncio
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from transformers import AutoTokenizer
from verl import DataProto

from recipe_tapo.workers.agent_loop import TapoAgentLoopManager, group_bounds

MODEL = "recipe_tapo/toy/cold_start_model"
K = 4
RIGHT, WRONG = "47 + 5 = 52\n52 - 8 = 44\n\\boxed{44}", "47 + 5 = 52\n52 - 8 = 45\n\\boxed{45}"
# Per group, which of its K rollouts are right (groups 0-2 are mixed, group 3 is all right).
RIGHT_ROWS = [(0, 3), (1,), (0, 1, 2), (0, 1, 2, 3)]
PROMPT_WIDTH, RESPONSE_WIDTH = 48, 64


def _config(*overrides):
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        return compose(
            config_name="tapo_trainer",
            overrides=[
                "profile=[tiny_cpu,toy_run]",
                f"actor_rollout_ref.model.path={MODEL}",
                "tapo.selection.n_pos=1",
                "tapo.selection.n_neg=1",
                f"actor_rollout_ref.rollout.n={K}",
                *overrides,
            ],
        )


class _Worker:
    """verl's AgentLoopWorker as the manager calls it: `generate_sequences.remote(chunk)` answers
    the chunk's rows after `delay_s[group]` seconds, scored (rm_scores, acc)."""

    def __init__(self, tokenizer, delay_s, log):
        self.tokenizer, self.delay_s, self.log = tokenizer, delay_s, log
        self.generate_sequences = SimpleNamespace(remote=self._generate)

    async def _generate(self, chunk: DataProto) -> DataProto:
        groups = sorted({int(uid.split("-")[1]) for uid in chunk.non_tensor_batch["uid"]})
        await asyncio.sleep(max(self.delay_s[group] for group in groups))
        self.log.append(("rollout_done", tuple(groups), time.monotonic()))
        rows = []
        for uid, priority in zip(chunk.non_tensor_batch["uid"], chunk.non_tensor_batch["priority"]):
            group, sample = int(uid.split("-")[1]), int(priority) % K
            rows.append(RIGHT if sample in RIGHT_ROWS[group] else WRONG)
        return _scored_rows(self.tokenizer, rows, chunk.non_tensor_batch["raw_prompt"])


def _scored_rows(tokenizer, answers, raw_prompts) -> DataProto:
    prompt = [tokenizer.pad_token_id] * (PROMPT_WIDTH - 2) + [5, 6]
    responses, masks, scores = [], [], torch.zeros(len(answers), RESPONSE_WIDTH)
    for row, answer in enumerate(answers):
        ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
        responses.append(ids + [tokenizer.pad_token_id] * (RESPONSE_WIDTH - len(ids)))
        masks.append([1] * len(ids) + [0] * (RESPONSE_WIDTH - len(ids)))
        scores[row, len(ids) - 1] = float(answer == RIGHT)
    responses, masks = torch.tensor(responses), torch.tensor(masks)
    prompts = torch.tensor([prompt] * len(answers))
    attention = torch.cat([(prompts != tokenizer.pad_token_id).long(), masks], dim=1)
    metric = {"generate_sequences": 0.1, "tool_calls": 0.0, "compute_score": 0.0, "num_preempted": -1}
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "response_mask": masks, "attention_mask": attention,
                 "input_ids": torch.cat([prompts, responses], dim=1), "rm_scores": scores},
        non_tensors={"raw_prompt": np.array(list(raw_prompts) + [None], dtype=object)[:-1],
                     "acc": np.array([answer == RIGHT for answer in answers])},
        meta_info={"metrics": [dict(metric) for _ in answers], "reward_extra_keys": ["acc"]},
    )


class _Client:
    """verl's LLMServerClient: records when each synthesis request arrives."""

    def __init__(self, tokenizer, log):
        self.tokenizer, self.log = tokenizer, log

    async def generate(self, request_id, *, prompt_ids, sampling_params):
        self.log.append(("synthesis", request_id, time.monotonic()))
        await asyncio.sleep(0.01)
        return SimpleNamespace(token_ids=self.tokenizer.encode("<analysis>x</analysis>"), stop_reason="completed")


def _prompts(step=1) -> DataProto:
    uids = [f"uid-{group}" for group in range(len(RIGHT_ROWS)) for _ in range(K)]
    raw = np.empty(len(uids), dtype=object)
    raw[:] = [[{"role": "user", "content": f"Compute 47 + 5 - 8. ({uid})"}] for uid in uids]
    return DataProto.from_dict(
        tensors={"dummy_tensor": torch.zeros(len(uids), 1)},
        non_tensors={"uid": np.array(uids, dtype=object), "raw_prompt": raw},
        meta_info={"global_steps": step},
    )


def _manager(delays, *overrides, workers=2):
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    log = []
    manager = TapoAgentLoopManager(_config(*overrides), _Client(tokenizer, log))
    manager.agent_loop_workers = [_Worker(tokenizer, delays, log) for _ in range(workers)]
    return manager, log


def test_group_bounds_are_the_runs_of_each_prompts_rows():
    assert group_bounds(np.array(["a", "a", "b", "b", "b", "c"])) == [(0, 2), (2, 5), (5, 6)]
    with pytest.raises(ValueError, match="not consecutive"):
        group_bounds(np.array(["a", "b", "a"]))


def test_a_groups_synthesis_goes_out_while_later_groups_still_generate():
    manager, log = _manager(delays=[0.6, 0.05, 0.3, 0.3])
    output = manager.generate_sequences(_prompts())
    finished = {groups[0]: at for kind, groups, at in log if kind == "rollout_done"}
    first_request = {int(request.split("-g")[1].split("-")[0]): at for kind, request, at in log if kind == "synthesis"}
    # Group 1 finished first: its requests left before group 0's rollouts were done.
    assert first_request[1] < finished[0]
    assert set(first_request) == {0, 1, 2}  # group 3 is all right: not in the DCS band
    # The rollout output is the groups' rows in batch order, as verl's manager returns them.
    assert len(output) == 16 and output.batch["rm_scores"].sum(-1).tolist() == [
        float(sample in RIGHT_ROWS[group]) for group in range(4) for sample in range(K)
    ]
    assert "timing" in output.meta_info and "metrics" not in output.meta_info
    outcome = manager.take_outcome(1)
    assert [record["wrong_row"] // K for record in outcome.records] == sorted(
        record["wrong_row"] // K for record in outcome.records
    )
    assert outcome.timings["after_rollout_seconds"] < 0.2 and outcome.timings["rollout_seconds"] >= 0.6
    assert manager.take_outcome(1) is None  # taken once


def test_the_streamed_draw_does_not_depend_on_which_group_finishes_first():
    def draw(delays):
        manager, _ = _manager(delays)
        manager.generate_sequences(_prompts(step=5))
        return [(record["wrong_row"], record["right_row"]) for record in manager.take_outcome(5).records]

    assert draw([0.3, 0.01, 0.2, 0.1]) == draw([0.01, 0.3, 0.1, 0.2])


def test_whole_batch_rounds_send_after_the_rollout_with_the_attempt_ids():
    manager, log = _manager([0.2, 0.01, 0.01, 0.01], "tapo.synthesis.stream=false", workers=1)
    manager.generate_sequences(_prompts())
    rollout_done = max(at for kind, _, at in log if kind == "rollout_done")
    requests = [(request, at) for kind, request, at in log if kind == "synthesis"]
    assert all(at >= rollout_done for _, at in requests)
    # The tiny_cpu profile sets rollout.full_determinism: ids the same in every run, named by step and attempt.
    assert sorted(request for request, _ in requests) == sorted(f"tapo-synthesis-s1-{i}" for i in range(len(requests)))


def test_without_full_determinism_each_synthesis_id_is_new_to_verls_router():
    ids = []
    for _ in range(2):
        manager, log = _manager([0.01] * 4, "actor_rollout_ref.rollout.full_determinism=false")
        manager.generate_sequences(_prompts(step=1))
        ids += [request for kind, request, _ in log if kind == "synthesis"]
    assert len(ids) == len(set(ids)) > 2
    assert all(request.startswith("tapo-synthesis-s1-g") for request in ids)


def test_validation_and_tapo_off_are_verls_rollout_alone():
    manager, log = _manager([0.01] * 4)
    prompts = _prompts()
    prompts.meta_info["validate"] = True
    manager.generate_sequences(prompts)
    assert not any(kind == "synthesis" for kind, *_ in log) and manager.take_outcome(1) is None
    manager, log = _manager([0.01] * 4, "tapo.enable=false")
    assert manager.planner is None
    manager.generate_sequences(_prompts())
    assert not any(kind == "synthesis" for kind, *_ in log)
