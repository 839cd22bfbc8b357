"""Attention kernels on this CPU: a training step of the bundled encoder with SDPA, with the plain matmul
product (transformers' `eager`) and with xlgap's length-dispatched attention (`xlgap_cpu`:
models/attention.py), per sequence length, in bf16 autocast and in fp32.

Each shape is a length-grouped batch of about 3,072 tokens (rows x length, the last rows 15% padded),
word embeddings frozen, AdamW; the three models hold the same weights and take the same batches in
interleaved rounds (the first step of each is a warm-up). An inference pass (`model(**batch)` in
inference mode) is timed the same way. The ratio SDPA / xlgap_cpu is the speed-up xlgap's runs get from
the dispatch; where xlgap_cpu uses SDPA itself the ratio is 1 up to noise.

    python bench/attention.py
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import torch
from transformers import AutoModelForTokenClassification, set_seed

from benchdoc import update_section
from xlgap.methods import Freeze
from xlgap.models.attention import MATMUL_MAX_LENGTH, use_length_dispatched_attention
from xlgap.models.load import quiet_loading, resolve_model
from xlgap.utils.hardware import device_description

VARIANTS = ("sdpa", "eager", "xlgap_cpu")


def build(variant: str, path: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The bundled encoder with a POS head on `variant`'s attention, word embeddings frozen, and its AdamW."""
    set_seed(1)
    with quiet_loading():
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=17, attn_implementation="eager" if variant == "eager" else "sdpa")
    if variant == "xlgap_cpu":
        use_length_dispatched_attention(model)
    Freeze("word_embeddings").prepare(model, None)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)


def batch(length: int, tokens: int) -> dict[str, torch.Tensor]:
    """A length-grouped batch of about `tokens` tokens: rows of `length`, the last ones up to 15% padded."""
    rows = max(2, tokens // length)
    generator = torch.Generator().manual_seed(length)
    mask = torch.ones(rows, length, dtype=torch.long)
    for row in range(rows):
        mask[row, int(length * (0.85 + 0.15 * row / rows)) :] = 0
    return {
        "input_ids": torch.randint(5, 1000, (rows, length), generator=generator),
        "attention_mask": mask,
        "labels": torch.randint(0, 17, (rows, length), generator=generator),
    }


def timed_step(model, optimizer, inputs, precision: str, train: bool) -> float:
    """Seconds of one training step (forward, backward, AdamW) or one inference pass."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    started = time.perf_counter()
    if train:
        model.train()
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    else:
        model.eval()
        with torch.inference_mode(), autocast:
            model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="24,48,96,128,192,384")
    parser.add_argument("--tokens", type=int, default=3072, help="tokens per batch (rows = tokens / length)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precisions", default="bf16,fp32")
    args = parser.parse_args()

    path = resolve_model("bundled:multilingual-e5-small")
    models = {v: build(v, path) for v in VARIANTS}
    rows = []
    for precision in args.precisions.split(","):
        for train in (True, False):
            for length in map(int, args.lengths.split(",")):
                inputs = batch(length, args.tokens)
                times: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for v in VARIANTS:
                    timed_step(*models[v], inputs, precision, train)  # warm-up
                for round_index in range(args.rounds):
                    for v in VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]:
                        times[v].append(timed_step(*models[v], inputs, precision, train))
                seconds = {v: median(t) for v, t in times.items()}
                shape = f"{inputs['input_ids'].shape[0]} x {length}"
                row = (
                    f"| {precision} | {'training step' if train else 'inference'} | {shape} | "
                    + " | ".join(f"{seconds[v]:.3f}" for v in VARIANTS)
                    + f" | **{seconds['sdpa'] / seconds['xlgap_cpu']:.2f}** |"
                )
                print(row, flush=True)
                rows.append(row)
    body = "\n".join(
        [
            "## Attention kernels on the CPU: SDPA, the matmul product, and xlgap's dispatch",
            "",
            f"A step of the bundled encoder (POS head, word embeddings frozen, AdamW) on {device_description('cpu')}: batches of",
            f"about {args.tokens:,} tokens (rows x length, length-grouped, the last rows up to 15% padded), median seconds over",
            f"{args.rounds} interleaved rounds after a warm-up, in training mode (dropout 0.1) for the training steps. `eager` is",
            "transformers' plain product; `xlgap_cpu` is models/attention.py: the same product for bf16 training calls with",
            f"dropout (or up to {MATMUL_MAX_LENGTH} tokens without), SDPA for everything else (so it equals SDPA up to noise there).",
            "The last column is the speed-up of xlgap_cpu over SDPA, transformers' default. Timings on this shared machine",
            "vary by about 10% between rounds; the two product columns compute the same thing in bf16 training.",
            "",
            "| precision | pass | batch | SDPA (s) | eager (s) | xlgap_cpu (s) | SDPA / xlgap_cpu |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    update_section("attention", body)


if __name__ == "__main__":
    main()
