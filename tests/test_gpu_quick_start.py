"""README's GPU quick start, followed step by step under DRY_RUN=1 on a fresh HOME: every file the
training step reads is one an earlier step says it writes (each data-writing script lists them under
"the files it writes:"). The steps are read from README's block, not restated here."""

import os
import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The settings a user's shell might carry into the scripts: a fresh machine has none of them.
SCRIPT_SETTINGS = ("DATA_DIR", "WORK_DIR", "MODEL", "BASE_MODEL", "TRAIN_FILE", "NNODES", "GPUS_PER_NODE", "OUT_DIR",
                   "EXPERIMENT", "LOGGER", "MIN_FREE_GB", "SFT_DATA")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def quick_start_steps() -> list[str]:
    """The commands of README's GPU quick start block, in order, less the installs."""
    section = re.search(r"^## GPU quick start\n(.*?)^## ", (ROOT / "README.md").read_text(), flags=re.M | re.S).group(1)
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    steps = []
    for line in block.splitlines():
        for command in line.split("&&"):
            words = shlex.split(command, comments=True)
            if words and words[0] != "pip":
                steps.append(shlex.join(words))
    return steps


def files_listed(stdout: str, heading: str) -> list[str]:
    """The paths listed one a line under the line ending with `heading`."""
    lines = stdout.splitlines()
    starts = [index for index, line in enumerate(lines) if line.endswith(heading)]
    paths = []
    for start in starts:
        for line in lines[start + 1:]:
            if not line.startswith("  "):
                break
            paths.append(re.sub(r" \((present|missing here)\)$", "", line.strip()))
    return paths


def test_readme_gpu_quick_start_makes_every_file_training_reads(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in SCRIPT_SETTINGS}
    env.update(HOME=str(tmp_path / "home"), DRY_RUN="1", HF_HUB_OFFLINE="1", WANDB_API_KEY="", RAY_ADDRESS="")
    steps = quick_start_steps()
    assert any("run_tapo_qwen3_8b.sh" in step for step in steps), steps
    written: list[str] = []
    training = None
    done = set()
    for step in steps:
        as_dry_run = step.removeprefix("DRY_RUN=1 ")  # every step runs as a dry run here
        if as_dry_run in done:
            continue
        done.add(as_dry_run)
        result = subprocess.run(["bash", "-c", step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{step}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        if "DRY RUN: the config composes" in result.stdout:
            training = result.stdout
            break
        written += files_listed(result.stdout, "the files it writes:")
    assert training is not None, "no step of the quick start trains"
    read = re.findall(r"^  data\.(?:train|val)_files: (\S+) \(", training, flags=re.M)
    assert len(read) == 4, training
    assert set(read) <= set(written), f"read but made by no earlier step: {sorted(set(read) - set(written))}"
    assert all(path.startswith(str(tmp_path / "home")) for path in read)  # the fresh HOME, not this machine's
    model = re.search(r"^  actor_rollout_ref\.model\.path: (\S+) \(", training, flags=re.M).group(1)
    assert model in written or (HUB_ID.match(model) and not os.path.isabs(model)), model
