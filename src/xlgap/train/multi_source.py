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
  Trainable word embeddings are held apart as the rows each language touched (`SparseRows`: a batch
  touches a few thousand of XLM-R's 250k rows, 69% of its parameters), so gradients take T x P' + P
  floats (P' without the embedding matrix) instead of (T + 1) x P. The per-layer Gram matrices are
  accumulated in float64 over chunks, so they are exact to float64 without a float64 copy.
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


class SparseRows:
    """One language's gradient of the word embeddings as the rows it touched: a batch uses a few thousand
    of XLM-R's 250k rows (69% of its parameters), every other row's gradient is exactly zero."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # sorted unique row indices
        self.values: torch.Tensor | None = None  # [rows, width] float32

    def add(self, grad: torch.Tensor) -> None:
        """Add a dense gradient of the embedding matrix (its non-zero rows)."""
        touched = grad.abs().amax(1).nonzero().squeeze(1)
        self.merge(touched, grad[touched].float())

    def merge(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """Add rows (indices may repeat or overlap the held ones: they are summed)."""
        if self.rows is not None:
            rows, values = torch.cat([self.rows, rows]), torch.cat([self.values, values])
        unique, inverse = torch.unique(rows, sorted=True, return_inverse=True)
        self.rows = unique
        self.values = torch.zeros(len(unique), values.shape[1], dtype=torch.float32, device=values.device).index_add_(0, inverse, values)

    def dot(self, other: SparseRows) -> float:
        """The inner product with another language's rows (float64)."""
        if self.rows is None or other.rows is None:
            return 0.0
        common, mine = torch.isin(self.rows, other.rows), torch.isin(other.rows, self.rows)
        return float((self.values[common].double() * other.values[mine].double()).sum())

    def floats(self) -> int:
        """Floats held."""
        return 0 if self.values is None else self.values.numel()


class GradientBuffer:
    """Per-language gradients over the trainable parameters: a dense float32 `[T, P]` matrix in layer
    order, and for trainable word embeddings (`sparse_embeddings`) the rows each language touched. A flat
    vector over "the trainable parameters" (`dot`, `combine`) is the dense part followed by the embedding
    matrix."""

    def __init__(self, model: nn.Module, languages: int, sparse_embeddings: bool = True):
        anatomy = model_anatomy(model)
        try:
            embedding = model.get_input_embeddings().weight
        except (AttributeError, NotImplementedError):
            embedding = None
        self.sparse = embedding if sparse_embeddings and embedding is not None and embedding.requires_grad else None
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p is not self.sparse]
        layer_of = {n: _layer_name(anatomy.params[n]) for n, _ in named}
        order = _layer_order([*layer_of.values(), *(["embeddings"] if self.sparse is not None else [])])
        named.sort(key=lambda item: order.index(layer_of[item[0]]))
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.layers = tuple(order)
        self.spans: list[tuple[int, int]] = []  # [start, end) of each dense parameter
        self.layer_spans: list[tuple[int, int]] = []
        start = 0
        for layer in order:
            first = start
            for n, p in named:
                if layer_of[n] == layer:
                    self.spans.append((start, start + p.numel()))
                    start += p.numel()
            self.layer_spans.append((first, start))
        self.dense_size = start
        device = (self.params or [self.sparse])[0].device
        self.matrix = torch.zeros(languages, start, dtype=torch.float32, device=device)
        self.rows = [SparseRows() for _ in range(languages)]

    @property
    def size(self) -> int:
        """P, the trainable values (dense part and embedding matrix)."""
        return self.dense_size + (self.sparse.numel() if self.sparse is not None else 0)

    @property
    def backward_inputs(self) -> list[torch.Tensor]:
        """The parameters whose gradients one language's backward pass computes (`add` takes them in this order)."""
        return [*self.params, *([self.sparse] if self.sparse is not None else [])]

    def zero(self) -> None:
        """Clear every language's gradient."""
        self.matrix.zero_()
        self.rows = [SparseRows() for _ in self.rows]

    def add(self, language: int, grads: tuple[torch.Tensor | None, ...]) -> None:
        """Add one backward pass's gradients (in `backward_inputs` order) to a language's gradient."""
        row = self.matrix[language]
        for (start, end), grad in zip(self.spans, grads[: len(self.spans)], strict=True):
            if grad is not None:
                row[start:end] += grad.reshape(-1).float()
        if self.sparse is not None and grads[-1] is not None:
            self.rows[language].add(grads[-1])

    def all_reduce(self, world: int) -> None:
        """Sum every language's gradient over the processes (dense: one all-reduce; rows: gathered)."""
        if world <= 1:
            return
        torch.distributed.all_reduce(self.matrix)
        if self.sparse is None:
            return
        width = self.sparse.shape[1]
        for held in self.rows:
            rows = held.rows if held.rows is not None else torch.zeros(0, dtype=torch.long, device=self.matrix.device)
            values = held.values if held.values is not None else torch.zeros(0, width, device=self.matrix.device)
            sizes = [torch.zeros(1, dtype=torch.long, device=rows.device) for _ in range(world)]
            torch.distributed.all_gather(sizes, torch.tensor([len(rows)], device=rows.device))
            longest = int(max(s.item() for s in sizes))
            padded_rows = torch.cat([rows, rows.new_zeros(longest - len(rows))])
            padded_values = torch.cat([values, values.new_zeros(longest - len(rows), width)])
            all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
            all_values = [torch.empty_like(padded_values) for _ in range(world)]
            torch.distributed.all_gather(all_rows, padded_rows)
            torch.distributed.all_gather(all_values, padded_values)
            merged = SparseRows()
            for size, r, v in zip(sizes, all_rows, all_values, strict=True):
                if int(size.item()):
                    merged.merge(r[: int(size.item())], v[: int(size.item())])
            held.rows, held.values = merged.rows, merged.values

    def layer_grams(self) -> torch.Tensor:
        """`[L, T, T]` float64 Gram matrices, one per layer (the embedding rows count in `embeddings`)."""
        t = self.matrix.shape[0]
        grams = torch.zeros(len(self.layer_spans), t, t, dtype=torch.float64)
        for layer, (start, end) in enumerate(self.layer_spans):
            for first in range(start, end, CHUNK):
                chunk = self.matrix[:, first : min(first + CHUNK, end)].double()
                grams[layer] += (chunk @ chunk.T).cpu()
        if self.sparse is not None:
            layer = self.layers.index("embeddings")
            for i in range(t):
                for j in range(i, t):
                    grams[layer, i, j] += self.rows[i].dot(self.rows[j])
                    grams[layer, j, i] = grams[layer, i, j]
        return grams

    def dot(self, vector: torch.Tensor) -> torch.Tensor:
        """The products of every language's gradient with a flat vector, float64 `[T]`."""
        out = torch.zeros(self.matrix.shape[0], dtype=torch.float64)
        vector = vector.to(self.matrix.device)
        for first in range(0, self.dense_size, CHUNK):
            chunk = slice(first, min(first + CHUNK, self.dense_size))
            out += (self.matrix[:, chunk].double() @ vector[chunk].double()).cpu()
        if self.sparse is not None:
            embedding = vector[self.dense_size :].view_as(self.sparse)
            for t, held in enumerate(self.rows):
                if held.rows is not None:
                    out[t] += float((embedding[held.rows].double() * held.values.double()).sum())
        return out

    def combine(self, weights: torch.Tensor) -> torch.Tensor:
        """d = sum_t w_t g_t (per layer when `weights` is `[L, T]`), flat float32 over every trainable value."""
        w = weights.to(torch.float32).to(self.matrix.device)
        out = torch.zeros(self.size, dtype=torch.float32, device=self.matrix.device)
        if w.dim() == 1:
            out[: self.dense_size] = w @ self.matrix
        else:
            for layer, (start, end) in enumerate(self.layer_spans):
                out[start:end] = w[layer] @ self.matrix[:, start:end]
        if self.sparse is not None:
            embedding = out[self.dense_size :].view_as(self.sparse)
            w_embedding = w if w.dim() == 1 else w[self.layers.index("embeddings")]
            for t, held in enumerate(self.rows):
                if held.rows is not None:
                    embedding.index_add_(0, held.rows, w_embedding[t] * held.values)
        return out

    def write_grad(self, direction: torch.Tensor) -> None:
        """Make `direction` the parameters' `.grad` (views into it where the dtypes agree)."""
        for (start, end), param in zip(self.spans, self.params, strict=True):
            param.grad = direction[start:end].view_as(param).to(param.dtype)
        if self.sparse is not None:
            self.sparse.grad = direction[self.dense_size :].view_as(self.sparse).to(self.sparse.dtype)

    def gradient_floats(self) -> int:
        """Floats held for gradients: the dense rows, the embedding rows, and the combined direction."""
        return self.matrix.numel() + sum(r.floats() for r in self.rows) + self.size


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
    sparse_embeddings: bool = True
    """Hold trainable word embeddings' gradients as touched rows (False: dense, as every other parameter)."""
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
            self.buffer = GradientBuffer(model, len(self.languages), self.sparse_embeddings)
        self.buffer.zero()
        self.losses = torch.zeros(len(self.languages), dtype=torch.float64)

    def add_language(self, language: int, loss: torch.Tensor) -> None:
        """Back-propagate one language's (already normalised) loss share into its row."""
        assert self.buffer is not None and self.losses is not None
        grads = torch.autograd.grad(loss, self.buffer.backward_inputs, allow_unused=True)
        self.buffer.add(language, grads)
        self.losses[language] += float(loss.detach())

    def reduce_update(self, world: int) -> torch.Tensor:
        """Sum the gradients and losses over the `world` processes; returns the update's loss of each
        language (float64, CPU)."""
        assert self.buffer is not None and self.losses is not None
        self.buffer.all_reduce(world)
        losses = self.losses.to(self.buffer.matrix.device)
        if world > 1:
            torch.distributed.all_reduce(losses)
        self.losses = None
        return losses.cpu()

    def combine_update(self, step: int, seed: int, world: int = 1) -> torch.Tensor:
        """Ask the combiner for the weights of update `step + 1`, write d into `.grad`; returns the weights."""
        assert self.buffer is not None
        grads = UpdateGradients(self.buffer.layer_grams(), step, seed, self.buffer.dot, self.buffer.layers)
        weights = self.combiner.weights(grads)
        if world > 1:
            # Every process solved the same problem (its combiner state stays in step); the main process's
            # weights are the ones applied, so no rounding difference between machines can split the runs.
            weights = weights.to(self.buffer.matrix.device)
            torch.distributed.broadcast(weights, src=0)
            weights = weights.cpu()
        direction = self.buffer.combine(weights)
        self.combiner.applied(direction)
        self.buffer.write_grad(direction)
        return weights

    def gradient_floats(self) -> int:
        """Floats held for gradients at the last update (see `GradientBuffer.gradient_floats`)."""
        return 0 if self.buffer is None else self.buffer.gradient_floats()


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
