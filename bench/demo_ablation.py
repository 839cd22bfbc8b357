"""Which part of FSF makes `xlgap demo`'s FSF lose to DF: each policy removed in turn, at the demo's sizes,
over several seeds, paired by seed; and the short-run setting that dev data alone would choose.

Every run is `xlgap.demo.demo_config` (the demo's sizes, data and precision) with the seeds asked for.
FSF is the demo's (window 15, the threshold calibrated on DF seed 1's training-loss curve so that P1 is
the first 20% of updates); 'FSF - I' etc. are FSF with that policy switched off (`policies: {I: null}`),
so each row says what the rest of FSF does without it. The demo selects no model (`selection: last`),
so the dev scores here are the last probe's: the dev rule (the variant with the best mean dev target
average) never sees a test score. Writes the `demo-ablation` section of docs/benchmarks.md with the
`xlgap compare` statistics against DF on test and on dev.

    python bench/demo_ablation.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from benchdoc import update_section
from xlgap.demo import SIZES, demo_config
from xlgap.methods.fsf import calibrate_threshold
from xlgap.report.compare import TARGET_AVG, compare_runs, mean_std, report_markdown, run_scores
from xlgap.results import load_run
from xlgap.train.progress import RunProgress
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
REMOVED = {"FSF": None, "FSF - I": "I", "FSF - II": "II", "FSF - IV": "IV"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "demo-ablation")
    args = parser.parse_args()
    data = str(args.data_dir.resolve())
    window = SIZES["FSF window (updates)"]

    def config(name: str, methods: list[dict]):
        return dataclasses.replace(demo_config(name, methods, data, args.out), seeds=args.seeds)

    with RunProgress() as progress:
        df = config("DF", [])
        run_experiment(df, resume=True, progress=progress)
        threshold = calibrate_threshold(load_run(df.run_dir).losses[args.seeds[0]], window)
        folders = {"DF": df.run_dir}
        for label, removed in REMOVED.items():
            fsf = {"name": "fsf", "window": window, "threshold": threshold}
            if removed:
                fsf["policies"] = {removed: None}
            cfg = config(label.replace(" ", ""), [fsf])
            progress.console.rule(f"{label}: {cfg.methods}")
            run_experiment(cfg, resume=True, progress=progress)
            folders[label] = cfg.run_dir
    runs = {label: load_run(folder) for label, folder in folders.items()}
    test = [run_scores(run, "test", label=label) for label, run in runs.items()]
    dev = [run_scores(run, "dev", label=label) for label, run in runs.items()]
    chosen = max(dev, key=lambda r: r.mean(TARGET_AVG)).label
    report_test = compare_runs(test, control="DF")
    report_dev = compare_runs(dev, control="DF", split="dev")
    lines = [
        "## Which part of FSF costs the demo its target average (ablation at the demo's sizes)",
        "",
        f"`xlgap demo`'s runs ({SIZES['train sentences (en)']} English sentences, batch {SIZES['batch size']}, "
        f"{SIZES['test sentences per language']} test sentences per language, no model selection), seeds {args.seeds},",
        f"paired by seed. FSF: window {window}, threshold {threshold} (calibrated on DF seed {args.seeds[0]}'s training loss);",
        "'FSF - X' is FSF with policy X switched off. Accuracy (%), mean ± sample std over seeds.",
        "",
        "| variant | dev target avg | test English | test target avg | test gap |",
        "|---|---|---|---|---|",
    ]
    for d, t in zip(dev, test, strict=True):
        lines.append(f"| {t.label} | {mean_std(d.values(TARGET_AVG))} | {mean_std(t.values('en'))} | {mean_std(t.values(TARGET_AVG))} | {mean_std(t.values('gap'))} |")
    lines += [
        "",
        f"Dev rule (best mean dev target average, no test score seen): **{chosen}**.",
        "",
        "Test: the `xlgap compare` output against DF:",
        "",
        report_markdown(report_test).split("\n", 1)[1].replace("\n## ", "\n### "),
        "Dev (the last probe): the `xlgap compare` output against DF:",
        "",
        report_markdown(report_dev).split("\n", 1)[1].replace("\n## ", "\n### "),
    ]
    body = "\n".join(lines)
    print(body)
    update_section("demo-ablation", body)


if __name__ == "__main__":
    main()
