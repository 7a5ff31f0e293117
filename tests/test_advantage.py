"""Decoupled advantages (DAE) and OTS weights: hand-computed values, GRPO equality, registry."""

import inspect
import math

import numpy as np
import pytest
import torch
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn

from hypothesis import given
from hypothesis import strategies as st

from recipe_tapo.advantage import (
    compute_constructed_token_factor,
    compute_ots_weights,
    compute_tapo_advantage,
    constructed_row_uid,
    parse_constructed_uid,
    use_advantage_settings,
)
from recipe_tapo.config import AdvantageConfig, OtsConfig, TapoConfig

RESPONSE_LENGTH = 3


def _rewards(values: list[float]) -> torch.Tensor:
    """Outcome rewards at the last token, as verl stores them."""
    rewards = torch.zeros(len(values), RESPONSE_LENGTH)
    rewards[:, -1] = torch.tensor(values)
    return rewards


def _row_values(advantages: torch.Tensor) -> list[float]:
    return advantages[:, 0].tolist()


# Group a: originals [1, 0, 0, 0] -> mean 0.25, std 0.5; constructions [1, 0].
# Group b: originals [1, 1, 0, 0] -> mean 0.5, std sqrt(1/3); constructions [1, 1] (degenerate).
INDEX = np.array(["a"] * 4 + ["b"] * 4 + ["a", "a", "b", "b"], dtype=object)
REWARDS = _rewards([1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 1])
CONSTRUCTED = np.array([False] * 8 + [True] * 4)
MASK = torch.ones(12, RESPONSE_LENGTH)
EPS = 1e-6
ORIGINAL_EXPECTED = (
    [0.75 / (0.5 + EPS)]
    + [-0.25 / (0.5 + EPS)] * 3
    + [0.5 / (math.sqrt(1 / 3) + EPS)] * 2
    + [-0.5 / (math.sqrt(1 / 3) + EPS)] * 2
)


def _index(settings: AdvantageConfig = AdvantageConfig(), index=INDEX, constructed=CONSTRUCTED) -> np.ndarray:
    """The uids the trainer gives the rows: constructed ones carry their G_ref (constructed_row_uid)."""
    return np.array(
        [constructed_row_uid(uid, settings) if flag else uid for uid, flag in zip(index, constructed)], dtype=object
    )


def _tapo(settings: AdvantageConfig = AdvantageConfig(), constructed=CONSTRUCTED, **arguments):
    """The estimator on the batch above, with any argument replaced."""
    index = _index(settings, arguments.pop("index", INDEX), constructed)
    arguments = dict(token_level_rewards=REWARDS, response_mask=MASK, index=index) | arguments
    advantages, returns = compute_tapo_advantage(**arguments, tapo_config=TapoConfig(advantage=settings))
    assert advantages is returns
    return advantages


def test_query_scope_with_orig_baseline_fallback_hand_computed():
    sqrt_half = math.sqrt(0.5)  # std of [1, 0]
    expected = ORIGINAL_EXPECTED + [
        0.5 / (sqrt_half + EPS),
        -0.5 / (sqrt_half + EPS),
        0.5 / (math.sqrt(1 / 3) + EPS),  # degenerate G_ref of b: (1 - mean_b) / std_b of G_orig
        0.5 / (math.sqrt(1 / 3) + EPS),
    ]
    assert _row_values(_tapo()) == pytest.approx(expected, rel=1e-6)


def test_degenerate_zero_gives_zero_to_an_all_equal_ref_group():
    values = _row_values(_tapo(AdvantageConfig(degenerate="zero")))
    assert values[:8] == pytest.approx(ORIGINAL_EXPECTED, rel=1e-6)
    assert values[8:10] == pytest.approx([0.5 / (math.sqrt(0.5) + EPS), -0.5 / (math.sqrt(0.5) + EPS)], rel=1e-6)
    assert values[10:] == [0.0, 0.0]


