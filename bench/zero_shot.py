"""Zero-shot quality of DF and FSF on one task's CPU recipe (bundled encoder), over several seeds.

Runs `configs/cpu/<task>.yaml` (DF) and `configs/cpu/<task>-fsf.yaml` with the same seeds. FSF's loss
window is 10% of the run's updates and its threshold is calibrated on DF seed 1's loss curve
(`xlgap.methods.fsf.calibrate_threshold`) so that P1 covers the first 20% of updates, the length of P1
Guo et al. observe. Writes the per-language test table (mean ± sample std over seeds, target average,
gap), the differences from DF paired by seed with paired t-test p-values, and the dev table into the
`zero-shot-<task>` section of docs/benchmarks.md. Rerunning continues where an interrupted run stopped.

    python bench/zero_shot.py --task panx --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean

from scipy.stats import ttest_rel

from benchdoc import update_section
from xlgap.config import load_config
from xlgap.methods.fsf import calibrate_threshold
from xlgap.report.tables import comparison, to_markdown
from xlgap.results import Run, load_run
from xlgap.train.progress import RunProgress
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
TITLES = {
    "panx": "PAN-X NER, English to 13 languages",
    "pawsx": "PAWS-X, English to 6 languages",
    "xquad": "XQuAD, trained on TyDiQA-GoldP English, to 11 languages",
    "mlqa": "MLQA, trained on TyDiQA-GoldP English, to 6 languages",
}


def paired_differences(runs: list[Run], metric: str) -> list[str]:
    """One line per method: test source score, target average and gap minus DF's, paired by seed, with
    the paired t-test p-value where there are several seeds."""
    reference, lines = runs[0], []
    by_seed = {r["seed"]: r for r in reference.results}
    for run in runs[1:]:
        pairs = [(r, by_seed[r["seed"]]) for r in run.results if r["seed"] in by_seed]
        parts = []
        for key, label in (("source", "source"), ("target_avg", "target average"), ("gap", "gap")):
            ours = [a["test"]["metrics"][metric][key] for a, _ in pairs]
            theirs = [b["test"]["metrics"][metric][key] for _, b in pairs]
            if any(v is None for v in ours + theirs):
                continue
            part = f"{label} {fmean(ours) - fmean(theirs):+.1f}"
            if len(pairs) > 1:
                part += f" (paired t-test p = {ttest_rel(ours, theirs).pvalue:.2f})"
            parts.append(part)
        lines.append(f"- {run.name} − {reference.name} ({len(pairs)} seeds, paired): " + ", ".join(parts) + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(TITLES))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "zero-shot")
    args = parser.parse_args()

    data_dir = args.data_dir.resolve()
    runs: list[Run] = []
    window = threshold = None
    with RunProgress() as progress:
        for recipe, label in ((f"{args.task}.yaml", "DF"), (f"{args.task}-fsf.yaml", "FSF")):
            overrides = [f"name={args.task}-{label}", f"output_dir={args.out}", f"seeds={args.seeds}", f"data.dir={data_dir}"]
            cfg = load_config(ROOT / "configs" / "cpu" / recipe, overrides)
            if cfg.data.files:  # recipe paths are relative to the project root: point them at --data-dir
                files = {k: v.replace("../shared/data", str(data_dir)) if v else v for k, v in cfg.data.files.items()}
                overrides.append("data.files=" + repr(files).replace("None", "null"))
            if label == "FSF":
                overrides += [f"methods.1.window={window}", f"methods.1.threshold={threshold}"]
            cfg = load_config(ROOT / "configs" / "cpu" / recipe, overrides)
            progress.console.rule(f"{args.task} {label}: {cfg.methods}")
            run_experiment(cfg, resume=True, progress=progress)
            runs.append(load_run(cfg.run_dir))
            if label == "DF":
                losses = runs[0].losses[args.seeds[0]]
                window = max(1, round(0.1 * len(losses)))
                threshold = calibrate_threshold(losses, window)

    first = runs[0].results[0]
    metric = first["metric"]
    others = [m for m in first["metrics"] if m != metric]
    train = first["data"]["train.en"]
    body = [
        f"## Zero-shot: {TITLES[args.task]} (bundled encoder, CPU)",
        "",
        f"Recipes `configs/cpu/{args.task}.yaml` (DF) and `configs/cpu/{args.task}-fsf.yaml` (FSF), seeds {args.seeds}:",
        f"{train['examples']} English training examples ({train['sequences']} model inputs), {first['steps']} updates,",
        f"model selection `{first['selection']}`. FSF: window {window} updates (10% of the run), threshold {threshold}",
        "(calibrated on DF's first seed so that P1 covers the first 20% of updates), c1 = 0.01, c2 = 10, r = 3,",
        f"methods {runs[1].results[0]['methods'][1]}. Test sets: {first['test']['examples']}. Mean ± sample std over seeds, %.",
        "",
        f"Test, {metric} (the selection metric):",
        "",
        to_markdown(comparison(runs, "test", metric)),
    ]
    for other in others:
        body += [f"Test, {other}:", "", to_markdown(comparison(runs, "test", other))]
    body += [f"Differences from DF on test {metric} (points):", "", *paired_differences(runs, metric), ""]
    if all("dev" in r.summary() for r in runs):
        body += [f"Dev {metric} (the probe and selection sets):", "", to_markdown(comparison(runs, "dev", metric))]
    text = "\n".join(body)
    print(text)
    update_section(f"zero-shot-{args.task}", text)


if __name__ == "__main__":
    main()
