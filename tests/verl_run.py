"""Run commands that start Ray in a subprocess under a timeout, and read verl's console metrics.

Ray waits forever for resources it will never get instead of failing, so every test that starts
it goes through `run_logged`: on a non-zero exit or a timeout the test fails with the end of the
log, not a hang.
"""

import os
import signal
import subprocess

# The one parser of verl's console metric lines, shared with the run view's figure 3.
from recipe_tapo.view.metrics import console_step_metrics as step_metrics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_logged(cmd: list[str], log_path: str, timeout_s: int, env: dict | None = None, tail_lines: int = 60) -> str:
    """Run `cmd` from the repository root, logging to `log_path`; return the log text.

    Raises:
        AssertionError: on a timeout or a non-zero exit, with the last `tail_lines` of the log.
    """
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "w") as log:
        # A new session, so that a timeout kills Ray's whole process tree with the command.
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
            failure = f"exit code {returncode}" if returncode != 0 else None
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            failure = f"timeout after {timeout_s}s"
    with open(log_path, errors="replace") as log:
        text = log.read()
    if failure:
        tail = "\n".join(text.splitlines()[-tail_lines:])
        raise AssertionError(f"{' '.join(cmd)} failed ({failure}); log {log_path}, last lines:\n{tail}")
    return text


def training_steps(log_text: str) -> dict[int, dict[str, float]]:
    """`step_metrics` of the steps that updated the actor (validation-only lines left out)."""
    return {step: metrics for step, metrics in step_metrics(log_text).items() if "actor/grad_norm" in metrics}