def test_batch_scope_normalises_all_constructions_together():
    # G_ref = [1, 0, 1, 1]: mean 0.75, std 0.5.
    values = _row_values(_tapo(AdvantageConfig(ref_group_scope="batch")))
    assert values[:8] == pytest.approx(ORIGINAL_EXPECTED, rel=1e-6)
    assert values[8:] == pytest.approx(
        [0.25 / (0.5 + EPS), -0.75 / (0.5 + EPS), 0.25 / (0.5 + EPS), 0.25 / (0.5 + EPS)], rel=1e-6
    )


def test_without_std_normalisation_only_the_mean_is_removed():
    values = _row_values(_tapo(config={"norm_adv_by_std_in_grpo": False}))
    assert values == pytest.approx([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5, 0.5, -0.5, 0.5, 0.5])


def test_the_estimator_returns_dae_without_lambda():
    # lambda (and OTS) are the trainer's per-token factor (compute_constructed_token_factor).
    assert torch.equal(_tapo(AdvantageConfig(ref_loss_weight=0.5)), _tapo())


def test_constructed_rows_never_change_the_original_groups():
    alone, _ = compute_grpo_outcome_advantage(REWARDS[:8], MASK[:8], INDEX[:8])
    assert torch.equal(_tapo()[:8], alone)


def test_padding_gets_zero_advantage():
    mask = MASK.clone()
    mask[8, 1:] = 0
    mask[0, 2] = 0
    advantages = _tapo(response_mask=mask)
    assert advantages[8, 1:].tolist() == [0.0, 0.0] and advantages[0, 2].item() == 0.0
    assert advantages[8, 0].item() != 0.0


def test_single_construction_falls_back_to_its_orig_baseline():
    # One construction for group a (reward 1): degenerate G_ref -> (1 - 0.25) / 0.5.
    advantages = _tapo(
        token_level_rewards=REWARDS[:9], response_mask=MASK[:9], index=INDEX[:9], constructed=CONSTRUCTED[:9]
    )
    assert advantages[8, 0].item() == pytest.approx(0.75 / (0.5 + EPS), rel=1e-6)


def test_a_construction_whose_orig_group_is_all_equal_gets_zero():
    advantages = _tapo(
        token_level_rewards=_rewards([0, 0, 1]),
        response_mask=torch.ones(3, RESPONSE_LENGTH),
        index=np.array(["c", "c", "c"], dtype=object),
        constructed=[False, False, True],
    )
    assert advantages.abs().sum().item() == 0.0


def test_a_construction_without_original_rows_is_an_error():
    with pytest.raises(ValueError, match="source uid 'z' has no original rows"):
        _tapo(
            token_level_rewards=_rewards([1, 1]),
            response_mask=torch.ones(2, RESPONSE_LENGTH),
            index=np.array(["y", "z"], dtype=object),
            constructed=[False, True],
        )


def test_missing_index_is_refused():
    with pytest.raises(ValueError, match="needs `index`"):
        compute_tapo_advantage(REWARDS, MASK)


@given(
    source=st.text(min_size=1, max_size=40),
    scope=st.sampled_from(["query", "batch"]),
)
def test_a_constructed_uid_carries_its_source_and_scope(source, scope):
    uid = constructed_row_uid(source, AdvantageConfig(ref_group_scope=scope))
    assert parse_constructed_uid(uid) == (scope, source)
    assert parse_constructed_uid(source) is None or source.startswith("tapo-ref:")
    # DAE off: the construction is a plain row of its source group.
    assert constructed_row_uid(source, AdvantageConfig(decoupled=False)) == source


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("norm", [True, False])
def test_equals_verl_grpo_exactly_when_nothing_is_constructed(seed, norm):
    generator = torch.Generator().manual_seed(seed)
    rows = int(torch.randint(1, 64, (1,), generator=generator))
    rewards = torch.rand(rows, 5, generator=generator) * (torch.rand(rows, 5, generator=generator) > 0.5)
    mask = (torch.rand(rows, 5, generator=generator) > 0.2).float()
    index = np.array([f"uid-{int(g)}" for g in torch.randint(0, 9, (rows,), generator=generator)], dtype=object)
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    actual, _ = compute_tapo_advantage(rewards, mask, index=index, config=AlgoConfig(norm_adv_by_std_in_grpo=norm))
    assert torch.equal(actual, expected)


