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

# The longest JSON line a reader parses, in bytes before its newline. A longer line is one bad row,
# reported and read past without being held in memory (a 4.9 MB line once took 11 s and 2 GB to parse).
MAX_LINE_BYTES = 1 << 20  # 1 MiB
_SKIP_PIECE_BYTES = 1 << 16


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


def iter_json_lines(path: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[JsonLine]:
    """Every non-blank line of a JSONL file, parsed, or the reason it could not be.

    The file is read as bytes, so a line that is not valid UTF-8 or not valid JSON is reported as
    that line's error (with its number) and the lines after it are still read. So is a line of more
    than `max_line_bytes` bytes (not counting its newline): it is never held whole in memory, only
    read past in bounded pieces, and the lines after it are read as usual.
    """
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
    with open(path, "rb") as source:
        line_number = 0
        while True:
            # At most one byte over the cap: enough to tell a line at the cap (its newline fits) from one over it.
            raw = source.readline(max_line_bytes + 1)
            if not raw:
                return
            line_number += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                size = len(raw) + _skip_rest_of_line(source)
                yield JsonLine(line_number, error=f"line {line_number} has {size} bytes, over the cap of "
                                                  f"{max_line_bytes} bytes per line: not read")
                continue
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


def _skip_rest_of_line(source: IO[bytes]) -> int:
    """Read past the rest of the current line (its newline included) in bounded pieces; the bytes of
    the line left, not counting that newline."""
    skipped = 0
    while True:
        piece = source.readline(_SKIP_PIECE_BYTES)
        if not piece:
            return skipped
        if piece.endswith(b"\n"):
            return skipped + len(piece) - 1
        skipped += len(piece)
