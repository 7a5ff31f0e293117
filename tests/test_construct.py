"""The offline `python -m recipe_tapo.construct` command."""

import json
import subprocess
import sys

import pytest

from recipe_tapo.construct import main

WRONG = "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nSo the answer is \\boxed{55}."
RECON = "First, 7 * 8 = 54.\nWait, 7 * 8 is 56, not 54. Then 56 + 1 = 57.\nSo the answer is \\boxed{57}."
GOOD = f"<analysis>7 * 8 is 56</analysis>\n<reconstruction>\n{RECON}\n</reconstruction>"


def _row(**fields):
    row = {"prompt": "What is 7 * 8 + 1?", "wrong": WRONG, "right": "7 * 8 + 1 = 57, \\boxed{57}", "synthesis": GOOD}
    row.update(fields)
    return json.dumps(row)


def _run(tmp_path, lines, *options):
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return source, sink, [*options, "--input", str(source), "--output", str(sink)]


def _records(sink):
    return [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]


def test_one_record_per_row_in_order_and_bad_rows_do_not_stop_the_others(
    tmp_path, tapo_tokenizer_dir, tapo_tokenizer, capsys
):
    lines = [
        _row(),
        _row(synthesis="<analysis>no idea</analysis>"),
        "{not json",
        "",
        _row(synthesis=f"<reconstruction>{WRONG}</reconstruction>"),
        json.dumps({"wrong": 3, "synthesis": GOOD}),
        json.dumps(["a", "list"]),
        _row(synthesis="<reconstruction>Let me redo it: \\boxed{57}</reconstruction>"),
    ]
    _, sink, argv = _run(tmp_path, lines, "--tokenizer", tapo_tokenizer_dir, "--min-prefix-tokens", "1")
    assert main(argv) == 0
    records = _records(sink)
    assert [record["status"] for record in records] == [
        "ok",
        "missing_reconstruction",
        "invalid_row",
        "no_departure",
        "invalid_row",
        "invalid_row",
        "prefix_too_short",
    ]
    assert "field 'wrong' must be a string" in records[4]["error"]
    assert "invalid_row=3" in capsys.readouterr().err

    ok = records[0]
    wrong_ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    assert ok["trajectory"] == RECON
    assert ok["token_ids"][: ok["cut_tokens"]] == wrong_ids[: ok["cut_tokens"]]
    assert ok["token_ids"][-1] == tapo_tokenizer.eos_token_id
    assert WRONG[: ok["cut_chars"]] == tapo_tokenizer.decode(wrong_ids[: ok["cut_tokens"]])
    assert ok["prefix_fraction"] == pytest.approx(ok["cut_tokens"] / len(wrong_ids))
    assert ok["analysis"] == "7 * 8 is 56"
    assert ok["reward"] is None  # no ground truth given
    assert records[1]["token_ids"] == [] and records[1]["trajectory"] == ""


def test_options_reach_the_splicer(tmp_path, tapo_tokenizer_dir):
    _, sink, argv = _run(
        tmp_path, [_row(), _row()], "--tokenizer", tapo_tokenizer_dir, "--min-prefix-tokens", "1", "--max-length", "12"
    )
    assert main(argv) == 0
    assert [record["status"] for record in _records(sink)] == ["too_long", "too_long"]

    anchor_output = (
        '<analysis>x</analysis><anchor>"Then 54 + 1"</anchor>'
        "<reconstruction>Wait, 56 + 1 = 57, \\boxed{57}.</reconstruction>"
    )
    expected = {
        # default: y- kept up to the end of the quoted step, which the reflection follows
        "after_error": "First, 7 * 8 = 54.\nThen 54 + 1 Wait, 56 + 1 = 57, \\boxed{57}.",
        "before_error": "First, 7 * 8 = 54.\nWait, 56 + 1 = 57, \\boxed{57}.",
    }
    for prefix_end, trajectory in expected.items():
        options = ["--mode", "anchor", "--min-prefix-tokens", "1", "--prefix-end", prefix_end]
        _, sink, argv = _run(tmp_path, [_row(synthesis=anchor_output)], "--tokenizer", tapo_tokenizer_dir, *options)
        assert main(argv) == 0
        assert _records(sink)[0]["trajectory"] == trajectory


