"""Sentence-pair classification (XNLI, PAWS-X): one label per pair of texts.

Reading: TSV files of `text_a<TAB>text_b<TAB>label` (XNLI, PAWS-X dev), or with a header naming
`sentence1`, `sentence2` and `label` (PAWS-X `test-*.hf.tsv`: `id sentence1 sentence2 label`), and hub
rows. Encoding: `tokenizer(a, b)` with longest-first truncation, padding left to the collator.
Metric: accuracy, as XTREME's evaluate.py (predicted and gold labels compared as strings).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import AutoModelForSequenceClassification

from xlgap.data.formats import DataFormatError, LabelTable, PairExample, ReadResult, read_pair_tsv
from xlgap.data.sources import hub_label_names
from xlgap.data.tasks import CLASSIFICATION, TaskSpec
from xlgap.kinds.base import EncodedSplit, EncodeSettings, EvalBatch, TaskKind, register_kind
from xlgap.kinds.scoring import ScoreError, read_official_lines

_BATCH = 1000


def read_label_file(path: Path) -> list[str]:
    """Labels with XTREME's `read_label` semantics, how predictions are read: every line stripped is one
    label (a blank line is the label "")."""
    return [line.strip() for line in read_official_lines(path)]


def read_gold_labels(path: Path) -> list[str]:
    """Gold labels: from the task's own TSV (`text_a<TAB>text_b<TAB>label` on every non-blank line, or a
    header of three or more fields with a `label` column; blank lines are not examples), else from XTREME's label-only layout
    (`read_label_file`, so a stray tab in a label-only file is read as the official script reads it)."""
    lines = list(read_official_lines(path))
    rows = [(number, line.rstrip("\r\n").split("\t")) for number, line in enumerate(lines, 1) if line.strip()]
    header = [field.strip() for field in rows[0][1]] if rows else []
    if len(header) >= 3 and "label" in header:
        column = header.index("label")
        rows = rows[1:]
    elif rows and all(len(fields) >= 3 for _, fields in rows):
        column = -1
    else:
        return read_label_file(path)
    labels = []
    for number, fields in rows:
        if column >= len(fields):
            raise ScoreError(f"{path}:{number}: expected a label in column {column + 1} (the header's `label`), found {len(fields)} field(s)")
        labels.append(fields[column].strip())
    return labels


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Percentage of predictions equal to the gold label (XTREME: divided by the number of predictions)."""
    if not predicted:
        raise ScoreError("no predictions to score")
    correct = sum([int(p == g) for p, g in zip(predicted, gold, strict=False)])
    return float(correct) / len(predicted) * 100


@register_kind
class Classification(TaskKind):
    """One label per text pair (see the module docstring)."""

    name = CLASSIFICATION
    head = AutoModelForSequenceClassification

    def read_file(self, task: TaskSpec, path: Path, language: str) -> ReadResult:
        return read_pair_tsv(path, task.labels, aliases=task.aliases, header=None)

    def from_hub(
        self, task: TaskSpec, rows: datasets.Dataset, columns: tuple[str, ...], source: str
    ) -> tuple[list[PairExample], Counter[str]]:
        table = LabelTable(task.labels, task.aliases)
        names = hub_label_names(rows, columns[2])
        data = rows.to_dict()
        examples = []
        for row, (text_a, text_b, raw) in enumerate(zip(*(data[c] for c in columns), strict=True)):
            if names is not None:
                if not 0 <= raw < len(names):
                    raise DataFormatError(source, row, f"label id {raw} outside 0..{len(names) - 1}", unit="row")
                raw = names[raw]
            label = table.canonical(str(raw), source, row, unit="row")
            examples.append(PairExample(text_a, text_b, label, f"{source}#{row}"))
        return examples, Counter()

    def text_of(self, example: Any) -> str:
        return f"{example.text_a} {example.text_b}"

    def encode(
        self, task: TaskSpec, examples: Sequence[PairExample], tokenizer: Any, settings: EncodeSettings
    ) -> tuple[dict[str, list], dict[str, int]]:
        label2id = task.label2id
        columns: dict[str, list] = {}
        truncated = 0
        for start in range(0, len(examples), _BATCH):
            batch = examples[start : start + _BATCH]
            enc = tokenizer(
                [ex.text_a for ex in batch],
                [ex.text_b for ex in batch],
                truncation="longest_first",
                max_length=settings.max_length,
            )
            for name, values in enc.items():
                columns.setdefault(name, []).extend(values)
            truncated += sum(1 for encoding in enc.encodings if encoding.overflowing)
        columns["labels"] = [label2id[ex.label] for ex in examples]
        columns["length"] = [len(ids) for ids in columns["input_ids"]]
        columns["example_index"] = list(range(len(examples)))
        return columns, {"truncated": truncated}

    def gather(self, split: EncodedSplit, outputs: Any, batch: EvalBatch) -> dict[str, np.ndarray]:
        return {"label": outputs["logits"].argmax(dim=-1).cpu().numpy(), "example": batch.columns["example_index"]}

    def decode(self, split: EncodedSplit, gathered: dict[str, np.ndarray]) -> list[str]:
        labels = np.full(len(split.examples), -1, dtype=np.int64)
        labels[gathered["example"]] = gathered["label"]
        return [split.task.labels[i] for i in labels]

    def score(self, split: EncodedSplit, predictions: list[str]) -> dict[str, float]:
        return {"accuracy": accuracy([ex.label for ex in split.examples], predictions)}

    def format_predictions(self, split: EncodedSplit, predictions: list[str]) -> str:
        return "".join(f"{label}\n" for label in predictions)

    def format_examples(self, split: EncodedSplit) -> str:
        return "".join(f"{ex.text_a}\t{ex.text_b}\t{ex.label}\n" for ex in split.examples)

    def score_files(
        self, task: TaskSpec, gold: Path, predictions: Path, language: str | None, all_metrics: bool = False
    ) -> dict[str, float]:
        gold_labels = read_gold_labels(gold)
        predicted = read_label_file(predictions)
        if len(gold_labels) != len(predicted):
            raise ScoreError(
                f"{predictions} has {len(predicted)} labels but {gold} has {len(gold_labels)}; "
                "expected one predicted label per line, one line per gold example"
            )
        return {"accuracy": accuracy(gold_labels, predicted)}
