"""The CPU platform and the hf rollout server, without Ray."""

import asyncio
import os
import subprocess
import sys
import time

import pytest
import torch

from recipe_tapo.workers.cpu_backend.hf_rollout import HFGenerationServer, max_new_tokens_for
from recipe_tapo.workers.cpu_backend.hf_sampler import sample_next_token
from recipe_tapo.workers.cpu_backend.platform import PlatformCPU


def test_platform_is_cpu_with_gloo_and_never_auto_detected():
    platform = PlatformCPU()
    assert platform.device_name == "cpu"
    assert platform.communication_backend_name() == "gloo"
    assert platform.is_platform_available(use_smi_check=True) is False
    # verl moves tensors with `.to(get_device_id())`: the id must name the CPU, not an index.
    assert torch.zeros(1).to(platform.current_device()).device.type == "cpu"


def _last_line_in_fresh_process(code, env_platform):
    env = {**os.environ, "VERL_PLATFORM": env_platform} if env_platform else dict(os.environ)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def _verl_device_in_fresh_process(env_platform):
    code = "import verl; from verl.utils.device import get_device_name; print(get_device_name())"
    return _last_line_in_fresh_process(code, env_platform)


def test_verls_memory_helpers_work_on_the_cpu_platform():
    """verl calls torch.cuda-style memory functions through the platform's device module."""
    code = (
        "import verl\n"
        "from verl.utils.memory_utils import aggressive_empty_cache, get_memory_info, reset_memory_stats\n"
        "reset_memory_stats(); aggressive_empty_cache(force_sync=True)\n"
        "print(get_memory_info()['max_memory_allocated_gb'])\n"
    )
    assert _last_line_in_fresh_process(code, "cpu") == "0.0"


def test_cpu_platform_only_by_explicit_opt_in(monkeypatch):
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert _verl_device_in_fresh_process("cpu") == "cpu"
    # Without the opt-in verl keeps its own fallback (nvidia), as on a GPU cluster.
    assert _verl_device_in_fresh_process(None) == "cuda"


def test_hf_names_registered_in_verl():
    import verl  # noqa: F401  (loads the plugin)
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    assert get_rollout_class("hf").__name__ == "HFServerAdapter"
    assert RolloutReplicaRegistry.get("hf").__name__ == "HFReplica"


@pytest.mark.parametrize(
    "prompt_len, params, expected",
    [
        (10, {}, 32),  # response_length
        (50, {}, 14),  # prompt_length + response_length - prompt_len
        (10, {"max_tokens": 5}, 5),
        (10, {"max_new_tokens": 500}, 86),  # clamped to the context (96) minus the prompt
    ],
)
def test_max_new_tokens_rules(prompt_len, params, expected):
    assert max_new_tokens_for(prompt_len, params, prompt_length=32, response_length=32, max_model_len=96) == expected


def test_prompt_without_room_is_a_clear_error():
    with pytest.raises(ValueError, match="leaves no room to generate"):
        max_new_tokens_for(64, {}, prompt_length=32, response_length=32, max_model_len=None)


def test_sampling_log_prob_is_the_temperature_scaled_full_distribution():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0])
    generator = torch.Generator().manual_seed(0)
    for temperature in (0.5, 1.0, 2.0):
        token, log_prob = sample_next_token(logits, temperature, top_p=0.9, top_k=3, generator=generator)
        assert token in (0, 1, 2)  # top_k=3 never yields the last token
        assert log_prob == pytest.approx(float(torch.log_softmax(logits / temperature, -1)[token]))


def test_greedy_and_degenerate_truncation_pick_the_argmax():
    logits = torch.tensor([0.1, 3.0, 0.2])
    generator = torch.Generator().manual_seed(0)
    assert sample_next_token(logits, 0.0, 1.0, -1, generator)[0] == 1
    assert all(sample_next_token(logits, 1.0, 1.0, 1, generator)[0] == 1 for _ in range(20))
    assert all(sample_next_token(logits, 1.0, 1e-6, -1, generator)[0] == 1 for _ in range(20))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from recipe_tapo.tiny_assets import build_model, build_tokenizer

    path = str(tmp_path_factory.mktemp("tiny_model"))
    build_model(path, build_tokenizer(path))
    return path


@pytest.fixture
def server(tiny_model_dir):
    from verl.workers.config import HFModelConfig, RolloutConfig

    config = RolloutConfig(name="hf", prompt_length=16, response_length=8, temperature=1.0)
    model_config = HFModelConfig(path=tiny_model_dir)
    return HFGenerationServer(config, model_config, replica_rank=0)


def _recomputed_log_probs(model, prompt_ids, token_ids):
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)


def test_generate_returns_tokens_with_their_log_probs(server):
    prompt = [5, 17, 42, 9]
    out = asyncio.run(server.generate(prompt, {"logprobs": True, "temperature": 1.0}, request_id="r"))
    assert 1 <= len(out.token_ids) <= 8
    assert len(out.log_probs) == len(out.token_ids)
    expected = _recomputed_log_probs(server.model, prompt, out.token_ids)
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-5)
    if len(out.token_ids) < 8:
        assert out.token_ids[-1] in server.sampler.stop_token_ids


