"""What the wrong answer's shared prefix is taught (`tapo/prefix_net_advantage`) and the other
`tapo/` metrics of the trained batch, against hand computations."""

import math

import numpy as np
import pytest
import torch

from recipe_tapo.advantage import compute_tapo_advantage, constructed_row_uid
from recipe_tapo.config import AdvantageConfig, TapoConfig
from recipe_tapo.step_metrics import constructed_row_metrics, prefix_net_advantage

WIDTH = 6


def _group_of_eight_with_one_right_construction(right: int, degenerate: str):
    """8 rollouts of one question (`right` of them right), and one right construction built from
    wrong row `right` (the first wrong one), keeping its first 4 tokens; DAE advantages."""
    rewards = torch.zeros(9, WIDTH)
    rewards[:right, -1] = 1.0
    rewards[8, -1] = 1.0
    settings = AdvantageConfig(degenerate=degenerate)
    index = np.array(["q"] * 8 + [constructed_row_uid("q", settings)], dtype=object)
    advantages, _ = compute_tapo_advantage(rewards, torch.ones(9, WIDTH), index, tapo_config=TapoConfig(advantage=settings))
    return advantages


def _flags(rows: int):
    original = np.array([True] * 8 + [False] * (rows - 8))
    return original, ~original


def _std(right: int) -> float:
    return math.sqrt(right * (8 - right) / (8 * 7))  # sample std of `right` 1s among 8


@pytest.mark.parametrize("right, expected", [(3, (1 - 2 * 0.375) / _std(3)), (2, (1 - 2 * 0.25) / _std(2))])
def test_a_degenerate_ref_group_against_the_orig_baseline_pushes_the_wrong_prefix_up(right, expected):
    """The issue's reproduction: with 3 of 8 right, A(wrong) = -0.72 and A(construction) = +1.21 on
    the same prefix tokens (OTS 1): net +0.48; with 2 of 8, +1.07."""
    advantages = _group_of_eight_with_one_right_construction(right, "orig_baseline")
    original, constructed = _flags(9)
    source = np.array(list(range(8)) + [right])
    cut = np.array([0] * 8 + [4])
    net = prefix_net_advantage(advantages, torch.ones(9, WIDTH), torch.ones(9), cut, source, original, constructed)
    assert net.tolist() == pytest.approx([expected], abs=1e-3)
    assert net[0] > 0


def test_the_literal_formula_leaves_the_wrong_prefix_its_negative_advantage():
    advantages = _group_of_eight_with_one_right_construction(3, "zero")
    original, constructed = _flags(9)
    net = prefix_net_advantage(
        advantages, torch.ones(9, WIDTH), torch.ones(9), np.array([0] * 8 + [4]), np.array(list(range(8)) + [3]), original, constructed
    )
    assert net.tolist() == pytest.approx([-0.375 / (_std(3) + 1e-6)], rel=1e-4)


def test_the_net_advantage_weighs_the_construction_by_lambda_and_ots():
    advantages = torch.tensor([[-1.0, -1.0, -1.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    factor = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.5, 0.1, 2.0, 1.0]])
    net = prefix_net_advantage(
        advantages, factor, torch.ones(2), np.array([0, 3]), np.array([7, 7]), np.array([True, False]), np.array([False, True])
    )
    # Over the 3 prefix tokens: -1 + 2 x (0.5, 0.1, 2.0) = (0, -0.8, 3) -> mean 0.7333.
    assert net.tolist() == pytest.approx([(0.0 - 0.8 + 3.0) / 3])


def test_the_net_advantage_is_what_verls_loss_sees_loss_scales_included():
    advantages = torch.tensor([[-1.0, -1.0, -1.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    factor = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.5, 0.1, 2.0, 1.0]])
    scales = torch.tensor([1.25, 10.0])  # e.g. separate normalisation with few constructed tokens
    net = prefix_net_advantage(
        advantages, factor, scales, np.array([0, 3]), np.array([7, 7]), np.array([True, False]), np.array([False, True])
    )
    # -1.25 + 20 x (0.5, 0.1, 2.0) = (8.75, 0.75, 38.75) -> mean 16.0833.
    assert net.tolist() == pytest.approx([(8.75 + 0.75 + 38.75) / 3])


