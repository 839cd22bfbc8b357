"""Padding waste (padded tokens / real tokens) of training batches, with and without length grouping.

Batches are built exactly as training builds them: the Trainer's random sampler (what the Hugging Face
examples use) against xlgap's length-grouped sampler, dynamic padding to the longest sequence of each
batch, on English UD POS (XTREME udpos train-en) tokenized by the bundled encoder's tokenizer.

    python bench/padding.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, RandomSampler

from benchdoc import update_section
from xlgap.data.sampling import subsample_split
from xlgap.data.tasks import get_task
from xlgap.kinds import encode_split, load_split
from xlgap.models.load import load_tokenizer, resolve_model
from xlgap.train.sampler import EpochSeededLengthGroupedSampler


def waste(lengths: list[int], batch_size: int, grouped: bool, seed: int = 1) -> tuple[float, int, int]:
    """(padded / real tokens, real tokens, padded tokens) over one epoch of batches."""
    if grouped:
        sampler = EpochSeededLengthGroupedSampler(batch_size, lengths, seed)
    else:
        sampler = RandomSampler(lengths, generator=torch.Generator().manual_seed(seed))
    real = padded = 0
    for batch in BatchSampler(sampler, batch_size, drop_last=False):
        longest = max(lengths[i] for i in batch)
        real += sum(lengths[i] for i in batch)
        padded += longest * len(batch) - sum(lengths[i] for i in batch)
    return padded / real, real, padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    task = get_task("udpos")
    tokenizer = load_tokenizer(resolve_model("bundled:multilingual-e5-small"))
    full = load_split(task, "en", "train", data_dir=args.data_dir)
    sets = {f"udpos train-en, all {len(full)} sentences": full, "4,000-sentence subset (seed 0)": subsample_split(full, 4000, 0)}
    rows = []
    for name, split in sets.items():
        lengths = encode_split(split, task, tokenizer, args.max_length).columns["length"]
        for batch_size in (16, 32):
            random_ratio, real, random_pad = waste(lengths, batch_size, grouped=False)
            grouped_ratio, _, grouped_pad = waste(lengths, batch_size, grouped=True)
            rows.append(
                f"| {name} | {batch_size} | {real:,} | {random_ratio:.3f} | {grouped_ratio:.3f} | "
                f"{(real + random_pad) / (real + grouped_pad):.2f}x |"
            )
    body = "\n".join(
        [
            "## Padding waste with and without length grouping",
            "",
            "Padded tokens per real token over one epoch of training batches (dynamic padding to the longest",
            f"sequence in each batch, max length {args.max_length}); the last column is how many more tokens the",
            "random batches push through the model than the length-grouped ones.",
            "",
            "| data | batch | real tokens | waste, random batches | waste, length-grouped | tokens computed, random / grouped |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    update_section("padding", body)


if __name__ == "__main__":
    main()
