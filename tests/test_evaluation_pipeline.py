"""Sampling + scoring for evaluation and the difficulty filter, with scripted and with tiny-model generators."""

import json

import pandas as pd
import pytest

from recipe_tapo.data import difficulty_filter
from recipe_tapo.data.rows import make_row
from recipe_tapo.evaluation import evaluate
from recipe_tapo.evaluation.sampling import sample_and_score
from recipe_tapo.generation import SamplingSettings
from recipe_tapo.textio import iter_json_lines


class ScriptedGenerator:
    """Returns fixed responses per prompt position, as token ids, like a real backend."""

    def __init__(self, tokenizer, responses_per_prompt):
        self.tokenizer = tokenizer
        self.responses = responses_per_prompt

    def generate(self, prompt_ids, settings):
        assert len(prompt_ids) == len(self.responses)
        return [[self.tokenizer.encode(text, add_special_tokens=False) for text in texts[: settings.n]]
                for texts in self.responses]


@pytest.fixture(scope="module")
def tiny_assets(tmp_path_factory):
    from recipe_tapo.tiny_assets import build_all

    return build_all(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def tokenizer(tiny_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_assets["model"])


def test_responses_are_scored_by_the_math_reward_and_bad_rows_skipped(tokenizer):
    rows = [
        make_row("aime2024", "What is 3 + 4?", "7", "test", 0, "p0"),
        {**make_row("aime2024", "Broken", "1", "test", 1, "p1"), "prompt": "not a chat"},
        {**make_row("aime2024", "No answer", "1", "test", 2, "p2"), "reward_model": {"ground_truth": " "}},
        make_row("aime2024", "What is 1/2 + 1/4?", "\\frac{3}{4}", "test", 3, "p3"),
        make_row("aime2024", "x" * 400, "1", "test", 4, "p4"),
    ]
    generator = ScriptedGenerator(tokenizer, [
        ["So \\boxed{7}.", "\\boxed{8}", "wait, it is \\boxed{7}"],
        ["\\boxed{0.75}", "\\boxed{3/4}", "no answer"],
    ])
    outcome = sample_and_score(rows, tokenizer, generator, SamplingSettings(n=3), max_prompt_tokens=300)
    assert dict(outcome.skipped) == {"malformed_prompt": 1, "missing_ground_truth": 1, "prompt_too_long": 1}
    assert [(r.problem_id, r.correct) for r in outcome.scored] == [
        ("p0", [True, False, True]),
        ("p3", [True, True, False]),
    ]


def test_filter_keeps_problems_within_the_bounds(tokenizer, tiny_assets, tmp_path, monkeypatch):
    rows = [make_row("deepscaler", f"What is {i} + {i}?", str(2 * i), "train", i, f"d{i}") for i in range(3)]
    source = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(source, index=False)
    # Problem 0: 0 of 4 right, problem 1: 2 of 4, problem 2: 4 of 4.
    scripted = [["\\boxed{1}"] * 4, ["\\boxed{2}", "\\boxed{2}", "\\boxed{5}", "x"], ["\\boxed{4}"] * 4]
    monkeypatch.setattr(difficulty_filter, "generator_from_args", lambda *a: ScriptedGenerator(tokenizer, scripted))
    out = tmp_path / "zpd.parquet"
    summary = difficulty_filter.main(["--model", tiny_assets["model"], "--input", str(source), "--output", str(out),
                                      "--k", "4", "--min-correct", "1", "--max-correct", "3"])
    kept = pd.read_parquet(out)
    assert kept["extra_info"].map(lambda e: e["source_id"]).tolist() == ["d1"]
    assert list(kept.columns) == list(pd.read_parquet(source).columns)
    assert summary["correct_count_histogram"] == {"0": 1, "1": 0, "2": 1, "3": 0, "4": 1}
    counts = [json.loads(line) for line in open(f"{out}.counts.jsonl")]
    assert [c["correct"] for c in counts] == [0, 2, 4]


def test_filter_applies_other_bounds_to_a_previous_runs_counts_without_a_model(tokenizer, tiny_assets, tmp_path,
                                                                             monkeypatch):
    rows = [make_row("deepscaler", f"What is {i} + {i}?", str(2 * i), "train", i, f"d{i}") for i in range(4)]
    source = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(source, index=False)
    scripted = [["\\boxed{1}"] * 4, ["\\boxed{2}", "x", "x", "x"], ["\\boxed{4}"] * 3 + ["x"], ["\\boxed{6}"] * 4]
    monkeypatch.setattr(difficulty_filter, "generator_from_args", lambda *a: ScriptedGenerator(tokenizer, scripted))
    sampled = tmp_path / "zpd.parquet"
    difficulty_filter.main(["--model", tiny_assets["model"], "--input", str(source), "--output", str(sampled),
                            "--k", "4", "--min-correct", "1", "--max-correct", "3"])
    monkeypatch.setattr(difficulty_filter, "generator_from_args", lambda *a: pytest.fail("sampled again"))
    # The same bounds rebuild the same pool; other bounds choose from the same counts.
    for bounds, expected in ((("1", "3"), ["d1", "d2"]), (("3", "4"), ["d2", "d3"])):
        out = tmp_path / f"again_{bounds[0]}.parquet"
        summary = difficulty_filter.main(["--input", str(source), "--output", str(out), "--k", "4",
                                          "--min-correct", bounds[0], "--max-correct", bounds[1],
                                          "--counts-from", f"{sampled}.counts.jsonl"])
        assert pd.read_parquet(out)["extra_info"].map(lambda e: e["source_id"]).tolist() == expected
        assert summary["correct_count_histogram"] == {"0": 1, "1": 1, "2": 0, "3": 1, "4": 1}
        assert open(f"{out}.counts.jsonl").read() == open(f"{sampled}.counts.jsonl").read()
    assert pd.read_parquet(tmp_path / "again_1.parquet").equals(pd.read_parquet(sampled))


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:-1], "has 3 records, the input has 4 problems: it was written for another input"),
    (lambda lines: [lines[1], lines[0], *lines[2:]], "record 0 is row 1, problem 'd1'; the input's row 0 is problem 'd0'"),
    (lambda lines: [lines[0].replace('"samples": 4', '"samples": 8'), *lines[1:]], "problem 'd0' was sampled 8 times, not --k 4"),
    (lambda lines: ["{not json", *lines[1:]], "line 1 is not a counts record"),
    (lambda lines: ['{"correct": "\\ud800"}', *lines[1:]], "record 0 is row None"),
    (lambda lines: [lines[0].replace('"correct": 0', '"correct": "3"'), *lines[1:]],
     "problem 'd0' has correct count '3', not a whole number from 0 to --k 4"),
    (lambda lines: [lines[0].replace('"correct": 0', '"correct": 9'), *lines[1:]],
     "problem 'd0' has correct count 9, not a whole number from 0 to --k 4"),
])
def test_filter_refuses_counts_written_for_another_input_naming_the_mismatch(tmp_path, edit, message):
    rows = [make_row("deepscaler", f"What is {i} + {i}?", str(2 * i), "train", i, f"d{i}") for i in range(4)]
    source = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(source, index=False)
    lines = [json.dumps({"problem_id": f"d{i}", "row": i, "correct": i, "samples": 4, "skipped": None}) for i in range(4)]
    counts = tmp_path / "counts.jsonl"
    counts.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(SystemExit) as stop:
        difficulty_filter.main(["--input", str(source), "--output", str(tmp_path / "out.parquet"), "--k", "4", "--max-correct", "3",
                                "--counts-from", str(counts)])
    assert message in str(stop.value)
    assert not (tmp_path / "out.parquet").exists()


