"""`tapo/` metrics of one training step, from the final batch's tensors (pure: no verl, no Ray).

docs/metrics.md lists every metric. The ones here need the batch after the advantages: what the
constructed rows weigh in the update, and what the wrong answer's shared prefix is taught.
"""

from __future__ import annotations

import numpy as np
import torch


def prefix_net_advantage(
    advantages: torch.Tensor,
    token_factor: torch.Tensor,
    loss_scales: torch.Tensor,
    cut_tokens: np.ndarray,
    source_row: np.ndarray,
    is_original: np.ndarray,
    is_constructed: np.ndarray,
) -> np.ndarray:
    """Per construction, the mean over its kept prefix of the advantage both rows put on it.

    A construction repeats its wrong answer's token ids up to the cut, under the same prompt, so
    each of those tokens is trained by both rows, with the advantage verl's loss sees on each:
    A_wrong x s_wrong (the wrong answer's GRPO advantage and loss scale) and
    A_construction x lambda x OTS_t x s_construction. Their sum per token, averaged over the prefix,
    says which way the shared prefix (erroneous step included under `prefix_end=after_error`) is
    pushed: positive means the update makes the wrong answer's own prefix more likely. (Left out:
    verl's division by each mini-batch's token or row count, which balancing keeps close.)

    Args:
        advantages: shape (bs, response_length), DAE advantages before lambda and OTS.
        token_factor: shape (bs, response_length), lambda x OTS on constructed rows, 1 elsewhere.
        loss_scales: shape (bs,), the loss-normalisation scale of each row (`loss_normalization`).
        cut_tokens: shape (bs,), kept prefix length of each constructed row.
        source_row: shape (bs,), the rollout position of each original row, and of its wrong
            answer for each constructed row (-1 on padding).
        is_original, is_constructed: shape (bs,), bool.

    Returns:
        shape (num_constructed,), float64, in the batch order of the constructed rows.
    """
    original_at = {int(source_row[row]): row for row in np.flatnonzero(is_original)}
    values = []
    for row in np.flatnonzero(is_constructed).tolist():
        cut = int(cut_tokens[row])
        wrong = original_at[int(source_row[row])]
        if cut <= 0:
            values.append(0.0)
            continue
        net = (
            advantages[wrong, :cut] * loss_scales[wrong]
            + advantages[row, :cut] * token_factor[row, :cut] * loss_scales[row]
        )
        values.append(float(net.double().mean()))
    return np.asarray(values, dtype=np.float64)


def constructed_row_metrics(
    advantages: torch.Tensor,
    token_factor: torch.Tensor,
    ots_weights: torch.Tensor | None,
    response_mask: torch.Tensor,
    cut_tokens: np.ndarray,
    prefix_net: np.ndarray,
    is_original: np.ndarray,
    is_constructed: np.ndarray,
    is_padding: np.ndarray,
    old_log_probs: torch.Tensor | None = None,
) -> dict[str, float]:
    """The `tapo/` metrics of the trained batch: row and token shares, advantages, OTS weights on
    the kept prefix, on the inserted text and on its first token, the policy's probability of that
    first token, and the prefix's net advantage.

    Args:
        advantages: shape (bs, response_length), DAE advantages before lambda and OTS.
        token_factor: shape (bs, response_length), lambda x OTS on constructed rows, 1 elsewhere.
        ots_weights: shape (bs, response_length), the OTS weights alone, or None with OTS off.
        response_mask: shape (bs, response_length).
        cut_tokens: shape (bs,), kept prefix length of each constructed row.
        prefix_net: shape (n_constructed,), `prefix_net_advantage` of the same batch.
        is_original, is_constructed, is_padding: shape (bs,), bool.
        old_log_probs: shape (bs, response_length), the old-log-prob pass (constructed rows under
            their original prompt), or None where the batch has none.
    """
    mask = response_mask.bool()
    tokens = mask.sum(dim=-1)
    constructed = torch.as_tensor(np.asarray(is_constructed, dtype=bool))
    original = torch.as_tensor(np.asarray(is_original, dtype=bool))
    trained = advantages * token_factor
    row_advantage = (trained * mask).sum(dim=-1) / tokens.clamp(min=1)
    metrics = {
        "tapo/padding_rows": float(np.asarray(is_padding, dtype=bool).sum()),
        "tapo/constructed_token_share": float(tokens[constructed].sum() / max(int(tokens.sum()), 1)),
        "tapo/original_advantage_mean": _mean(row_advantage[original]),
        "tapo/constructed_advantage_mean": _mean(row_advantage[constructed]),
    }
    if not constructed.any():
        return metrics
    positions = torch.arange(mask.shape[1]).unsqueeze(0)
    cut = torch.as_tensor(np.asarray(cut_tokens, dtype=np.int64)).unsqueeze(1)
    rows = constructed.unsqueeze(1)
    # The first inserted token opens the reflection, right after the policy's own wrong step: where
    # the policy never makes that move, OTS holds it at its floor (the first toy: 0.01 for every
    # construction), and its probability says how often the policy would reflect there by itself.
    first = [(row, int(cut_tokens[row])) for row in np.flatnonzero(is_constructed).tolist()
             if int(cut_tokens[row]) < mask.shape[1] and mask[row, int(cut_tokens[row])]]
    first_at = tuple(list(index) for index in zip(*first))
    if ots_weights is not None:
        for name, part in (("prefix", mask & (positions < cut) & rows), ("inserted", mask & (positions >= cut) & rows)):
            values = ots_weights[part]
            metrics[f"tapo/ots_weight_mean/{name}"] = _mean(values)
            metrics[f"tapo/ots_weight_min/{name}"] = float(values.min()) if values.numel() else 0.0
            metrics[f"tapo/ots_weight_max/{name}"] = float(values.max()) if values.numel() else 0.0
        if first:
            values = ots_weights[first_at].double().cpu().numpy()
            metrics["tapo/ots_weight_mean/first_inserted"] = float(values.mean())
            metrics["tapo/ots_weight_median/first_inserted"] = float(np.median(values))
    if old_log_probs is not None and first:
        values = old_log_probs[first_at].double().exp().cpu().numpy()
        metrics["tapo/probability_mean/first_inserted"] = float(values.mean())
        metrics["tapo/probability_median/first_inserted"] = float(np.median(values))
    metrics["tapo/prefix_net_advantage"] = float(prefix_net.mean())
    metrics["tapo/prefix_net_advantage_positive_share"] = float((prefix_net > 0).mean())
    return metrics


def _mean(values: torch.Tensor) -> float:
    return float(values.float().mean()) if values.numel() else 0.0
