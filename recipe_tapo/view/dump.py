"""The TAPO trainer's inspection dumps, read for the run view: where they are, what they hold.

A dump is `step_NNNNNN.jsonl`, one JSON object per synthesis attempt of that step (written by
`RayTAPOTrainer._write_dump`; its fields are those of `workers.synthesis_plan._new_record` plus
`advantage` and `ots_weights`). Every field is read defensively: an old dump may lack a field, a
newer one may add fields, and a value of an unexpected type counts as missing. Lines that cannot
be read (bad bytes, over `textio.MAX_LINE_BYTES`, not JSON, not an object) are skipped and listed.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from recipe_tapo.synthesis import SynthesisFailure
from recipe_tapo.textio import iter_json_lines
from recipe_tapo.view.metrics import METRICS_FILE

DUMP_FOLDER = "tapo_dump"
DUMP_FILE = re.compile(r"^step_(\d+)\.jsonl$")
INSERTED = "ok"
UNKNOWN_STATUS = "unknown"
# Statuses of an answered request whose output did not parse (prompt_too_long is never answered);
# the same set the trainer's `tapo/parse_rate` counts.
PARSE_FAILURES = frozenset(reason.value for reason in SynthesisFailure) - {SynthesisFailure.PROMPT_TOO_LONG.value}

# What each attempt status means (`workers.synthesis_plan.ATTEMPT_STATUSES`; a test keeps them in step).
STATUS_MEANINGS = {
    "ok": "inserted into the training batch",
    "prompt_too_long": "the synthesis prompt does not fit tapo.synthesis.max_prompt_tokens",
    "request_failed": "the rollout server gave no text for this request",
    "timeout": "no answer by the round's deadline (tapo.synthesis.timeout_s): aborted on the server",
    "dropped_incorrect": "scored wrong, and tapo.scoring.keep is correct_only",
    "error": "an unexpected exception on this attempt (the trainer's log has it)",
    "empty_output": "the synthesis output is blank",
    "missing_reconstruction": "the output has no <reconstruction> block",
    "empty_reconstruction": "the <reconstruction> block is empty",
    "missing_anchor": "the output has no <anchor> block (anchor mode)",
    "empty_anchor": "the <anchor> block is empty",
    "anchor_not_found": "the quoted step is nowhere in the wrong answer",
    "anchor_ambiguous": "the quoted step occurs more than once in the wrong answer",
    "no_departure": "the reconstruction never departs from the wrong answer",
    "departure_inside_line": "the copy rewrote part of a line of the wrong answer (tapo.splicing.reject_inside_line_departure)",
    "no_final_answer": "the corrected continuation gives no final answer (marker missing)",
    "no_token_boundary": "no token boundary of the wrong answer at the cut",
    "prefix_too_short": "the kept prefix is below tapo.splicing.min_prefix_tokens / min_prefix_fraction",
    "special_token_in_text": "the inserted text tokenises to a special token",
    "too_long": "the trajectory is longer than the response length",
}


@dataclass(frozen=True)
class Attempt:
    """One dump record (any fields) and where it was read: file name, line, the file's step."""

    record: dict[str, Any]
    source: str
    line_number: int
    file_step: int | None = None

    @property
    def step(self) -> int | None:
        """The record's `step`, else the step in its file's name."""
        step = int_field(self.record, "step")
        return self.file_step if step is None else step

    @property
    def status(self) -> str:
        return text_field(self.record, "status") or UNKNOWN_STATUS


@dataclass(frozen=True)
class SkippedLine:
    source: str
    line_number: int
    reason: str


@dataclass
class Dump:
    """The attempts of the dump files read, in file and line order, and the lines skipped."""

    files: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[SkippedLine] = field(default_factory=list)


@dataclass(frozen=True)
class RunInputs:
    """What a RUN_OR_DUMP path holds: dump files (sorted by step) and a metrics file, if any."""

    name: str
    dump_files: list[str]
    metrics_path: str | None


def _file_step(path: str) -> int | None:
    match = DUMP_FILE.match(os.path.basename(path))
    return int(match.group(1)) if match else None


def _dump_files_in(folder: str) -> list[str]:
    files = [path for path in glob.glob(os.path.join(folder, "step_*.jsonl")) if _file_step(path) is not None]
    return sorted(files, key=_file_step)