def test_full_reconstruction_flag(tmp_path, tapo_tokenizer_dir, tapo_tokenizer):
    _, sink, argv = _run(tmp_path, [_row()], "--tokenizer", tapo_tokenizer_dir, "--full-reconstruction")
    assert main(argv) == 0
    record = _records(sink)[0]
    assert record["status"] == "ok" and record["cut_tokens"] == 0 and record["trajectory"] == RECON
    assert record["token_ids"] == tapo_tokenizer.encode(RECON, add_special_tokens=False) + [tapo_tokenizer.eos_token_id]
    options = ["--full-reconstruction", "--mode", "anchor"]
    _, _, argv = _run(tmp_path, [_row()], "--tokenizer", tapo_tokenizer_dir, *options)
    with pytest.raises(SystemExit, match="full_reconstruction=true needs tapo.synthesis.mode=verbatim"):
        main(argv)


def test_a_line_that_is_not_utf8_is_one_invalid_row(tmp_path, tapo_tokenizer_dir, capsys):
    source, sink = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = _row().encode("utf-8")
    source.write_bytes(good + b"\n" + b'{"wrong": "7 \xff\xfe", "synthesis": "x"}\n' + good + b"\n")
    argv = ["--tokenizer", tapo_tokenizer_dir, "--min-prefix-tokens", "1"]
    argv += ["--input", str(source), "--output", str(sink)]
    assert main(argv) == 0
    records = _records(sink)
    assert [record["status"] for record in records] == ["ok", "invalid_row", "ok"]
    assert "line 2 is not valid UTF-8" in records[1]["error"]
    assert "invalid_row=1 ok=2" in capsys.readouterr().err


def test_a_lone_surrogate_in_model_text_is_written_and_the_run_goes_on(tmp_path, tapo_tokenizer_dir):
    lonely = "<analysis>7 * 8 is 56 \ud800</analysis>\n<reconstruction>\n" + RECON + "\n</reconstruction>"
    lines = [_row(synthesis=lonely), _row(), _row(wrong=WRONG + " \udfff", synthesis=lonely), _row()]
    _, sink, argv = _run(tmp_path, lines, "--tokenizer", tapo_tokenizer_dir, "--min-prefix-tokens", "1")
    assert main(argv) == 0
    records = _records(sink)
    assert len(records) == 4
    assert records[0]["status"] == "ok" and records[0]["analysis"] == "7 * 8 is 56 \ud800"
    assert records[1]["status"] == records[3]["status"] == "ok"
    assert records[2]["status"] in {"ok", "error"}  # the tokenizer may refuse the surrogate: one row, not the run
    sink.read_bytes().decode("ascii")  # written as escapes


def test_invalid_options_are_refused(tmp_path, tapo_tokenizer_dir):
    _, _, argv = _run(tmp_path, [_row()], "--tokenizer", tapo_tokenizer_dir, "--min-prefix-fraction", "1.5")
    with pytest.raises(SystemExit, match="min_prefix_fraction"):
        main(argv)


def test_reward_column_scores_the_trajectory(tmp_path, tapo_tokenizer_dir):
    lines = [_row(ground_truth="57"), _row(ground_truth="58"), _row(synthesis="", ground_truth="57")]
    _, sink, argv = _run(tmp_path, lines, "--tokenizer", tapo_tokenizer_dir, "--min-prefix-tokens", "1")
    assert main(argv) == 0
    records = _records(sink)
    assert [(record["reward"], record["acc"], record["pred"]) for record in records] == [
        (1.0, True, "57"),
        (0.0, False, "57"),
        (None, None, None),
    ]
    assert records[2]["status"] == "empty_output"


def test_runs_as_a_module(tmp_path, tapo_tokenizer_dir):
    _, sink, argv = _run(tmp_path, [_row()], "--tokenizer", tapo_tokenizer_dir, "--min-prefix-tokens", "1")
    completed = subprocess.run(
        [sys.executable, "-m", "recipe_tapo.construct", *argv], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stderr.strip().splitlines()[-1] == "ok=1"
    assert _records(sink)[0]["status"] == "ok"
