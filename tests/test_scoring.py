"""`xlgap score` and the in-training metrics against the official scripts: worked examples whose official
result is computed by hand, and differential tests on generated files (multilingual text, quirks
included) against the unmodified copies in ../shared/official-eval."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xlgap.cli import app
from xlgap.data.tasks import PANX_TAGS, UPOS_TAGS, get_task
from xlgap.kinds import kind_of
from xlgap.kinds.scoring import ScoreError, answer_scores, mlqa_normalize, squad_normalize
from xlgap.kinds.tagging import seqeval_scores

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def score(task, gold, predictions, language=None):
    spec = get_task(task)
    return kind_of(spec).score_files(spec, Path(gold), Path(predictions), language)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- worked examples


def test_entity_f1_worked_example_and_invalid_sequences():
    # gold PER(0-1), LOC(3); predicted PER(0-1), ORG(3): one of two right -> P = R = F1 = 50
    assert seqeval_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]]) == {
        "f1": 50.0, "precision": 50.0, "recall": 50.0,
    }  # fmt: skip
    # conlleval mode: an I- after O starts an entity, so "O I-PER I-PER" holds PER(1-2), as the gold does
    assert seqeval_scores([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])["f1"] == 100.0
    # an I- of another type starts a new entity: PER(0) and LOC(1) against PER(0-1) -> nothing right
    assert seqeval_scores([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]])["f1"] == 0.0
    # entities do not run across sentence boundaries
    assert seqeval_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])["f1"] == 100.0


def test_squad_answer_rules_worked_examples():
    assert squad_normalize("The  Eiffel-Tower!") == "eiffeltower"
    # pred tokens {in, paris}, gold {paris, france}: one shared -> P = R = 1/2 -> F1 0.5
    rows = [("q1", ["Paris, France"], "in Paris"), ("q2", ["Eiffel tower", "the tower"], "The Eiffel Tower!")]
    assert answer_scores(rows, "squad") == ({"exact_match": 50.0, "f1": 75.0}, 0)
    # an answer that normalises to nothing: exact match 1 but F1 0 (both scripts' quirk)
    assert answer_scores([("q", ["the"], "an")], "squad") == ({"exact_match": 100.0, "f1": 0.0}, 0)
    # a question without a prediction counts 0 and is reported
    assert answer_scores([("q", ["a b"], None), ("r", ["c"], "c")], "squad") == ({"exact_match": 50.0, "f1": 50.0}, 1)
    # SQuAD strips only ASCII punctuation: "¡Hola!" keeps its "¡"
    assert answer_scores([("q", ["hola"], "¡Hola!")], "squad")[0]["exact_match"] == 0.0


def test_mlqa_answer_rules_worked_examples():
    assert mlqa_normalize("¡Hola, señor!", "es") == "hola señor"  # every Unicode punctuation mark goes
    assert mlqa_normalize("der Hund", "de") == "hund"
    assert mlqa_normalize("البيت", "ar") == "بيت"  # every "ال" is removed, even inside a word
    assert mlqa_normalize("Hà Nội là thủ đô", "vi") == "hà nội thủ đô"
    assert mlqa_normalize("北京大学 abc", "zh") == "北 京 大 学 abc"
    # zh: pred 北京大学 -> 4 single characters, gold 北京 -> 2: P = 1/2, R = 1 -> F1 2/3
    (scores, _) = answer_scores([("q", ["北京"], "北京大学")], "mlqa", "zh")
    assert scores["f1"] == pytest.approx(200 / 3) and scores["exact_match"] == 0.0
    with pytest.raises(ScoreError, match="needs the answer language, one of en, es, hi, vi, de, ar, zh; got 'fr'"):
        answer_scores([("q", ["a"], "a")], "mlqa", "fr")


def test_classification_and_tagging_file_layouts(tmp_path):
    # labels-only files: every stripped line is a label, a blank line too
    gold = write(tmp_path / "gold.txt", "1\n0\n\n1\n")
    assert score("pawsx", gold, write(tmp_path / "p.txt", " 1\n1\n\n0 \n")) == {"accuracy": 50.0}
    # the task's own TSV (with PAWS-X's header) as gold: the label column
    tsv = write(tmp_path / "test-de.hf.tsv", "id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\tc\td\t0\n")
    assert score("pawsx", tsv, write(tmp_path / "p2.txt", "1\n1\n")) == {"accuracy": 50.0}
    # tagging: token<TAB>tag gold against one tag per line
    gold = write(tmp_path / "test-de.tsv", "Anna\tB-PER\nlebt\tO\n\nBerlin\tB-LOC\n")
    assert score("panx", gold, write(tmp_path / "t.tsv", "B-PER\nO\n\nB-ORG\n"))["f1"] == 50.0


def test_score_errors_name_the_files(tmp_path):
    gold = write(tmp_path / "gold.tsv", "B-PER\nO\n\nB-LOC\n")
    with pytest.raises(ScoreError, match="has 1 sentences but .*gold.tsv has 2"):
        score("panx", gold, write(tmp_path / "short.tsv", "B-PER\nO\n"))
    with pytest.raises(ScoreError, match="sentence 2: .*gold.tsv has 1 tags but .*long.tsv has 2"):
        score("panx", gold, write(tmp_path / "long.tsv", "B-PER\nO\n\nB-LOC\nO\n"))
    with pytest.raises(ScoreError, match="has 1 labels but .* has 2"):
        score("xnli", write(tmp_path / "g.txt", "neutral\nentailment\n"), write(tmp_path / "p.txt", "neutral\n"))
    squad = write(tmp_path / "squad.json", json.dumps({"data": [{"paragraphs": [{"qas": [{"id": "1"}]}]}]}))
    with pytest.raises(ScoreError, match=r"JSON path data\[0\].paragraphs\[0\].qas\[0\].answers: expected a list of answers"):
        score("xquad", squad, write(tmp_path / "pred.json", '{"1": "x"}'))
    with pytest.raises(ScoreError, match=r"JSON path data\[0\].paragraphs\[0\].qas\[0\]: missing or malformed field .'id'"):
        score("xquad", write(tmp_path / "noid.json", json.dumps({"data": [{"paragraphs": [{"qas": [{}]}]}]})), tmp_path / "pred.json")


def qa_gold(*questions: dict) -> str:
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": list(questions)}]}]})


def test_score_reads_gold_answers_only_for_answered_questions_as_the_official_scripts(tmp_path):
    # The official scripts never look at an unanswered question's answers: it scores 0 whatever they are.
    gold = write(tmp_path / "gold.json", qa_gold({"id": "a", "answers": [{"text": "Paris"}]}, {"id": "b"}))
    assert score("xquad", gold, write(tmp_path / "p.json", '{"a": "Paris"}')) == {"exact_match": 50.0, "f1": 50.0}
    numeric = write(tmp_path / "numeric.json", qa_gold({"id": "a", "answers": [{"text": 1919}]}))
    with pytest.raises(ScoreError, match=r"qas\[0\].answers\[0\].text: expected a string, got 1919"):
        score("xquad", numeric, write(tmp_path / "p1.json", '{"a": "1919"}'))
    assert score("xquad", numeric, write(tmp_path / "p2.json", "{}")) == {"exact_match": 0.0, "f1": 0.0}


def test_score_refuses_predictions_the_official_scripts_crash_on(tmp_path):
    gold = write(tmp_path / "gold.json", qa_gold({"id": "a", "answers": [{"text": "Paris"}]}))
    for value in ("null", "3", '["Paris"]'):
        with pytest.raises(ScoreError, match=r"prediction of question 'a' is .*; expected the answer text"):
            score("xquad", gold, write(tmp_path / "p.json", '{"a": ' + value + '}'))
    with pytest.raises(ScoreError, match="expected a string question id, got 7"):
        score("xquad", write(tmp_path / "intid.json", qa_gold({"id": 7, "answers": [{"text": "x"}]})), tmp_path / "p.json")
    with pytest.raises(ScoreError, match="no tags"):
        score("panx", write(tmp_path / "empty.tsv", ""), write(tmp_path / "empty-pred.tsv", ""))
    with pytest.raises(ScoreError, match=r"gold.tsv:2: expected a label in column 3"):
        score("pawsx", write(tmp_path / "gold.tsv", "id\ts\tlabel\n1\ttwo-fields\n"), write(tmp_path / "p.tsv", "1\n1\n"))


def test_gzipped_gold_is_read_and_a_false_gz_named(tmp_path):
    text = qa_gold({"id": "a", "answers": [{"text": "Paris"}]})
    gold = tmp_path / "gold.json.gz"
    gold.write_bytes(gzip.compress(text.encode()))
    assert score("xquad", gold, write(tmp_path / "p.json", '{"a": "paris"}')) == {"exact_match": 100.0, "f1": 100.0}
    fake = write(tmp_path / "fake.json.gz", text)
    with pytest.raises(ScoreError, match="fake.json.gz.*not valid gzip"):
        score("xquad", fake, tmp_path / "p.json")


def test_a_tab_in_a_prediction_line_is_part_of_the_label_as_for_the_official_script(tmp_path):
    # Only gold files may be in the task's own TSV; XTREME's read_tag / read_label take a predictions
    # line whole, so a stray tab makes the prediction wrong, not a different tag.
    gold = write(tmp_path / "gold.tsv", "Anna\tB-PER\nlebt\tO\n")
    assert score("panx", gold, write(tmp_path / "p.tsv", "I-LOC\tB-PER\nO\n"))["f1"] == 0.0
    labels = write(tmp_path / "g.tsv", "a\tb\tneutral\nc\td\tentailment\n")
    assert score("xnli", labels, write(tmp_path / "p.txt", "neutral\nx\tentailment\n")) == {"accuracy": 50.0}


def test_score_command(tmp_path):
    gold = write(tmp_path / "test-de.tsv", "Anna\tNOUN\nlebt\tVERB\n\nhier\tADV\n")
    predictions = write(tmp_path / "pred.tsv", "NOUN\nNOUN\n\nADV\n")
    result = runner.invoke(app, ["score", "udpos", str(gold), str(predictions)])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)) == {"f1", "precision", "recall"}  # XTREME's numbers, nothing else
    result = runner.invoke(app, ["score", "udpos", str(gold), str(predictions), "--all-metrics"])
    assert json.loads(result.output)["accuracy"] == pytest.approx(200 / 3)
    bad = runner.invoke(app, ["score", "mlqa", str(gold), str(tmp_path / "missing.json")])
    assert bad.exit_code == 2 and "missing.json: no such file" in bad.output
    bad = runner.invoke(app, ["score", "ner", str(gold), str(predictions)])
    assert bad.exit_code == 2 and "unknown task 'ner'" in bad.output


# ---------------------------------------------------------------- against the official scripts


@pytest.fixture(scope="module")
def official():
    """The official scripts from ../shared/official-eval, imported as the xtreme repository lays them out."""
    folder = Path(os.environ.get("XLGAP_TEST_DATA", ROOT.parent / "shared" / "data")).resolve().parent / "official-eval"
    if not folder.is_dir():
        if os.environ.get("XLGAP_REQUIRE_TEST_DATA") == "1":
            pytest.fail(f"XLGAP_REQUIRE_TEST_DATA=1 but {folder} does not exist")
        pytest.skip(f"official scripts not found at {folder}")

    def load(name: str, file: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, folder / file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    saved = {k: sys.modules.get(k) for k in ("third_party", "third_party.evaluate_squad", "third_party.evaluate_mlqa", "third_party.utils_mewslix")}
    package = types.ModuleType("third_party")
    package.evaluate_squad = load("third_party.evaluate_squad", "evaluate_squad.py")
    package.evaluate_mlqa = load("third_party.evaluate_mlqa", "evaluate_mlqa.py")
    package.utils_mewslix = types.ModuleType("third_party.utils_mewslix")  # imported by evaluate.py, unused here
    package.utils_mewslix.evaluate = None
    sys.modules.update({"third_party": package, **{f"third_party.{n}": getattr(package, n) for n in ("evaluate_squad", "evaluate_mlqa", "utils_mewslix")}})
    try:
        yield types.SimpleNamespace(xtreme=load("xtreme_evaluate", "xtreme_evaluate.py"), squad=package.evaluate_squad, mlqa=package.evaluate_mlqa)
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module


WORDS = ["Berlin", "der", "the", "an", "El", "la", "Museo", "北京", "大学", "东京", "القاهرة", "البيت", "của", "là",
         "Hà", "Nội", "दिल्ली", "का", "¿Dónde?", "«quote»", "Straße", "ÉCOLE", "1,200", "$5", "e.g.", "—", "。", "，",
         "(1920s)", "Zürich", "İstanbul", "ΑΘΗΝΑ", "Москва", "i", "a", "los", "unas", "chiếc", "des", "ein"]  # fmt: skip


def random_text(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, 5))]
    joiner = rng.choice([" ", "  ", "", "\u3000", " \t"])
    return joiner.join(words)


def perturb(rng: random.Random, text: str) -> str:
    choice = rng.randrange(7)
    if choice == 0:
        return text
    if choice == 1:
        return text.upper()
    if choice == 2:
        return f"{rng.choice(['the', 'der', 'el', 'ال', 'những', ''])} {text}{rng.choice(['.', '!', '。', '،', ''])}"
    if choice == 3:
        return text[: rng.randint(0, len(text))]
    if choice == 4:
        return random_text(rng)
    if choice == 5:
        return ""
    return f" {text} {rng.choice(WORDS)} "


def squad_file(rng: random.Random, n: int) -> dict:
    qas = []
    for i in range(n):
        answers = [{"text": random_text(rng) or "x", "answer_start": 0} for _ in range(rng.randint(1, 3))]
        qas.append({"id": f"q{i}", "question": "?", "answers": answers})
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}


def predictions_for(rng: random.Random, gold: dict) -> dict:
    predicted = {}
    for qa in gold["data"][0]["paragraphs"][0]["qas"]:
        if rng.random() < 0.1:
            continue  # unanswered
        predicted[qa["id"]] = perturb(rng, rng.choice(qa["answers"])["text"])
    predicted["not-a-question"] = "ignored"
    return predicted


@pytest.mark.parametrize("task", ["xquad", "tydiqa"])
def test_squad_scores_equal_the_official_script(official, tmp_path, task):
    rng = random.Random(task)
    for case in range(40):
        gold = squad_file(rng, rng.randint(1, 30))
        predicted = predictions_for(rng, gold)
        expected = official.squad.evaluate(gold["data"], predicted)
        gold_path = write(tmp_path / f"g{case}.json", json.dumps(gold, ensure_ascii=False))
        pred_path = write(tmp_path / f"p{case}.json", json.dumps(predicted, ensure_ascii=False))
        assert score(task, gold_path, pred_path) == expected, case


@pytest.mark.parametrize("language", ["en", "es", "de", "ar", "hi", "vi", "zh"])
def test_mlqa_scores_equal_the_official_script(official, tmp_path, language):
    rng = random.Random(language)
    for case in range(30):
        gold = squad_file(rng, rng.randint(1, 30))
        predicted = predictions_for(rng, gold)
        expected = official.mlqa.evaluate(gold["data"], predicted, language)
        gold_path = write(tmp_path / f"g{case}.json", json.dumps(gold, ensure_ascii=False))
        pred_path = write(tmp_path / f"p{case}.json", json.dumps(predicted, ensure_ascii=False))
        assert score("mlqa", gold_path, pred_path, language) == expected, case


def tag_files(rng: random.Random, tags: tuple[str, ...], tmp_path: Path, case: int) -> tuple[Path, Path, Path]:
    """Gold as labels-only (the official layout) and as token<TAB>tag (the task's), and predictions."""
    sentences = [[rng.choice(tags) for _ in range(rng.randint(0, 9))] for _ in range(rng.randint(1, 25))]
    predicted = [[t if rng.random() < 0.6 else rng.choice(tags) for t in s] for s in sentences]

    def layout(blocks, end, token=False, stray=""):
        # whitespace around a tag, and in predictions now and then a tab inside a line (the official script keeps it)
        pad = lambda t: rng.choice(["", " ", "\t"]) + t + rng.choice(["", " ", "\xa0", stray if rng.random() < 0.05 else ""])  # noqa: E731
        lines = ["\n".join((f"w{i}\t{t}" if token else pad(t)) for i, t in enumerate(s)) for s in blocks]
        return "\n\n".join(line for line in lines) + end

    gold_end = rng.choice(["\n", "\n\n", ""])
    return (
        write(tmp_path / f"gold{case}.txt", layout(sentences, gold_end)),
        write(tmp_path / f"gold{case}.tsv", layout(sentences, gold_end, token=True)),
        write(tmp_path / f"pred{case}.txt", layout(predicted, rng.choice(["\n", "\n\n", ""]), stray="\tO")),
    )


@pytest.mark.parametrize(("task", "tags"), [("panx", (*PANX_TAGS, "B-MISC", "I-MISC")), ("udpos", UPOS_TAGS)])
def test_tagging_scores_equal_xtreme_evaluate(official, tmp_path, task, tags):
    rng = random.Random(task)
    for case in range(40):
        labels_only, token_tag, predicted = tag_files(rng, tags, tmp_path, case)
        if len(official.xtreme.read_tag(labels_only)) != len(official.xtreme.read_tag(predicted)):
            continue  # a trailing blank line on one side only; the official script asserts
        expected = official.xtreme.evaluate_one_task(str(predicted), str(labels_only), task)
        assert score(task, labels_only, predicted) == expected, case
        assert score(task, token_tag, predicted) == expected, case


@pytest.mark.parametrize(("task", "labels"), [("xnli", ("entailment", "neutral", "contradiction")), ("pawsx", ("0", "1"))])
def test_classification_scores_equal_xtreme_evaluate(official, tmp_path, task, labels):
    rng = random.Random(task)
    for case in range(40):
        n = rng.randint(1, 50)
        gold = [rng.choice(labels) for _ in range(n)]
        predicted = [g if rng.random() < 0.7 else rng.choice([*labels, ""]) for g in gold]
        pad = lambda: rng.choice(["", " ", "\t", "\xa0", f"\t{labels[0]}" if rng.random() < 0.05 else ""])  # noqa: E731
        gold_path = write(tmp_path / f"g{case}.txt", "".join(f"{g}{pad()}\n" for g in gold))
        pred_path = write(tmp_path / f"p{case}.txt", "".join(f"{pad()}{p}{pad()}\n" for p in predicted))
        expected = official.xtreme.evaluate_one_task(str(pred_path), str(gold_path), task)
        assert score(task, gold_path, pred_path) == expected, case


def test_real_xquad_gold_against_the_official_script(official, shared_data, tmp_path):
    gold = shared_data / "xquad" / "xquad.zh.json"
    data = json.loads(gold.read_text(encoding="utf-8"))
    rng = random.Random(0)
    predicted = {
        qa["id"]: perturb(rng, qa["answers"][0]["text"])
        for article in data["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]
    }  # fmt: skip
    pred_path = write(tmp_path / "pred.json", json.dumps(predicted, ensure_ascii=False))
    assert score("xquad", gold, pred_path) == official.squad.evaluate(data["data"], predicted)
    assert score("mlqa", gold, pred_path, "zh") == official.mlqa.evaluate(data["data"], predicted, "zh")


def test_score_errors_quote_user_text_without_markup(tmp_path):
    # A prediction or path with [brackets] is printed as it is, not read as Rich markup.
    gold = write(tmp_path / "gold.json", qa_gold({"id": "a", "answers": [{"text": "Paris"}]}))
    result = runner.invoke(app, ["score", "xquad", str(gold), str(write(tmp_path / "p[run1].json", '{"a": ["[/bold]"]}'))])
    assert result.exit_code == 2, result.output
    assert "p[run1].json" in result.output and "['[/bold]']" in result.output
