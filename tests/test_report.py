"""Metrics, seed summaries, comparison tables and figures, checked on hand-made numbers."""

from __future__ import annotations

import json

import pytest
import yaml
from rich.console import Console

from xlgap.kinds import language_scores
from xlgap.report.plots import multiplier_curves, phase_one_spans, write_figures
from xlgap.report.tables import comparison, print_table, to_csv, to_latex, to_markdown
from xlgap.results import load_run, summarize, summary_markdown


def test_language_scores_and_gap():
    scores = language_scores({"en": 90.0, "de": 80.0, "zh": 60.0}, ["en"], ["de", "zh"])
    assert scores == {"source": 90.0, "target_avg": 70.0, "avg": pytest.approx(230 / 3), "gap": 20.0}
    # a source without a score (no test set for it): no source score and no gap, the targets still count
    assert language_scores({"de": 80.0, "zh": 60.0}, ["en"], ["de", "zh"]) == {
        "source": None, "target_avg": 70.0, "avg": 70.0, "gap": None,
    }  # fmt: skip


def block(scores):
    return {"scores": scores, **language_scores(scores, ["en"], [k for k in scores if k != "en"])}


def fake_result(name, seed, en, de, zh, task="udpos"):
    accuracy = block({"en": en, "de": de, "zh": zh})
    f1 = block({"en": en - 10, "de": de - 10, "zh": zh - 10})
    return {
        "name": name,
        "seed": seed,
        "task": task,
        "metric": "accuracy",
        "model": "bundled:multilingual-e5-small",
        "methods": [],
        "selection": "avg_dev",
        "sources": ["en"],
        "targets": ["de", "zh"],
        "best_step": 10 * seed,
        "test": {"metric": "accuracy", **accuracy, "metrics": {"accuracy": accuracy, "f1": f1}},
    }


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = summarize([fake_result("df", 1, 90, 80, 60), fake_result("df", 2, 92, 84, 62)])
    assert summary["test"]["scores"]["de"] == {"mean": 82.0, "std": pytest.approx(2 * 2**0.5), "n": 2}
    # gap per seed: 20 and 19 -> mean 19.5, std 0.707
    assert summary["test"]["gap"]["mean"] == pytest.approx(19.5)
    assert summary["test"]["gap"]["std"] == pytest.approx(0.5**0.5)
    assert summary["test"]["metrics"]["f1"]["scores"]["de"]["mean"] == 72.0
    markdown = summary_markdown(summary)
    assert "## test: accuracy" in markdown and "## test: f1" in markdown
    assert "82.0 ± 2.8" in markdown and "72.0 ± 2.8" in markdown


