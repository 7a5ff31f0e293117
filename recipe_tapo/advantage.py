"""Decoupled Advantage Estimation (DAE) and OOD Token Suppression (OTS) weights.

TAPO_METHOD.md section 2 steps 6-8 and section 9. Registered with verl as
`algorithm.adv_estimator=tapo` (verl 0.9.1's `register_adv_est`); importing this module registers it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from recipe_tapo.config import TapoConfig

ADV_ESTIMATOR_NAME = "tapo"
# verl's GRPO epsilon (compute_grpo_outcome_advantage's default); G_orig always uses the estimator's
# own `epsilon` argument, never `tapo.advantage.epsilon`.
GRPO_EPSILON = 1e-6


@register_adv_est(ADV_ESTIMATOR_NAME)
def compute_tapo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    epsilon: float = GRPO_EPSILON,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
    is_constructed: np.ndarray | torch.Tensor | None = None,
    constructed_token_factor: torch.Tensor | None = None,
    tapo_config: TapoConfig | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantages with original rollouts (G_orig) and constructions (G_ref) kept apart.

    A_orig_i = (r_i - mean(G_orig)) / (std(G_orig) + epsilon), exactly verl's GRPO
    (`compute_grpo_outcome_advantage` with the same `epsilon` and std setting: one-row groups get
    mean 0 and std 1). G_orig is the original rows of one uid; constructed rows never enter its
    statistics, and `tapo.advantage.epsilon` never applies to it.
    A_ref_j = (r_j - mean(G_ref)) / (std(G_ref) + tapo.advantage.epsilon), with G_ref the
    constructed rows of one uid (`ref_group_scope=query`) or all constructed rows (`batch`). A
    degenerate G_ref (one row, or all rewards equal) gets, per `degenerate`, either 0 or each row
    normalised by the mean and std of the G_orig it was built from (`orig_baseline`: a correct
    construction then still gets a positive advantage; a row whose G_orig has one row or equal
    rewards has no baseline and gets 0), with `tapo.advantage.epsilon`.
    With `tapo.advantage.decoupled=false` (the DAE-off ablation) each uid's original and
    constructed rows form one group, normalised once as GRPO (with `epsilon`), for both kinds.
    Without std normalisation nothing is divided by the std, as in GRPO.
    Constructed rows' advantages are then multiplied per token by `constructed_token_factor`
    (which already holds lambda, see `compute_constructed_token_factor`), or by lambda
    (`tapo.advantage.ref_loss_weight`) alone when it is None.

    With `is_constructed` None or all false the result equals `compute_grpo_outcome_advantage`
    bit for bit, so the estimator is safe where verl's own `compute_advantage` calls it.

    Args:
        token_level_rewards: shape (bs, response_length); a row's reward is its sum.
        response_mask: shape (bs, response_length).
        index: shape (bs,), the uid of each row; a constructed row carries the uid of the group it
            was built from.
        epsilon: added to G_orig's std, as verl's GRPO.
        norm_adv_by_std_in_grpo: divide by the std (GRPO) or not (Dr.GRPO); `config`'s value wins.
        config: verl's `algorithm` config (AlgoConfig or a mapping); only its
            `norm_adv_by_std_in_grpo` is read, when present.
        is_constructed: shape (bs,), bool: which rows are constructed trajectories.
        constructed_token_factor: shape (bs, response_length), optional: the per-token factor of
            constructed rows, lambda included (`compute_constructed_token_factor`); ignored on
            original rows.
        tapo_config: the whole `tapo` config (its `advantage` section and lambda); None = defaults.

    Returns:
        advantages: shape (bs, response_length)
        returns: shape (bs, response_length), the same tensor (outcome supervision, as GRPO)
    """
    if index is None:
        raise ValueError("the tapo advantage estimator needs `index` (the uid of each row)")
    settings = (tapo_config or TapoConfig()).advantage
    norm_by_std = _norm_adv_by_std(config, norm_adv_by_std_in_grpo)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        constructed = _row_flags(is_constructed, scores.shape[0])
        row_advantages = torch.zeros_like(scores)

        # G_orig: original rows only; with decoupled=false, the uid's constructed rows join it.
        joined = np.ones_like(constructed) if not settings.decoupled else ~constructed
        orig_groups: dict[Hashable, torch.Tensor] = {}
        for uid, rows in _group_rows(index, joined).items():
            group_scores = scores[rows]
            if len(rows) == 1:
                mean, std = torch.tensor(0.0), torch.tensor(1.0)
            else:
                mean, std = torch.mean(group_scores), torch.std(group_scores)
            row_advantages[rows] = _normalise(group_scores, mean, std, epsilon, norm_by_std)
            orig_groups[uid] = group_scores

        if settings.decoupled:
            if settings.ref_group_scope == "query":
                ref_groups = list(_group_rows(index, constructed).values())
            else:
                ref_groups = [torch.as_tensor(np.flatnonzero(constructed))] if constructed.any() else []
            for rows in ref_groups:
                group_scores = scores[rows]
                if not _is_degenerate(group_scores):
                    mean, std = torch.mean(group_scores), torch.std(group_scores)
                    row_advantages[rows] = _normalise(group_scores, mean, std, settings.epsilon, norm_by_std)
                elif settings.degenerate == "orig_baseline":
                    for row in rows.tolist():
                        row_advantages[row] = _against_orig_baseline(
                            scores[row], orig_groups, index[row], settings.epsilon, norm_by_std
                        )
                # degenerate == "zero": the rows keep advantage 0.

        advantages = row_advantages.unsqueeze(-1) * response_mask
        if constructed.any():
            rows = torch.as_tensor(np.flatnonzero(constructed))
            if constructed_token_factor is None:
                advantages[rows] = advantages[rows] * settings.ref_loss_weight
            else:
                if constructed_token_factor.shape != response_mask.shape:
                    raise ValueError(
                        f"constructed_token_factor has shape {tuple(constructed_token_factor.shape)}, "
                        f"response_mask {tuple(response_mask.shape)}"
                    )
                advantages[rows] = advantages[rows] * constructed_token_factor[rows].to(advantages.dtype)
    return advantages, advantages


