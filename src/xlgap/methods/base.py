"""The Method protocol, Compose, and the statistics dynamic methods read.

A method is plain PyTorch: it knows parameters, losses and the training statistics, nothing about
CLIs, files or the Trainer. Any of these hooks may be implemented (the defaults do nothing):

- `reference_parameters(model)`: the names of the parameters whose pretrained values the method needs
  (L2, EWC); the trainer keeps one shared copy of them (`context.references`), taken before any
  method's `prepare` changed the model.
- `prepare(model, context)`: once before training, with the model on its device (perturb, freeze, ...).
- `param_groups(model)`: named parameter sets with static lr scales (`{name: ParamGroup}`).
- `lr_multipliers(step, stats)`: dynamic multipliers per group name for the update after `step`
  completed updates, computed from `stats` (the loss of every completed update).
- `penalty(model)`: an extra loss term, or None (checked for finiteness with the loss, logged per
  method in the probe records).
- `post_step(model, lr_of)`: after every optimizer step, with `lr_of(name)` the learning rate the step
  used for a parameter (decoupled updates, like AdamW's weight decay).
- `probe_values(step, stats)`: extra numbers to log with each probe; a method with training phases
  reports the phase of the update after `step` as `"phase"` (plots shade phase P1 from it).
- `report(stats)`: what the method did over the whole run (e.g. FSF's realised P1 share), for results.
- `cka_interval()`: how often (in updates) the trainer should measure each layer's CKA to the pretrained
  model on the training batch into `stats.cka`, or None (the default: never).
- `state_dict()` / `load_state_dict(state)`: whatever is needed to resume exactly; tensors may be part
  of it (checkpoints store them as safetensors beside the JSON).

A parameter's learning rate at an update is `schedule(step) x (product of the static scales of the
groups it belongs to) x (product of their dynamic multipliers)`; see `optimizer_groups`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import torch
from torch import nn

from xlgap.utils.errors import UserError
from xlgap.utils.options import check_fields
from xlgap.utils.registry import registrar


class MethodConflictError(UserError, ValueError):
    """Composed methods that claim the same parameter group."""


@dataclass
class TrainingStats:
    """What dynamic methods observe: the training loss of every completed optimizer update, in order,
    and, when a method asks for it, each layer's CKA to the pretrained model measured every few updates
    (`{"step": completed updates, "layers": [CKA of layer 0, 1, ...]}`, in order of step)."""

    losses: list[float] = field(default_factory=list)
    cka: list[dict[str, Any]] = field(default_factory=list)
    _: KW_ONLY
    penalties: list[dict[str, float]] = field(default_factory=list)
    """Every completed update's penalty of each method (`{"<index>.<name>": value}`), in order."""
    warmup_steps: int = 0
    """Updates of the learning-rate warm-up (set by the trainer from its schedule)."""
    total_steps: int | None = None
    """Updates of the whole run (set by the trainer), None when unknown."""
    language_losses: list[list[float]] = field(default_factory=list)
    """Multi-source runs: every completed update's loss of each source language (then `losses` is their mean)."""
    combiner_weights: list[list[float]] = field(default_factory=list)
    """Multi-source runs: every completed update's combiner weight of each source language (mean over layers)."""

    def state_dict(self) -> dict[str, Any]:
        """The statistics as plain lists (saved in checkpoints)."""
        return {
            "losses": list(self.losses),
            "cka": [dict(m) for m in self.cka],
            "penalties": [dict(p) for p in self.penalties],
            "language_losses": [list(x) for x in self.language_losses],
            "combiner_weights": [list(x) for x in self.combiner_weights],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore statistics saved by `state_dict` (the schedule fields come from the trainer)."""
        self.losses = [float(x) for x in state["losses"]]
        self.cka = [{"step": int(m["step"]), "layers": [float(v) for v in m["layers"]]} for m in state.get("cka", [])]
        self.penalties = [{k: float(v) for k, v in p.items()} for p in state.get("penalties", [])]
        self.language_losses = [[float(v) for v in x] for x in state.get("language_losses", [])]
        self.combiner_weights = [[float(v) for v in x] for x in state.get("combiner_weights", [])]


@dataclass(frozen=True)
class ParamGroup:
    """A named set of parameters (by name) with a static learning-rate scale."""

    params: tuple[str, ...]
    scale: float = 1.0


class ReferenceWeights:
    """One shared copy of the pretrained values of the parameters that methods need (L2's and EWC's
    anchor, the CKA reference), detached, in the training dtype, on the model's device."""

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None):
        self.tensors = dict(tensors or {})

    @classmethod
    def capture(cls, model: nn.Module, names: set[str]) -> ReferenceWeights:
        """Copy the named parameters of `model` (as they are now)."""
        return cls({n: p.detach().clone() for n, p in model.named_parameters() if n in names})

    def get(self, names: list[str] | set[str]) -> dict[str, torch.Tensor]:
        """The reference tensors of `names` (they must have been captured)."""
        missing = sorted(set(names) - set(self.tensors))
        if missing:
            raise KeyError(f"no reference copy of {missing[:3]}{'...' if len(missing) > 3 else ''}: declare them in reference_parameters")
        return {n: self.tensors[n] for n in names}


@dataclass
class PrepareContext:
    """What `Method.prepare` may use besides the model: the run's seed, the model's device, the
    tokenizer and the task, unlabelled text per language (`texts`), and the shared pretrained values of
    the parameters the methods asked for (`references`)."""

    seed: int = 0
    device: torch.device | None = None
    tokenizer: Any = None
    task: Any = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    references: ReferenceWeights = field(default_factory=ReferenceWeights)