def test_registered_in_verl_and_callable_as_verl_calls_custom_estimators():
    assert get_adv_estimator_fn("tapo") is compute_tapo_advantage
    # verl 0.9.1's ray_trainer.compute_advantage passes only these keywords to a custom estimator.
    advantages, _ = get_adv_estimator_fn("tapo")(
        token_level_rewards=REWARDS, response_mask=MASK, config=AlgoConfig(), index=_index()
    )
    assert torch.equal(advantages, _tapo())


def test_the_run_settings_reach_the_estimator_verl_calls():
    zero = AdvantageConfig(degenerate="zero")
    try:
        use_advantage_settings(zero)
        advantages, _ = get_adv_estimator_fn("tapo")(
            token_level_rewards=REWARDS, response_mask=MASK, config=AlgoConfig(), index=_index(zero)
        )
    finally:
        use_advantage_settings(None)
    assert torch.equal(advantages, _tapo(zero))
    assert not torch.equal(advantages, _tapo())


def test_original_rows_are_verl_grpo_bit_for_bit_whatever_the_ref_epsilon():
    # tapo.advantage.epsilon is G_ref's; G_orig keeps GRPO's 1e-6 even with constructed rows present.
    expected, _ = compute_grpo_outcome_advantage(REWARDS[:8], MASK[:8], INDEX[:8])
    for epsilon in (1e-2, 0.5):
        advantages = _tapo(AdvantageConfig(epsilon=epsilon))
        assert torch.equal(advantages[:8], expected)
        # ... while G_ref uses it: group a's constructions [1, 0] have std sqrt(1/2).
        assert advantages[8, 0].item() == pytest.approx(0.5 / (math.sqrt(0.5) + epsilon), rel=1e-6)
        # and so does a degenerate G_ref normalised with its G_orig's statistics.
        assert advantages[10, 0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + epsilon), rel=1e-6)


def test_g_orig_epsilon_and_std_switch_follow_verl_grpo_arguments():
    expected, _ = compute_grpo_outcome_advantage(REWARDS[:8], MASK[:8], INDEX[:8], epsilon=0.1)
    assert torch.equal(_tapo(epsilon=0.1)[:8], expected)
    no_std, _ = compute_grpo_outcome_advantage(REWARDS[:8], MASK[:8], INDEX[:8], norm_adv_by_std_in_grpo=False)
    assert torch.equal(_tapo(norm_adv_by_std_in_grpo=False)[:8], no_std)
    # verl's algorithm config, when given, decides.
    overridden = _tapo(norm_adv_by_std_in_grpo=True, config=AlgoConfig(norm_adv_by_std_in_grpo=False))
    assert torch.equal(overridden[:8], no_std)


def test_dae_off_normalises_each_uid_over_its_original_and_constructed_rows():
    union, _ = compute_grpo_outcome_advantage(REWARDS, MASK, INDEX)
    for settings in (AdvantageConfig(decoupled=False), AdvantageConfig(decoupled=False, ref_group_scope="batch")):
        assert torch.equal(_tapo(settings), union)  # both kinds of row are exactly one GRPO group
    # Group a = [1, 0, 0, 0, 1, 0]: mean 1/3, std sqrt(4/15); the originals change too (contamination).
    std_a = math.sqrt(4 / 15)
    assert _tapo(AdvantageConfig(decoupled=False))[0, 0].item() == pytest.approx((2 / 3) / (std_a + EPS), rel=1e-6)


def test_the_estimator_signature_follows_verl_naming():
    names = list(inspect.signature(compute_tapo_advantage).parameters)
    assert names == [
        "token_level_rewards",
        "response_mask",
        "index",
        "epsilon",
        "norm_adv_by_std_in_grpo",
        "config",
        "tapo_config",
        "kwargs",
    ]
    grpo = inspect.signature(compute_grpo_outcome_advantage).parameters
    assert inspect.signature(compute_tapo_advantage).parameters["epsilon"].default == grpo["epsilon"].default


