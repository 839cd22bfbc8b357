"""The task-kind contract: what a kind of task (tagging, classification, span extraction, ...) owns.

A kind is one module with one `TaskKind` subclass, registered with `@register_kind`. It owns:

- reading: `read_file` (a file of the task's own format) and `from_hub` (rows of a hub dataset);
- encoding: `encode` (examples -> model inputs, training labels and alignment columns) and `collator`;
- the model: `head` (a transformers Auto class) and `model_config` (its label settings), and `loss`;
- evaluation: `gather` (per batch, on the device: logits -> the few numbers decoding needs),
  `decode` (all gathered numbers of a split -> one prediction per example), `score` (predictions ->
  metrics, with the whole split at hand: examples, ids, word ids or offsets, labels), and
  `format_predictions`, `format_examples` and `score_files` (XTREME's submission layout, the task's
  own file format, and the official scripts' scoring).

Everything task-specific downstream (the trainer, probes, runs, `xlgap score`) goes through these
methods, so a fourth kind is one new module and one import in `xlgap/kinds/__init__.py`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import DataCollatorWithPadding

from xlgap.data.formats import Example, ReadResult
from xlgap.data.sources import Located, Origin, SplitData, locate_split
from xlgap.data.tasks import TaskSpec, get_task
from xlgap.models.load import load_model

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class EncodeSettings:
    """How examples become model inputs and predictions: the window length and, for extractive QA, the
    window stride and the longest question kept (in subword tokens), the start/end candidates decoding
    considers per window (`n_best`) and the longest answer (in tokens)."""

    max_length: int
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30


@dataclass
class EncodedSplit:
    """A tokenized split: one row per model input (a sentence, a window of a long sentence, a window of
    a QA context), with the examples it came from.

    `columns` holds, per row, the model inputs, `labels` (for training), `length`, `example_index` (the
    position of the row's example in `examples`) and the kind's alignment columns (word indices for
    tagging, character offsets for QA). `stats` counts what encoding did (windows, truncation, ...).
    """

    task: TaskSpec
    language: str
    split: str
    examples: list[Example]
    columns: dict[str, list]
    stats: dict[str, int]
    origin: Origin
    pad_id: int
    settings: EncodeSettings
    skipped: Counter[str] = field(default_factory=Counter)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.columns["length"])

    @property
    def tokens(self) -> int:
        """Subword tokens over all rows (padding excluded)."""
        return int(sum(self.columns["length"]))

    @property
    def inputs(self) -> tuple[str, ...]:
        """The model input columns this split has (token_type_ids only for tokenizers that make them)."""
        return tuple(name for name in MODEL_INPUTS if name in self.columns)

    def dataset(self) -> datasets.Dataset:
        """The rows as a `datasets.Dataset` of model inputs, `labels` and `length`, for training."""
        if "dataset" not in self.cache:
            keep = (*self.inputs, "labels", "length")
            self.cache["dataset"] = datasets.Dataset.from_dict({k: self.columns[k] for k in keep})
        return self.cache["dataset"]

    def describe(self) -> dict[str, Any]:
        """Provenance and counts, as results.json records them."""
        skipped = {"skipped": dict(self.skipped)} if self.skipped else {}
        return {"origin": self.origin.to_dict(), **self.stats, **skipped}


@dataclass
class EvalBatch:
    """One evaluation batch: the row indices of the split, the padded model inputs (tensors) and the
    padded alignment columns (NumPy, padded with -1)."""

    rows: np.ndarray
    inputs: dict[str, torch.Tensor]
    columns: dict[str, np.ndarray]


class TaskKind(ABC):
    """One kind of task; see the module docstring. Subclasses set `name` and `head`."""

    name: ClassVar[str]
    head: ClassVar[type]
    """The transformers Auto class of the model head (AutoModelForTokenClassification, ...)."""
    default_max_length: ClassVar[int] = 128
    predictions_suffix: ClassVar[str] = "tsv"
    alignment: ClassVar[tuple[str, ...]] = ()
    """Ragged per-token columns evaluation needs besides the model inputs (padded with -1)."""

    # ---- reading ----

    @abstractmethod
    def read_file(self, task: TaskSpec, path: Path, language: str) -> ReadResult:
        """Read one file in the task's own format."""

    @abstractmethod
    def from_hub(
        self, task: TaskSpec, rows: datasets.Dataset, columns: tuple[str, ...], source: str
    ) -> tuple[list[Example], Counter[str]]:
        """Examples from the rows of a hub dataset (`columns` as the task's HubLayout names them), and
        what was skipped by design."""

    def load(self, located: Located) -> SplitData:
        """Read what `locate_split` found into SplitData."""
        task = located.task
        if located.rows is not None:
            examples, skipped = self.from_hub(task, located.rows, located.columns, str(located.origin))
            if skipped:
                log.warning("%s: skipped %s", located.origin, dict(skipped))
        else:
            examples, skipped = [], Counter()
            for path in located.paths:
                result = self.read_file(task, path, located.language)
                examples += result.examples
                skipped += result.skipped
        return SplitData(task.name, located.language, located.split, examples, located.origin, skipped)

    # ---- encoding and training ----

    @abstractmethod
    def text_of(self, example: Example) -> str:
        """The example's raw text, as unlabelled text of its language (for methods that read text)."""

    @abstractmethod
    def encode(
        self, task: TaskSpec, examples: Sequence[Example], tokenizer: Any, settings: EncodeSettings
    ) -> tuple[dict[str, list], dict[str, int]]:
        """Columns (one entry per row) and counts for `examples`."""

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        """The transformers collator that pads a training batch dynamically."""
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def model_config(self, task: TaskSpec) -> dict[str, Any]:
        """Config arguments of the head (number of labels and their names)."""
        return {"num_labels": len(task.labels), "label2id": task.label2id, "id2label": task.id2label}

    def load_model(self, path: str, task: TaskSpec) -> Any:
        """The pretrained encoder at `path` with a freshly initialised head of this kind for `task`."""
        return load_model(path, self.head, **self.model_config(task))

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """The training loss, normalised over the whole accumulated batch (see `classification_loss`)."""
        return classification_loss(outputs, labels, num_items_in_batch)

    # ---- evaluation ----

    @abstractmethod
    def gather(self, split: EncodedSplit, outputs: Any, batch: EvalBatch) -> dict[str, np.ndarray]:
        """The numbers decoding needs from one batch's outputs (computed on the device, returned on the CPU)."""

    @abstractmethod
    def decode(self, split: EncodedSplit, gathered: dict[str, np.ndarray]) -> list[Any]:
        """One prediction per example of `split` from the concatenated `gather` results of all its rows."""

    @abstractmethod
    def score(self, split: EncodedSplit, predictions: list[Any]) -> dict[str, float]:
        """Every metric of `split.task` (percentages) for one prediction per example."""

    @abstractmethod
    def format_predictions(self, split: EncodedSplit, predictions: list[Any]) -> str:
        """The predictions as a file in XTREME's submission layout."""

    @abstractmethod
    def format_examples(self, split: EncodedSplit) -> str:
        """The gold examples of `split` as a file in the task's own format (readable by `read_file`)."""

    @abstractmethod
    def score_files(
        self, task: TaskSpec, gold: Path, predictions: Path, language: str | None, all_metrics: bool = False
    ) -> dict[str, float]:
        """Score a predictions file against a gold file with the official script's semantics (its metric
        names and values); `all_metrics` adds xlgap's other metrics of the task."""

    # ---- shared helpers ----

    def encode_split(self, split: SplitData, task: TaskSpec, tokenizer: Any, settings: EncodeSettings) -> EncodedSplit:
        """Tokenize a split; returns an EncodedSplit (rows, counts, provenance)."""
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"encoding needs a fast (Rust) tokenizer for word alignment and offsets, got {type(tokenizer).__name__}"
            )
        if split.task != task.name:
            raise ValueError(f"split of task {split.task!r} encoded as task {task.name!r}")
        if not split.examples:
            raise ValueError(f"{task.name} {split.language} {split.split}: no examples to encode")
        columns, counts = self.encode(task, split.examples, tokenizer, settings)
        stats = {"examples": len(split.examples), "sequences": len(columns["length"]), "tokens": int(sum(columns["length"]))}
        stats.update(counts)
        log.info("%s %s %s encoded: %s", task.name, split.language, split.split, stats)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return EncodedSplit(
            task, split.language, split.split, list(split.examples), columns, stats, split.origin, pad, settings,
            split.skipped,
        )


