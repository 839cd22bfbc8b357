"""Weight-space interpolation (Wu et al. 2022; back to the pretrained weights): exact points, the deltas'
geometry, resumable grids, seed statistics, and the trio and interpolate commands on a tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tiny import tiny_bert, write_tiny_model, write_tiny_udpos
from xlgap.analysis import interpolate as interp
from xlgap.analysis.interpolate import (
    AffinePoints,
    InterpolationError,
    delta_geometry,
    evaluate_grid,
    line_points,
    normalised,
    paper_grid,
    parameter_state,
    parse_grid,
    plane_points,
    summarize_seeds,
)
from xlgap.cli import app
from xlgap.kinds import Evaluation

runner = CliRunner()


def two_models():
    first, second = tiny_bert(seed=0), tiny_bert(seed=1)
    # a weight the two share (as a frozen embedding would be): it must not move or be held
    second.bert.embeddings.word_embeddings.weight.data.copy_(first.bert.embeddings.word_embeddings.weight.data)
    return first, second


def test_line_points_are_exact_at_0_half_1_and_one_and_a_half():
    first, second = two_models()
    a, b = parameter_state(first), parameter_state(second)
    model = tiny_bert(seed=2)
    points = AffinePoints(model, [a, b])
    assert "bert.embeddings.word_embeddings.weight" not in points.names
    shared = model.bert.embeddings.word_embeddings.weight.detach().clone()
    for alpha in (0.0, 0.5, 1.0, 1.5):
        points.move_to(line_points([alpha])[0].weights)
        state = dict(model.named_parameters())
        for name in points.names:
            expected = a[name] * (1 - alpha) + b[name] * alpha
            if alpha == 1.5:  # extrapolation: equal up to the rounding of one fused multiply-add
                assert torch.allclose(state[name].detach(), expected, rtol=1e-6, atol=1e-8), name
                assert not torch.allclose(state[name].detach(), b[name])
            else:  # 0 and 1 are the anchors bit for bit; 0.5 is exact in binary
                assert torch.equal(state[name].detach(), expected), (alpha, name)
        assert torch.equal(model.bert.embeddings.word_embeddings.weight.detach(), shared)


def test_encoder_only_keeps_the_head_and_the_plane_hits_its_anchors():
    first, second = two_models()
    third = tiny_bert(seed=3)
    model = tiny_bert(seed=4)
    head = model.classifier.weight.detach().clone()
    points = AffinePoints(model, [parameter_state(first), parameter_state(second)], "all - head")
    points.move_to((0.25, 0.75))
    assert torch.equal(model.classifier.weight.detach(), head)
    assert not any(n.startswith("classifier") for n in points.names)
    bi, src, tgt = (parameter_state(m) for m in (first, second, third))
    plane = AffinePoints(model, [bi, src, tgt])
    for (a1, a2), anchor in (((0.0, 0.0), bi), ((1.0, 0.0), src), ((0.0, 1.0), tgt)):
        (point,) = plane_points([a1], [a2])
        plane.move_to(point.weights)
        assert all(torch.equal(p.detach(), anchor[n]) for n, p in model.named_parameters() if n in plane.names)
    (point,) = plane_points([0.5], [-0.5])
    assert point.weights == (1.0, 0.5, -0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        plane.move_to((1.0, 0.5, 0.5))


def test_anchors_of_another_architecture_are_refused():
    wider = tiny_bert(num_labels=5)
    with pytest.raises(InterpolationError, match="classifier.weight has shape"):
        AffinePoints(tiny_bert(), [parameter_state(tiny_bert()), parameter_state(wider)])


def test_norm_ratio_and_angle_of_hand_made_deltas():
    x = {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([0.0])}
    y = {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([0.0])}
    g = delta_geometry(x, y)
    assert (g["norm_first"], g["norm_second"], g["norm_ratio"]) == (3.0, 4.0, 0.75)
    assert g["angle_degrees"] == pytest.approx(90.0)
    assert delta_geometry(x, {k: 2 * v for k, v in x.items()})["angle_degrees"] == pytest.approx(0.0, abs=1e-6)
    assert delta_geometry(x, {k: -v for k, v in x.items()})["angle_degrees"] == pytest.approx(180.0)
    w = {"w": torch.tensor([1.0, 1.0]), "b": torch.tensor([0.0])}
    assert delta_geometry(x, w)["angle_degrees"] == pytest.approx(45.0)
    with pytest.raises(InterpolationError, match="zero"):
        delta_geometry(x, {k: 0 * v for k, v in x.items()})


def test_the_papers_grid_and_parsed_grids():
    grid = paper_grid()
    assert grid[0] == -0.5 and grid[-1] == 1.5 and len(grid) == 21 + 12
    assert 0.025 in grid and 0.975 in grid and 0.3 in grid
    assert parse_grid("0:1:0.5", extra=()) == [0.0, 0.5, 1.0]
    assert parse_grid("1,0,0.5") == [0.0, 0.5, 1.0]
    with pytest.raises(InterpolationError, match="START:STOP:STEP"):
        parse_grid("0:1")


def test_an_interrupted_grid_computes_only_the_missing_points(tmp_path, monkeypatch):
    first, second = two_models()
    model = tiny_bert()
    points = AffinePoints(model, [parameter_state(first), parameter_state(second)])
    calls = []

    def fake_evaluate(model, sets, batch_size, dtype):
        if len(calls) == 2 and not calls[-1].get("resumed"):
            raise KeyboardInterrupt
        value = float(model.classifier.bias.detach().sum())
        calls.append({"value": value})
        return Evaluation({"en": {"accuracy": value}}, {})

    monkeypatch.setattr(interp, "evaluate_sets", fake_evaluate)
    store = tmp_path / "grid.json"
    grid = line_points([0.0, 0.5, 1.0, 1.5])
    with pytest.raises(KeyboardInterrupt):
        evaluate_grid(points, grid, {"en": None}, store)
    assert list(json.loads(store.read_text())) == ["0", "0.5"]
    calls.append({"resumed": True})
    scores = evaluate_grid(points, grid, {"en": None}, store)
    assert len([c for c in calls if "value" in c]) == 4  # 2 before the interruption, 2 after: none twice
    assert list(scores) == ["0", "0.5", "1", "1.5"]
    b0, b1 = float(first.classifier.bias.detach().sum()), float(second.classifier.bias.detach().sum())
    assert scores["1.5"]["en"]["accuracy"] == pytest.approx(-0.5 * b0 + 1.5 * b1, abs=1e-6)


def test_seed_statistics_and_normalisation():
    summary = summarize_seeds([1.0, 2.0, 3.0])
    half = 4.302652729911275 * math.sqrt(1 / 3)  # t(0.975, 2 dof) * s / sqrt(n)
    assert (summary.mean, summary.variance) == (2.0, 1.0)
    assert summary.low == pytest.approx(2 - half) and summary.high == pytest.approx(2 + half)
    assert summarize_seeds([5.0]).low is None
    scores = {"0": {"en": {"f1": 40.0}, "de": {"f1": 10.0}}, "1": {"en": {"f1": 80.0}, "de": {"f1": 50.0}}}
    assert normalised(scores, "1", "f1") == {"0": {"en": 0.5, "de": 0.2}, "1": {"en": 1.0, "de": 1.0}}


@pytest.fixture()
def tiny_config(tmp_path):
    config = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seeds": [1, 2],
        "model": {"name": write_tiny_model(tmp_path / "model")},
        "data": {"task": "udpos", "dir": write_tiny_udpos(tmp_path / "data", ("en", "de"), train=("en", "de")), "max_length": 16},
        "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 8},
        "eval": {"every": 2},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_trio_then_interpolate_writes_lines_plane_geometry_and_figures(tiny_config, tmp_path):
    result = runner.invoke(app, ["trio", str(tiny_config), "--source", "en", "--target", "de"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny-trio-en-de"
    for role, sources in (("src", ["en"]), ("tgt", ["de"]), ("bi", ["en", "de"])):
        results = json.loads((folder / role / "seed-1" / "results.json").read_text())
        assert results["sources"] == sources and (folder / role / "seed-1" / "model" / "config.json").exists()
    assert json.loads((folder / "bi" / "seed-1" / "results.json").read_text())["targets"] == []
    result = runner.invoke(app, ["interpolate", str(folder), "--alphas", "0.5", "--plane", "0.5"])  # the anchors are added
    assert result.exit_code == 0, result.output
    summary = json.loads((folder / "interpolation" / "summary.json").read_text())
    assert summary["seeds"] == [1, 2]
    at_bi = [p for p in summary["lines"]["src"]["de"] if p["alpha"] == 1.0][0]
    assert at_bi["mean"] == 1.0 and at_bi["variance"] == 0.0  # normalised by the same seed's bilingual model
    # the bilingual end of the line is the bilingual model: its raw score is its own dev score
    bi_dev = [json.loads((folder / "bi" / f"seed-{s}" / "results.json").read_text())["dev"]["scores"]["de"] for s in (1, 2)]
    assert at_bi["raw"] == pytest.approx(sum(bi_dev) / 2)
    at_mono = json.loads((folder / "interpolation" / "seed-1" / "line-src.json").read_text())["0"]["de"]["accuracy"]
    src_dev = json.loads((folder / "src" / "seed-1" / "results.json").read_text())["dev"]["scores"]["de"]
    assert at_mono == pytest.approx(src_dev)
    assert [p["alpha"] for p in summary["lines"]["tgt"]["en"]] == [0.0, 0.5, 1.0]
    assert summary["plane"]["axis"] == [0.0, 0.5, 1.0] and summary["plane"]["en"][0][0] == 1.0
    assert set(summary["geometry"]) == {"1", "2"} and 0 < summary["geometry"]["1"]["angle_degrees"] < 180
    for figure in ("lines.png", "plane.png", "geometry.png"):
        assert (folder / "interpolation" / figure).stat().st_size > 1000
    assert "| 0.5 |" in (folder / "interpolation" / "summary.md").read_text()


def test_interpolation_to_pretrained_chooses_alpha_on_dev_and_saves_that_model(tiny_config, tmp_path):
    from xlgap.config import load_config
    from xlgap.train.run import run_experiment

    cfg = load_config(tiny_config, ["save_model=true", "data.target_languages=[de]", "seeds=[1]"])
    run_experiment(cfg)
    result = runner.invoke(app, ["interpolate", str(cfg.run_dir), "--to", "pretrained", "--alphas", "0,0.5,1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((cfg.run_dir / "interpolation-pretrained" / "summary.json").read_text())
    results = json.loads((cfg.run_dir / "seed-1" / "results.json").read_text())
    tuned = summary["fine_tuned"]
    assert tuned["test"]["target_avg"] == pytest.approx(results["test"]["target_avg"])
    assert tuned["dev"]["source"] == pytest.approx(results["dev"]["source"])
    seed = summary["per_seed"]["1"]
    best = max(seed["dev"].values(), key=lambda block: block["avg"])["avg"]  # tiny config selects by avg_dev
    chosen = summary["chosen_alpha"]["1"]
    assert seed["dev"][f"{chosen:g}"]["avg"] == best
    saved = cfg.run_dir / "seed-1" / "model-interpolated"
    assert yaml.safe_load((saved / "xlgap-interpolation.yaml").read_text())["alpha"] == chosen
    assert (cfg.run_dir / "interpolation-pretrained" / "gap.png").exists()
    result = runner.invoke(app, ["interpolate", str(tmp_path), "--to", "pretrained"])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_trio_bilingual_model_is_multi_source_uniform_by_default(tmp_path):
    from xlgap.interpolation import InterpolationError, trio_configs

    path = tmp_path / "base.yaml"
    path.write_text("name: t\ndata: {task: panx, source_languages: [en]}\n")
    configs = trio_configs(path, "en", "de")
    assert configs["bi"].train.multi_source.combiner == "uniform" and configs["bi"].data.source_languages == ["en", "de"]
    assert configs["src"].train.multi_source.combiner is None
    assert trio_configs(path, "en", "de", bilingual="mixed")["bi"].train.multi_source.combiner is None
    with pytest.raises(InterpolationError, match="--bilingual 'both'"):
        trio_configs(path, "en", "de", bilingual="both")
