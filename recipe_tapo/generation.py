"""Offline sampling for evaluation and data filtering: vLLM on a GPU, the hf engine on CPU.

Both backends take chat prompts as token ids and return, for each prompt, `n` sampled responses as
token ids, so evaluation and the difficulty filter never depend on which one ran.

    generator = make_generator(model_path, backend="auto")   # vllm if a GPU and vLLM are present
    samples = generator.generate(prompt_ids, SamplingSettings(n=16, temperature=0.6, top_p=0.95))
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass
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
    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings) -> list[list[list[int]]]:
        """For each prompt, `settings.n` responses as token ids (EOS included when sampled)."""


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

    def __init__(self, model_path: str, progress_every: int = 50, max_batch: int = 64):
        from transformers import AutoTokenizer

        from recipe_tapo.workers.cpu_backend.hf_sampler import load_causal_lm, stop_token_ids_of

        self.model = load_causal_lm(model_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop_token_ids = stop_token_ids_of(self.model.generation_config, tokenizer)
        self.progress_every = progress_every
        self.max_batch = max_batch

    @staticmethod
    def sample_stream(seed: int, prompt_index: int, sample_index: int):
        import hashlib

        import torch

        digest = hashlib.sha256(f"{seed}:prompt{prompt_index}:sample{sample_index}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))

    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings) -> list[list[list[int]]]:
        from recipe_tapo.workers.cpu_backend.hf_sampler import HFSampler, SampleRequest

        sampler = HFSampler(self.model, self.stop_token_ids, seed=settings.seed)
        requests = [
            [SampleRequest(list(prompt), settings.max_new_tokens, settings.temperature, settings.top_p,
                           generator=self.sample_stream(settings.seed, index, k)) for k in range(settings.n)]
            for index, prompt in enumerate(prompt_ids)
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
                    print(f"[generate/hf] {done}/{len(prompt_ids)} prompts, {time.monotonic() - start:.1f}s",
                          file=sys.stderr, flush=True)

        sampler.sample_batch([request for group in requests for request in group], self.max_batch, on_finished)
        return [[request.tokens for request in group] for group in requests]


class VLLMGenerator:
    """vLLM's offline engine on the local GPUs."""

    def __init__(self, model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, seed: int = 0):
        try:
            from vllm import LLM
        except ImportError as error:
            raise RuntimeError(
                "backend 'vllm' needs vLLM: install the recipe's GPU extra (pip install -e '.[gpu]'), "
                "or use backend 'hf' on CPU"
            ) from error
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len, seed=seed)

    def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings) -> list[list[list[int]]]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                                max_tokens=settings.max_new_tokens, seed=settings.seed)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params)
        return [[list(sample.token_ids) for sample in output.outputs] for output in outputs]


def resolve_backend(backend: str) -> str:
    """'auto' means vLLM when a CUDA device and vLLM are both present, else the hf engine."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"


def make_generator(model_path: str, backend: str = "auto", **vllm_kwargs) -> TextGenerator:
    if resolve_backend(backend) == "vllm":
        return VLLMGenerator(model_path, **vllm_kwargs)
    return HFGenerator(model_path)


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
    add("--tensor-parallel-size", type=int, default=1, help="vLLM only")
    add("--gpu-memory-utilization", type=float, default=0.85, help="vLLM only")


def generator_from_args(model_path: str, args) -> TextGenerator:
    """`make_generator` configured by the options of `add_generation_arguments`."""
    return make_generator(model_path, args.backend, tensor_parallel_size=args.tensor_parallel_size,
                          gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed)


def settings_from_args(n: int, args) -> SamplingSettings:
    return SamplingSettings(n=n, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
