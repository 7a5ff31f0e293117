"""Token-level sampling with a transformers causal LM: the engine behind the "hf" backend.

Used by the rollout server (`hf_rollout.HFGenerationServer`) and by offline generation on CPU
(`recipe_tapo.generation`), so both sample exactly alike.
"""

from typing import Optional

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper


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


class HFSampler:
    """Samples continuations of token ids one token at a time with a KV cache."""

    def __init__(self, model, stop_token_ids: set[int], seed: int = 0):
        self.model = model
        self.stop_token_ids = stop_token_ids
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def sample(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
               top_k: int = -1, ignore_eos: bool = False,
               generator: Optional[torch.Generator] = None) -> tuple[list[int], list[float]]:
        """Returns the response ids (ending with the stop token when one was sampled) and their log-probs.

        `generator` draws this sample's randomness; default: the sampler's own, shared by its calls.
        """
        generator = generator or self.generator
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        past: Optional[object] = None
        tokens, log_probs = [], []
        for _ in range(max_new_tokens):
            out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token, log_prob = sample_next_token(out.logits[0, -1], temperature, top_p, top_k, generator)
            tokens.append(token)
            log_probs.append(log_prob)
            if token in self.stop_token_ids and not ignore_eos:
                break
            input_ids = torch.tensor([[token]], dtype=torch.long)
        return tokens, log_probs
