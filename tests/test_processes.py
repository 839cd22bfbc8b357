"""`xlgap run` under `torchrun` with 2 CPU processes (gloo) gives the run of 1 process at the same global
batch: DF, FSF and multi-source LF-MLF, with the run folder written once."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny import run_process, write_tiny_model, write_tiny_udpos

FSF = {"name": "fsf", "window": 2, "threshold": 0.05, "policies": {"I": "layers[0:3]", "II": "layers[0:1].ffn", "III": "layers[-1:]", "IV": "layers[-1:].attention"}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    # no dropout: the processes draw different dropout masks than one process would
    return write_tiny_model(root / "model", dropout=0.0), write_tiny_udpos(root / "data", train=("en", "de"))


def run(tmp_path, tiny, name, processes, batch, methods, sources=("en",), multi=None):
    model, data = tiny
    config = {
        "name": name,
        "output_dir": str(tmp_path / f"p{processes}"),
        "seeds": [2],
        "model": {"name": model},
        "data": {"task": "udpos", "dir": data, "source_languages": list(sources), "target_languages": ["fr"], "max_length": 16},
        "methods": methods,
        # fp32: on a CPU with native bf16, `auto` autocasts, and bf16 sums of half-batches differ from the whole batch's
        "train": {"learning_rate": 3e-3, "epochs": 3, "batch_size": batch, "warmup_ratio": 0.1, "multi_source": multi or {}, "precision": "fp32"},
        "eval": {"every": 3, "probe_examples": 10},
        "save_model": True,
    }
    path = tmp_path / f"{name}-{processes}.yaml"
    path.write_text(yaml.safe_dump(config))
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29533",
    ]
    run_process([*launcher, "-m", "xlgap", "run", str(path)])
    return tmp_path / f"p{processes}" / name / "seed-2"


@pytest.mark.parametrize(
    "name, methods, sources, multi, batch",
    [
        ("df", [{"name": "freeze", "select": "word_embeddings"}], ("en",), None, 8),
        ("fsf", [FSF], ("en",), None, 8),
        ("lf-mlf", [FSF], ("en", "de"), {"combiner": "lf-mlf"}, 4),
    ],
)
def test_two_processes_train_the_model_of_one(tmp_path, tiny, name, methods, sources, multi, batch):
    one = run(tmp_path, tiny, name, 1, batch, methods, sources, multi)
    two = run(tmp_path, tiny, name, 2, batch // 2, methods, sources, multi)
    a, b = (load_file(d / "model" / "model.safetensors") for d in (one, two))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert ra["steps"] == rb["steps"] and ra["best_step"] == rb["best_step"]
    assert ra["test"]["scores"] == pytest.approx(rb["test"]["scores"], abs=1e-6)
    assert json.loads((one / "losses.json").read_text()) == pytest.approx(json.loads((two / "losses.json").read_text()), rel=1e-5)
    # the probe log was written by one process: one record per probe step
    steps = [json.loads(line)["step"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and len(steps) == len((one / "metrics.jsonl").read_text().splitlines())
