"""Data preparation: each source's converter on fixture records in that source's real schema.

Fixtures are written here, in the file format each source is published in, with bad rows mixed in;
the produced parquet must load in verl's RLHFDataset (with a real tokenizer and the overlong-prompt
filter on) and be scored by our reward.
"""

import json
import os
import subprocess

import datasets
import pyarrow
import pyarrow.parquet
import pytest
from omegaconf import OmegaConf

from recipe_tapo.data import prepare
from recipe_tapo.data.rows import PROMPT_SUFFIX
from recipe_tapo.data.sources import SOURCES, dapo_problem
from recipe_tapo.reward.math_reward import compute_score

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DAPO_INSTRUCTION = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_REMINDER = '\n\nRemember to put your answer on its own line after "Answer:".'


def dapo_record(problem: str, answer: str, uid: str) -> dict:
    return {
        "data_source": "math_dapo",
        "prompt": [{"content": DAPO_INSTRUCTION + problem + DAPO_REMINDER, "role": "user"}],
        "ability": "MATH",
        "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
        "extra_info": {"index": uid},
    }


def write_parquet(records: list[dict], path) -> str:
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(records), str(path))
    return str(path)


def write_jsonl(records: list[dict], path) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


# name -> (records in the source's schema, how the fixture is stored, expected (kept, skipped counts),
#          (problem, answer, source_id) of the first kept row)
FIXTURES = {
    "deepscaler": (
        [
            {"problem": "Compute $1+1$.", "answer": "2", "solution": "Add."},
            {"problem": "   ", "answer": "3", "solution": "Blank problem."},
            {"problem": "Find $x$ if $2x=1$.", "answer": None, "solution": "No answer."},
            {"problem": "Compute  $1+1$.", "answer": "2", "solution": "Same problem, other spacing."},
            {"problem": "What is $\\sqrt{16}$?", "answer": "4", "solution": "Root."},
        ],
        "parquet",
        (2, {"empty_problem": 1, "missing_answer": 1, "duplicate_problem": 1}),
        ("Compute $1+1$.", "2", "0"),
    ),
    "dapo_math_17k": (
        [
            dapo_record("Let $a=3$. Find $a^2$.", "9", "uid-a"),
            dapo_record("Let $a=3$. Find $a^2$.", "9", "uid-a"),  # the real file repeats each problem
            dapo_record("How many primes are below 10?", "4", "uid-b"),
            {**dapo_record("x", "1", "uid-c"), "prompt": [{"content": "Just answer: 1+0?", "role": "user"}]},
            dapo_record("What is $2^5$?", "", "uid-d"),
        ],
        "parquet",
        (2, {"duplicate_problem": 1, "unrecognised_prompt": 1, "missing_answer": 1}),
        ("Let $a=3$. Find $a^2$.", "9", "uid-a"),
    ),
    "math500": (
        [
            {
                "problem": "Who ran the farthest?",
                "solution": "Evelyn.",
                "answer": "\\text{Evelyn}",
                "subject": "Algebra",
                "level": 2,
                "unique_id": "test/algebra/1.json",
            },
            {
                "problem": "Simplify $\\frac{2}{4}$.",
                "solution": "Half.",
                "answer": "\\frac{1}{2}",
                "subject": "Prealgebra",
                "level": 1,
                "unique_id": "test/prealgebra/2.json",
            },
        ],
        "jsonl",
        (2, {}),
        ("Who ran the farthest?", "\\text{Evelyn}", "test/algebra/1.json"),
    ),
    "aime2024": (
        [
            {"ID": "2024-I-1", "Problem": "Find the number of ...", "Solution": "...", "Answer": 204},
            {"ID": "2024-I-2", "Problem": "There exist reals ...", "Solution": "...", "Answer": 25},
            {"ID": "2024-I-3", "Problem": "", "Solution": "...", "Answer": 809},
        ],
        "parquet",
        (2, {"empty_problem": 1}),
        ("Find the number of ...", "204", "2024-I-1"),
    ),
    "aime2025": (
        [
            {"question": "Find the sum of all integer bases $b>9$ ...", "answer": "70"},
            {"question": "In triangle $ABC$ ...", "answer": "588"},
        ],
        "save_to_disk",
        (2, {}),
        ("Find the sum of all integer bases $b>9$ ...", "70", "0"),
    ),
    "hmmt2025": (
        [
            {"problem_idx": 1, "problem": "Compute the sum of the positive divisors ...", "answer": "40"},
            {"problem_idx": 2, "problem": "Let $r$ be ...", "answer": "\\frac{9 \\sqrt{23}}{23}"},
            {"problem_idx": 3, "problem": "Unanswered.", "answer": "  "},
        ],
        "parquet",
        (2, {"missing_answer": 1}),
        ("Compute the sum of the positive divisors ...", "40", "1"),
    ),
}


