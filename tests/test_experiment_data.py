"""What an experiment trains and evaluates on: few-shot draws, held-out dev sets, missing splits, and the
checks that run before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tiny import tiny_tokenizer, write_tiny_model, write_tiny_udpos
from xlgap.config import config_from_dict
from xlgap.data.tasks import get_task
from xlgap.train.data import DataPlanError, ExperimentData
from xlgap.train.run import run_experiment

POS = get_task("udpos")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_model(root / "model"), write_tiny_udpos(root / "data")


def config(tiny_setup, out, **data):
    model, folder = tiny_setup
    return config_from_dict(
        {
            "name": "plan",
            "output_dir": str(out),
            "model": {"name": model},
            "data": {"task": "udpos", "dir": folder, "target_languages": ["de", "fr"], "max_length": 16, **data},
            "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 8},
            "eval": {"every": 2},
        }
    )


def sources_of(split):
    return {ex.source for ex in split.examples}


def test_few_shot_adds_m_examples_per_target_and_removes_them_from_dev(tiny_setup, tmp_path):
    cfg = config(tiny_setup, tmp_path, few_shot=5)
    data = ExperimentData(cfg, POS, tiny_tokenizer())
    seed = data.for_seed(1)
    assert {k: len(v.examples) for k, v in seed.train.items()} == {"en": 24, "few_shot.de": 5, "few_shot.fr": 5}
    assert len(seed.train_dataset()) == sum(len(v) for v in seed.train.values())  # rows of every part
    for target in ("de", "fr"):
        drawn = sources_of(seed.train[f"few_shot.{target}"])
        assert len(seed.dev[target].examples) == 19
        assert drawn.isdisjoint(sources_of(seed.dev[target]))
        assert drawn | sources_of(seed.dev[target]) == sources_of(data.dev_raw[target])
        assert seed.few_shot[target]["m"] == 5 and sorted(seed.few_shot[target]["examples"]) == sorted(drawn)
    assert len(seed.dev["en"].examples) == 24  # the source's dev set is untouched
    # the draw depends on the seed and the language only: a second experiment (another method) draws the same
    again = ExperimentData(config(tiny_setup, tmp_path / "b", few_shot=5), POS, tiny_tokenizer()).for_seed(1)
    assert again.few_shot == seed.few_shot
    other = data.for_seed(2)
    assert other.few_shot["de"]["indices"] != seed.few_shot["de"]["indices"]
    assert seed.few_shot["de"]["indices"] != seed.few_shot["fr"]["indices"]
    assert other.test is seed.test  # test sets are shared by the seeds


def test_zero_shot_builds_the_sets_once(tiny_setup, tmp_path):
    data = ExperimentData(config(tiny_setup, tmp_path), POS, tiny_tokenizer())
    assert data.for_seed(1) is data.for_seed(2)
    assert set(data.for_seed(1).train) == {"en"}


def test_dev_holdout_comes_out_of_the_source_training_data(tiny_setup, tmp_path):
    data = ExperimentData(config(tiny_setup, tmp_path, dev_holdout=6), POS, tiny_tokenizer())
    seed = data.for_seed(1)
    assert len(seed.dev["en"].examples) == 6 and len(seed.train["en"].examples) == 18
    assert sources_of(seed.dev["en"]).isdisjoint(sources_of(seed.train["en"]))
    assert all(s.startswith("train-en.tsv:") for s in sources_of(seed.dev["en"]))
    assert "held out as dev" in seed.provenance["dev.en"]["origin"]["subset"]


def test_languages_without_a_split_are_noted_and_the_source_needs_a_dev_set(tiny_setup, tmp_path):
    model, folder = tiny_setup
    local = tmp_path / "data"
    shutil.copytree(folder, local)
    (local / "udpos" / "test-fr.tsv").unlink()
    data = ExperimentData(config((model, str(local)), tmp_path), POS, tiny_tokenizer())
    seed = data.for_seed(1)
    assert set(seed.test) == {"en", "de"}
    assert seed.provenance["test.fr"] == {"origin": None, "note": "no test set; not tested"}
    (local / "udpos" / "dev-en.tsv").unlink()
    with pytest.raises(DataPlanError, match="source language 'en' needs a dev set .*data.dev_holdout=N"):
        ExperimentData(config((model, str(local)), tmp_path), POS, tiny_tokenizer())
    held = ExperimentData(config((model, str(local)), tmp_path, dev_holdout=4), POS, tiny_tokenizer())
    assert len(held.for_seed(1).dev["en"].examples) == 4


def test_impossible_plans_are_refused(tiny_setup, tmp_path):
    with pytest.raises(DataPlanError, match="few_shot: 30 examples .* de has only 24 dev examples"):
        ExperimentData(config(tiny_setup, tmp_path, few_shot=30), POS, tiny_tokenizer())
    with pytest.raises(DataPlanError, match="dev_holdout: 24 held-out examples leave nothing to train on"):
        ExperimentData(config(tiny_setup, tmp_path, dev_holdout=24), POS, tiny_tokenizer())
    files = {"dev.de": None, "dev.fr": None, "dev.en": None}
    with pytest.raises(DataPlanError, match="source language 'en' needs a dev set"):
        ExperimentData(config(tiny_setup, tmp_path, files=files), POS, tiny_tokenizer())


def test_a_bad_plan_leaves_no_run_folder(tiny_setup, tmp_path):
    with pytest.raises(DataPlanError):
        run_experiment(config(tiny_setup, tmp_path, few_shot=30))
    assert not (tmp_path / "plan").exists()
    bad_task = config(tiny_setup, tmp_path)
    bad_task.data.task = "ner"
    with pytest.raises(KeyError, match="unknown task 'ner'"):
        run_experiment(bad_task)
    assert not (tmp_path / "plan").exists()


def test_a_few_shot_run_records_its_draw_and_its_training_set(tiny_setup, tmp_path):
    cfg = config(tiny_setup, tmp_path, few_shot=4, files={"dev.fr": None})
    with pytest.raises(DataPlanError, match="fr has no dev set"):
        run_experiment(cfg)
    cfg = config(tiny_setup, tmp_path, few_shot=4)
    run_experiment(cfg)
    results = json.loads((Path(tmp_path) / "plan" / "seed-1" / "results.json").read_text())
    assert {lang: d["m"] for lang, d in results["few_shot"].items()} == {"de": 4, "fr": 4}
    assert results["data"]["train.few_shot.de"]["examples"] == 4
    assert results["data"]["dev.de"]["examples"] == 20
    assert results["dev"]["examples"]["de"] == 20 and results["test"]["examples"]["de"] == 24
    assert "f1" in results["test"]["metrics"] and "accuracy" in results["test"]["metrics"]
