"""A real run on the bundled encoder and slices of ../shared/data: UD POS (XTREME TSV and CoNLL-U
treebank sources mixed) and XNLI pairs, with FSF, through the same runner as `xlgap run`."""

from __future__ import annotations

import pytest

from xlgap.config import config_from_dict
from xlgap.results import load_run
from xlgap.train.run import run_experiment

pytestmark = pytest.mark.slow


def config(tmp_path, shared_data, task, targets, **data):
    return config_from_dict(
        {
            "name": task,
            "output_dir": str(tmp_path),
            "data": {
                "task": task,
                "dir": str(shared_data),
                "target_languages": targets,
                "max_train_examples": 48,
                "max_dev_examples": 16,
                "max_test_examples": 24,
                "max_length": 64,
                **data,
            },
            "methods": [{"name": "freeze", "select": "word_embeddings"}, {"name": "fsf", "window": 1}],
            "train": {"learning_rate": 1e-4, "epochs": 1, "batch_size": 16},
            "eval": {"every": 2, "selection": "last" if data.get("train_split") == "dev" else "avg_dev"},
        }
    )


def test_udpos_run_on_the_bundled_encoder(tmp_path, shared_data, bundled_model_dir):
    run_experiment(config(tmp_path, shared_data, "udpos", ["de", "zh"]))
    run = load_run(tmp_path / "udpos")
    result = run.results[0]
    # German test comes from the UD treebank (udpos/ has no German test), Chinese from udpos/
    assert result["data"]["test.de"]["origin"]["files"][0].endswith("de_gsd-ud-test.conllu")
    assert result["data"]["test.zh"]["origin"]["files"][0].endswith("udpos/test-zh.tsv")
    assert result["data"]["test.de"]["examples"] == 24
    assert [r["step"] for r in run.records[1]] == [2, 3]
    for split in ("dev", "test"):
        assert set(result[split]["scores"]) == {"en", "de", "zh"}
        assert all(0 <= s <= 100 for s in result[split]["scores"].values())
    assert len(run.losses[1]) == 3 and run.losses[1][-1] < run.losses[1][0]
    assert set(run.records[1][0]["lr_multipliers"]) == {f"fsf.policy_{p}" for p in ("I", "II", "III", "IV")}


def test_xnli_run_trained_on_dev(tmp_path, shared_data, bundled_model_dir):
    run_experiment(config(tmp_path, shared_data, "xnli", ["de", "sw"], train_split="dev"))
    result = load_run(tmp_path / "xnli").results[0]
    assert result["data"]["train.en"]["origin"]["files"][0].endswith("xnli/dev-en.tsv")
    assert set(result["test"]["scores"]) == {"en", "de", "sw"}
    assert result["best_step"] == result["steps"] == 3