class Method:
    """Base class of all methods: every hook is optional and does nothing by default.

    A registered method is a dataclass (`@register_method("<name>")` over `@dataclass(eq=False)`) whose
    fields are its options, declared with `option(default, help)`; `__post_init__` checks them against
    their annotations (a subclass that validates more calls `super().__post_init__()` first) and sets up
    the method's state."""

    name = "method"

    def __post_init__(self) -> None:
        check_fields(self)

    def reference_parameters(self, model: nn.Module) -> set[str]:
        """Names of the parameters whose pretrained values `prepare` will ask `context.references` for."""
        return set()

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Change the model once before training (default: nothing)."""

    def param_groups(self, model: nn.Module) -> dict[str, ParamGroup]:
        """Named parameter groups with static lr scales (default: none)."""
        return {}

    def lr_multipliers(self, step: int, stats: TrainingStats) -> dict[str, float]:
        """Dynamic lr multiplier per group name for the next update (default: none)."""
        return {}

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """An extra loss term added to the task loss (default: None)."""
        return None

    def post_step(self, model: nn.Module, lr_of: Any) -> None:
        """Act after each optimizer step; `lr_of(name)` is the lr the step used for a parameter (default: nothing)."""

    def probe_values(self, step: int, stats: TrainingStats) -> dict[str, Any]:
        """Extra values logged with each probe (default: none)."""
        return {}

    def cka_interval(self) -> int | None:
        """Updates between CKA measurements this method needs in `stats.cka` (default: None, none)."""
        return None

    def report(self, stats: TrainingStats) -> dict[str, Any]:
        """What the method did over a finished run, for results.json (default: nothing)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State needed to resume exactly (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by `state_dict`."""


METHODS: dict[str, type[Method]] = {}
"""Every registered method by its config name (filled by `register_method`)."""


register_method = registrar(METHODS, "method")
"""Class decorator: `@register_method("<name>")` registers a Method subclass under its config name
(`methods: - name: ...`), which also becomes its `name` attribute."""


class Compose(Method):
    """Several methods applied together: group scales and multipliers multiply, penalties add."""

    name = "compose"

    def __init__(self, *methods: Method):
        self.methods = list(methods)

    def reference_parameters(self, model: nn.Module) -> set[str]:
        return set().union(*(m.reference_parameters(model) for m in self.methods))

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        for method in self.methods:
            method.prepare(model, context)

    def param_groups(self, model: nn.Module) -> dict[str, ParamGroup]:
        groups: dict[str, ParamGroup] = {}
        for method in self.methods:
            for name, group in method.param_groups(model).items():
                if name in groups:
                    raise MethodConflictError(
                        f"methods: two composed methods define the parameter group '{name}'; compose them once"
                    )
                groups[name] = group
        return groups

    def lr_multipliers(self, step: int, stats: TrainingStats) -> dict[str, float]:
        merged: dict[str, float] = {}
        for method in self.methods:
            merged.update(method.lr_multipliers(step, stats))
        return merged

    def penalties(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Every composed method's penalty, by `<index>.<method name>`."""
        terms = ((f"{i}.{m.name}", m.penalty(model)) for i, m in enumerate(self.methods))
        return {name: term for name, term in terms if term is not None}

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        terms = list(self.penalties(model).values())
        return torch.stack(terms).sum() if terms else None

    def post_step(self, model: nn.Module, lr_of: Any) -> None:
        for method in self.methods:
            method.post_step(model, lr_of)

    def probe_values(self, step: int, stats: TrainingStats) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for method in self.methods:
            values.update(method.probe_values(step, stats))
        return values

    def cka_interval(self) -> int | None:
        wanted = [every for every in (m.cka_interval() for m in self.methods) if every]
        return min(wanted) if wanted else None

    def report(self, stats: TrainingStats) -> dict[str, Any]:
        reports: dict[str, Any] = {}
        for method in self.methods:
            reports.update(method.report(stats))
        return reports

    def state_dict(self) -> dict[str, Any]:
        return {str(i): m.state_dict() for i, m in enumerate(self.methods)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, method in enumerate(self.methods):
            method.load_state_dict(state.get(str(i), {}))


@dataclass(frozen=True)
class OptimizerGroupSpec:
    """One optimizer param group: the method groups its parameters belong to and its weight decay."""

    name: str
    params: tuple[str, ...]
    member_of: tuple[str, ...]
    scale: float
    weight_decay: float


def optimizer_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    groups: dict[str, ParamGroup],
    decay_names: set[str],
    weight_decay: float,
) -> list[OptimizerGroupSpec]:
    """Partition the trainable parameters into optimizer groups.

    Parameters with the same membership in the method groups and the same weight-decay flag share an
    optimizer group, in order of first appearance (deterministic, so optimizer states resume). Returns
    one spec per group; its static scale is the product of its method groups' scales.
    """
    membership: dict[str, list[str]] = {}
    for group_name, group in groups.items():
        for param_name in group.params:
            membership.setdefault(param_name, []).append(group_name)
    specs: dict[tuple[tuple[str, ...], bool], list[str]] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        key = (tuple(membership.get(name, ())), name in decay_names)
        specs.setdefault(key, []).append(name)
    out = []
    for (member_of, decay), params in specs.items():
        label = "+".join(member_of) if member_of else "rest"
        out.append(
            OptimizerGroupSpec(
                name=f"{label}/{'decay' if decay else 'no_decay'}",
                params=tuple(params),
                member_of=member_of,
                scale=math.prod(groups[g].scale for g in member_of),
                weight_decay=weight_decay if decay else 0.0,
            )
        )
    return out


def group_multiplier(member_of: tuple[str, ...], multipliers: dict[str, float]) -> float:
    """The dynamic multiplier of an optimizer group: the product over the method groups it belongs to."""
    return math.prod(multipliers.get(g, 1.0) for g in member_of)
