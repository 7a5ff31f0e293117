"""Fresh problems for the toy's committed checkpoints (recipe_tapo.toy.fresh and
run_scripts/reevaluate_toy_checkpoints.sh): the draw, which of it was seen, and the comparison
against the report's Pass@1."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recipe_tapo.toy.build import build_data
from recipe_tapo.toy.fresh import compare, draw_fresh, main, problem_texts

REPO = Path(__file__).parents[1]


def test_the_draw_is_the_builds_test_draw_for_the_same_seed_and_marks_what_was_seen(tmp_path):
    paths = build_data(str(tmp_path / "data"), seed=0, train=30, val=10, test=20, sft=40, error_rate=0.0)
    seen = set()
    for name in ("train", "val", "test", "sft"):
        seen.update(problem_texts(paths[name]))
    rows, seen_ids = draw_fresh(0, 20, seen)
    test = pd.read_parquet(paths["test"])
    # the same seed draws the build's test split first, so every one of them was seen
    assert [row["extra_info"]["problem"] for row in rows] == [info["problem"] for info in test["extra_info"]]
    assert seen_ids == [f"fresh-{index}" for index in range(20)]
    other, other_seen = draw_fresh(1, 50, seen)
    texts = [row["extra_info"]["problem"] for row in other]
    assert len(set(texts)) == 50 and [row["extra_info"]["split"] for row in other] == ["fresh"] * 50
    assert other_seen == [row["extra_info"]["source_id"] for row in other if row["extra_info"]["problem"] in seen]
    assert draw_fresh(1, 50, seen)[0] == other  # deterministic by seed


def test_problem_texts_reads_rl_rows_and_chats_and_names_a_file_it_cannot_read(tmp_path):
    pd.DataFrame({"messages": [[{"role": "user", "content": "12 + 3"}, {"role": "assistant", "content": "15"}]]}).to_parquet(
        tmp_path / "chats.parquet")
    assert problem_texts(str(tmp_path / "chats.parquet")) == ["12 + 3"]
    pd.DataFrame({"text": ["12 + 3"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match=r"other.parquet: neither RL rows .* columns: \['text'\]"):
        problem_texts(str(tmp_path / "other.parquet"))
    pd.DataFrame({"extra_info": [{"problem": "12 + 3"}, {"problem": ""}]}).to_parquet(tmp_path / "rows.parquet")
    with pytest.raises(ValueError, match="rows.parquet: row 1 has no extra_info.problem"):
        problem_texts(str(tmp_path / "rows.parquet"))
    pd.DataFrame({"messages": [[{"role": "assistant", "content": "15"}]]}).to_parquet(tmp_path / "no_user.parquet")
    with pytest.raises(ValueError, match="no_user.parquet: chat 0 has no user turn"):
        problem_texts(str(tmp_path / "no_user.parquet"))


def _eval(folder: Path, pass1: float, problems: int = 1000):
    folder.mkdir(parents=True, exist_ok=True)
    benchmark = {"metrics": {"pass@1": pass1}, "num_problems": problems, "samples_per_problem": [4]}
    (folder / "eval_results.json").write_text(json.dumps({"benchmarks": {"toy_chain": benchmark}}))


def _samples(folder: Path, right_by_problem: dict[str, int], n: int = 4):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"benchmark": "toy_chain", "problem_id": problem, "correct": index < right, "response": "x"})
             for problem, right in right_by_problem.items() for index in range(n)]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")


def test_compare_gives_the_fresh_pass1_its_error_and_whether_it_reproduces_the_report(tmp_path):
    results, fresh = tmp_path / "results", tmp_path / "fresh"
    for seed, pass1 in (("0", 90.0), ("1", 92.0), ("2", 91.0)):
        _eval(results / "eval" / f"grpo_s{seed}", pass1)
        _eval(results / "eval" / f"opsd_s{seed}", 90.0 + int(seed))
    # grpo: problems p0-p3 all right, p4 never (80%); p4 is one seen before, so unseen ones score 100%
    _samples(fresh / "grpo", {"p0": 4, "p1": 4, "p2": 4, "p3": 4, "p4": 0})
    _samples(fresh / "opsd", {"p0": 0, "p1": 0, "p2": 0, "p3": 0, "p4": 0})
    rows = compare(str(results), str(fresh), ["grpo", "opsd", "tapo"], ["0", "1", "2"], "0", {"p4"})
    assert [row["arm"] for row in rows] == ["grpo", "opsd"]  # tapo has no fresh evaluation: skipped
    grpo, opsd = rows
    assert grpo["fresh"] == pytest.approx(80.0) and grpo["fresh_se"] == pytest.approx(20.0)  # sd 44.72 over 5 problems
    assert grpo["unseen"] == 100.0 and grpo["unseen_problems"] == 4 and grpo["samples"] == 4
    assert grpo["test_mean"] == pytest.approx(91.0) and grpo["test_own"] == 90.0
    assert grpo["test_own_se_bound"] == pytest.approx(100 * (0.9 * 0.1 / 1000) ** 0.5)
    assert grpo["difference"] == pytest.approx(-10.0) and not grpo["inside_interval"]
    assert grpo["within_two_se"] and grpo["reproduced"]  # 10 points is half an SE of 20 over 5 problems
    assert opsd["fresh"] == 0.0 and not opsd["reproduced"]  # every problem wrong: SE 0, far from 90


def test_compare_on_the_command_line_writes_its_table_and_stops_without_the_problems_file(tmp_path, capsys):
    results, fresh = tmp_path / "results", tmp_path / "fresh"
    for seed in ("0", "1"):
        _eval(results / "eval" / f"grpo_s{seed}", 50.0 + int(seed))
    _samples(fresh / "grpo", {"p0": 2, "p1": 2})
    argv = ["compare", "--results-dir", str(results), "--fresh-eval-dir", str(fresh), "--arms", "grpo", "--seeds", "0", "1"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "seen.json does not exist: run `problems --out" in capsys.readouterr().err
    (fresh / "seen.json").write_text(json.dumps({"seed": 1, "count": 2, "seen_problems": 9, "seen_ids": []}))
    main([*argv, "--out", str(tmp_path / "table.md")])
    table = (tmp_path / "table.md").read_text()
    assert "2 problems drawn with seed 1" in table and "4 answers a problem" in table
    assert "| grpo | 50.5 [44.1, 56.9] (seeds 0, 1) | 50.0 | 50.0 (0.00) |" in table
    assert json.loads((fresh / "fresh_summary.json").read_text())[0]["reproduced"]
    with pytest.raises(SystemExit):
        main([*argv[:5], "--arms", "tapo", "--seeds", "0"])
    assert "no arm of ['tapo'] has an evaluation" in capsys.readouterr().err


@pytest.mark.slow
def test_the_script_reevaluates_a_checkpoint_on_fresh_problems_quick(tmp_path):
    """QUICK=1 on the shipped cold start standing in for an arm's checkpoint (no Ray, ~30 s)."""
    checkpoints, results = tmp_path / "checkpoints", tmp_path / "results"
    shutil.copytree(REPO / "recipe_tapo" / "toy" / "cold_start_model", checkpoints / "grpo")
    for seed in ("0", "1", "2"):
        _eval(results / "eval" / f"grpo_s{seed}", 55.0)
    env = {**os.environ, "QUICK": "1", "CHECKPOINTS": str(checkpoints), "RESULTS_DIR": str(results),
           "WORK_DIR": str(tmp_path / "work"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = str(REPO / "run_scripts" / "reevaluate_toy_checkpoints.sh")
    done = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "16 problems (seed 1)" in done.stdout and "| grpo | 55.0 [55.0, 55.0] (seeds 0, 1, 2) | 55.0 |" in done.stdout
    evaluated = json.loads((tmp_path / "work" / "eval" / "grpo" / "eval_results.json").read_text())
    assert evaluated["benchmarks"]["toy_chain"]["num_problems"] == 16
    assert not (results / "fresh").exists()  # QUICK writes nothing beside the report's results
    again = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=600)
    assert "grpo: evaluated before, kept" in again.stdout
    missing = subprocess.run(["bash", script], env={**env, "ARMS": "tapo"}, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and f"{checkpoints}/tapo is not a checkpoint folder" in missing.stderr
