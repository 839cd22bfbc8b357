"""`xlgap demo`: plain fine-tuning (DF) against Fine-tuning Slow and Fast (FSF) in about ten minutes on
a 2-core CPU, on the bundled encoder, English UD POS, zero-shot on ten languages.

The sizes below were chosen so that both runs, their probes and the test evaluation fit in ten
minutes on the project's 2-core CPU machines, cold model cache included (bench/demo_time.py measures
it; docs/benchmarks.md records it); the demo prints them. FSF's loss window is scaled to the run: 10%
of its updates, so that the first two windows (phase P1 by definition) are the first 20% of training,
the length of P1 the paper observed (Section 2.2); the threshold is calibrated on the DF run's loss
curve (`calibrate_threshold`), so that on that curve P1 is exactly those first 20%. The paper's 0.1 is
for windows of 100 updates in runs of 10^4-10^5.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from xlgap.config import ExperimentConfig, config_from_dict
from xlgap.methods.fsf import calibrate_threshold
from xlgap.utils.hardware import resolve_precision

TARGETS = ["de", "es", "fr", "ru", "zh", "ja", "tr", "vi", "ar", "hi"]
FREEZE_WORD_EMBEDDINGS = {"name": "freeze", "select": "word_embeddings"}
SIZES: dict[str, Any] = {
    "train sentences (en)": 2400,
    "max length (subword tokens)": 128,
    "batch size": 16,
    "epochs": 1,
    "learning rate": 1e-4,
    "probe every (updates)": 25,
    "dev sentences per language (probes)": 60,
    "test sentences per language": 300,
    "FSF window (updates)": 15,
    "FSF threshold (loss drop)": "calibrated on the DF run",
}


WHAT_IT_SHOWS = (
    f"What this shows: one seed of each method, {SIZES['train sentences (en)']} English sentences, "
    f"{SIZES['test sentences per language']} test sentences per language. It shows how a run is measured "
    "language by language and how to read the gap; it does not show which method is better: at this size "
    "single-seed differences of a few points can be seed noise (docs/benchmarks.md compares the methods over seeds)."
)


def demo_config(name: str, methods: list[dict[str, Any]], data_dir: str | None, out: Path, precision: str = "auto") -> ExperimentConfig:
    """One run of the demo, writing into `out/<name>`, in `precision` (`train.precision`)."""
    base: dict[str, Any] = {
        "output_dir": str(out),
        "seeds": [1],
        "model": {"name": "bundled:multilingual-e5-small"},
        "data": {
            "task": "udpos",
            "dir": data_dir,
            "hub": data_dir is None,
            "source_languages": ["en"],
            "target_languages": TARGETS,
            "max_train_examples": SIZES["train sentences (en)"],
            "max_dev_examples": SIZES["dev sentences per language (probes)"],
            "max_test_examples": SIZES["test sentences per language"],
            "max_length": SIZES["max length (subword tokens)"],
        },
        "train": {
            "learning_rate": SIZES["learning rate"],
            "epochs": SIZES["epochs"],
            "batch_size": SIZES["batch size"],
            "warmup_ratio": 0.1,
            "precision": precision,
        },
        "eval": {
            "every": SIZES["probe every (updates)"],
            "selection": "last",
        },
    }
    return config_from_dict({**base, "name": name, "methods": [FREEZE_WORD_EMBEDDINGS, *methods]}, f"demo {name}")


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether huggingface.co answers (the demo downloads UD POS from it when no data folder is given)."""
    import urllib.request

    try:
        urllib.request.urlopen("https://huggingface.co", timeout=timeout)  # noqa: S310
    except OSError:
        return False
    return True


def run_demo(data_dir: Path | None, out: Path, console: Console, precision: str = "auto") -> None:
    """Run DF and FSF in `precision`, print the per-language table and write the figures into `out/report`."""
    from xlgap.report.plots import write_figures
    from xlgap.report.tables import FORMATS, comparison, print_table
    from xlgap.results import load_run
    from xlgap.train.progress import RunProgress
    from xlgap.train.run import run_experiment
    from xlgap.utils.files import write_text_atomic

    folder = str(data_dir) if data_dir else os.environ.get("XLGAP_DATA")
    if folder is None and not hub_reachable():
        raise ConnectionError(
            "no data: pass --data-dir or set XLGAP_DATA to a folder in the XTREME layout (udpos/train-en.tsv, "
            "udpos/test-<lang>.tsv or ud/UD_*/<lang>_*-ud-test.conllu), or connect to the internet so the "
            "demo can download google/xtreme udpos from the Hugging Face hub"
        )
    df = demo_config("DF", [], folder, out, precision)  # checks the precision before anything runs
    sizes = Table(title="demo settings (sized for ~10 minutes on 2 CPU cores)", show_header=False)
    used, _ = resolve_precision(precision)
    for key, value in {**SIZES, "precision": f"{used} ({precision})" if used != precision else used, "data": folder or "hub: google/xtreme udpos.*", "output": str(out)}.items():
        sizes.add_row(key, str(value))
    console.print(sizes)
    started = time.perf_counter()
    window = SIZES["FSF window (updates)"]
    with RunProgress(console) as progress:
        console.rule("DF: plain fine-tuning (word embeddings frozen)")
        run_experiment(df, overwrite=True, progress=progress)
        threshold = calibrate_threshold(load_run(df.run_dir).losses[1], window)
        console.rule(f"FSF: Fine-tuning Slow and Fast, window {window}, threshold {threshold} (from DF's loss curve)")
        fsf = demo_config("FSF", [{"name": "fsf", "window": window, "threshold": threshold}], folder, out, precision)
        run_experiment(fsf, overwrite=True, progress=progress)
    runs = [load_run(df.run_dir), load_run(fsf.run_dir)]
    table = comparison(runs, "test")
    print_table(console, table)
    console.print(WHAT_IT_SHOWS, soft_wrap=True)
    report = out / "report"
    for extension, render in FORMATS.items():
        write_text_atomic(report / f"test.{extension}", render(table))
    for path in write_figures(runs, report):
        console.print(f"figure: {path}")
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s; runs in {out}")
