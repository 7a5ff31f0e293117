"""Figure 3 from a run's metrics (`recipe_tapo.view.panels`, `recipe_tapo.view.metrics`)."""

import json
import os
import struct

import pytest

from recipe_tapo.view.metrics import CONSOLE_LOG, FILE_LOGGER, console_step_metrics, read_run_metrics
from recipe_tapo.view.panels import DPI, FIGURE_SIZE, kl_key, main, plot_training_panels, read_runs, training_panels

FIXTURE_RUN = os.path.join(os.path.dirname(__file__), "fixtures", "view_run")
FILE_LOG = os.path.join(FIXTURE_RUN, "metrics.jsonl")
CONSOLE = os.path.join(FIXTURE_RUN, "console.txt")


def file_logger_lines():
    with open(FILE_LOG) as source:
        return [json.loads(line) for line in source]


def png_size(path):
    with open(path, "rb") as image:
        header = image.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def without_tapo(steps):
    """The same run as a GRPO arm would log it: no tapo/ metrics."""
    return {step: {key: value for key, value in metrics.items() if not key.startswith("tapo/")}
            for step, metrics in steps.items()}


def test_the_file_logger_jsonl_is_read_step_by_step():
    run = read_run_metrics(FIXTURE_RUN)  # the run folder: its metrics.jsonl
    assert run.source == FILE_LOGGER and run.path == FILE_LOG and run.skipped_lines == 0
    lines = file_logger_lines()
    assert sorted(run.steps) == [line["step"] for line in lines] == [0, 1, 2, 3, 4]
    for line in lines:
        assert run.steps[line["step"]] == {key: float(value) for key, value in line["data"].items()}


def test_the_console_log_gives_the_same_metrics_as_the_file_logger():
    console, logged = read_run_metrics(CONSOLE), read_run_metrics(FILE_LOG)
    assert console.source == CONSOLE_LOG
    assert console.steps == logged.steps  # every key and value, Ray prefixes and progress bars around them


def test_console_lines_of_one_step_are_merged_and_non_numbers_left_out():
    log = "step:3 - a:1 - note:text\r\nprogress\rstep:3 - b:np.float32(0.25) - c:nan\n"
    assert console_step_metrics(log) == {3: {"a": 1.0, "b": 0.25}}


def test_broken_and_foreign_file_logger_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = file_logger_lines()
    path.write_text(json.dumps(lines[0]) + "\n" + '{"step": 1, "data": {"x": 1}, "cut sh' + "\n" + "[1]\n"
                    + json.dumps({"step": 2, "data": {"a": None, "b": True, "c": 2}}) + "\n")
    run = read_run_metrics(str(path))
    assert run.source == FILE_LOGGER and run.skipped_lines == 2
    assert run.steps[2] == {"c": 2.0} and 1 not in run.steps


