"""verl's real trainer (Ray, FSDP2, the hf rollout, weight sync) on CPU, and the reward inside Ray."""

import json
import sys

import pytest

from verl_run import run_logged, step_metrics, training_steps

pytestmark = pytest.mark.slow


def _two_step_run(tmp):
    log = run_logged(
        # A learning rate large enough that a missed weight sync would show as a log-prob gap.
        # Every step's rows are dumped in verl's balanced order (balance_batch, which TAPO needs),
        # a function of the rows' lengths: a seeded rerun dumps them in the same order.
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", "actor_rollout_ref.actor.optim.lr=1e-2",
         f"trainer.rollout_data_dir={tmp / 'rollouts'}"],
        log_path=str(tmp / "run.log"),
        timeout_s=900,
        env={"TINY_DIR": str(tmp / "tiny"), "STEPS": "2"},
    )
    return log, training_steps(log), tmp / "rollouts"


def _dumped_rows(rollouts, step):
    """(prompt, response, score) of every row of a step, in the batch's order."""
    with open(rollouts / f"{step}.jsonl") as dump:
        return [(row["input"], row["output"], row["score"]) for row in map(json.loads, dump)]


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory):
    return _two_step_run(tmp_path_factory.mktemp("e2e"))


def test_runs_two_steps_and_updates_the_policy(two_step_run):
    _, steps, _ = two_step_run
    assert sorted(steps) == [1, 2]
    assert steps[2]["actor/grad_norm"] > 0
    # The tiny reward splits groups, so GRPO has non-zero advantages to learn from.
    assert steps[1]["critic/advantages/max"] > 0


def test_a_seeded_run_is_reproducible_row_for_row(two_step_run, tmp_path):
    """Same seed, same response in the same row: TAPO picks rows by position, so equal totals or
    equal sets of samples are not enough. Each row's random stream comes from its stable request id,
    whatever order the agent loop's concurrent requests reach the hf server in."""
    _, first, first_rollouts = two_step_run
    _, again, again_rollouts = _two_step_run(tmp_path)
    for step in (1, 2):
        rows, rows_again = _dumped_rows(first_rollouts, step), _dumped_rows(again_rollouts, step)
        assert len(rows) >= 16 and len(rows_again) == len(rows)  # 4 prompts x 4 samples, + any constructed rows
        in_place = sum(a == b for a, b in zip(rows, rows_again))
        assert in_place == len(rows), f"step {step}: {in_place} of {len(rows)} rows in place"
        assert len({response for _, response, _ in rows}) > 1
        for key in ("critic/score/mean", "response_length/mean", "critic/advantages/max"):
            assert again[step][key] == first[step][key], (step, key)
        assert again[step]["actor/grad_norm"] == pytest.approx(first[step]["actor/grad_norm"], rel=1e-5)


def test_the_tiny_run_counts_every_synthesis_attempt_of_a_random_policy(two_step_run):
    """Real synthesis requests to the hf server. The random tiny model writes no parsable output;
    every attempt is counted by its reason and the run goes on."""
    _, steps, _ = two_step_run
    for step in steps.values():
        assert step["tapo/round_failed"] == 0
        assert step["tapo/synthesis_requests"] == step["tapo/synthesis_answered"] > 0
        assert step["tapo/synthesis_tokens"] > 0
        failures = sum(value for key, value in step.items() if key.startswith(("tapo/parse_fail/", "tapo/splice_fail/", "tapo/fail/")))
        assert failures + step["tapo/constructed_rows"] == step["tapo/pairs"] > 0


def test_validates_before_training_and_at_the_end(two_step_run):
    log, _, _ = two_step_run
    every_step = step_metrics(log)
    assert 0.0 <= every_step[0]["val-core/tiny_arithmetic/acc/mean@1"] <= 1.0  # before training
    assert 0.0 <= every_step[2]["val-core/tiny_arithmetic/acc/mean@1"] <= 1.0


def test_rollout_log_probs_follow_the_updated_actor(two_step_run):
    _, steps, _ = two_step_run
    # Step 2 samples after the first update: the hf server must hold the actor's new weights.
    # Without the sync, lr=1e-2 moves token probabilities by far more than this bound.
    assert steps[2]["training/rollout_probs_diff_valid"] == 1
    assert steps[2]["training/rollout_probs_diff_max"] < 1e-4



def test_resumes_from_a_checkpoint_with_the_saved_policy_in_the_rollout(tmp_path):
    env = {"TINY_DIR": str(tmp_path / "tiny")}
    args = ["bash", "run_scripts/run_tapo_tiny_cpu.sh", "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr=1e-2"]
    run_logged(args, str(tmp_path / "first.log"), timeout_s=900, env={**env, "STEPS": "1"})
    assert (tmp_path / "tiny" / "checkpoints" / "global_step_1").is_dir()

    log = run_logged(args, str(tmp_path / "resumed.log"), timeout_s=900, env={**env, "STEPS": "2"})
    steps = training_steps(log)
    assert "Resuming from" in log and sorted(steps) == [2]
    # The server starts from the base model: only a sync of the restored actor makes these agree.
    assert steps[2]["training/rollout_probs_diff_max"] < 1e-4


def test_tapo_estimator_runs_inside_verls_trainer(tmp_path):
    """`algorithm.adv_estimator=tapo` resolves in the trainer's Ray processes (the plugin loads
    there) and, with no constructed rows, gives GRPO's signed group-normalised advantages."""
    log = run_logged(
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", "algorithm.adv_estimator=tapo", "trainer.val_before_train=false"],
        str(tmp_path / "run.log"), timeout_s=900, env={"TINY_DIR": str(tmp_path / "tiny"), "STEPS": "1"},
    )
    step = training_steps(log)[1]
    assert step["critic/advantages/max"] > 0 > step["critic/advantages/min"]
    assert step["actor/grad_norm"] > 0


def test_reward_time_limit_holds_in_the_threads_of_a_ray_actor(tmp_path):
    log = run_logged([sys.executable, "tests/scripts/reward_in_ray_actor.py"], str(tmp_path / "ray.log"), timeout_s=300)
    (line,) = [line for line in log.splitlines() if line.startswith('{"equivalent"')]
    results = json.loads(line)
    assert results["equivalent"][:2] == ["math_verify_equal", 1.0]
    for name in ("power tower", "nested braces"):
        reason, score, seconds = results[name]
        # The limit, the kill grace, and slack for three concurrent calls sharing two verifier processes.
        assert score == 0.0 and seconds < 2.0 + 3.0, (name, reason, seconds)


def test_two_fsdp_ranks_with_one_hf_server_each(tmp_path):
    """Data parallel on CPU: two FSDP2 ranks over gloo, two rollout replicas, each synced."""
    log = run_logged(
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", "trainer.n_gpus_per_node=2", "ray_kwargs.ray_init.num_gpus=2",
         "actor_rollout_ref.actor.optim.lr=1e-2", "trainer.val_before_train=false"],
        str(tmp_path / "run.log"), timeout_s=900, env={"TINY_DIR": str(tmp_path / "tiny"), "STEPS": "2"},
    )
    assert "['hf_server_0_0', 'hf_server_1_0']" in log
    step = training_steps(log)[2]
    assert step["actor/grad_norm"] > 0
    assert step["training/rollout_probs_diff_max"] < 1e-4
