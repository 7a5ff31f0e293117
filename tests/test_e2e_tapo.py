"""The TAPO trainer end to end through verl's real trainer on CPU (Ray, FSDP2, the hf rollout).

A random tiny model never writes a parsable synthesis, so these runs replace the synthesis text
source alone with a deterministic double (tests/doubles): selection, prompts, parsing, splicing,
the run's reward, padding, old log-probs, OTS, DAE and the update are the real path. The README's
main job, where the policy itself writes, is tested in test_e2e_cpu.py.
"""

import json
import math

import numpy as np
import pytest

from verl_run import REPO_ROOT, run_logged, training_steps

pytestmark = pytest.mark.slow

DOUBLE = [
    "tapo.synthesis.text_source=synthesis_doubles.HalfThenRight",
    f"+ray_kwargs.ray_init.runtime_env.env_vars.PYTHONPATH={REPO_ROOT}/tests/doubles",
    # The double's trajectories end with a random right answer, which holds no \boxed.
    "tapo.splicing.final_answer_marker=''",
    "trainer.val_before_train=false",
]
EOS = 2  # <|im_end|> of the tiny tokenizer


def _run(tmp, name, steps, *overrides):
    log = run_logged(
        ["bash", "run_scripts/run_tapo_tiny_cpu.sh", *overrides],
        log_path=str(tmp / f"{name}.log"),
        timeout_s=900,
        env={"TINY_DIR": str(tmp / "tiny"), "STEPS": str(steps)},
    )
    return log, training_steps(log)


def _dump(tmp, step):
    path = tmp / "tiny" / "checkpoints" / "tapo_dump" / f"step_{step:06d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tapo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tapo")
    log, steps = _run(tmp, "run", 2, *DOUBLE, "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr=1e-2",
                      f"trainer.rollout_data_dir={tmp / 'rollouts'}")
    return tmp, log, steps


def test_constructions_are_inserted_and_trained(tapo_run):
    _, _, steps = tapo_run
    assert sorted(steps) == [1, 2]
    for step in steps.values():
        assert step["tapo/round_failed"] == 0
        assert step["tapo/constructed_rows"] > 0
        assert 0 < step["tapo/constructed_token_share"] < 1
        assert step["tapo/parse_rate"] == 1
        assert math.isfinite(step["actor/pg_loss"]) and step["actor/grad_norm"] > 0
        for key in ("tapo/ots_weight_mean/prefix", "tapo/ots_weight_min/inserted", "tapo/constructed_advantage_mean",
                    "tapo/original_advantage_mean", "tapo/synthesis_tokens", "tapo/synthesis_seconds",
                    "tapo/prefix_fraction_mean", "tapo/eligible_groups", "tapo/pairs", "tapo/padding_rows"):
            assert key in step, key
        # separate loss normalisation over the whole step: L_ref weighs lambda (1) once per mini-batch
        assert step["tapo/effective_lambda"] == pytest.approx(1.0, rel=1e-5)
        assert 0 < step["tapo/loss_scale/constructed_min"] <= step["tapo/loss_scale/constructed_max"]
        assert 0 < step["tapo/probability_median/first_inserted"] <= 1  # from verl's old-log-prob pass
        # verl's token counts (meta_info, throughput) cover every trained row, constructed ones too ...
        original_tokens = 16 * (step["prompt_length/mean"] + step["response_length/mean"])
        assert step["perf/total_num_tokens"] > original_tokens + step["tapo/constructed_rows"]


