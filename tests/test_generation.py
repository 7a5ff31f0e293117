"""Offline generation (evaluation, difficulty filter) on the CPU engine."""

import pytest

from recipe_tapo.generation import SamplingSettings, chat_prompt_ids, make_generator, resolve_backend


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    from recipe_tapo.tiny_assets import build_model, build_tokenizer

    path = str(tmp_path_factory.mktemp("tiny"))
    build_model(path, build_tokenizer(path))
    return path, AutoTokenizer.from_pretrained(path)


def test_chat_prompt_ids_match_the_chat_template(tiny):
    _, tokenizer = tiny
    ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": "What is 1 + 1?"}])
    assert tokenizer.decode(ids) == "<|im_start|>user\nWhat is 1 + 1?<|im_end|>\n<|im_start|>assistant\n"


def test_hf_backend_returns_n_samples_per_prompt_within_the_budget(tiny):
    path, tokenizer = tiny
    generator = make_generator(path, backend="hf")
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in ("What is 2 + 2?", "Hi")]
    settings = SamplingSettings(n=3, temperature=1.0, max_new_tokens=6, seed=7)
    samples = generator.generate(prompts, settings)
    assert [len(per_prompt) for per_prompt in samples] == [3, 3]
    for response in (r for per_prompt in samples for r in per_prompt):
        assert 1 <= len(response) <= 6
        if len(response) < 6:
            assert response[-1] == tokenizer.eos_token_id
    # Seeded: the same settings give the same samples.
    assert generator.generate(prompts, settings) == samples


def test_hf_samples_do_not_depend_on_the_batch_size(tiny):
    """Every sample has its own stream (seed, prompt, k), and batching leaves a sequence's arithmetic alone."""
    path, tokenizer = tiny
    generator = make_generator(path, backend="hf")
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in ("1 + 2?", "Hello there", "7")]
    settings = SamplingSettings(n=4, temperature=0.8, top_p=0.9, max_new_tokens=8, seed=3)
    batched = generator.generate(prompts, settings)
    generator.max_batch = 1
    assert generator.generate(prompts, settings) == batched
    assert len({tuple(sample) for sample in batched[0]}) > 1  # the n samples of a prompt differ


def test_backend_choice_and_errors():
    assert resolve_backend("hf") == "hf"
    assert resolve_backend("auto") == "hf"  # no CUDA device here
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        resolve_backend("tgi")
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0)


def test_vllm_backend_without_vllm_says_how_to_get_it():
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match=r"\.\[gpu\]"):
        make_generator("/nonexistent", backend="vllm")


def test_chat_template_kwargs_reach_the_prompt_as_in_the_rl_run(qwen_tokenizer):
    """Qwen3 non-thinking: evaluation and the filter render prompts with the RL run's
    data.apply_chat_template_kwargs (enable_thinking=false closes an empty think block)."""
    import argparse

    from recipe_tapo.generation import parse_chat_template_kwargs

    tokenizer = qwen_tokenizer
    messages = [{"role": "user", "content": "What is 1 + 1?"}]
    thinking = tokenizer.decode(chat_prompt_ids(tokenizer, messages))
    kwargs = parse_chat_template_kwargs('{"enable_thinking": false}')
    non_thinking = tokenizer.decode(chat_prompt_ids(tokenizer, messages, kwargs))
    assert non_thinking.endswith("<think>\n\n</think>\n\n") and not thinking.endswith("</think>\n\n")
    for bad in ("enable_thinking=false", "[1]"):
        with pytest.raises(argparse.ArgumentTypeError, match="chat-template-kwargs"):
            parse_chat_template_kwargs(bad)


def test_every_prompt_of_a_call_gets_its_own_stable_seed():
    """vLLM's requests: one seed per prompt position (the same whichever replica samples it), so the
    samples of different prompts are not drawn from one shared stream."""
    from recipe_tapo.generation import prompt_seed

    seeds = [prompt_seed(0, index) for index in range(1000)]
    assert len(set(seeds)) == 1000 and all(0 <= seed < 2**63 for seed in seeds)
    assert seeds == [prompt_seed(0, index) for index in range(1000)]
    assert prompt_seed(1, 0) != prompt_seed(0, 0)
