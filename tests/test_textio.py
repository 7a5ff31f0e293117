"""JSON lines of untrusted model text: `recipe_tapo.textio`'s reader, line by line."""

import json
import tracemalloc

import pytest

from recipe_tapo.textio import MAX_LINE_BYTES, iter_json_lines


def _line_of(size: int) -> bytes:
    """A JSON line (a string value) of exactly `size` bytes, newline not counted."""
    line = json.dumps("x" * (size - 2)).encode("ascii")
    assert len(line) == size
    return line


def _read(path, **kwargs):
    return [(line.line_number, line.value, line.error) for line in iter_json_lines(str(path), **kwargs)]


def test_an_oversized_line_is_one_bad_row_by_number_and_the_lines_after_it_are_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n' + _line_of(101) + b"\n\n" + b'{"a": 2}\n' + _line_of(250) + b"\n" + b'{"a": 3}')
    rows = _read(path, max_line_bytes=100)
    assert [(number, value) for number, value, _ in rows] == [(1, {"a": 1}), (2, None), (4, {"a": 2}), (5, None),
                                                              (6, {"a": 3})]
    assert rows[1][2] == "line 2 has 101 bytes, over the cap of 100 bytes per line: not read"
    assert rows[3][2] == "line 5 has 250 bytes, over the cap of 100 bytes per line: not read"


def test_a_line_exactly_at_the_cap_is_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    at_cap = _line_of(100)
    path.write_bytes(at_cap + b"\n" + at_cap)  # the last line without its newline too
    assert _read(path, max_line_bytes=100) == [(1, json.loads(at_cap), None), (2, json.loads(at_cap), None)]
    path.write_bytes(_line_of(101))  # one byte over, at the end of the file
    assert _read(path, max_line_bytes=100) == [
        (1, None, "line 1 has 101 bytes, over the cap of 100 bytes per line: not read")
    ]


def test_the_default_cap_is_the_module_constant(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_line_of(MAX_LINE_BYTES) + b"\n" + _line_of(MAX_LINE_BYTES + 1) + b"\n" + b"7\n")
    rows = _read(path)
    assert rows[0][2] is None and len(rows[0][1]) == MAX_LINE_BYTES - 2
    assert rows[1][:2] == (2, None) and rows[1][2].startswith(f"line 2 has {MAX_LINE_BYTES + 1} bytes")
    assert rows[2] == (3, 7, None)


def test_an_oversized_line_is_never_held_whole_in_memory(tmp_path):
    path = tmp_path / "rows.jsonl"
    size = 24 * MAX_LINE_BYTES
    path.write_bytes(b'{"a": 1}\n' + _line_of(size) + b"\n" + b'{"a": 2}\n')
    tracemalloc.start()
    try:
        rows = _read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [value for _, value, _ in rows] == [{"a": 1}, None, {"a": 2}]
    assert rows[1][2].startswith(f"line 2 has {size} bytes")
    assert peak < 4 * MAX_LINE_BYTES


def test_bad_utf8_and_non_json_lines_are_still_reported_by_number(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'"\xff\xfe"\n{not json\n[1]\n')
    rows = _read(path, max_line_bytes=100)
    assert rows[0][2].startswith("line 1 is not valid UTF-8") and rows[1][2].startswith("line 2 is not JSON")
    assert rows[2] == (3, [1], None)


def test_a_cap_below_one_byte_is_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"1\n")
    with pytest.raises(ValueError, match="max_line_bytes"):
        list(iter_json_lines(str(path), max_line_bytes=0))
