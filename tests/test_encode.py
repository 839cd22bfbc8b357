from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from xlgap.data.formats import PairExample, TokenExample
from xlgap.data.sources import Origin, SplitData
from xlgap.data.tasks import get_task
from xlgap.kinds import IGNORE_INDEX, encode_split, kind_of, load_split

UDPOS = get_task("udpos")
XNLI = get_task("xnli")
L2I = UDPOS.label2id
PAD, UNK, BOS, EOS = 0, 1, 2, 3
VOCAB = {
    "<pad>": PAD, "<unk>": UNK, "<s>": BOS, "</s>": EOS, "the": 4, "cat": 5, "sat": 6, "un": 7,
    "##believ": 8, "##able": 9, "a": 10, "b": 11, "dog": 12, "##s": 13,
}  # fmt: skip
X = IGNORE_INDEX


def wrap(model: Tokenizer) -> PreTrainedTokenizerFast:
    """XLM-R-like specials around any tokenizers model: <s> A </s> and <s> A </s> </s> B </s>."""
    model.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", BOS), ("</s>", EOS)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=model, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer whose normalizer deletes zero-width and combining-only words entirely."""
    model = Tokenizer(models.WordPiece(VOCAB, unk_token="<unk>"))
    model.normalizer = normalizers.Sequence(
        [
            normalizers.BertNormalizer(
                clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False
            ),
            normalizers.NFD(),
            normalizers.StripAccents(),
        ]
    )
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return wrap(model)


def tagged(*sentences: list[tuple[str, str]]) -> SplitData:
    examples = [
        TokenExample(tuple(w for w, _ in s), tuple(t for _, t in s), f"s:{i}")
        for i, s in enumerate(sentences)
    ]
    return SplitData("udpos", "en", "test", examples, Origin(files=("s",)))


def rows(encoded) -> list[dict]:
    return [{k: v[i] for k, v in encoded.columns.items()} for i in range(len(encoded))]


def test_first_subword_carries_the_label(tokenizer):
    split = tagged([("the", "DET"), ("unbelievable", "ADJ"), ("cat", "NOUN")])
    encoded = encode_split(split, UDPOS, tokenizer, 16)
    assert rows(encoded) == [
        {
            "input_ids": [BOS, 4, 7, 8, 9, 5, EOS],
            "attention_mask": [1] * 7,
            "labels": [X, L2I["DET"], L2I["ADJ"], X, X, L2I["NOUN"], X],
            "word_ids": [-1, 0, 1, -1, -1, 2, -1],
            "length": 7,
            "example_index": 0,
        }
    ]
    assert encoded.stats == {
        "examples": 1, "sequences": 1, "tokens": 7, "truncated": 0, "split_examples": 0,
        "words": 3, "words_unk": 0, "words_cut": 0,
    }  # fmt: skip
    assert (encoded.task.name, encoded.language, encoded.split, encoded.origin) == (
        "udpos",
        "en",
        "test",
        split.origin,
    )


@pytest.mark.parametrize("empty_word", ["\u200b", "\u0301", "\u200b\u0301"])
def test_word_without_tokens_becomes_unk_and_keeps_its_label(tokenizer, empty_word):
    split = tagged([("the", "DET"), (empty_word, "SYM"), ("cat", "NOUN")])
    encoded = encode_split(split, UDPOS, tokenizer, 16)
    (row,) = rows(encoded)
    assert row["input_ids"] == [BOS, 4, UNK, 5, EOS]
    assert row["labels"] == [X, L2I["DET"], L2I["SYM"], L2I["NOUN"], X]
    assert encoded.stats["words_unk"] == 1


