"""Token tagging (UD POS, PAN-X NER): one label per word.

Reading: XTREME's `token<TAB>tag` files, UD CoNLL-U treebanks, and hub rows of (tokens, tags).
Encoding: words are tokenized together (`is_split_into_words=True`); the first subword of each word
carries the word's label and every other position -100. A word that yields no token gets the
tokenizer's unk token (as XTREME's utils_tag.py does), so its label survives. Sentences longer than
`max_length` are cut into consecutive windows at word boundaries, so every word is labelled exactly
once; decoding stitches the windows back, so each sentence is scored once, whole.

Metrics: `accuracy` is the share of words tagged correctly. `f1`, `precision` and `recall` are
seqeval's entity-level scores in its default (conlleval-compatible) mode, exactly as XTREME's
`evaluate.py` computes them, for NER and, as XTREME also reports it, for POS tags (where seqeval reads
a tag like `NOUN` as tag letter `N` of type `OUN`, so XTREME's POS "F1" is a chunk score, not
accuracy; tables never mix the two). In that mode an invalid sequence is not repaired: an `I-X` after
`O` or after another type starts a new `X` entity, as conlleval does (`O I-PER I-PER` holds one PER
entity, `B-PER I-LOC` holds a PER and a LOC entity).
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from xlgap.config import ConfigError
from xlgap.data.formats import (
    DataFormatError,
    LabelTable,
    ReadResult,
    TokenExample,
    read_conllu,
    read_token_tags,
)
from xlgap.data.sources import hub_label_names
from xlgap.data.tasks import TAGGING, TaskSpec
from xlgap.kinds.base import (
    IGNORE_INDEX,
    EncodedSplit,
    EncodeSettings,
    EvalBatch,
    TaskKind,
    base_suffix,
    register_kind,
)
from xlgap.kinds.scoring import ScoreError, read_official_lines

_BATCH = 1000  # sentences per tokenizer call: large enough for the Rust batching, small enough for memory
SEQEVAL_METRICS = ("f1", "precision", "recall")


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """seqeval's default-mode entity F1, precision and recall in percent, as XTREME's evaluate.py."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    with warnings.catch_warnings():
        # seqeval warns for every tag without a B-/I- prefix (all POS tags) and for empty predictions
        warnings.simplefilter("ignore")
        return {
            "f1": f1_score(gold, predicted) * 100,
            "precision": precision_score(gold, predicted) * 100,
            "recall": recall_score(gold, predicted) * 100,
        }


def word_accuracy(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> float:
    """Percentage of words whose predicted tag equals the gold tag."""
    total = sum(len(g) for g in gold)
    if not total:
        raise ValueError("no words to score")
    correct = sum(p == g for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True))
    return correct / total * 100


def read_tag_file(path: Path, gold: bool = False) -> list[list[str]]:
    """Sentences of tags with XTREME's `read_tag` semantics: each line stripped, a blank line ends a
    sentence (so consecutive blank lines make empty sentences), no trailing empty sentence. A `gold`
    file whose every non-blank line is `token<TAB>tag` (the task's own data format) gives the tags;
    any other file, predictions included, is read as the official script reads it, a line whole."""
    lines = [line.strip() for line in read_official_lines(path)]
    token_tag = gold and any(lines) and all("\t" in line for line in lines if line)
    sentences: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line.rsplit("\t", 1)[1].strip() if token_tag else line)
        else:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


