"""No loss of quality under bf16: the UD POS CPU recipe (plain fine-tuning) in fp32 and under bf16
autocast, the same seeds, paired by seed; the English and target-average test accuracy of each, their
paired difference, and whether it is below the spread over seeds. Also the wall time of each seed.

bf16 here means `train.precision: bf16`: autocast for the forward pass, fp32 master weights, optimizer
state, loss and metrics; evaluation under the same autocast. On a CPU without native bf16 it still runs
(emulated, slowly), and the section says which CPU it ran on. Runs are run folders under
bench/out/precision/ (finished seeds kept).

    python bench/precision_quality.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean, stdev

from benchdoc import add_override_option, overrides_note, update_section
from xlgap.config import load_config
from xlgap.report.compare import TARGET_AVG, compare_runs, report_markdown, run_scores
from xlgap.results import load_run
from xlgap.train.progress import RunProgress
from xlgap.train.run import run_experiment
from xlgap.utils.hardware import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "precision")
    add_override_option(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = {}
    with RunProgress() as progress:
        for precision in PRECISIONS:
            overrides = [f"name={precision}", f"output_dir={args.out}", f"seeds={seeds}", f"data.dir={args.data_dir.resolve()}", f"train.precision={precision}", *args.set]
            cfg = load_config(ROOT / "configs" / "cpu" / "udpos.yaml", overrides)
            progress.console.rule(f"udpos DF, {precision}")
            run_experiment(cfg, resume=True, progress=progress)
            folders[precision] = cfg.run_dir
    runs = {p: load_run(folder) for p, folder in folders.items()}
    scores = {p: run_scores(run, label=p) for p, run in runs.items()}
    report = compare_runs(list(scores.values()), control="fp32")
    hardware = runs["bf16"].results[0]["hardware"]
    lines = [
        "## Precision: fp32 vs bf16 autocast on `configs/cpu/udpos.yaml` (DF, bundled encoder, CPU)",
        "",
        f"Seeds {', '.join(map(str, seeds))}, paired by seed, on {hardware} "
        f"(native bf16: {'yes' if cpu_has_native_bf16() else 'no, emulated'}). Test accuracy (%), mean ± sample std over seeds;",
        "seconds are each seed's whole run (training, probes, final evaluation), mean over seeds." + overrides_note(args.set),
        "",
        "| precision | English | target average | s / seed |",
        "|---|---|---|---|",
    ]
    for p in PRECISIONS:
        en, avg = scores[p].values("en"), scores[p].values(TARGET_AVG)
        seconds = fmean(r["wall_seconds"]["total"] for r in runs[p].results)
        lines.append(f"| {p} | {fmean(en):.2f} ± {stdev(en):.2f} | {fmean(avg):.2f} ± {stdev(avg):.2f} | {seconds:.0f} |")
    verdicts = []
    for key, label in (("en", "English"), (TARGET_AVG, "target average")):
        test = next(t for t in report.tests[scores["bf16"].name] if t.language == key)
        spread = max(stdev(scores[p].values(key)) for p in PRECISIONS)
        within = abs(test.difference) < spread
        verdicts.append(
            f"- {label}: bf16 - fp32 = {test.difference:+.2f} points (paired p = {test.p:.3f}), "
            f"{'less' if within else 'not less'} than the larger seed std ({spread:.2f})."
        )
    speed = fmean(r["wall_seconds"]["total"] for r in runs["fp32"].results) / fmean(r["wall_seconds"]["total"] for r in runs["bf16"].results)
    lines += ["", "Verdict (generated from the numbers):", "", *verdicts, f"- bf16 runs {speed:.2f}x faster per seed.", ""]
    lines += ["The `xlgap compare` output (test, control fp32):", "", report_markdown(report).split("\n", 1)[1].replace("\n## ", "\n### ")]
    body = "\n".join(lines)
    print(body)
    update_section("precision-quality", body)


if __name__ == "__main__":
    main()
