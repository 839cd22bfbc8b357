"""Length-grouped batches whose order depends only on (seed, epoch), so a resumed run sees the same batches.

transformers' LengthGroupedSampler draws each epoch's order from the global RNG, whose state at the
start of an epoch cannot be reproduced by a run resumed in the middle of it. This subclass reseeds a
private generator from the seed and the epoch (accelerate calls `set_epoch` on the sampler).
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler with an order that is a function of (seed, epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of epoch `epoch`."""
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return super().__iter__()