def test_filter_needs_a_model_or_counts(tmp_path, capsys):
    with pytest.raises(SystemExit):
        difficulty_filter.main(["--input", "x", "--output", "y"])
    assert "--model is required" in capsys.readouterr().err


def test_filter_refuses_impossible_bounds(tiny_assets, tmp_path):
    with pytest.raises(SystemExit):
        difficulty_filter.main(["--model", tiny_assets["model"], "--input", "x", "--output", "y",
                                "--k", "8", "--min-correct", "5", "--max-correct", "9"])


def test_filter_end_to_end_on_the_tiny_model(tiny_assets, tmp_path):
    out = tmp_path / "kept.parquet"
    summary = difficulty_filter.main(["--model", tiny_assets["model"], "--input", tiny_assets["train"],
                                      "--output", str(out), "--k", "2", "--min-correct", "0", "--max-correct", "2",
                                      "--max-new-tokens", "4", "--limit", "3", "--backend", "hf"])
    assert summary["scored"] == 3 and summary["kept"] == 3
    assert len(pd.read_parquet(out)) == 3


def test_evaluate_end_to_end_on_the_tiny_model(tiny_assets, tmp_path):
    report = evaluate.main(["--model", tiny_assets["model"], "--data", tiny_assets["val"], "--out-dir", str(tmp_path),
                            "--n", "4", "--k", "1", "2", "4", "--max-new-tokens", "6", "--limit", "3",
                            "--backend", "hf"])
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert saved == json.loads(json.dumps(report))
    metrics = saved["benchmarks"]["tiny_arithmetic"]["metrics"]
    assert set(metrics) >= {"pass@1", "pass@2", "pass@4", "dsr", "err"}
    assert 0.0 <= metrics["pass@1"] <= metrics["pass@2"] <= metrics["pass@4"] <= 100.0
    samples = [json.loads(line) for line in open(tmp_path / "samples.jsonl")]
    assert len(samples) == 12 and {s["benchmark"] for s in samples} == {"tiny_arithmetic"}
    assert "| tiny_arithmetic |" in (tmp_path / "eval_results.md").read_text()


