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


def test_panx_run_scores_entities_and_writes_scorable_predictions(tmp_path, shared_data, bundled_model_dir):
    from xlgap.data.tasks import get_task
    from xlgap.kinds import kind_of

    cfg = config(tmp_path, shared_data, "panx", ["de", "zh"])
    cfg.train.save_predictions = True
    run_experiment(cfg)
    seed_dir = tmp_path / "panx" / "seed-1"
    result = load_run(tmp_path / "panx").results[0]
    assert result["metric"] == "f1" and set(result["test"]["metrics"]) == {"f1", "precision", "recall"}
    assert result["data"]["test.zh"]["origin"]["files"][0].endswith("panx/test-zh.tsv")
    task = get_task("panx")
    for lang in ("en", "de", "zh"):
        entry = result["predictions"][lang]
        scored = kind_of(task).score_files(task, seed_dir / entry["gold"], seed_dir / entry["file"], lang)
        assert scored == pytest.approx({m: result["test"]["metrics"][m]["scores"][lang] for m in scored})


def test_pawsx_run_trained_on_dev_with_a_held_out_source_dev(tmp_path, shared_data, bundled_model_dir):
    cfg = config(tmp_path, shared_data, "pawsx", ["de", "zh"], train_split="dev", dev_holdout=16)
    cfg.eval.selection = "avg_dev"
    run_experiment(cfg)
    result = load_run(tmp_path / "pawsx").results[0]
    assert result["data"]["train.en"]["examples"] == 48
    assert "held out as dev" in result["data"]["dev.en"]["origin"]["subset"]
    assert result["data"]["test.de"]["origin"]["files"][0].endswith("pawsx/test-de.hf.tsv")
    assert set(result["test"]["scores"]) == {"de", "zh"}  # no English test set in the folder
    assert result["test"]["gap"] is None and result["dev"]["gap"] is not None
    assert result["data"]["test.en"]["note"] == "no test set; not tested"


def test_qa_run_maps_windows_back_to_questions(tmp_path, shared_data, bundled_model_dir):
    tydiqa = shared_data / "tydiqa" / "tydiqa.goldp.en.train.json"
    cfg = config(tmp_path, shared_data, "xquad", ["de", "ar"], files={"train.en": str(tydiqa)}, dev_holdout=16, max_length=128)
    cfg.qa.doc_stride = 32
    cfg.qa.max_query_length = 32
    cfg.eval.selection = "source_dev"
    run_experiment(cfg)
    result = load_run(tmp_path / "xquad").results[0]
    assert result["metric"] == "f1" and set(result["test"]["metrics"]) == {"f1", "exact_match"}
    assert set(result["test"]["scores"]) == {"en", "de", "ar"} and set(result["dev"]["scores"]) == {"en"}
    assert result["data"]["test.de"]["sequences"] > result["data"]["test.de"]["examples"] == 24  # several windows
    assert result["data"]["train.en"]["windows_without_answer"] > 0
    for lang in ("en", "de", "ar"):
        assert result["test"]["metrics"]["exact_match"]["scores"][lang] <= result["test"]["metrics"]["f1"]["scores"][lang]
