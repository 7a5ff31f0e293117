"""The toy comparison's small results (recipe_tapo.toy.results): the report built from them alone is
the report built from the work folder, so an interrupted comparison resumes from committed files."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from recipe_tapo.toy.report import collect, render
from recipe_tapo.toy.results import main, save_results

# real pre-RL files (pilot 4's cold start): its probe on the test split, its own synthesis's stats
PILOT4 = Path(__file__).parents[1] / "docs/toy_experiment/pilots/pilot4_cold_start/results/pre_rl"
WRONG = "47 + 5 = 53\n53 - 8 = 45\n\\boxed{45}"
INSERTED = {"status": "ok", "acc": True, "step": 1, "wrong": WRONG, "synthesis": "<analysis>47 + 5 = 52, not 53.</analysis>",
            "trajectory": "47 + 5 = 53\nWait, 47 + 5 = 52, not 53.\n52 - 8 = 44\n\\boxed{44}", "token_ids": [1] * 60}


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _eval_results(path, pass1):
    path.mkdir(parents=True, exist_ok=True)
    benchmark = {"metrics": {"pass@1": pass1, "dsr": 10.0, "err": 20.0}, "num_problems": 4, "samples_per_problem": [2]}
    (path / "eval_results.json").write_text(json.dumps({"benchmarks": {"toy_chain": benchmark}}))


def _work_folder(root):
    """A work folder as run_toy_reproduction.sh leaves it after one TAPO run, large files included."""
    (root / ".stages").mkdir(parents=True)
    (root / ".stages" / "rl_tapo_s0.done").write_text("120\n")
    samples = [{"problem_id": str(i // 4), "correct": i % 3 == 0, "response": "x" * 100} for i in range(16)]
    _write_jsonl(root / "eval" / "pre_rl_cold_start" / "samples.jsonl", samples)
    (root / "eval" / "pre_rl_synthesis").mkdir(parents=True)
    shutil.copyfile(PILOT4 / "cold_start_synthesis_stats.json", root / "eval" / "pre_rl_synthesis" / "stats.json")
    _write_jsonl(root / "eval" / "pre_rl_synthesis" / "synthesis_records.jsonl",
                 [INSERTED, {**INSERTED, "trajectory": "47 + 5 = 52\nWait, 47 + 5 = 52, not 52.\n\\boxed{44}"},
                  {"status": "prefix_too_short", "wrong": WRONG, "trajectory": ""}])
    for folder, pass1 in (("cold_start", 50.0), ("tapo_s0", 60.0)):
        _eval_results(root / "eval" / folder, pass1)
        _eval_results(root / "eval" / folder / "greedy", pass1 + 20)
    (root / "eval" / "probe" / "tapo_s0").mkdir(parents=True)
    shutil.copyfile(PILOT4 / "cold_start_probe_test.json", root / "eval" / "probe" / "tapo_s0" / "probe_results.json")
    run = root / "runs" / "tapo_s0"
    _write_jsonl(run / "metrics.jsonl", [{"step": 1, "data": {"tapo/pairs": 2.0, "tapo/synthesis_requests": 2.0,
                                                              "tapo/parse_rate": 1.0, "tapo/constructed_rows": 1.0}}])
    _write_jsonl(run / "tapo_dump" / "step_1.jsonl", [INSERTED, {"status": "parse_failed", "wrong": WRONG}])
    (run / "global_step_1").mkdir()
    (run / "global_step_1" / "model.safetensors").write_bytes(b"\0" * 1000)  # a checkpoint: not a result


def _report(folder):
    return render(collect(str(folder), ["tapo"], ["0"]), ["tapo"], ["0"], rl_steps=1, quick=False, command="x")


@pytest.mark.parametrize("inside", [True, False])
def test_the_report_from_the_saved_results_alone_is_the_work_folders(tmp_path, inside):
    work = tmp_path / "work"
    _work_folder(work)
    results = work / "results" if inside else tmp_path / "results"
    save_results(str(work), str(results))
    save_results(str(work), str(results))  # after every stage: a second save nests nothing and changes nothing
    assert not (results / "results").exists()
    assert not list(results.rglob("samples.jsonl")) and not list(results.rglob("synthesis_records.jsonl"))
    assert not (results / "runs" / "tapo_s0" / "tapo_dump").exists() and not list(results.rglob("*.safetensors"))
    expected = _report(work)
    assert "60.0" in expected and "opening with a reflection right after the wrong answer's kept text: 1 of 2 (50.0%)" in expected
    if not inside:  # the work folder's evaluations gone: the kept results alone give the same report
        shutil.rmtree(work / "eval")
    assert _report(results) == expected


def test_a_dump_summary_keeps_statuses_counts_and_the_shown_constructions(tmp_path):
    work = tmp_path / "work"
    _work_folder(work)
    save_results(str(work), str(tmp_path / "results"))
    summary = json.loads((tmp_path / "results" / "runs" / "tapo_s0" / "tapo_dump_summary.json").read_text())
    assert summary["statuses"] == {"ok": 1, "parse_failed": 1}
    assert summary["counts"] == {"inserted": 1, "right": 1, "reflecting": 1, "opening_with_reflection": 1}
    assert summary["examples"] == [{"step": 1, "wrong": WRONG, "synthesis": INSERTED["synthesis"],
                                    "trajectory": INSERTED["trajectory"]}]  # no token ids


def test_an_opsd_dump_summary_keeps_per_step_log_probs_rejections_and_a_decoded_response(tmp_path):
    from recipe_tapo.tiny_assets import build_tokenizer

    work = tmp_path / "work"
    run = work / "runs" / "opsd_s0"
    tokenizer = build_tokenizer(str(run / "global_step_10" / "actor" / "huggingface"))
    ids = tokenizer.encode("12 + 3 = 15", add_special_tokens=False)
    rows = [{"step": 10, "has_teacher": True, "response_ids": ids, "student_log_probs": [-0.5] * len(ids),
             "teacher_log_probs": [-0.5] * (len(ids) - 1) + [-4.5]},
            {"step": 10, "has_teacher": False, "response_ids": ids[:3], "student_log_probs": [-9.0] * 3,
             "teacher_log_probs": [0.0] * 3}]
    _write_jsonl(run / "opsd_dump" / "step_000010.jsonl", rows)
    _write_jsonl(run / "metrics.jsonl", [{"step": 10, "data": {"opsd/kl_estimate": 0.2}}])
    save_results(str(work), str(tmp_path / "results"))
    summary = json.loads((tmp_path / "results" / "runs" / "opsd_s0" / "opsd_dump_summary.json").read_text())
    assert summary == [{"step": 10, "rows": 2, "rows_with_teacher": 1, "tokens_per_response": (len(ids) + 3) / 2,
                        "student_log_prob": -0.5, "teacher_log_prob": pytest.approx(-0.5 - 4 / len(ids)),
                        "gap": pytest.approx(4 / len(ids)), "teacher_rejects": pytest.approx(1 / len(ids)),
                        "example": "12 + 3 = 15"}]  # the row without a teacher counts for rows and length only
    report = render(collect(str(tmp_path / "results"), ["opsd"], ["0"]), ["opsd"], ["0"], rl_steps=10, quick=False,
                    command="x")
    assert f"| 10 | 2 (1) | {(len(ids) + 3) / 2:.1f} | -0.500 |" in report and "`12 + 3 = 15`" in report


def test_the_results_folder_must_not_be_the_work_folder_and_the_work_folder_must_exist(tmp_path, capsys):
    with pytest.raises(ValueError, match="the results folder must differ from the work folder"):
        save_results(str(tmp_path), str(tmp_path))
    with pytest.raises(SystemExit):
        main(["--work-dir", str(tmp_path / "missing"), "--results-dir", str(tmp_path / "r")])
    assert f"--work-dir {tmp_path / 'missing'} is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("results, message", [
    ("outside", "COMMIT_RESULTS=1 commits RESULTS_DIR to this repository's git, but {path} is not inside"),
    ("outputs/commit_results_test", "COMMIT_RESULTS=1 commits RESULTS_DIR, but git ignores {path} (.gitignore)"),
])
def test_the_script_refuses_to_commit_results_git_would_not_keep(tmp_path, results, message):
    import subprocess

    repo = Path(__file__).parents[1]
    path = tmp_path / "results" if results == "outside" else repo / results
    try:
        done = subprocess.run(["bash", "run_scripts/run_toy_reproduction.sh"], cwd=repo, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "QUICK": "1", "COMMIT_RESULTS": "1", "RESULTS_DIR": str(path),
                                               "WORK_DIR": str(tmp_path / "work")})
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert done.returncode == 2 and message.format(path=path) in done.stderr
    assert not (tmp_path / "work" / ".stages" / "data.done").exists()  # refused before any stage


def test_broken_files_in_a_work_folder_are_skipped_with_a_warning_not_the_end_of_the_results(tmp_path, capsys):
    work = tmp_path / "work"
    _work_folder(work)
    dump = work / "runs" / "tapo_s0" / "tapo_dump" / "step_1.jsonl"
    # a line cut short, bad bytes, a lone surrogate escape and a 2 MB line beside the real records
    dump.write_bytes(dump.read_bytes() + b'{"status": "ok", "wro\n\xff\xfe\n{"status": "\\ud800"}\n'
                     + b'{"x": "' + b"a" * 2_000_000 + b'"}\n')
    (work / "eval" / "cold_start" / "eval_results.json").write_bytes(b'{"benchmarks": {"toy_')  # a killed run's
    save_results(str(work), str(tmp_path / "results"))
    summary = json.loads((tmp_path / "results" / "runs" / "tapo_s0" / "tapo_dump_summary.json").read_text())
    assert summary["counts"]["inserted"] == 1 and summary["statuses"]["parse_failed"] == 1
    report = _report(tmp_path / "results")
    assert "60.0" in report  # the arm's evaluation is still there; the broken cold-start one is missing
    assert "not readable JSON" in capsys.readouterr().err


def test_a_summary_is_recomputed_only_when_what_it_summarises_changed(tmp_path):
    work, results = tmp_path / "work", tmp_path / "results"
    _work_folder(work)
    first = save_results(str(work), str(results))
    summary = os.path.join("runs", "tapo_s0", "tapo_dump_summary.json")
    assert summary in first and summary not in save_results(str(work), str(results))  # a finished run: read once
    dump = work / "runs" / "tapo_s0" / "tapo_dump" / "step_2.jsonl"
    _write_jsonl(dump, [{**INSERTED, "step": 2}])  # the run went on
    later = (results / summary).stat().st_mtime + 1
    os.utime(dump, (later, later))
    assert summary in save_results(str(work), str(results))
    assert json.loads((results / summary).read_text())["counts"]["inserted"] == 2


@pytest.mark.parametrize("exported", [True, False])
def test_commit_results_commits_each_stages_results_to_the_repository(tmp_path, exported):
    # A clone of this repository (its script commits into the repository it lives in), one cheap stage.
    import subprocess

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--local", str(Path(__file__).parents[1]), str(clone)], check=True, timeout=120)
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@example.com"}
    # An exported checkpoint inside the repository is committed with the results; an export folder
    # with nothing in it yet (before seed 0's first run ends) does not hold the results back.
    if exported:
        (clone / "docs" / "quick_export" / "grpo").mkdir(parents=True)
        (clone / "docs" / "quick_export" / "grpo" / "config.json").write_text("{}")
    # Another git command holds the index lock for a few seconds as the stage ends (its marker is
    # written before the results are saved and committed): the commit waits and lands.
    lock, marker = clone / ".git" / "index.lock", tmp_path / "work" / ".stages" / "data.done"

    def hold_the_lock():
        while not marker.exists():
            time.sleep(0.05)
        lock.write_text("")
        time.sleep(4.0)
        lock.unlink()

    release = threading.Thread(target=hold_the_lock, daemon=True)
    release.start()
    done = subprocess.run(["bash", "run_scripts/run_toy_reproduction.sh"], cwd=clone, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **identity, "QUICK": "1", "UNTIL": "data", "COMMIT_RESULTS": "1",
                                            "RESULTS_DIR": str(clone / "docs" / "quick_results"),
                                            "EXPORT_DIR": str(clone / "docs" / "quick_export"),
                                            "WORK_DIR": str(tmp_path / "work")})
    release.join(timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    log = subprocess.run(["git", "log", "-1", "--format=%s", "--name-only"], cwd=clone, capture_output=True, text=True).stdout
    assert log.startswith("toy results after stage data (work)") and "docs/quick_results/.stages/data.done" in log
    assert ("docs/quick_export/grpo/config.json" in log) is exported
    assert "committed" in done.stdout and "WARNING" not in done.stdout
    assert not subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout


def _kept(results, *stages):
    for name in stages:
        _place_file(results / ".stages" / f"{name}.done", "12\n")


def _place_file(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_fresh_work_folder_takes_back_the_finished_measurements_and_whole_runs(tmp_path):
    from recipe_tapo.toy.results import restore_stages

    work, results, export = tmp_path / "work", tmp_path / "results", tmp_path / "export"
    _kept(results, "data", "zpd_filter", "measure_cold_start", "eval_cold_start", "probe_set", "probe_cold_start",
          "rl_grpo_s0", "eval_grpo_s0", "probe_grpo_s0", "export_grpo",      # finished, exported
          "rl_tapo_s0", "eval_tapo_s0", "probe_tapo_s0", "export_tapo",      # finished, its export gone
          "rl_grpo_s1", "eval_grpo_s1",                                      # stopped before its probe
          "rl_tapo_teacher_s1", "eval_tapo_teacher_s1", "probe_tapo_teacher_s1")
    _place_file(results / "eval" / "probe" / "probe_set.jsonl", '{"prefix": "47 + 5 = 53\\n"}\n')
    _place_file(export / "grpo" / "model.safetensors", "weights")
    _place_file(work / ".stages" / "data.done", "7\n")
    restored = restore_stages(str(work), str(results), str(export))
    # Not data, zpd_filter (they make files later stages read) nor a run missing any stage.
    assert restored == sorted(["measure_cold_start", "eval_cold_start", "probe_set", "probe_cold_start", "rl_grpo_s0",
                               "eval_grpo_s0", "probe_grpo_s0", "export_grpo", "rl_tapo_teacher_s1",
                               "eval_tapo_teacher_s1", "probe_tapo_teacher_s1"])
    assert (work / ".stages" / "data.done").read_text() == "7\n"  # what the work folder has is its own
    assert (work / ".stages" / "rl_grpo_s0.done").read_text() == "12\n"
    assert (work / "eval" / "probe" / "probe_set.jsonl").read_text() == '{"prefix": "47 + 5 = 53\\n"}\n'
    assert restore_stages(str(work), str(results), str(export)) == []  # a second call finds them in place


def test_results_record_their_settings_and_refuse_a_run_with_others(tmp_path, capsys):
    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    restore = ["--restore", "--work-dir", str(work), "--results-dir", str(results), "--export-dir", str(tmp_path)]
    main([*restore, "--setting", "eval_split=test", "--setting", "model=ab12"])
    assert "restored 0 finished stages" in capsys.readouterr().out
    main([*restore, "--setting", "eval_split=test", "--setting", "rl_steps=100"])  # a new key is added
    assert json.loads((results / "settings.json").read_text()) == {"eval_split": "test", "model": "ab12", "rl_steps": "100"}
    with pytest.raises(SystemExit) as stop:
        main([*restore, "--setting", "eval_split=val", "--setting", "model=ab12"])
    assert f"{results} holds the results of other settings (eval_split: 'test' there, 'val' now)" in str(stop.value)
    (results / "settings.json").write_text("{cut")
    with pytest.raises(SystemExit, match="settings.json is not a settings file"):
        main([*restore, "--setting", "eval_split=test"])
    with pytest.raises(SystemExit):
        main(["--restore", "--work-dir", str(work), "--results-dir", str(results)])
    assert "--restore needs --export-dir" in capsys.readouterr().err
