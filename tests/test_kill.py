"""SIGKILL at several moments of a run (during training, checkpoint saves, result and summary writes,
between seeds): every file left is complete, and `--resume` continues to the same result as a run that
was never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tiny import assert_same_outcome, run_process, write_tiny_model, write_tiny_udpos

XLGAP = [sys.executable, "-c", "from xlgap.cli import app; app()"]


def check_complete(folder: Path) -> None:
    """Every JSON, JSONL, YAML and safetensors file in `folder` parses (nothing half-written)."""
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    config = {
        "name": "tiny",
        "seeds": [1, 2],
        "model": {"name": write_tiny_model(root / "model")},
        "data": {"task": "udpos", "dir": write_tiny_udpos(root / "data", sentences=48), "target_languages": ["de"], "max_length": 16},
        "train": {"learning_rate": 3e-3, "epochs": 4, "batch_size": 4, "checkpoint_every": 3},
        "eval": {"every": 4},
        "save_model": True,
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    run_process([*XLGAP, "run", str(path), f"output_dir={root / 'whole'}"], timeout=600)
    return path, root / "whole" / "tiny", time.perf_counter() - started


@pytest.mark.parametrize("fraction", [0.5, 0.7, 0.9])
def test_a_run_killed_at_any_moment_resumes_to_the_same_result(tiny_run, fraction, tmp_path):
    config, whole, seconds = tiny_run
    out = f"output_dir={tmp_path}"
    process = subprocess.Popen([*XLGAP, "run", str(config), out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds * fraction)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed = tmp_path / "tiny"
    if killed.exists():
        check_complete(killed)
    run_process([*XLGAP, "run", str(config), out, "--resume"], timeout=600)
    check_complete(killed)
    for seed in (1, 2):
        assert_same_outcome(whole / f"seed-{seed}", killed / f"seed-{seed}")
    assert json.loads((killed / "summary.json").read_text()) == json.loads((whole / "summary.json").read_text())
    assert not list(killed.rglob("*.tmp*")), "temporary files left behind"