def classification_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Summed cross-entropy over labelled positions divided by the labelled positions of the update.

    Works for token classification (labels per token, -100 ignored) and sequence classification (one
    label per example); without `num_items_in_batch` it is the mean over this batch. transformers'
    Trainer assumes that a model whose `forward` takes `**kwargs` divides its loss by
    `num_items_in_batch` and then skips its own division by the accumulation steps; BERT/XLM-R heads
    return a plain per-micro-batch mean, which inflates loss and gradient under accumulation
    (huggingface/transformers#47688). As `compute_loss_func`, this makes an update with accumulation
    exactly the update of the equivalent large batch.
    """
    logits = outputs["logits"]
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    count = num_items_in_batch if num_items_in_batch is not None else labels.ne(IGNORE_INDEX).sum()
    return total / count


_KINDS: dict[str, TaskKind] = {}


def register_kind(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: register a TaskKind under its `name` (one instance; kinds are stateless)."""
    if cls.name in _KINDS:
        raise ValueError(f"task kind {cls.name!r} is already registered")
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> TaskKind:
    """The registered kind called `name`; the error lists the known kinds."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"unknown task kind {name!r}; known kinds: {', '.join(sorted(_KINDS))}") from None


def kind_of(task: TaskSpec) -> TaskKind:
    """The kind that handles `task`."""
    try:
        return get_kind(task.kind)
    except ValueError as err:
        raise ValueError(f"task {task.name!r}: {err}") from None


def load_split(task: TaskSpec | str, language: str, split: str, **source: Any) -> SplitData:
    """Find and read one split of a task for one language (`source`: `locate_split`'s keyword arguments)."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    return kind_of(spec).load(locate_split(spec, language, split, **source))


def base_suffix(path: Path) -> str:
    """A file's extension without a trailing `.gz` ('.conllu' for 'x.conllu.gz')."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def encode_split(split: SplitData, task: TaskSpec, tokenizer: Any, settings: EncodeSettings | int) -> EncodedSplit:
    """Tokenize a split with its task kind; `settings` may be just the max length."""
    if isinstance(settings, int):
        settings = EncodeSettings(max_length=settings)
    return kind_of(task).encode_split(split, task, tokenizer, settings)
