"""On several nodes a relative path in a key every node's workers read is refused at start-up, naming
the key and the path; on one node (workers in the driver's directory) it is not."""

import pytest
from hydra import compose, initialize_config_module

from recipe_tapo.main import check_config
from recipe_tapo.run_config import check_paths_reach_every_node

ABSOLUTE = [
    "actor_rollout_ref.model.path=/models/sft/huggingface",
    "data.train_files=/data/train.parquet",
    "data.val_files=[/data/aime2024.parquet,/data/aime2025.parquet]",
    "trainer.default_local_dir=/ckpt/run",
]


def _config(*overrides, nodes=2):
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        return compose(config_name="tapo_trainer", overrides=[*ABSOLUTE, f"trainer.nnodes={nodes}", *overrides])


def test_absolute_paths_and_a_hub_id_pass_on_several_nodes():
    check_paths_reach_every_node(_config())
    check_paths_reach_every_node(_config("actor_rollout_ref.model.path=Qwen/Qwen3-8B"))
    check_paths_reach_every_node(_config("data.train_files=hdfs://cluster/data/train.parquet"))


@pytest.mark.parametrize("override, key, path", [
    ("actor_rollout_ref.model.path=checkpoints/sft/huggingface", "actor_rollout_ref.model.path",
     "checkpoints/sft/huggingface"),
    ("data.train_files=data/train.parquet", "data.train_files", "data/train.parquet"),
    ("data.val_files=[/data/aime2024.parquet,aime2025.parquet]", "data.val_files", "aime2025.parquet"),
    ("trainer.default_local_dir=ckpt", "trainer.default_local_dir", "ckpt"),
    ("tapo.dump.dir=dumps", "tapo.dump.dir", "dumps"),
])
def test_a_relative_path_is_refused_on_several_nodes_naming_key_and_path(override, key, path):
    with pytest.raises(ValueError) as error:
        check_paths_reach_every_node(_config(override))
    assert str(error.value).startswith(f"{key}={path!r} is a relative path, and trainer.nnodes=2")
    check_paths_reach_every_node(_config(override, nodes=1))  # one node: the driver's directory


def test_verls_default_checkpoint_folder_is_relative_and_refused_on_several_nodes():
    with initialize_config_module(config_module="recipe_tapo.conf", version_base=None):
        config = compose(config_name="tapo_trainer", overrides=[*ABSOLUTE[:3], "trainer.nnodes=2"])
    with pytest.raises(ValueError, match=r"^trainer\.default_local_dir='checkpoints/"):
        check_paths_reach_every_node(config)


def test_a_local_folder_named_like_a_hub_id_is_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"^actor_rollout_ref\.model\.path='org/model' is a relative path"):
        check_paths_reach_every_node(_config("actor_rollout_ref.model.path=org/model"))


def test_the_start_up_checks_run_it():
    with pytest.raises(ValueError, match=r"^data\.train_files='train\.parquet' is a relative path"):
        check_config(_config("data.train_files=train.parquet"))
