"""README's main job (run_scripts/run_tapo_toy_cpu.sh): TAPO through verl's trainer on CPU from the
shipped toy cold-start checkpoint, the policy writing its own reflections, which are parsed, spliced
into its wrong answers and trained on."""

import json
import os

import pytest

from verl_run import run_logged, training_steps

pytestmark = pytest.mark.slow

CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipe_tapo", "toy", "cold_start_model")


def test_the_shipped_checkpoint_is_a_complete_hf_folder():
    from transformers import AutoConfig, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert os.path.isfile(os.path.join(CHECKPOINT, name)), name
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    assert AutoConfig.from_pretrained(CHECKPOINT).vocab_size == len(tokenizer)
    assert tokenizer.decode(tokenizer.encode("47 + 5 = 52")) == "47 + 5 = 52"  # one token per character
    assert len(tokenizer.encode("47 + 5 = 52")) == len("47 + 5 = 52")


def test_the_main_job_constructs_from_the_policys_own_reflections(tmp_path):
    toy = tmp_path / "toy"
    log = run_logged(["bash", "run_scripts/run_tapo_toy_cpu.sh"], log_path=str(tmp_path / "run.log"),
                     timeout_s=900, env={"TOY_DIR": str(toy), "STEPS": "2"})
    steps = training_steps(log)
    assert sorted(steps) == [1, 2]
    for step in steps.values():
        assert step["tapo/round_failed"] == 0 and step["tapo/synthesis_answered"] == step["tapo/synthesis_requests"]
    # the policy's own synthesis parses and splices: constructions go into the batch and are trained on
    assert sum(step["tapo/constructed_rows"] for step in steps.values()) > 0
    assert max(step["tapo/parse_rate"] for step in steps.values()) > 0
    records = [json.loads(line) for name in sorted(os.listdir(toy / "tapo_dump"))
               for line in (toy / "tapo_dump" / name).open()]
    inserted = [record for record in records if record["status"] == "ok"]
    assert len(inserted) == sum(step["tapo/constructed_rows"] for step in steps.values())
    for record in inserted:  # the policy's own wrong answer up to its first error, then its reflection
        cut = record["cut_tokens"]
        assert cut >= 8 and record["token_ids"][:cut] == record["wrong_ids"][:cut]
    # one token per character: the text after the cut is what the policy wrote, a reflection first
    reflecting = [record["trajectory"][record["cut_tokens"]:].lstrip().startswith("Wait,") for record in inserted]
    assert sum(reflecting) >= len(reflecting) / 2
    assert (toy / "metrics.jsonl").stat().st_size > 0
