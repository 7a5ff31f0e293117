"""The hf engine batches concurrent sequences without changing any sequence's tokens or log-probs.

A seeded request must get the same sample whichever requests share its decoding steps (TAPO picks
rows by position, and the agent loop's concurrent requests reach the server in no fixed order), so
these tests compare bit for bit, not within a tolerance. Against the former unbatched sampler
(one sequence, 1-row forwards) the tokens match and the log-probs agree within 1e-5: a 1-row matmul
takes another path (gemv) in torch's CPU kernels, with other rounding.
"""

import asyncio

import pytest
import torch
from transformers import DynamicCache

from recipe_tapo.workers.cpu_backend.hf_rollout import HFGenerationServer
from recipe_tapo.workers.cpu_backend.hf_sampler import (
    DECODE_ROW_MULTIPLE, HFSampler, SampleRequest, load_causal_lm, sample_next_token,
)

PROMPTS = [[5, 17, 42, 9], [7, 8], list(range(3, 40)), [100, 200, 300, 11, 12, 13, 14], [1], [9, 9, 3]]
SAMPLING = [  # (temperature, top_p, top_k): sampled, truncated, greedy
    (1.0, 1.0, -1), (0.7, 0.9, 20), (1.3, 1.0, 5), (0.0, 1.0, -1), (1.0, 0.8, -1), (0.6, 1.0, -1),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from recipe_tapo.tiny_assets import build_model, build_tokenizer

    path = str(tmp_path_factory.mktemp("tiny_model"))
    build_model(path, build_tokenizer(path))
    return path


@pytest.fixture(scope="module")
def sampler(model_dir):
    model = load_causal_lm(model_dir)
    return HFSampler(model, {model.generation_config.eos_token_id})


def _requests(order=None, ignore_eos=True):
    """One request per prompt, each with its own seeded stream and budget (different lengths)."""
    made = [SampleRequest(PROMPTS[i], 6 + 3 * i, *SAMPLING[i], ignore_eos=ignore_eos,
                          generator=torch.Generator().manual_seed(1000 + i)) for i in range(len(PROMPTS))]
    return made if order is None else [made[i] for i in order]


def _outputs(requests):
    return {tuple(request.prompt_ids): (request.tokens, request.log_probs) for request in requests}


def test_a_sequence_samples_the_same_alone_or_in_any_batch(sampler):
    alone = {}
    for request in _requests():
        sampler.sample_batch([request])
        alone.update(_outputs([request]))
    assert all(len(tokens) == 6 + 3 * i for i, (tokens, _) in enumerate(alone.values()))
    # All at once; in another order; and joining a running batch two at a time (max_batch=2).
    for order, max_batch in [(None, 64), ([5, 3, 1, 0, 2, 4], 64), ([2, 0, 4, 1, 5, 3], 2), ([4, 5, 0], 3)]:
        batch = _requests(order)
        sampler.sample_batch(batch, max_batch=max_batch)
        assert _outputs(batch) == {key: alone[key] for key in _outputs(batch)}, (order, max_batch)  # bit for bit


def test_batches_past_one_padded_block_sample_as_alone(sampler):
    """More sequences than DECODE_ROW_MULTIPLE, so the row count crosses a padding boundary as they
    join and finish (every count from 1 to 21 occurs)."""
    def many():
        return [SampleRequest([3 + i % 7, 11, 40 + i], 2 + i % 9, *SAMPLING[i % len(SAMPLING)], ignore_eos=True,
                              generator=torch.Generator().manual_seed(i)) for i in range(DECODE_ROW_MULTIPLE + 5)]

    alone = many()
    for request in alone:
        sampler.sample_batch([request])
    for max_batch in (64, 7, DECODE_ROW_MULTIPLE + 1):
        together = many()
        sampler.sample_batch(together, max_batch=max_batch)
        for a, b in zip(alone, together):
            assert (a.tokens, a.log_probs) == (b.tokens, b.log_probs), max_batch


def test_sequences_join_and_leave_between_steps(sampler):
    """Admission in the middle of other sequences' decoding (as the server does), EOS honoured."""
    reference = _requests(ignore_eos=False)
    for request in reference:
        sampler.sample_batch([request])
    staggered = _requests(ignore_eos=False)
    sampler.admit(staggered[:2])
    sampler.step()
    sampler.step()
    sampler.admit(staggered[2:5])
    sampler.step()
    sampler.admit(staggered[5:])
    widths = []
    while sampler.active:
        widths.append(len(sampler.active))
        sampler.step()
    assert max(widths) > 1
    assert _outputs(staggered) == _outputs(reference)
    for request in staggered:
        assert request.finished
        assert len(request.tokens) == request.max_new_tokens or request.tokens[-1] in sampler.stop_token_ids


def _unbatched_sample(model, request):
    """The former sampler: one sequence, a DynamicCache, 1-row forwards."""
    ids, past, tokens, log_probs = torch.tensor([request.prompt_ids]), DynamicCache(config=model.config), [], []
    with torch.no_grad():
        for _ in range(request.max_new_tokens):
            logits = model(input_ids=ids, past_key_values=past, use_cache=True).logits[0, -1]
            token, log_prob = sample_next_token(logits, request.temperature, request.top_p, request.top_k,
                                                request.generator)
            tokens.append(token)
            log_probs.append(log_prob)
            ids = torch.tensor([[token]])
    return tokens, log_probs


def test_batched_samples_match_the_former_unbatched_sampler(model_dir, sampler):
    reference_model = load_causal_lm(model_dir)  # plain sdpa, untouched by the batching
    batch = _requests()
    sampler.sample_batch(batch)
    for request, fresh in zip(batch, _requests()):
        tokens, log_probs = _unbatched_sample(reference_model, fresh)
        assert request.tokens == tokens
        assert torch.allclose(torch.tensor(request.log_probs), torch.tensor(log_probs), atol=1e-5, rtol=0)


def test_batched_log_probs_are_the_full_temperature_scaled_distribution(sampler):
    batch = _requests()
    sampler.sample_batch(batch)
    for request in batch:
        ids = torch.tensor([request.prompt_ids + request.tokens])
        with torch.no_grad():
            logits = sampler.model(input_ids=ids).logits[0, len(request.prompt_ids) - 1:-1]
        temperature = request.temperature if request.temperature > 0 else 1.0
        expected = torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(request.tokens)[:, None])
        assert torch.allclose(torch.tensor(request.log_probs), expected.squeeze(-1), atol=1e-5)


