"""Multi-source training: one sub-batch and one gradient per source language at every update, combined
by a gradient combiner (`xlgap.combiners`) before clipping and the optimizer step.

Pieces, each used by `XlgapTrainer` when it is given a `MultiSource`:

- `LanguageBatchSampler`: the batches of a dataset that concatenates the languages' training sets; every
  batch holds B examples of each language in language order (B = the per-language batch of one process
  times the number of processes). An epoch is ceil(max_t N_t / B) updates, so every example of the largest
  language is seen once; a smaller language restarts a new order of its examples when it runs out. Each
  language's order is length-grouped and a function of (seed, epoch, language) only (train/sampler.py),
  so a resumed run sees the same batches.
- `GradientBuffer`: a preallocated float32 `[T, P]` matrix over the trainable parameters only (frozen
  ones take no memory), laid out layer by layer; each language's backward pass is added to its row.
  With the `.grad` the optimizer reads, gradients take (T + 1) x P floats. The per-layer Gram matrices
  are accumulated in float64 over chunks, so they are exact to float64 without a float64 copy.
- `MultiSource.micro_batch`: for every language, a forward pass on its rows of this process's share and
  `torch.autograd.grad` of its loss (summed over its labelled items, divided by the items of that language
  in the whole update, over every micro-batch and process: the loss of one large per-language batch).
  At the update's last micro-batch, `finish` all-reduces the buffer (every process then holds the full
  gradients, solves the same problem and writes the same combined direction d into `.grad`), calls the
  combiner, and records the per-language losses and the weights.

Why not one dense Jacobian per language held by a multi-task library (LibMTL), or TorchJD's module-wise
Gramian: LF-MLF needs d = sum_t w_t g_t itself (and g_t . g_bar), so either the T gradients are kept or a
second, weighted backward pass is paid; keeping them over the trainable parameters costs T x P floats
(docs/multi_source.md gives the sizes), the Gram matrices are then one pass over the buffer, and no
second backward is needed. Every process sees the whole global batch (the data loader is not sharded)
and takes its rows, so a run on N processes computes the gradients of the same global batch as a
1-process run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xlgap.combiners import Combiner, UpdateGradients
from xlgap.models.anatomy import model_anatomy
from xlgap.train.sampler import EpochSeededLengthGroupedSampler

CHUNK = 1 << 20
"""Values per chunk when the Gram matrices are accumulated in float64."""


class LanguageBatchSampler:
    """Batches of B examples per language (language order) over concatenated per-language datasets."""

    def __init__(self, lengths: list[list[int]], batch_per_language: int, seed: int, group_by_length: bool = True):
        self.lengths = lengths
        self.batch = batch_per_language
        self.seed = seed
        self.group_by_length = group_by_length
        self.offsets = [sum(len(x) for x in lengths[:t]) for t in range(len(lengths))]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the orders of epoch `epoch`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(max(len(x) for x in self.lengths) / self.batch)

    def _order(self, language: int, needed: int) -> list[int]:
        """`needed` indices of one language: its orders of (epoch, round 0, 1, ...) one after the other."""
        out: list[int] = []
        lengths = self.lengths[language]
        rounds = 0
        while len(out) < needed:
            seed = (self.seed * 1_000 + language) * 1_000 + rounds
            if self.group_by_length:
                sampler = EpochSeededLengthGroupedSampler(self.batch, lengths, seed)
                sampler.set_epoch(self.epoch)
                out += list(sampler)
            else:
                generator = torch.Generator().manual_seed(seed * 100_003 + self.epoch)
                out += torch.randperm(len(lengths), generator=generator).tolist()
            rounds += 1
        return out[:needed]

    def __iter__(self) -> Iterator[list[int]]:
        steps = len(self)
        orders = [self._order(t, steps * self.batch) for t in range(len(self.lengths))]
        for k in range(steps):
            yield [self.offsets[t] + i for t, order in enumerate(orders) for i in order[k * self.batch : (k + 1) * self.batch]]


class GradientBuffer:
    """Per-language gradients `[T, P]` over the trainable parameters, in layer order."""

    def __init__(self, model: nn.Module, languages: int):
        anatomy = model_anatomy(model)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        layer_of = {n: _layer_name(anatomy.params[n]) for n, _ in named}
        order = _layer_order(layer_of.values())
        named.sort(key=lambda item: order.index(layer_of[item[0]]))
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.layers = tuple(order)
        self.spans: list[tuple[int, int]] = []  # [start, end) of each parameter
        self.layer_spans: list[tuple[int, int]] = []
        start = 0
        for layer in order:
            first = start
            for n, p in named:
                if layer_of[n] == layer:
                    self.spans.append((start, start + p.numel()))
                    start += p.numel()
            self.layer_spans.append((first, start))
        device = self.params[0].device if self.params else torch.device("cpu")
        self.matrix = torch.zeros(languages, start, dtype=torch.float32, device=device)

    @property
    def size(self) -> int:
        """P, the trainable values."""
        return self.matrix.shape[1]

    def zero(self) -> None:
        """Clear every language's gradient."""
        self.matrix.zero_()

    def add(self, language: int, grads: tuple[torch.Tensor | None, ...]) -> None:
        """Add one backward pass's gradients (in `params` order) to a language's row."""
        row = self.matrix[language]
        for (start, end), grad in zip(self.spans, grads, strict=True):
            if grad is not None:
                row[start:end] += grad.reshape(-1).float()

    def layer_grams(self) -> torch.Tensor:
        """`[L, T, T]` float64 Gram matrices, one per layer."""
        t = self.matrix.shape[0]
        grams = torch.zeros(len(self.layer_spans), t, t, dtype=torch.float64)
        for layer, (start, end) in enumerate(self.layer_spans):
            for first in range(start, end, CHUNK):
                chunk = self.matrix[:, first : min(first + CHUNK, end)].double()
                grams[layer] += (chunk @ chunk.T).cpu()
        return grams

    def dot(self, vector: torch.Tensor) -> torch.Tensor:
        """The products of every language's gradient with a flat vector, float64 `[T]`."""
        out = torch.zeros(self.matrix.shape[0], dtype=torch.float64)
        for first in range(0, self.size, CHUNK):
            chunk = slice(first, min(first + CHUNK, self.size))
            out += (self.matrix[:, chunk].double() @ vector[chunk].to(self.matrix.device).double()).cpu()
        return out

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """d = sum_t w_t g_t (per layer when `weights` is `[L, T]`), flat float32."""
        w = weights.to(torch.float32).to(self.matrix.device)
        if w.dim() == 1:
            return w @ self.matrix
        out = torch.empty(self.size, dtype=torch.float32, device=self.matrix.device)
        for layer, (start, end) in enumerate(self.layer_spans):
            out[start:end] = w[layer] @ self.matrix[:, start:end]
        return out

    def write_grad(self, direction: torch.Tensor) -> None:
        """Put `direction` into the parameters' `.grad` (replacing what was there)."""
        for (start, end), param in zip(self.spans, self.params, strict=True):
            param.grad = direction[start:end].view_as(param).to(param.dtype).clone()


