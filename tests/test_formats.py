from __future__ import annotations

from pathlib import Path

import pytest

from xlgap.data.formats import (
    DataFormatError,
    PairExample,
    TokenExample,
    read_conllu,
    read_pair_tsv,
    read_token_tags,
)
from xlgap.data.tasks import UPOS_TAGS, get_task

XNLI = get_task("xnli")
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def conllu_line(word_id: str, form: str, upos: str, n_columns: int = 10) -> str:
    cols = [word_id, form, form.lower(), upos, "_", "_", "0", "root", "_", "_"]
    return "\t".join(cols[:n_columns])


# ---------------------------------------------------------------- CoNLL-U


def test_conllu_words_tags_and_skipped_lines(tmp_path):
    text = "\n".join(
        [
            "# sent_id = 1",
            "# text = Im Haus.",
            conllu_line("1-2", "Im", "_"),
            conllu_line("1", "In", "ADP"),
            conllu_line("2", "dem", "DET"),
            conllu_line("3", "Haus", "NOUN"),
            conllu_line("3.1", "ist", "AUX"),
            conllu_line("4", ".", "PUNCT"),
            "",
            "# sent_id = 2",
            conllu_line("1", "Ja", "INTJ"),
            "",
        ]
    )
    result = read_conllu(write(tmp_path, "de_x-ud-test.conllu", text), UPOS_TAGS)
    assert result.examples == [
        TokenExample(("In", "dem", "Haus", "."), ("ADP", "DET", "NOUN", "PUNCT"), "de_x-ud-test.conllu:1"),
        TokenExample(("Ja",), ("INTJ",), "de_x-ud-test.conllu:10"),
    ]
    assert result.skipped == {"multiword-token lines": 1, "empty-node lines": 1}


def test_conllu_last_sentence_without_blank_line_and_crlf(tmp_path):
    text = conllu_line("1", "Hi", "INTJ") + "\r\n" + conllu_line("2", "!", "PUNCT")
    result = read_conllu(write(tmp_path, "a.conllu", text), UPOS_TAGS)
    assert result.examples[0].tokens == ("Hi", "!")
    assert result.examples[0].tags == ("INTJ", "PUNCT")


