"""The harness every Ray-starting test goes through: no hang, and a readable failure."""

import time

import pytest

from verl_run import run_logged, step_metrics


def test_failure_reports_exit_code_and_log_tail(tmp_path):
    with pytest.raises(AssertionError, match=r"(?s)exit code 3.*line 2 of the log"):
        run_logged(["bash", "-c", "echo line 1; echo line 2 of the log; exit 3"], str(tmp_path / "log"), timeout_s=30)


def test_hang_is_killed_with_its_children(tmp_path):
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"(?s)timeout after 2s.*waiting"):
        # The child `sleep` stands for Ray's processes: the whole session is killed.
        run_logged(["bash", "-c", "echo waiting; sleep 60 & wait"], str(tmp_path / "log"), timeout_s=2)
    assert time.monotonic() - started < 20


def test_console_metric_lines_are_parsed():
    log = (
        "(TaskRunner pid=1) step:1 - actor/grad_norm:np.float64(0.5) - training/global_step:1 - note:text\n"
        "noise\n"
        "step:2 - critic/score/mean:0.25 - num_turns/min:np.int32(2)\n"
    )
    assert step_metrics(log) == {
        1: {"actor/grad_norm": 0.5, "training/global_step": 1.0},
        2: {"critic/score/mean": 0.25, "num_turns/min": 2.0},
    }
