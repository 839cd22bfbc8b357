"""Deterministic subsets of examples: training subsets, few-shot sets, fixed dev subsets for probes.

A subset depends only on the number of examples, `n` and `seed`: each index gets a key from a
keyed BLAKE2 hash of (seed, index) and the `n` smallest keys win. Unlike `random.sample` or
NumPy generators, this is stable across Python and library versions and untouched by any global
random state; subsets are also nested (the `n` examples drawn with a seed are among the `m > n`
drawn with it). Chosen examples keep their original order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from typing import TypeVar

from xlgap.data.sources import SplitData

log = logging.getLogger(__name__)

T = TypeVar("T")


def subsample_indices(total: int, n: int, seed: int) -> list[int]:
    """Sorted indices of a deterministic subset of size min(n, total) of range(total)."""
    if n < 1:
        raise ValueError(f"subsample size must be at least 1, got {n}")
    if n >= total:
        return list(range(total))
    key = seed.to_bytes(16, "little", signed=True)

    def rank(index: int) -> bytes:
        return hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8, key=key).digest()

    return sorted(sorted(range(total), key=rank)[:n])


def subsample(examples: Sequence[T], n: int, seed: int, *, name: str = "examples") -> list[T]:
    """A deterministic subset of `n` examples (all of them, with a logged note, when there are
    fewer); `name` says what is sampled in that note."""
    indices = subsample_indices(len(examples), n, seed)
    if n > len(examples):
        log.warning("asked for %d %s but there are only %d; using all of them", n, name, len(examples))
    return [examples[i] for i in indices]


def subsample_split(split: SplitData, n: int, seed: int) -> SplitData:
    """A SplitData holding a deterministic subset of `split`, its origin noting the subset."""
    name = f"{split.task} {split.split}.{split.language} examples"
    examples = subsample(split.examples, n, seed, name=name)
    subset = f"{len(examples)} of {len(split.examples)} examples, seed {seed}"
    origin = dataclasses.replace(split.origin, subset=subset)
    return dataclasses.replace(split, examples=examples, origin=origin)