def write_fixture(name: str, directory) -> str:
    records, storage, _, _ = FIXTURES[name]
    if storage == "parquet":
        return write_parquet(records, directory / f"{name}_source.parquet")
    if storage == "jsonl":
        return write_jsonl(records, directory / f"{name}_source.jsonl")
    path = directory / f"{name}_source"
    datasets.DatasetDict({SOURCES[name].hub_split: datasets.Dataset.from_list(records)}).save_to_disk(str(path))
    return str(path)


def rlhf_dataset(files: list[str], tokenizer, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 256,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "cache_dir": str(tmp_path / "verl_cache"),
        }
    )
    return RLHFDataset(data_files=files, tokenizer=tokenizer, config=config)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every source converted from its fixture: name -> (parquet path, Conversion)."""
    directory = tmp_path_factory.mktemp("sources")
    results = {}
    for name in FIXTURES:
        out_path = str(directory / prepare.default_file_name(SOURCES[name]))
        conversion = prepare.prepare_source(SOURCES[name], out_path, local_path=write_fixture(name, directory))
        results[name] = (out_path, conversion)
    return results


@pytest.mark.parametrize("name", FIXTURES)
def test_converter_keeps_good_rows_and_counts_bad_ones(name, prepared):
    _, conversion = prepared[name]
    records, _, (kept, skipped), (problem, answer, source_id) = FIXTURES[name]
    assert conversion.read == len(records)
    assert len(conversion.rows) == kept
    assert dict(conversion.skipped) == skipped
    first = conversion.rows[0]
    assert first["data_source"] == name
    assert first["prompt"] == [{"role": "user", "content": f"{problem} {PROMPT_SUFFIX}"}]
    assert first["reward_model"] == {"style": "rule", "ground_truth": answer}
    assert first["extra_info"] == {
        "index": 0,
        "split": SOURCES[name].split,
        "source_id": source_id,
        "problem": problem,
        # a source's worked solution where it has one (DeepScaleR), "" elsewhere: one layout for all
        "solution": records[0]["solution"] if SOURCES[name].solution_fields else "",
    }
    assert [row["extra_info"]["index"] for row in conversion.rows] == list(range(kept))


@pytest.mark.parametrize("name", FIXTURES)
def test_rlhf_dataset_loads_the_output(name, prepared, tapo_tokenizer, tmp_path):
    out_path, conversion = prepared[name]
    dataset = rlhf_dataset([out_path], tapo_tokenizer, tmp_path)
    assert len(dataset) == len(conversion.rows)
    item = dataset[0]
    assert item["raw_prompt"][0]["content"].endswith(PROMPT_SUFFIX)
    assert item["data_source"] == name
    assert item["index"] == 0
    ground_truth = item["reward_model"]["ground_truth"]
    assert compute_score(item["data_source"], f"... so \\boxed{{{ground_truth}}}", ground_truth)["score"] == 1.0


def test_all_outputs_load_together_as_one_dataset(prepared, tapo_tokenizer, tmp_path):
    """verl concatenates several val files: the schemas of all sources must be identical."""
    files = [out_path for out_path, _ in prepared.values()]
    dataset = rlhf_dataset(files, tapo_tokenizer, tmp_path)
    assert len(dataset) == sum(len(conversion.rows) for _, conversion in prepared.values())
    assert {dataset[position]["data_source"] for position in range(len(dataset))} == set(FIXTURES)


def test_dapo_problem_extraction():
    record = dapo_record("Find $n$.\n\nGive $n$ mod 7.", "3", "uid")
    assert dapo_problem(record["prompt"]) == "Find $n$.\n\nGive $n$ mod 7."
    assert dapo_problem([{"role": "user", "content": DAPO_INSTRUCTION + "No reminder."}]) is None
    assert dapo_problem("a plain string") is None


def fake_hub(fixture_records_by_hub_id: dict):
    """`datasets.load_dataset` for the hub ids of SOURCES, recording each (id, config, split) asked."""
    requests = []

    def load_dataset(path, name=None, split=None):
        requests.append((path, name, split))
        records = fixture_records_by_hub_id[path]
        if name is not None:  # each AIME 2025 config holds its own half
            records = [{**record, "question": f"{name}: {record['question']}"} for record in records]
        return datasets.Dataset.from_list(records)

    return load_dataset, requests


def test_all_sources_from_the_hub(tmp_path, monkeypatch, capsys):
    load_dataset, requests = fake_hub({SOURCES[name].hub_id: FIXTURES[name][0] for name in FIXTURES})
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert prepare.main(["--source", "all", "--out-dir", str(tmp_path)]) == 0
    assert sorted(requests) == sorted(
        (spec.hub_id, subset, spec.hub_split) for spec in SOURCES.values() for subset in spec.hub_subsets
    )
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            "deepscaler_train.parquet",
            "dapo_math_17k_train.parquet",
            "math500.parquet",
            "aime2024.parquet",
            "aime2025.parquet",
            "hmmt2025.parquet",
        ]
    )
    aime2025 = pyarrow.parquet.read_table(str(tmp_path / "aime2025.parquet")).to_pylist()
    assert [row["extra_info"]["source_id"] for row in aime2025] == [
        "AIME2025-I-0",
        "AIME2025-I-1",
        "AIME2025-II-0",
        "AIME2025-II-1",
    ]
    printed = capsys.readouterr().out
    assert (
        "deepscaler: read 5, kept 2, skipped 3 (duplicate_problem: 1, empty_problem: 1, missing_answer: 1)" in printed
    )


def test_limit_keeps_the_first_rows(tmp_path):
    source = write_fixture("deepscaler", tmp_path)
    out_path = str(tmp_path / "out.parquet")
    assert prepare.main(["--source", "deepscaler", "--local", source, "--out", out_path, "--limit", "1"]) == 0
    rows = pyarrow.parquet.read_table(out_path).to_pylist()
    assert [row["extra_info"]["problem"] for row in rows] == ["Compute $1+1$."]


def test_a_schema_mismatch_fails_loudly(tmp_path, capsys):
    source = write_jsonl([{"question_text": "Compute 1+1.", "final": "2"}], tmp_path / "renamed.jsonl")
    out_path = tmp_path / "out.parquet"
    assert prepare.main(["--source", "hmmt2025", "--local", source, "--out", str(out_path)]) == 1
    assert not out_path.exists()
    captured = capsys.readouterr()
    assert "hmmt2025: read 1, kept 0, skipped 1 (no_problem_column: 1)" in captured.out
    assert "['final', 'question_text']" in captured.err


def test_prepare_data_script_is_valid_bash():
    script = os.path.join(REPO_ROOT, "run_scripts", "prepare_data.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    assert "python -m recipe_tapo.data.prepare --source all" in open(script).read()
