"""Checkpoints on their own clock, compact checkpoints, the best model kept without a checkpoint per probe,
precision chosen from the hardware, and where a run's wall time goes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, TrainerControl

from tiny import (
    assert_same_outcome,
    run_interrupted_then_resumed,
    tiny_tokenizer,
    write_tiny_model,
    write_tiny_udpos,
)
from xlgap.config import config_from_dict
from xlgap.data.tasks import get_task
from xlgap.kinds import evaluate_sets
from xlgap.results import load_run
from xlgap.train import checkpoints as ckpt
from xlgap.train.data import ExperimentData
from xlgap.train.run import run_experiment
from xlgap.train.trainer import XlgapTrainer
from xlgap.utils import hardware


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_model(root / "model"), write_tiny_udpos(root / "data")


def make_config(tiny_setup, out, **train):
    model, data = tiny_setup
    return config_from_dict(
        {
            "name": "ckpt",
            "output_dir": str(out),
            "seeds": [2],
            "model": {"name": model},
            "data": {"task": "udpos", "dir": data, "target_languages": ["de", "fr"], "max_length": 16},
            "methods": [{"name": "freeze", "select": "word_embeddings"}],
            "train": {"learning_rate": 3e-3, "epochs": 3, "batch_size": 4, **train},
            "eval": {"every": 3},
            "save_model": True,
        }
    )


def test_checkpoint_clock_by_updates_and_by_minutes(monkeypatch):
    control = TrainerControl()
    every = ckpt.CheckpointClock(every=4)
    assert [every.on_step_end(None, SimpleNamespace(global_step=s), TrainerControl()).should_save for s in (3, 4, 8)] == [False, True, True]
    now = [100.0]
    monkeypatch.setattr(ckpt.time, "monotonic", lambda: now[0])
    clock = ckpt.CheckpointClock(minutes=2)
    clock.on_train_begin(None, None, control)
    now[0] = 100 + 119
    assert not clock.on_step_end(None, SimpleNamespace(global_step=1), TrainerControl()).should_save
    now[0] = 100 + 121
    assert clock.on_step_end(None, SimpleNamespace(global_step=2), TrainerControl()).should_save
    clock.on_save(None, None, control)
    now[0] = 100 + 200
    assert not clock.on_step_end(None, SimpleNamespace(global_step=3), TrainerControl()).should_save


def test_compact_checkpoints_hold_the_trained_weights_and_the_frozen_ones_once(tiny_setup, tmp_path, monkeypatch):
    written: list[str] = []
    original = ckpt._save

    def spy(tensors, path):
        written.append(path.name)
        original(tensors, path)

    monkeypatch.setattr(ckpt, "_save", spy)
    cfg = make_config(tiny_setup, tmp_path, checkpoint_every=4)
    seen: list[list[str]] = []
    original_save = XlgapTrainer._save_checkpoint

    def save_and_look(self, model, trial):
        original_save(self, model, trial)
        folder = tmp_path / "ckpt" / "seed-2" / "checkpoints"
        seen.append(sorted(p.name for p in folder.iterdir()))
        trainable = load_file(folder / f"checkpoint-{self.state.global_step}" / ckpt.TRAINABLE_FILE)
        assert "bert.embeddings.word_embeddings.weight" not in trainable  # frozen: not in the checkpoint
        assert set(trainable) == {n for n, p in self.model.named_parameters() if p.requires_grad}

    monkeypatch.setattr(XlgapTrainer, "_save_checkpoint", save_and_look)
    run_experiment(cfg)
    assert written.count(ckpt.FROZEN_FILE) == 1 and written.count(ckpt.TRAINABLE_FILE) == len(seen) == 4
    assert all(len([n for n in names if n.startswith("checkpoint-")]) == 1 for names in seen)  # only the latest


def test_the_best_probe_is_restored_without_a_checkpoint_per_probe(tiny_setup, tmp_path):
    cfg = make_config(tiny_setup, tmp_path, checkpoint_minutes=60)  # no checkpoint at all in this short run
    run_experiment(cfg)
    run = load_run(tmp_path / "ckpt")
    records, result = run.records[2], run.results[0]
    best = max(records, key=lambda r: (r["select"], -r["step"]))
    assert result["best_step"] == best["step"] < records[-1]["step"]
    assert result["wall_seconds"]["checkpoints"] == 0
    # the saved model is the best probe's: scoring it on the dev sets gives that probe's numbers
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "ckpt" / "seed-2" / "model")
    data = ExperimentData(cfg, get_task("udpos"), tiny_tokenizer()).for_seed(2)
    scores = evaluate_sets(model, data.dev).scores
    assert {lang: s["accuracy"] for lang, s in scores.items()} == pytest.approx(best["dev"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_resume_from_a_compact_checkpoint_is_exact(tiny_setup, tmp_path, monkeypatch, precision):
    whole = make_config(tiny_setup, tmp_path / "a", checkpoint_every=5, precision=precision)
    run_experiment(whole)
    cut = make_config(tiny_setup, tmp_path / "b", checkpoint_every=5, precision=precision)
    run_interrupted_then_resumed(cut, 12, monkeypatch)
    a = assert_same_outcome(tmp_path / "a" / "ckpt" / "seed-2", tmp_path / "b" / "ckpt" / "seed-2")
    assert a["precision"]["used"] == precision


def test_results_record_precision_hardware_and_the_wall_time_split(tiny_setup, tmp_path):
    run_experiment(make_config(tiny_setup, tmp_path, checkpoint_every=6))
    result = load_run(tmp_path / "ckpt").results[0]
    assert result["precision"]["requested"] == "auto" and result["precision"]["used"] in ("fp32", "bf16")
    assert result["hardware"].endswith("threads)")
    split = result["wall_seconds"]
    assert split["total"] == pytest.approx(split["training"] + split["probes"] + split["checkpoints"] + split["final_evaluation"])
    assert min(split[k] for k in ("training", "probes", "checkpoints", "final_evaluation")) > 0


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert hardware.resolve_precision("auto", use_gpu=False)[0] == "fp32"
    assert "emulated" in hardware.resolve_precision("auto", use_gpu=False)[1]
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.resolve_precision("auto", use_gpu=False) == (
        "bf16", "auto: the CPU has native bf16 instructions (AVX512-BF16 or AMX)",
    )  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    assert hardware.resolve_precision("auto", use_gpu=True) == ("fp32", "auto: Tesla V100 has no bf16 support")
    assert hardware.resolve_precision("fp16") == ("fp16", "asked for")
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        hardware.resolve_precision("half")


def test_cpu_bf16_detection_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not hardware.cpu_has_native_bf16()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert hardware.cpu_has_native_bf16()
