"""Offline sampling for evaluation, data filtering and cold-start data: vLLM on GPUs, the hf engine on CPU.

Both backends take chat prompts as token ids and return, for each prompt, `n` sampled responses as
token ids, so evaluation and the difficulty filter never depend on which one ran.

    generator = make_generator(model_path, backend="auto")   # vllm if a GPU and vLLM are present
    samples = generator.generate(prompt_ids, SamplingSettings(n=16, temperature=0.6, top_p=0.95))

Data parallel: with `data_parallel_size` N > 1 (by default, vLLM on every visible GPU) N engine
replicas run, each in its own process on its own GPUs (`DataParallelGenerator`); a call deals the
prompts out among them and returns the results in input order, sampled as one engine samples them.
"""

import argparse
import atexit
import contextlib
import hashlib
import json
import multiprocessing
import os
import queue
import sys
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Protocol

BACKENDS = ("auto", "vllm", "hf")


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


class TextGenerator(Protocol):
    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                 prompt_indices: list[int] | None = None) -> list[list[list[int]]]:
        """For each prompt, `settings.n` responses as token ids (EOS included when sampled).

        `prompt_indices`: the prompts' positions in the whole request (default 0, 1, ...); a replica
        given a shard samples each prompt as the whole request would at that position."""


def chat_prompt_ids(tokenizer, messages: list[dict], chat_template_kwargs: dict | None = None) -> list[int]:
    """Token ids of a chat prompt with the generation prompt appended, as verl's rollout builds it
    (`chat_template_kwargs` as verl's `data.apply_chat_template_kwargs`, e.g. enable_thinking=False)."""
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **(chat_template_kwargs or {})
    )
    return tokenizer.encode(text, add_special_tokens=False)


def parse_chat_template_kwargs(text: str) -> dict:
    """`--chat-template-kwargs` JSON (an object), e.g. '{"enable_thinking": false}' for Qwen3."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--chat-template-kwargs is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--chat-template-kwargs must be a JSON object, got {text!r}")
    return value


class HFGenerator:
    """The recipe's CPU sampling engine (`recipe_tapo.workers.cpu_backend.hf_sampler`): all samples of all
    prompts go through one continuously batched sampler, `max_batch` sequences per decoding step.

    Sample k of prompt i draws from its own random stream, derived from (seed, i, k), so the samples
    do not depend on the batch size or on which samples share a step.
    """

    def __init__(self, model_path: str, progress_every: int = 50, max_batch: int = 64, label: str = "hf"):
        from transformers import AutoTokenizer

        from recipe_tapo.workers.cpu_backend.hf_sampler import load_causal_lm, stop_token_ids_of

        self.model = load_causal_lm(model_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop_token_ids = stop_token_ids_of(self.model.generation_config, tokenizer)
        self.progress_every = progress_every
        self.max_batch = max_batch
        self.label = label

    @staticmethod
    def sample_stream(seed: int, prompt_index: int, sample_index: int):
        import torch

        digest = hashlib.sha256(f"{seed}:prompt{prompt_index}:sample{sample_index}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))

    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                 prompt_indices: list[int] | None = None) -> list[list[list[int]]]:
        from recipe_tapo.workers.cpu_backend.hf_sampler import HFSampler, SampleRequest

        indices = range(len(prompt_ids)) if prompt_indices is None else prompt_indices
        sampler = HFSampler(self.model, self.stop_token_ids, seed=settings.seed)
        requests = [
            [SampleRequest(list(prompt), settings.max_new_tokens, settings.temperature, settings.top_p,
                           generator=self.sample_stream(settings.seed, index, k)) for k in range(settings.n)]
            for index, prompt in zip(indices, prompt_ids, strict=True)
        ]
        owner = {id(request): index for index, group in enumerate(requests) for request in group}
        left = [settings.n] * len(prompt_ids)
        done, start = 0, time.monotonic()

        def on_finished(request):
            nonlocal done
            index = owner[id(request)]
            left[index] -= 1
            if left[index] == 0:
                done += 1
                if done % self.progress_every == 0 or done == len(prompt_ids):
                    print(f"[generate/{self.label}] {done}/{len(prompt_ids)} prompts, {time.monotonic() - start:.1f}s",
                          file=sys.stderr, flush=True)

        sampler.sample_batch([request for group in requests for request in group], self.max_batch, on_finished)
        return [[request.tokens for request in group] for group in requests]


def require_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError(
            "backend 'vllm' needs vLLM: install the recipe's GPU extra (pip install -e '.[gpu]'), "
            "or use backend 'hf' on CPU"
        )


def prompt_seed(seed: int, prompt_index: int) -> int:
    """The sampling seed of one prompt of a call: distinct per prompt, the same in every run and
    whichever replica samples it (63 bits, as vLLM takes an int)."""
    digest = hashlib.sha256(f"{seed}:prompt{prompt_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class VLLMGenerator:
    """vLLM's offline engine on the local GPUs (those CUDA_VISIBLE_DEVICES shows)."""

    def __init__(self, model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, seed: int = 0, show_progress: bool = True):
        require_vllm()
        from vllm import LLM

        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed)
        self.show_progress = show_progress

    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                 prompt_indices: list[int] | None = None) -> list[list[list[int]]]:
        """Each prompt's request carries its own seed, `prompt_seed(settings.seed, position)` (vLLM
        derives the n samples' streams from it): one seed for every prompt would give sample k of
        every prompt the same random stream, correlating the prompts' outcomes. `prompt_indices` are
        the prompts' positions in the whole call (a data-parallel replica's share), default 0..n-1."""
        from vllm import SamplingParams, TokensPrompt

        positions = range(len(prompt_ids)) if prompt_indices is None else prompt_indices
        params = [SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                                 max_tokens=settings.max_new_tokens, seed=prompt_seed(settings.seed, position))
                  for position in positions]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params,
                                    use_tqdm=self.show_progress)
        return [[list(sample.token_ids) for sample in output.outputs] for output in outputs]


