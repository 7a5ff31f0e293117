"""The loss as the paper writes it: L = L_GRPO + lambda * L_ref(G_ref), each part normalised on
its own (`tapo.advantage.loss_normalization=separate`), from verl's one normalisation.

verl 0.9.1 averages the policy loss of a mini-batch once over all its rows (`agg_loss`): under
`token-mean` it divides by every loss token of the mini-batch (N_m), so constructed tokens dilute
the GRPO part; under the `seq-mean-*` modes it divides by the mini-batch's row count (G_m, padding
rows included). The clipped PPO objective is linear in the advantage for a positive factor, so a
per-row factor on the advantage ("scale") sets each token's weight in the loss to scale / N_m.

Equation 6 averages L_GRPO over a mini-batch's rollouts and L_ref over the *step's* constructed
tokens. verl's `_balance_batch` sorts each rank's rows by length before the batch is cut into
contiguous mini-batches, so constructed rows cluster in a few mini-batches; normalising L_ref inside
each mini-batch would drop it from some optimizer steps and give the whole lambda to one or two rows
in others. The scales here follow the equation over the whole step (M mini-batches):

- token-mean: an original row of mini-batch m x N_m / N_o,m (each original token keeps GRPO's weight
  1 / N_o,m); a constructed row x N_m * M / C, with C the step's constructed tokens, so every
  constructed token weighs M / C and together they weigh M (lambda x L_ref once per mini-batch, on
  average, as L_GRPO);
- seq-mean-token-mean / seq-mean-token-sum(-norm): the same by rows: G_m / R_o,m and G_m * M / R_c;
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
    """Per-row factors on the advantage that make verl's loss equation 6 over the whole step: each
    original token keeps GRPO's weight in its mini-batch, every constructed token of the step weighs
    the same (module docstring). Padding rows get 0.

    Args:
        response_mask: shape (bs, response_length), the loss mask of each row.
        is_original, is_constructed: shape (bs,), bool; rows that are neither are padding.
        mini_batch: shape (bs,), the global mini-batch of each row (`mini_batch_of_rows`).
        loss_agg_mode: verl's `actor.loss_agg_mode`.

    Returns:
        shape (bs,), float32.
    """
    _check_mode(loss_agg_mode)
    scales = torch.zeros(response_mask.shape[0], dtype=torch.float32)
    original, constructed = _row_flags(is_original), _row_flags(is_constructed)
    if loss_agg_mode == TOKEN_SUM:
        scales[original | constructed] = 1.0
        return scales
    size = _normaliser_units(response_mask, loss_agg_mode)
    mini_batch = torch.as_tensor(np.asarray(mini_batch, dtype=np.int64))
    indices = torch.unique(mini_batch).tolist()
    constructed_total = size[constructed].sum()
    for index in indices:
        rows = mini_batch == index
        total = size[rows].sum()
        original_size = size[rows & original].sum()
        if original_size > 0:
            scales[rows & original] = float(total / original_size)
        if constructed_total > 0:
            scales[rows & constructed] = float(total * len(indices) / constructed_total)
    return scales


def ref_loss_share(
    response_mask: torch.Tensor,
    scales: torch.Tensor,
    is_constructed: np.ndarray,
    mini_batch: np.ndarray,
    loss_agg_mode: str,
) -> float:
    """What L_ref weighs in the update, as a multiple of lambda per mini-batch: the constructed
    tokens' (rows', under seq-mean) summed loss weight scale / N_m, averaged over the step's
    mini-batches. 1 under `separate`; under `joint` (scales 1) the mean constructed share of a
    mini-batch. NaN under token-sum, which averages nothing.

    Args:
        response_mask: shape (bs, response_length).
        scales: shape (bs,), the loss scales the update uses.
        is_constructed: shape (bs,), bool.
        mini_batch: shape (bs,), `mini_batch_of_rows`.
        loss_agg_mode: verl's `actor.loss_agg_mode`.
    """
    _check_mode(loss_agg_mode)
    if loss_agg_mode == TOKEN_SUM:
        return float("nan")
    size = _normaliser_units(response_mask, loss_agg_mode)
    constructed = _row_flags(is_constructed)
    mini_batch = torch.as_tensor(np.asarray(mini_batch, dtype=np.int64))
    indices = torch.unique(mini_batch).tolist()
    weight = 0.0
    for index in indices:
        rows = mini_batch == index
        total = size[rows].sum()
        if total > 0:
            weight += float((scales.double()[rows & constructed] * size[rows & constructed]).sum() / total)
    return weight / len(indices)


def _check_mode(loss_agg_mode: str) -> None:
    if loss_agg_mode not in (TOKEN_MEAN, TOKEN_SUM, *SEQ_MEAN_MODES):
        raise ValueError(f"tapo.advantage.loss_normalization=separate does not know loss_agg_mode {loss_agg_mode!r}")


def _row_flags(flags: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(flags, dtype=bool))


def _normaliser_units(response_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """What verl divides by, per row: its loss tokens (token-mean) or 1 (seq-mean: rows, padding
    rows included, as verl counts them)."""
    if loss_agg_mode == TOKEN_MEAN:
        return response_mask.sum(dim=-1).to(torch.float64)
    return torch.ones(response_mask.shape[0], dtype=torch.float64)
