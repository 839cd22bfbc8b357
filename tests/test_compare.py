"""`xlgap compare`: paired t-tests, Holm, bootstrap intervals, Friedman with Bonferroni-Dunn, R_T, on run
folders whose scores are chosen so that every statistic can be worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from xlgap.cli import app
from xlgap.report.compare import (
    GAP,
    TARGET_AVG,
    CompareError,
    bootstrap_interval,
    compare_runs,
    friedman_test,
    paired_tests,
    relative_score,
    report_markdown,
    run_scores,
    seeds_to_resolve,
)
from xlgap.results import load_run


def write_run(root, name, scores_by_seed, sources=("en",), targets=("de", "fr"), methods=(), combiner=None, task="panx"):
    """A run folder with the given test scores per seed (`{seed: {lang: score}}`)."""
    folder = root / name
    folder.mkdir(parents=True)
    config = {"name": name, "methods": list(methods), "train": {"multi_source": {"combiner": combiner}}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    for seed, scores in scores_by_seed.items():
        (folder / f"seed-{seed}").mkdir()
        block = {"metric": "f1", "metrics": {"f1": {"scores": scores}}}
        result = {"seed": seed, "task": task, "sources": list(sources), "targets": list(targets), "test": block}
        (folder / f"seed-{seed}" / "results.json").write_text(json.dumps(result))
    return folder


def scores(run_dir):
    return run_scores(load_run(run_dir))


def test_paired_t_test_per_language_with_holm(tmp_path):
    control = write_run(tmp_path, "df", {1: {"en": 80, "de": 60, "fr": 50}, 2: {"en": 81, "de": 61, "fr": 52}, 3: {"en": 82, "de": 62, "fr": 54}})
    # de differs from the control by 1, 2, 3 over the seeds: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 3.464 (2 df)
    method = write_run(tmp_path, "fsf", {1: {"en": 80, "de": 61, "fr": 50}, 2: {"en": 81, "de": 63, "fr": 52}, 3: {"en": 82, "de": 65, "fr": 54}}, methods=[{"name": "fsf"}])
    tests = {t.language: t for t in paired_tests(scores(method), scores(control))}
    assert tests["de"].difference == pytest.approx(2.0)
    assert tests["de"].t == pytest.approx(2 * math.sqrt(3))
    assert tests["de"].p == pytest.approx(0.07417990, rel=1e-5)
    assert tests["en"].p == 1.0 and tests["en"].difference == 0  # identical scores: no difference, p = 1
    # Holm over en, de, fr: de's p is the smallest of the three p-values (1, 0.074, 1), times 3
    assert tests["de"].p_holm == pytest.approx(3 * 0.07417990, rel=1e-5)
    assert tests[TARGET_AVG].difference == pytest.approx(1.0) and tests[TARGET_AVG].p_holm is None
    assert tests[GAP].difference == pytest.approx(-1.0)
    # the 95% interval of de's mean difference: t_{0.975, 2} = 4.302653, times sd 1 / sqrt 3
    assert tests["de"].sd == pytest.approx(1.0)
    assert tests["de"].half_width() == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_paired_tests_need_two_shared_seeds(tmp_path):
    a = write_run(tmp_path, "a", {1: {"en": 1, "de": 1, "fr": 1}, 2: {"en": 1, "de": 1, "fr": 1}})
    b = write_run(tmp_path, "b", {2: {"en": 1, "de": 1, "fr": 1}, 3: {"en": 1, "de": 1, "fr": 1}})
    with pytest.raises(CompareError, match="share 1 seed"):
        paired_tests(scores(a), scores(b))


def test_bootstrap_interval_of_the_seed_mean():
    low, high = bootstrap_interval([60.0, 62.0, 64.0])
    assert 60.0 <= low < 62.0 < high <= 64.0
    assert bootstrap_interval([5.0]) is None and bootstrap_interval([3.0, 3.0]) == (3.0, 3.0)


def test_friedman_and_bonferroni_dunn_by_hand():
    # 4 blocks, 3 methods; ranks (1 = best) per block: A 1,1,1,2 ; B 2,3,2,1 ; C 3,2,3,3
    table = {
        "A": {"b1": 9, "b2": 9, "b3": 9, "b4": 5},
        "B": {"b1": 5, "b2": 1, "b3": 5, "b4": 9},
        "C": {"b1": 1, "b2": 5, "b3": 1, "b4": 1},
    }
    f = friedman_test(table, control="C")
    assert f.mean_ranks == {"A": 1.25, "B": 2.0, "C": 2.75}
    # chi2_F = 12 N / (k (k + 1)) sum R_j^2 - 3 N (k + 1) = 12*4/12 (1.25^2 + 2^2 + 2.75^2) - 48 = 4.5
    assert f.statistic == pytest.approx(4.5) and f.p == pytest.approx(math.exp(-4.5 / 2))
    se = math.sqrt(3 * 4 / (6 * 4))
    from scipy.stats import norm

    assert f.p_vs_control["A"] == pytest.approx(min(1, 2 * 2 * norm.sf(1.5 / se)))  # Bonferroni over k - 1 = 2
    assert f.p_vs_control["B"] == pytest.approx(min(1, 2 * 2 * norm.sf(0.75 / se)))
    assert f.critical_difference == pytest.approx(norm.ppf(1 - 0.05 / 4) * se)


def test_friedman_drops_incomplete_blocks_and_says_so():
    table = {"A": {"x": 1, "y": 2, "z": 3}, "B": {"x": 2, "y": 1, "z": 1}, "C": {"x": 3, "y": 3}}
    f = friedman_test(table, control="A")
    assert f.blocks == ["x", "y"] and f.dropped == ["z"]
    with pytest.raises(CompareError, match="at least 3 methods"):
        friedman_test({"A": {"x": 1}, "B": {"x": 2}}, control="A")


def test_relative_score_from_single_source_runs(tmp_path):
    multi = write_run(tmp_path, "uniform", {1: {"en": 80, "de": 72, "fr": 50}, 2: {"en": 82, "de": 74, "fr": 52}}, sources=("en", "de"), targets=("fr",), combiner="uniform")
    en = write_run(tmp_path, "slf-en", {1: {"en": 90, "de": 60, "fr": 40}, 2: {"en": 90, "de": 60, "fr": 40}}, sources=("en",), targets=("de", "fr"))
    de = write_run(tmp_path, "slf-de", {1: {"en": 60, "de": 80, "fr": 40}, 2: {"en": 60, "de": 80, "fr": 40}}, sources=("de",), targets=("en", "fr"))
    rel = relative_score(scores(multi), [scores(en), scores(de)])
    assert rel["ratios"] == pytest.approx({"en": 81 / 90, "de": 73 / 80})
    assert rel["r_t"] == pytest.approx((81 / 90 + 73 / 80) / 2)
    assert relative_score(scores(multi), [scores(en)]) is None  # no SLF run of de


def test_compare_runs_labels_and_control(tmp_path):
    seeds = {s: {"en": 80 + s, "de": 60 + s, "fr": 50 + s} for s in (1, 2, 3)}
    df = write_run(tmp_path, "df", seeds)
    l2 = write_run(tmp_path, "l2", {s: {k: v + (s % 2) for k, v in x.items()} for s, x in seeds.items()}, methods=[{"name": "l2"}])
    fsf = write_run(tmp_path, "fsf", {s: {k: v - 1 for k, v in x.items()} for s, x in seeds.items()}, methods=[{"name": "fsf"}])
    report = compare_runs([scores(df), scores(l2), scores(fsf)])
    assert report.control == "DF" and set(report.tests) == {"l2", "fsf"}
    assert report.friedman is not None and report.friedman.blocks == ["panx from en: de", "panx from en: fr"]
    assert report.friedman.mean_ranks["l2"] == 1.0 and report.friedman.mean_ranks["fsf"] == 3.0
    with pytest.raises(CompareError, match="neither a run name nor a method label"):
        compare_runs([scores(df), scores(l2)], control="ewc")
    twin = write_run(tmp_path, "df-again", seeds)
    with pytest.raises(CompareError, match="--label RUN=NAME"):
        compare_runs([scores(df), scores(twin)])


def test_compare_command_writes_tables_and_the_diagram(tmp_path):
    rng = np.random.default_rng(0)
    runs = []
    for name, shift in (("df", 0.0), ("l2", 2.0), ("fsf", 1.0)):
        by_seed = {s: {lang: float(base + shift + rng.normal()) for lang, base in (("en", 80), ("de", 60), ("fr", 50), ("es", 55))} for s in (1, 2, 3)}
        methods = [] if name == "df" else [{"name": name}]
        runs.append(write_run(tmp_path / "runs", name, by_seed, targets=("de", "fr", "es"), methods=methods))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["compare", *map(str, runs), "--control", "DF", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "compare.md").read_text()
    assert "paired t-tests over 3 shared seeds" in text and "Friedman test over 3 blocks" in text
    assert (out / "cd.png").stat().st_size > 1000 and "\\toprule" in (out / "compare.tex").read_text()
    bad = CliRunner().invoke(app, ["compare", str(runs[0]), "--label", "oops"])
    assert bad.exit_code == 2 and "expected RUN=NAME" in bad.output
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not an xlgap run folder" in missing.output


def test_runs_without_a_source_test_score_compare_without_a_gap(tmp_path):
    # PAWS-X in the XTREME layout: no English test set, so the test scores hold the targets only
    df = write_run(tmp_path, "df", {1: {"de": 80.0, "fr": 70.0}, 2: {"de": 82.0, "fr": 71.0}}, task="pawsx")
    fsf = write_run(tmp_path, "fsf", {1: {"de": 81.0, "fr": 72.0}, 2: {"de": 84.0, "fr": 72.0}}, methods=[{"name": "fsf"}], task="pawsx")
    report = compare_runs([scores(df), scores(fsf)], control="DF")
    tests = {t.language: t for t in report.tests["fsf"]}
    assert sorted(tests) == ["de", "fr", TARGET_AVG]
    assert tests[TARGET_AVG].difference == pytest.approx(((81 + 72) / 2 + (84 + 72) / 2 - (80 + 70) / 2 - (82 + 71) / 2) / 2)
    assert report.intervals["fsf"] == {TARGET_AVG: bootstrap_interval([76.5, 78.0])}
    text = report_markdown(report)
    assert "| fsf | fsf | 2 | 82.5 ± 2.1 | 72.0 ± 0.0 | 77.2 ± 1.1 |  |" in text


def test_seeds_to_resolve_a_difference_at_a_given_spread():
    # sd 1, delta 0.5: t_{0.975, 16} / sqrt 17 = 2.1199 / 4.1231 = 0.514 > 0.5, t_{0.975, 17} / sqrt 18 = 0.497
    assert seeds_to_resolve(1.0, 0.5) == 18
    assert seeds_to_resolve(0.0, 0.5) == 2  # no spread: the fewest seeds a paired test takes
    assert seeds_to_resolve(100.0, 0.5, most=50) is None
