"""Training throughput of xlgap's Trainer against a plain transformers.Trainer script, and FSF's step
time over plain fine-tuning (DF), measured as ratios in one run.

Same model (the bundled multilingual-e5-small with a fresh POS head, fp32, CPU), same data (English UD
POS sentences), same batch size, seed and lr. Variants:

- plain:            transformers.Trainer with DataCollatorForTokenClassification and random batches,
                    what the Hugging Face examples (run_ner.py) do;
- xlgap DF random:  XlgapTrainer, no method, random batches (the trainer's own overhead);
- xlgap DF:         XlgapTrainer with xlgap's default length-grouped batches (what `xlgap run` does);
- xlgap FSF:        as xlgap DF with Fine-tuning Slow and Fast (same batches, so the step-time ratio
                    isolates FSF's cost);
- xlgap DF frozen:  as xlgap DF with the word embeddings frozen (the CPU recipes' setting).

Variants are interleaved over rounds so slow drifts of the machine hit all of them alike. Each update
is timed between the Trainer's on_step_begin and on_step_end (no probes, no checkpoints); tokens are
real (non-padding) tokens. The first update of every variant and round is a warm-up and not counted.

    python bench/throughput.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from transformers import (
    DataCollatorForTokenClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from benchdoc import update_section
from xlgap.data.sampling import subsample_split
from xlgap.data.tasks import get_task
from xlgap.kinds import encode_split, kind_of, load_split
from xlgap.methods import FineTuningSlowFast, Freeze
from xlgap.models.load import load_tokenizer, resolve_model
from xlgap.train.trainer import XlgapTrainer


class StepClock(TrainerCallback):
    """Times every update and counts the real tokens of its batch (via the collator below)."""

    def __init__(self):
        self.times: list[float] = []
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.started)


class CountingCollator(DataCollatorForTokenClassification):
    """The standard token-classification collator, recording real and padded tokens of each batch."""

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        self.real.append(int(batch["attention_mask"].sum()))
        self.padded.append(int(batch["attention_mask"].numel()))
        return batch


def measure(variant: str, model_path: str, dataset, tokenizer, steps: int, batch_size: int, out: Path) -> dict:
    """Train `steps` updates of one variant; returns its per-update times and token counts."""
    task = get_task("udpos")
    set_seed(1)
    kind = kind_of(task)
    model = kind.load_model(model_path, task)
    collator = CountingCollator(tokenizer)
    collator.real, collator.padded = [], []
    args = TrainingArguments(
        output_dir=str(out / variant),
        per_device_train_batch_size=batch_size,
        learning_rate=1e-4,
        max_steps=steps,
        warmup_steps=0,
        train_sampling_strategy="random" if variant in ("plain", "xlgap DF random") else "group_by_length",
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=1,
        dataloader_pin_memory=False,
        use_cpu=True,
    )
    clock = StepClock()
    common = {"train_dataset": dataset, "data_collator": collator, "callbacks": [clock]}
    if variant == "plain":
        trainer = Trainer(model=model, args=args, **common)
    else:
        methods = {
            "xlgap DF random": None,
            "xlgap DF": None,
            "xlgap FSF": FineTuningSlowFast(window=5),
            "xlgap DF frozen": Freeze("word_embeddings"),
        }
        trainer = XlgapTrainer(model, args, method=methods[variant], **common)
    trainer.train()
    # Drop the warm-up update; the collator may have prefetched one batch more than was trained.
    return {
        "times": clock.times[1:steps],
        "real": collator.real[1:steps],
        "padded": collator.padded[1:steps],
        "groups": len(trainer.optimizer.param_groups),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=9, help="updates per variant and round (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--sentences", type=int, default=4000,
        help="training set the batches are drawn from (the CPU recipe's size; length grouping needs a real epoch)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/throughput"))
    args = parser.parse_args()

    task = get_task("udpos")
    model_path = resolve_model("bundled:multilingual-e5-small")
    tokenizer = load_tokenizer(model_path)
    split = subsample_split(load_split(task, "en", "train", data_dir=args.data_dir), args.sentences, 0)
    dataset = encode_split(split, task, tokenizer, 128).dataset()

    variants = ["plain", "xlgap DF random", "xlgap DF", "xlgap FSF", "xlgap DF frozen"]
    totals = {v: {"times": [], "real": [], "padded": []} for v in variants}
    round_means: dict[str, list[float]] = {v: [] for v in variants}
    groups: dict[str, int] = {}
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        for variant in order:
            result = measure(variant, model_path, dataset, tokenizer, args.steps, args.batch_size, args.out)
            for key in totals[variant]:
                totals[variant][key] += result[key]
            round_means[variant].append(statistics.mean(result["times"]))
            groups[variant] = result["groups"]
            print(f"round {round_index + 1} {variant}: {statistics.mean(result['times']):.2f} s/update", flush=True)

    def tokens_per_s(v: str) -> float:
        return sum(totals[v]["real"]) / sum(totals[v]["times"])

    plain = tokens_per_s("plain")
    df_step = statistics.mean(totals["xlgap DF"]["times"])
    rows = []
    for v in variants:
        t = totals[v]
        rows.append(
            f"| {v} | {len(t['times'])} | {statistics.mean(t['times']):.2f} | {tokens_per_s(v):.0f} | "
            f"{tokens_per_s(v) / plain:.2f} | {sum(t['padded']) / sum(t['real']) - 1:.2f} | {groups[v]} |"
        )
    fsf_ratio = statistics.mean(totals["xlgap FSF"]["times"]) / df_step
    per_round = [f / d for f, d in zip(round_means["xlgap FSF"], round_means["xlgap DF"], strict=True)]
    body = "\n".join(
        [
            "## Training throughput: xlgap vs a plain transformers.Trainer script",
            "",
            f"Bundled multilingual-e5-small, English UD POS (a fixed {len(split)}-sentence subset, as the CPU recipe), batch",
            f"{args.batch_size}, fp32 on CPU; every variant trains the first {args.steps} updates of an epoch over that set,",
            f"{args.rounds} interleaved rounds, the first update of each round not counted.",
            "Tokens/s counts real (non-padding) tokens; 'padding' is padded tokens per real token in the timed batches.",
            "",
            "| variant | updates timed | s / update | tokens/s | tokens/s vs plain | padding | optimizer groups |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"**xlgap run (length-grouped) vs plain Trainer: {tokens_per_s('xlgap DF') / plain:.2f}x tokens/s.** "
            f"Same batches, trainer overhead only (xlgap DF random vs plain): {tokens_per_s('xlgap DF random') / plain:.2f}x. "
            f"**FSF step time over DF: {fsf_ratio:.2f}** (same batches; per round "
            + ", ".join(f"{r:.2f}" for r in per_round)
            + "). FSF's only extra work per update is its loss window and one fused AdamW call per optimizer group.",
        ]
    )
    print(body)
    update_section("throughput", body)


if __name__ == "__main__":
    main()
