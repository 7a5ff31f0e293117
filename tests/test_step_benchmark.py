"""The step-time benchmark: its figures from verl's file-logger records, and the command end to end."""

import json

import pytest

from recipe_tapo.step_benchmark import format_table, main, step_time_ratios, summarize
from recipe_tapo.view.metrics import file_logger_step_metrics


def test_the_figures_are_medians_over_the_steps_after_the_warm_up(tmp_path):
    lines = [{"step": 0, "data": {"val-core/acc": 0.5}}] + [
        {"step": step, "data": {"timing_s/step": seconds, "timing_s/gen": seconds / 2}}
        for step, seconds in ((1, 100.0), (2, 3.0), (3, 5.0), (4, 4.0))
    ]
    path = tmp_path / "metrics.jsonl"
    # verl's file logger as a killed run leaves it: a cut last line, and bad bytes
    path.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines) + b'{"step": 5, "da\xff')
    records, skipped = file_logger_step_metrics(str(path))
    assert skipped == 1
    figures = summarize(records, skip_steps=1)
    assert figures["timing_s/step"] == 4.0 and figures["timing_s/gen"] == 2.0 and figures["steps"] == 3
    assert "tapo/rollout_seconds" not in figures  # a GRPO run has no tapo/ figures
    with pytest.raises(ValueError, match="no training step after step 4"):
        summarize(records, skip_steps=4)


def test_ratios_are_per_round_against_that_rounds_grpo():
    rounds = [{"grpo": {"timing_s/step": 2.0}, "tapo_stream": {"timing_s/step": 2.5}},
              {"grpo": {"timing_s/step": 4.0}, "tapo_stream": {"timing_s/step": 4.4}}]
    ratios = step_time_ratios(rounds)
    assert ratios == {"tapo_stream": [1.25, pytest.approx(1.1)]}
    table = format_table(rounds, ratios)
    assert "| 0 | tapo_stream | 2.50 | 1.25x |" in table and "| 1 | grpo | 4.00 |  |" in table


def test_unknown_arms_and_too_few_steps_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--arms", "grpo,tapo_fast"])
    assert "unknown arm(s) ['tapo_fast']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--steps", "1", "--skip-steps", "1"])
    assert "--steps (1) must exceed --skip-steps (1)" in capsys.readouterr().err


@pytest.mark.slow
def test_the_benchmark_times_grpo_and_tapo_on_the_toy_main_job(tmp_path, capsys):
    main(["--pairs", "1", "--steps", "2", "--arms", "grpo,tapo_stream", "--out", str(tmp_path), "--timeout-s", "900"])
    result = json.loads((tmp_path / "step_benchmark.json").read_text())
    grpo, tapo = result["rounds"][0]["grpo"], result["rounds"][0]["tapo_stream"]
    assert grpo["steps"] == 1 and grpo["timing_s/step"] > 0 and "tapo/rollout_seconds" not in grpo
    assert tapo["tapo/rollout_to_last_synthesis_seconds"] >= tapo["tapo/rollout_seconds"] > 0
    assert result["ratios"]["tapo_stream"][0] == pytest.approx(tapo["timing_s/step"] / grpo["timing_s/step"])
    assert "step time / GRPO's" in capsys.readouterr().out
