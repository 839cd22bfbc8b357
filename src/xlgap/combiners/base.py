"""The gradient-combiner protocol: one update's per-language gradients in, weights out.

Multi-source fine-tuning (Mao et al., NeurIPS 2022) computes one gradient g_t per source language at
every update and applies a combination of them. Every combiner xlgap offers (Uniform, LF-MLF, MGDA,
PCGrad, GradVac) chooses that combination from inner products alone, so a combiner sees the
`UpdateGradients` of an update (the per-layer Gram matrices, and `dot(v)` for the products of every g_t
with a vector it keeps) and returns weights: `[T]` (one per language) or `[L, T]` (one per layer and
language, GradVac). The trainer component applies d = sum_t w_t g_t (per layer) and tells the combiner
with `applied(d)`. This follows TorchJD's "weighting of a Gramian" design: a combiner never holds T full
gradients, and its tests are small hand-worked Gram matrices.

Weights are on the scale of a mean: they sum to 1 for Uniform, LF-MLF and MGDA (the simplex of Mao et
al.'s Eq. 1), and PCGrad and GradVac return the mean of their corrected gradients (Yu et al. and Wang
et al. sum them; the mean makes all five agree when no two gradients conflict, so that a comparison is
not a comparison of step sizes under gradient clipping).

A combiner is a dataclass whose fields are its options, registered with `@register_combiner("<name>")`
over `@dataclass(eq=False)`; `build_combiner` makes one from the
config (`train.multi_source.combiner` and its options).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from xlgap.utils.errors import UserError
from xlgap.utils.options import check_fields
from xlgap.utils.registry import build_registered, registrar


class CombinerError(UserError, ValueError):
    """An unknown combiner or option, or a combination that failed where the run was told to stop."""


@dataclass(frozen=True)
class UpdateGradients:
    """What a combiner sees of one update's per-language gradients g_1 .. g_T."""

    layer_grams: torch.Tensor
    """`[L, T, T]` float64: G^l_ij = g_i . g_j restricted to layer l's parameters (layers as in `layers`)."""
    step: int
    """Completed updates before this one."""
    seed: int
    """The run's seed (random orders are drawn from (seed, step), so a resumed run draws the same)."""
    dot: Callable[[torch.Tensor], torch.Tensor]
    """`dot(v)`: the products g_t . v for every t (float64 `[T]`), v flat over the trainable parameters."""
    layers: tuple[str, ...] = ()
    """The names of the L layers (embeddings, 0, 1, ..., head)."""

    @property
    def gram(self) -> torch.Tensor:
        """The Gram matrix of the whole gradients, `[T, T]` float64."""
        return self.layer_grams.sum(0)

    @property
    def languages(self) -> int:
        """T, the number of source languages."""
        return self.layer_grams.shape[-1]


class Combiner:
    """Turns one update's per-language gradients into weights (see the module docstring)."""

    name: ClassVar[str] = "combiner"

    def __post_init__(self) -> None:
        check_fields(self)

    def weights(self, grads: UpdateGradients) -> torch.Tensor:
        """The weights of this update: float64 `[T]` or `[L, T]`."""
        raise NotImplementedError

    def applied(self, direction: torch.Tensor) -> None:
        """Called with the combined gradient d that the optimizer is about to use (flat, float32)."""

    def report(self) -> dict[str, Any]:
        """What the combiner did over the run (e.g. failed solves), for results.json."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors allowed)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""


COMBINERS: dict[str, type[Combiner]] = {}
"""Every registered combiner by its config name (filled by `register_combiner`)."""


register_combiner = registrar(COMBINERS, "combiner")
"""Class decorator: `@register_combiner("<name>")` registers a Combiner subclass under its config name
(`train.multi_source.combiner`)."""


def build_combiner(name: str, options: dict[str, Any] | None = None, where: str = "train.multi_source") -> Combiner:
    """The combiner `name` with `options`; an unknown name or option is a CombinerError naming `where`."""
    return build_registered(COMBINERS, name, dict(options or {}), CombinerError, "combiner", f"{where}.combiner", f"{where}.options.")


def order_seed(seed: int, step: int) -> int:
    """The seed of the random order drawn at update `step` of a run seeded `seed`."""
    digest = hashlib.blake2b(f"combiner order {seed} {step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Run a block that draws from torch's global CPU generator with that generator seeded `seed`, and
    leave the global generator as it was (dropout and the data order do not see the draw)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
