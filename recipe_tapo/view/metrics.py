"""A run's metrics per step, from verl's file logger JSONL or from its console log.

verl 0.9.1 writes the metrics of every step two ways:
- the file logger (`trainer.logger` includes `file`, path from `VERL_FILE_LOGGER_PATH`): one JSON
  line per log call, `{"step": N, "data": {metric: value}}`;
- the console logger: one line per log call, `step:N - key:value - key:np.float64(0.5) - ...`,
  possibly after a prefix such as Ray's `(TaskRunner pid=1) `.

Both give `{step: {metric: value}}` here, with only the numeric values (orjson writes NaN as null,
and a few console values are strings); the lines of one step are merged.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

from recipe_tapo.textio import iter_json_lines

# The file verl's file logger writes in a run folder of this project's scripts (VERL_FILE_LOGGER_PATH).
METRICS_FILE = "metrics.jsonl"
FILE_LOGGER = "file logger"
CONSOLE_LOG = "console log"
_CONSOLE_STEP_LINE = re.compile(r"step:(\d+) - (.*)$")
_NUMPY_SCALAR = re.compile(r"np\.\w+\((.*)\)")

StepMetrics = dict[int, dict[str, float]]


@dataclass(frozen=True)
class RunMetrics:
    """The metrics of one run: where they came from, in which format, and the lines left out."""

    path: str
    source: str  # FILE_LOGGER or CONSOLE_LOG
    steps: StepMetrics
    skipped_lines: int = 0


def _console_value(raw: str) -> float:
    raw = raw.strip()
    wrapped = _NUMPY_SCALAR.fullmatch(raw)
    return float(ast.literal_eval(wrapped.group(1) if wrapped else raw))


def console_step_metrics(log_text: str) -> StepMetrics:
    """verl's console-logger lines (`step:N - key:value - ...`) as {step: {key: value}}.

    Values that are not numbers are left out; two lines of the same step are merged.
    """
    steps: StepMetrics = {}
    for line in log_text.splitlines():
        match = _CONSOLE_STEP_LINE.search(line)
        if not match:
            continue
        metrics = steps.setdefault(int(match.group(1)), {})
        for item in match.group(2).split(" - "):
            key, _, value = item.partition(":")
            try:
                metrics[key.strip()] = _console_value(value)
            except (ValueError, SyntaxError):
                continue
    return steps


def _is_file_logger_line(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("step"), int) and isinstance(value.get("data"), dict)


def file_logger_step_metrics(path: str) -> tuple[StepMetrics, int]:
    """verl's file-logger JSONL as {step: {key: value}} and the number of lines left out (broken,
    or not a `{"step": N, "data": {...}}` object)."""
    steps: StepMetrics = {}
    skipped = 0
    for line in iter_json_lines(path):
        if not (line.ok and _is_file_logger_line(line.value)):
            skipped += 1
            continue
        metrics = steps.setdefault(line.value["step"], {})
        for key, value in line.value["data"].items():
            # bool is an int in Python, but no verl metric is a flag worth plotting as one
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[key] = float(value)
    return steps, skipped


def _first_json_line_is_file_logger(path: str) -> bool:
    for line in iter_json_lines(path):
        return line.ok and _is_file_logger_line(line.value)
    return False


def metrics_file_of(path: str) -> str:
    """The metrics file `path` names: itself, or a run folder's `metrics.jsonl`.

    Raises:
        FileNotFoundError: `path` does not exist, or is a folder without `metrics.jsonl`.
    """
    if os.path.isdir(path):
        candidate = os.path.join(path, METRICS_FILE)
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f"no {METRICS_FILE} in the run folder {path}")
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no metrics at {path}: no such file or folder")
    return path


def read_run_metrics(path: str) -> RunMetrics:
    """The metrics of the run at `path`: a run folder (its `metrics.jsonl`), a file-logger JSONL or
    a console log.

    A file whose first non-blank line is a `{"step": N, "data": {...}}` object is the file logger's;
    any other file is read as a console log (undecodable bytes replaced).

    Raises:
        FileNotFoundError: see `metrics_file_of`.
        ValueError: the file holds no metrics in either format (an empty or unrelated file).
    """
    file = metrics_file_of(path)
    if _first_json_line_is_file_logger(file):
        steps, skipped = file_logger_step_metrics(file)
        result = RunMetrics(file, FILE_LOGGER, steps, skipped)
    else:
        with open(file, encoding="utf-8", errors="replace") as log:
            result = RunMetrics(file, CONSOLE_LOG, console_step_metrics(log.read()))
    if not any(result.steps.values()):
        raise ValueError(f"no metrics in {file}: neither verl's file-logger lines "
                         '({"step": N, "data": {...}}) nor its console lines (step:N - key:value - ...)')
    return result
