"""Token-level sampling with a transformers causal LM: the engine behind the "hf" backend.

Used by the rollout server (`hf_rollout.HFGenerationServer`) and by offline generation on CPU
(`recipe_tapo.generation`), so both sample exactly alike.

`HFSampler` batches: every decoding step is ONE forward over all active sequences (continuous
batching: sequences join after their own prefill and leave at EOS / their token budget). A
sequence's tokens and log-probs do not depend on which other sequences share its steps:

- its prompt is prefilled alone (the same forward as an unbatched sampler's);
- in a decoding step the linear layers see all rows at once, padded with filler rows to a multiple
  of `DECODE_ROW_MULTIPLE`: torch's CPU fp32 matmul (torch 2.13, measured on AMD EPYC) gives a row
  the same bits whatever its neighbours and their number when the row count is a multiple of 4 (or
  at least 12), but other bits to the rows past the last multiple of 4 in a smaller batch (1 row
  takes the gemv path). `tests/test_hf_batching.py` checks this on the machine that runs it;
- attention runs over each sequence's own unpadded KV cache (`_row_attention`), sequences with
  equally long caches in one batched matmul (which computes each as it would alone), so no padding
  and no neighbour enters a sequence's arithmetic;
- each sequence samples from its own logits row with its own `torch.Generator`.
"""

import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from transformers import AttentionInterface, TopKLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

# A decoding forward computes a multiple of this many rows (filler rows make up the rest), see the
# module docstring: 4 suffices on the machines measured, 16 leaves room for wider CPU kernels.
DECODE_ROW_MULTIPLE = 16
ROW_ATTENTION = "hf_rows"

_decode = threading.local()  # the rows of the decoding forward running on this thread, if any


def _row_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """sdpa, except inside a batched decoding step: there each row attends over its own unpadded cache.

    Outside a decoding step (prefill, or any other use of the model) this is transformers' sdpa
    attention with sdpa's mask, unchanged. In a decoding step (one query token per row, no mask),
    row by row: softmax(q k^T * scale) v over the row's cached keys and values, the attention sdpa
    computes there, with the query heads grouped by their key-value head (as `repeat_kv` pairs them).
    """
    rows = getattr(_decode, "rows", None)
    if rows is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else head_dim ** -0.5
    layer = module.layer_idx
    output = query.new_zeros(batch, 1, heads, head_dim)  # filler rows keep zeros: their outputs are discarded
    # Rows with equally long caches attend together (a batched matmul computes each row as it would
    # alone); a row's keys and values are its cache plus this step's, as DynamicCache.update gives.
    lengths: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        lengths.setdefault(row.keys[layer].shape[-2], []).append(index)
    for members in lengths.values():
        where = torch.tensor(members)
        keys = torch.cat([torch.cat([rows[i].keys[layer] for i in members]), key[where]], dim=-2)
        values = torch.cat([torch.cat([rows[i].values[layer] for i in members]), value[where]], dim=-2)
        for position, index in enumerate(members):
            rows[index].keys[layer] = keys[position:position + 1]
            rows[index].values[layer] = values[position:position + 1]
        grouped = query[where, :, 0, :].reshape(len(members), kv_heads, heads // kv_heads, head_dim)
        probs = torch.softmax(torch.matmul(grouped, keys.transpose(-1, -2)) * scale, dim=-1)
        output[where] = torch.matmul(probs, values).reshape(len(members), 1, heads, head_dim)
    return output, None


AttentionInterface.register(ROW_ATTENTION, _row_attention)
AttentionMaskInterface.register(ROW_ATTENTION, sdpa_mask)


def sample_next_token(logits: torch.Tensor, temperature: float, top_p: float, top_k: int,
                      generator: torch.Generator) -> tuple[int, float]:
    """Sample one token from last-position logits.

    Args:
        logits: [vocab] float tensor.
        temperature: <= 0 means greedy.
        top_p: nucleus mass in (0, 1]; 1 keeps everything.
        top_k: keep the k most likely tokens; <= 0 keeps everything.

    Returns:
        (token id, its log-prob under softmax(logits / temperature)): the untruncated distribution,
        which is what verl's actor recomputes, so the two log-probs are comparable.
    """
    if temperature <= 0:
        token = int(torch.argmax(logits))
        return token, float(torch.log_softmax(logits.float(), dim=-1)[token])
    scaled = logits.float()[None] / temperature
    log_probs = torch.log_softmax(scaled[0], dim=-1)
    # transformers' own top-k / nucleus warpers: truncated tokens get -inf.
    if top_k is not None and 0 < top_k < scaled.shape[-1]:
        scaled = TopKLogitsWarper(top_k)(None, scaled)
    if top_p is not None and top_p < 1.0:
        scaled = TopPLogitsWarper(top_p)(None, scaled)
    token = int(torch.multinomial(torch.softmax(scaled[0], dim=-1), 1, generator=generator))
    return token, float(log_probs[token])


def stop_token_ids_of(*sources) -> set[int]:
    """The EOS ids declared by any of `sources` (generation configs, tokenizers; None is skipped)."""
    ids = set()
    for source in sources:
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(i) for i in eos)
    return ids


def load_causal_lm(path: str, trust_remote_code: bool = False):
    """A float32, sdpa-attention causal LM in eval mode (CPU has neither bf16 speed nor flash-attn)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=trust_remote_code
    ).eval()


@dataclass(eq=False)
class SampleRequest:
    """One sequence to sample; `tokens` and `log_probs` fill in as it is generated."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    ignore_eos: bool = False
    generator: Optional[torch.Generator] = None  # this sequence's randomness (greedy draws none)
    tokens: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    finished: bool = False