def test_long_sentence_is_split_into_windows_at_word_boundaries(tokenizer):
    words = [
        ("the", "DET"),
        ("unbelievable", "ADJ"),
        ("cat", "NOUN"),
        ("sat", "VERB"),
        ("the", "DET"),
        ("dogs", "NOUN"),
    ]
    encoded = encode_split(tagged(words, [("a", "X")]), UDPOS, tokenizer, 6)
    assert rows(encoded) == [
        {
            "input_ids": [BOS, 4, 7, 8, 9, EOS],
            "attention_mask": [1] * 6,
            "labels": [X, L2I["DET"], L2I["ADJ"], X, X, X],
            "word_ids": [-1, 0, 1, -1, -1, -1],
            "length": 6,
            "example_index": 0,
        },
        {
            "input_ids": [BOS, 5, 6, 4, EOS],
            "attention_mask": [1] * 5,
            "labels": [X, L2I["NOUN"], L2I["VERB"], L2I["DET"], X],
            "word_ids": [-1, 2, 3, 4, -1],
            "length": 5,
            "example_index": 0,
        },
        {
            "input_ids": [BOS, 12, 13, EOS],
            "attention_mask": [1] * 4,
            "labels": [X, L2I["NOUN"], X, X],
            "word_ids": [-1, 5, -1, -1],
            "length": 4,
            "example_index": 0,
        },
        {
            "input_ids": [BOS, 10, EOS],
            "attention_mask": [1] * 3,
            "labels": [X, L2I["X"], X],
            "word_ids": [-1, 0, -1],
            "length": 3,
            "example_index": 1,
        },
    ]
    assert encoded.stats["split_examples"] == 1
    assert encoded.stats["sequences"] == 4
    assert encoded.stats["truncated"] == 0


def test_word_longer_than_a_window_keeps_its_first_subwords(tokenizer):
    split = tagged([("a", "X"), ("unbelievable", "ADJ"), ("b", "X")])
    encoded = encode_split(split, UDPOS, tokenizer, 4)
    assert [r["input_ids"] for r in rows(encoded)] == [[BOS, 10, EOS], [BOS, 7, 8, EOS], [BOS, 11, EOS]]
    assert [r["labels"] for r in rows(encoded)] == [[X, L2I["X"], X], [X, L2I["ADJ"], X, X], [X, L2I["X"], X]]
    assert (encoded.stats["words_cut"], encoded.stats["truncated"]) == (1, 1)


def test_windows_label_every_word_exactly_once(tokenizer):
    rng = random.Random(0)
    pool = ["the", "cat", "sat", "unbelievable", "dogs", "a", "b", "\u200b", "zzz"]
    sentences = [
        [(rng.choice(pool), rng.choice(UDPOS.labels)) for _ in range(rng.randint(1, 40))] for _ in range(200)
    ]
    for max_length in (3, 5, 8, 64):
        encoded = encode_split(tagged(*sentences), UDPOS, tokenizer, max_length)
        labelled: dict[int, list[int]] = {}
        for row in rows(encoded):
            assert len(row["input_ids"]) == row["length"] <= max_length
            assert row["input_ids"][0] == BOS and row["input_ids"][-1] == EOS
            labelled.setdefault(row["example_index"], []).extend(i for i in row["labels"] if i != X)
        assert labelled == {i: [L2I[t] for _, t in s] for i, s in enumerate(sentences)}


def test_max_length_without_room_for_words(tokenizer):
    with pytest.raises(ValueError, match="max_length 2 leaves no room"):
        encode_split(tagged([("a", "X")]), UDPOS, tokenizer, 2)


def test_slow_tokenizer_and_wrong_task_are_errors(tokenizer):
    with pytest.raises(TypeError, match="fast"):
        encode_split(tagged([("a", "X")]), UDPOS, object(), 8)
    with pytest.raises(ValueError, match="split of task 'udpos' encoded as task 'xnli'"):
        encode_split(tagged([("a", "X")]), XNLI, tokenizer, 8)


