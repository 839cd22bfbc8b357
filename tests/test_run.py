"""The experiment runner on a tiny model and tiny XTREME-layout data: outputs, exact resume,
non-finite loss, and run-folder safety."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import Trainer

from tiny import assert_same_outcome, interrupt_at, write_tiny_model, write_tiny_udpos
from xlgap.config import config_from_dict
from xlgap.results import load_run
from xlgap.train.run import RunFolderError, run_experiment
from xlgap.train.trainer import NonFiniteLossError


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_model(root / "model"), write_tiny_udpos(root / "data")


def make_config(tiny_setup, out, name="tiny", **overrides):
    model, data = tiny_setup
    raw = {
        "name": name,
        "output_dir": str(out),
        "seeds": [3],
        "model": {"name": model},
        "data": {"task": "udpos", "dir": data, "target_languages": ["de", "fr"], "max_length": 16},
        "methods": [{"name": "fsf", "window": 2, "threshold": 0.05, "policies": {"I": "layers[0:3]", "II": "layers[0:1].ffn", "III": "layers[-1:]", "IV": "layers[-1:].attention"}}],
        "train": {"learning_rate": 3e-3, "epochs": 3, "batch_size": 4, "warmup_ratio": 0.1, "checkpoint_every": 4},
        "eval": {"every": 4, "probe_examples": 10},
        "save_model": True,
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(raw)


def test_run_writes_every_output(tiny_setup, tmp_path):
    cfg = make_config(tiny_setup, tmp_path, seeds=[1, 2])
    summary = run_experiment(cfg)
    run_dir = tmp_path / "tiny"
    for name in ("config.yaml", "summary.json", "summary.md", "seed-1/metrics.jsonl", "seed-1/results.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "seed-1" / "checkpoints").exists()  # removed once the seed is done
    assert (run_dir / "seed-1" / "model" / "model.safetensors").is_file()
    results = json.loads((run_dir / "seed-1" / "results.json").read_text())
    assert results["targets"] == ["de", "fr"]
    assert set(results["test"]["scores"]) == {"en", "de", "fr"}
    scores = results["test"]["scores"]
    assert results["test"]["gap"] == pytest.approx(scores["en"] - (scores["de"] + scores["fr"]) / 2)
    assert results["data"]["train.en"]["origin"]["files"][0].endswith("udpos/train-en.tsv")
    records = load_run(run_dir).records[1]
    steps = [r["step"] for r in records]
    assert steps == [4, 8, 12, 16, 18]  # every 4 updates and the last one (24 examples / 4 x 3 epochs)
    assert all(set(r["dev"]) == {"en", "de", "fr"} for r in records)
    assert {"fsf.policy_I", "fsf.policy_IV"} <= set(records[0]["lr_multipliers"])
    # warm-up ceil(0.1 x 18) = 2 updates, then two windows of 2: updates 1-6 are P1 by definition
    assert results["schedule"] == {"warmup_steps": 2, "total_steps": 18}
    assert records[0]["phase"] == "P1" and results["methods_report"]["fsf.p1_updates"] >= 6
    # best step = the probe with the highest average dev score (first one on ties)
    best = max(records, key=lambda r: (r["select"], -r["step"]))
    assert results["best_step"] == best["step"]
    assert summary["test"]["gap"]["n"] == 2
    assert "± " in (run_dir / "summary.md").read_text()


def test_interrupted_run_resumes_to_the_same_result(tiny_setup, tmp_path, monkeypatch):
    whole = make_config(tiny_setup, tmp_path / "a")
    run_experiment(whole)

    cut = make_config(tiny_setup, tmp_path / "b")
    interrupt_at(monkeypatch, 10)  # after the checkpoint of step 8, mid-epoch 2
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cut)
    seed_dir = tmp_path / "b" / "tiny" / "seed-3"
    assert not (seed_dir / "results.json").exists()
    assert [r["step"] for r in load_run(tmp_path / "b" / "tiny").records[3]] == [4, 8]
    monkeypatch.undo()
    with pytest.raises(RunFolderError, match="--resume"):
        run_experiment(cut)
    run_experiment(cut, resume=True)
    assert_same_outcome(tmp_path / "a" / "tiny" / "seed-3", seed_dir)
    assert load_run(tmp_path / "a" / "tiny").records == load_run(tmp_path / "b" / "tiny").records


def test_non_finite_loss_stops_before_the_update_and_keeps_the_checkpoint(tiny_setup, tmp_path, monkeypatch):
    cfg = make_config(tiny_setup, tmp_path)
    original = Trainer.compute_loss

    seen = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = original(self, model, inputs, True, num_items_in_batch)
        if model.training and self.state.global_step == 6:
            seen["trainer"], seen["weights"] = self, {n: p.detach().clone() for n, p in model.named_parameters()}
            loss = loss * float("nan")
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(Trainer, "compute_loss", compute_loss)
    with pytest.raises(NonFiniteLossError, match="at update 7"):
        run_experiment(cfg)
    # the weights are those after update 6: the non-finite update was never applied
    after = dict(seen["trainer"].model.named_parameters())
    assert all(torch.equal(after[n], w) for n, w in seen["weights"].items())
    assert seen["trainer"].state.global_step == 6
    checkpoints = tmp_path / "tiny" / "seed-3" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "frozen.safetensors"]
    assert not (tmp_path / "tiny" / "seed-3" / "results.json").exists()


def test_existing_folder_needs_resume_or_overwrite_and_same_config(tiny_setup, tmp_path):
    cfg = make_config(tiny_setup, tmp_path, train={"epochs": 1})
    run_experiment(cfg)
    with pytest.raises(RunFolderError, match="--resume"):
        run_experiment(cfg)
    changed = make_config(tiny_setup, tmp_path, train={"epochs": 1, "learning_rate": 1e-3})
    with pytest.raises(RunFolderError, match="differs .* train"):
        run_experiment(changed, resume=True)
    run_experiment(changed, overwrite=True)
    assert load_run(tmp_path / "tiny").results[0]["steps"] == 6
    # a run written before a config key existed (here train.multi_source) resumes: the key is its default
    import yaml

    saved = tmp_path / "tiny" / "config.yaml"
    raw = yaml.safe_load(saved.read_text())
    del raw["train"]["multi_source"]
    saved.write_text(yaml.safe_dump(raw))
    run_experiment(changed, resume=True)
    # more seeds extend the run (seed 3 is kept, not retrained); fewer or other seeds are a different config
    first = (tmp_path / "tiny" / "seed-3" / "results.json").read_bytes()
    with pytest.raises(RunFolderError, match="differs .* seeds"):
        run_experiment(make_config(tiny_setup, tmp_path, seeds=[4], train={"epochs": 1, "learning_rate": 1e-3}), resume=True)
    summary = run_experiment(make_config(tiny_setup, tmp_path, seeds=[3, 4], train={"epochs": 1, "learning_rate": 1e-3}), resume=True)
    assert summary["test"]["gap"]["n"] == 2 and (tmp_path / "tiny" / "seed-3" / "results.json").read_bytes() == first


def test_a_language_without_dev_set_is_tested_but_not_probed(tiny_setup, tmp_path):
    import shutil
    from pathlib import Path

    model, data = tiny_setup
    local = tmp_path / "data"
    shutil.copytree(data, local)
    (Path(local) / "udpos" / "dev-fr.tsv").unlink()
    cfg = make_config((model, str(local)), tmp_path / "runs", train={"epochs": 1})
    run_experiment(cfg)
    run = load_run(tmp_path / "runs" / "tiny")
    result = run.results[0]
    assert set(result["test"]["scores"]) == {"en", "de", "fr"}
    assert set(result["dev"]["scores"]) == {"en", "de"}
    assert result["dev"]["target_avg"] == result["dev"]["scores"]["de"]
    # the dev and test averages cover different languages, and every table says which
    assert result["dev"]["target_languages"] == ["de"] and result["test"]["target_languages"] == ["de", "fr"]
    summary = (tmp_path / "runs" / "tiny" / "summary.md").read_text()
    assert "target avg over 2 languages: de, fr" in summary and "target avg over 1 language: de" in summary
    assert all(set(r["dev"]) == {"en", "de"} for r in run.records[3])
    assert result["data"]["dev.fr"]["note"].startswith("no dev set")


def test_source_commit_names_the_code_a_process_started_with(tmp_path):
    """A commit made while a process runs (a long benchmark) does not relabel that process's later
    results: the commit is read once per process, as is "+dirty"."""
    import subprocess

    from xlgap.utils.git import source_commit

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"]}

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "first")
    first = git("rev-parse", "--short", "HEAD")
    source_commit.cache_clear()
    assert source_commit(tmp_path) == first
    (tmp_path / "a.py").write_text("x = 2\n")
    git("commit", "-qam", "second")
    assert source_commit(tmp_path) == first
    source_commit.cache_clear()
    assert source_commit(tmp_path) == git("rev-parse", "--short", "HEAD") != first
