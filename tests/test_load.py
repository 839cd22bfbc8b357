"""models/load.py: a fresh head is reported once, quietly; encoder weights missing from a checkpoint are
named in a warning; transformers' own load table and tensor-parallel report are not printed."""

from __future__ import annotations

import logging
from pathlib import Path

from safetensors.torch import load_file, save_file
from transformers import AutoModelForTokenClassification

from tiny import write_tiny_model
from xlgap.models.load import load_model


def test_fresh_head_is_an_info_line_and_no_load_table(tmp_path, caplog, capfd):
    path = write_tiny_model(tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="xlgap"):
        model = load_model(path, AutoModelForTokenClassification, num_labels=5)
    assert model.classifier.out_features == 5
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name == "xlgap.models.load"]
    assert infos == [f"{path}: freshly initialised task head (classifier.bias, classifier.weight)"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_no_tensor_parallel_report_for_a_model_without_a_plan(tmp_path):
    """transformers 5.2x lists every layer as "not sharded" when the load table is quieted."""
    path = write_tiny_model(tmp_path / "m")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    tp_logger = logging.getLogger("transformers.distributed.tensor_parallel")
    tp_logger.addHandler(handler)
    try:
        load_model(path, AutoModelForTokenClassification, num_labels=5)
    finally:
        tp_logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []


def test_encoder_weight_missing_from_the_checkpoint_is_named(tmp_path, caplog):
    path = Path(write_tiny_model(tmp_path / "m"))
    weights = load_file(path / "model.safetensors")
    dropped = next(k for k in weights if k.endswith("layer.1.attention.self.query.weight"))
    del weights[dropped]
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="xlgap"):
        load_model(str(path), AutoModelForTokenClassification, num_labels=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{path}: 1 encoder weight(s) are not in the checkpoint and were initialised at random: bert.encoder.layer.1.attention.self.query.weight"]
