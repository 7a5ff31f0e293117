"""The GPU environment check run before the reproduction's first stage (run_scripts/check_env.sh).

    python -m recipe_tapo.cold_start_env [--gpus 8] [--work-dir DIR] [--min-free-gb 800] [--report-only]

Checks, each printed as ok/FAIL with what was found: GPU count and CUDA (torch's build and the
device), vLLM importable (and its version beside verl's pin), flash-attn importable (the FSDP actor's
attention), verl at the recipe's pin, free disk under the work folder for the checkpoints, and whether
wandb is configured (information only: the scripts log to the console otherwise). Exit status 1 when
a check fails, unless `--report-only`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from dataclasses import dataclass

VERL_PIN = "0.9.1"
VLLM_PIN = "0.24.0"  # verl 0.9.1's `vllm` extra (with torch 2.11.0)
FLASH_ATTN_PIN = "2.8.3"  # verl 0.9.1's flash-attn extra


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - a broken install is a failed check, whatever it raises
        return f"ERROR {type(error).__name__}: {str(error)[:200]}"
    return str(getattr(module, "__version__", "unknown"))


def run_checks(gpus: int, work_dir: str, min_free_gb: float) -> list[Check]:
    checks = []
    try:
        import torch

        cuda = torch.version.cuda
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        checks.append(Check("torch", True, f"torch {torch.__version__}, built for CUDA {cuda or 'none (CPU build)'}"))
        names = sorted({torch.cuda.get_device_name(i) for i in range(count)}) if count else []
        checks.append(Check("gpus", count >= gpus, f"{count} visible CUDA device(s) {names}, need {gpus} on this node"))
    except Exception as error:  # noqa: BLE001
        checks.append(Check("torch", False, f"torch does not import: {error}"))
    for module, pin, why in (
        ("vllm", VLLM_PIN, "the rollout engine"),
        ("flash_attn", FLASH_ATTN_PIN, "the FSDP actor's attention (remove-padding)"),
    ):
        version = _version(module)
        ok = version is not None and not version.startswith("ERROR")
        detail = f"{version} ({why}; verl {VERL_PIN} pins {pin})" if ok else f"not importable: {version} ({why})"
        checks.append(Check(module, ok, detail))
    verl_version = _version("verl")
    checks.append(Check("verl", verl_version == VERL_PIN, f"verl {verl_version}, the recipe needs {VERL_PIN}"))
    existing = os.path.abspath(work_dir)
    while not os.path.isdir(existing):  # the folder may not exist yet: its nearest existing parent
        existing = os.path.dirname(existing)
    free_gb = shutil.disk_usage(existing).free / 1e9
    checks.append(Check("disk", free_gb >= min_free_gb,
                        f"{free_gb:.0f} GB free under {work_dir}, need {min_free_gb:.0f} GB for checkpoints"))
    netrc = os.path.join(os.path.expanduser("~"), ".netrc")
    wandb = bool(os.environ.get("WANDB_API_KEY")) or (
        os.path.isfile(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="replace").read()
    )
    checks.append(Check("wandb", True, "configured: runs log to wandb and the console" if wandb
                        else "not configured: runs log to the console only", required=False))
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs needed on this node")
    parser.add_argument("--work-dir", default=os.path.expanduser("~/tapo_work"))
    parser.add_argument("--min-free-gb", type=float, default=800.0)
    parser.add_argument("--report-only", action="store_true", help="print the checks, never fail")
    args = parser.parse_args(argv)
    checks = run_checks(args.gpus, args.work_dir, args.min_free_gb)
    for check in checks:
        state = "ok" if check.ok else ("FAIL" if check.required else "note")
        print(f"[env] {state:4s} {check.name}: {check.detail}")
    failed = [check.name for check in checks if check.required and not check.ok]
    if failed and not args.report_only:
        print(f"[env] environment check failed: {', '.join(failed)} (docs/install.md: GPU)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
