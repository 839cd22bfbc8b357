"""Length-grouped batches: a function of (seed, epoch), the same batches as transformers' grouping, in a
shuffled order within each megabatch, the short last batch kept last."""

from __future__ import annotations

import random

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from xlgap.train.sampler import EpochSeededLengthGroupedSampler, megabatch_size, shuffle_batches


def lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(3, 120) for _ in range(n)]


def batches(order, size):
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSeededLengthGroupedSampler(32, lengths(), seed=3), EpochSeededLengthGroupedSampler(32, lengths(), seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    assert sorted(a) == list(range(1000))


def test_same_batches_as_transformers_grouping_in_another_order():
    size, values = 32, lengths()
    ours = EpochSeededLengthGroupedSampler(size, values, seed=5)
    reference = LengthGroupedSampler(size, lengths=values, generator=torch.Generator().manual_seed(5 * 100_003))
    mine, theirs = batches(list(ours), size), batches(list(reference), size)
    assert sorted(map(sorted, mine)) == sorted(map(sorted, theirs))  # the padding saved is the same
    assert mine != theirs
    assert mine[-1] == theirs[-1] and len(mine[-1]) == 1000 % size  # the short batch stays last


def test_batch_lengths_no_longer_fall_within_a_megabatch():
    size, values = 32, lengths(3200)
    mega = megabatch_size(len(values), size) // size  # 25 batches per megabatch here
    grouped = list(LengthGroupedSampler(size, lengths=values, generator=torch.Generator().manual_seed(1)))
    shuffled = shuffle_batches(grouped, size, torch.Generator().manual_seed(2))

    def correlation(order):
        longest = [max(values[i] for i in b) for b in batches(order, size)]
        position = [k % mega for k in range(len(longest))]
        return float(torch.corrcoef(torch.tensor([position, longest], dtype=torch.float))[0, 1])

    assert correlation(grouped) < -0.8  # sorted longest first inside every megabatch
    assert abs(correlation(shuffled)) < 0.2
