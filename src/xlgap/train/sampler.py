"""Length-grouped batches whose order depends only on (seed, epoch), in a shuffled order within each
megabatch.

transformers' LengthGroupedSampler draws each epoch's order from the global RNG, whose state at the
start of an epoch cannot be reproduced by a run resumed in the middle of it: this subclass reseeds a
private generator from the seed and the epoch (accelerate calls `set_epoch` on the sampler).

It also shuffles the order of the batches inside each megabatch. transformers sorts a megabatch (50
batches) longest first, so consecutive batches go from long sentences to short ones and the per-update
training loss trends with the position inside a megabatch (the FSF review measured a correlation of -0.29
between loss and position on UD POS; bench/loss_trend.py measures it before and after). A
loss-driven method such as FSF's phase detector compares window means, which that trend biases
whenever a window is not a multiple of the megabatch. Shuffling whole batches keeps each batch's
members, hence the padding saved, and removes the trend. The last, possibly smaller, batch of the
epoch stays last, so that the data loader cuts the same batches.
"""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler


def megabatch_size(n: int, batch_size: int) -> int:
    """The megabatch length transformers' `get_length_grouped_indices` uses for `n` examples."""
    return max(min(n // (batch_size * 4), 50), 1) * batch_size


def shuffle_batches(indices: list[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """`indices` cut into batches of `batch_size`, the full batches of each megabatch in a random order."""
    mega = megabatch_size(len(indices), batch_size)
    out: list[int] = []
    for start in range(0, len(indices), mega):
        chunk = indices[start : start + mega]
        batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        full = [b for b in batches if len(b) == batch_size]
        order = torch.randperm(len(full), generator=generator).tolist()
        out += [i for k in order for i in full[k]] + [i for b in batches if len(b) < batch_size for i in b]
    return out


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' LengthGroupedSampler with an order that is a function of (seed, epoch), its batches
    shuffled within each megabatch."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of epoch `epoch`."""
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        grouped = list(super().__iter__())
        return iter(shuffle_batches(grouped, self.batch_size, self.generator))