def _layer_name(info: Any) -> str:
    return str(info.layer) if info.layer is not None else info.component


def _layer_order(names: Any) -> list[str]:
    """Embeddings first, then the blocks by index, then everything else (head, ...) by name."""
    unique = set(names)
    blocks = sorted((n for n in unique if n.isdigit()), key=int)
    rest = sorted(n for n in unique if not n.isdigit() and n != "embeddings")
    return (["embeddings"] if "embeddings" in unique else []) + blocks + rest


@dataclass
class MultiSource:
    """How a multi-source run combines its languages: the languages (in training-set order), the examples
    of each in the concatenated training set, the per-language batch of one process, and the combiner."""

    languages: list[str]
    sizes: list[int]
    batch_per_language: int
    combiner: Combiner
    buffer: GradientBuffer | None = None
    items: list[float] = field(default_factory=list)
    """Labelled items of each language in the current update (all micro-batches, all processes)."""
    losses: torch.Tensor | None = None
    """Each language's loss over the current update so far (this process's share)."""

    def rows(self, language: int, rank: int, world: int) -> slice:
        """This process's rows of `language` in a collated global batch."""
        size = self.batch_per_language
        start = language * size * world + rank * size
        return slice(start, start + size)

    def count_items(self, batches: list[dict[str, Any]], world: int) -> None:
        """Count each language's labelled items over the update's micro-batches (the global batches)."""
        t = len(self.languages)
        self.items = [0.0] * t
        for batch in batches:
            labels = batch["labels"]
            for language in range(t):
                rows = slice(language * self.batch_per_language * world, (language + 1) * self.batch_per_language * world)
                self.items[language] += float(labels[rows].ne(-100).sum())

    def start_update(self, model: nn.Module) -> None:
        """Allocate the buffer once and clear it for a new update."""
        if self.buffer is None:
            self.buffer = GradientBuffer(model, len(self.languages))
        self.buffer.zero()
        self.losses = torch.zeros(len(self.languages), dtype=torch.float64)

    def add_language(self, language: int, loss: torch.Tensor) -> None:
        """Back-propagate one language's (already normalised) loss share into its row."""
        assert self.buffer is not None and self.losses is not None
        grads = torch.autograd.grad(loss, self.buffer.params, allow_unused=True)
        self.buffer.add(language, grads)
        self.losses[language] += float(loss.detach())

    def reduce_update(self, reduce: Any) -> torch.Tensor:
        """Sum the gradients and losses over processes (`reduce(tensor)` sums in place); returns the
        update's loss of each language (float64, CPU)."""
        assert self.buffer is not None and self.losses is not None
        reduce(self.buffer.matrix)
        losses = self.losses.to(self.buffer.matrix.device)
        reduce(losses)
        self.losses = None
        return losses.cpu()

    def combine_update(self, step: int, seed: int) -> torch.Tensor:
        """Ask the combiner for the weights of update `step + 1`, write d into `.grad`; returns the weights."""
        assert self.buffer is not None
        grads = UpdateGradients(self.buffer.layer_grams(), step, seed, self.buffer.dot, self.buffer.layers)
        weights = self.combiner.weights(grads)
        direction = self.buffer.combine(weights)
        self.combiner.applied(direction)
        self.buffer.write_grad(direction)
        return weights

    def gradient_floats(self) -> int:
        """Floats held for gradients: T x P in the buffer plus P in `.grad`."""
        return 0 if self.buffer is None else (len(self.languages) + 1) * self.buffer.size


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """A sub-batch cut to its longest row (the collator padded the rows of every language together);
    unchanged unless the padding is on the right."""
    mask = batch.get("attention_mask")
    if not torch.is_tensor(mask) or mask.dim() != 2:
        return batch
    length = mask.shape[1]
    width = int(mask.sum(1).max())
    if width == length or mask[:, width:].any():
        return batch
    return {k: v[:, :width] if torch.is_tensor(v) and v.dim() >= 2 and v.shape[1] == length else v for k, v in batch.items()}
