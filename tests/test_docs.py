"""README and docs/ against the code: the files, commands, modules and config keys they name exist,
every `tapo:` and `opsd:` key is documented, the quick start is what CI runs, and corrected claims stay corrected."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {path.relative_to(ROOT).as_posix(): path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {"README.md": README, **DOCS}
INSTALL_AND_RUN = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . "
    "&& bash run_scripts/run_tapo_toy_cpu.sh"
)
INSTALL_AND_TEST = (
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[test]" '
    "&& python -m pytest"
)
REPO_PATH = re.compile(r"(?<![\w./:-])((?:docs|run_scripts|config|recipe_tapo|workers|reward|tests)/[\w./<>{}*\[\]$-]*)")


def _code_blocks(text):
    return re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)


def test_readme_is_short_and_starts_with_the_two_quick_start_commands():
    assert len(README) <= 10_500
    first, second = (block.strip() for block in _code_blocks(README)[:2])
    assert first == INSTALL_AND_RUN and second == INSTALL_AND_TEST
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and "pip install -q torch==2.13.0" in ci
    assert ci.rstrip().endswith("python -m pytest")


def test_the_docs_table_lists_every_page_and_only_pages_that_exist():
    table = set(re.findall(r"^\| (docs/[\w-]+\.md) \|", README, flags=re.M))
    assert table == set(DOCS)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_repository_path_a_page_names_exists(page):
    missing = []
    for path in REPO_PATH.findall(PAGES[page]):
        path = path.rstrip(".,:;)")
        if any(mark in path for mark in "<{*[$"):  # placeholders and patterns
            continue
        if not (ROOT / path).exists():
            missing.append(path)
    for link in re.findall(r"\]\(([^)#]+)\)", PAGES[page]):
        if "://" not in link and not (ROOT / link).exists():
            missing.append(link)
    assert not missing, f"{page} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_python_module_a_page_runs_exists(page):
    modules = set(re.findall(r"python3? -m ([\w.]+)", PAGES[page])) - {"venv", "pip", "pytest"}
    missing = [module for module in sorted(modules) if importlib.util.find_spec(module) is None]
    assert not missing, f"{page} runs modules that do not exist: {missing}"


def _keys(section, prefix="tapo"):
    for name, value in section.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}.{name}")
        else:
            yield f"{prefix}.{name}", value


@pytest.mark.parametrize("section", ["tapo", "opsd"])
def test_every_key_is_documented_with_its_default_and_no_other_key_is_named(section):
    defaults_file = ROOT / "config" / f"{section}_defaults.yaml"
    defaults = dict(_keys(yaml.safe_load(defaults_file.read_text())[section], section))
    page = DOCS["docs/configuration.md"]
    rows = dict(re.findall(rf"^\| `({section}\.[\w.]+)` \| `([^`]*)` \|", page, flags=re.M))
    assert set(rows) == set(defaults)
    for key, shown in rows.items():
        value = defaults[key]
        assert shown == ("null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)), key
    for name, text in PAGES.items():
        named = {key.rstrip(".") for key in re.findall(rf"(?<![\w./]){section}\.(?:[a-z_]+\.)*[a-z_]+", text)
                 if not key.endswith((".py", ".md", ".yaml", ".txt", ".sh"))}  # a file name, not a key
        sections = {key.rsplit(".", 1)[0] for key in defaults} | {section}
        unknown = sorted(key for key in named if key not in defaults and key not in sections)
        assert not unknown, f"{name} names {section} keys that do not exist: {unknown}"


def test_every_start_up_refusal_setting_is_in_the_refusal_list():
    page = DOCS["docs/configuration.md"]
    refusals = page[page.index("## Refused at start-up"):page.index("## Where the paper is silent")]
    for setting in ("balance_batch", "agent_loop_manager_class", "critic_warmup", "use_kl_loss", "use_kl_in_reward",
                    "use_prefix_grouper", "distillation.enabled", "skip.rollout.enable", "bypass_mode",
                    "max_pairs_per_step", "multi-turn", "max_model_len", "use_v1"):
        assert setting in refusals, setting
    opsd = refusals[refusals.index("With `opsd.enable=true`"):]
    for setting in ("tapo.enable=false", "adv_estimator", "critic", "multi-turn", "distillation.enabled", "bypass_mode",
                    "loss_mode", "opsd.teacher=initial", "use_kl_loss", "opsd.max_prompt_tokens", "max_model_len",
                    "opsd.coef=0"):
        assert setting in opsd, setting


def test_corrected_claims_stay_corrected():
    everything = "\n".join(PAGES.values())
    assert "builds nothing" not in everything  # a failed round is one with no answered request
    assert "never saw in SFT" not in everything  # the main job trains on problems the cold start used
    assert "up to its first error" not in everything  # the cut is where the policy's output says
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    gone = "TAPO_" + "METHOD.md"  # the team's method notes, which users never see (spelled apart: this file is tracked too)
    for path in tracked:
        if path.endswith((".py", ".md", ".sh", ".yaml", ".txt")) and (ROOT / path).is_file():
            assert gone not in (ROOT / path).read_text(errors="replace"), path


def test_prepare_data_prints_a_command_that_can_be_copied():
    env = {**os.environ, "DRY_RUN": "1", "DATA_DIR": "/tmp/tapo data"}
    out = subprocess.run(["bash", "run_scripts/prepare_data.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout
    command = out.splitlines()[0]
    assert command == r"+ python -m recipe_tapo.data.prepare --source all --out-dir /tmp/tapo\ data"
    out = subprocess.run(["bash", "run_scripts/prepare_data.sh", "--limit", "5"], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].endswith("--out-dir /tmp/tapo\\ data --limit 5")


def test_the_stated_test_counts_are_the_suites():
    stated = re.search(r"The suite holds (\d+) tests, (\d+) of them marked `slow`", DOCS["docs/testing.md"])
    assert stated

    def collected(*marker):
        out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *marker],
                             cwd=ROOT, capture_output=True, text=True).stdout
        return int(re.search(r"(\d+)(?:/\d+)? tests? collected", out).group(1))

    assert (collected(), collected("-m", "slow")) == (int(stated.group(1)), int(stated.group(2)))


@pytest.mark.parametrize(
    "module_path, ours, theirs",
    [
        ("recipe_tapo/trainer.py", "recipe_tapo.trainer:RayTAPOTrainer", "verl.trainer.ppo.ray_trainer:RayPPOTrainer"),
        ("workers/agent_loop.py", "recipe_tapo.workers.agent_loop:TapoAgentLoopManager",
         "verl.experimental.agent_loop:AgentLoopManager"),
        ("recipe_tapo/main.py", "recipe_tapo.main:TapoTaskRunner", "verl.trainer.main_ppo_v0:TaskRunner.__ray_actor_class__"),
    ],
)
def test_readme_names_every_non_public_verl_member_the_recipe_overrides_or_uses(module_path, ours, theirs):
    """Overridden methods, and `self.<name>` members inherited from verl that are not public API
    (a leading underscore), must be in README's list of verl internals."""
    import importlib

    def load(spec):
        module, names = spec.split(":")
        found = importlib.import_module(module)
        for name in names.split("."):
            found = getattr(found, name)
        return found

    internals = README[README.index("verl internals this recipe relies on"):README.index("## Documentation")]
    module, names = theirs.split(":")
    assert f"`{module}.{names.split('.')[0]}`" in internals, f"README must name {module}.{names.split('.')[0]}"
    ours, theirs = load(ours), load(theirs)
    overridden = {name for name in vars(ours) if callable(vars(ours)[name]) and hasattr(theirs, name)
                  and not name.startswith("__")}
    used = set(re.findall(r"self\.(_[a-z]\w*)", (ROOT / module_path).read_text()))
    inherited = {name for name in used if hasattr(theirs, name) and name not in vars(ours)}
    missing = sorted(name for name in overridden | inherited if not re.search(rf"\b{name}\b", internals))
    assert not missing, f"README's verl internals omit {missing}"


