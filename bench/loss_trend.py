"""The per-update loss against the position of its batch inside a length-grouped megabatch, with the
batches in transformers' order (longest first in every megabatch) and shuffled within each megabatch
(xlgap's sampler), on the demo's DF run (bundled encoder, UD POS).

The correlation is computed on the residual of the loss after a 15-update moving average, so the
training curve's own decline does not count; a trend with the position biases any detector that
compares window means (FSF's phase P1).

    python bench/loss_trend.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchdoc import update_section
from xlgap.demo import demo_config
from xlgap.results import load_run
from xlgap.train import sampler
from xlgap.train.run import run_experiment


def residual_correlation(losses: list[float], megabatch: int, smooth: int = 15) -> float:
    """Pearson correlation of (loss - its centred moving average) with the position in the megabatch."""
    values = np.asarray(losses)
    kernel = np.ones(smooth) / smooth
    trend = np.convolve(values, kernel, mode="same")
    keep = slice(smooth, len(values) - smooth)
    position = np.arange(len(values)) % megabatch
    return float(np.corrcoef((values - trend)[keep], position[keep])[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    shuffle = sampler.shuffle_batches
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, order in (("transformers' order (sorted per megabatch)", lambda i, b, g: i), ("shuffled per megabatch", shuffle)):
            sampler.shuffle_batches = order
            cfg = demo_config("DF", [], str(args.data_dir.resolve()), Path(tmp) / label.split()[0])
            run_experiment(cfg, overwrite=True)
            losses = load_run(cfg.run_dir).losses[1]
            examples = load_run(cfg.run_dir).results[0]["data"]["train.en"]["sequences"]
            mega = sampler.megabatch_size(examples, cfg.train.batch_size) // cfg.train.batch_size
            rows.append(f"| {label} | {len(losses)} | {mega} | {residual_correlation(losses, mega):+.2f} |")
            print(rows[-1], flush=True)
    sampler.shuffle_batches = shuffle
    body = "\n".join(
        [
            "## Loss against the position in a length-grouped megabatch",
            "",
            "The demo's DF run (bundled encoder, English UD POS, batch 16), its batches in transformers'",
            "length-grouped order and in xlgap's (the same batches, shuffled within each megabatch). Correlation of",
            "the per-update loss, less its 15-update moving average, with the batch's position in its megabatch.",
            "",
            "| batch order | updates | batches per megabatch | correlation |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    update_section("loss-trend", body)


if __name__ == "__main__":
    main()