def test_pairs_are_truncated_longest_first_and_counted(tokenizer):
    examples = [
        PairExample("the cat", "a b", "neutral"),
        PairExample("the cat sat the cat sat", "a", "contradiction"),
    ]
    split = SplitData("xnli", "en", "dev", examples, Origin(files=("p",)))
    encoded = encode_split(split, XNLI, tokenizer, 9)
    assert rows(encoded) == [
        {
            "input_ids": [BOS, 4, 5, EOS, EOS, 10, 11, EOS],
            "attention_mask": [1] * 8,
            "labels": 1,
            "length": 8,
            "example_index": 0,
        },
        {
            "input_ids": [BOS, 4, 5, 6, 4, EOS, EOS, 10, EOS],
            "attention_mask": [1] * 9,
            "labels": 2,
            "length": 9,
            "example_index": 1,
        },
    ]
    assert (encoded.stats["truncated"], encoded.stats["sequences"], encoded.stats["tokens"]) == (1, 2, 17)


def test_label_maps_and_collators(tokenizer):
    assert XNLI.label2id == {"entailment": 0, "neutral": 1, "contradiction": 2}
    assert XNLI.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}

    split = tagged([("the", "DET")], [("the", "DET"), ("unbelievable", "ADJ")])
    features = [
        {k: r[k] for k in ("input_ids", "attention_mask", "labels")}
        for r in rows(encode_split(split, UDPOS, tokenizer, 16))
    ]
    batch = kind_of(UDPOS).collator(tokenizer)(features)
    assert batch["input_ids"].tolist() == [[BOS, 4, EOS, PAD, PAD, PAD], [BOS, 4, 7, 8, 9, EOS]]
    assert batch["labels"][0].tolist() == [X, L2I["DET"], X, X, X, X]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]

    pairs = SplitData(
        "xnli",
        "en",
        "dev",
        [PairExample("the", "a", "neutral"), PairExample("the cat", "a b", "entailment")],
        Origin(),
    )
    features = [
        {k: r[k] for k in ("input_ids", "attention_mask", "labels")}
        for r in rows(encode_split(pairs, XNLI, tokenizer, 16))
    ]
    batch = kind_of(XNLI).collator(tokenizer)(features)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"].tolist() == [1, 0]


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def trained_tokenizer(shared_data) -> PreTrainedTokenizerFast:
    """A 2,000-piece WordPiece tokenizer trained on the English UD training words (about a second)."""
    train = load_split("udpos", "en", "train", data_dir=shared_data)
    model = Tokenizer(models.WordPiece(unk_token="<unk>"))
    model.normalizer = normalizers.BertNormalizer(lowercase=False)
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=2000, special_tokens=["<pad>", "<unk>", "<s>", "</s>"])
    model.train_from_iterator((" ".join(ex.tokens) for ex in train.examples[:5000]), trainer)
    return wrap(model)


@pytest.mark.parametrize("language", ["de", "ar"])
def test_real_udpos_test_sets_label_every_word_once(shared_data, trained_tokenizer, language):
    split = load_split("udpos", language, "test", data_dir=shared_data)
    encoded = encode_split(split, UDPOS, trained_tokenizer, 32)
    labels = encoded.columns["labels"]
    assert sum(sum(1 for i in row if i != X) for row in labels) == sum(
        len(ex.tokens) for ex in split.examples
    )
    assert max(encoded.columns["length"]) <= 32
    assert sorted(set(encoded.columns["example_index"])) == list(range(len(split.examples)))
    assert encoded.stats["split_examples"] > 0
    assert encoded.stats["words"] == sum(len(ex.tokens) for ex in split.examples)


def test_real_xnli_dev_pairs(shared_data, trained_tokenizer):
    split = load_split("xnli", "de", "dev", data_dir=shared_data)
    encoded = encode_split(split, XNLI, trained_tokenizer, 48)
    assert len(encoded) == 2490
    assert max(encoded.columns["length"]) <= 48
    assert 0 < encoded.stats["truncated"] < 2490
    assert encoded.columns["labels"][:3] == [XNLI.label2id[ex.label] for ex in split.examples[:3]]