def test_linear_rows_do_not_depend_on_their_neighbours():
    """Why decoding forwards pad their rows to a multiple of DECODE_ROW_MULTIPLE: then torch's CPU fp32
    matmul gives each row the same bits whatever the other rows and their number. If this fails on
    a machine, batch composition changes samples there in the last bits (and the tests above fail)."""
    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(96, 64, generator=generator), torch.randn(96, generator=generator)
    rows = torch.randn(DECODE_ROW_MULTIPLE, 64, generator=generator)
    reference = torch.nn.functional.linear(rows, weight, bias)
    for count in range(DECODE_ROW_MULTIPLE, 8 * DECODE_ROW_MULTIPLE + 1, DECODE_ROW_MULTIPLE):
        for _ in range(3):
            batch = torch.randn(count, 64, generator=generator)
            where = torch.randperm(count, generator=generator)[:DECODE_ROW_MULTIPLE]
            batch[where] = rows
            assert torch.equal(torch.nn.functional.linear(batch, weight, bias)[where], reference), count


# The server: concurrent `generate` calls share decoding steps.

def _server(model_dir, **overrides):
    from verl.workers.config import HFModelConfig, RolloutConfig

    config = RolloutConfig(name="hf", prompt_length=48, response_length=24, temperature=1.0, **overrides)
    return HFGenerationServer(config, HFModelConfig(path=model_dir), replica_rank=0)


def _params(i):
    temperature, top_p, top_k = SAMPLING[i]
    return {"seed": 7 + i, "max_tokens": 5 + 3 * i, "temperature": temperature, "top_p": top_p, "top_k": top_k,
            "logprobs": True}