@pytest.mark.parametrize(
    ("lines", "bad_line", "expected"),
    [
        (
            [conllu_line("1", "a", "DET"), conllu_line("2", "b", "NOUN", n_columns=9)],
            3,
            "expected 10 tab-separated columns",
        ),
        ([conllu_line("1", "a", "DET"), conllu_line("x", "b", "NOUN")], 3, "ID 'x' is not a word index"),
        ([conllu_line("1", "a", "DET"), conllu_line("3", "b", "NOUN")], 3, "expected word ID 2, found 3"),
        (
            [conllu_line("1", "a", "DET"), conllu_line("2", "b", "NOUNS")],
            3,
            "unknown label 'NOUNS'; expected one of ADJ, ADP",
        ),
        (["# only a comment", ""], 1, "sentence without word lines"),
    ],
)
def test_conllu_errors_name_file_line_and_expectation(tmp_path, lines, bad_line, expected):
    path = write(tmp_path, "broken.conllu", "# sent_id = 1\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_conllu(path, UPOS_TAGS)
    message = str(err.value)
    assert "broken.conllu" in message
    assert f"line {bad_line}:" in message
    assert expected in message
    assert err.value.line == bad_line


# ---------------------------------------------------------------- token<TAB>tag


def test_token_tags_sentences_crlf_and_repeated_blank_lines(tmp_path):
    text = "Anton\tB-PER\r\nWilhelm\tI-PER\r\n\r\n\r\nin\tO\r\nBerlin\tB-LOC"
    result = read_token_tags(write(tmp_path, "dev-de.tsv", text), NER_TAGS, lang_prefix="de")
    assert result.examples == [
        TokenExample(("Anton", "Wilhelm"), ("B-PER", "I-PER"), "dev-de.tsv:1"),
        TokenExample(("in", "Berlin"), ("O", "B-LOC"), "dev-de.tsv:5"),
    ]
    assert not result.skipped


def test_token_tags_language_prefix_removed_only_when_every_token_has_it(tmp_path):
    prefixed = write(tmp_path, "a.tsv", "en:New\tB-LOC\nen:York\tI-LOC\n\nen:en:x\tO\n")
    assert [ex.tokens for ex in read_token_tags(prefixed, NER_TAGS, lang_prefix="en").examples] == [
        ("New", "York"),
        ("en:x",),
    ]
    mixed = write(tmp_path, "b.tsv", "en:New\tB-LOC\nYork\tI-LOC\n")
    assert read_token_tags(mixed, NER_TAGS, lang_prefix="en").examples[0].tokens == ("en:New", "York")


@pytest.mark.parametrize(
    ("text", "bad_line", "expected"),
    [
        ("a\tO\nb\tO\textra\n", 2, "expected 2 tab-separated columns (token, tag), found 3"),
        ("a\tO\nb O\n", 2, "expected 2 tab-separated columns (token, tag), found 1"),
        ("a\tO\n\nb\tB-MISC\n", 3, "unknown label 'B-MISC'; expected one of O, B-PER"),
        ("a\tO\n\tO\n", 2, "empty token"),
    ],
)
def test_token_tags_errors(tmp_path, text, bad_line, expected):
    path = write(tmp_path, "train-en.tsv", text)
    with pytest.raises(DataFormatError) as err:
        read_token_tags(path, NER_TAGS)
    assert "train-en.tsv" in str(err.value)
    assert f"line {bad_line}:" in str(err.value)
    assert expected in str(err.value)


# ---------------------------------------------------------------- pair TSV


def test_pair_tsv_aliases_crlf_and_counted_blank_lines(tmp_path):
    text = "A man.\tA person.\tentailment\r\n\r\nA dog.\tA cat.\tcontradictory\r\n"
    result = read_pair_tsv(write(tmp_path, "train-en.tsv", text), XNLI.labels, aliases=XNLI.aliases)
    assert result.examples == [
        PairExample("A man.", "A person.", "entailment", "train-en.tsv:1"),
        PairExample("A dog.", "A cat.", "contradiction", "train-en.tsv:3"),
    ]
    assert result.skipped == {"blank lines": 1}


def test_pair_tsv_with_header_and_named_columns(tmp_path):
    text = "id\tsentence1\tsentence2\tlabel\n7\tEins .\tZwei .\t1\n8\tDrei .\tVier .\t0\n"
    result = read_pair_tsv(
        write(tmp_path, "test-de.hf.tsv", text),
        ("0", "1"),
        columns=("sentence1", "sentence2", "label"),
        header=True,
    )
    assert [(ex.text_a, ex.text_b, ex.label, ex.source) for ex in result.examples] == [
        ("Eins .", "Zwei .", "1", "test-de.hf.tsv:2"),
        ("Drei .", "Vier .", "0", "test-de.hf.tsv:3"),
    ]


@pytest.mark.parametrize(
    ("text", "bad_line", "expected"),
    [
        ("a\tb\tneutral\na\tb\n", 2, "expected 3 tab-separated columns (text_a, text_b, label), found 2"),
        (
            "a\tb\tneutral\na\tb\tmaybe\n",
            2,
            "unknown label 'maybe'; expected one of entailment, neutral, contradiction",
        ),
    ],
)
def test_pair_tsv_errors(tmp_path, text, bad_line, expected):
    path = write(tmp_path, "dev-fr.tsv", text)
    with pytest.raises(DataFormatError) as err:
        read_pair_tsv(path, XNLI.labels)
    assert "dev-fr.tsv" in str(err.value)
    assert f"line {bad_line}:" in str(err.value)
    assert expected in str(err.value)


def test_pair_tsv_header_without_the_named_column(tmp_path):
    path = write(tmp_path, "test-de.hf.tsv", "id\ts1\ts2\tlabel\n1\ta\tb\t0\n")
    with pytest.raises(DataFormatError, match=r"test-de.hf.tsv, line 1: header has no column 'sentence1'"):
        read_pair_tsv(path, ("0", "1"), columns=("sentence1", "sentence2", "label"), header=True)


# ---------------------------------------------------------------- any file


@pytest.mark.parametrize(
    ("reader", "labels"),
    [(read_conllu, UPOS_TAGS), (read_token_tags, UPOS_TAGS), (read_pair_tsv, XNLI.labels)],
)
def test_empty_and_blank_files_are_errors(tmp_path, reader, labels):
    for name, text in [("empty.txt", ""), ("blank.txt", "\n \n\n")]:
        with pytest.raises(DataFormatError, match=rf"{name}, line 1: empty file; expected"):
            reader(write(tmp_path, name, text), labels)


@pytest.mark.parametrize(
    ("reader", "labels"),
    [(read_conllu, UPOS_TAGS), (read_token_tags, UPOS_TAGS), (read_pair_tsv, XNLI.labels)],
)
def test_non_utf8_file_names_the_line(tmp_path, reader, labels):
    path = write(tmp_path, "latin1.tsv", b"a\tb\tneutral\n" + "caf\xe9\tb\tneutral\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.tsv, line 2: not valid UTF-8"):
        reader(path, labels)


# ---------------------------------------------------------------- real files


def blocks(path: Path) -> list[list[str]]:
    """Blank-line-separated blocks of a file, counted independently of the readers."""
    return [b.splitlines() for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]


def test_udpos_train_en_slice(shared_data, tmp_path):
    source = shared_data / "udpos" / "train-en.tsv"
    head = blocks(source)[:300]
    sliced = write(tmp_path, "train-en.tsv", "\n\n".join("\n".join(b) for b in head) + "\n")
    examples = read_token_tags(sliced, UPOS_TAGS, lang_prefix="en").examples
    assert len(examples) == 300
    assert sum(len(ex.tokens) for ex in examples) == sum(len(b) for b in head)
    assert examples[0].tokens[:3] == ("Al", "-", "Zaman")
    assert examples[0].tags[:3] == ("PROPN", "PUNCT", "PROPN")
    assert all(len(ex.tokens) == len(ex.tags) for ex in examples)


def test_udpos_train_en_whole_file(shared_data):
    path = shared_data / "udpos" / "train-en.tsv"
    examples = read_token_tags(path, UPOS_TAGS).examples
    expected = blocks(path)
    assert len(examples) == len(expected) == 21253
    assert [ex.tokens for ex in examples] == [tuple(line.split("\t")[0] for line in b) for b in expected]


def test_ud_german_test_conllu(shared_data):
    path = shared_data / "ud" / "UD_German-GSD" / "de_gsd-ud-test.conllu"
    text = path.read_text(encoding="utf-8")
    result = read_conllu(path, UPOS_TAGS)
    assert len(result.examples) == text.count("# sent_id") == 977
    ranges = sum(1 for line in text.splitlines() if line.split("\t")[0].count("-") == 1 and "\t" in line)
    assert result.skipped["multiword-token lines"] == ranges > 0
    first = result.examples[0]
    assert first.tokens[:5] == ("Der", "Hauptgang", "war", "in", "Ordnung")
    assert first.tags[:5] == ("DET", "NOUN", "AUX", "ADP", "NOUN")
    assert first.source == "de_gsd-ud-test.conllu:1"


def test_xnli_dev_en(shared_data):
    result = read_pair_tsv(shared_data / "xnli" / "dev-en.tsv", XNLI.labels, aliases=XNLI.aliases)
    assert len(result.examples) == 2490
    first = result.examples[0]
    assert first.text_a == "And he said, Mama, I'm home."
    assert first.label == "neutral"
    assert not first.text_b.endswith("\r")
    counts = {label: sum(ex.label == label for ex in result.examples) for label in XNLI.labels}
    assert counts == {"entailment": 830, "neutral": 830, "contradiction": 830}


def test_panx_turkish_keeps_colon_tokens(shared_data):
    examples = read_token_tags(shared_data / "panx" / "test-tr.tsv", NER_TAGS, lang_prefix="tr").examples
    assert len(examples) == 10000
    assert any("at:1994" in ex.tokens for ex in examples)


def test_pawsx_hf_test_with_header(shared_data):
    result = read_pair_tsv(
        shared_data / "pawsx" / "test-de.hf.tsv",
        ("0", "1"),
        columns=("sentence1", "sentence2", "label"),
        header=True,
    )
    assert len(result.examples) == 2000
    assert result.examples[0].text_a.startswith("Die Ausnahme war")


def test_pawsx_header_is_detected_in_either_layout(shared_data):
    dev = read_pair_tsv(shared_data / "pawsx" / "dev-de.tsv", ("0", "1"), header=None)
    test = read_pair_tsv(shared_data / "pawsx" / "test-de.hf.tsv", ("0", "1"), header=None)
    assert len(dev.examples) == len(test.examples) == 2000
    assert test.examples[0].source == "test-de.hf.tsv:2"  # the header line is not an example
    assert dev.examples[0].source == "dev-de.tsv:1"


# ---------------------------------------------------------------- SQuAD JSON


def squad(*paragraphs) -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": list(paragraphs)}]}


def paragraph(context="Berlin is big.", qas=None):
    qas = qas if qas is not None else [{"id": "q1", "question": "What?", "answers": [{"text": "Berlin", "answer_start": 0}]}]
    return {"context": context, "qas": qas}


def test_squad_reader_examples_gzip_and_counted_unanswerable(tmp_path):
    import gzip
    import json

    from xlgap.data.squad import read_squad

    data = squad(
        paragraph(),
        paragraph("Paris is old.", [
            {"id": "q2", "question": "Which?", "answers": [{"text": "old", "answer_start": 9}, {"text": "is old", "answer_start": 6}]},
            {"id": "q3", "question": "Why?", "answers": [], "is_impossible": True},
        ]),
    )  # fmt: skip
    path = write(tmp_path, "dev.json.gz", gzip.compress(json.dumps(data).encode()))
    result = read_squad(path)
    assert [(ex.id, ex.question, [a.text for a in ex.answers]) for ex in result.examples] == [
        ("q1", "What?", ["Berlin"]),
        ("q2", "Which?", ["old", "is old"]),
    ]
    assert result.examples[1].source == "dev.json.gz: data[0].paragraphs[1].qas[0] (question id q2)"
    assert result.skipped == {"unanswerable questions (is_impossible)": 1}


@pytest.mark.parametrize(
    ("data", "where", "expected"),
    [
        ({"version": "1.1"}, r"\(top level\)", "missing 'data'"),
        ({"data": [{"title": "t"}]}, r"data\[0\]", "missing 'paragraphs'"),
        (squad({"context": "x"}), r"data\[0\].paragraphs\[0\]", "missing 'qas'"),
        (squad({"qas": []}), r"data\[0\].paragraphs\[0\]", "missing 'context'"),
        (squad(paragraph("  ")), r"data\[0\].paragraphs\[0\].context", "empty context"),
        (squad(paragraph(qas=[{"id": "q", "question": "?"}])), r"qas\[0\] \(question id q\)", "missing 'answers'"),
        (squad(paragraph(qas=[{"id": "q", "question": "?", "answers": []}])), r"qas\[0\].answers \(question id q\)", "no answers"),
        (squad(paragraph(qas=[{"question": "?", "answers": []}])), r"qas\[0\]", "missing 'id'"),
        (squad(paragraph(qas=[{"id": "q", "question": " ", "answers": []}])), r"qas\[0\] \(question id q\)", "empty question"),
        (
            squad(paragraph(qas=[{"id": "q", "question": "?", "answers": [{"text": "Paris", "answer_start": 0}]}])),
            r"answers\[0\] \(question id q\)",
            "answer text 'Paris' is not at answer_start 0 of the context \\(found 'Berli'\\)",
        ),
        (
            squad(paragraph(qas=[{"id": "q", "question": "?", "answers": [{"text": "Berlin", "answer_start": "0"}]}])),
            r"answers\[0\].answer_start \(question id q\)",
            "expected an integer",
        ),
        (squad(paragraph(qas={"id": "q"})), r"paragraphs\[0\].qas", "expected a list"),
    ],
)
def test_squad_reader_errors_name_the_json_path(tmp_path, data, where, expected):
    import json

    from xlgap.data.squad import read_squad

    path = write(tmp_path, "xquad.de.json", json.dumps(data))
    with pytest.raises(DataFormatError, match=rf"xquad.de.json, JSON path [^ ]*{where}: {expected}"):
        read_squad(path)


def test_squad_reader_broken_json_and_gzip(tmp_path):
    from xlgap.data.squad import read_squad

    with pytest.raises(DataFormatError, match=r"broken.json, line 3: not valid JSON \(Expecting"):
        read_squad(write(tmp_path, "broken.json", '{"data": [\n  {"paragraphs": []},\n  oops\n]}'))
    with pytest.raises(DataFormatError, match=r"plain.json.gz, line 1: the name ends in .gz but the file is not valid gzip"):
        read_squad(write(tmp_path, "plain.json.gz", '{"data": []}'))
    with pytest.raises(DataFormatError, match=r"none.json, JSON path data: no questions found"):
        read_squad(write(tmp_path, "none.json", '{"data": []}'))


def test_real_squad_files_read_whole(shared_data):
    from xlgap.data.squad import read_squad

    assert len(read_squad(shared_data / "xquad" / "xquad.th.json").examples) == 1190
    assert len(read_squad(shared_data / "mlqa" / "dev-context-zh-question-zh.json").examples) == 504
    tydiqa = read_squad(shared_data / "tydiqa" / "tydiqa.goldp.en.train.json").examples
    assert len(tydiqa) == 3696 and len({ex.id for ex in tydiqa}) < 3696  # this copy repeats ids; all are kept


def test_gzipped_token_tag_file(tmp_path):
    import gzip

    path = write(tmp_path, "train-en.tsv.gz", gzip.compress(b"Anna\tB-PER\n\nlebt\tO\n"))
    assert [ex.tags for ex in read_token_tags(path, NER_TAGS).examples] == [("B-PER",), ("O",)]
