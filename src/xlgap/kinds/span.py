"""Extractive question answering (XQuAD, MLQA, TyDiQA-GoldP, SQuAD): the answer is a span of the context.

Features as the field builds them (Hugging Face's run_qa.py, XTREME's run_squad.py): question first,
then the context, cut into windows of `max_length` tokens that overlap by `doc_stride`, with the
character offsets of the context tokens kept; questions longer than `max_query_length` tokens are cut
(XTREME's 64). A training window is labelled with the answer's first and last token, or with the CLS
position when the answer is not inside it (counted). Decoding takes, over all windows of a question,
the best-scoring valid span from each window's `n_best` start and end logits (start <= end, both in
the context, at most `max_answer_length` tokens) and returns its text from the original context; a
question with no valid span gets the empty answer.

Metrics: exact match and F1 with the official semantics (`kinds/scoring.py`): SQuAD v1.1 normalisation
for XQuAD and TyDiQA-GoldP, MLQA's language-aware normalisation (the split's language) for MLQA.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering

from xlgap.config import ConfigError
from xlgap.data.formats import Answer, DataFormatError, QAExample, ReadResult, read_file_bytes
from xlgap.data.squad import answer_problem, read_squad
from xlgap.data.tasks import SPAN_EXTRACTION, TaskSpec
from xlgap.kinds.base import IGNORE_INDEX, EncodedSplit, EncodeSettings, EvalBatch, TaskKind, register_kind
from xlgap.kinds.scoring import ScoreError, answer_scores

_BATCH = 256  # questions per tokenizer call
log = logging.getLogger(__name__)


def span_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Cross-entropy of the start and of the end position, summed and divided by twice the windows of
    the update: the mean of the start and end losses (Hugging Face's QA loss), normalised over the whole
    accumulated batch like `classification_loss` (labels are `[start, end]` per window)."""
    start = F.cross_entropy(outputs["start_logits"].float(), labels[:, 0], ignore_index=IGNORE_INDEX, reduction="sum")
    end = F.cross_entropy(outputs["end_logits"].float(), labels[:, 1], ignore_index=IGNORE_INDEX, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else labels.ne(IGNORE_INDEX).sum()
    return (start + end) / count


def _read_json(path: Path) -> Any:
    """A JSON file (gzipped when its name ends in `.gz`), or a ScoreError naming it."""
    try:
        return json.loads(read_file_bytes(path).decode("utf-8"))
    except DataFormatError as err:
        raise ScoreError(str(err)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ScoreError(f"{path}: not a readable JSON file ({err})") from None


def _gold_questions(path: Path) -> list[tuple[Any, Any, str]]:
    """(question id, its raw `answers` or None, JSON path) of every question of a SQuAD-style gold file,
    walked as the official scripts walk it. Like them, it reads a question's answers only when the
    question has a prediction (`_answer_texts`): an unanswered question scores 0 whatever its answers."""
    dataset = _read_json(path)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ScoreError(f"{path}: expected a SQuAD JSON object with a 'data' list")
    questions = []
    where = "data"
    try:
        for i, article in enumerate(dataset["data"]):
            where = f"data[{i}]"
            for j, paragraph in enumerate(article["paragraphs"]):
                where = f"data[{i}].paragraphs[{j}]"
                for k, qa in enumerate(paragraph["qas"]):
                    where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                    qid = qa["id"]
                    if not isinstance(qid, str):
                        raise ScoreError(f"{path}, JSON path {where}.id: expected a string question id, got {qid!r:.60}")
                    questions.append((qid, qa.get("answers"), where))
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        raise ScoreError(f"{path}, JSON path {where}: missing or malformed field ({err})") from None
    return questions


def _answer_texts(path: Path, where: str, answers: Any) -> list[str]:
    """The gold answer texts of the question at `where`, or a ScoreError saying what is wrong."""
    if not isinstance(answers, list):
        raise ScoreError(f"{path}, JSON path {where}.answers: expected a list of answers, got {answers!r:.60}")
    texts = [answer.get("text") if isinstance(answer, dict) else None for answer in answers]
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise ScoreError(f"{path}, JSON path {where}.answers[{n}].text: expected a string, got {text!r:.60}")
    return texts


@register_kind
class SpanExtraction(TaskKind):
    """The answer is a span of the context (see the module docstring)."""

    name = SPAN_EXTRACTION
    head = AutoModelForQuestionAnswering
    default_max_length = 384
    predictions_suffix = "json"
    alignment = ("offset_start", "offset_end")

    def read_file(self, task: TaskSpec, path: Path, language: str) -> ReadResult:
        return read_squad(path)

    def from_hub(
        self, task: TaskSpec, rows: datasets.Dataset, columns: tuple[str, ...], source: str
    ) -> tuple[list[QAExample], Counter[str]]:
        id_column, context_column, question_column, answers_column = columns
        data = rows.to_dict()
        examples = []
        skipped: Counter[str] = Counter()
        table = zip(*(data[c] for c in columns), strict=True)
        for row, (qid, context, question, answers) in enumerate(table):
            texts, starts = answers.get("text", []), answers.get("answer_start", [])
            if not texts:
                skipped["questions without an answer"] += 1
                continue
            if not context.strip():
                raise DataFormatError(source, row, "empty context", unit="row")
            for text, start in zip(texts, starts, strict=True):
                problem = answer_problem(context, text, start)
                if problem:
                    raise DataFormatError(source, row, problem, unit="row")
            gold = tuple(Answer(t, s) for t, s in zip(texts, starts, strict=True))
            examples.append(QAExample(str(qid), question, context, gold, f"{source}#{row}"))
        return examples, skipped

    def model_config(self, task: TaskSpec) -> dict[str, Any]:
        return {}

    def loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        return span_loss(outputs, labels, num_items_in_batch)

    def text_of(self, example: Any) -> str:
        return f"{example.question} {example.context}"

    def encode(
        self, task: TaskSpec, examples: Sequence[QAExample], tokenizer: Any, settings: EncodeSettings
    ) -> tuple[dict[str, list], dict[str, int]]:
        if settings.doc_stride >= settings.max_length - settings.max_query_length - 4:
            raise ConfigError(
                f"qa.doc_stride {settings.doc_stride} leaves no room for context in windows of {settings.max_length} "
                f"tokens with questions of up to {settings.max_query_length}; lower it or raise data.max_length"
            )
        names = ("input_ids", "attention_mask", "labels", "offset_start", "offset_end", "length", "example_index")
        columns: dict[str, list] = {k: [] for k in names}
        counts = Counter(windows_without_answer=0, questions_without_answer_window=0, questions_truncated=0)
        for first in range(0, len(examples), _BATCH):
            batch = examples[first : first + _BATCH]
            questions = self._questions(batch, tokenizer, settings.max_query_length, counts)
            enc = tokenizer(
                questions,
                [ex.context for ex in batch],
                truncation="only_second",
                max_length=settings.max_length,
                stride=settings.doc_stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            answered: set[int] = set()
            for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
                example = batch[sample]
                ids = enc["input_ids"][row]
                in_context = [s == 1 for s in enc.sequence_ids(row)]
                offsets = enc["offset_mapping"][row]
                starts = [o[0] if c else -1 for o, c in zip(offsets, in_context, strict=True)]
                ends = [o[1] if c else -1 for o, c in zip(offsets, in_context, strict=True)]
                label = _span_label(ids, starts, ends, example.answers[0], tokenizer.cls_token_id)
                if label[0] == label[1] and starts[label[0]] < 0:
                    counts["windows_without_answer"] += 1
                else:
                    answered.add(sample)
                for name in ("input_ids", "attention_mask", "token_type_ids"):
                    if name in enc:
                        columns.setdefault(name, []).append(enc[name][row])
                columns["labels"].append(label)
                columns["offset_start"].append(starts)
                columns["offset_end"].append(ends)
                columns["length"].append(len(ids))
                columns["example_index"].append(first + sample)
            counts["questions_without_answer_window"] += len(batch) - len(answered)
        return columns, dict(counts)

    @staticmethod
    def _questions(batch: Sequence[QAExample], tokenizer: Any, limit: int, counts: Counter[str]) -> list[str]:
        """The questions without leading whitespace (run_qa.py), cut after `limit` tokens (XTREME)."""
        questions = [ex.question.lstrip() for ex in batch]
        encoded = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        for i, offsets in enumerate(encoded["offset_mapping"]):
            if len(offsets) > limit:
                questions[i] = questions[i][: offsets[limit - 1][1]]
                counts["questions_truncated"] += 1
        return questions

    def gather(self, split: EncodedSplit, outputs: Any, batch: EvalBatch) -> dict[str, np.ndarray]:
        n = split.settings.n_best
        real = batch.inputs["attention_mask"].to(outputs["start_logits"].device).bool()
        picked: dict[str, np.ndarray] = {"example": batch.columns["example_index"]}
        for side, logits in (("start", outputs["start_logits"]), ("end", outputs["end_logits"])):
            masked = logits.float().masked_fill(~real, float("-inf"))
            values, indices = masked.topk(min(n, masked.shape[1]), dim=-1)
            values, indices = values.cpu().numpy(), indices.cpu().numpy()
            if values.shape[1] < n:  # windows shorter than n_best: pad so that batches concatenate
                pad = n - values.shape[1]
                values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
                indices = np.pad(indices, ((0, 0), (0, pad)))
            offsets = batch.columns[f"offset_{side}"]
            picked[f"{side}_value"] = values
            picked[f"{side}_index"] = indices
            picked[f"{side}_char"] = np.where(np.isfinite(values), np.take_along_axis(offsets, indices, axis=1), -1)
        return picked

    def decode(self, split: EncodedSplit, gathered: dict[str, np.ndarray]) -> list[str]:
        start_i, end_i = gathered["start_index"][:, :, None], gathered["end_index"][:, None, :]
        start_c, end_c = gathered["start_char"][:, :, None], gathered["end_char"][:, None, :]
        valid = (start_c >= 0) & (end_c >= 0) & (end_i >= start_i) & (end_i - start_i < split.settings.max_answer_length)
        scores = np.where(valid, gathered["start_value"][:, :, None] + gathered["end_value"][:, None, :], -np.inf)
        flat = scores.reshape(len(scores), -1)
        best = flat.argmax(axis=1)
        best_score = flat[np.arange(len(flat)), best]
        n = scores.shape[1]
        chars_start = gathered["start_char"][np.arange(len(flat)), best // n]
        chars_end = gathered["end_char"][np.arange(len(flat)), best % n]
        # the best window of each question: sort by question, then by score (highest first)
        order = np.lexsort((-best_score, gathered["example"]))
        examples = gathered["example"][order]
        first = order[np.r_[True, examples[1:] != examples[:-1]]]
        answers = [""] * len(split.examples)
        for row in first:
            if np.isfinite(best_score[row]):
                context = split.examples[gathered["example"][row]].context
                answers[gathered["example"][row]] = context[chars_start[row] : chars_end[row]]
        return answers

    def score(self, split: EncodedSplit, predictions: list[str]) -> dict[str, float]:
        questions = [(ex.id, [a.text for a in ex.answers], p) for ex, p in zip(split.examples, predictions, strict=True)]
        scores, _ = answer_scores(questions, split.task.option("answers", "squad"), split.language)
        return {m: scores[m] for m in split.task.metrics}

    def format_predictions(self, split: EncodedSplit, predictions: list[str]) -> str:
        by_id = {ex.id: answer for ex, answer in zip(split.examples, predictions, strict=True)}
        if len(by_id) < len(predictions):
            log.warning(
                "%s %s: %d questions repeat an earlier id; the predictions file keeps one answer per id",
                split.task.name, split.language, len(predictions) - len(by_id),
            )
        return json.dumps(by_id, ensure_ascii=False, indent=1) + "\n"

    def format_examples(self, split: EncodedSplit) -> str:
        paragraphs: list[dict[str, Any]] = []
        for ex in split.examples:
            if not paragraphs or paragraphs[-1]["context"] != ex.context:
                paragraphs.append({"context": ex.context, "qas": []})
            answers = [{"text": a.text, "answer_start": a.start} for a in ex.answers]
            paragraphs[-1]["qas"].append({"id": ex.id, "question": ex.question, "answers": answers})
        return json.dumps({"version": "1.1", "data": [{"title": "", "paragraphs": paragraphs}]}, ensure_ascii=False) + "\n"

    def score_files(
        self, task: TaskSpec, gold: Path, predictions: Path, language: str | None, all_metrics: bool = False
    ) -> dict[str, float]:
        questions = _gold_questions(gold)
        predicted = _read_json(predictions)
        if not isinstance(predicted, dict):
            raise ScoreError(f"{predictions}: expected a JSON object {{question id: answer text}}")
        rows = []
        for qid, answers, where in questions:
            if qid not in predicted:
                rows.append((qid, [], None))
                continue
            if not isinstance(predicted[qid], str):  # the official scripts crash on a null or a number
                raise ScoreError(f"{predictions}: the prediction of question {qid!r} is {predicted[qid]!r:.60}; expected the answer text")
            rows.append((qid, _answer_texts(gold, where, answers), predicted[qid]))
        scores, unanswered = answer_scores(rows, task.option("answers", "squad"), language)
        if unanswered:
            log.warning("%d of %d questions of %s have no prediction in %s and score 0", unanswered, len(questions), gold, predictions)
        return scores


def _span_label(ids: list[int], starts: list[int], ends: list[int], answer: Answer, cls_id: int | None) -> list[int]:
    """[first token, last token] of the answer in a window, or [cls, cls] when the window does not hold it."""
    context = [i for i, s in enumerate(starts) if s >= 0]
    start_char, end_char = answer.start, answer.start + len(answer.text)
    if not context or not (starts[context[0]] <= start_char and ends[context[-1]] >= end_char):
        cls = ids.index(cls_id) if cls_id in ids else 0
        return [cls, cls]
    first = next(i for i in reversed(context) if starts[i] <= start_char)
    last = next(i for i in context if ends[i] >= end_char)
    return [first, last]