def locate_inputs(path: str) -> RunInputs:
    """The dump files and metrics file of `path`: a run folder (`tapo_dump/step_NNNNNN.jsonl` and/or
    `metrics.jsonl`), a dump folder (`step_NNNNNN.jsonl`) or one dump file.

    Raises:
        FileNotFoundError: `path` does not exist, or is a folder with neither dumps nor metrics.
    """
    if os.path.isfile(path):
        return RunInputs(os.path.basename(path), [path], None)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no run, dump folder or dump file at {path}: no such file or folder")
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    metrics = os.path.join(path, METRICS_FILE)
    metrics = metrics if os.path.isfile(metrics) else None
    dump_folder = os.path.join(path, DUMP_FOLDER)
    files = _dump_files_in(dump_folder if os.path.isdir(dump_folder) else path)
    if not files and metrics is None and not os.path.isdir(dump_folder):
        raise FileNotFoundError(f"nothing to show in {path}: no {DUMP_FOLDER}/ folder, no step_NNNNNN.jsonl "
                                f"dump file and no {METRICS_FILE}")
    return RunInputs(name, files, metrics)


def read_dump(files: list[str]) -> Dump:
    """Every readable record of `files`; each unreadable line is one `SkippedLine`."""
    dump = Dump(files=list(files))
    for path in files:
        source = os.path.basename(path)
        for line in iter_json_lines(path):
            if not line.ok:
                dump.skipped.append(SkippedLine(source, line.line_number, line.error))
            elif not isinstance(line.value, dict):
                dump.skipped.append(SkippedLine(source, line.line_number,
                                                f"line {line.line_number} is not a JSON object"))
            else:
                dump.attempts.append(Attempt(line.value, source, line.line_number, _file_step(path)))
    return dump


# -- fields, read defensively -------------------------------------------------------------------


def text_field(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def number_field(record: dict[str, Any], key: str) -> float | None:
    """A finite number (a bool counts as 0 or 1), else None."""
    value = record.get(key)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def int_field(record: dict[str, Any], key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def int_list_field(record: dict[str, Any], key: str) -> list[int] | None:
    value = record.get(key)
    if isinstance(value, list) and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        return value
    return None


def number_list_field(record: dict[str, Any], key: str) -> list[float] | None:
    """A list of finite numbers, else None."""
    value = record.get(key)
    if isinstance(value, list) and all(isinstance(item, int | float) and not isinstance(item, bool)
                                       and math.isfinite(item) for item in value):
        return [float(item) for item in value]
    return None


def bool_field(record: dict[str, Any], key: str) -> bool | None:
    value = record.get(key)
    return value if isinstance(value, bool) else None


# -- counts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DumpSummary:
    """Counts over attempts, defined as the trainer's `tapo/` metrics define them.

    `answered`: attempts with a synthesis output; `parsed`: those whose output parsed; `scored`:
    constructions the reward scored (`acc` set), `correct` of them right.
    """

    steps: tuple[int, ...]
    attempts: int
    inserted: int
    answered: int
    parsed: int
    scored: int
    correct: int

    @property
    def parse_rate(self) -> float | None:
        return self.parsed / self.answered if self.answered else None

    @property
    def construction_accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None


def summarize(attempts: list[Attempt]) -> DumpSummary:
    answered = [attempt for attempt in attempts if text_field(attempt.record, "synthesis") is not None]
    scored = [bool_field(attempt.record, "acc") for attempt in attempts]
    scored = [acc for acc in scored if acc is not None]
    return DumpSummary(
        steps=tuple(sorted({attempt.step for attempt in attempts if attempt.step is not None})),
        attempts=len(attempts),
        inserted=sum(1 for attempt in attempts if attempt.status == INSERTED),
        answered=len(answered),
        parsed=sum(1 for attempt in answered if attempt.status not in PARSE_FAILURES),
        scored=len(scored),
        correct=sum(scored),
    )


def status_counts_by_step(attempts: list[Attempt]) -> dict[int | None, Counter]:
    """{step: Counter of statuses}, steps in order (attempts without a step last, under None)."""
    counts: dict[int | None, Counter] = {}
    for attempt in attempts:
        counts.setdefault(attempt.step, Counter())[attempt.status] += 1
    return dict(sorted(counts.items(), key=lambda item: (item[0] is None, item[0] or 0)))


def cap_per_step(attempts: list[Attempt], limit: int | None) -> list[Attempt]:
    """At most `limit` attempts of each step (None: all), inserted ones first, then the others,
    each in dump order; the result keeps dump order."""
    if limit is None:
        return list(attempts)
    kept: set[int] = set()
    by_step: dict[int | None, list[int]] = {}
    for position, attempt in enumerate(attempts):
        by_step.setdefault(attempt.step, []).append(position)
    for positions in by_step.values():
        ranked = sorted(positions, key=lambda position: attempts[position].status != INSERTED)
        kept.update(ranked[:limit])
    return [attempt for position, attempt in enumerate(attempts) if position in kept]
