"""The host-side benchmark command runs and prints its per-construction figure."""

import re
import subprocess
import sys


def test_benchmark_prints_the_cpu_time_per_construction(tapo_tokenizer_dir):
    command = [
        sys.executable,
        "-m",
        "recipe_tapo.benchmark",
        "--tokenizer",
        tapo_tokenizer_dir,
        "--prompts",
        "8",
        "--wrong-tokens",
        "300",
        "--response-length",
        "64",
        "--repeats",
        "1",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "constructions per step: 16" in completed.stdout  # 4 of 8 groups in the band x m_max 4
    figure = re.search(r"advantage: ([0-9.]+) ms CPU per construction \(one core\)", completed.stdout)
    assert figure and float(figure.group(1)) > 0
