"""verl's real trainer (Ray, FSDP2, the hf rollout, weight sync) for 2 GRPO steps on CPU."""

import os

import pytest

from verl_run import run_logged, step_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    log = run_logged(
        # A learning rate large enough that a missed weight sync would show as a log-prob gap.
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", "actor_rollout_ref.actor.optim.lr=1e-2"],
        log_path=str(tmp / "run.log"),
        timeout_s=900,
        env={"TINY_DIR": str(tmp / "tiny"), "STEPS": "2"},
    )
    return log, step_metrics(log)


def test_runs_two_steps_and_updates_the_policy(two_step_run):
    _, steps = two_step_run
    assert sorted(steps) == [1, 2]
    assert steps[2]["actor/grad_norm"] > 0
    # The tiny reward splits groups, so GRPO has non-zero advantages to learn from.
    assert steps[1]["critic/advantages/max"] > 0


def test_rollout_log_probs_follow_the_updated_actor(two_step_run):
    _, steps = two_step_run
    # Step 2 samples after the first update: the hf server must hold the actor's new weights.
    # Without the sync, lr=1e-2 moves token probabilities by far more than this bound.
    assert steps[2]["training/rollout_probs_diff_valid"] == 1
    assert steps[2]["training/rollout_probs_diff_max"] < 1e-4
    assert steps[2]["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-6)