@dataclass(eq=False)
class _Row:
    """An active sequence: its request, its own KV cache (per layer, unpadded) and its length so far."""

    request: SampleRequest
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int
    cache: Optional[DynamicCache] = None  # models the row attention does not serve: decoded alone


class HFSampler:
    """Samples continuations of token ids with a KV cache per sequence, all active sequences batched.

    Use `sample_batch` (a list of requests run to completion), `sample` (one request), or, for a
    server that admits requests while others run, `admit` and `step`.
    """

    def __init__(self, model, stop_token_ids: set[int], seed: int = 0):
        self.model = model
        self.stop_token_ids = stop_token_ids
        self.generator = torch.Generator().manual_seed(seed)
        self.active: list[_Row] = []
        # The row attention handles plain full-attention layers; other models (sliding windows, ...)
        # decode each sequence alone, as an unbatched sampler does.
        if getattr(model.config, "_attn_implementation", None) == "sdpa":
            model.set_attn_implementation(ROW_ATTENTION)
        self.batched = getattr(model.config, "_attn_implementation", None) == ROW_ATTENTION

    def _take(self, request: SampleRequest, logits: torch.Tensor) -> bool:
        """Sample the request's next token from its logits row; True when the request is finished."""
        token, log_prob = sample_next_token(logits, request.temperature, request.top_p, request.top_k,
                                            request.generator or self.generator)
        request.tokens.append(token)
        request.log_probs.append(log_prob)
        request.finished = (len(request.tokens) >= request.max_new_tokens
                            or (token in self.stop_token_ids and not request.ignore_eos))
        return request.finished

    @torch.no_grad()
    def admit(self, requests: list[SampleRequest]) -> list[SampleRequest]:
        """Prefill each request alone and sample its first token; returns those already finished."""
        finished = []
        for request in requests:
            if request.max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be at least 1, got {request.max_new_tokens}")
            cache = DynamicCache(config=self.model.config)
            out = self.model(input_ids=torch.tensor([request.prompt_ids], dtype=torch.long),
                             past_key_values=cache, use_cache=True)
            if self._take(request, out.logits[0, -1]):
                finished.append(request)
                continue
            plain = self.batched and all(type(layer) is DynamicLayer for layer in cache.layers)
            self.active.append(_Row(
                request=request,
                keys=[layer.keys for layer in cache.layers] if plain else [],
                values=[layer.values for layer in cache.layers] if plain else [],
                length=len(request.prompt_ids),
                cache=None if plain else cache,
            ))
        return finished

    @torch.no_grad()
    def step(self) -> list[SampleRequest]:
        """One decoding step of every active sequence; returns the requests it finished."""
        batched = [row for row in self.active if row.cache is None]
        if batched:
            fill = -len(batched) % DECODE_ROW_MULTIPLE
            tokens = [row.request.tokens[-1] for row in batched] + [batched[0].request.tokens[-1]] * fill
            positions = [row.length for row in batched] + [0] * fill
            _decode.rows = batched
            try:
                logits = self.model(input_ids=torch.tensor(tokens, dtype=torch.long)[:, None],
                                    position_ids=torch.tensor(positions, dtype=torch.long)[:, None],
                                    use_cache=False).logits[:, -1]
            finally:
                _decode.rows = None
            for index, row in enumerate(batched):
                row.length += 1
                self._take(row.request, logits[index])
        for row in self.active:
            if row.cache is not None:
                out = self.model(input_ids=torch.tensor([[row.request.tokens[-1]]], dtype=torch.long),
                                 past_key_values=row.cache, use_cache=True)
                row.length += 1
                self._take(row.request, out.logits[0, -1])
        finished = [row.request for row in self.active if row.request.finished]
        self.active = [row for row in self.active if not row.request.finished]
        return finished

    def drop(self, keep: Callable[[SampleRequest], bool]) -> list[SampleRequest]:
        """Stop the active requests `keep` rejects (e.g. aborted); returns them."""
        dropped = [row.request for row in self.active if not keep(row.request)]
        self.active = [row for row in self.active if keep(row.request)]
        return dropped

    def sample_batch(self, requests: list[SampleRequest], max_batch: int = 64,
                     on_finished: Optional[Callable[[SampleRequest], None]] = None) -> list[SampleRequest]:
        """Run `requests` to completion, at most `max_batch` at a time (a finished one's place goes
        to the next waiting request). Returns them, filled in."""
        waiting = list(requests)
        while waiting or self.active:
            room = max(0, max_batch - len(self.active))
            admitted, waiting = waiting[:room], waiting[room:]
            done = self.admit(admitted)
            if self.active:
                done += self.step()
            for request in done if on_finished else ():
                on_finished(request)
        return requests

    def sample(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
               top_k: int = -1, ignore_eos: bool = False,
               generator: Optional[torch.Generator] = None) -> tuple[list[int], list[float]]:
        """Returns the response ids (ending with the stop token when one was sampled) and their log-probs.

        `generator` draws this sample's randomness; default: the sampler's own, shared by its calls.
        """
        request = SampleRequest(list(prompt_ids), max_new_tokens, temperature, top_p, top_k, ignore_eos, generator)
        self.sample_batch([request])
        return request.tokens, request.log_probs
