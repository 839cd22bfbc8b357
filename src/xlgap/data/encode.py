"""Tokenisation per task kind, with the fast tokenizer API.

Token classification: words are tokenized together (`is_split_into_words=True`), the first
subword of each word carries the word's label and every other position -100. A word that yields
no token gets the tokenizer's unk token (as XTREME's utils_tag.py does), so its label survives.
Sentences longer than `max_length` are cut into consecutive windows at word boundaries, so every
word is labelled exactly once. Sequence-pair classification: `tokenizer(a, b)` with
longest-first truncation. Padding is left to the collators (dynamic padding).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import datasets
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from xlgap.data.formats import PairExample, TokenExample
from xlgap.data.sources import Origin, SplitData
from xlgap.data.tasks import TOKEN_CLASSIFICATION, TaskSpec

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
_BATCH = 1000  # sentences per tokenizer call: large enough for the Rust batching, small enough for memory


@dataclass
class EncodeStats:
    """Counts from encoding one split.

    `sequences` is the number of model inputs (windows for long sentences); `truncated` counts
    examples that lost any subword; `split_examples` counts sentences spread over several windows;
    `words_unk` counts words replaced by the unk token; `words_cut` counts words longer than a
    window whose trailing subwords were dropped.
    """

    examples: int = 0
    sequences: int = 0
    tokens: int = 0
    truncated: int = 0
    split_examples: int = 0
    words: int = 0
    words_unk: int = 0
    words_cut: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for logs and results)."""
        return asdict(self)


@dataclass
class EncodedSplit:
    """A tokenized split: a `datasets.Dataset` with input_ids, attention_mask, labels, length and
    example_index (the source example of each row), plus counts and provenance."""

    dataset: datasets.Dataset
    stats: EncodeStats
    task: str
    language: str
    split: str
    origin: Origin


def label_maps(task: TaskSpec) -> tuple[dict[str, int], dict[int, str]]:
    """(label2id, id2label) for a task, in the task's label order."""
    label2id = {label: i for i, label in enumerate(task.labels)}
    return label2id, {i: label for label, i in label2id.items()}


def collator_for(task: TaskSpec, tokenizer, pad_to_multiple_of: int | None = None):
    """The transformers data collator that pads a batch of this task kind dynamically."""
    if task.kind == TOKEN_CLASSIFICATION:
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of)


def encode_split(split: SplitData, task: TaskSpec, tokenizer, max_length: int) -> EncodedSplit:
    """Tokenize a split for its task kind; returns an EncodedSplit (dataset, counts, provenance)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"encode_split needs a fast (Rust) tokenizer for word alignment, got {type(tokenizer).__name__}"
        )
    if split.task != task.name:
        raise ValueError(f"split of task {split.task!r} encoded as task {task.name!r}")
    if not split.examples:
        raise ValueError(f"{task.name} {split.language} {split.split}: no examples to encode")
    stats = EncodeStats(examples=len(split.examples))
    if task.kind == TOKEN_CLASSIFICATION:
        columns = _encode_tokens(split.examples, task, tokenizer, max_length, stats)
    else:
        columns = _encode_pairs(split.examples, task, tokenizer, max_length, stats)
    stats.sequences = len(columns["input_ids"])
    stats.tokens = sum(columns["length"])
    log.info("%s %s %s encoded: %s", task.name, split.language, split.split, stats.as_dict())
    dataset = datasets.Dataset.from_dict(columns)
    return EncodedSplit(dataset, stats, task.name, split.language, split.split, split.origin)


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special-token ids the tokenizer puts before and after a single sequence (e.g. <s>, </s>)."""
    probe = tokenizer.unk_token or "a"
    enc = tokenizer([[probe]], is_split_into_words=True, add_special_tokens=True)
    ids, word_ids = enc["input_ids"][0], enc.word_ids(0)
    positions = [i for i, w in enumerate(word_ids) if w is not None]
    if not positions:
        raise ValueError(f"cannot locate the special tokens: the probe word {probe!r} yields no token")
    return ids[: positions[0]], ids[positions[-1] + 1 :]


def _word_pieces(input_ids: list[int], word_ids: list[int | None], n_words: int) -> list[list[int]]:
    """The subword ids of each word, from a tokenizer encoding's word alignment."""
    pieces: list[list[int]] = [[] for _ in range(n_words)]
    for token_id, word in zip(input_ids, word_ids, strict=True):
        if word is not None:
            pieces[word].append(token_id)
    return pieces


def _encode_tokens(
    examples: Sequence[TokenExample], task: TaskSpec, tokenizer, max_length: int, stats: EncodeStats
) -> dict[str, list]:
    prefix, suffix = _special_affixes(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if budget < 1:
        raise ValueError(
            f"max_length {max_length} leaves no room for words after {len(prefix) + len(suffix)} special tokens"
        )
    label2id, _ = label_maps(task)
    columns: dict[str, list] = {
        k: [] for k in ("input_ids", "attention_mask", "labels", "length", "example_index")
    }

    def emit(index: int, ids: list[int], labels: list[int]) -> None:
        full = prefix + ids + suffix
        columns["input_ids"].append(full)
        columns["attention_mask"].append([1] * len(full))
        columns["labels"].append([IGNORE_INDEX] * len(prefix) + labels + [IGNORE_INDEX] * len(suffix))
        columns["length"].append(len(full))
        columns["example_index"].append(index)

    for start in range(0, len(examples), _BATCH):
        batch = examples[start : start + _BATCH]
        enc = tokenizer([list(ex.tokens) for ex in batch], is_split_into_words=True, add_special_tokens=False)
        for offset, example in enumerate(batch):
            index = start + offset
            pieces = _word_pieces(enc["input_ids"][offset], enc.word_ids(offset), len(example.tokens))
            ids: list[int] = []
            labels: list[int] = []
            windows = 0
            cut = False
            for word_pieces, tag in zip(pieces, example.tags, strict=True):
                if not word_pieces:
                    if tokenizer.unk_token_id is None:
                        raise ValueError(
                            f"{example.source}: a word yields no token and the tokenizer has no unk token"
                        )
                    word_pieces = [tokenizer.unk_token_id]
                    stats.words_unk += 1
                if len(word_pieces) > budget:
                    word_pieces = word_pieces[:budget]
                    stats.words_cut += 1
                    cut = True
                if ids and len(ids) + len(word_pieces) > budget:
                    emit(index, ids, labels)
                    windows += 1
                    ids, labels = [], []
                ids += word_pieces
                labels += [label2id[tag]] + [IGNORE_INDEX] * (len(word_pieces) - 1)
            emit(index, ids, labels)
            stats.words += len(example.tokens)
            stats.split_examples += windows > 0
            stats.truncated += cut
    return columns


def _encode_pairs(
    examples: Sequence[PairExample], task: TaskSpec, tokenizer, max_length: int, stats: EncodeStats
) -> dict[str, list]:
    label2id, _ = label_maps(task)
    columns: dict[str, list] = {}
    for start in range(0, len(examples), _BATCH):
        batch = examples[start : start + _BATCH]
        enc = tokenizer(
            [ex.text_a for ex in batch],
            [ex.text_b for ex in batch],
            truncation="longest_first",
            max_length=max_length,
        )
        for name, values in enc.items():
            columns.setdefault(name, []).extend(values)
        stats.truncated += sum(1 for encoding in enc.encodings if encoding.overflowing)
    columns["labels"] = [label2id[ex.label] for ex in examples]
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    columns["example_index"] = list(range(len(examples)))
    return columns
