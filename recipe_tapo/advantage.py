"""Decoupled Advantage Estimation (DAE) and OOD Token Suppression (OTS) weights.

docs/method.md, "Decoupled advantages" and "OOD token suppression". Registered with verl as
`algorithm.adv_estimator=tapo` (verl 0.9.1's `register_adv_est`); importing this module registers it.

verl 0.9.1's `compute_advantage` hands a registered estimator the rewards, the response mask, the
`algorithm` config and the uid of each row (`index`), nothing else. So the trainer encodes G_ref in
the uid of each constructed row (`constructed_row_uid`), and the `tapo.advantage` settings of the
run reach the estimator through `use_advantage_settings`, called once by the trainer in the process
where verl computes advantages (the driver). lambda and OTS are per-token factors the trainer applies
afterwards (`compute_constructed_token_factor`); the estimator returns the DAE advantages alone.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from recipe_tapo.config import AdvantageConfig, TapoConfig

ADV_ESTIMATOR_NAME = "tapo"
# verl's GRPO epsilon (compute_grpo_outcome_advantage's default); G_orig always uses the estimator's
# own `epsilon` argument, never `tapo.advantage.epsilon`.
GRPO_EPSILON = 1e-6
# The uid of a constructed row under DAE: "<prefix>:<scope>:<source uid>" (see constructed_row_uid).
CONSTRUCTED_UID_PREFIX = "tapo-ref"
_BATCH_GROUP = object()  # the G_ref key of ref_group_scope=batch: one group, whatever the source uid

_run_settings: AdvantageConfig | None = None


def use_advantage_settings(settings: AdvantageConfig | None) -> None:
    """Make `settings` the `tapo.advantage` section the registered estimator uses in this process
    (None: the defaults). The trainer calls it once, before its first step."""
    global _run_settings
    _run_settings = settings


def constructed_row_uid(source_uid: str, settings: AdvantageConfig) -> str:
    """The uid a constructed row carries in the training batch: how its G_ref reaches verl's call
    of the estimator. With DAE off (`decoupled=false`) it is the source group's uid, so the
    construction joins that group's statistics, as the ablation wants."""
    if not settings.decoupled:
        return str(source_uid)
    return f"{CONSTRUCTED_UID_PREFIX}:{settings.ref_group_scope}:{source_uid}"


def parse_constructed_uid(uid: Any) -> tuple[str, str] | None:
    """(ref_group_scope, source uid) of a uid made by `constructed_row_uid` under DAE; None for the
    uid of any other row."""
    if not isinstance(uid, str) or not uid.startswith(CONSTRUCTED_UID_PREFIX + ":"):
        return None
    _, scope, source = uid.split(":", 2)
    return scope, source