def test_an_empty_or_missing_metrics_file_is_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no metrics in .*empty.jsonl"):
        read_run_metrics(str(tmp_path / "empty.jsonl"))
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl in the run folder"):
        read_run_metrics(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no metrics at .*nowhere"):
        read_run_metrics(str(tmp_path / "nowhere"))


def test_the_nine_panels_hold_the_runs_series():
    steps = read_run_metrics(FIXTURE_RUN).steps
    panels = training_panels({"tapo": steps})
    assert [panel.title for panel in panels] == [
        "OTS weight mean (solid: inserted, dashed: kept prefix)",
        "policy-gradient loss (actor/pg_loss)",
        "training accuracy (critic/score/mean)",
        "gradient norm (actor/grad_norm)",
        "response length (response_length/mean)",
        "KL (actor/ppo_kl)",
        "constructed rows inserted (tapo/constructed_rows)",
        "synthesis parse rate (tapo/parse_rate)",
        "constructed-row accuracy (tapo/constructed_acc)",
    ]
    expected = [
        [("tapo/ots_weight_mean/inserted", False), ("tapo/ots_weight_mean/prefix", True)],
        [("actor/pg_loss", False)], [("critic/score/mean", False)], [("actor/grad_norm", False)],
        [("response_length/mean", False)], [("actor/ppo_kl", False)], [("tapo/constructed_rows", False)],
        [("tapo/parse_rate", False)], [("tapo/constructed_acc", False)],
    ]
    assert [[(curve.key, curve.dashed) for curve in panel.curves] for panel in panels] == expected
    for panel in panels:
        for curve in panel.curves:
            # step 0 is validation only: no training metric there
            assert curve.points == tuple((step, steps[step][curve.key]) for step in (1, 2, 3, 4)), curve.key
    assert panels[1].curves[0].points[0] == (1, 0.05597388313617557)


def test_rates_over_nothing_are_left_out_not_drawn_as_zeros():
    steps = {1: {"tapo/synthesis_answered": 4.0, "tapo/parse_rate": 0.75, "tapo/constructed_rows": 2.0,
                 "tapo/constructed_acc": 0.5, "tapo/ots_weight_mean/inserted": 0.7},
             2: {"tapo/synthesis_answered": 0.0, "tapo/parse_rate": 0.0, "tapo/constructed_rows": 0.0,
                 "tapo/constructed_acc": 0.0},
             3: {"tapo/synthesis_answered": 3.0, "tapo/parse_rate": 1.0, "tapo/constructed_rows": 0.0,
                 "tapo/fail/dropped_incorrect": 1.0, "tapo/constructed_acc": 0.0}}
    panels = {panel.title.split(" (")[0]: panel for panel in training_panels({"run": steps})}
    assert panels["synthesis parse rate"].curves[0].points == ((1, 0.75), (3, 1.0))
    assert panels["constructed-row accuracy"].curves[0].points == ((1, 0.5), (3, 0.0))  # step 3 spliced one
    assert panels["constructed rows inserted"].curves[0].points == ((1, 2.0), (2, 0.0), (3, 0.0))
    assert panels["OTS weight mean"].curves[0].points == ((1, 0.7),)


def test_a_grpo_run_has_no_curves_in_the_tapo_panels():
    steps = read_run_metrics(FIXTURE_RUN).steps
    panels = training_panels({"grpo": without_tapo(steps), "tapo": steps})
    runs = [[curve.run for curve in panel.curves] for panel in panels]
    assert runs == [["tapo", "tapo"]] + [["grpo", "tapo"]] * 5 + [["tapo"]] * 3


def test_the_kl_and_accuracy_metrics_are_chosen_by_what_the_runs_log():
    assert kl_key({"a": {1: {"actor/ppo_kl": 0.0, "rollout_corr/kl": 0.1}}}) == "actor/ppo_kl"
    assert kl_key({"a": {1: {"actor/ppo_kl": 0.0}}, "b": {1: {"actor/kl_loss": 0.2}}}) == "actor/kl_loss"
    assert kl_key({"a": {1: {"rollout_corr/kl": 0.1}}}) == "rollout_corr/kl"
    run = {1: {"critic/score/mean": 0.4, "train/acc/mean": 0.5, "val-core/x/acc/mean": 0.9}}
    accuracy = training_panels({"a": run})[2]
    assert accuracy.title == "training accuracy (train/acc/mean)" and accuracy.curves[0].points == ((1, 0.5),)


def test_the_png_has_the_figure_size_in_pixels(tmp_path):
    steps = read_run_metrics(FIXTURE_RUN).steps
    out = tmp_path / "fig3.png"
    drawn = plot_training_panels({"grpo": without_tapo(steps), "tapo": steps}, str(out), title="fixture")
    assert png_size(out) == (int(FIGURE_SIZE[0] * DPI), int(FIGURE_SIZE[1] * DPI)) == (1500, 1100)
    assert len(drawn) == 9


def test_nothing_to_plot_is_refused():
    with pytest.raises(ValueError, match="no runs to plot"):
        plot_training_panels({}, "unused.png")


def test_the_cli_overlays_labelled_runs_of_both_formats(tmp_path, capsys):
    out = tmp_path / "fig3.png"
    main([f"file={FIXTURE_RUN}", f"console={CONSOLE}", "-o", str(out)])
    assert png_size(out) == (1500, 1100)
    assert "(file, console)" in capsys.readouterr().out
    assert list(read_runs([FILE_LOG, f"x={CONSOLE}"])) == ["view_run", "x"]  # unlabelled: the run folder's name


@pytest.mark.parametrize("arguments, message", [
    ([f"a={FILE_LOG}", f"a={CONSOLE}"], "two runs are labelled 'a'"),
    (["a=/nowhere/metrics.jsonl"], "no metrics at /nowhere/metrics.jsonl"),
    (["=x"], "empty label"),
])
def test_the_cli_names_the_problem(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit):
        main([*arguments, "-o", str(tmp_path / "fig3.png")])
    assert message in capsys.readouterr().err


def test_an_opsd_run_gets_a_tenth_panel_of_its_kl_estimate(tmp_path):
    steps = read_run_metrics(FIXTURE_RUN).steps
    opsd = {step: {**metrics, "opsd/kl_estimate": 1.0 / step} for step, metrics in without_tapo(steps).items() if step}
    panels = training_panels({"grpo": without_tapo(steps), "opsd": opsd})
    assert len(panels) == 10 and panels[9].title == "OPSD: KL to the privileged teacher (opsd/kl_estimate)"
    assert [(curve.run, curve.points) for curve in panels[9].curves] == [("opsd", ((1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)))]
    # The fourth row makes the figure a third taller; without an OPSD run it keeps its nine panels.
    out = tmp_path / "fig3.png"
    drawn = plot_training_panels({"opsd": opsd}, str(out))
    assert len(drawn) == 10 and png_size(out) == (1500, 1466)
    assert len(training_panels({"grpo": without_tapo(steps)})) == 9