def test_samples_do_not_depend_on_the_order_requests_arrive_in(tiny_model_dir):
    """The agent loop sends a group's requests concurrently: a seeded run must not depend on the order."""
    from verl.workers.config import HFModelConfig, RolloutConfig

    def fresh_server():
        config = RolloutConfig(name="hf", prompt_length=16, response_length=8, temperature=1.0)
        return HFGenerationServer(config, HFModelConfig(path=tiny_model_dir), replica_rank=0)

    def samples(order):
        server, out = fresh_server(), {"a": [], "b": []}
        for name in order:
            prompt = [5, 17, 42] if name == "a" else [9, 9, 3]
            out[name].append(asyncio.run(server.generate(prompt, {}, request_id=name)).token_ids)
        return out

    first, second = samples("aabb"), samples("baba")
    assert first == second
    assert first["a"][0] != first["a"][1]  # the k-th sample of a prompt has its own stream
    # A request's own seed (as vLLM takes it) decides its sample outright.
    server = fresh_server()
    seeded = [asyncio.run(server.generate([5, 17, 42], {"seed": 3}, request_id="s")).token_ids for _ in range(2)]
    assert seeded[0] == seeded[1]


def _stable_id_server(tiny_model_dir, replica_rank=0):
    from verl.workers.config import HFModelConfig, RolloutConfig

    # verl's `rollout.full_determinism` (set by the tiny_cpu profile): request ids name rows.
    config = RolloutConfig(name="hf", prompt_length=16, response_length=8, temperature=1.0, full_determinism=True)
    return HFGenerationServer(config, HFModelConfig(path=tiny_model_dir), replica_rank=replica_rank)


def _rows_in_arrival_order(server, order, prompt=(5, 17, 42), params=None):
    """Rows `det-<i>` of one group (identical prompts), sent in `order`; returns {row: token ids}."""
    return {row: asyncio.run(server.generate(list(prompt), dict(params or {}), request_id=f"det-{row}")).token_ids
            for row in order}


def test_a_row_gets_the_same_sample_whatever_order_its_group_arrives_in(tiny_model_dir):
    """Row for row, not only as a set: TAPO picks rows by position, so row i must get row i's stream."""
    in_order = _rows_in_arrival_order(_stable_id_server(tiny_model_dir), [0, 1, 2, 3])
    shuffled = _rows_in_arrival_order(_stable_id_server(tiny_model_dir), [3, 1, 0, 2])
    assert shuffled == in_order
    assert len({tuple(tokens) for tokens in in_order.values()}) > 1  # each row has its own stream
    # The stream belongs to the row, whichever replica serves it.
    assert _rows_in_arrival_order(_stable_id_server(tiny_model_dir, replica_rank=1), [2, 0, 3, 1]) == in_order


def test_row_streams_move_on_with_the_weights_and_ignore_greedy_requests(tiny_model_dir):
    server = _stable_id_server(tiny_model_dir)
    asyncio.run(server.set_global_steps(1))
    first = _rows_in_arrival_order(server, [0, 1])
    # A greedy pass over the same rows (verl's validation) draws no stream...
    _rows_in_arrival_order(server, [1, 0], params={"temperature": 0.0})
    # ...so a run that validates first (e.g. one resumed from a checkpoint) samples the same rows.
    other = _stable_id_server(tiny_model_dir)
    asyncio.run(other.set_global_steps(1))
    assert _rows_in_arrival_order(other, [1, 0]) == first
    # The next weights give every row a new stream, the same in every run.
    asyncio.run(server.set_global_steps(2))
    asyncio.run(other.set_global_steps(2))
    assert _rows_in_arrival_order(server, [0, 1]) == _rows_in_arrival_order(other, [1, 0])


def test_weight_sync_changes_what_the_server_generates(server):
    """load_weights replaces every parameter: log-probs then follow the new weights exactly."""
    prompt = [5, 17, 42, 9]
    new_weights = {name: torch.randn_like(p) * 0.5 for name, p in server.model.state_dict().items()}
    new_weights["lm_head.weight"] = new_weights["model.embed_tokens.weight"]  # the tiny model ties them
    assert asyncio.run(server.load_weights(new_weights)) == 1
    out = asyncio.run(server.generate(prompt, {"logprobs": True}, request_id="r"))
    for name, tensor in server.model.state_dict().items():
        assert torch.equal(tensor, new_weights[name]), name
    expected = _recomputed_log_probs(server.model, prompt, out.token_ids)
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-5)


def test_weight_sync_with_missing_parameters_is_refused(server):
    weights = dict(server.model.state_dict())
    weights.pop("model.norm.weight")
    with pytest.raises(ValueError, match="missing .*model.norm.weight"):
        asyncio.run(server.load_weights(weights))


