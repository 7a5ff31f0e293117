"""Reading and writing JSON lines that hold model text, which is untrusted.

A model can write any string, including lone UTF-16 surrogates (e.g. "\\ud800") that Python's
strict UTF-8 codec refuses to encode, and an input file can hold bytes that are not UTF-8. Neither
may end a run or lose the rows around it: every reader and writer of model text goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any


def to_json_line(record: Any) -> str:
    """One JSON line (with its newline) for `record`, whatever strings it holds.

    Written with `ensure_ascii=True`, so the line is pure ASCII: a lone surrogate becomes the
    escape `\\ud800`, which `json.loads` reads back as the same string, and no encoder can fail.
    """
    return json.dumps(record, ensure_ascii=True) + "\n"


def write_json_line(sink: IO[str], record: Any) -> None:
    """Append `record` to an open text file as one JSON line (see `to_json_line`)."""
    sink.write(to_json_line(record))


@dataclass(frozen=True)
class JsonLine:
    """One non-blank input line: its 1-based number and either the decoded value or the problem."""

    line_number: int
    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def iter_json_lines(path: str) -> Iterator[JsonLine]:
    """Every non-blank line of a JSONL file, parsed, or the reason it could not be.

    The file is read as bytes, so a line that is not valid UTF-8 or not valid JSON is reported as
    that line's error (with its number) and the lines after it are still read.
    """
    with open(path, "rb") as source:
        for line_number, raw in enumerate(source, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield JsonLine(line_number, error=f"line {line_number} is not valid UTF-8: {error}")
                continue
            try:
                yield JsonLine(line_number, value=json.loads(text))
            except json.JSONDecodeError as error:
                yield JsonLine(line_number, error=f"line {line_number} is not JSON: {error}")
