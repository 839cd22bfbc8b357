"""Hyper-parameter sensitivity (the L2 paper's Tables 3 and 10): plain fine-tuning and L2 under the same
five (lr, warm-up, epochs) settings, and the mean and std over the settings of the English score and of
the zero-shot average, with the reduction of the std by L2.

Runs (or continues) the sweeps configs/sweeps/sensitivity-df-udpos.yaml and sensitivity-l2-udpos.yaml.

    python bench/sensitivity.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import fmean, stdev

from benchdoc import update_section
from xlgap.sweep import load_sweep, run_sweep, sweep_rows
from xlgap.train.progress import RunProgress

ROOT = Path(__file__).resolve().parents[1]


def spread(rows: list[dict], key: str) -> tuple[float, float]:
    """Mean and sample std over the settings of one aggregate (each setting's mean over seeds)."""
    values = [r[key]["mean"] for r in rows if r.get(key)]
    return fmean(values), stdev(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "sensitivity")
    args = parser.parse_args()
    results = {}
    with RunProgress() as progress:
        for label in ("df", "l2"):
            # the data folder as a one-value grid: every point reads it
            data = [f"data.dir={args.data_dir.resolve()}"]
            sweep = load_sweep(ROOT / "configs" / "sweeps" / f"sensitivity-{label}-udpos.yaml", data, None, args.out, None)
            run_sweep(sweep, progress)
            results[label] = sweep_rows(sweep.folder, "test")
    lines = [
        "## Hyper-parameter sensitivity: plain fine-tuning vs L2 (UD POS, bundled encoder, CPU)",
        "",
        "The five settings of the L2 paper's Table 10 (UDPOS) scaled to the CPU recipe (configs/sweeps/sensitivity-*.yaml:",
        "lr x5, warm-up steps / 10, epochs / 5), one seed per setting. Mean ± std over the five settings of the",
        "test accuracy, %.",
        "",
        "| method | English | zero-shot average | settings |",
        "|---|---|---|---|",
    ]
    stats = {}
    for label, rows in results.items():
        stats[label] = {key: spread(rows, key) for key in ("source", "target_avg")}
        (en_m, en_s), (zs_m, zs_s) = stats[label]["source"], stats[label]["target_avg"]
        lines.append(f"| {label.upper()} | {en_m:.1f} ± {en_s:.2f} | {zs_m:.1f} ± {zs_s:.2f} | {len(rows)} |")
    reduction = {k: 100 * (1 - stats["l2"][k][1] / stats["df"][k][1]) for k in ("source", "target_avg")}
    lines += ["", f"Std reduction by L2: English {reduction['source']:+.0f}%, zero-shot average {reduction['target_avg']:+.0f}%."]
    body = "\n".join(lines)
    print(body)
    update_section("sensitivity-udpos", body)


if __name__ == "__main__":
    main()