def test_log_probs_omitted_unless_asked(server):
    out = asyncio.run(server.generate([1, 2, 3], {"max_tokens": 3}, request_id="r"))
    assert out.log_probs is None and 1 <= len(out.token_ids) <= 3


def test_worker_joins_gloo_through_verls_initialiser_and_verls_own_call_then_skips():
    """verl's `TrainingWorker.__init__` calls `initialize_global_process_group_ray()` with no backend,
    which on CPU builds "cpu:gloo,cpu:gloo" (refused by torch). The CPU worker first calls the same
    function with `backend="gloo"`; verl's call must then find the group and skip."""
    code = (
        "import os, socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "os.environ.update(RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))\n"
        "import verl, torch.distributed as dist\n"
        "from verl.utils.distributed import initialize_global_process_group_ray\n"
        "try:\n"
        "    initialize_global_process_group_ray(timeout_second=None)\n"
        "    print('verl alone: ok')\n"
        "except ValueError:\n"
        "    print('verl alone: refused')\n"
        "from recipe_tapo.workers.cpu_backend.worker import init_gloo_process_group\n"
        "init_gloo_process_group()\n"
        "initialize_global_process_group_ray(timeout_second=None)  # as TrainingWorker.__init__ calls it\n"
        "print(dist.get_backend())\n"
    )
    env = {**os.environ, "VERL_PLATFORM": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert "verl alone: refused" in lines  # why the worker must come first
    assert lines[-1].strip() == "gloo"


def test_worker_uses_verls_public_initialiser(monkeypatch):
    from recipe_tapo.workers.cpu_backend import worker

    calls = []
    monkeypatch.setattr(worker, "initialize_global_process_group_ray", lambda **kwargs: calls.append(kwargs))
    worker.init_gloo_process_group()
    assert calls == [{"timeout_second": None, "backend": "gloo"}]


def test_readme_lists_every_verl_internal_the_cpu_backend_touches():
    """Private verl names (and behaviour relied on) that a verl upgrade may move: README must name each."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    backend = "".join(path.read_text() for path in (root / "workers" / "cpu_backend").glob("*.py"))
    main = (root / "recipe_tapo" / "main.py").read_text()
    readme = (root / "README.md").read_text()
    internals = readme[readme.index("verl internals this recipe relies on"):]
    for name, used in [
        ("_ROLLOUT_REGISTRY", backend),
        ("actor_worker_cls", backend),
        ("ref_worker_cls", backend),
        ("_server_handle", backend),
        ("_server_address", backend),
        ("initialize_global_process_group_ray", backend),
        ("__ray_actor_class__", main),
    ]:
        assert name in used, f"{name} no longer used: drop it from this list and README"
        assert name in internals, f"README's list of verl internals omits {name}"


def test_abort_ends_the_requests_in_flight_and_holds_new_ones_until_resumed(tiny_model_dir):
    """As verl's vLLM server: aborted requests return at once with their tokens so far (stop_reason
    "aborted"); until resume_generation new requests wait (or are refused with reject_request)."""
    from verl.workers.config import HFModelConfig, RolloutConfig

    config = RolloutConfig(name="hf", prompt_length=16, response_length=8, temperature=1.0, max_model_len=4096)
    server = HFGenerationServer(config, HFModelConfig(path=tiny_model_dir), replica_rank=0)
    long = {"temperature": 1.0, "max_tokens": 4000, "ignore_eos": True}

    async def run():
        running = [asyncio.ensure_future(server.generate([5, 17, 42], long, request_id=f"r{i}")) for i in range(3)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        result = await server.abort_all_requests()
        outputs = await asyncio.wait_for(asyncio.gather(*running), timeout=5)
        abort_seconds = time.monotonic() - started
        held = asyncio.ensure_future(server.generate([5, 17], {"max_tokens": 2}, request_id="late"))
        await asyncio.sleep(0.2)
        held_while_paused = not held.done()
        await server.resume_generation()
        late = await asyncio.wait_for(held, timeout=5)
        await server.abort_all_requests(reject_request=True)
        refused = await server.generate([5, 17], {"max_tokens": 2}, request_id="refused")
        await server.resume_generation()
        return result, outputs, abort_seconds, held_while_paused, late, refused

    result, outputs, abort_seconds, held_while_paused, late, refused = asyncio.run(run())
    assert result["aborted_count"] == 3 and abort_seconds < 2
    assert {output.stop_reason for output in outputs} == {"aborted"}
    assert all(0 < len(output.token_ids) < 4000 for output in outputs)
    assert held_while_paused and late.stop_reason == "completed" and len(late.token_ids) == 2
    assert refused.stop_reason == "aborted" and refused.token_ids == []


def test_abort_with_nothing_in_flight_returns_at_once(server):
    result = asyncio.run(server.abort_all_requests())
    asyncio.run(server.resume_generation())
    assert result["aborted_count"] == 0
    assert asyncio.run(server.generate([5, 17], {"max_tokens": 2}, request_id="r")).stop_reason == "completed"