@register_adv_est(ADV_ESTIMATOR_NAME)
def compute_tapo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    epsilon: float = GRPO_EPSILON,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
    tapo_config: TapoConfig | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantages with original rollouts (G_orig) and constructions (G_ref) kept apart.

    A row is a construction when its uid was made by `constructed_row_uid` (under DAE).
    A_orig_i = (r_i - mean(G_orig)) / (std(G_orig) + epsilon), exactly verl's GRPO
    (`compute_grpo_outcome_advantage` with the same `epsilon` and std setting: one-row groups get
    mean 0 and std 1). G_orig is the other rows of one uid; constructions never enter its statistics.
    A_ref_j = (r_j - mean(G_ref)) / (std(G_ref) + tapo.advantage.epsilon), with G_ref the
    constructions of one source uid (scope "query") or all constructions of the batch ("batch"). A
    degenerate G_ref (one row, or all rewards equal) gets, per `degenerate`, either 0 or each row
    normalised by the mean and std of the G_orig it was built from (`orig_baseline`; a row whose
    G_orig has one row or equal rewards has no baseline and gets 0), with `tapo.advantage.epsilon`.
    With DAE off the constructions carry their source uid and are plain GRPO rows of that group.
    Without std normalisation nothing is divided by the std, as in GRPO.

    With no construction in `index` the result equals `compute_grpo_outcome_advantage` bit for bit.

    Args:
        token_level_rewards: shape (bs, response_length); a row's reward is its sum.
        response_mask: shape (bs, response_length).
        index: shape (bs,), the uid of each row.
        epsilon: added to G_orig's std, as verl's GRPO.
        norm_adv_by_std_in_grpo: divide by the std (GRPO) or not (Dr.GRPO); `config`'s value wins.
        config: verl's `algorithm` config (AlgoConfig or a mapping); only its
            `norm_adv_by_std_in_grpo` is read, when present.
        tapo_config: the `tapo` config to use; None = the run's (`use_advantage_settings`), else
            the defaults.

    Returns:
        advantages: shape (bs, response_length)
        returns: shape (bs, response_length), the same tensor (outcome supervision, as GRPO)
    """
    if index is None:
        raise ValueError("the tapo advantage estimator needs `index` (the uid of each row)")
    settings = tapo_config.advantage if tapo_config is not None else (_run_settings or AdvantageConfig())
    norm_by_std = _norm_adv_by_std(config, norm_adv_by_std_in_grpo)
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        row_advantages = torch.zeros_like(scores)
        sources = [parse_constructed_uid(uid) for uid in index]
        original = np.array([source is None for source in sources], dtype=bool)

        orig_groups: dict[Hashable, torch.Tensor] = {}
        for uid, rows in _group_rows(index, original).items():
            group_scores = scores[rows]
            if len(rows) == 1:
                mean, std = torch.tensor(0.0), torch.tensor(1.0)
            else:
                mean, std = torch.mean(group_scores), torch.std(group_scores)
            row_advantages[rows] = _normalise(group_scores, mean, std, epsilon, norm_by_std)
            orig_groups[uid] = group_scores

        ref_keys = np.empty(len(index), dtype=object)
        for row, source in enumerate(sources):
            if source is not None:
                scope, source_uid = source
                ref_keys[row] = _BATCH_GROUP if scope == "batch" else source_uid
        for rows in _group_rows(ref_keys, ~original).values():
            group_scores = scores[rows]
            if not _is_degenerate(group_scores):
                mean, std = torch.mean(group_scores), torch.std(group_scores)
                row_advantages[rows] = _normalise(group_scores, mean, std, settings.epsilon, norm_by_std)
            elif settings.degenerate == "orig_baseline":
                for row in rows.tolist():
                    row_advantages[row] = _against_orig_baseline(
                        scores[row], orig_groups, sources[row][1], settings.epsilon, norm_by_std
                    )
            # degenerate == "zero": the rows keep advantage 0.

        advantages = row_advantages.unsqueeze(-1) * response_mask
    return advantages, advantages


def compute_constructed_token_factor(
    old_log_probs: torch.Tensor,
    entropys: torch.Tensor,
    response_mask: torch.Tensor,
    is_constructed: np.ndarray | torch.Tensor,
    config: TapoConfig,
    ots_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-token factor of every row's advantage, from the config: the one place where lambda
    and OTS meet, so no caller applies lambda twice or forgets it.

    Args:
        old_log_probs: shape (bs, response_length), log p of each response token (the actor's
            recomputation under the original prompt).
        entropys: shape (bs, response_length), the policy's entropy at each position (same pass).
        response_mask: shape (bs, response_length).
        is_constructed: shape (bs,), bool.
        config: the whole `tapo` config: `ots.enable`, `ots.w_min`, `ots.w_max` and
            `advantage.ref_loss_weight` (lambda) are read.
        ots_weights: `compute_ots_weights` of the same pass and config, when the caller has them
            already (not computed again).

    Returns:
        shape (bs, response_length), float32: lambda * w_t (OTS) on constructed rows' response
        tokens, or lambda with `ots.enable=false`; 1 on original rows' response tokens; 0 on padding.
    """
    weight = config.advantage.ref_loss_weight
    rows = torch.as_tensor(np.flatnonzero(_row_flags(is_constructed, old_log_probs.shape[0])))
    if config.ots.enable and ots_weights is not None:
        factor = ots_weights.clone()
    elif config.ots.enable:
        factor = compute_ots_weights(
            old_log_probs, entropys, response_mask, is_constructed, config.ots.w_min, config.ots.w_max
        )
    else:
        factor = response_mask.to(torch.float32, copy=True)
    with torch.no_grad():
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
    under the original prompt.

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


def _group_rows(keys: np.ndarray, selected: np.ndarray) -> dict[Hashable, torch.Tensor]:
    """Row indices of the selected rows, per key, in order of first appearance."""
    rows_by_key: dict[Hashable, list[int]] = {}
    for row in np.flatnonzero(selected).tolist():
        rows_by_key.setdefault(keys[row], []).append(row)
    return {key: torch.tensor(rows) for key, rows in rows_by_key.items()}


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
        raise ValueError(f"constructed row of source uid {uid!r} has no original rows to take a baseline from")
    group_scores = orig_groups[uid]
    if len(group_scores) == 1 or _is_degenerate(group_scores):
        return torch.zeros_like(score)
    return _normalise(score, torch.mean(group_scores), torch.std(group_scores), epsilon, norm_by_std)