def _entry_points():
    """`python -m` names of the installed modules with a main guard, and of packages with a
    `__main__.py` (folders installed under the recipe's namespace as setup.py maps them)."""
    roots = {"recipe_tapo": "recipe_tapo", "workers": "recipe_tapo.workers", "reward": "recipe_tapo.reward"}
    found = {}
    for folder, package in roots.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not re.search(r"""^if __name__ == ["']__main__["']:""", path.read_text(), flags=re.M):
                continue
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__main__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path.relative_to(ROOT).as_posix()
    return found


def test_tools_lists_every_command_the_package_has_and_no_other():
    page = DOCS["docs/tools.md"]
    listed = set(re.findall(r"^\| `python -m ([\w.]+)", page, flags=re.M))
    not_commands = {module: path for module, path in _entry_points().items() if f"`{path}`" in page}
    assert set(not_commands) == {"recipe_tapo.reward.verifier_worker"}  # started by the reward as a script
    assert listed == set(_entry_points()) - set(not_commands)


def test_every_verl_name_readme_lists_exists_where_the_code_imports_it_from():
    """A dotted `verl.<module>.<name>` in README's verl internals must resolve in the installed verl,
    and the recipe must import that module or that name from it (so `main_ppo` for `main_ppo_v0`,
    or a name verl moved, fails here)."""
    import importlib

    internals = README[README.index("verl internals this recipe relies on"):README.index("## Documentation")]
    code = "\n".join(path.read_text() for folder in ("recipe_tapo", "workers", "reward")
                     for path in (ROOT / folder).rglob("*.py"))
    imported = set()
    for module, names in re.findall(r"^\s*from (verl[\w.]*) import ([\w, ]+)", code, flags=re.M):
        imported |= {module} | {f"{module}.{name.split(' as ')[0].strip()}" for name in names.split(",")}
    dotted = set(re.findall(r"`(verl(?:\.\w+)+)`", internals))
    assert len(dotted) >= 8, dotted
    wrong = []
    for name in sorted(dotted):
        parts = name.split(".")
        for split in range(len(parts), 0, -1):
            try:
                found = importlib.import_module(".".join(parts[:split]))
                break
            except ImportError:
                continue
        try:
            for attribute in parts[split:]:
                found = getattr(found, attribute)
        except AttributeError:
            wrong.append(f"{name} (not in verl)")
            continue
        if not any(name == known or name.startswith(known + ".") for known in imported):
            wrong.append(f"{name} (the code does not import it from there)")
    assert not wrong, wrong
