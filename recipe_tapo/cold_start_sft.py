"""Cold-start SFT through verl's own SFT trainer (`verl.trainer.sft_trainer.SFTTrainer`).

    # GPUs (SPMD under torchrun, FSDP): run_scripts/run_cold_start_sft.sh
    torchrun --nproc_per_node=8 -m recipe_tapo.cold_start_sft model.path=MODEL data.train_files=DIR/train.parquet
    # CPU (the tiny model; the recipe's cpu platform, one process, gloo)
    VERL_PLATFORM=cpu python -m recipe_tapo.cold_start_sft --config-name cold_start_sft_cpu model.path=... data.train_files=...

Config: `config/cold_start_sft.yaml` (verl's `sft_trainer_engine` + this project's choices),
`config/cold_start_sft_cpu.yaml` for CPU. On GPUs it is verl's `run_sft` as `verl.trainer.sft_trainer`
runs it. On the cpu platform verl's own process-group call would ask torch for "cpu:gloo,cpu:gloo"
(refused), so this entry joins a plain gloo group first (the CPU worker's function) and runs the
same `SFTTrainer`; verl's call inside its `TrainingWorker` then skips.

Before anything loads, the inputs are checked (a missing or unusable file stops with its name), and
`TAPO_DRY_RUN=1` stops there with a report. After training, rank 0 points
`<trainer.default_local_dir>/huggingface` at the last checkpoint's full HF model (config, tokenizer,
weights; `checkpoint.save_contents` holds `hf_model`): the RL runs take that folder as
`actor_rollout_ref.model.path`.
"""

from __future__ import annotations

import os
import socket
import sys

import hydra
from omegaconf import OmegaConf

HF_LINK = "huggingface"
TRACKER = "latest_checkpointed_iteration.txt"


class SFTInputError(ValueError):
    """A missing or unusable input of the SFT stage; the message names the file."""


def _files(value) -> list[str]:
    if value is None:
        return []
    if OmegaConf.is_list(value) or isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def check_inputs(config, dry_run: bool = False) -> list[str]:
    """The SFT parquet files (each readable, with the messages column and at least a batch of rows)
    and the model folder; returns the report lines. Raises SFTInputError naming the file; under
    `dry_run` a file that does not exist yet (an earlier stage makes it) is listed as missing."""
    import pyarrow.parquet as pq

    lines = []
    messages_key = str(config.data.messages_key)
    files = _files(config.data.train_files) + _files(config.data.get("val_files"))
    for path in files:
        local = os.path.expanduser(path)
        if not os.path.isfile(local):
            if dry_run:
                lines.append(f"  data: {path} (missing here)")
                continue
            raise SFTInputError(f"data file {path}: no such file (the output of python -m recipe_tapo.cold_start)")
        try:
            metadata = pq.ParquetFile(local)
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad input file
            raise SFTInputError(f"data file {path}: not a readable parquet file ({error})") from error
        columns = metadata.schema_arrow.names
        if messages_key not in columns:
            raise SFTInputError(f"data file {path}: no '{messages_key}' column (has {columns}); "
                                "expected the output of python -m recipe_tapo.cold_start")
        rows = metadata.metadata.num_rows
        if path in _files(config.data.train_files) and rows < int(config.data.train_batch_size):
            raise SFTInputError(f"data file {path}: {rows} rows, fewer than data.train_batch_size="
                                f"{config.data.train_batch_size} (no full batch to train on)")
        lines.append(f"  data: {path} ({rows} rows)")
    model = os.path.expanduser(str(config.model.path))
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise SFTInputError(f"model.path {config.model.path}: the folder holds no config.json")
        lines.append(f"  model.path: {config.model.path} (present)")
    elif model.startswith(("/", ".", "~")) or model.count("/") != 1:
        if dry_run:
            lines.append(f"  model.path: {config.model.path} (missing here)")
            return lines
        raise SFTInputError(f"model.path {config.model.path}: no such model folder")
    else:
        lines.append(f"  model.path: {config.model.path} (hub id)")
    return lines


def dry_run_report(config, lines: list[str]) -> str:
    data, trainer = config.data, config.trainer
    return "\n".join([
        "DRY RUN: the SFT config composes and its inputs are readable; no model loaded, nothing trained.",
        f"  data.train_batch_size={data.train_batch_size} data.max_length={data.max_length} "
        f"data.max_token_len_per_gpu={data.max_token_len_per_gpu} optim.lr={config.optim.lr} "
        f"trainer.total_epochs={trainer.total_epochs} trainer.total_training_steps={trainer.total_training_steps}",
        f"  trainer.nnodes={trainer.nnodes} trainer.n_gpus_per_node={trainer.n_gpus_per_node} "
        f"engine.strategy={config.engine.strategy}",
        *lines,
        f"  output: {hf_model_path(config)} (HF model for the RL runs)",
    ])


def hf_model_path(config) -> str:
    return os.path.join(str(config.trainer.default_local_dir), HF_LINK)


def link_last_hf_model(default_local_dir: str) -> str:
    """Point `<dir>/huggingface` at the HF model of the last checkpoint (verl's tracker file)."""
    tracker = os.path.join(default_local_dir, TRACKER)
    if not os.path.isfile(tracker):
        raise SFTInputError(f"{tracker}: no checkpoint was written (checkpoint tracker missing)")
    step = open(tracker, encoding="utf-8").read().strip()
    target = os.path.join(f"global_step_{step}", HF_LINK)
    if not os.path.isfile(os.path.join(default_local_dir, target, "config.json")):
        raise SFTInputError(f"{os.path.join(default_local_dir, target)}: no HF model in the last checkpoint "
                            "(checkpoint.save_contents must include hf_model)")
    link = os.path.join(default_local_dir, HF_LINK)
    if os.path.islink(link):
        os.unlink(link)
    os.symlink(target, link)
    return link


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_on_cpu(config) -> None:
    """verl's SFTTrainer in this process, one rank, on the cpu platform (gloo)."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    from verl.trainer.sft_trainer import SFTTrainer
    from verl.utils.distributed import destroy_global_process_group

    # Registers verl's FSDP engines for device cpu; joins the default group with plain gloo.
    from recipe_tapo.workers.cpu_backend.worker import init_gloo_process_group

    init_gloo_process_group()
    trainer = SFTTrainer(config=config)
    trainer.fit()
    destroy_global_process_group()


@hydra.main(config_path="pkg://recipe_tapo.conf", config_name="cold_start_sft", version_base=None)
def main(config) -> None:
    dry_run = os.environ.get("TAPO_DRY_RUN") == "1"
    try:
        lines = check_inputs(config, dry_run=dry_run)
    except SFTInputError as error:
        print(f"[cold-start-sft] ERROR: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    if dry_run:
        from verl.utils.config import omega_conf_to_dataclass

        for section in ("engine", "optim", "checkpoint"):  # verl's own dataclasses refuse unknown keys
            omega_conf_to_dataclass(config[section])
        print(dry_run_report(config, lines))
        return
    from verl.utils.device import auto_set_device

    from recipe_tapo.workers.cpu_backend import is_cpu_platform

    auto_set_device(config)
    if is_cpu_platform():
        run_on_cpu(config)
    else:
        from verl.trainer.sft_trainer import run_sft

        run_sft(config)
    if int(os.environ.get("RANK", "0")) == 0:
        link = link_last_hf_model(str(config.trainer.default_local_dir))
        print(f"[cold-start-sft] HF model for the RL runs: {link} -> {os.readlink(link)}")


if __name__ == "__main__":
    main()
