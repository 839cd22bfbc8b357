from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pytest

from xlgap.data.formats import DataFormatError, PairExample, TokenExample
from xlgap.data.sampling import subsample, subsample_indices, subsample_split
from xlgap.data.sources import (
    DataSourceError,
    HubUnreachableError,
    Origin,
    SplitData,
    SplitNotFoundError,
    available_languages,
)
from xlgap.data.tasks import UPOS_TAGS, HubLayout, LocalLayout, TaskSpec, get_task, per_split, task_names
from xlgap.kinds import load_split
from xlgap.languages import UnknownLanguageError

UDPOS = get_task("udpos")
XNLI = get_task("xnli")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def conllu(*sentences: list[tuple[str, str]]) -> str:
    blocks = []
    for words in sentences:
        lines = [f"{i}\t{w}\t{w}\t{t}\t_\t_\t0\troot\t_\t_" for i, (w, t) in enumerate(words, 1)]
        blocks.append("\n".join(["# sent_id = x", *lines]) + "\n")
    return "\n".join(blocks) + "\n"


# ---------------------------------------------------------------- tasks


def test_catalog_has_every_xtreme_task_and_errors_list_them():
    assert task_names() == ["mlqa", "panx", "pawsx", "tydiqa", "udpos", "xnli", "xquad"]
    assert UDPOS.kind == "tagging" and len(UDPOS.labels) == 17
    assert get_task("panx").labels == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
    assert XNLI.labels == ("entailment", "neutral", "contradiction")
    assert XNLI.aliases == {"contradictory": "contradiction"}
    # the first metric is the one model selection uses; POS reports XTREME's seqeval F1 beside accuracy
    assert UDPOS.metrics == ("accuracy", "f1") and UDPOS.metric == XNLI.metric == "accuracy"
    assert get_task("panx").metric == "f1" and get_task("mlqa").metrics == ("f1", "exact_match")
    assert get_task("mlqa").option("answers") == "mlqa" and get_task("xquad").option("answers") == "squad"
    with pytest.raises(KeyError, match="unknown task 'pos'; known tasks: .*udpos.*xnli"):
        get_task("pos")


def test_hub_layout_names():
    (layout,) = UDPOS.hub
    assert layout.config_for("de") == "udpos.German"
    assert layout.split_for("dev") == "validation"
    assert XNLI.hub_for("dev", "sw").config_for("sw") == "sw"
    xquad = get_task("xquad")
    assert xquad.hub_for("train", "en").repo == "rajpurkar/squad"
    assert xquad.hub_for("train", "de") is None  # SQuAD is English only
    assert xquad.hub_for("test", "de").config_for("de") == "XQuAD.de"
    assert xquad.hub_for("test", "de").split_for("test") == "validation"
    assert get_task("mlqa").hub_for("dev", "zh").config_for("zh") == "MLQA.zh.zh"
    assert get_task("tydiqa").hub_for("test", "fi").prefix_for("fi") == "finnish-"


def test_task_spec_validation():
    layout = (LocalLayout(per_split("x/{split}-{lang}.tsv")), (HubLayout("r", "{code}", ("a", "b")),))
    with pytest.raises(ValueError, match="alias 'b' maps to 'C'"):
        TaskSpec("t", "tagging", ("en",), *layout, labels=("A",), label_aliases=(("b", "C"),))
    with pytest.raises(UnknownLanguageError, match="task 't' languages"):
        TaskSpec("t", "tagging", ("en", "xx"), *layout, labels=("A",))
    with pytest.raises(ValueError, match="at least one metric"):
        TaskSpec("t", "tagging", ("en",), *layout, labels=("A",), metrics=())
    with pytest.raises(ValueError, match="unknown task kind 'parsing'; known kinds: classification, span_extraction, tagging"):
        load_split(TaskSpec("t", "parsing", ("en",), *layout), "en", "dev")


# ---------------------------------------------------------------- explicit files


