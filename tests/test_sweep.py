"""`xlgap sweep` and `xlgap fsf-sets`: grids, point folders, skipping finished points, resuming, the sweep
table, the layer figure, and FSF's sets derived from a layer sweep."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tiny import write_tiny_model, write_tiny_udpos
from xlgap import sweep as sweeps
from xlgap.cli import app
from xlgap.sweep import SweepError, fsf_sets, load_sweep, parse_grid, point_name, split_values

runner = CliRunner()


def test_grids_parse_yaml_values_and_keep_brackets_together():
    assert split_values("layers[0:4],layers[4:8].ffn,[1,2],{a: 1, b: 2}") == ["layers[0:4]", "layers[4:8].ffn", "[1,2]", "{a: 1, b: 2}"]
    grid = parse_grid("methods.1.c1=0.5,0.01,null")
    assert grid.key == "methods.1.c1" and grid.values == (0.5, 0.01, None)
    assert parse_grid("methods.1.select=layers[0],layers[-2:].attention").values == ("layers[0]", "layers[-2:].attention")
    with pytest.raises(SweepError, match="expected KEY=V1,V2"):
        parse_grid("methods.1.c1")
    assert point_name(3, {"methods.1.select": "layers[-2:].attention", "train.learning_rate": 0.001}) == (
        "003-select=layers_-2__.attention,learning_rate=0.001"
    )


@pytest.fixture()
def base(tmp_path):
    config = {
        "name": "tiny-surgery",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": write_tiny_model(tmp_path / "model")},
        "data": {"task": "udpos", "dir": write_tiny_udpos(tmp_path / "data"), "target_languages": ["de"], "max_length": 16},
        "methods": [{"name": "reinit", "select": "layers[0]"}],
        "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 8},
        "eval": {"every": 2},
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_sweep_runs_every_point_once_and_resumes(base, tmp_path, monkeypatch):
    grids = ["methods.0.name=reinit,freeze", "methods.0.select=layers[0],layers[1]"]
    sweep = load_sweep(base, grids, [1], None, "layers")
    assert len(sweep.points()) == 4 and sweep.folder == tmp_path / "runs" / "layers"
    from xlgap.train import run as run_module

    calls: list[str] = []
    real = run_module.run_experiment

    def counting(cfg, resume=False, overwrite=False, progress=None):
        calls.append(cfg.name)
        if len(calls) == 3 and not resume:
            raise KeyboardInterrupt  # the third point is cut short
        return real(cfg, resume=resume, overwrite=overwrite, progress=progress)

    monkeypatch.setattr(run_module, "run_experiment", counting)
    with pytest.raises(KeyboardInterrupt):
        sweeps.run_sweep(sweep)
    assert len(calls) == 3
    calls.clear()
    sweeps.run_sweep(sweep)
    assert calls == [point_name(2, sweep.points()[2]), point_name(3, sweep.points()[3])]  # only what is missing
    calls.clear()
    sweeps.run_sweep(sweep)
    assert calls == []
    rows = sweeps.sweep_rows(sweep.folder)
    assert [(r["methods.0.name"], r["methods.0.select"]) for r in rows] == [
        ("reinit", "layers[0]"), ("reinit", "layers[1]"), ("freeze", "layers[0]"), ("freeze", "layers[1]"),
    ]  # fmt: skip
    assert set(sweeps.layer_families(rows, list(sweep.definition()["grid"]))) == {"reinit", "freeze"}
    with pytest.raises(SweepError, match="holds another sweep"):
        sweeps.run_sweep(load_sweep(base, ["methods.0.select=layers[2]"], [1], None, "layers"))


def test_the_sweep_command_writes_the_table_and_the_layer_figure(base, tmp_path):
    result = runner.invoke(
        app, ["sweep", str(base), "--grid", "methods.0.select=layers[0],layers[3]", "--seeds", "1", "--name", "figure3"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "figure3"
    assert "| methods.0.select | source | target avg | gap | seeds |" in (folder / "sweep-test.md").read_text()
    assert (folder / "sweep-test.csv").read_text().startswith("methods.0.select,source mean,")
    assert (folder / "layers-test.png").is_file()
    bad = runner.invoke(app, ["sweep", str(base), "--grid", "train.learning_rate=fast"])
    assert bad.exit_code == 2 and "train.learning_rate: expected a number" in bad.output


def cell(value):
    return {"mean": value, "std": None, "n": 1}


def test_fsf_sets_follow_the_papers_rule():
    keys = ["methods.1.name", "methods.1.select"]
    rows = []
    reinit = [60.0, 61.0, 64.5, 66.0]  # reference 65: re-initialising layers 0-2 hurts
    freeze = [65.5, 66.0, 64.0, 65.0]  # freezing layers 0-1 helps
    for family, scores, component in (("reinit", reinit, ""), ("freeze", freeze, ".ffn")):
        for layer, score in enumerate(scores):
            rows.append({"methods.1.name": family, "methods.1.select": f"layers[{layer}]{component}", "target_avg": cell(score)})
    assert fsf_sets(rows, keys, reference=65.0) == {"I": "layers[0] + layers[1] + layers[2]", "II": "layers[0].ffn + layers[1].ffn"}
    assert fsf_sets(rows, keys, reference=65.0, margin=1.0) == {"I": "layers[0] + layers[1]"}
    with pytest.raises(SweepError, match="no layer passes the rule"):
        fsf_sets(rows, keys, reference=50.0, margin=20.0)


def test_zipped_keys_vary_together_and_cross_the_grid(base, tmp_path):
    sweep_file = tmp_path / "zip.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "config": str(base),
        "grid": {"train.epochs": [1, 2]},
        "zip": {"train.learning_rate": [0.1, 0.2, 0.3], "train.warmup_steps": [0, 5, 9]},
        "seeds": [1],
    }))  # fmt: skip
    points = load_sweep(sweep_file, [], None, None, "zipped").points()
    assert len(points) == 6
    assert points[:3] == [
        {"train.epochs": 1, "train.learning_rate": 0.1, "train.warmup_steps": 0},
        {"train.epochs": 1, "train.learning_rate": 0.2, "train.warmup_steps": 5},
        {"train.epochs": 1, "train.learning_rate": 0.3, "train.warmup_steps": 9},
    ]
    sweep_file.write_text(yaml.safe_dump({"config": str(base), "zip": {"train.learning_rate": [0.1, 0.2], "train.warmup_steps": [0]}}))
    with pytest.raises(SweepError, match="need as many values each"):
        load_sweep(sweep_file, [], None, None, "bad").points()


def test_a_sweep_through_submitit_jobs_resubmits_only_what_did_not_finish(base, tmp_path):
    """The slurm path with submitit's local executor: one job per point, ids recorded; a point that
    finished is not submitted again, an unfinished one is (and resumes)."""
    from xlgap.launchers import JOBS_FILE, LaunchOptions

    sweep = load_sweep(base, ["methods.0.select=layers[0],layers[1]"], [1], None, "jobs")
    first = sweep.overrides(0, sweep.points()[0])
    from xlgap.config import load_config
    from xlgap.train.run import run_experiment

    run_experiment(load_config(sweep.config, first))  # the first point finished before the submission
    options = LaunchOptions(launcher="submitit-local", cpus=1, gpus=0, time_minutes=10, wait=True)
    folders, jobs = sweeps.run_sweep(sweep, None, options)
    assert list(jobs) == [folders[1].name]  # only the unfinished point became a job
    assert all(sweeps.finished(folder, [1]) for folder in folders)
    record = json.loads((sweep.folder / JOBS_FILE).read_text())
    assert record == {folders[1].name: [jobs[folders[1].name]]}
    _, again = sweeps.run_sweep(sweep, None, options)
    assert again == {}  # nothing left to submit
    assert len(sweeps.sweep_rows(sweep.folder)) == 2


def test_a_local_sweep_runs_points_in_parallel_processes(base, tmp_path):
    from xlgap.launchers import LaunchOptions

    sweep = load_sweep(base, ["methods.0.select=layers[0],layers[1]"], [1], None, "parallel")
    folders, jobs = sweeps.run_sweep(sweep, None, LaunchOptions(parallel=2))
    assert jobs == {} and all(sweeps.finished(folder, [1]) for folder in folders)


def test_launcher_options_are_checked():
    from xlgap.launchers import LaunchError, LaunchOptions

    with pytest.raises(LaunchError, match="--launcher 'pbs'"):
        LaunchOptions(launcher="pbs").check()
    with pytest.raises(LaunchError, match="--parallel 0"):
        LaunchOptions(parallel=0).check()
