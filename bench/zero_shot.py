"""Zero-shot quality of DF and the methods of Guo et al. (ACL 2023) on one task's CPU recipe (bundled
encoder), over several seeds, paired by seed: DF and FSF by default, and with `--methods` any of DF,
NoisyTune, FS, FF, FSF (the baselines and halves of their Table 2).

DF is `configs/cpu/<task>.yaml`, FSF is `configs/cpu/<task>-fsf.yaml` (for NER without policy IV, as the
paper does), NoisyTune / FS / FF are the DF recipe with that method added after its own (`noisytune`
with lambda = 0.15; `fs` = policies I+II, `ff` = policies III+IV). The loss window of FS, FF and FSF is
10% of the run's updates and their threshold is calibrated on DF seed 1's training-loss curve
(`xlgap.methods.fsf.calibrate_threshold`) so that P1 covers the first 20% of updates, the length of P1
Guo et al. observe: no dev or test score chooses anything. Writes the per-language test table (mean ±
sample std over seeds, target average, gap) with the `xlgap compare` statistics against DF (paired
t-tests per language with Holm, bootstrap intervals, Friedman / Bonferroni-Dunn with three or more
methods), a generated sentence on whether FSF reduces the gap, each method's paired 95% interval against DF and the
seeds it takes to resolve a 0.5-point difference at the measured spread, the task's other test metrics and the
dev table into the `zero-shot-<task>` section of docs/benchmarks.md (or `--section`), and its figures
into docs/figures/<section>/. Rerunning continues where an interrupted run stopped.

    python bench/zero_shot.py --task panx --data-dir ../shared/data
    python bench/zero_shot.py --task udpos --methods DF,NoisyTune,FS,FF,FSF --seeds 1 2 3 4 5 --section fsf-verdict-udpos --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchdoc import add_override_option, overrides_note, update_section
from xlgap.config import load_config
from xlgap.methods.fsf import calibrate_threshold
from xlgap.report.compare import GAP, TARGET_AVG, compare_runs, report_markdown, run_scores, seeds_to_resolve
from xlgap.report.plots import write_figures
from xlgap.report.tables import comparison, to_markdown
from xlgap.results import Run, load_run
from xlgap.train.progress import RunProgress
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
TITLES = {
    "udpos": "UD POS, English to 10 languages",
    "panx": "PAN-X NER, English to 13 languages",
    "pawsx": "PAWS-X, English to 6 languages",
    "xquad": "XQuAD, trained on TyDiQA-GoldP English, to 11 languages",
    "mlqa": "MLQA, trained on TyDiQA-GoldP English, to 6 languages",
}
METHODS = ("DF", "NoisyTune", "FS", "FF", "FSF")
ADDED = {"NoisyTune": {"name": "noisytune"}, "FS": {"name": "fs"}, "FF": {"name": "ff"}}  # after the recipe's own methods


def method_overrides(task: str, label: str, recipe_methods: list[dict], window: int | None, threshold: float | None) -> tuple[str, list[str]]:
    """The recipe file and the overrides that make `label` out of the task's CPU recipes."""
    if label == "DF":
        return f"{task}.yaml", []
    if label == "FSF":
        return f"{task}-fsf.yaml", [f"methods.1.window={window}", f"methods.1.threshold={threshold}"]
    added = dict(ADDED[label])
    if label in ("FS", "FF"):
        added |= {"window": window, "threshold": threshold}
    return f"{task}.yaml", ["methods=" + json.dumps([*recipe_methods, added])]


def gap_verdict(report, runs) -> list[str]:
    """One plain sentence: does FSF reduce the gap (and what does it do to the target average) here."""
    fsf = next((r for r in runs if r.label == "FSF"), None)
    if fsf is None or fsf.name not in report.tests:
        return []
    tests = {t.language: t for t in report.tests[fsf.name]}
    average = tests[TARGET_AVG]
    words = f"target average {average.difference:+.2f} points (paired p = {average.p:.3f})"
    if GAP not in tests:
        return [f"- FSF vs DF, {average.seeds} seeds paired: no gap on test (no source-language test set); {words}."]
    gap = tests[GAP]
    reduces = gap.difference < 0 and gap.p < report.alpha
    return [
        f"- Does FSF reduce the cross-lingual gap here? {'Yes' if reduces else 'No'}: gap {gap.difference:+.2f} points "
        f"(paired p = {gap.p:.3f}), {words}, over {gap.seeds} seeds paired; "
        + ("significant at " if average.p < report.alpha else "not significant at ")
        + f"alpha = {report.alpha} for the target average."
    ]


