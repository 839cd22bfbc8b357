"""Malformed input, tried as a new user would, through the `xlgap` command: every case ends in exactly one
`error:` line that names the place (file and line, JSON path, config key, selector, folder) and what
was expected, exit code 2, no traceback, and no run folder left behind."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tiny import write_tiny_model, write_tiny_udpos
from xlgap.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    model = write_tiny_model(root / "model")
    data = write_tiny_udpos(root / "data")
    return root, model, data


def base_config(root: Path, model: str, data: str, **changes) -> dict:
    config = {
        "name": "bad",
        "output_dir": str(root / "runs"),
        "model": {"name": model},
        "data": {"task": "udpos", "dir": data, "target_languages": ["de"], "max_length": 16},
        "methods": [{"name": "freeze", "select": "word_embeddings"}],
        "train": {"learning_rate": 1e-3, "epochs": 1, "batch_size": 8},
        "eval": {"every": 2},
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            config[section][field] = value
        else:
            config[section] = value
    return config


def expect_error(result, *fragments: str) -> str:
    output = result.output
    assert result.exit_code == 2, output
    assert output.count("error:") == 1, output
    assert "Traceback" not in output, output
    flat = " ".join(output.split())
    for fragment in fragments:
        assert " ".join(fragment.split()) in flat, (fragment, output)
    return output


def run_config(root: Path, config: dict | str, *overrides: str):
    path = root / "case.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(path), *overrides])
    assert not (root / "runs" / "bad").exists(), "a run folder was left behind"
    return result


# ---------------------------------------------------------------- configs and overrides

CONFIG_CASES = [
    ({"train.lr": 1e-3}, [], ["unknown key 'train.lr'", "learning_rate"]),
    ({"train.batch_size": "many"}, [], ["train.batch_size: expected an integer, got 'many'"]),
    ({"train.batch_size": 0}, [], ["train.batch_size: expected a positive integer, got 0"]),
    ({"train.precision": "half"}, [], ["train.precision: expected one of auto, fp32, bf16, fp16"]),
    ({"train.warmup_ratio": 1.5}, [], ["train.warmup_ratio: expected a value in [0, 1)"]),
    ({"train.checkpoint_minutes": 0}, [], ["train.checkpoint_minutes: expected a positive number"]),
    ({"eval.selection": "best"}, [], ["eval.selection: expected one of avg_dev, source_dev, last"]),
    ({"seeds": [1, 1]}, [], ["seeds: repeated seed"]),
    ({"data.task": "ner"}, [], ["unknown task 'ner'", "known tasks:", "panx"]),
    ({"data.source_languages": ["english"]}, [], ["data.source_languages", "unknown language code 'english'"]),
    ({"data.target_languages": ["xx"]}, [], ["data.target_languages", "unknown language code 'xx'"]),
    ({"data.train_split": "test"}, [], ["data.train_split: expected 'train' or 'dev'"]),
    ({"data.few_shot": -2}, [], ["data.few_shot: expected a positive integer or null"]),
    ({"data.files": {"trian.en": "x.tsv"}}, [], ["data.files['trian.en']: keys must read '<split>.<lang>'"]),
    ({"name": "a/b"}, [], ["name: expected a folder name without '/'"]),
    ({"methods": [{"name": "fsff"}]}, [], ["methods.0.name: unknown method 'fsff' (did you mean 'fsf'?)", "expected one of adapter, bitfit"]),
    ({"methods": [{"name": "fsf", "c3": 1}]}, [], ["methods.0.c3: not an option of method 'fsf'"]),
    ({"methods": [{"name": "fsf", "c1": 2}]}, [], ["methods.0 (fsf): fsf c1: expected a slow-down factor in [0, 1]"]),
    ({"methods": [{"name": "fsf", "phase": "once"}]}, [], ["methods.0.phase: expected one of 'latched', 'per_update', got 'once'"]),
    ({"methods": [{"name": "l2", "strength": "strong"}]}, [], ["methods.0.strength: expected a number, got 'strong'"]),
    ({"methods": [{"name": "lora", "rank": 2.5}]}, [], ["methods.0.rank: expected an integer, got 2.5"]),
    ({"methods": [{"name": "freeze"}]}, [], ["methods.0.select: method 'freeze' needs this option"]),
    ({"methods": [{"name": "fsf", "policies": {"I": 3}}]}, [], ["methods.0.policies.I: expected a string or null, got 3"]),
    ({"methods": [{"name": "ewc", "fisher": {"de": 3}}]}, [], ["methods.0.fisher: expected a string or a list of strings or a mapping to strings, got 3"]),
    ({"methods": [{"name": "ewc", "fisher": {"fr": "fr.safetensors"}}]}, [], ["methods.0.fisher: one Fisher per target language; data.target_languages ['de'] has no Fisher for ['de'] and does not list ['fr']"]),
    ({"methods": [{"name": "ewc", "fisher": {"de": "nowhere/de.safetensors"}}]}, [], ["no such Fisher file"]),
    ({"methods": [{"name": "prompt", "tokens": 0}]}, [], ["prompt tokens: expected an integer >= 1, got 0"]),
    ({"methods": [{"select": "head"}]}, [], ["methods.0: expected a mapping with a 'name' key"]),
    ({}, ["train.learning_rate"], ["override 'train.learning_rate': expected key=value"]),
    ({}, ["methods.5.c1=0.1"], ["'methods.5' is not an index of a 1-item list"]),
    ({}, ["train.epochs=[1"], ["override 'train.epochs=[1': the value '[1' is not valid YAML"]),
    ({"qa": {"doc_stride": 0}}, [], ["qa.doc_stride: expected a positive integer, got 0"]),
]


@pytest.mark.parametrize(("changes", "overrides", "fragments"), CONFIG_CASES)
def test_config_mistakes(setup, changes, overrides, fragments):
    root, model, data = setup
    expect_error(run_config(root, base_config(root, model, data, **changes), *overrides), *fragments)


def test_yaml_that_does_not_parse_and_a_missing_config(setup, tmp_path):
    root, _, _ = setup
    expect_error(run_config(root, "name: [unclosed\n"), "case.yaml: not valid YAML")
    expect_error(runner.invoke(app, ["run", str(tmp_path / "nope.yaml")]), "config file not found", "nope.yaml")


# ---------------------------------------------------------------- selectors and models

SELECTOR_CASES = [
    ("layers[99]", ["layers[99]"]),
    ("layers[0:2].ffnn", ["ffnn"]),
    ("layers[", ["layers["]),
    ("nothing", ["nothing"]),
]


@pytest.mark.parametrize(("selector", "fragments"), SELECTOR_CASES)
def test_selectors_are_checked_against_the_model_before_anything_is_written(setup, selector, fragments):
    root, model, data = setup
    config = base_config(root, model, data, methods=[{"name": "freeze", "select": selector}])
    expect_error(run_config(root, config), *fragments)


def test_a_selector_in_fsf_policies_is_checked_too(setup):
    root, model, data = setup
    config = base_config(root, model, data, methods=[{"name": "fsf", "policies": {"I": "layers[50:60]"}}])
    expect_error(run_config(root, config), "layers[50:60]")


def test_model_paths(setup, tmp_path):
    root, _, data = setup
    expect_error(run_config(root, base_config(root, str(tmp_path / "no-model"), data)), "model.name:", "no-model")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    expect_error(run_config(root, base_config(root, str(empty), data)), "model.name:", "a folder without a tokenizer")
    expect_error(runner.invoke(app, ["anatomy", str(tmp_path / "no-model")]), "no-model")


# ---------------------------------------------------------------- data files


def corrupted(root: Path, data: str, name: str, relative: str, content: str | bytes | None) -> str:
    folder = root / f"data-{name}"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(data, folder)
    target = folder / relative
    if content is None:
        target.unlink()
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content, encoding="utf-8")
    return str(folder)


DATA_CASES = [
    ("columns", "udpos/train-en.tsv", "w1\tNOUN\nw2\tNOUN\textra\n", ["train-en.tsv, line 2", "expected 2 tab-separated columns"]),
    ("tag", "udpos/train-en.tsv", "w1\tNOUN\nw2\tNOUNS\n", ["train-en.tsv, line 2", "unknown label 'NOUNS'"]),
    ("empty", "udpos/dev-de.tsv", "", ["dev-de.tsv, line 1: empty file"]),
    ("utf8", "udpos/test-de.tsv", b"w1\tNOUN\ncaf\xe9\tNOUN\n", ["test-de.tsv, line 2: not valid UTF-8"]),
    ("token", "udpos/train-en.tsv", "w1\tNOUN\n\tNOUN\n", ["train-en.tsv, line 2: empty token"]),
    ("missing", "udpos/train-en.tsv", None, ["no udpos train data for language 'en'", "train-en.tsv (not found)"]),
]


@pytest.mark.parametrize(("name", "relative", "content", "fragments"), DATA_CASES)
def test_broken_data_files(setup, name, relative, content, fragments):
    root, model, data = setup
    folder = corrupted(root, data, name, relative, content)
    expect_error(run_config(root, base_config(root, model, folder)), *fragments)


def test_data_folder_and_files_that_are_not_there(setup, tmp_path):
    root, model, data = setup
    expect_error(run_config(root, base_config(root, model, str(tmp_path / "nowhere"))), "data.dir:", "nowhere is not a folder")
    files = {"train.en": str(tmp_path)}
    expect_error(run_config(root, base_config(root, model, data, **{"data.files": files})), "data.files['train.en']", "is a folder, not a file")
    files = {"train.en": str(tmp_path / "gone.tsv")}
    expect_error(run_config(root, base_config(root, model, data, **{"data.files": files})), "gone.tsv does not exist")


def test_conllu_and_pair_files(setup, tmp_path):
    root, model, data = setup
    conllu = tmp_path / "en.conllu"
    conllu.write_text("# sent_id = 1\n1\tw1\tw1\tNOUN\t_\t_\t0\troot\n")
    expect_error(run_config(root, base_config(root, model, data, **{"data.files": {"train.en": str(conllu)}})), "en.conllu, line 2", "expected 10 tab-separated columns")
    pairs = tmp_path / "dev-en.tsv"
    pairs.write_text("a\tb\tneutral\na\tb\n")
    config = base_config(root, model, data, **{"data.task": "xnli", "data.files": {"dev.en": str(pairs), "train.en": str(pairs)}})
    expect_error(run_config(root, config), "dev-en.tsv, line 2", "expected 3 tab-separated columns")
    pairs.write_text("a\tb\tmaybe\n")
    expect_error(run_config(root, config), "dev-en.tsv, line 1", "unknown label 'maybe'")


def squad_case(root: Path, model: str, data: str, tmp_path: Path, text: str | bytes, name: str):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    config = base_config(root, model, data, **{"data.task": "xquad", "data.files": {"train.en": str(path), "test.en": str(path)},
                                               "data.dev_holdout": 1, "data.target_languages": ["de"]})  # fmt: skip
    return run_config(root, config)


SQUAD_CASES = [
    ({"version": "1.1"}, ["(top level): missing 'data'"]),
    ({"data": [{"title": "t"}]}, ["data[0]: missing 'paragraphs'"]),
    ({"data": [{"paragraphs": [{"context": "Berlin"}]}]}, ["data[0].paragraphs[0]: missing 'qas'"]),
    ({"data": [{"paragraphs": [{"context": " ", "qas": []}]}]}, ["data[0].paragraphs[0].context: empty context"]),
    ({"data": [{"paragraphs": [{"context": "Berlin", "qas": [{"id": "q", "question": "?"}]}]}]}, ["qas[0] (question id q): missing 'answers'"]),
    (
        {"data": [{"paragraphs": [{"context": "Berlin", "qas": [{"id": "q", "question": "?", "answers": [{"text": "Bonn", "answer_start": 0}]}]}]}]},
        ["answers[0] (question id q): answer text 'Bonn' is not at answer_start 0"],
    ),
]


@pytest.mark.parametrize(("content", "fragments"), SQUAD_CASES)
def test_broken_squad_files(setup, tmp_path, content, fragments):
    root, model, data = setup
    expect_error(squad_case(root, model, data, tmp_path, json.dumps(content), "squad.json"), "squad.json, JSON path", *fragments)


def test_squad_file_that_is_not_json_or_not_gzip(setup, tmp_path):
    root, model, data = setup
    expect_error(squad_case(root, model, data, tmp_path, '{"data": [\n oops', "broken.json"), "broken.json, line 2: not valid JSON")
    expect_error(squad_case(root, model, data, tmp_path, '{"data": []}', "plain.json.gz"), "plain.json.gz, line 1", "not valid gzip")
    good = gzip.compress(b'{"data": []}')
    expect_error(squad_case(root, model, data, tmp_path, good, "none.json.gz"), "none.json.gz, JSON path data: no questions found")


def test_impossible_data_plans(setup):
    root, model, data = setup
    expect_error(run_config(root, base_config(root, model, data, **{"data.few_shot": 500})), "data.few_shot: 500 examples", "de has only 24 dev examples")
    expect_error(run_config(root, base_config(root, model, data, **{"data.dev_holdout": 24})), "data.dev_holdout: 24 held-out examples leave nothing")


# ---------------------------------------------------------------- run folders, scoring, sweeps


def test_report_on_folders_that_are_not_runs(setup, tmp_path):
    expect_error(runner.invoke(app, ["report", str(tmp_path)]), f"{tmp_path} is not an xlgap run folder (no config.yaml)")
    broken = tmp_path / "broken"
    (broken / "seed-1").mkdir(parents=True)
    (broken / "config.yaml").write_text("name: broken\n")
    (broken / "seed-1" / "results.json").write_text("{not json")
    expect_error(runner.invoke(app, ["report", str(broken)]), "results.json: not valid JSON")


def test_score_mistakes(tmp_path):
    gold = tmp_path / "gold.tsv"
    gold.write_text("B-PER\nO\n")
    pred = tmp_path / "pred.tsv"
    pred.write_text("B-PER\n")
    expect_error(runner.invoke(app, ["score", "panx", str(gold), str(pred)]), "sentence 1:", "has 2 tags but", "has 1")
    expect_error(runner.invoke(app, ["score", "mlqa", str(gold), str(tmp_path / "nope.json")]), "nope.json: no such file")
    squad = tmp_path / "g.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"qas": [{"id": "1", "answers": [{"text": "a"}]}]}]}]}))
    (tmp_path / "p.json").write_text(json.dumps({"1": "a"}))
    expect_error(runner.invoke(app, ["score", "mlqa", str(squad), str(tmp_path / "p.json")]), "needs the answer language")
    (tmp_path / "list.json").write_text("[1, 2]")
    expect_error(runner.invoke(app, ["score", "xquad", str(squad), str(tmp_path / "list.json")]), "expected a JSON object {question id: answer text}")


def test_sweep_mistakes(setup, tmp_path):
    root, model, data = setup
    config = root / "sweep-base.yaml"
    config.write_text(yaml.safe_dump(base_config(root, model, data)))
    expect_error(runner.invoke(app, ["sweep", str(config), "--grid", "train.learning_rate"]), "expected KEY=V1,V2")
    expect_error(runner.invoke(app, ["sweep", str(config)]), "nothing to sweep")
    expect_error(runner.invoke(app, ["sweep", str(config), "--grid", "train.nope=1,2"]), "unknown key 'train.nope'")
    expect_error(runner.invoke(app, ["sweep", str(config), "--grid", "train.epochs=1", "--seeds", "a,b"]), "--seeds 'a,b'")
    sweep_file = root / "bad-sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"config": "sweep-base.yaml", "grid": {"train.epochs": [1]}, "seed": [1]}))
    expect_error(runner.invoke(app, ["sweep", str(sweep_file)]), "unknown sweep keys ['seed']")
    expect_error(runner.invoke(app, ["fsf-sets", str(tmp_path), "--reference", str(tmp_path)]), "is not a sweep folder")
