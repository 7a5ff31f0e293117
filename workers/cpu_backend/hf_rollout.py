"""The "hf" rollout backend: verl's server-mode rollout served by a transformers model on CPU.

verl 0.9.1 generates only through vLLM, SGLang or TensorRT-LLM servers, none of which runs on a
CPU-only machine. This backend fills the same three slots verl defines for a server backend:

- `HFGenerationServer`, the server actor: token-in/token-out sampling with the token log-probs, the
  interface verl's agent loop calls (`generate(prompt_ids, sampling_params, request_id)`), plus the
  control calls verl makes on a server (wake up, sleep, clear cache, abort, ...);
- `HFReplica`, a `RolloutReplica` that launches one server per replica (registered in
  `RolloutReplicaRegistry` as "hf");
- `HFServerAdapter`, the `BaseRollout` living in each trainer worker (registered for
  ``rollout.name=hf``): at every weight sync it receives the FSDP actor's full weights and loads
  them into the server, so generation always uses the policy being trained.

Written against verl 0.9.1 (`verl/workers/rollout/replica.py`, `.../vllm_rollout/`).
"""

import asyncio
import hashlib
import os
from collections import Counter
from typing import Any, Generator, Optional

import ray
import torch

from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from recipe_tapo.workers.cpu_backend.hf_sampler import HFSampler, SampleRequest, load_causal_lm, stop_token_ids_of

SERVER_NAME_PREFIX = "hf_"


def server_actor_name(replica_rank: int, kind: str = "") -> str:
    """Ray actor name of a replica's server; the adapter in the trainer finds it by this name."""
    return f"{SERVER_NAME_PREFIX}server{kind}_{replica_rank}_0"


def max_new_tokens_for(prompt_len: int, sampling_params: dict, prompt_length: int, response_length: int,
                       max_model_len: Optional[int]) -> int:
    """How many tokens a request may generate, with the same rules as verl's vLLM server.

    Raises:
        ValueError: when the prompt leaves no room to generate within the model's context.
    """
    context = max_model_len or (prompt_length + response_length)
    room = context - prompt_len
    if room < 1:
        raise ValueError(
            f"Prompt length ({prompt_len}) leaves no room to generate within the model's maximum "
            f"context length ({context}); raise rollout.max_model_len or shorten the prompt."
        )
    if "max_tokens" in sampling_params:
        wanted = sampling_params["max_tokens"]
    elif "max_new_tokens" in sampling_params:
        wanted = sampling_params["max_new_tokens"]
    else:
        wanted = min(response_length, prompt_length + response_length - prompt_len)
    return max(1, min(int(wanted), room))


