"""Evaluation cost: xlgap's Trainer-free evaluation against a bare inference loop over the same batches.

For UD POS (11 languages), PAN-X NER and XQuAD (extractive QA), the test sets are encoded once; then,
in interleaved rounds, (a) `xlgap.kinds.evaluate_sets` scores every language from scratch (packing the
rows, cutting and padding batches, gathering and decoding the outputs, stitching windows and mapping QA
windows back to questions, computing every metric) and (b) a bare loop runs `model(**batch)` in
inference mode over exactly the batches (a) cuts, built before the clock starts. The ratio (a) / (b)
is the whole cost of scoring over one inference pass over the evaluation tokens.

    python bench/eval_cost.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import median

import torch

from benchdoc import update_section
from xlgap.data.sampling import subsample_split
from xlgap.data.tasks import get_task
from xlgap.kinds import EncodeSettings, evaluate_sets, kind_of, load_split
from xlgap.kinds.evaluate import batches
from xlgap.models.load import load_tokenizer, resolve_model

PLAN = {
    "udpos": (["en", "de", "es", "fr", "ru", "zh", "ja", "tr", "vi", "ar", "hi"], 1000, 128),
    "panx": (["en", "de", "fr", "ru", "zh", "ar"], 1000, 128),
    "xquad": (["en", "de", "es", "ru", "zh", "ar"], 200, 384),
}


def bare_pass(model: torch.nn.Module, prepared: list[dict[str, torch.Tensor]]) -> float:
    """Seconds for `model(**batch)` over prebuilt batches, in inference mode."""
    started = time.perf_counter()
    with torch.inference_mode():
        for inputs in prepared:
            model(**inputs)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    model_path = resolve_model("bundled:multilingual-e5-small")
    tokenizer = load_tokenizer(model_path)
    rows = []
    for name, (languages, cap, max_length) in PLAN.items():
        task = get_task(name)
        kind = kind_of(task)
        sets = {}
        for lang in languages:
            split = load_split(task, lang, "test", data_dir=args.data_dir)
            split = subsample_split(split, cap, 0) if len(split) > cap else split
            sets[lang] = kind.encode_split(split, task, tokenizer, EncodeSettings(max_length=max_length))
        torch.manual_seed(0)
        model = kind.load_model(model_path, task).eval()
        prepared = [b.inputs for split in sets.values() for b in batches(split, args.batch_size)]
        tokens = sum(split.tokens for split in sets.values())
        ours, bare = [], []
        for _ in range(args.rounds):
            for split in sets.values():
                split.cache.clear()  # pack again: the measured cost includes building the batches
            started = time.perf_counter()
            evaluate_sets(model, sets, args.batch_size)
            ours.append(time.perf_counter() - started)
            bare.append(bare_pass(model, prepared))
        ratio = median(o / b for o, b in zip(ours, bare, strict=True))
        rows.append(
            f"| {name} | {len(languages)} | {sum(len(s.examples) for s in sets.values()):,} | {tokens:,} | "
            f"{median(bare):.1f} | {median(ours):.1f} | {tokens / median(ours):,.0f} | **{ratio:.3f}** |"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "## Evaluation cost: scoring every language vs one bare inference pass",
            "",
            "Bundled multilingual-e5-small with a task head, fp32, CPU, batches of "
            f"{args.batch_size} length-sorted rows. 'xlgap' is `evaluate_sets` from scratch (packing, batching,",
            "gathering, decoding, stitching windows / mapping QA windows to questions, every metric of the task:",
            "accuracy and seqeval F1 for POS, seqeval F1/P/R for NER, F1/EM for QA); 'bare' is `model(**batch)` over",
            f"the same prebuilt batches in inference mode. Median over {args.rounds} interleaved rounds.",
            "",
            "| task | languages | examples | tokens | bare (s) | xlgap (s) | xlgap tokens/s | xlgap / bare |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    update_section("eval-cost", body)


if __name__ == "__main__":
    main()