def test_concurrent_requests_are_batched_and_sample_as_if_alone(model_dir, monkeypatch):
    server = _server(model_dir)
    alone = [asyncio.run(server.generate(PROMPTS[i], _params(i), request_id=f"r{i}")) for i in range(len(PROMPTS))]

    widths = []
    step = server.sampler.step
    monkeypatch.setattr(server.sampler, "step", lambda: (widths.append(len(server.sampler.active)), step())[1])

    async def together(order):
        outs = await asyncio.gather(*(server.generate(PROMPTS[i], _params(i), request_id=f"r{i}") for i in order))
        return dict(zip(order, outs))

    for order in ([0, 1, 2, 3, 4, 5], [5, 2, 4, 0, 3, 1]):
        outs = asyncio.run(together(order))
        for i in order:
            assert outs[i].token_ids == alone[i].token_ids and outs[i].log_probs == alone[i].log_probs, (order, i)
    assert max(widths) == len(PROMPTS)  # one forward per step over every active sequence


def test_rows_keep_their_streams_when_a_group_is_served_together(model_dir):
    """Under full_determinism each row's stream comes from its request id, batched or not."""
    one_by_one = _server(model_dir, full_determinism=True)
    expected = {row: asyncio.run(one_by_one.generate([5, 17, 42], {}, request_id=f"det-{row}")).token_ids
                for row in range(6)}

    async def group(server, order):
        outs = await asyncio.gather(*(server.generate([5, 17, 42], {}, request_id=f"det-{row}") for row in order))
        return {row: out.token_ids for row, out in zip(order, outs)}

    assert asyncio.run(group(_server(model_dir, full_determinism=True), [3, 1, 5, 0, 2, 4])) == expected
    assert len({tuple(tokens) for tokens in expected.values()}) > 1


def test_a_failed_or_cancelled_request_leaves_the_others_alone(model_dir):
    server = _server(model_dir)
    expected = asyncio.run(server.generate(PROMPTS[0], _params(0), request_id="ok")).token_ids

    async def mixed():
        good = asyncio.ensure_future(server.generate(PROMPTS[0], _params(0), request_id="ok"))
        bad = asyncio.ensure_future(server.generate([10**6], {"max_tokens": 3}, request_id="bad"))  # not a token id
        gone = asyncio.ensure_future(server.generate(PROMPTS[2], {"max_tokens": 20}, request_id="gone"))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(IndexError):
            await bad
        with pytest.raises(asyncio.CancelledError):
            await gone
        return (await good).token_ids

    assert asyncio.run(mixed()) == expected
    assert not server.sampler.active and not server._waiting and not server._futures


def test_weights_load_between_decoding_steps(model_dir):
    """A weight sync waits for the running step; every request completes."""
    server = _server(model_dir)
    weights = {name: tensor.clone() for name, tensor in server.model.state_dict().items()}

    async def sync_while_generating():
        requests = [asyncio.ensure_future(server.generate(PROMPTS[i], {"max_tokens": 12, "ignore_eos": True},
                                                          request_id=f"r{i}")) for i in range(3)]
        await asyncio.sleep(0)
        version = await server.load_weights(weights)
        await server.wait_for_requests_to_drain()
        return version, [len((await request).token_ids) for request in requests]

    assert asyncio.run(sync_while_generating()) == (1, [12, 12, 12])


def test_models_with_sliding_window_layers_decode_each_sequence_alone():
    """The row attention serves plain full-attention caches only; other models keep the unbatched path."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=4,
                         layer_types=["full_attention", "sliding_attention"], attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    sampler = HFSampler(model, set())

    def requests():
        return [SampleRequest(list(range(1, 3 + i)), 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    batch = requests()
    sampler.admit(batch)
    assert all(row.cache is not None for row in sampler.active)  # decoded alone, with a DynamicCache
    while sampler.active:
        sampler.step()
    for request, fresh in zip(batch, requests()):
        assert request.tokens == _unbatched_sample(model, fresh)[0]
