"""The `xlgap` command: run, report, anatomy, demo's offline message, and error handling."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from tiny import write_tiny_model, write_tiny_udpos
from xlgap.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = {
        "name": "tiny-cli",
        "output_dir": str(root / "runs"),
        "model": {"name": write_tiny_model(root / "model")},
        "data": {"task": "udpos", "dir": write_tiny_udpos(root / "data"), "target_languages": ["de", "fr"], "max_length": 16},
        "methods": [{"name": "fsf", "window": 2, "threshold": 0.05, "policies": {"I": "layers[0:3]", "II": "layers[0:1].ffn", "III": "layers[-1:]", "IV": "layers[-1:].attention"}}],
        "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 4},
        "eval": {"every": 3},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "report", "score", "anatomy", "demo"):
        assert command in result.output


def test_run_then_report(tiny_config, tmp_path):
    result = runner.invoke(app, ["run", str(tiny_config), "seeds=[1,2]"])
    assert result.exit_code == 0, result.output
    assert "tgt avg" in result.output and "gap" in result.output
    run_dir = tiny_config.parent / "runs" / "tiny-cli"
    assert (run_dir / "summary.md").is_file()

    again = runner.invoke(app, ["run", str(tiny_config), "seeds=[1,2]"])
    assert again.exit_code == 2
    assert "--resume" in again.output

    report = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    for name in ("test-accuracy.md", "test-accuracy.csv", "test-accuracy.tex", "gap.png", "gap_loss.png", "lr_multipliers.png"):
        assert (tmp_path / "rep" / name).is_file(), name
    assert "| tiny-cli |" in (tmp_path / "rep" / "test-accuracy.md").read_text()
    f1 = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "rep"), "--metric", "f1"])
    assert f1.exit_code == 0, f1.output
    assert "udpos test f1" in f1.output and (tmp_path / "rep" / "test-f1.md").is_file()


def test_bad_config_key_is_named(tiny_config):
    result = runner.invoke(app, ["run", str(tiny_config), "train.lr=1e-5"])
    assert result.exit_code == 2
    assert "unknown key 'train.lr'" in result.output


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "not an xlgap run folder" in result.output


def test_anatomy_and_selectors(tmp_path):
    model = write_tiny_model(tmp_path / "model")
    result = runner.invoke(app, ["anatomy", model, "--select", "layers[0:2].ffn"])
    assert result.exit_code == 0, result.output
    assert "encoder.layer.1.intermediate.dense.weight" in result.output
    assert "encoder.layer.2." not in result.output.split("layers[0:2].ffn")[-1]
    bad = runner.invoke(app, ["anatomy", model, "--select", "layers[0:2].fnn"])
    assert bad.exit_code == 2
    assert "ffn" in bad.output  # the suggestion


def test_demo_offline_without_data_says_what_to_set(monkeypatch):
    monkeypatch.delenv("XLGAP_DATA", raising=False)
    monkeypatch.setattr("xlgap.demo.hub_reachable", lambda timeout=5.0: False)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 2
    assert "--data-dir" in result.output and "XLGAP_DATA" in result.output


def test_demo_precision_reaches_both_runs_and_a_wrong_one_is_one_error_line(tmp_path):
    from xlgap.demo import demo_config

    assert demo_config("DF", [], str(tmp_path), tmp_path, "fp32").train.precision == "fp32"
    result = runner.invoke(app, ["demo", "--data-dir", str(tmp_path), "--out", str(tmp_path / "demo"), "--precision", "fp64"])
    assert result.exit_code == 2
    assert "train.precision: expected one of auto, fp32, bf16, fp16, got 'fp64'" in result.output
    assert not (tmp_path / "demo").exists()


def test_interrupt_says_how_to_resume(tiny_config, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("xlgap.train.run.run_experiment", interrupted)
    result = runner.invoke(app, ["run", str(tiny_config), "seeds=[5]"])
    assert result.exit_code == 130
    assert f"xlgap run {tiny_config} seeds=[5] --resume" in result.output.replace("\n", "")


def test_saved_predictions_score_as_the_run_did(tiny_config):
    import json

    out = tiny_config.parent / "runs" / "tiny-cli-predictions"
    result = runner.invoke(
        app,
        ["run", str(tiny_config), "name=tiny-cli-predictions", "train.save_predictions=true", "data.max_test_examples=10"],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "seed-1" / "results.json").read_text())
    for lang in ("en", "de", "fr"):
        entry = results["predictions"][lang]
        assert entry["file"] == f"predictions/udpos/test-{lang}.tsv" and entry["examples"] == 10
        gold = out / "seed-1" / entry["gold"]  # a capped test set: its 10 gold sentences are written beside
        scored = runner.invoke(app, ["score", "udpos", str(gold), str(out / "seed-1" / entry["file"]), "--all-metrics"])
        assert scored.exit_code == 0, scored.output
        metrics = json.loads(scored.output)
        assert metrics["f1"] == pytest.approx(results["test"]["metrics"]["f1"]["scores"][lang])
        assert metrics["accuracy"] == pytest.approx(results["test"]["metrics"]["accuracy"]["scores"][lang])


def test_tensorboard_gets_per_language_curves_and_export_writes_long_rows(tiny_config, tmp_path):
    import csv
    import json

    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = runner.invoke(app, ["run", str(tiny_config), "name=tiny-tracked", "train.report_to=[tensorboard]"])
    assert result.exit_code == 0, result.output
    run_dir = tiny_config.parent / "runs" / "tiny-tracked"
    records = [json.loads(line) for line in (run_dir / "seed-1" / "metrics.jsonl").read_text().splitlines()]
    (events,) = list((run_dir / "seed-1" / "logs").rglob("events.out.tfevents.*"))
    tags = EventAccumulator(str(events)).Reload()
    scalars = set(tags.Tags()["scalars"])
    assert {"eval/de/accuracy", "eval/fr/f1", "eval/gap", "eval/target_avg", "eval/p1"} <= scalars
    assert any(t.startswith("eval/lr_multiplier/fsf.policy_") for t in scalars)
    gap = [(e.step, e.value) for e in tags.Scalars("eval/gap")]
    assert gap == [(r["step"], pytest.approx(r["gap"], abs=1e-4)) for r in records]

    out = tmp_path / "scores.csv"
    exported = runner.invoke(app, ["export", str(run_dir), "-o", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open()))
    probe = [r for r in rows if r["split"] == "probe" and r["language"] == "de" and r["metric"] == "accuracy"]
    assert [float(r["value"]) for r in probe] == pytest.approx([r["dev"]["de"] for r in records])
    test = {(r["language"], r["metric"]) for r in rows if r["split"] == "test"}
    assert test == {(lang, m) for lang in ("en", "de", "fr") for m in ("accuracy", "f1")}
    assert {r["method"] for r in rows} == {"fsf"} and rows[0]["precision"] in ("fp32", "bf16")
    parquet = tmp_path / "scores.parquet"
    assert runner.invoke(app, ["export", str(run_dir), "-o", str(parquet)]).exit_code == 0
    assert len(pd.read_parquet(parquet)) == len(rows)
    bad = runner.invoke(app, ["export", str(run_dir), "-o", str(tmp_path / "scores.xlsx")])
    assert bad.exit_code == 2 and "expected a .csv or .parquet file name" in bad.output


def test_methods_lists_every_option_with_its_help_and_the_docs_are_current():
    from pathlib import Path

    from xlgap.report.options import options_markdown

    shown = runner.invoke(app, ["methods", "l2"])
    words = set(shown.output.replace("'", " ").replace(",", " ").split())  # the table wraps long cells
    assert shown.exit_code == 0 and {"strength", "lambda", "penalty", "decoupled", "0.01"} <= words
    required = runner.invoke(app, ["methods", "ewc"])
    assert {"fisher", "required"} <= set(required.output.split())
    combiner = runner.invoke(app, ["methods", "gradvac"])
    assert "train.multi_source.combiner" in combiner.output and "beta" in combiner.output
    wrong = runner.invoke(app, ["methods", "lfmlf"])
    assert wrong.exit_code == 2 and "did you mean 'lf-mlf'" in wrong.output
    docs = Path(__file__).resolve().parents[1] / "docs" / "options.md"
    assert docs.read_text(encoding="utf-8") == options_markdown(), (
        "regenerate: xlgap methods --markdown > docs/options.md"
    )