# --- constructed token factor (lambda x OTS) -------------------------------------------------------
OLD_LOG_PROBS = torch.tensor([[math.log(0.5), -5.0, -0.1, -1.0], [-3.0, -3.0, -3.0, -3.0]])
ENTROPYS = torch.tensor([[math.log(2.0), 0.1, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
FACTOR_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


@pytest.mark.parametrize("weight", [1.0, 0.5, 2.0])
def test_constructed_token_factor_is_lambda_times_ots(weight):
    config = TapoConfig(advantage=AdvantageConfig(ref_loss_weight=weight))
    factor = compute_constructed_token_factor(OLD_LOG_PROBS, ENTROPYS, FACTOR_MASK, np.array([True, False]), config)
    # OTS: exp(0) = 1; exp(-4.9) -> 0.01; exp(2.9) -> 10; padding 0. Original row: 1, padding 0.
    assert factor[0].tolist() == pytest.approx([weight * 1.0, weight * 0.01, weight * 10.0, 0.0])
    assert factor[1].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert factor.dtype == torch.float32


def test_constructed_token_factor_with_ots_off_is_lambda():
    config = TapoConfig(advantage=AdvantageConfig(ref_loss_weight=0.25), ots=OtsConfig(enable=False))
    factor = compute_constructed_token_factor(OLD_LOG_PROBS, ENTROPYS, FACTOR_MASK, torch.tensor([True, False]), config)
    assert factor.tolist() == [[0.25, 0.25, 0.25, 0.0], [1.0, 1.0, 0.0, 0.0]]


def test_constructed_token_factor_uses_the_configured_clamps():
    config = TapoConfig(ots=OtsConfig(w_min=0.7, w_max=0.9))
    factor = compute_constructed_token_factor(
        torch.tensor([[-1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.ones(1, 2), [True], config
    )
    assert factor[0].tolist() == pytest.approx([0.7, 0.9])


def test_lambda_is_applied_exactly_once_through_the_factor():
    config = TapoConfig(advantage=AdvantageConfig(ref_loss_weight=0.5))
    generator = torch.Generator().manual_seed(0)
    old_log_probs = -torch.rand(12, RESPONSE_LENGTH, generator=generator) * 3
    entropys = torch.rand(12, RESPONSE_LENGTH, generator=generator)
    factor = compute_constructed_token_factor(old_log_probs, entropys, MASK, CONSTRUCTED, config)
    ots = compute_ots_weights(old_log_probs, entropys, MASK, CONSTRUCTED)
    assert torch.equal(factor[:8], MASK[:8])
    assert torch.allclose(factor[8:], 0.5 * ots[8:])
    # Given the OTS weights the caller already holds, the factor is the same and they stay untouched.
    given = compute_constructed_token_factor(old_log_probs, entropys, MASK, CONSTRUCTED, config, ots_weights=ots)
    assert torch.equal(given, factor) and torch.equal(ots, compute_ots_weights(old_log_probs, entropys, MASK, CONSTRUCTED))


# --- OTS ----------------------------------------------------------------------------------------
def test_ots_weights_hand_computed():
    old_log_probs = torch.tensor([[math.log(0.5), -5.0, -0.1, -1.0], [-3.0, -3.0, -3.0, -3.0]])
    entropys = torch.tensor([[math.log(2.0), 0.1, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    weights = compute_ots_weights(old_log_probs, entropys, mask, is_constructed=np.array([True, False]))
    # exp(0) = 1; exp(-4.9) = 0.0074 -> 0.01; exp(2.9) = 18.2 -> 10; padding -> 0. Original row: 1, padding 0.
    assert weights[0].tolist() == pytest.approx([1.0, 0.01, 10.0, 0.0])
    assert weights[1].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert weights.dtype == torch.float32


def test_ots_weights_respect_custom_clamps():
    weights = compute_ots_weights(
        torch.tensor([[-1.0, 0.0]]),
        torch.tensor([[0.5, 0.0]]),
        torch.ones(1, 2),
        torch.tensor([True]),
        w_min=0.7,
        w_max=0.9,
    )
    assert weights[0].tolist() == pytest.approx([0.7, 0.9])  # exp(-0.5) = 0.61 -> 0.7; exp(0) = 1 -> 0.9