class ModelText(list):
    """What a generator returns for one response, carrying the exact text the model wrote."""

    def __init__(self, text):
        super().__init__([0])
        self.text = text


class RawTextTokenizer:
    """The tiny tokenizer, except that a `ModelText` decodes to its text, whatever string that is."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def decode(self, ids, **kwargs):
        return ids.text if isinstance(ids, ModelText) else self._tokenizer.decode(ids, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class TextGenerator:
    """A generator that returns, per prompt, the given strings as the model's responses."""

    def __init__(self, texts_per_prompt):
        self.texts = texts_per_prompt

    def generate(self, prompt_ids, settings):
        assert len(prompt_ids) == len(self.texts)
        return [[ModelText(text) for text in texts[: settings.n]] for texts in self.texts]


@pytest.fixture
def model_writes(monkeypatch, tokenizer):
    """Route evaluate's and the filter's generation to `TextGenerator(texts)`: call with the texts."""
    import transformers

    class Auto:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return RawTextTokenizer(tokenizer)

    monkeypatch.setattr(transformers, "AutoTokenizer", Auto)

    def use(texts_per_prompt):
        generator = TextGenerator(texts_per_prompt)
        monkeypatch.setattr(evaluate, "generator_from_args", lambda *a: generator)
        monkeypatch.setattr(difficulty_filter, "generator_from_args", lambda *a: generator)

    return use


LONE_SURROGATES = ["\ud800 so \\boxed{7}", "\udfff", "\\boxed{\udc80}"]


def test_evaluation_keeps_and_counts_responses_that_are_not_valid_text(model_writes, tiny_assets, tmp_path):
    source = tmp_path / "bench.parquet"
    pd.DataFrame([make_row("aime2024", "What is 3 + 4?", "7", "test", 0, "p0")]).to_parquet(source, index=False)
    model_writes([LONE_SURROGATES + ["fine: \\boxed{7}"]])
    report = evaluate.main(["--model", tiny_assets["model"], "--data", str(source), "--out-dir", str(tmp_path),
                            "--n", "4", "--k", "1"])
    lines = list(iter_json_lines(str(tmp_path / "samples.jsonl")))
    assert all(line.ok for line in lines)
    assert [line.value["response"] for line in lines] == LONE_SURROGATES + ["fine: \\boxed{7}"]
    assert [line.value["correct"] for line in lines] == [True, False, False, True]
    assert report["settings"]["bad_responses"] == {"invalid_unicode": 3}
    assert json.loads((tmp_path / "eval_results.json").read_text())["settings"]["bad_responses"] == {
        "invalid_unicode": 3}