class HFGenerationServer:
    """Token-in/token-out generation with a transformers causal LM on the CPU (a Ray actor).

    Concurrent requests are batched continuously (`HFSampler`): each decoding step is one forward
    over every active sequence; a request's sample depends only on its own stream, never on the
    requests it shares steps with.
    """

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, replica_rank: int):
        config = omega_conf_to_dataclass(config)
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.config = config
        self.replica_rank = replica_rank
        self.model = load_causal_lm(model_config.local_path, model_config.trust_remote_code)
        self.sampler = HFSampler(self.model, stop_token_ids_of(self.model.generation_config, model_config.tokenizer))
        self.base_seed = int(getattr(config, "seed", 0) or 0)
        self.seed = self.base_seed + replica_rank
        # Under verl's `rollout.full_determinism` every request id reaching the server is stable and
        # names one row (see `request_generator`).
        self.stable_request_ids = bool(getattr(config, "full_determinism", False))
        # Draws per stream key, for the weights of one step (cleared when the step changes).
        self._draws: Counter[str] = Counter()
        self._draws_step: Optional[int] = None
        # Continuous batching: `generate` queues its request; one scheduler task (per event loop)
        # admits waiting requests and runs decoding steps, each ONE forward over every active
        # sequence, until nothing is left (see `_schedule`).
        self.max_batch = max(1, int(getattr(config, "max_num_seqs", None) or 256))
        self._waiting: list[tuple[SampleRequest, asyncio.Future]] = []
        self._futures: dict[int, asyncio.Future] = {}  # id(request) -> its caller's future, while active
        self._scheduler: Optional[asyncio.Task] = None
        # Held for each step (in a worker thread) and by `load_weights`: weights change between steps.
        self._model_lock = asyncio.Lock()
        self.global_steps: Optional[int] = None
        self.weight_version = 0
        # Abort, as vLLM's server does it: every request in flight returns at once with what it has
        # (stop_reason "aborted"), and new requests wait (or, with reject_request, are refused)
        # until `resume_generation`.
        self._aborted: set[int] = set()  # id(request) of requests aborted while queued or running
        self._abort_requested: Optional[asyncio.Event] = None
        self._paused = False
        self._reject_while_paused = False
        self._resumed: Optional[asyncio.Event] = None

    def request_generator(self, prompt_ids: list[int], sampling_params: dict[str, Any],
                          request_id: Optional[str] = None) -> torch.Generator:
        """The random stream of one sampled request, chosen so that a seeded run does not depend on the
        order in which the agent loop's concurrent requests arrive:

        1. the request's own `seed` if it sets one (as vLLM takes it);
        2. under `rollout.full_determinism` (the hf profile sets it), the request id: verl then gives
           each row of a rollout batch its own stable id (`det-<row>`, the row's `priority`) and passes
           it through to the server, so the same row gets the same stream in every run (row for row);
           the k-th request with that id under the same weights (the k-th turn of a multi-turn row, or
           a later generation round of the same step) gets the k-th stream of the id;
        3. otherwise (verl's ids are random uuids) the k-th stream of its prompt: the same samples as a
           set, but which of a group's identical requests gets which stream depends on arrival order.

        Streams are keyed by the weights' step (`global_steps`), not by a running count, so a run
        resumed from a checkpoint draws the same streams as the uninterrupted run. Greedy requests
        draw nothing (see `generate`).
        """
        if sampling_params.get("seed") is not None:
            return torch.Generator().manual_seed(int(sampling_params["seed"]))
        if self._draws_step != self.global_steps:
            self._draws.clear()
            self._draws_step = self.global_steps
        if self.stable_request_ids and request_id is not None:
            # Not the replica: the stream belongs to the row, whichever replica serves it.
            key = f"{self.base_seed}:step{self.global_steps}:id:{request_id}"
        else:
            prompt_key = hashlib.sha256(repr(prompt_ids).encode()).hexdigest()
            key = f"{self.seed}:step{self.global_steps}:prompt:{prompt_key}"
        draw = self._draws[key]
        self._draws[key] += 1
        stream = hashlib.sha256(f"{key}:{draw}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(stream[:8], "little"))

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        audio_data: Optional[list[Any]] = None,
        mm_processor_kwargs: Optional[dict[str, Any]] = None,
        **kwargs,
    ) -> TokenOutput:
        if image_data or video_data or audio_data:
            raise ValueError("the hf rollout backend serves text-only models")
        prompt_ids = [int(i) for i in prompt_ids]
        params = dict(sampling_params)
        max_new = max_new_tokens_for(
            len(prompt_ids), params, self.config.prompt_length, self.config.response_length,
            getattr(self.config, "max_model_len", None),
        )
        temperature = float(params.get("temperature", self.config.temperature))
        top_p = float(params.get("top_p", 1.0))
        top_k = int(params.get("top_k", -1) or -1)
        ignore_eos = bool(params.get("ignore_eos", getattr(self.config, "ignore_eos", False)))
        while self._paused:
            if self._reject_while_paused:
                return self._output(SampleRequest(prompt_ids, max_new), params, "aborted")
            await self._resume_event().wait()
        # A greedy request draws nothing, so it leaves the sampled requests' streams as they are.
        generator = self.request_generator(prompt_ids, params, request_id) if temperature > 0 else torch.Generator()
        request = SampleRequest(prompt_ids, max_new, temperature, top_p, top_k, ignore_eos, generator)
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        self._ensure_scheduler()
        await future
        aborted = id(request) in self._aborted
        self._aborted.discard(id(request))
        return self._output(request, params, "aborted" if aborted else "completed")

    def _output(self, request: SampleRequest, params: dict[str, Any], stop_reason: str) -> TokenOutput:
        return TokenOutput(
            token_ids=request.tokens,
            log_probs=request.log_probs if params.get("logprobs", False) else None,
            stop_reason=stop_reason,
            extra_fields={"global_steps": self.global_steps},
        )

    def _resume_event(self) -> asyncio.Event:
        if self._resumed is None or self._resumed.is_set():
            self._resumed = asyncio.Event()
        return self._resumed

    async def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> int:
        """Load the trainer's full weights; every model parameter must be covered.

        Returns the new weight version (a count of syncs), for tests and logs.
        """
        async with self._model_lock:
            return self._load_weights(named_tensors)

    def _load_weights(self, named_tensors: dict[str, torch.Tensor]) -> int:
        missing, unexpected = self.model.load_state_dict(named_tensors, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or ())
        tied |= {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        missing = [name for name in missing if name not in tied]
        if missing or unexpected:
            raise ValueError(
                f"weight sync does not match the rollout model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if self.model.config.tie_word_embeddings:
            self.model.tie_weights()
        self.weight_version += 1
        return self.weight_version

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    def _ensure_scheduler(self):
        loop = asyncio.get_running_loop()
        if self._scheduler is None or self._scheduler.done() or self._scheduler.get_loop() is not loop:
            self._scheduler = loop.create_task(self._schedule())

    def _advance(self, admitted: list[SampleRequest]) -> tuple[list[SampleRequest], list[tuple[SampleRequest, Exception]]]:
        """In a worker thread: prefill the admitted requests, then one decoding step of all active ones.

        Returns the finished requests, and the admitted ones whose prefill failed (with the error).
        """
        finished, failed = [], []
        for request in admitted:
            try:
                finished += self.sampler.admit([request])
            except Exception as error:  # e.g. a token id outside the vocabulary: this request only
                failed.append((request, error))
        if self.sampler.active:
            finished += self.sampler.step()
        return finished, failed

    def _caller_waits(self, request: SampleRequest) -> bool:
        future = self._futures.get(id(request))
        return future is not None and not future.done()

    async def _schedule(self):
        """Serve until no request waits or runs: each round admits what waits (up to `max_batch`
        active sequences) and runs one batched decoding step; finished requests return at once."""
        try:
            while self._waiting or self.sampler.active:
                if self._abort_requested is not None:
                    self._abort_in_flight()
                    continue
                # A caller that went away (cancelled) frees its place.
                self._waiting = [(request, future) for request, future in self._waiting if not future.done()]
                for request in self.sampler.drop(self._caller_waits):
                    self._futures.pop(id(request), None)
                room = max(0, self.max_batch - len(self.sampler.active))
                admitted, self._waiting = self._waiting[:room], self._waiting[room:]
                self._futures.update((id(request), future) for request, future in admitted)
                if not admitted and not self.sampler.active:
                    continue
                async with self._model_lock:
                    finished, failed = await asyncio.to_thread(self._advance, [request for request, _ in admitted])
                for request in finished:
                    future = self._futures.pop(id(request))
                    if not future.done():
                        future.set_result(None)
                for request, error in failed:
                    future = self._futures.pop(id(request))
                    if not future.done():
                        future.set_exception(error)
        except BaseException as error:
            # A failed step fails every request in flight; the next request starts afresh. (A step
            # still running in its thread when the task is cancelled finishes on its own rows.)
            self.sampler.active = []
            pending = list(self._futures.values()) + [future for _, future in self._waiting]
            self._futures.clear()
            self._waiting.clear()
            for future in pending:
                if not future.done():
                    if isinstance(error, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(error)
            if not isinstance(error, Exception):
                raise

    # Control calls verl makes on every server backend. CPU memory is not released between phases,
    # so the sleep and cache calls have nothing to do.
    async def wake_up(self, tags: Optional[list[str]] = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def wait_for_requests_to_drain(self):
        scheduler = self._scheduler
        if scheduler is not None and not scheduler.done() and scheduler.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(scheduler)

    async def abort_all_requests(self, reject_request: bool = False, **kwargs) -> dict[str, Any]:
        """End every queued and running request now (each returns its tokens so far, stop_reason
        "aborted"); until `resume_generation`, new requests wait, or are refused with
        `reject_request`. Returns how many were aborted."""
        self._paused = True
        self._reject_while_paused = reject_request
        in_flight = len(self._waiting) + len(self.sampler.active)
        scheduler = self._scheduler
        if in_flight and scheduler is not None and not scheduler.done():
            # The scheduler owns the active rows between decoding steps: it aborts them there, unless
            # its last step finished everything and it ended.
            self._abort_requested = asyncio.Event()
            aborted = asyncio.ensure_future(self._abort_requested.wait())
            await asyncio.wait([aborted, scheduler], return_when=asyncio.FIRST_COMPLETED)
            aborted.cancel()
            if self._abort_requested is not None:
                self._abort_in_flight()
        return {"aborted_count": in_flight, "request_ids": []}

    def _abort_in_flight(self) -> None:
        for request, future in self._waiting:
            self._finish_aborted(request, future)
        self._waiting = []
        for request in self.sampler.drop(lambda _: False):
            self._finish_aborted(request, self._futures.pop(id(request), None))
        done, self._abort_requested = self._abort_requested, None
        done.set()

    def _finish_aborted(self, request: SampleRequest, future: Optional[asyncio.Future]) -> None:
        if future is not None and not future.done():
            self._aborted.add(id(request))
            future.set_result(None)

    async def abort_request(self, request_id: str, **kwargs) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self):
        """Take requests again after `abort_all_requests`; the requests that waited go on."""
        self._paused = False
        self._reject_while_paused = False
        if self._resumed is not None:
            self._resumed.set()

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None


class HFReplica(RolloutReplica):
    """One `HFGenerationServer` per replica, placed on the node of the replica's first worker."""

    async def launch_servers(self):
        kind = "_reward" if self.is_reward_model else "_teacher" if self.is_teacher_model else ""
        options = {"name": server_actor_name(self.replica_rank, kind) + self.name_suffix,
                   "max_concurrency": self.max_concurrency, "num_cpus": 0}
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id=node_id, soft=False
            )
        server = ray.remote(HFGenerationServer).options(**options).remote(
            config=self.config, model_config=self.model_config, replica_rank=self.replica_rank
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = options["name"]


class HFServerAdapter(BaseRollout):
    """The trainer-side end of the hf backend: pushes synced weights to this replica's server."""

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        rank = int(os.environ["RANK"])
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self.server_handle = None

    def _server(self):
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        global_steps: Optional[int] = None,
        wire_format: str = "named_tensors",
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise ValueError(f"the hf rollout backend takes full named tensors, not {wire_format!r}")
        # Every rank must drain the generator: producing each full tensor may be a collective.
        state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights}
        if self.rollout_rank != 0:
            return
        await self._server().load_weights.remote(state)
        if global_steps is not None:
            await self._server().set_global_steps.remote(global_steps)
