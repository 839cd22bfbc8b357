"""Config loading: extends, dotted overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from xlgap.config import ConfigError, config_from_dict, load_config


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_extends_and_overrides(tmp_path):
    write(tmp_path / "base.yaml", "name: base\ndata:\n  task: udpos\n  max_length: 64\ntrain:\n  learning_rate: 2.0e-5\n")
    cfg_path = write(tmp_path / "fsf.yaml", "extends: base.yaml\nname: fsf\nmethods:\n  - name: fsf\n    c1: 0.01\n")
    cfg = load_config(cfg_path, ["train.learning_rate=3e-5", "methods.0.c1=0.1", "seeds=[1,2]"])
    assert cfg.name == "fsf"
    assert cfg.data.max_length == 64
    assert cfg.train.learning_rate == 3e-5
    assert cfg.methods == [{"name": "fsf", "c1": 0.1}]
    assert cfg.seeds == [1, 2]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr": 1e-5}}, "unknown key 'train.lr'; expected one of: learning_rate"),
        ({"train": {"batch_size": "32"}}, "train.batch_size: expected an integer, got '32'"),
        ({"eval": {"selection": "best"}}, "eval.selection: expected one of avg_dev, source_dev, last"),
        ({"seeds": [1, 1]}, "seeds: repeated seed"),
        ({"data": {"train_split": "dev"}}, "training on the dev split leaves no held-out dev score"),
        ({"methods": ["fsf"]}, "methods.0: expected a mapping"),
        ({"data": {"source_languages": "en"}}, "data.source_languages: expected a list"),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match="my.yaml: ") as err:
        config_from_dict(raw, "my.yaml")
    assert message in str(err.value)


def test_missing_file_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path / "c.yaml", "name: x\n")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["train.learning_rate"])
    with pytest.raises(ConfigError, match="not an index"):
        load_config(path, ["methods.0.c1=0.1"])


def test_extends_cycle(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


ROOT = Path(__file__).parents[1]
RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "sweeps" not in p.parts)
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT / "configs")) for p in RECIPES])
def test_every_recipe_loads_and_builds_its_methods(path):
    from xlgap.data.tasks import get_task
    from xlgap.kinds import kind_of
    from xlgap.methods import build_methods

    cfg = load_config(path)
    build_methods(cfg.methods)
    kind_of(get_task(cfg.data.task))
    assert cfg.name
    for key, file in cfg.data.files.items():  # CPU recipes name files of ../shared/data, relative to the root
        assert file is None or file.startswith("../shared/data/"), key


def test_recipe_names_are_unique():
    names = [load_config(path).name for path in RECIPES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_sweep_file_defines_valid_runs(path):
    from xlgap.sweep import load_sweep

    sweep = load_sweep(path, [], None, None, None)  # loads the config of every point
    assert len(sweep.points()) >= 3


def test_a_tracker_whose_package_is_missing_is_refused_before_the_run(monkeypatch):
    import importlib.util

    import xlgap.config

    real = importlib.util.find_spec
    monkeypatch.setattr(xlgap.config.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"train.report_to.1: wandb needs the 'wandb' package, which is not installed \(pip install wandb\)"):
        config_from_dict({"name": "x", "train": {"report_to": ["tensorboard", "wandb"]}})
    assert config_from_dict({"name": "x", "train": {"report_to": ["tensorboard", "none"]}}).train.report_to == ["tensorboard", "none"]
