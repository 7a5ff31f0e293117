"""Difficulty-aware Candidate Selection (DCS, docs/method.md, section 1).

From the rollout batch's group ids (verl's `uid`) and the correctness of each row, choose the
(wrong answer, right answer) pairs that will be turned into constructed trajectories.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from recipe_tapo.config import SelectionConfig


@dataclass(frozen=True)
class CandidatePair:
    """One construction to attempt: rows are indices into the rollout batch."""

    group_id: Hashable
    wrong_row: int
    right_row: int


def select_candidate_pairs(
    group_ids: Sequence[Hashable] | np.ndarray,
    is_correct: Sequence[bool] | np.ndarray,
    config: SelectionConfig,
    seed: int,
) -> list[CandidatePair]:
    """Choose (wrong, right) pairs from the groups whose accuracy lies in the DCS band.

    A group is eligible iff it has >= `config.n_pos` correct and >= `config.n_neg` incorrect rows.
    From each eligible group, up to `config.m_max` wrong rows are drawn at random; each is paired
    with a right row of the same group, taken from a random permutation of the right rows cycled in
    order, so the right answers are used as evenly as possible. With `config.max_pairs_per_step`,
    pairs are taken round-robin over the eligible groups in a random group order (every group's
    first pair before any group's second), so a cap spreads the constructions over many questions.

    The draw depends only on the inputs and `seed` (the trainer passes `config.seed + step`): the
    same inputs and seed always give the same pairs.

    Args:
        group_ids: shape (bs,), the group (prompt) id of each row, e.g. verl's `uid` array.
        is_correct: shape (bs,), whether each row's answer was verified correct.
        config: DCS thresholds and cap.
        seed: seed of this step's draw.

    Returns:
        Pairs ordered by group (in order of first appearance in `group_ids`), then by draw.
    """
    group_ids = list(group_ids)
    is_correct = np.asarray(is_correct, dtype=bool)
    if len(group_ids) != len(is_correct):
        raise ValueError(f"group_ids has {len(group_ids)} rows but is_correct has {len(is_correct)}")

    rows_by_group: dict[Hashable, list[int]] = {}
    for row, group_id in enumerate(group_ids):
        rows_by_group.setdefault(group_id, []).append(row)

    rng = np.random.default_rng(seed)
    pairs_by_group: list[list[CandidatePair]] = []
    for group_id, rows in rows_by_group.items():
        right_rows = [row for row in rows if is_correct[row]]
        wrong_rows = [row for row in rows if not is_correct[row]]
        if len(right_rows) < config.n_pos or len(wrong_rows) < config.n_neg:
            continue
        chosen_wrong = rng.choice(wrong_rows, size=min(config.m_max, len(wrong_rows)), replace=False)
        right_cycle = rng.permutation(right_rows)
        pairs_by_group.append(
            [
                CandidatePair(group_id, int(wrong), int(right_cycle[draw % len(right_cycle)]))
                for draw, wrong in enumerate(chosen_wrong)
            ]
        )

    total = sum(len(pairs) for pairs in pairs_by_group)
    if config.max_pairs_per_step is None or total <= config.max_pairs_per_step:
        return [pair for pairs in pairs_by_group for pair in pairs]
    return _round_robin_cap(pairs_by_group, config.max_pairs_per_step, rng)


def _round_robin_cap(
    pairs_by_group: list[list[CandidatePair]], cap: int, rng: np.random.Generator
) -> list[CandidatePair]:
    group_order = rng.permutation(len(pairs_by_group)).tolist()
    longest = max(len(pairs) for pairs in pairs_by_group)
    visits = [group for draw in range(longest) for group in group_order if draw < len(pairs_by_group[group])]
    kept_per_group = Counter(visits[:cap])
    return [pair for group, pairs in enumerate(pairs_by_group) for pair in pairs[: kept_per_group[group]]]
