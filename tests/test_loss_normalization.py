"""The paper's loss L = L_GRPO + lambda * L_ref from verl's one normalisation: row scales, verl's
mini-batch split, and the gradient of verl's own policy loss against a hand computation."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig

from recipe_tapo.loss_normalization import mini_batch_of_rows, ref_loss_share, separate_loss_scales

# Two mini-batches of 6 rows: originals with 4, 2, 3 tokens; constructions with 5 and 1; one padding row.
MASK = torch.tensor(
    [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]] * 2
)
ORIGINAL = np.array([True, True, True, False, False, False] * 2)
CONSTRUCTED = np.array([False, False, False, True, True, False] * 2)
MINI_BATCH = np.array([0] * 6 + [1] * 6)


def test_token_mean_scales_each_part_by_its_token_share():
    scales = separate_loss_scales(MASK, ORIGINAL, CONSTRUCTED, MINI_BATCH, "token-mean")
    # 15 tokens a mini-batch: 9 original, 6 constructed; the padding row gets 0.
    assert scales.tolist() == pytest.approx([15 / 9] * 3 + [15 / 6] * 2 + [0.0] + [15 / 9] * 3 + [15 / 6] * 2 + [0.0])


def test_seq_mean_scales_each_part_by_its_row_share_leaving_padding_out():
    for mode in ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        scales = separate_loss_scales(MASK, ORIGINAL, CONSTRUCTED, MINI_BATCH, mode)
        # verl divides by the 6 rows of a mini-batch, padding included: 3 original, 2 constructed.
        assert scales[:6].tolist() == pytest.approx([6 / 3] * 3 + [6 / 2] * 2 + [0.0])


def test_with_no_construction_every_scale_is_exactly_one():
    original = np.ones(12, dtype=bool)
    for mode in ("token-mean", "seq-mean-token-mean", "token-sum"):
        scales = separate_loss_scales(MASK[:, :4] + 1, original, ~original, MINI_BATCH, mode)
        assert torch.equal(scales, torch.ones(12))


def test_an_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="does not know loss_agg_mode 'seq-max'"):
        separate_loss_scales(MASK, ORIGINAL, CONSTRUCTED, MINI_BATCH, "seq-max")


@pytest.mark.parametrize("dp_size, num_mini_batches", [(1, 1), (1, 4), (2, 2), (4, 3)])
def test_mini_batches_are_verls_split(dp_size, num_mini_batches):
    """verl 0.9.1: dispatch gives each rank a contiguous chunk (DataProto.chunk), each rank cuts its
    chunk into mini-batches (tensordict_utils.make_iterator, no shuffle); the m-th of every rank
    make one optimizer step."""
    rows = dp_size * num_mini_batches * 5
    batch = DataProto.from_dict(tensors={"row": torch.arange(rows)})
    expected = np.full(rows, -1)
    for chunk in batch.chunk(dp_size):
        per_rank = len(chunk) // num_mini_batches
        iterator = tu.make_iterator(chunk.batch, mini_batch_size=per_rank, epochs=1, dataloader_kwargs={"shuffle": False})
        for index, mini_batch in enumerate(iterator):
            expected[mini_batch["row"].numpy()] = index
    assert mini_batch_of_rows(rows, dp_size, num_mini_batches, shuffled=False).tolist() == expected.tolist()
    assert set(mini_batch_of_rows(rows, dp_size, num_mini_batches, shuffled=True).tolist()) == {0}
    if dp_size * num_mini_batches > 1:
        with pytest.raises(ValueError, match="do not split"):
            mini_batch_of_rows(rows + 1, dp_size, num_mini_batches, shuffled=False)


def test_the_gradient_of_verls_loss_is_the_papers_equation():
    """verl's vanilla PPO loss (token-mean over the mini-batch) on advantages x lambda x scales has the
    gradient of (1/N_o) sum_o l_t + lambda * (1/N_c) sum_c w_t l_t."""
    generator = torch.Generator().manual_seed(0)
    rows = slice(0, 6)
    mask = MASK[rows].float()
    advantages = torch.randn(6, 5, generator=generator) * mask
    ots = torch.rand(6, 5, generator=generator) * 2
    weight = 0.5
    factor = torch.where(torch.as_tensor(CONSTRUCTED[rows]).unsqueeze(1), weight * ots, torch.ones(6, 5)) * mask
    scales = separate_loss_scales(MASK[rows], ORIGINAL[rows], CONSTRUCTED[rows], MINI_BATCH[rows], "token-mean")
    old_log_prob = -torch.rand(6, 5, generator=generator)

    def gradient(loss_of):
        log_prob = old_log_prob.clone().requires_grad_(True)
        loss_of(log_prob).backward()
        return log_prob.grad

    config = ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1)
    config.global_batch_info.update(dp_size=1, batch_num_tokens=None, global_batch_size=None)

    def verls(log_prob):
        loss, _ = compute_policy_loss_vanilla(
            old_log_prob, log_prob, advantages * factor * scales.unsqueeze(-1), mask, "token-mean", config
        )
        return loss

    def papers(log_prob):
        ratio = torch.exp(log_prob - old_log_prob)  # 1 at the start of the update: no clipping
        per_token = -advantages * ratio
        parts = []
        for rows_of_part, part_factor in ((ORIGINAL[rows], torch.ones(6, 5)), (CONSTRUCTED[rows], weight * ots)):
            part = torch.as_tensor(rows_of_part).unsqueeze(1) * mask
            parts.append((per_token * part * part_factor).sum() / part.sum())
        return parts[0] + parts[1]

    assert torch.allclose(gradient(verls), gradient(papers), atol=1e-6)
    # Under verl's joint normalisation the GRPO part shrinks by the constructed token share (9 of 15).
    joint = gradient(
        lambda log_prob: compute_policy_loss_vanilla(old_log_prob, log_prob, advantages * factor, mask, "token-mean", config)[0]
    )
    original_tokens = torch.as_tensor(ORIGINAL[rows]).unsqueeze(1) * mask.bool()
    assert torch.allclose(joint[original_tokens] * 15 / 9, gradient(papers)[original_tokens], atol=1e-6)


def test_the_trainer_configs_of_the_toy_and_gpu_runs_keep_the_default():
    defaults = OmegaConf.load("config/tapo_defaults.yaml")
    assert defaults.tapo.advantage.loss_normalization == "separate"


def _balanced_step(seed: int = 0):
    """One step at the issue's shape, ordered by verl 0.9.1's own `_balance_batch`: 8 ranks, 4
    mini-batches, 1024 rollouts of 100-400 response tokens, 40 longer constructions (500-700) and
    the padding rows that bring the batch to a multiple of 8 ranks x 4 mini-batches x K=8."""
    from types import SimpleNamespace

    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    from recipe_tapo.trainer import padding_rows_needed, row_multiple

    generator = np.random.default_rng(seed)
    dp_size, num_mini_batches, prompt, width = 8, 4, 64, 700
    lengths = [*generator.integers(100, 401, 1024), *generator.integers(500, 701, 40)]
    padding = padding_rows_needed(len(lengths), row_multiple(dp_size, 8, num_mini_batches))
    lengths += [0] * padding
    kinds = np.array(["original"] * 1024 + ["constructed"] * 40 + ["padding"] * padding, dtype=object)
    response_mask = (torch.arange(width).unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)).long()
    batch = DataProto.from_dict(
        tensors={
            "response_mask": response_mask,
            "attention_mask": torch.cat([torch.ones(len(lengths), prompt, dtype=torch.long), response_mask], dim=1),
        },
        non_tensors={"kind": kinds},
    )
    verl_trainer = SimpleNamespace(_get_dp_size=lambda worker_group, role: dp_size, actor_rollout_wg=None)
    RayPPOTrainer._balance_batch(verl_trainer, batch, metrics={})
    kinds = batch.non_tensor_batch["kind"]
    mini_batch = mini_batch_of_rows(len(batch), dp_size, num_mini_batches, shuffled=False)
    return batch.batch["response_mask"], kinds == "original", kinds == "constructed", mini_batch


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_every_constructed_token_of_a_step_weighs_the_same_under_verls_balance_order(mode):
    """Equation 6 over the step: verl's balancing clusters the constructions in some mini-batches
    (the issue measured 0, 18, 22, 0), yet each constructed token (row, under seq-mean) weighs M / C
    in verl's loss, together M (lambda x L_ref once per optimizer step), and each original token
    keeps GRPO's weight 1 / N_o in its mini-batch."""
    mask, original, constructed, mini_batch = _balanced_step()
    per_mini_batch = [int(constructed[mini_batch == index].sum()) for index in range(4)]
    assert min(per_mini_batch) == 0 and sum(per_mini_batch) == 40  # the clustering is real

    scales = separate_loss_scales(mask, original, constructed, mini_batch, mode)
    units = mask.sum(-1).double() if mode == "token-mean" else torch.ones(len(mask), dtype=torch.float64)
    # verl divides a mini-batch's loss by its tokens (token-mean) or its rows, padding included (seq-mean)
    normaliser = torch.stack([units[torch.as_tensor(mini_batch == index)].sum() for index in mini_batch])
    weight = scales.double() / normaliser
    rows_c = torch.as_tensor(constructed)
    total_c = units[rows_c].sum()
    assert torch.allclose(weight[rows_c], torch.full((40,), 4 / total_c, dtype=torch.float64))
    assert float((weight * units)[rows_c].sum()) == pytest.approx(4.0)
    for index in range(4):
        rows_o = torch.as_tensor(original & (mini_batch == index))
        assert torch.allclose(weight[rows_o], 1 / units[rows_o].sum())
    assert float(ref_loss_share(mask, scales, constructed, mini_batch, mode)) == pytest.approx(1.0)