def compute_constructed_token_factor(
    old_log_probs: torch.Tensor,
    entropys: torch.Tensor,
    response_mask: torch.Tensor,
    is_constructed: np.ndarray | torch.Tensor,
    config: TapoConfig,
) -> torch.Tensor:
    """The per-token factor of every row's advantage, from the config: the one place where lambda
    and OTS meet, so no caller applies lambda twice or forgets it.

    Pass the result to `compute_tapo_advantage(constructed_token_factor=...)`.

    Args:
        old_log_probs: shape (bs, response_length), log p of each response token (the actor's
            recomputation under the original prompt).
        entropys: shape (bs, response_length), the policy's entropy at each position (same pass).
        response_mask: shape (bs, response_length).
        is_constructed: shape (bs,), bool.
        config: the whole `tapo` config: `ots.enable`, `ots.w_min`, `ots.w_max` and
            `advantage.ref_loss_weight` (lambda) are read.

    Returns:
        shape (bs, response_length), float32: lambda * w_t (OTS, section 2 step 8) on constructed
        rows' response tokens, or lambda with `ots.enable=false`; 1 on original rows' response
        tokens; 0 on padding.
    """
    weight = config.advantage.ref_loss_weight
    if config.ots.enable:
        factor = compute_ots_weights(
            old_log_probs, entropys, response_mask, is_constructed, config.ots.w_min, config.ots.w_max
        )
        rows = torch.as_tensor(np.flatnonzero(_row_flags(is_constructed, old_log_probs.shape[0])))
        factor[rows] = factor[rows] * weight
        return factor
    with torch.no_grad():
        factor = response_mask.to(torch.float32, copy=True)
        rows = torch.as_tensor(np.flatnonzero(_row_flags(is_constructed, factor.shape[0])))
        factor[rows] = factor[rows] * weight
        return factor


