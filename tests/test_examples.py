"""The examples run as a user runs them (a subprocess, on a tiny model): FSF and L2 in a plain Trainer
script and in a plain PyTorch loop, without xlgap's CLI or runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tiny import run_process, write_tiny_model, write_tiny_udpos

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["trainer_fsf_l2.py", "plain_loop_fsf_l2.py"])
def test_example_trains_with_fsf_and_l2(script, tmp_path):
    model = write_tiny_model(tmp_path / "model")
    train = Path(write_tiny_udpos(tmp_path / "data")) / "udpos" / "train-en.tsv"
    args = [sys.executable, str(EXAMPLES / script), "--model", model, "--train", str(train), "--output", str(tmp_path / "out"), "--steps", "12", "--window", "2"]
    if script.startswith("plain"):
        args += ["--lr", "5e-4"]
    done = run_process(args, timeout=300)
    assert "FSF phase P1 covered" in done.stdout
    log = json.loads((tmp_path / "out" / "training.json").read_text())
    if script.startswith("plain"):
        multipliers = [r["multipliers"] for r in log["log"]]
        penalties = [r["penalty"] for r in log["log"]]
        losses = [r["loss"] for r in log["log"]]
    else:
        multipliers, losses = log["multipliers"], log["losses"]
        penalties = [p["2.l2"] for p in log["penalties"]]
    assert len(losses) == 12
    # the first 2w = 4 updates are phase P1 by definition: policy I slows its set down 100x
    assert all(m["fsf.policy_I"] == 0.01 for m in multipliers[:4])
    # L2 starts at the pretrained weights (zero penalty) and grows as training moves away from them
    assert penalties[0] == 0.0 and penalties[-1] > 0
    assert 0 < log["report"]["fsf.p1_share"] <= 1


def test_plain_loop_with_lf_mlf_fsf_and_l2(tmp_path):
    model = write_tiny_model(tmp_path / "model")
    data = Path(write_tiny_udpos(tmp_path / "data", train=("en", "de"))) / "udpos"
    args = [sys.executable, str(EXAMPLES / "plain_loop_lf_mlf.py"), "--model", model, "--train", str(data / "train-en.tsv"),
            "--train", str(data / "train-de.tsv"), "--output", str(tmp_path / "out"), "--steps", "12", "--window", "2", "--lr", "5e-4"]
    done = run_process(args, timeout=300)
    assert "on 2 languages with lf-mlf" in done.stdout
    log = json.loads((tmp_path / "out" / "training.json").read_text())
    records = log["log"]
    assert len(records) == 12 and all(len(r["losses"]) == 2 for r in records)
    assert all(abs(sum(r["weights"]) - 1) < 1e-6 and min(r["weights"]) >= 0 for r in records)  # Problem 2's simplex
    assert log["report"]["combiner"]["solved_updates"] == 12 and log["report"]["combiner"]["failed_solves"] == 0
    assert all(r["multipliers"]["fsf.policy_I"] == 0.01 for r in records[:4])
    assert records[0]["penalty"] == 0.0 and records[-1]["penalty"] > 0
