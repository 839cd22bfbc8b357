"""Where the wall time of a CPU recipe run goes: training, probes, checkpoints, final evaluation.

Runs one seed of a recipe (default `configs/cpu/udpos.yaml`) with whatever xlgap is importable and
times it from the outside, by wrapping the trainer's `train`, its periodic `evaluate` (the probes) and
`_save_checkpoint`, and the runner's final `evaluate_sets`, so the same script measures any version of
the code: `PYTHONPATH=<checkout>/src python bench/wall_split.py ... --label before` on an older checkout.
Each call adds its row to bench/wall_split.json (kept in the repository: the rows are measurements of
other commits that cannot be remade by rerunning this one; a row of the same label is replaced); the
section in docs/benchmarks.md shows every row recorded.

    python bench/wall_split.py --data-dir ../shared/data --label after
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from benchdoc import add_override_option, cpu_description, update_section
from xlgap.config import load_config
from xlgap.train import run as runner
from xlgap.train.trainer import XlgapTrainer

ROOT = Path(__file__).resolve().parents[1]
SPENT = {"train": 0.0, "probes": 0.0, "checkpoints": 0.0, "final_evaluation": 0.0}


def timed(key: str, function):
    """`function`, adding its wall time to SPENT[key]."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[key] += time.perf_counter() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs" / "cpu" / "udpos.yaml")
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "wall_split")
    add_override_option(parser)
    args = parser.parse_args()

    evaluate = XlgapTrainer.evaluate

    def probe(self, eval_dataset=None, *rest, **kwargs):
        if eval_dataset is not None:
            return evaluate(self, eval_dataset, *rest, **kwargs)
        return timed("probes", evaluate)(self, eval_dataset, *rest, **kwargs)

    XlgapTrainer.evaluate = probe
    XlgapTrainer.train = timed("train", XlgapTrainer.train)
    XlgapTrainer._save_checkpoint = timed("checkpoints", XlgapTrainer._save_checkpoint)
    runner.evaluate_sets = timed("final_evaluation", runner.evaluate_sets)

    cfg = load_config(args.recipe, [f"output_dir={args.out}", f"name={args.label}", f"data.dir={args.data_dir.resolve()}", *args.set])
    started = time.perf_counter()
    runner.run_experiment(cfg, overwrite=True)
    total = time.perf_counter() - started
    source = Path(runner.__file__).resolve().parents[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()
    result = json.loads((cfg.run_dir / "seed-1" / "results.json").read_text())
    train = result["data"][f"train.{result['sources'][0]}"]
    tests = result["test"]["examples"].values()
    row = {
        "label": args.label,
        "recipe": (
            f"{train['examples']:,} sentences x {cfg.train.epochs:g} epochs ({result['steps']} updates), probes every "
            f"{cfg.eval.every}, test {max(tests):,} sentences x {len(tests)} languages"
        ),
        "commit": commit,
        "machine": cpu_description(),
        "precision": (result.get("precision") or {}).get("used", "fp32"),  # code before `train.precision` ran fp32
        "training": SPENT["train"] - SPENT["probes"] - SPENT["checkpoints"],
        "probes": SPENT["probes"],
        "checkpoints": SPENT["checkpoints"],
        "final_evaluation": SPENT["final_evaluation"],
        "total": total,
    }
    store = ROOT / "bench" / "wall_split.json"
    rows = [r for r in (json.loads(store.read_text()) if store.exists() else []) if r["label"] != args.label]
    rows.append(row)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(rows, indent=1))

    lines = [
        f"## Wall time of one CPU recipe run: `{args.recipe.relative_to(ROOT)}`, seed 1",
        "",
        "Seconds (share of the run). 'training' is `Trainer.train` less the probes and checkpoints inside it;",
        "'other' is loading and encoding the data, the model and writing the run folder. Each row was measured",
        "by `bench/wall_split.py` on the commit named, with the recipe's sizes it names (the recipe file as it was",
        "then, or with `--set` overrides). The last column is the cost of the training loop's own extras (probes",
        "and checkpoints) per second of training.",
        "",
        "| code | commit | recipe | machine | precision | training | probes | checkpoints | final evaluation | other | total | outside training | probes + checkpoints vs training |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        other = r["total"] - r["training"] - r["probes"] - r["checkpoints"] - r["final_evaluation"]
        cells = [f"{r[k]:.0f} ({r[k] / r['total']:.0%})" for k in ("training", "probes", "checkpoints", "final_evaluation")]
        lines.append(
            f"| {r['label']} | `{r['commit']}` | {r.get('recipe', 'not recorded')} | {r.get('machine', 'not recorded')} | {r.get('precision', 'not recorded')} | " + " | ".join(cells)
            + f" | {other:.0f} ({other / r['total']:.0%}) | {r['total']:.0f} | **{1 - r['training'] / r['total']:.0%}** |"
            + f" {(r['probes'] + r['checkpoints']) / r['training']:.0%} |"
        )
    body = "\n".join(lines)
    print(body)
    update_section("wall-split", body)


if __name__ == "__main__":
    main()
