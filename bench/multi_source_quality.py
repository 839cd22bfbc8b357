"""Multi-source quality on this machine: PAN-X NER from en, de and fr to the other PAN-X languages, SLF
(one model per source) vs Uniform vs PCGrad vs GradVac vs LF-MLF, the CPU recipes of configs/cpu/multi/
(bundled encoder, 600 sentences per source, 3 seeds), with `xlgap compare`'s tests, R_T and the
critical-difference diagram.

Runs are ordinary run folders under bench/out/multi_source/ (finished seeds are kept, interrupted ones
resumed), so the benchmark can be stopped and restarted.

    python bench/multi_source_quality.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from benchdoc import DOC, update_section
from xlgap.config import load_config
from xlgap.report.compare import (
    TARGET_AVG,
    ComparisonReport,
    compare_runs,
    plot_critical_difference,
    report_markdown,
    run_scores,
)
from xlgap.results import load_run
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
MULTI = ["uniform", "pcgrad", "gradvac", "lf-mlf"]
SINGLE = ["en", "de", "fr"]


def run(recipe: str, data_dir: Path, out: Path, seeds: list[int]) -> Path:
    """Run (or finish) one CPU recipe into `out`; returns its run folder."""
    cfg = load_config(ROOT / "configs" / "cpu" / "multi" / f"{recipe}.yaml", [f"data.dir={data_dir}", f"output_dir={out}", f"seeds={seeds}"])
    print(f"== {cfg.name}", flush=True)
    run_experiment(cfg, resume=True)
    return cfg.run_dir


def verdict(report: ComparisonReport, singles: list) -> list[str]:
    """Plain sentences from the measured numbers: each combiner against Uniform on the target average,
    the Friedman ranking, LF-MLF against the best single-source model, and the paper's claim."""
    control = next(r for r in report.runs if r.name == report.control or r.label == report.control)
    lines = []
    for run in report.runs:
        test = next((t for t in report.tests.get(run.name, []) if t.language == TARGET_AVG), None)
        if test is None:
            continue
        mark = "significant" if test.p < report.alpha else "not significant"
        lines.append(
            f"- {run.label} - {control.label}, target average: {test.difference:+.2f} points "
            f"(paired t-test over {test.seeds} seeds, p = {test.p:.3f}: {mark} at {report.alpha})."
        )
    f = report.friedman
    if f is not None:
        best = min(f.methods, key=lambda m: f.mean_ranks[m])
        lines.append(
            f"- Friedman over {len(f.blocks)} (setting, target) blocks: p = {f.p:.3g}; best mean rank {best} "
            f"({f.mean_ranks[best]:.2f}; critical difference {f.critical_difference:.2f})."
        )
    lf = next(r for r in report.runs if r.label == "lf-mlf")
    best_single = max(singles, key=lambda s: s.mean(TARGET_AVG))
    lines.append(
        f"- LF-MLF's target average {lf.mean(TARGET_AVG):.1f} vs the best single-source model ({best_single.label}) "
        f"{best_single.mean(TARGET_AVG):.1f}, Uniform {control.mean(TARGET_AVG):.1f}."
    )
    others = [r for r in report.runs if r is not lf]
    beats = all(lf.mean(TARGET_AVG) > r.mean(TARGET_AVG) for r in others) and lf.mean(TARGET_AVG) > best_single.mean(TARGET_AVG)
    lf_test = next((t for t in report.tests.get(lf.name, []) if t.language == TARGET_AVG), None)
    significant = lf_test is not None and lf_test.p < report.alpha and lf_test.difference > 0
    claim = "reproduced" if beats and significant else ("in direction only (not significant)" if beats else "not reproduced")
    lines.append(
        "- Mao et al.'s claim that LF-MLF gives the best zero-shot average of the multi-source methods and SLF: "
        f"{claim} at this scale."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "multi_source")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    data_dir = args.data_dir.resolve()
    multi = {c: run(f"panx-{c}", data_dir, args.out, seeds) for c in MULTI}
    single = {lang: run(f"panx-slf-{lang}", data_dir, args.out, seeds) for lang in SINGLE}
    scores = [run_scores(load_run(multi[c]), label=c) for c in MULTI]
    singles = [run_scores(load_run(single[lang]), label=f"SLF {lang}") for lang in SINGLE]
    report = compare_runs(scores, control="uniform", single=singles)
    figure = DOC.parent / "figures" / "multi-source-cd.png"
    if report.friedman is not None:
        plot_critical_difference(report.friedman, figure)
    slf_rows = []
    for s in singles:
        slf_rows.append(f"| {s.label} | {s.mean(s.sources[0]):.1f} | {s.mean('target avg'):.1f} |")
    text = report_markdown(report).split("\n", 1)[1].replace("\n## ", "\n### ").replace("\n### ### ", "\n#### ")
    body = "\n".join([
        "## Multi-source quality: PAN-X en, de, fr -> the other languages (CPU)",
        "",
        f"The CPU recipes of `configs/cpu/multi/` ({len(seeds)} seeds each): bundled multilingual-e5-small, word",
        "embeddings frozen, 600 training sentences per source, 16 per language and update, 2 epochs; test sets",
        "capped at 300 sentences per language. Single-source references (SLF, same sentences and batch):",
        "",
        "| SLF run | its source F1 | target avg F1 |",
        "|---|---|---|",
        *slf_rows,
        "",
        "Verdict (generated from the numbers below):",
        "",
        *verdict(report, singles),
        "",
        "The `xlgap compare` output against Uniform (the paper's baseline):",
        "",
        text,
        "",
        f"![critical-difference diagram](figures/{figure.name})" if report.friedman is not None else "",
    ])
    update_section("multi-source-quality", body)
    print(body)
    shutil.rmtree(Path("/tmp/xlgap-bench-multi"), ignore_errors=True)


if __name__ == "__main__":
    main()
