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
from xlgap.report.compare import compare_runs, plot_critical_difference, report_markdown, run_scores
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