def test_explicit_files_by_extension_and_task(tmp_path):
    files = {
        "train.en": write(tmp_path / "mine.tsv", "I\tPRON\nran\tVERB\n"),
        "test.de": write(tmp_path / "de.conllu", conllu([("Ja", "INTJ")])),
    }
    train = load_split("udpos", "en", "train", files=files)
    assert train.examples == [TokenExample(("I", "ran"), ("PRON", "VERB"), "mine.tsv:1")]
    assert train.origin == Origin(files=(str(files["train.en"].resolve()),))
    test = load_split("udpos", "de", "test", files=files)
    assert test.examples[0].tokens == ("Ja",)

    pairs = {"dev.fr": write(tmp_path / "fr.tsv", "a\tb\tcontradictory\n")}
    dev = load_split(XNLI, "fr", "dev", files=pairs)
    assert dev.examples == [PairExample("a", "b", "contradiction", "fr.tsv:1")]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"trian.en": "x"}, r"data.files\['trian.en'\]: keys must read '<split>.<lang>'"),
        ({"train": "x"}, r"data.files\['train'\]: keys must read"),
        ({"train.xx": "x"}, r"data.files\['train.xx'\]: unknown language code 'xx'"),
    ],
)
def test_explicit_file_keys_are_checked(files, expected):
    from xlgap.utils.errors import UserError

    with pytest.raises(UserError, match=expected):
        load_split("udpos", "en", "train", files=files)


def test_explicit_file_that_does_not_exist_or_is_a_folder_or_null(tmp_path):
    with pytest.raises(DataSourceError, match=r"data.files\['dev.en'\]: .*missing.tsv does not exist"):
        load_split("udpos", "en", "dev", files={"dev.en": tmp_path / "missing.tsv"})
    with pytest.raises(DataSourceError, match=r"data.files\['dev.en'\]: .* is a folder, not a file"):
        load_split("udpos", "en", "dev", files={"dev.en": tmp_path})
    with pytest.raises(SplitNotFoundError, match=r"data.files\['dev.en'\] is null"):
        load_split("udpos", "en", "dev", files={"dev.en": None}, data_dir=tmp_path)


# ---------------------------------------------------------------- local folder


def test_local_udpos_tsv_is_preferred_over_treebanks(tmp_path):
    write(tmp_path / "udpos" / "test-de.tsv", "Ja\tINTJ\n")
    write(tmp_path / "ud" / "UD_German-GSD" / "de_gsd-ud-test.conllu", conllu([("Nein", "INTJ")]))
    split = load_split("udpos", "de", "test", data_dir=tmp_path)
    assert split.examples[0].tokens == ("Ja",)
    assert split.origin.files == (str((tmp_path / "udpos" / "test-de.tsv").resolve()),)


