"""The paper's loss L = L_GRPO + lambda * L_ref from verl's one normalisation: row scales, verl's
mini-batch split, and the gradient of verl's own policy loss against a hand computation."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
from verl.utils import tensordict_utils as tu
from verl.workers.config import ActorConfig

from recipe_tapo.loss_normalization import mini_batch_of_rows, separate_loss_scales

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