@register_kind
class Tagging(TaskKind):
    """One label per word (see the module docstring)."""

    name = TAGGING
    head = AutoModelForTokenClassification
    alignment = ("word_ids",)

    def read_file(self, task: TaskSpec, path: Path, language: str) -> ReadResult:
        if base_suffix(path) == ".conllu":
            return read_conllu(path, task.labels, aliases=task.aliases)
        return read_token_tags(path, task.labels, aliases=task.aliases, lang_prefix=language)

    def from_hub(
        self, task: TaskSpec, rows: datasets.Dataset, columns: tuple[str, ...], source: str
    ) -> tuple[list[TokenExample], Counter[str]]:
        token_column, tag_column = columns
        table = LabelTable(task.labels, task.aliases)
        names = hub_label_names(rows, tag_column)
        examples: list[TokenExample] = []
        skipped: Counter[str] = Counter()
        data = rows.to_dict()
        for row, (tokens, tags) in enumerate(zip(data[token_column], data[tag_column], strict=True)):
            if len(tokens) != len(tags):
                raise DataFormatError(source, row, f"{len(tokens)} tokens but {len(tags)} tags", unit="row")
            if not tokens:
                skipped["empty sentences"] += 1
                continue
            labels = tuple(table.canonical(_label_name(t, names, source, row), source, row, unit="row") for t in tags)
            examples.append(TokenExample(tuple(tokens), labels, f"{source}#{row}"))
        return examples, skipped

    def text_of(self, example: Any) -> str:
        return " ".join(example.tokens)

    def encode(
        self, task: TaskSpec, examples: Sequence[TokenExample], tokenizer: Any, settings: EncodeSettings
    ) -> tuple[dict[str, list], dict[str, int]]:
        prefix, suffix = _special_affixes(tokenizer)
        budget = settings.max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise ConfigError(
                f"max_length {settings.max_length} leaves no room for words after {len(prefix) + len(suffix)} special tokens"
            )
        label2id = task.label2id
        names = ("input_ids", "attention_mask", "labels", "word_ids", "length", "example_index")
        columns: dict[str, list] = {k: [] for k in names}
        counts = Counter(truncated=0, split_examples=0, words=0, words_unk=0, words_cut=0)
        outside = [IGNORE_INDEX] * len(prefix), [IGNORE_INDEX] * len(suffix)
        no_word = [-1] * len(prefix), [-1] * len(suffix)

        def emit(index: int, ids: list[int], labels: list[int], words: list[int]) -> None:
            full = prefix + ids + suffix
            columns["input_ids"].append(full)
            columns["attention_mask"].append([1] * len(full))
            columns["labels"].append(outside[0] + labels + outside[1])
            columns["word_ids"].append(no_word[0] + words + no_word[1])
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
                words: list[int] = []
                windows = 0
                cut = False
                for word, (word_pieces, tag) in enumerate(zip(pieces, example.tags, strict=True)):
                    if not word_pieces:
                        if tokenizer.unk_token_id is None:
                            raise ValueError(
                                f"{example.source}: a word yields no token and the tokenizer has no unk token"
                            )
                        word_pieces = [tokenizer.unk_token_id]
                        counts["words_unk"] += 1
                    if len(word_pieces) > budget:
                        word_pieces = word_pieces[:budget]
                        counts["words_cut"] += 1
                        cut = True
                    if ids and len(ids) + len(word_pieces) > budget:
                        emit(index, ids, labels, words)
                        windows += 1
                        ids, labels, words = [], [], []
                    rest = len(word_pieces) - 1
                    ids += word_pieces
                    labels += [label2id[tag]] + [IGNORE_INDEX] * rest
                    words += [word] + [-1] * rest
                emit(index, ids, labels, words)
                counts["words"] += len(example.tokens)
                counts["split_examples"] += windows > 0
                counts["truncated"] += cut
        return columns, dict(counts)

    def collator(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
        return DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of)

    def gather(self, split: EncodedSplit, outputs: Any, batch: EvalBatch) -> dict[str, np.ndarray]:
        predicted = outputs["logits"].argmax(dim=-1).cpu().numpy()
        words = batch.columns["word_ids"]
        first = words >= 0
        examples = np.broadcast_to(batch.columns["example_index"][:, None], words.shape)
        return {"label": predicted[first], "word": words[first], "example": examples[first]}

    def decode(self, split: EncodedSplit, gathered: dict[str, np.ndarray]) -> list[tuple[str, ...]]:
        lengths = np.array([len(ex.tokens) for ex in split.examples])
        starts = np.concatenate([[0], np.cumsum(lengths)])
        flat = np.full(int(starts[-1]), -1, dtype=np.int64)
        flat[starts[gathered["example"]] + gathered["word"]] = gathered["label"]
        if (flat < 0).any():
            raise RuntimeError(f"{split.task.name} {split.language}: {int((flat < 0).sum())} words got no prediction")
        names = np.array(split.task.labels, dtype=object)[flat]
        return [tuple(names[starts[i] : starts[i + 1]]) for i in range(len(split.examples))]

    def score(self, split: EncodedSplit, predictions: list[tuple[str, ...]]) -> dict[str, float]:
        gold = [list(ex.tags) for ex in split.examples]
        predicted = [list(p) for p in predictions]
        return _metrics(split.task, gold, predicted)

    def format_predictions(self, split: EncodedSplit, predictions: list[tuple[str, ...]]) -> str:
        return "".join("".join(f"{tag}\n" for tag in sentence) + "\n" for sentence in predictions)

    def format_examples(self, split: EncodedSplit) -> str:
        return "".join("".join(f"{w}\t{t}\n" for w, t in zip(ex.tokens, ex.tags, strict=True)) + "\n" for ex in split.examples)

    def score_files(
        self, task: TaskSpec, gold: Path, predictions: Path, language: str | None, all_metrics: bool = False
    ) -> dict[str, float]:
        gold_sentences = read_tag_file(gold, gold=True)
        predicted = read_tag_file(predictions)
        if not gold_sentences:  # (seqeval fails on no sentences; empty sentences score 0 as in the official script)
            raise ScoreError(f"{gold}: no tags; expected one tag per line (or token<TAB>tag), a blank line after each sentence")
        if len(gold_sentences) != len(predicted):
            raise ScoreError(
                f"{predictions} has {len(predicted)} sentences but {gold} has {len(gold_sentences)}; "
                "expected one predicted tag per gold token, a blank line after each sentence"
            )
        for number, (g, p) in enumerate(zip(gold_sentences, predicted, strict=True), 1):
            if len(g) != len(p):
                raise ScoreError(f"sentence {number}: {gold} has {len(g)} tags but {predictions} has {len(p)}")
        scores = seqeval_scores(gold_sentences, predicted)
        if all_metrics and "accuracy" in task.metrics:
            scores["accuracy"] = word_accuracy(gold_sentences, predicted)
        return scores


def _metrics(task: TaskSpec, gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    scores: dict[str, float] = {}
    if "accuracy" in task.metrics:
        scores["accuracy"] = word_accuracy(gold, predicted)
    if any(m in task.metrics for m in SEQEVAL_METRICS):
        entity = seqeval_scores(gold, predicted)
        scores.update({m: entity[m] for m in SEQEVAL_METRICS if m in task.metrics})
    return {m: scores[m] for m in task.metrics}


def _label_name(raw: int | str, names: list[str] | None, source: str, row: int) -> str:
    if names is None:
        return raw
    if not 0 <= raw < len(names):
        raise DataFormatError(source, row, f"label id {raw} outside 0..{len(names) - 1}", unit="row")
    return names[raw]


def _special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
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
