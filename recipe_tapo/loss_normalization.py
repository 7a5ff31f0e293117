"""The loss as the paper writes it: L = L_GRPO(G_orig) + lambda * L_ref(G_ref), each part normalised
on its own (`tapo.advantage.loss_normalization=separate`), from verl's one normalisation.

verl 0.9.1 averages the policy loss of a mini-batch once over all its rows (`agg_loss`): under
`token-mean` it divides by every loss token of the mini-batch, so with N_o original and N_c
constructed tokens the loss is (N_o L_GRPO + lambda N_c L_ref) / (N_o + N_c), the GRPO part
shrinking by the constructed share; under the `seq-mean-*` modes it divides by the mini-batch's
row count, padding rows included. The clipped PPO objective is linear in the advantage for a
positive factor, so scaling each row's advantage by its part's share of the mini-batch turns verl's
one average into the two separate ones:

- token-mean: original rows x N / N_o, constructed rows x N / N_c (N = N_o + N_c);
- seq-mean-token-mean / seq-mean-token-sum(-norm): original rows x G / R_o, constructed rows x
  G / R_c, with G the mini-batch's rows (padding included, as verl counts them) and R_o, R_c the
  rows of each part, so padding rows leave both means;
- token-sum: nothing is averaged; every scale is 1.

With no constructed row every scale is exactly 1, so the loss is GRPO's bit for bit. The scales
depend on which rows share a mini-batch, which `mini_batch_of_rows` reproduces from verl's split.
"""

from __future__ import annotations

import numpy as np
import torch

TOKEN_MEAN = "token-mean"
TOKEN_SUM = "token-sum"
SEQ_MEAN_MODES = ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def mini_batch_of_rows(num_rows: int, dp_size: int, num_mini_batches: int, shuffled: bool) -> np.ndarray:
    """The global mini-batch each row of the training batch lands in during verl 0.9.1's update.

    verl's dispatch gives data-parallel rank r the r-th contiguous chunk of the batch; each rank
    then cuts its chunk into `num_mini_batches` contiguous mini-batches (`make_iterator` without
    shuffle), and the m-th mini-batches of all ranks make one global mini-batch (one optimizer step,
    one `batch_num_tokens`). With `actor.shuffle=true` the split is random per rank: every row is
    given mini-batch 0, i.e. the scales are computed over the whole batch.

    Returns:
        shape (num_rows,), int64.
    """
    if shuffled:
        return np.zeros(num_rows, dtype=np.int64)
    if num_rows % (dp_size * num_mini_batches):
        raise ValueError(
            f"{num_rows} rows do not split into {dp_size} ranks x {num_mini_batches} mini-batches"
        )
    per_rank = num_rows // dp_size
    per_mini_batch = per_rank // num_mini_batches
    return (np.arange(num_rows) % per_rank) // per_mini_batch


def separate_loss_scales(
    response_mask: torch.Tensor,
    is_original: np.ndarray,
    is_constructed: np.ndarray,
    mini_batch: np.ndarray,
    loss_agg_mode: str,
) -> torch.Tensor:
    """Per-row factors on the advantage that make verl's loss L_GRPO + lambda * L_ref with each
    part normalised over its own tokens or rows (module docstring). Padding rows get 0.

    Args:
        response_mask: shape (bs, response_length), the loss mask of each row.
        is_original, is_constructed: shape (bs,), bool; rows that are neither are padding.
        mini_batch: shape (bs,), the global mini-batch of each row (`mini_batch_of_rows`).
        loss_agg_mode: verl's `actor.loss_agg_mode`.

    Returns:
        shape (bs,), float32.
    """
    if loss_agg_mode not in (TOKEN_MEAN, TOKEN_SUM, *SEQ_MEAN_MODES):
        raise ValueError(f"tapo.advantage.loss_normalization=separate does not know loss_agg_mode {loss_agg_mode!r}")
    scales = torch.zeros(response_mask.shape[0], dtype=torch.float32)
    parts = (torch.as_tensor(np.asarray(is_original, dtype=bool)), torch.as_tensor(np.asarray(is_constructed, dtype=bool)))
    if loss_agg_mode == TOKEN_SUM:
        for part in parts:
            scales[part] = 1.0
        return scales
    tokens = response_mask.sum(dim=-1).to(torch.float64)
    mini_batch = torch.as_tensor(np.asarray(mini_batch, dtype=np.int64))
    for index in torch.unique(mini_batch).tolist():
        rows = mini_batch == index
        if loss_agg_mode == TOKEN_MEAN:
            total = tokens[rows].sum()
            part_sizes = [tokens[rows & part].sum() for part in parts]
        else:
            total = rows.sum().to(torch.float64)
            part_sizes = [(rows & part).sum().to(torch.float64) for part in parts]
        for part, size in zip(parts, part_sizes):
            if size > 0:
                scales[rows & part] = float(total / size)
    return scales