def test_verls_loss_over_the_step_is_equation_6():
    """The summed token-mean loss of verl's 4 optimizer steps (agg_loss per mini-batch, as the actor
    computes it) on any per-token loss l equals sum_m mean_{original in m}(l) + M * mean_{constructed}(l)."""
    from verl.trainer.ppo.core_algos import agg_loss

    mask, original, constructed, mini_batch = _balanced_step(seed=1)
    loss = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scales = separate_loss_scales(mask, original, constructed, mini_batch, "token-mean").double()
    verls = sum(
        float(agg_loss(loss[rows] * scales[rows].unsqueeze(-1), mask[rows], "token-mean"))
        for rows in (torch.as_tensor(mini_batch == index) for index in range(4))
    )
    papers = 0.0
    for index in range(4):
        rows = torch.as_tensor(original & (mini_batch == index))
        papers += float((loss[rows] * mask[rows]).sum() / mask[rows].sum())
    rows = torch.as_tensor(constructed)
    papers += 4 * float((loss[rows] * mask[rows]).sum() / mask[rows].sum())
    assert verls == pytest.approx(papers, rel=1e-6)  # the scales are float32


def test_ref_loss_share_shows_what_joint_normalisation_gives_l_ref():
    """Under joint normalisation (scales 1) L_ref weighs the mean constructed share of a mini-batch."""
    mask, original, constructed, mini_batch = _balanced_step()
    joint = ref_loss_share(mask, torch.ones(len(mask)), constructed, mini_batch, "token-mean")
    tokens = mask.sum(-1).double()
    shares = [
        float(tokens[torch.as_tensor(constructed & (mini_batch == index))].sum() / tokens[torch.as_tensor(mini_batch == index)].sum())
        for index in range(4)
    ]
    assert joint == pytest.approx(sum(shares) / 4)
    assert joint < 0.2
    assert math.isnan(ref_loss_share(mask, torch.ones(len(mask)), constructed, mini_batch, "token-sum"))
