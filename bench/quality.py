"""Quality on UD POS, zero-shot from English: DF and FSF over 3 seeds, FS and FF over 1, on the CPU recipes.

Runs configs/cpu/udpos*.yaml (bundled multilingual-e5-small, 4,000 English training sentences, 2 epochs =
250 updates, batch 32, lr 1e-4, word embeddings frozen; ten target languages, test capped at a fixed
1,000-sentence subset per language). FSF's loss window is 25 updates (10% of the run) and its threshold is
calibrated on DF seed 1's loss curve so that P1 covers the first 20% of updates, the length of P1 that
Guo et al. observe (see `xlgap.methods.fsf.calibrate_threshold`); FS and FF use the same detector.
Rerunning continues where an interrupted run stopped (finished seeds are kept).

    python bench/quality.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean

from scipy.stats import ttest_ind

from benchdoc import update_section
from xlgap.config import load_config
from xlgap.methods.fsf import calibrate_threshold
from xlgap.report.plots import write_figures
from xlgap.report.tables import comparison, to_markdown
from xlgap.results import Run, load_run
from xlgap.train.progress import RunProgress
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
PLAN = [("udpos.yaml", "DF", [1, 2, 3]), ("udpos-fsf.yaml", "FSF", [1, 2, 3]), ("udpos-fs.yaml", "FS", [1]), ("udpos-ff.yaml", "FF", [1])]


def differences(runs: list[Run]) -> list[str]:
    """One line per method: its test source score, target average and gap minus DF's, with Welch's t-test
    p-value over seeds where both have several."""
    reference, lines = runs[0], []
    labels = {"source": "English", "target_avg": "target average", "gap": "gap"}
    for run in runs[1:]:
        parts = []
        for key, label in labels.items():
            ours = [r["test"][key] for r in run.results]
            theirs = [r["test"][key] for r in reference.results]
            part = f"{label} {fmean(ours) - fmean(theirs):+.1f}"
            if len(ours) > 1 and len(theirs) > 1:
                part += f" (Welch p = {ttest_ind(ours, theirs, equal_var=False).pvalue:.2f})"
            parts.append(part)
        seeds = f"{len(run.results)} vs {len(reference.results)} seeds"
        lines.append(f"- {run.name} − {reference.name} ({seeds}): " + ", ".join(parts) + ".")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "quality")
    args = parser.parse_args()

    window = 25
    runs, threshold = [], None
    with RunProgress() as progress:
        for recipe, label, seeds in PLAN:
            overrides = [f"name={label}", f"output_dir={args.out}", f"seeds={seeds}", f"data.dir={args.data_dir.resolve()}"]
            if label != "DF":
                overrides += [f"methods.1.window={window}", f"methods.1.threshold={threshold}"]
            cfg = load_config(ROOT / "configs" / "cpu" / recipe, overrides)
            progress.console.rule(f"{label}: {cfg.methods}")
            run_experiment(cfg, resume=True, progress=progress)
            runs.append(load_run(cfg.run_dir))
            if label == "DF":
                threshold = calibrate_threshold(runs[0].losses[1], window)

    figures = ROOT / "docs" / "figures"
    written = write_figures(runs, figures)
    results = runs[0].results[0]
    data = results["data"]
    body = "\n".join(
        [
            "## Quality: UD POS, English to ten languages (bundled encoder, CPU)",
            "",
            "Recipes `configs/cpu/udpos.yaml` (DF), `udpos-fsf.yaml`, `udpos-fs.yaml`, `udpos-ff.yaml`: bundled",
            f"multilingual-e5-small, {data['train.en']['examples']} English training sentences ({data['train.en']['origin']['files'][0].split('/')[-2]}/"
            f"{data['train.en']['origin']['files'][0].split('/')[-1]}, fixed subset), {results['steps']} updates of batch 32, lr 1e-4,",
            "word embeddings frozen, model selection on the average dev accuracy of all languages (probes every 25",
            "updates on 60 dev sentences per language). Test: a fixed 1,000-sentence subset per language (all",
            "sentences where fewer), the same for every run. Token accuracy (%), mean ± sample std over seeds.",
            f"FSF/FS/FF: window {window} updates (10% of the run) and threshold {threshold}, calibrated on DF seed 1's",
            "loss curve so that P1 covers the first 20% of updates (Guo et al. Section 2.2); c1 = 0.01, c2 = 10, r = 3;",
            "policy IV applies for all of P2 (no CKA gate, as in the CPU recipes).",
            "",
            to_markdown(comparison(runs, "test")),
            "Differences from DF on test (points):",
            "",
            *differences(runs),
            "",
            "Dev (selection set, 200 sentences per language):",
            "",
            to_markdown(comparison(runs, "dev")),
            "Figures: " + ", ".join(f"[{p.name}](figures/{p.name})" for p in written),
        ]
    )
    print(body)
    update_section("quality", body)


if __name__ == "__main__":
    main()
