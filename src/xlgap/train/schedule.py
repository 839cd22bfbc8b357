"""Per-group learning rates: the Trainer's schedule times each group's dynamic multiplier.

Transformers builds its schedules (linear, cosine, constant_with_warmup, ...) as a `LambdaLR` with one
function of the step for every group. This module keeps that function and multiplies it, per group,
by the multiplier a method asks for at that step, so warm-up, decay and `lr_scheduler_type` behave
exactly as in the Trainer. The static scales live in the groups' base learning rates.
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from xlgap.config import ConfigError


def with_multipliers(
    optimizer: Optimizer,
    base: LambdaLR,
    multipliers: Callable[[int], list[float]],
) -> LambdaLR:
    """A LambdaLR whose factor for group i at step s is `base`'s factor times `multipliers(s)[i]`.

    `multipliers(s)` is called once per step (not once per group) and must return one value per
    optimizer group; `s` is the number of completed updates, as in every LambdaLR.
    """
    if not isinstance(base, LambdaLR):
        raise ConfigError(
            f"dynamic learning-rate multipliers need a LambdaLR-based schedule, got {type(base).__name__}; "
            "choose a train.scheduler such as linear, cosine or constant_with_warmup"
        )
    cache: dict[int, list[float]] = {}

    def current(step: int) -> list[float]:
        if step not in cache:
            cache.clear()
            values = multipliers(step)
            if len(values) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} multipliers, got {len(values)}")
            cache[step] = values
        return cache[step]

    def factor(index: int) -> Callable[[int], float]:
        schedule = base.lr_lambdas[index]
        return lambda step: schedule(step) * current(step)[index]

    return LambdaLR(optimizer, [factor(i) for i in range(len(optimizer.param_groups))])