def test_local_ud_treebanks_of_a_language_are_merged_in_sorted_order(tmp_path):
    hdt = write(tmp_path / "ud" / "UD_German-HDT" / "de_hdt-ud-dev.conllu", conllu([("B", "X")]))
    gsd = write(
        tmp_path / "ud" / "UD_German-GSD" / "de_gsd-ud-dev.conllu",
        conllu([("A", "X")]).replace("1\tA", "1-2\tAx\t_\t_\t_\t_\t_\t_\t_\t_\n1\tA"),
    )
    write(tmp_path / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu", conllu([("E", "X")]))
    split = load_split("udpos", "de", "dev", data_dir=tmp_path)
    assert [ex.tokens for ex in split.examples] == [("A",), ("B",)]
    assert split.origin.files == (str(gsd.resolve()), str(hdt.resolve()))
    assert split.skipped == {"multiword-token lines": 1}


def test_xnli_local_folder(tmp_path):
    write(tmp_path / "xnli" / "test-de.tsv", "a\tb\tneutral\n")
    assert load_split("xnli", "de", "test", data_dir=tmp_path).examples[0].label == "neutral"


def test_nothing_found_lists_every_path_tried_and_what_to_set(tmp_path):
    (tmp_path / "udpos").mkdir()
    with pytest.raises(DataSourceError) as err:
        load_split("udpos", "de", "train", data_dir=tmp_path)
    message = str(err.value)
    assert "no udpos train data for language 'de'" in message
    assert "data.files['train.de'] (not set)" in message
    assert f"{tmp_path / 'udpos' / 'train-de.tsv'} (not found)" in message
    assert f"{tmp_path / 'ud/UD_*/de_*-ud-train.conllu'} (no match)" in message
    assert "hub google/xtreme config udpos.German (hub not enabled)" in message
    assert "Set data.files['train.de']" in message and "data.dir" in message and "data.hub" in message


def test_no_source_at_all():
    with pytest.raises(DataSourceError, match=r"data.dir \(not set\)"):
        load_split("xnli", "en", "train")


def test_missing_data_dir_and_bad_arguments(tmp_path):
    with pytest.raises(DataSourceError, match=r"data directory .*nowhere does not exist"):
        load_split("xnli", "en", "dev", data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown split 'validation'; expected one of train, dev, test"):
        load_split("xnli", "en", "validation", data_dir=tmp_path)
    with pytest.raises(UnknownLanguageError, match="xnli dev language: unknown language code 'eng'"):
        load_split("xnli", "eng", "dev", data_dir=tmp_path)


def test_available_languages(tmp_path):
    write(tmp_path / "udpos" / "test-ar.tsv", "x\tX\n")
    write(tmp_path / "udpos" / "dev-fr.tsv", "x\tX\n")
    write(tmp_path / "udpos" / "test-notes.txt", "")
    write(tmp_path / "ud" / "UD_German-GSD" / "de_gsd-ud-test.conllu", "")
    write(tmp_path / "ud" / "UD_German-HDT" / "de_hdt-ud-test.conllu", "")
    write(tmp_path / "xnli" / "test-de.hf.tsv", "")
    write(tmp_path / "xnli" / "test-zh.tsv", "")
    write(tmp_path / "pawsx" / "test-de.hf.tsv", "")
    write(tmp_path / "pawsx" / "test-ko.tsv", "")
    write(tmp_path / "mlqa" / "dev-context-vi-question-vi.json", "")
    write(tmp_path / "mlqa" / "dev-context-vi-question-de.json", "")  # cross-lingual pairs are not MLQA.<l>.<l>
    write(tmp_path / "mlqa" / "MLQA_V1" / "dev" / "dev-context-zh-question-zh.json", "")
    write(tmp_path / "squad" / "train-v1.1.json", "")
    write(tmp_path / "xquad" / "xquad.th.json", "")
    assert available_languages("udpos", "test", tmp_path) == ["ar", "de"]
    assert available_languages("udpos", "dev", tmp_path) == ["fr"]
    assert available_languages("xnli", "test", tmp_path) == ["zh"]
    assert available_languages("xnli", "train", tmp_path) == []
    assert available_languages("pawsx", "test", tmp_path) == ["de", "ko"]
    assert available_languages("mlqa", "dev", tmp_path) == ["vi", "zh"]
    assert available_languages("xquad", "train", tmp_path) == ["en"]
    assert available_languages("xquad", "test", tmp_path) == ["th"]


# ---------------------------------------------------------------- hub (offline, hub-like local folders)


def make_hub_repo(root: Path, configs: dict[str, dict[str, datasets.Dataset]]) -> Path:
    """A folder laid out like a hub dataset repo: parquet files per config, declared in README.md."""
    yaml = ["---", "configs:"]
    for config, splits in configs.items():
        yaml += [f"- config_name: {config}", "  data_files:"]
        for split, dataset in splits.items():
            dataset.to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
            yaml += [f"  - split: {split}", f"    path: {config}/{split}-*.parquet"]
    write(root / "README.md", "\n".join([*yaml, "---", ""]))
    return root


def test_hub_udpos_offline(tmp_path):
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "pos_tags": datasets.List(datasets.ClassLabel(names=list(UPOS_TAGS))),
        }
    )
    german = datasets.Dataset.from_dict(
        {"tokens": [["Der", "Hund"], [], ["bellt"]], "pos_tags": [[5, 7], [], [15]]}, features=features
    )
    as_strings = datasets.Dataset.from_dict({"tokens": [["Hi"]], "pos_tags": [["INTJ"]]})
    repo = make_hub_repo(
        tmp_path / "xtreme", {"udpos.German": {"test": german}, "udpos.English": {"validation": as_strings}}
    )
    split = load_split("udpos", "de", "test", hub=True, hub_repo=str(repo), cache_dir=tmp_path / "cache")
    assert [(ex.tokens, ex.tags) for ex in split.examples] == [
        (("Der", "Hund"), ("DET", "NOUN")),
        (("bellt",), ("VERB",)),
    ]
    assert split.skipped == {"empty sentences": 1}
    assert split.origin == Origin(hub_repo=str(repo), hub_config="udpos.German", hub_split="test")
    assert split.examples[1].source.endswith("#2")
    dev = load_split("udpos", "en", "dev", hub_repo=str(repo), cache_dir=tmp_path / "cache")
    assert dev.examples[0].tags == ("INTJ",)
    with pytest.raises(DataSourceError, match=r"config 'udpos.French'.*udpos.French"):
        load_split("udpos", "fr", "test", hub=True, hub_repo=str(repo), cache_dir=tmp_path / "cache")