def write_run(root, name, results, methods=(), records=None, losses=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"name": name, "methods": list(methods)}))
    for result in results:
        seed_dir = folder / f"seed-{result['seed']}"
        seed_dir.mkdir()
        (seed_dir / "results.json").write_text(json.dumps(result))
        if records:
            (seed_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if losses:
            (seed_dir / "losses.json").write_text(json.dumps(losses))
    return folder


def test_comparison_has_methods_as_rows_and_languages_as_columns(tmp_path):
    df = write_run(tmp_path, "df", [fake_result("df", 1, 90, 80, 60), fake_result("df", 2, 92, 84, 62)])
    fsf = write_run(tmp_path, "fsf", [fake_result("fsf", 1, 91, 85, 65)])
    table = comparison([load_run(df), load_run(fsf)])
    assert table.columns == ["en", "de", "zh", "target avg", "gap"]
    markdown = to_markdown(table)
    assert "| df | 91.0 ± 1.4 | 82.0 ± 2.8 | 61.0 ± 1.4 | 71.5 ± 2.1 | 19.5 ± 0.7 |" in markdown
    assert "| fsf | 91.0 | 85.0 | 65.0 | 75.0 | 16.0 |" in markdown
    assert to_csv(table).splitlines()[2].startswith("fsf,91.0000,,85.0000,")
    assert "82.0$_{\\pm 2.8}$" in to_latex(table)
    f1 = to_markdown(comparison([load_run(df), load_run(fsf)], metric="f1"))
    assert "| fsf | 81.0 | 75.0 | 55.0 | 65.0 | 16.0 |" in f1


def test_a_table_never_mixes_tasks_or_metrics(tmp_path):
    pos = write_run(tmp_path, "pos", [fake_result("pos", 1, 90, 80, 60)])
    ner = write_run(tmp_path, "ner", [fake_result("ner", 1, 70, 60, 40, task="panx")])
    with pytest.raises(ValueError, match="different tasks .*panx, udpos"):
        comparison([load_run(pos), load_run(ner)])
    with pytest.raises(ValueError, match="run pos has no test metric 'exact_match'; it has accuracy, f1"):
        comparison([load_run(pos)], metric="exact_match")


def test_terminal_table_is_never_cropped_on_a_narrow_console(tmp_path):
    results = [fake_result("df", 1, 90, 80, 60), fake_result("df", 2, 92, 84, 62)]
    table = comparison([load_run(write_run(tmp_path, "df", results))])
    console = Console(width=40, record=True, force_terminal=False)
    print_table(console, table)
    text = console.export_text()
    assert "…" not in text
    assert "82.0 ± 2.8" in text and "19.5 ± 0.7" in text
    assert console.width == 40


def test_phase_one_spans_follow_the_runs_own_detector(tmp_path):
    from xlgap.report.plots import run_phases

    assert phase_one_spans([True, True, False, True, False, False]) == [(1, 2), (4, 4)]
    losses = [3.0, 2.5, 2.0, 1.5, 1.4, 1.38, 1.37, 1.36, 0.9, 0.5, 0.4, 0.39]
    result = {**fake_result("fsf", 1, 90, 80, 60), "schedule": {"warmup_steps": 2, "total_steps": 12}}
    methods = [{"name": "fsf", "window": 2, "threshold": 0.1, "phase": "per_update"}]
    run = load_run(write_run(tmp_path, "fsf", [result], methods=methods, losses=losses))
    # warm-up 2 + two windows of 2: updates 1-6 are P1 by definition. Update 7 uses losses[2:6]:
    # (2.0+1.5)/2 - (1.4+1.38)/2 = 0.36 > 0.1 -> P1; update 8: (1.5+1.4)/2 - (1.38+1.37)/2 = 0.075 -> P2;
    # update 9: (1.4+1.38)/2 - (1.37+1.36)/2 = 0.025 -> P2; update 10: (1.38+1.37)/2 - (1.36+0.9)/2 = 0.245 -> P1
    # again (per update); update 11: (1.37+1.36)/2 - (0.9+0.5)/2 = 0.665 -> P1; 12: (1.36+0.9)/2-(0.5+0.4)/2 = 0.68
    assert phase_one_spans(run_phases(run, 1)) == [(1, 7), (10, 12)]
    latched = load_run(write_run(tmp_path, "latched", [result], methods=[{**methods[0], "phase": "latched"}], losses=losses))
    assert phase_one_spans(run_phases(latched, 1)) == [(1, 7)]
    assert run_phases(load_run(write_run(tmp_path, "df", [result], losses=losses)), 1) is None


def test_figures_are_written_and_multipliers_recomputed_per_update(tmp_path):
    records = [
        {"step": 2, "gap": 5.0, "train_loss": 2.0, "lr_multipliers": {"fsf.policy_I": 0.01}, "phase": "P1"},
        {"step": 4, "gap": 8.0, "train_loss": 1.5, "lr_multipliers": {"fsf.policy_I": 1.0}, "phase": "P2"},
    ]
    losses = [3.0, 2.5, 1.0, 0.99, 0.98]
    fsf = write_run(tmp_path, "fsf", [fake_result("fsf", 1, 91, 85, 65)], [{"name": "fsf", "window": 1, "threshold": 0.1}], records, losses)
    df = write_run(tmp_path, "df", [fake_result("df", 1, 90, 80, 60)], [], records)
    updates, groups = multiplier_curves(load_run(fsf))
    assert updates == [1, 2, 3, 4, 5]
    # window 1: update 3 sees 3.0 -> 2.5 (P1), update 4 sees 2.5 -> 1.0 (P1), update 5 sees 1.0 -> 0.99 (P2)
    assert groups["fsf.policy_I"] == [0.01, 0.01, 0.01, 0.01, 1.0]
    assert groups["fsf.policy_IV"] == [1.0, 1.0, 1.0, 1.0, 10.0]
    assert groups["fsf.policy_II"][4] == pytest.approx(1 - 0.99**3)
    paths = write_figures([load_run(df), load_run(fsf)], tmp_path / "figures")
    assert [p.name for p in paths] == ["gap.png", "gap_loss.png", "lr_multipliers.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_gated_policy_four_is_replayed_from_the_saved_cka(tmp_path):
    losses = [1.0] * 7  # flat: P2 from update 3 on (window 1)
    spec = {"name": "fsf", "window": 1, "threshold": 0.1, "iv_gate": "cka", "cka_every": 2, "cka_trend": 2}
    run = write_run(tmp_path, "fsf", [fake_result("fsf", 1, 91, 85, 65)], [spec], losses=losses)
    cka = [{"step": 0, "layers": [1.0, 1.0]}, {"step": 2, "layers": [0.8, 0.8]}, {"step": 4, "layers": [0.9, 0.9]}]
    (run / "seed-1" / "cka.json").write_text(json.dumps(cka))
    _, groups = multiplier_curves(load_run(run))
    # updates 3-5 are sped up (CKA falling, the step-4 measurement acts from update 6 on), 6-7 are not
    assert groups["fsf.policy_IV"] == [1.0, 1.0, 10.0, 10.0, 10.0, 1.0, 1.0]
    paths = write_figures([load_run(run)], tmp_path / "figures")
    assert [p.name for p in paths] == ["gap.png", "gap_loss.png", "lr_multipliers.png", "cka.png"]


def test_probe_log_survives_a_write_cut_short(tmp_path):
    from xlgap.results import read_records
    from xlgap.train.probes import ProbeLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 4, "gap": 1.0}\n{"step": 8, "gap": 2.0}\n{"step": 12, "ga')
    assert [r["step"] for r in read_records(path)] == [4, 8]
    log = ProbeLog(path, "accuracy", ["en"], ["de"], "avg_dev")
    assert log.last_step == 8
    log.truncate(4)
    assert path.read_text() == '{"step": 4, "gap": 1.0}\n'
    path.write_text('{"step": 4}\nnot json\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: not a JSON record"):
        read_records(path)
