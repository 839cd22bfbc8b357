"""Step time and memory of multi-source training: each gradient combiner against Uniform, at T = 2, 3
and 5 source languages, and against one backward pass over the same examples mixed (what training on
the concatenated sources costs), measured as ratios in one run.

Bundled multilingual-e5-small with a fresh NER head, word embeddings frozen (the CPU recipes' DF), PAN-X
sources en, de, fr, es, ru (the first T), B examples per language and update. Variants run interleaved
over rounds, each in a fresh process; an update is timed between the Trainer's on_step_begin and
on_step_end, the first update of each process not counted. The combiner's own time (Gram matrices in
float64, the QP or the projections, the combination) is timed inside the update; memory is the process's
peak resident set and the floats the gradient buffer holds ((T + 1) x P).

    python bench/multi_source_step.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

import psutil
import torch
from datasets import concatenate_datasets
from transformers import DataCollatorForTokenClassification, TrainingArguments, set_seed

from benchdoc import update_section
from throughput import StepClock
from xlgap.combiners import build_combiner
from xlgap.data.sampling import subsample_split
from xlgap.data.tasks import get_task
from xlgap.kinds import encode_split, kind_of, load_split
from xlgap.methods import Compose, Freeze
from xlgap.models.load import load_tokenizer, resolve_model
from xlgap.train.multi_source import MultiSource
from xlgap.train.trainer import XlgapTrainer
from xlgap.utils.hardware import device_description, resolve_precision

LANGUAGES = ["en", "de", "fr", "es", "ru"]
COMBINERS = ["mixed", "uniform", "lf-mlf", "pcgrad", "gradvac"]
EMBEDDING_VARIANTS = ["uniform +emb sparse", "lf-mlf +emb sparse", "lf-mlf +emb dense"]
"""At T = 3 only: the word embeddings trained too, their gradient held as touched rows or densely."""


def measure(combiner: str, t: int, data_dir: Path, batch: int, steps: int, sentences: int, precision: str) -> dict:
    """Train `steps` updates of one variant; returns its update times, combiner time and memory."""
    task = get_task("panx")
    model_path = resolve_model("bundled:multilingual-e5-small")
    tokenizer = load_tokenizer(model_path)
    splits = [encode_split(subsample_split(load_split(task, lang, "train", data_dir=data_dir), sentences, 0), task, tokenizer, 128) for lang in LANGUAGES[:t]]
    dataset = concatenate_datasets([s.dataset() for s in splits])
    set_seed(1)
    model = kind_of(task).load_model(model_path, task)
    name, _, embeddings = combiner.partition(" +emb ")
    mixed = name == "mixed"
    args = TrainingArguments(
        output_dir="/tmp/xlgap-bench-multi", per_device_train_batch_size=batch * t if mixed else batch, learning_rate=2e-5,
        max_steps=steps, warmup_steps=0, eval_strategy="no", save_strategy="no", report_to=[], disable_tqdm=True, seed=1,
        bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False,
    )
    multi = None
    seconds = []
    if not mixed:
        built = build_combiner(name)
        original = built.weights

        def timed(grads):  # the combiner's own time: its weights (the Gram matrices are computed before)
            started = time.perf_counter()
            out = original(grads)
            seconds.append(time.perf_counter() - started)
            return out

        built.weights = timed
        multi = MultiSource(LANGUAGES[:t], [len(s) for s in splits], batch, built, sparse_embeddings=embeddings != "dense")
    clock = StepClock()
    trainer = XlgapTrainer(
        model, args, train_dataset=dataset, data_collator=DataCollatorForTokenClassification(tokenizer),
        method=Compose() if embeddings else Compose(Freeze("word_embeddings")), multi_source=multi, callbacks=[clock],
    )
    trainer.train()
    return {
        "times": clock.times[1:],
        "combiner": seconds[1:],
        "rss": psutil.Process().memory_info().rss,
        "gradient_floats": multi.gradient_floats() if multi else None,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8, help="examples per language and update")
    parser.add_argument("--steps", type=int, default=7, help="updates per variant and round (first is warm-up)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=400, help="training sentences per language")
    parser.add_argument("--sources", default="2,3,5")
    args = parser.parse_args()
    precision, why = resolve_precision("auto")
    counts = [int(x) for x in args.sources.split(",")]
    results: dict[tuple[str, int], dict] = {}
    pool_context = multiprocessing.get_context("spawn")
    for round_index in range(args.rounds):
        order = COMBINERS if round_index % 2 == 0 else COMBINERS[::-1]
        for t in counts:
            for combiner in order + (EMBEDDING_VARIANTS if t == 3 else []):
                with pool_context.Pool(1) as pool:
                    r = pool.apply(measure, (combiner, t, args.data_dir, args.batch, args.steps, args.sentences, precision))
                entry = results.setdefault((combiner, t), {"times": [], "combiner": [], "rss": 0})
                entry["times"] += r["times"]
                entry["combiner"] += r["combiner"]
                entry["rss"] = max(entry["rss"], r["rss"])
                entry["gradient_floats"], entry["trainable"] = r["gradient_floats"], r["trainable"]
                print(f"round {round_index + 1} T={t} {combiner}: {statistics.mean(r['times']):.2f} s/update", flush=True)
    rows = []
    for t in counts:
        uniform = statistics.mean(results[("uniform", t)]["times"])
        for combiner in COMBINERS + (EMBEDDING_VARIANTS if t == 3 else []):
            e = results[(combiner, t)]
            mean = statistics.mean(e["times"])
            qp = f"{1000 * statistics.mean(e['combiner']):.1f}" if e["combiner"] else "-"
            buffer = f"{e['gradient_floats'] * 4 / 2**20:.0f}" if e["gradient_floats"] else "-"
            rows.append(f"| {t} | {combiner} | {mean:.2f} | {mean / uniform:.2f} | {qp} | {buffer} | {e['rss'] / 2**30:.2f} |")
    lf3 = statistics.mean(results[("lf-mlf", 3)]["times"]) / statistics.mean(results[("uniform", 3)]["times"]) if 3 in counts else None
    verdict = (
        f"At T = 3, LF-MLF's update takes {lf3:.2f}x Uniform's (target: at most 1.25x): "
        + ("met." if lf3 <= 1.25 else "not met.")
        if lf3 is not None else ""
    )
    trainable = results[("uniform", counts[0])]["trainable"]
    body = "\n".join([
        "## Multi-source step time and memory: combiners vs Uniform",
        "",
        f"Bundled multilingual-e5-small (PAN-X head, word embeddings frozen: {trainable:,} trainable values), {args.batch}",
        f"examples per language and update, PAN-X sources {', '.join(LANGUAGES[:max(counts)])} (the first T), {device_description('cpu')},",
        f"precision {precision} ({why}); {args.rounds} interleaved rounds of {args.steps} updates per variant (first not counted).",
        "'mixed' is one backward pass over the same number of examples drawn from the concatenated sources; '+emb'",
        "rows (T = 3) train the word embeddings too, their gradient held as touched rows (sparse) or densely.",
        "Combiner ms is the combiner's own time per update (after the float64 Gram matrices); buffer MiB is",
        "(T + 1) x P float32 (the per-language gradients and `.grad`); RSS is the process's peak resident set.",
        "",
        "| T | combiner | s/update | vs uniform | combiner ms | buffer MiB | RSS GiB |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        verdict,
    ])
    update_section("multi-source-step", body)
    print(body)


if __name__ == "__main__":
    main()