def test_filter_survives_any_model_text_and_a_reward_that_raises(model_writes, tiny_assets, tmp_path, monkeypatch):
    from recipe_tapo.reward import math_reward

    score = math_reward.compute_score

    def raising_on_one_text(data_source, response, *args, **kwargs):
        if response == "makes the reward raise":
            raise RuntimeError("reward failure")
        return score(data_source, response, *args, **kwargs)

    monkeypatch.setattr(math_reward, "compute_score", raising_on_one_text)
    source = tmp_path / "train.parquet"
    pd.DataFrame([make_row("deepscaler", "What is 1 + 1?", "2", "train", 0, "d0")]).to_parquet(source, index=False)
    model_writes([["\\boxed{2}", "\ud800\\boxed{2}", "makes the reward raise", "\udfff"]])
    out = tmp_path / "zpd.parquet"
    summary = difficulty_filter.main(["--model", tiny_assets["model"], "--input", str(source), "--output", str(out),
                                      "--k", "4", "--min-correct", "1", "--max-correct", "3"])
    assert summary["bad_responses"] == {"invalid_unicode": 2, "score_error": 1}
    assert summary["kept"] == 1
    (line,) = iter_json_lines(f"{out}.counts.jsonl")
    assert line.ok and line.value["correct"] == 2


def test_filter_counts_list_skipped_problems_with_their_reason(tokenizer, tiny_assets, tmp_path, monkeypatch):
    """Every input problem has its line in `<output>.counts.jsonl`, in input order."""
    rows = [
        make_row("deepscaler", "What is 1 + 1?", "2", "train", 0, "d0"),
        {**make_row("deepscaler", "Broken", "1", "train", 1, "d1"), "prompt": []},
        {**make_row("deepscaler", "No answer", "1", "train", 2, "d2"), "reward_model": {"ground_truth": ""}},
        make_row("deepscaler", "x" * 400, "1", "train", 3, "d3"),
        make_row("deepscaler", "What is 2 + 2?", "4", "train", 4, "d4"),
    ]
    source = tmp_path / "train.parquet"
    pd.DataFrame(rows).to_parquet(source, index=False)
    scripted = [["\\boxed{2}", "\\boxed{3}"], ["\\boxed{4}", "\\boxed{4}"]]
    monkeypatch.setattr(difficulty_filter, "generator_from_args", lambda *a: ScriptedGenerator(tokenizer, scripted))
    out = tmp_path / "zpd.parquet"
    difficulty_filter.main(["--model", tiny_assets["model"], "--input", str(source), "--output", str(out),
                            "--k", "2", "--min-correct", "1", "--max-correct", "1", "--max-prompt-tokens", "300"])
    counts = [line.value for line in iter_json_lines(f"{out}.counts.jsonl")]
    assert [(c["problem_id"], c["row"], c["correct"], c["skipped"]) for c in counts] == [
        ("d0", 0, 1, None),
        ("d1", 1, None, "malformed_prompt"),
        ("d2", 2, None, "missing_ground_truth"),
        ("d3", 3, None, "prompt_too_long"),
        ("d4", 4, 2, None),
    ]


@pytest.mark.parametrize("content", [None, b"not parquet", b"\xff\xfe\x00garbage"])
def test_a_missing_or_broken_data_file_stops_with_its_name(tmp_path, content):
    from recipe_tapo.evaluation.evaluate import main as evaluate
    from recipe_tapo.data.difficulty_filter import main as difficulty_filter

    path = tmp_path / "data.parquet"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match=str(path)):
        evaluate(["--model", str(tmp_path), "--data", str(path), "--out-dir", str(tmp_path / "eval")])
    with pytest.raises(SystemExit, match=str(path)):
        difficulty_filter(["--model", str(tmp_path), "--input", str(path), "--output", str(tmp_path / "kept.parquet")])


@pytest.mark.parametrize("line", [b"\xff\xfe garbage", b'{"correct": 1, "pad": "' + b"x" * 2_000_000 + b'"}'])
def test_filter_refuses_a_counts_file_with_a_broken_or_huge_line_naming_it(tmp_path, line):
    source = tmp_path / "train.parquet"
    pd.DataFrame([make_row("deepscaler", "What is 1 + 1?", "2", "train", 0, "d0")]).to_parquet(source, index=False)
    counts = tmp_path / "counts.jsonl"
    counts.write_bytes(line + b"\n")
    with pytest.raises(SystemExit) as stop:
        difficulty_filter.main(["--input", str(source), "--output", str(tmp_path / "out.parquet"), "--k", "4",
                                "--max-correct", "3", "--counts-from", str(counts)])
    assert f"--counts-from {counts}: line 1 is not a counts record" in str(stop.value)