def test_hub_xnli_offline(tmp_path):
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        }
    )
    rows = {"premise": ["P1", "P2"], "hypothesis": ["H1", "H2"], "label": [2, 0]}
    repo = make_hub_repo(
        tmp_path / "xnli", {"de": {"validation": datasets.Dataset.from_dict(rows, features=features)}}
    )
    split = load_split("xnli", "de", "dev", hub=True, hub_repo=str(repo), cache_dir=tmp_path / "cache")
    assert [(ex.text_a, ex.text_b, ex.label) for ex in split.examples] == [
        ("P1", "H1", "contradiction"),
        ("P2", "H2", "entailment"),
    ]
    assert split.origin.to_dict() == {"hub_repo": str(repo), "hub_config": "de", "hub_split": "validation"}


def test_hub_rows_with_wrong_columns(tmp_path):
    repo = make_hub_repo(
        tmp_path / "r", {"en": {"test": datasets.Dataset.from_dict({"s1": ["a"], "s2": ["b"]})}}
    )
    with pytest.raises(DataSourceError, match="expected columns premise, hypothesis, label; missing"):
        load_split("xnli", "en", "test", hub_repo=str(repo), cache_dir=tmp_path / "cache")


def test_hub_panx_and_pawsx_offline(tmp_path):
    tags = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=list(get_task("panx").labels))),
            "langs": datasets.List(datasets.Value("string")),
        }
    )
    panx = datasets.Dataset.from_dict({"tokens": [["Anna", "lebt"]], "ner_tags": [[1, 0]], "langs": [["de", "de"]]}, features=tags)
    pairs = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [1]})
    repo = make_hub_repo(tmp_path / "xtreme", {"PAN-X.de": {"validation": panx}, "PAWS-X.de": {"test": pairs}})
    dev = load_split("panx", "de", "dev", hub_repo=str(repo), cache_dir=tmp_path / "cache")
    assert [(ex.tokens, ex.tags) for ex in dev.examples] == [(("Anna", "lebt"), ("B-PER", "O"))]
    test = load_split("pawsx", "de", "test", hub_repo=str(repo), cache_dir=tmp_path / "cache")
    assert [(ex.text_a, ex.text_b, ex.label) for ex in test.examples] == [("a", "b", "1")]


def qa_rows(ids, contexts, questions, answers):
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int32"))},
        }
    )
    rows = {"id": ids, "context": contexts, "question": questions, "answers": answers}
    return datasets.Dataset.from_dict(rows, features=features)


def test_hub_qa_offline_xquad_and_tydiqa_languages_by_id(tmp_path):
    xquad = qa_rows(["q1"], ["Berlin ist groß."], ["Was ist groß?"], [{"text": ["Berlin"], "answer_start": [0]}])
    tydiqa = qa_rows(
        ["finnish-1-0", "english-2-0", "finnish-3-1"],
        ["Helsinki on kaupunki.", "Paris is a city.", "Oulu on kaupunki."],
        ["Mikä?", "What?", "Mikä?"],
        [{"text": ["Helsinki"], "answer_start": [0]}, {"text": ["Paris"], "answer_start": [0]}, {"text": [], "answer_start": []}],
    )
    repo = make_hub_repo(tmp_path / "xtreme", {"XQuAD.de": {"validation": xquad}, "tydiqa": {"validation": tydiqa}})
    test = load_split("xquad", "de", "test", hub_repo=str(repo), cache_dir=tmp_path / "cache")
    (example,) = test.examples
    assert (example.id, example.answers[0].text, example.answers[0].start) == ("q1", "Berlin", 0)
    assert test.origin.hub_split == "validation"
    finnish = load_split("tydiqa", "fi", "test", hub_repo=str(repo), cache_dir=tmp_path / "cache")
    assert [ex.id for ex in finnish.examples] == ["finnish-1-0"]
    assert finnish.skipped == {"questions without an answer": 1}
    assert finnish.origin.subset == "2 of 3 rows, ids starting with 'finnish-'"
    wrong = qa_rows(["q"], ["Berlin ist groß."], ["?"], [{"text": ["Bonn"], "answer_start": [0]}])
    repo = make_hub_repo(tmp_path / "bad", {"XQuAD.de": {"validation": wrong}})
    with pytest.raises(DataFormatError, match="row 0: answer text 'Bonn' is not at answer_start 0"):
        load_split("xquad", "de", "test", hub_repo=str(repo), cache_dir=tmp_path / "cache")


