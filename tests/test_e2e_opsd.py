"""OPSD end to end through verl's real trainer on CPU (Ray, FSDP2, the hf rollout): the teacher's
log-probs are the policy's own forward pass over the privileged prompt, and with coefficient 0 on
top of GRPO's advantage the run is verl's GRPO, metric for metric."""

import json

import pytest
import torch

from verl_run import run_logged, training_steps

pytestmark = pytest.mark.slow

OPSD = ["tapo.enable=false", "algorithm.adv_estimator=grpo", "opsd.enable=true", "opsd.max_prompt_tokens=256",
        "trainer.val_before_train=false"]


def _run(tmp, name, steps, *overrides):
    log = run_logged(
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", *overrides],
        log_path=str(tmp / f"{name}.log"),
        timeout_s=900,
        env={"TINY_DIR": str(tmp / "tiny"), "STEPS": str(steps)},
    )
    return log, training_steps(log)


def test_teacher_log_probs_are_the_policys_forward_pass_over_the_privileged_prompt(tmp_path):
    from transformers import AutoModelForCausalLM

    _, steps = _run(tmp_path, "opsd", 1, *OPSD, "opsd.dump_every=1")
    metrics = steps[1]
    assert metrics["opsd/context/reference"] == 1.0  # every tiny row carries a reference solution
    assert "opsd/kl_estimate" in metrics and metrics["opsd/teacher_row_share"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "tiny/checkpoints/opsd_dump/step_000001.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(row["has_teacher"] for row in rows)
    # Step 1's log-prob pass runs before its update: the weights are the initial checkpoint's.
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "tiny/model"), dtype=torch.float32).eval()
    for row in rows:
        prompt, response = row["teacher_prompt_ids"], row["response_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + response])).logits[0]
        expected = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), dim=-1)
        expected = expected.gather(-1, torch.tensor(response).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(torch.tensor(row["teacher_log_probs"]), expected, atol=1e-4)
        # the privileged prompt differs from the student's, so the two passes differ
        assert row["teacher_log_probs"] != row["student_log_probs"]


def test_coefficient_zero_on_grpos_advantage_is_verls_grpo(tmp_path):
    _, opsd = _run(tmp_path, "opsd", 2, *OPSD, "opsd.coef=0", "opsd.outcome_advantage=true")
    _, grpo = _run(tmp_path, "grpo", 2, "tapo.enable=false", "algorithm.adv_estimator=grpo", "trainer.val_before_train=false")
    for step in (1, 2):
        assert "opsd/kl_estimate" in opsd[step] and not any(key.startswith("opsd/") for key in grpo[step])
        for key in ("critic/advantages/mean", "critic/advantages/max", "critic/advantages/min", "critic/score/mean",
                    "response_length/mean", "actor/entropy", "training/rollout_probs_diff_max"):
            assert opsd[step][key] == grpo[step][key], (step, key)
        for key in ("actor/pg_loss", "actor/grad_norm"):
            assert opsd[step][key] == pytest.approx(grpo[step][key], rel=1e-5, abs=1e-7), (step, key)