def compute_ots_weights(
    old_log_probs: torch.Tensor,
    entropys: torch.Tensor,
    response_mask: torch.Tensor,
    is_constructed: np.ndarray | torch.Tensor,
    w_min: float = 0.01,
    w_max: float = 10.0,
) -> torch.Tensor:
    """OOD Token Suppression: w_t = clamp(exp(log p(y_t) + H_t), w_min, w_max) on constructed rows,
    without lambda (the trainer uses `compute_constructed_token_factor`).

    Tokens the policy itself finds unlikely for its confidence (the injected correction) get w < 1;
    its own prefix gets w close to 1. Use the old log-probs and entropies of the same actor pass
    under the original prompt (section 9).

    Returns:
        weights: shape (bs, response_length), float32: the OTS weight on constructed rows' response
        tokens, 1 on original rows' response tokens, 0 on padding.
    """
    rows = torch.as_tensor(np.flatnonzero(_row_flags(is_constructed, old_log_probs.shape[0])))
    with torch.no_grad():
        weights = response_mask.to(torch.float32, copy=True)
        # Only the constructed rows, a small share of the batch, need the exponential.
        ots = torch.exp(old_log_probs[rows].float() + entropys[rows].float()).clamp_(min=w_min, max=w_max)
        weights[rows] = ots * weights[rows]
        return weights


def _norm_adv_by_std(config: Any, default: bool) -> bool:
    if config is None:
        return bool(default)
    if hasattr(config, "get"):  # AlgoConfig, DictConfig and dict all have it
        return bool(config.get("norm_adv_by_std_in_grpo", default))
    return bool(getattr(config, "norm_adv_by_std_in_grpo", default))


def _row_flags(flags: np.ndarray | torch.Tensor | None, num_rows: int) -> np.ndarray:
    if flags is None:
        return np.zeros(num_rows, dtype=bool)
    if isinstance(flags, torch.Tensor):
        flags = flags.detach().cpu().numpy()
    flags = np.asarray(flags, dtype=bool)
    if flags.shape != (num_rows,):
        raise ValueError(f"is_constructed has shape {flags.shape}, expected ({num_rows},)")
    return flags


def _group_rows(index: np.ndarray, selected: np.ndarray) -> dict[Hashable, torch.Tensor]:
    """Row indices of the selected rows, per uid, in order of first appearance."""
    rows_by_uid: dict[Hashable, list[int]] = {}
    for row in np.flatnonzero(selected).tolist():
        rows_by_uid.setdefault(index[row], []).append(row)
    return {uid: torch.tensor(rows) for uid, rows in rows_by_uid.items()}


def _normalise(
    scores: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, epsilon: float, norm_by_std: bool
) -> torch.Tensor:
    # The same operations, in the same order, as verl's compute_grpo_outcome_advantage: bit-equal.
    if norm_by_std:
        return (scores - mean) / (std + epsilon)
    return scores - mean


def _is_degenerate(group_scores: torch.Tensor) -> bool:
    # Equality, not std == 0: the float std of equal rewards may come out as a tiny non-zero.
    return bool(torch.all(group_scores == group_scores[0]))


def _against_orig_baseline(
    score: torch.Tensor,
    orig_groups: dict[Hashable, torch.Tensor],
    uid: Hashable,
    epsilon: float,
    norm_by_std: bool,
) -> torch.Tensor:
    if uid not in orig_groups:
        raise ValueError(f"constructed row with uid {uid!r} has no original rows to take a baseline from")
    group_scores = orig_groups[uid]
    if len(group_scores) == 1 or _is_degenerate(group_scores):
        return torch.zeros_like(score)
    return _normalise(score, torch.mean(group_scores), torch.std(group_scores), epsilon, norm_by_std)