def resolution(report, runs, delta: float = 0.5) -> list[str]:
    """Per method, its target-average difference to DF with the paired 95% interval, and how many paired
    seeds it takes at this spread to tell a `delta`-point difference from none."""
    lines = []
    for run in runs[1:]:
        average = next(t for t in report.tests[run.name] if t.language == TARGET_AVG)
        needed = seeds_to_resolve(average.sd, delta)
        lines.append(
            f"- {run.label} - DF, target average: {average.difference:+.2f} ± {average.half_width():.2f} points "
            f"(95% interval, {average.seeds} seeds paired, p = {average.p:.3f}, sd of the paired differences {average.sd:.2f}); "
            f"a {delta}-point difference is resolved by {needed if needed is not None else 'more than 1000'} paired seeds at this spread"
            + (" (as many as here or fewer)." if needed is not None and needed <= average.seeds else ".")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(TITLES))
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", default="DF,FSF", help=f"comma-separated, from {', '.join(METHODS)} (DF first)")
    parser.add_argument("--section", default=None, help="the docs/benchmarks.md section (default zero-shot-<task>)")
    parser.add_argument("--out", type=Path, default=None, help="where the run folders go (default bench/out/<section>)")
    add_override_option(parser)
    args = parser.parse_args()
    labels = args.methods.split(",")
    if labels[0] != "DF" or any(label not in METHODS for label in labels):
        parser.error(f"--methods: expected DF first, then any of {', '.join(METHODS[1:])}; got {args.methods}")

    section = args.section or f"zero-shot-{args.task}"
    out = args.out or ROOT / "bench" / "out" / section
    data_dir = args.data_dir.resolve()
    runs: list[Run] = []
    window = threshold = None
    recipe_methods: list[dict] = []
    with RunProgress() as progress:
        for label in labels:
            recipe, extra = method_overrides(args.task, label, recipe_methods, window, threshold)
            overrides = [f"name={args.task}-{label}", f"output_dir={out}", f"seeds={args.seeds}", f"data.dir={data_dir}", *args.set]
            cfg = load_config(ROOT / "configs" / "cpu" / recipe, overrides)
            if cfg.data.files:  # recipe paths are relative to the project root: point them at --data-dir
                files = {k: v.replace("../shared/data", str(data_dir)) if v else v for k, v in cfg.data.files.items()}
                overrides.append("data.files=" + repr(files).replace("None", "null"))
            cfg = load_config(ROOT / "configs" / "cpu" / recipe, [*overrides, *extra])
            progress.console.rule(f"{args.task} {label}: {cfg.methods}")
            run_experiment(cfg, resume=True, progress=progress)
            runs.append(load_run(cfg.run_dir))
            if label == "DF":
                recipe_methods = list(runs[0].config["methods"])
                losses = runs[0].losses[args.seeds[0]]
                window = max(1, round(0.1 * len(losses)))
                threshold = calibrate_threshold(losses, window)

    first = runs[0].results[0]
    metric = first["metric"]
    others = [m for m in first["metrics"] if m != metric]
    train = first["data"]["train.en"]
    scores = [run_scores(run, label=label) for run, label in zip(runs, labels, strict=True)]
    report = compare_runs(scores, control="DF")
    body = [
        f"## Zero-shot: {TITLES[args.task]} (bundled encoder, CPU)",
        "",
        f"Methods {', '.join(labels)} on the recipes `configs/cpu/{args.task}.yaml` (DF) and `configs/cpu/{args.task}-fsf.yaml` (FSF), seeds {args.seeds}:",
        f"{train['examples']} English training examples ({train['sequences']} model inputs), {first['steps']} updates,",
        f"model selection `{first['selection']}`. FS / FF / FSF: window {window} updates (10% of the run), threshold {threshold}",
        "(calibrated on DF's first seed's training loss so that P1 covers the first 20% of updates), c1 = 0.01, c2 = 10, r = 3.",
        f"Test sets: {first['test']['examples']}. Mean ± sample std over seeds, %." + overrides_note(args.set),
        "",
        "Methods as run (results.json):",
        "",
        *(f"- {label}: `{run.results[0]['methods']}`" for run, label in zip(runs, labels, strict=True)),
        "",
        "Code each seed ran (results.json `versions.commit`; a resumed benchmark keeps the seeds it finished earlier): "
        + "; ".join(f"{label} " + ", ".join(f"seed {r['seed']} `{r['versions'].get('commit')}`" for r in run.results) for run, label in zip(runs, labels, strict=True))
        + ".",
        "",
        "Verdict (generated from the numbers):",
        "",
        *gap_verdict(report, scores),
        *resolution(report, scores),
        "",
        f"Test, {metric} (the selection metric): the `xlgap compare` output against DF:",
        "",
        report_markdown(report).split("\n", 1)[1].replace("\n## ", "\n### "),
    ]
    for other in others:
        body += [f"Test, {other}:", "", to_markdown(comparison(runs, "test", other))]
    if all("dev" in r.summary() for r in runs):
        body += [f"Dev {metric} (the probe and selection sets):", "", to_markdown(comparison(runs, "dev", metric))]
    written = write_figures(runs, ROOT / "docs" / "figures" / section)
    body += ["Figures (dev curves of every seed, lr multipliers): " + ", ".join(f"[{f.name}](figures/{section}/{f.name})" for f in written)]
    text = "\n".join(body)
    print(text)
    update_section(section, text)


if __name__ == "__main__":
    main()