def test_verls_per_row_logs_and_data_metrics_describe_the_original_rollouts(tapo_run):
    tmp, _, steps = tapo_run
    for step in (1, 2):
        rows = [json.loads(line) for line in (tmp / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
        assert len(rows) == 16  # 4 prompts x 4 samples; no constructed or padding row
        assert np.mean([row["score"] for row in rows]) == pytest.approx(steps[step]["critic/score/mean"])


def test_dump_rows_satisfy_the_splice_and_dae_invariants(tapo_run):
    tmp, _, steps = tapo_run
    for step in (1, 2):
        records = _dump(tmp, step)
        assert len(records) == steps[step]["tapo/pairs"]
        inserted = [record for record in records if record["status"] == "ok"]
        assert len(inserted) == steps[step]["tapo/constructed_rows"]
        for record in records:
            assert record["step"] == step
            if record["status"] != "ok":
                assert record["advantage"] is None
                continue
            cut = record["cut_tokens"]
            assert record["token_ids"][:cut] == record["wrong_ids"][:cut] and cut >= 4
            assert record["token_ids"][-1] == EOS
            assert len(record["ots_weights"]) == len(record["token_ids"])
            assert all(0.01 - 1e-6 <= weight <= 10.0 + 1e-6 for weight in record["ots_weights"])
        for record in inserted:
            assert record["advantage"] == pytest.approx(_expected_dae(record, inserted), abs=1e-4)


def _expected_dae(record, inserted):
    """DAE recomputed from the dump alone (tapo.advantage defaults: per-question G_ref, degenerate
    groups against the G_orig baseline, epsilon 1e-6, std-normalised)."""
    group = [other["reward"] for other in inserted if other["uid"] == record["uid"]]
    if len(group) > 1 and len(set(group)) > 1:
        return (record["reward"] - np.mean(group)) / (np.std(group, ddof=1) + 1e-6)
    original = record["orig_rewards"]
    if len(original) < 2 or len(set(original)) == 1:
        return 0.0
    return (record["reward"] - np.mean(original)) / (np.std(original, ddof=1) + 1e-6)


def test_a_resumed_run_continues_at_the_right_step_with_the_same_choices(tapo_run, tmp_path):
    tmp, _, _ = tapo_run
    uninterrupted = _dump(tmp, 2)
    resumed_dir = tmp_path
    _run(resumed_dir, "first", 1, *DOUBLE, "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr=1e-2")
    log, steps = _run(resumed_dir, "resumed", 2, *DOUBLE, "trainer.save_freq=1", "actor_rollout_ref.actor.optim.lr=1e-2")
    assert "Resuming from" in log and sorted(steps) == [2]
    resumed = _dump(resumed_dir, 2)

    def choices(records):
        return [(r["wrong_row"], r["right_row"], r["wrong_ids"], r["status"]) for r in records]

    assert choices(resumed) == choices(uninterrupted)


def test_a_failed_synthesis_round_leaves_a_grpo_step(tmp_path):
    overrides = [item.replace("HalfThenRight", "FailsOnFirstRound") for item in DOUBLE]
    log, steps = _run(tmp_path, "fault", 2, *overrides)
    assert "synthesis round failed" in log and "injected fault" in log
    assert steps[1]["tapo/round_failed"] == 1 and steps[1]["tapo/constructed_rows"] == 0
    assert steps[1]["actor/grad_norm"] > 0
    assert steps[2]["tapo/round_failed"] == 0 and steps[2]["tapo/constructed_rows"] > 0


def test_a_run_whose_synthesis_never_answers_stops_with_the_cause(tmp_path):
    overrides = [item.replace("HalfThenRight", "AlwaysFails") for item in DOUBLE]
    with pytest.raises(AssertionError) as failure:
        _run(tmp_path, "always_fails", 3, *overrides, "tapo.synthesis.max_failed_rounds=2")
    log = (tmp_path / "always_fails.log").read_text()
    assert "2 synthesis rounds in a row answered no request (tapo.synthesis.max_failed_rounds=2)" in log
    assert "the synthesis server is unreachable" in log
    assert "step:3 " not in log and "exit code" in str(failure.value)


def test_a_stalled_synthesis_server_costs_the_deadline_not_the_step(tmp_path):
    """Half the requests never answer: what finished by the deadline is trained on, the rest is
    aborted through the replicas and counted, the step waits the deadline (plus the abort's grace)
    and the next step's rollouts run on resumed replicas."""
    overrides = [item.replace("HalfThenRight", "SlowForHalf") for item in DOUBLE]
    timeout_s = 3.0
    _, steps = _run(tmp_path, "stalled", 2, *overrides, f"tapo.synthesis.timeout_s={timeout_s}")
    for step in (1, 2):
        metrics = steps[step]
        assert metrics["tapo/fail/timeout"] >= 1 and metrics["tapo/constructed_rows"] >= 1
        assert metrics["tapo/round_failed"] == 0
        assert timeout_s <= metrics["tapo/wait_after_rollout_seconds"] < timeout_s + 5.0 + 3.0  # + grace + margin
        assert metrics["actor/grad_norm"] > 0


@pytest.mark.parametrize(
    "correction",
    [
        ["algorithm.rollout_correction.rollout_is=token", "algorithm.rollout_correction.rollout_is_batch_normalize=true"],
        ["algorithm.rollout_correction.rollout_rs=token_k2", "algorithm.rollout_correction.rollout_rs_threshold=0.01"],
    ],
    ids=["is_batch_normalized", "rejection_sampling"],
)
def test_rollout_correction_runs_over_the_original_rows(tmp_path, correction):
    log, steps = _run(tmp_path, "corr", 2, *DOUBLE, *correction)
    for step in (1, 2):
        metrics = steps[step]
        assert metrics["tapo/constructed_rows"] >= 1 and math.isfinite(metrics["actor/pg_loss"])
        assert any(key.startswith("rollout_corr/") for key in metrics), sorted(metrics)
        if "rollout_is=token" in correction[0]:
            assert metrics["rollout_corr/rollout_is_batch_norm_factor"] > 0
        else:
            assert 0 <= metrics["rollout_corr/rollout_rs_masked_fraction"] <= 1


def test_disabled_tapo_is_verls_grpo(tmp_path):
    """tapo.enable=false through the TAPO trainer's loop gives verl's GRPO, metric for metric."""
    _, tapo_off = _run(tmp_path, "off", 2, "tapo.enable=false", "trainer.val_before_train=false")
    _, grpo = _run(tmp_path, "grpo", 2, "tapo.enable=false", "algorithm.adv_estimator=grpo",
                   "trainer.val_before_train=false")
    for step in (1, 2):
        assert not any(key.startswith("tapo/") for key in tapo_off[step])
        for key in ("critic/advantages/mean", "critic/advantages/max", "critic/advantages/min", "critic/score/mean",
                    "critic/returns/mean", "response_length/mean", "prompt_length/mean", "actor/entropy",
                    "training/rollout_probs_diff_max"):
            assert tapo_off[step][key] == grpo[step][key], (step, key)
        for key in ("actor/pg_loss", "actor/grad_norm"):
            assert tapo_off[step][key] == pytest.approx(grpo[step][key], rel=1e-5, abs=1e-7), (step, key)