@dataclass(frozen=True)
class EngineSpec:
    """The engine a replica process builds: picklable, as it crosses to a spawned process."""

    model_path: str
    backend: str  # resolved: "vllm" or "hf"
    vllm_kwargs: dict = field(default_factory=dict)

    def build(self, replica: int, replicas: int) -> TextGenerator:
        if self.backend == "vllm":
            # One progress bar: the shards are alike, and several bars on one terminal garble.
            return VLLMGenerator(self.model_path, show_progress=replica == 0, **self.vllm_kwargs)
        import torch

        # CPU replicas split the cores torch would give one engine, rather than all contend for them.
        torch.set_num_threads(max(1, torch.get_num_threads() // replicas))
        return HFGenerator(self.model_path, label=f"hf replica {replica}/{replicas}")


def _next_task(tasks):
    """The next task for this replica, or None to stop (asked for, or the parent is gone)."""
    parent = multiprocessing.parent_process()
    while True:
        try:
            return tasks.get(timeout=5)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return None


def _serve_replica(engine, replica: int, replicas: int, tasks, results) -> None:
    """A replica process: build the engine, report ready, then answer tasks until told to stop.
    Any error goes back to the parent as text (the traceback), and the process exits with code 1."""
    try:
        generator = engine.build(replica, replicas)
        results.put(("ready", replica, None))
        while (task := _next_task(tasks)) is not None:
            results.put(("done", replica, generator.generate(*task)))
    except BaseException:  # noqa: BLE001 - whatever stops a replica is reported, never lost
        results.put(("error", replica, traceback.format_exc()))
        sys.exit(1)


@contextlib.contextmanager
def _environment(name: str, value: str | None):
    """`name` set to `value` (None: unchanged) while a child process starts: a spawned child copies
    the environment before its interpreter runs any import, so CUDA sees only that value."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _stop_replicas(processes, tasks, wait_s: float) -> None:
    """Ask every replica to stop; one still running after `wait_s` seconds is terminated."""
    for task_queue, process in zip(tasks, processes):
        if process.is_alive():
            task_queue.put(None)
    deadline = time.monotonic() + wait_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


class DataParallelGenerator:
    """`replicas` copies of one engine, each in its own spawned process; process r runs with
    CUDA_VISIBLE_DEVICES set to `gpu_groups[r]` when given. A call deals the prompts out round-robin
    (prompt i to replica i mod N, so hard and easy stretches of a file spread evenly), each replica
    samples its prompts at their positions in the whole call (`prompt_indices`), and the results come
    back in input order: the same samples as one engine, where the backend samples the same in any
    batch (the hf engine does; vLLM's batching may change low-order bits).

    A replica that fails raises RuntimeError naming it (its traceback, or its exit code when it died
    without one: a crash or a kill), and every replica is then stopped. `close()` (also run when
    the generator is garbage collected or the program exits) stops them.
    """

    POLL_S = 2.0  # how often a wait for replicas checks that none has died

    def __init__(self, engine, replicas: int, gpu_groups: list[list[str]] | None = None):
        if replicas < 1:
            raise ValueError(f"data_parallel_size must be at least 1, got {replicas}")
        if gpu_groups is not None and len(gpu_groups) != replicas:
            raise ValueError(f"{replicas} replicas need {replicas} GPU groups, got {len(gpu_groups)}")
        self.replicas = replicas
        self.gpu_groups = gpu_groups
        context = multiprocessing.get_context("spawn")  # fork would copy a parent's CUDA state
        self.results = context.Queue()
        self.tasks = [context.Queue() for _ in range(replicas)]
        for task_queue in self.tasks:
            task_queue.cancel_join_thread()  # never block the parent's exit on a dead replica's queue
        self.processes = []
        # Set before any replica starts, so that none outlives a failed start. Registered after
        # multiprocessing's own exit hook, so it runs first: that hook joins the replicas, which
        # would otherwise still be waiting for work.
        self._finalizer = weakref.finalize(self, _stop_replicas, self.processes, self.tasks, 60.0)
        atexit.register(self._finalizer)
        started = time.monotonic()
        for replica in range(replicas):
            process = context.Process(target=_serve_replica, name=f"generation-replica-{replica}",
                                      args=(engine, replica, replicas, self.tasks[replica], self.results))
            with _environment("CUDA_VISIBLE_DEVICES", ",".join(gpu_groups[replica]) if gpu_groups else None):
                process.start()
            self.processes.append(process)
        waiting = set(range(replicas))
        while waiting:
            _, replica, _ = self._receive()
            waiting.discard(replica)
            self._log(f"replica {self._name(replica)} ready ({replicas - len(waiting)}/{replicas}), "
                      f"{time.monotonic() - started:.1f}s")

    def _name(self, replica: int) -> str:
        gpus = f" on GPUs {','.join(self.gpu_groups[replica])}" if self.gpu_groups else ""
        return f"{replica} of {self.replicas}{gpus}"

    @staticmethod
    def _log(message: str) -> None:
        print(f"[generate/dp] {message}", file=sys.stderr, flush=True)

    def _fail(self, replica: int, detail: str) -> RuntimeError:
        self.close(wait_s=0)
        return RuntimeError(f"generation replica {self._name(replica)} failed: {detail}")

    def _receive(self):
        """The next (kind, replica, payload) message; a replica's error or death raises."""
        while True:
            try:
                message = self.results.get(timeout=self.POLL_S)
            except queue.Empty:
                message = None
            if message is not None:
                kind, replica, payload = message
                if kind == "error":
                    raise self._fail(replica, f"\n{payload}")
                return message
            for replica, process in enumerate(self.processes):
                # A live replica never exits on its own: it waits for the next task.
                if process.exitcode is not None:
                    with contextlib.suppress(queue.Empty):
                        kind, _, payload = self.results.get(timeout=1)  # its report may trail its exit
                        if kind == "error":
                            raise self._fail(replica, f"\n{payload}")
                    raise self._fail(replica, f"its process exited with code {process.exitcode} and no report "
                                              "(a crash or a kill, e.g. out of memory; its output is above)")

    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings,
                 prompt_indices: list[int] | None = None) -> list[list[list[int]]]:
        if not self._finalizer.alive:
            raise RuntimeError("this DataParallelGenerator is closed: its replicas have stopped")
        indices = list(range(len(prompt_ids))) if prompt_indices is None else list(prompt_indices)
        shards = {replica: list(range(replica, len(prompt_ids), self.replicas))
                  for replica in range(min(self.replicas, len(prompt_ids)))}  # a replica past the last prompt idles
        for replica, positions in shards.items():
            self.tasks[replica].put(([prompt_ids[p] for p in positions], settings, [indices[p] for p in positions]))
        results: list = [None] * len(prompt_ids)
        pending, started = set(shards), time.monotonic()
        try:
            while pending:
                _, replica, samples = self._receive()
                pending.discard(replica)
                for position, prompt_samples in zip(shards[replica], samples, strict=True):
                    results[position] = prompt_samples
                self._log(f"replica {self._name(replica)} finished its {len(samples)} prompts, "
                          f"{time.monotonic() - started:.1f}s ({len(shards) - len(pending)}/{len(shards)} replicas)")
        except BaseException:
            self.close(wait_s=0)  # a replica failed, or the user interrupted: stop them all
            raise
        return results

    def close(self, wait_s: float = 60.0) -> None:
        if self._finalizer.alive:
            self._finalizer.detach()
            atexit.unregister(self._finalizer)
            _stop_replicas(self.processes, self.tasks, wait_s)


def resolve_backend(backend: str) -> str:
    """'auto' means vLLM when a CUDA device and vLLM are both present, else the hf engine."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"


def visible_gpus() -> list[str]:
    """This process's GPUs as CUDA_VISIBLE_DEVICES names them (indices or UUIDs), else all of them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [name.strip() for name in listed.split(",") if name.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def replica_gpu_groups(data_parallel_size: int | None, tensor_parallel_size: int,
                       gpus: list[str]) -> list[list[str]]:
    """The GPUs of each vLLM replica: `tensor_parallel_size` consecutive ones each; by default
    (`data_parallel_size` None) as many replicas as the visible GPUs hold."""
    if tensor_parallel_size < 1:
        raise ValueError(f"--tensor-parallel-size must be at least 1, got {tensor_parallel_size}")
    replicas = max(1, len(gpus) // tensor_parallel_size) if data_parallel_size is None else data_parallel_size
    needed = replicas * tensor_parallel_size
    if needed > len(gpus):
        raise ValueError(
            f"backend vllm with --data-parallel-size {replicas} x --tensor-parallel-size {tensor_parallel_size} "
            f"needs {needed} GPUs; {len(gpus)} visible ({','.join(gpus) or 'none'})"
        )
    return [gpus[replica * tensor_parallel_size:(replica + 1) * tensor_parallel_size] for replica in range(replicas)]


def make_generator(model_path: str, backend: str = "auto", data_parallel_size: int | None = None,
                   **vllm_kwargs) -> TextGenerator:
    """One engine in this process, or `data_parallel_size` replicas (`DataParallelGenerator`).
    The default, None: vllm runs a replica on every `tensor_parallel_size` visible GPUs, hf one engine."""
    if data_parallel_size is not None and data_parallel_size < 1:
        raise ValueError(f"--data-parallel-size must be at least 1, got {data_parallel_size}")
    backend = resolve_backend(backend)
    if backend == "vllm":
        require_vllm()
        groups = replica_gpu_groups(data_parallel_size, vllm_kwargs.get("tensor_parallel_size", 1), visible_gpus())
        if len(groups) == 1:
            return VLLMGenerator(model_path, **vllm_kwargs)
        return DataParallelGenerator(EngineSpec(model_path, backend, vllm_kwargs), len(groups), groups)
    if (data_parallel_size or 1) == 1:
        return HFGenerator(model_path)
    return DataParallelGenerator(EngineSpec(model_path, backend), data_parallel_size)


# The options of `add_generation_arguments` a command may leave out, when it takes that setting from
# elsewhere (cold start: the trainer config's response length and chat kwargs). Such a command builds
# its own SamplingSettings (`settings_from_args` reads --max-new-tokens).
OMITTABLE_GENERATION_OPTIONS = ("--max-new-tokens", "--chat-template-kwargs")


def add_generation_arguments(parser, temperature: float, top_p: float, omit: tuple[str, ...] = ()) -> None:
    """The sampling and backend options shared by the commands that generate (evaluate, filter, cold
    start), less the `omit` ones (of OMITTABLE_GENERATION_OPTIONS)."""
    unknown = set(omit) - set(OMITTABLE_GENERATION_OPTIONS)
    if unknown:
        raise ValueError(f"cannot omit {sorted(unknown)}: only {list(OMITTABLE_GENERATION_OPTIONS)}")

    def add(name, **kwargs):
        if name not in omit:
            parser.add_argument(name, **kwargs)

    add("--temperature", type=float, default=temperature)
    add("--top-p", type=float, default=top_p)
    add("--max-new-tokens", type=int, default=3072)
    add("--max-prompt-tokens", type=int, default=None, help="longer prompts are skipped and counted")
    add(
        "--chat-template-kwargs",
        type=parse_chat_template_kwargs,
        default={},
        help="JSON object passed to the chat template, as the RL run's data.apply_chat_template_kwargs "
        "(Qwen3 non-thinking: '{\"enable_thinking\": false}')",
    )
    add("--seed", type=int, default=0)
    add("--limit", type=int, default=None, help="first N problems of each file (smoke runs)")
    add("--backend", choices=BACKENDS, default="auto", help="auto: vllm on a GPU machine, else hf")
    add("--tensor-parallel-size", type=int, default=1, help="vLLM only: GPUs per engine")
    add("--data-parallel-size", type=int, default=None,
        help="engine replicas, each in its own process on its own GPUs, the prompts dealt out among them "
        "(default: vllm, every visible GPU / --tensor-parallel-size; hf, 1)")
    add("--gpu-memory-utilization", type=float, default=0.85, help="vLLM only")


def generator_from_args(model_path: str, args) -> TextGenerator:
    """`make_generator` configured by the options of `add_generation_arguments`."""
    return make_generator(model_path, args.backend, **engine_options_from_args(args))


def engine_options_from_args(args) -> dict:
    """The `make_generator` keywords the options of `add_generation_arguments` set."""
    return {"data_parallel_size": args.data_parallel_size, "tensor_parallel_size": args.tensor_parallel_size,
            "gpu_memory_utilization": args.gpu_memory_utilization, "seed": args.seed}


def settings_from_args(n: int, args) -> SamplingSettings:
    return SamplingSettings(n=n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