def test_local_data_wins_over_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", pytest.fail)
    write(tmp_path / "xnli" / "dev-en.tsv", "a\tb\tneutral\n")
    assert load_split("xnli", "en", "dev", data_dir=tmp_path, hub=True).origin.files


def test_hub_unreachable_says_what_to_set(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'google/xtreme' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubUnreachableError) as err:
        load_split("udpos", "de", "test", hub=True)
    message = str(err.value)
    assert "could not reach the Hugging Face hub" in message
    assert "'google/xtreme' config 'udpos.German' split 'test'" in message
    assert "data.dir" in message and "data.files['test.de']" in message


# ---------------------------------------------------------------- real folder


def test_shared_data_folder(shared_data):
    german = load_split("udpos", "de", "test", data_dir=shared_data)
    assert german.origin.files == (str(shared_data / "ud" / "UD_German-GSD" / "de_gsd-ud-test.conllu"),)
    assert len(german) == 977
    arabic = load_split("udpos", "ar", "test", data_dir=shared_data)
    assert arabic.origin.files == (str(shared_data / "udpos" / "test-ar.tsv"),)
    assert (
        len(arabic) == (shared_data / "udpos" / "test-ar.tsv").read_text(encoding="utf-8").count("\n\n") + 1
    )
    assert "de" in available_languages("udpos", "test", shared_data)
    assert "hi" in available_languages("udpos", "test", shared_data)
    assert available_languages("xnli", "dev", shared_data) == sorted(XNLI.languages)


# ---------------------------------------------------------------- sampling


def test_subsample_is_deterministic_nested_and_ordered():
    first = subsample_indices(1000, 50, seed=3)
    assert first == subsample_indices(1000, 50, seed=3)
    assert first == sorted(first) and len(set(first)) == 50
    assert first != subsample_indices(1000, 50, seed=4)
    assert set(subsample_indices(1000, 20, seed=3)) <= set(first)
    items = [f"x{i}" for i in range(1000)]
    assert subsample(items, 50, seed=3) == [items[i] for i in first]


def test_subsample_pinned_values():
    # Pinned so that a change of the sampling scheme (which would change every subset) is noticed.
    assert subsample_indices(10, 3, seed=0) == [6, 7, 8]
    assert subsample_indices(100, 5, seed=42) == [26, 37, 70, 84, 96]


def test_subsample_larger_than_data_returns_all_with_a_note(caplog):
    with caplog.at_level(logging.WARNING):
        assert subsample([1, 2, 3], 10, seed=0, name="dev.de examples") == [1, 2, 3]
    assert "asked for 10 dev.de examples but there are only 3" in caplog.text
    with pytest.raises(ValueError, match="at least 1"):
        subsample([1, 2], 0, seed=0)


def test_subsample_split_records_the_subset():
    split = SplitData(
        "xnli", "en", "dev", [PairExample(str(i), "b", "neutral") for i in range(10)], Origin(files=("f",))
    )
    sub = subsample_split(split, 4, seed=1)
    assert len(sub) == 4 and len(split) == 10
    assert sub.origin.files == ("f",)
    assert sub.origin.subset == "4 of 10 examples, seed 1"
    assert str(sub.origin) == "f (4 of 10 examples, seed 1)"
