"""How the recipe installs: one import root, the verl plugin entry point, no GPU pins on CPU."""

import importlib
import importlib.metadata
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_top_level_folders_import_inside_the_recipe_namespace():
    for module, folder in (("recipe_tapo.workers", "workers"), ("recipe_tapo.reward", "reward"),
                           ("recipe_tapo.conf", "config")):
        path = importlib.import_module(module).__file__
        assert os.path.dirname(path) == os.path.join(REPO_ROOT, folder), module


def test_distribution_declares_the_verl_plugin_and_pins_verl():
    dist = importlib.metadata.distribution("tapo-verl")
    plugins = [ep for ep in dist.entry_points if ep.group == "verl.plugins"]
    assert [(ep.name, ep.value) for ep in plugins] == [("tapo", "recipe_tapo.plugin")]
    requirements = dist.requires or []
    assert any(r.startswith("verl[") and "==0.9.1" in r and "extra ==" not in r for r in requirements)
    # torch is left to the user's install (CPU or CUDA build); the GPU stack only in the `gpu` extra.
    base = [r for r in requirements if "extra ==" not in r]
    assert not any(r.split("[")[0].split("=")[0].strip() in ("torch", "vllm", "flash-attn") for r in base)
    assert any("vllm" in r and 'extra == "gpu"' in r for r in requirements)


def test_configs_and_prompts_ship_with_the_package():
    from importlib.resources import files

    conf = files("recipe_tapo.conf")
    assert conf.joinpath("tapo_trainer.yaml").is_file()
    assert conf.joinpath("profile", "tiny_cpu.yaml").is_file()


def test_wheel_ships_every_module_and_config(tmp_path):
    """A regular (non-editable) install must carry every sub-package of the mapped folders."""
    import shutil
    import subprocess
    import sys
    import zipfile

    # Build from a copy: setuptools leaves a build/ folder in the source tree.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(os.path.join(REPO_ROOT, "setup.py"), source)
    for folder in ("recipe_tapo", "workers", "reward", "config"):
        shutil.copytree(os.path.join(REPO_ROOT, folder), source / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(source)], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("tapo_verl-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, root in (("recipe_tapo", "recipe_tapo"), ("workers", "recipe_tapo/workers"),
                         ("reward", "recipe_tapo/reward"), ("config", "recipe_tapo/conf")):
        for dirpath, _, files in os.walk(os.path.join(REPO_ROOT, folder)):
            if "__pycache__" in dirpath:
                continue
            for name in files:
                if name.endswith((".py", ".yaml", ".txt")):
                    rel = os.path.relpath(os.path.join(dirpath, name), os.path.join(REPO_ROOT, folder))
                    expected.add(f"{root}/{rel}")
    assert expected - shipped == set()