def test_the_batch_metrics_hand_computed():
    advantages = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    factor = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.4, 3.0], [0.0, 0.0, 0.0]])
    ots = factor.clone()
    metrics = constructed_row_metrics(
        advantages,
        factor,
        ots,
        mask,
        cut_tokens=np.array([0, 0, 2, 0]),
        prefix_net=prefix_net_advantage(
            advantages, factor, torch.ones(4), np.array([0, 0, 2, 0]), np.array([0, 1, 0, -1]),
            np.array([True, True, False, False]), np.array([False, False, True, False]),
        ),
        is_original=np.array([True, True, False, False]),
        is_constructed=np.array([False, False, True, False]),
        is_padding=np.array([False, False, False, True]),
    )
    assert metrics["tapo/padding_rows"] == 1.0
    assert metrics["tapo/constructed_token_share"] == pytest.approx(3 / 6)
    assert metrics["tapo/original_advantage_mean"] == pytest.approx((1.0 - 1.0) / 2)
    assert metrics["tapo/constructed_advantage_mean"] == pytest.approx((0.1 + 0.2 + 1.5) / 3)
    assert metrics["tapo/ots_weight_mean/prefix"] == pytest.approx(0.3)
    assert (metrics["tapo/ots_weight_min/prefix"], metrics["tapo/ots_weight_max/prefix"]) == pytest.approx((0.2, 0.4))
    assert metrics["tapo/ots_weight_max/inserted"] == pytest.approx(3.0)
    assert metrics["tapo/ots_weight_mean/first_inserted"] == metrics["tapo/ots_weight_median/first_inserted"] == 3.0
    # Prefix tokens 0-1: row 0's advantage (1, 1) + 0.5 x (0.2, 0.4) -> (1.1, 1.2).
    assert metrics["tapo/prefix_net_advantage"] == pytest.approx(1.15)
    assert metrics["tapo/prefix_net_advantage_positive_share"] == 1.0


def test_a_batch_without_constructions_has_only_the_row_metrics():
    metrics = constructed_row_metrics(
        torch.ones(2, 2), torch.ones(2, 2), None, torch.ones(2, 2), np.zeros(2), np.zeros(0),
        np.ones(2, dtype=bool), np.zeros(2, dtype=bool), np.zeros(2, dtype=bool),
    )
    assert metrics["tapo/constructed_token_share"] == 0.0
    assert "tapo/prefix_net_advantage" not in metrics and "tapo/ots_weight_max/inserted" not in metrics


def test_the_first_inserted_tokens_ots_weight_is_read_at_each_constructions_cut():
    # Three constructions cut at 1, 0 and 2 tokens; a fourth whose cut is its whole response has no
    # inserted token and is left out.
    ots = torch.tensor([[0.5, 0.01, 2.0], [0.02, 1.0, 1.0], [1.0, 1.0, 0.9], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 0]])
    metrics = constructed_row_metrics(
        torch.ones(4, 3), ots, ots, mask, np.array([1, 0, 2, 2]), np.zeros(4),
        np.zeros(4, dtype=bool), np.ones(4, dtype=bool), np.zeros(4, dtype=bool),
    )
    assert metrics["tapo/ots_weight_mean/first_inserted"] == pytest.approx((0.01 + 0.02 + 0.9) / 3)
    assert metrics["tapo/ots_weight_median/first_inserted"] == pytest.approx(0.02)


def test_the_first_inserted_tokens_probability_is_logged_with_ots_off_too():
    # The policy's probability of opening the reflection right after its own wrong step: read from
    # the old-log-prob pass at each construction's cut, with or without OTS; original rows left out.
    log_probs = torch.log(torch.tensor([[0.9, 0.9, 0.9], [0.5, 0.04, 0.3], [0.2, 0.9, 0.9], [0.7, 0.7, 0.1]]))
    mask = torch.ones(4, 3, dtype=torch.long)
    for ots in (None, torch.ones(4, 3)):
        metrics = constructed_row_metrics(
            torch.ones(4, 3), torch.ones(4, 3), ots, mask, np.array([0, 1, 0, 2]), np.zeros(3),
            np.array([True, False, False, False]), np.array([False, True, True, True]), np.zeros(4, dtype=bool),
            old_log_probs=log_probs,
        )
        assert metrics["tapo/probability_mean/first_inserted"] == pytest.approx((0.04 + 0.2 + 0.1) / 3)
        assert metrics["tapo/probability_median/first_inserted"] == pytest.approx(0.1)
        assert ("tapo/ots_weight_median/first_inserted" in metrics) == (ots is not None)
    without = constructed_row_metrics(
        torch.ones(4, 3), torch.ones(4, 3), None, mask, np.array([0, 1, 0, 2]), np.zeros(3),
        np.array([True, False, False, False]), np.array([False, True, True, True]), np.zeros(4, dtype=bool),
    )
    assert not any(key.startswith("tapo/probability") for key in without)
