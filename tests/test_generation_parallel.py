"""Data-parallel offline generation: engine replicas in spawned processes, prompts dealt out, results merged.

The machinery is the same whatever the backend, so it is checked here with the hf engine on CPU and
with a model-free engine whose answers show where each prompt ran.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from recipe_tapo.generation import (
    DataParallelGenerator,
    SamplingSettings,
    add_generation_arguments,
    chat_prompt_ids,
    make_generator,
    replica_gpu_groups,
    visible_gpus,
)

RAISE, DIE = -1, -2  # prompts that make the echo engine fail


class EchoEngine:
    """A replica engine without a model (picklable: it crosses to the spawned processes)."""

    def __init__(self, fail_to_build: bool = False):
        self.fail_to_build = fail_to_build

    def build(self, replica, replicas):
        if self.fail_to_build:
            raise OSError(f"no model for replica {replica}")
        return EchoGenerator(replica)


class EchoGenerator:
    """Each sample: [the prompt's index, this replica, its CUDA_VISIBLE_DEVICES as ints, the prompt...]."""

    def __init__(self, replica):
        self.replica = replica

    def generate(self, prompt_ids, settings, prompt_indices=None):
        gpus = [int(gpu) for gpu in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if gpu]
        samples = []
        for prompt, index in zip(prompt_ids, prompt_indices, strict=True):
            if prompt == [RAISE]:
                raise ValueError(f"prompt {index} is poison")
            if prompt == [DIE]:
                os._exit(3)
            samples.append([[index, self.replica, *gpus, *prompt]] * settings.n)
        return samples


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    from recipe_tapo.tiny_assets import build_model, build_tokenizer

    path = str(tmp_path_factory.mktemp("tiny"))
    build_model(path, build_tokenizer(path))
    return path, AutoTokenizer.from_pretrained(path)


def test_two_hf_replicas_sample_exactly_as_one_engine_in_input_order(tiny, capfd):
    path, tokenizer = tiny
    questions = ("1 + 2?", "Hello there", "7", "What is 9 * 9?", "x")
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    settings = SamplingSettings(n=3, temperature=0.9, top_p=0.95, max_new_tokens=10, seed=5)
    one_engine = make_generator(path, backend="hf").generate(prompts, settings)

    replicas = make_generator(path, backend="hf", data_parallel_size=2)
    assert isinstance(replicas, DataParallelGenerator)
    try:
        assert replicas.generate(prompts, settings) == one_engine
        # Fewer prompts than replicas: the idle replica gets no work, and a prompt keeps its position's samples.
        assert replicas.generate(prompts[:1], settings) == one_engine[:1]
    finally:
        replicas.close()
    assert not any(process.is_alive() for process in replicas.processes)
    log = capfd.readouterr().err
    for line in ("[generate/dp] replica 1 of 2 ready", "[generate/hf replica 1/2] 2/2 prompts",
                 "[generate/dp] replica 1 of 2 finished its 2 prompts", "(2/2 replicas)"):
        assert line in log


@pytest.fixture(scope="module")
def echo_replicas():
    generator = DataParallelGenerator(EchoEngine(), 2, gpu_groups=[["4", "5"], ["6", "7"]])
    yield generator
    generator.close()


def test_prompts_are_dealt_round_robin_to_replicas_pinned_to_their_gpus(echo_replicas):
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    prompts = [[10], [11], [12], [13], [14]]
    samples = echo_replicas.generate(prompts, SamplingSettings(n=2))
    expected = [[[index, index % 2, *((4, 5) if index % 2 == 0 else (6, 7)), 10 + index]] * 2 for index in range(5)]
    assert samples == expected
    # Given positions (a caller's own sharding) reach the replicas in place of 0, 1, ...
    assert [s[0][0] for s in echo_replicas.generate(prompts[:3], SamplingSettings(), prompt_indices=[7, 8, 9])] \
        == [7, 8, 9]
    assert echo_replicas.generate([], SamplingSettings()) == []
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before  # pinned the children only


@pytest.mark.parametrize("poison, detail", [
    (RAISE, "ValueError: prompt 3 is poison"),
    (DIE, "its process exited with code 3 and no report"),
])
def test_a_failing_replica_is_named_and_every_replica_stops(poison, detail):
    generator = DataParallelGenerator(EchoEngine(), 2, gpu_groups=[["0"], ["1"]])
    with pytest.raises(RuntimeError, match="generation replica 1 of 2 on GPUs 1 failed") as failure:
        generator.generate([[1], [2], [3], [poison]], SamplingSettings())
    assert detail in str(failure.value)
    assert not any(process.is_alive() for process in generator.processes)
    with pytest.raises(RuntimeError, match="closed"):
        generator.generate([[1]], SamplingSettings())


def test_a_replica_that_cannot_build_its_engine_fails_at_start():
    with pytest.raises(RuntimeError, match=r"generation replica \d of 2 failed:(.|\n)*OSError: no model for replica"):
        DataParallelGenerator(EchoEngine(fail_to_build=True), 2)


def test_a_program_that_never_closes_its_replicas_still_exits():
    """The replicas wait for work; exiting must stop them rather than wait on them forever."""
    script = textwrap.dedent("""
        from recipe_tapo.generation import DataParallelGenerator, SamplingSettings
        from test_generation_parallel import EchoEngine

        if __name__ == "__main__":
            generator = DataParallelGenerator(EchoEngine(), 2)
            print(generator.generate([[5], [6]], SamplingSettings()))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.getcwd()])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[[0, 0, 5]], [[1, 1, 6]]]"


def test_replica_gpu_groups_default_to_every_visible_gpu():
    gpus = [str(index) for index in range(8)]
    assert replica_gpu_groups(None, 1, gpus) == [[gpu] for gpu in gpus]
    assert replica_gpu_groups(None, 2, gpus) == [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"]]
    assert replica_gpu_groups(3, 2, gpus) == [["0", "1"], ["2", "3"], ["4", "5"]]
    assert replica_gpu_groups(None, 3, gpus) == [["0", "1", "2"], ["3", "4", "5"]]  # 2 GPUs left idle
    with pytest.raises(ValueError, match=r"--data-parallel-size 8 x --tensor-parallel-size 2 needs 16 GPUs; "
                                         r"8 visible \(0,1,2,3,4,5,6,7\)"):
        replica_gpu_groups(8, 2, gpus)
    with pytest.raises(ValueError, match=r"--data-parallel-size 1 x --tensor-parallel-size 1 needs 1 GPUs; "
                                         r"0 visible \(none\)"):
        replica_gpu_groups(None, 1, [])


def test_visible_gpus_are_read_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3f2a, GPU-77c1")
    assert visible_gpus() == ["GPU-3f2a", "GPU-77c1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []


def test_the_data_parallel_option_defaults_to_the_backend_and_refuses_zero():
    import argparse

    parser = argparse.ArgumentParser()
    add_generation_arguments(parser, temperature=1.0, top_p=1.0)
    assert parser.parse_args([]).data_parallel_size is None
    assert parser.parse_args(["--data-parallel-size", "4"]).data_parallel_size == 4
    with pytest.raises(ValueError, match="--data-parallel-size must be at least 1, got 0"):
        make_generator("/nonexistent", backend="hf", data_parallel_size=0)
