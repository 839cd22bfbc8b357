"""The task kinds end to end on hand-made data: encoding, Trainer-free evaluation (batching, padding,
stitching windows, mapping QA windows back to questions), metrics, and the predictions files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tiny import tiny_bert, tiny_tokenizer
from xlgap.data.formats import Answer, PairExample, QAExample, TokenExample
from xlgap.data.sources import Origin, SplitData
from xlgap.data.tasks import get_task
from xlgap.kinds import EncodeSettings, encode_split, evaluate_sets, get_kind, kind_of, predict, register_kind
from xlgap.kinds.base import TaskKind
from xlgap.kinds.evaluate import batches

POS, NER, XNLI, XQUAD, MLQA = (get_task(t) for t in ("udpos", "panx", "xnli", "xquad", "mlqa"))
OFFSET = 4  # ids of w0, w1, ... in the tiny tokenizer start after 4 special tokens


class FakeModel(nn.Module):
    """Logits that depend only on the input ids, so the right prediction of every example is known."""

    def __init__(self, kind: str, classes: int = 3, start: int = 0, end: int = 0):
        super().__init__()
        self.kind, self.classes, self.start, self.end = kind, classes, start, end
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, **kwargs):
        if self.kind == "tagging":
            return {"logits": nn.functional.one_hot(input_ids % self.classes, self.classes).float()}
        if self.kind == "classification":
            return {"logits": nn.functional.one_hot(input_ids[:, 1] % self.classes, self.classes).float()}
        return {
            "start_logits": (input_ids == self.start).float() * 10,
            "end_logits": (input_ids == self.end).float() * 10 + (input_ids == self.start).float() * 5,
        }


def split_of(task, examples, language="de"):
    return SplitData(task.name, language, "test", examples, Origin(files=("f",)))


def tagged(n_sentences=30, seed=0):
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for i in range(n_sentences):
        words = torch.randint(0, 40, (int(torch.randint(1, 15, (1,), generator=generator)),), generator=generator)
        tags = [POS.labels[(int(w) + OFFSET) % 17] for w in words]  # what FakeModel("tagging") predicts
        examples.append(TokenExample(tuple(f"w{int(w)}" for w in words), tuple(tags), f"f:{i}"))
    return examples


# ---------------------------------------------------------------- tagging


def test_tagging_predictions_are_stitched_back_from_windows_in_any_batch_order():
    examples = tagged()
    split = encode_split(split_of(POS, examples), POS, tiny_tokenizer(), 6)  # windows of at most 4 words
    assert split.stats["split_examples"] > 5
    model = FakeModel("tagging", classes=17)
    expected = [tuple(POS.labels[(int(w[1:]) + OFFSET) % 17] for w in ex.tokens) for ex in examples]
    for batch_size in (1, 3, 64):
        assert predict(model, split, batch_size) == expected


def test_batches_are_length_sorted_and_padded_by_indexing():
    split = encode_split(split_of(POS, tagged()), POS, tiny_tokenizer(), 6)
    seen = []
    for batch in batches(split, 4):
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        lengths = mask.sum(1).tolist()
        assert lengths == sorted(lengths, reverse=True) and max(lengths) == ids.shape[1]
        for i, (row, length) in enumerate(zip(batch.rows, lengths, strict=True)):
            assert ids[i, :length].tolist() == split.columns["input_ids"][row]
            assert (ids[i, length:] == split.pad_id).all()
            assert batch.columns["word_ids"][i, :length].tolist() == split.columns["word_ids"][row]
        seen += list(batch.rows)
    assert sorted(seen) == list(range(len(split)))


def test_batches_hold_at_most_the_padded_tokens_of_batch_size_mean_length_rows():
    split = encode_split(split_of(POS, tagged(60, seed=3)), POS, tiny_tokenizer(), 64)
    lengths = np.asarray(split.columns["length"])
    budget = 16 * lengths.mean()
    shapes = [tuple(b.inputs["input_ids"].shape) for b in batches(split, 16)]
    assert all(rows <= 16 and (rows * width <= budget or rows == 1) for rows, width in shapes)
    # each batch is as full as the budget allows: one more row of its width would exceed it (or the row cap)
    assert all(rows == 16 or (rows + 1) * width > budget for rows, width in shapes[:-1])
    assert sum(rows for rows, _ in shapes) == len(split)
    assert sum(rows * width for rows, width in shapes) < 16 * -(-len(split) // 16) * lengths.max()


def test_trainer_free_evaluation_equals_one_example_at_a_time():
    split = encode_split(split_of(POS, tagged(40, seed=1)), POS, tiny_tokenizer(), 8)
    model = tiny_bert(num_labels=17, dropout=0.0).eval()
    one_by_one = []
    for ex_index in range(len(split.examples)):
        rows = [r for r in range(len(split)) if split.columns["example_index"][r] == ex_index]
        labels = []
        for r in rows:
            ids = torch.tensor([split.columns["input_ids"][r]])
            logits = model(input_ids=ids).logits[0]
            labels += [POS.labels[int(logits[t].argmax())] for t, w in enumerate(split.columns["word_ids"][r]) if w >= 0]
        one_by_one.append(tuple(labels))
    assert predict(model, split, 16) == one_by_one


def test_tagging_metrics_and_predictions_file_round_trip(tmp_path):
    examples = [
        TokenExample(("Anna", "lebt", "in", "Berlin"), ("B-PER", "O", "O", "B-LOC")),
        TokenExample(("Paris",), ("B-LOC",)),
    ]
    split = encode_split(split_of(NER, examples), NER, tiny_tokenizer(), 16)
    predictions = [("B-PER", "O", "O", "B-ORG"), ("B-LOC",)]
    kind = kind_of(NER)
    # gold PER, LOC, LOC; predicted PER, ORG, LOC: 2 of 3 right both ways
    assert kind.score(split, predictions) == pytest.approx({"f1": 200 / 3, "precision": 200 / 3, "recall": 200 / 3})
    pos = encode_split(split_of(POS, [TokenExample(("a", "b"), ("NOUN", "VERB"))]), POS, tiny_tokenizer(), 16)
    assert kind_of(POS).score(pos, [("NOUN", "NOUN")])["accuracy"] == 50.0
    pred = tmp_path / "test-de.tsv"
    pred.write_text(kind.format_predictions(split, predictions))
    assert pred.read_text() == "B-PER\nO\nO\nB-ORG\n\nB-LOC\n\n"
    gold = tmp_path / "gold.tsv"
    gold.write_text(kind.format_examples(split))
    assert kind.score_files(NER, gold, pred, None) == kind.score(split, predictions)


# ---------------------------------------------------------------- classification


def test_classification_predictions_metrics_and_file_round_trip(tmp_path):
    examples = [PairExample(f"w{i}", "w1", XNLI.labels[i % 3], f"f:{i}") for i in range(10)]
    split = encode_split(split_of(XNLI, examples), XNLI, tiny_tokenizer(), 16)
    predictions = predict(FakeModel("classification"), split, 4)
    assert predictions == [XNLI.labels[(i + OFFSET) % 3] for i in range(10)]
    kind = kind_of(XNLI)
    expected = sum(p == ex.label for p, ex in zip(predictions, examples, strict=True)) * 10.0
    assert kind.score(split, predictions) == {"accuracy": expected}
    (tmp_path / "p.tsv").write_text(kind.format_predictions(split, predictions))
    (tmp_path / "g.tsv").write_text(kind.format_examples(split))
    assert kind.score_files(XNLI, tmp_path / "g.tsv", tmp_path / "p.tsv", None) == {"accuracy": expected}


# ---------------------------------------------------------------- extractive QA

CONTEXT = " ".join(f"w{i}" for i in range(10, 30))  # w10 ... w29


def qa_example(qid, answer_words, question="w5 w6"):
    text = " ".join(answer_words)
    return QAExample(qid, question, CONTEXT, (Answer(text, CONTEXT.index(text)),), f"f:{qid}")


QA_SETTINGS = EncodeSettings(max_length=14, doc_stride=3, max_query_length=3, n_best=5, max_answer_length=4)


def test_qa_windows_offsets_and_training_labels():
    example = qa_example("q", ["w17", "w18"], question="w5 w6 w7 w8 w9")
    split = encode_split(split_of(XQUAD, [example]), XQUAD, tiny_tokenizer(), QA_SETTINGS)
    assert split.stats["questions_truncated"] == 1  # cut to max_query_length = 3 tokens
    assert split.stats["sequences"] > 3  # a 20-word context in windows of 6 context tokens
    for r in range(len(split)):
        ids, starts, ends = (split.columns[c][r] for c in ("input_ids", "offset_start", "offset_end"))
        assert ids[1:4] == [OFFSET + 5, OFFSET + 6, OFFSET + 7]  # the question first, cut after 3 tokens
        context = [(s, e) for s, e in zip(starts, ends, strict=True) if s >= 0]
        assert all(CONTEXT[s:e] == f"w{ids[t] - OFFSET}" for t, (s, e) in enumerate(zip(starts, ends, strict=True)) if s >= 0)
        assert context, "every window holds some context"
        start, end = split.columns["labels"][r]
        if "w17" in [CONTEXT[s:e] for s, e in context] and "w18" in [CONTEXT[s:e] for s, e in context]:
            assert (ids[start], ids[end]) == (OFFSET + 17, OFFSET + 18)
        else:
            assert start == end == 0  # the CLS position
    assert split.stats["windows_without_answer"] == sum(1 for r in split.columns["labels"] if r == [0, 0])
    assert split.stats["questions_without_answer_window"] == 0


def test_qa_decoding_picks_the_best_valid_span_over_all_windows():
    examples = [qa_example("a", ["w17", "w18"], question="w17 w5"), qa_example("b", ["w12"])]
    split = encode_split(split_of(XQUAD, examples), XQUAD, tiny_tokenizer(), QA_SETTINGS)
    # start peaks at w17 (also in the question, which is not context), end at w18
    model = FakeModel("qa", start=OFFSET + 17, end=OFFSET + 18)
    assert predict(model, split, 3) == ["w17 w18", "w17 w18"]
    # an end before the start is invalid, and so is a span longer than max_answer_length (4 tokens)
    backwards = FakeModel("qa", start=OFFSET + 20, end=OFFSET + 12)
    assert predict(backwards, split, 3)[0] == "w20"  # the start alone (its end logit is 5) beats every valid pair
    far = FakeModel("qa", start=OFFSET + 11, end=OFFSET + 16)
    answer = predict(far, split, 3)[0]
    assert answer != "w11 w12 w13 w14 w15 w16" and len(answer.split()) <= 4


def test_qa_metrics_and_files_round_trip(tmp_path):
    examples = [qa_example("a", ["w17", "w18"]), qa_example("b", ["w12"]), qa_example("c", ["w20", "w21"])]
    split = encode_split(split_of(MLQA, examples, "de"), MLQA, tiny_tokenizer(), QA_SETTINGS)
    predictions = ["w17 w18", "w12 w13", ""]
    kind = kind_of(MLQA)
    # EM: 1 of 3; F1: 1 + 2/3 + 0 over 3
    assert kind.score(split, predictions) == pytest.approx({"f1": 500 / 9, "exact_match": 100 / 3})
    (tmp_path / "p.json").write_text(kind.format_predictions(split, predictions))
    assert json.loads((tmp_path / "p.json").read_text()) == {"a": "w17 w18", "b": "w12 w13", "c": ""}
    (tmp_path / "g.json").write_text(kind.format_examples(split))
    from_files = kind.score_files(MLQA, tmp_path / "g.json", tmp_path / "p.json", "de")
    assert from_files == pytest.approx(kind.score(split, predictions))
    written = kind.read_file(MLQA, tmp_path / "g.json", "de").examples  # gold written in the task's format
    assert [(e.id, e.question, e.context, e.answers) for e in written] == [
        (e.id, e.question, e.context, e.answers) for e in examples
    ]


def test_evaluate_sets_scores_every_language_with_the_kinds_metrics():
    sets = {
        lang: encode_split(split_of(POS, tagged(10, seed=i), lang), POS, tiny_tokenizer(), 16)
        for i, lang in enumerate(["en", "de"])
    }
    evaluation = evaluate_sets(FakeModel("tagging", classes=17), sets, batch_size=4)
    assert set(evaluation.scores) == {"en", "de"}
    assert all(set(s) == {"accuracy", "f1"} for s in evaluation.scores.values())
    assert all(s["accuracy"] == 100.0 for s in evaluation.scores.values())  # the fake model tags w_i as i+4 mod 17


# ---------------------------------------------------------------- registry


def test_kinds_are_registered_once_and_unknown_ones_are_listed():
    assert {k.name for k in map(get_kind, ("tagging", "classification", "span_extraction"))} == {
        "tagging", "classification", "span_extraction",
    }  # fmt: skip
    with pytest.raises(ValueError, match="already registered"):

        @register_kind
        class Again(TaskKind):
            name = "tagging"

    with pytest.raises(ValueError, match="unknown task kind 'parsing'"):
        get_kind("parsing")
