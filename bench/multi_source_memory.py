"""Gradient memory of multi-source training for XLM-R base and large: (T + 1) x P float32 (the
per-language gradients and `.grad`) over the trainable parameters, with every weight trained and with the
word embeddings frozen, at T = 3 and T = 10. The models are built from their configs on the meta device
(no download, no memory), so the counts are the real models' counts.

    python bench/multi_source_memory.py
"""

from __future__ import annotations

import torch
from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

from benchdoc import update_section

MODELS = {
    "XLM-R base": XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, num_labels=7),
    "XLM-R large": XLMRobertaConfig(
        vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        max_position_embeddings=514, type_vocab_size=1, num_labels=7,
    ),
}


def main() -> None:
    rows = []
    for name, config in MODELS.items():
        with torch.device("meta"):
            model = XLMRobertaForTokenClassification(config)
        total = sum(p.numel() for p in model.parameters())
        embeddings = model.roberta.embeddings.word_embeddings.weight.numel()
        for t in (3, 10):
            full, frozen = ((t + 1) * p * 4 / 2**30 for p in (total, total - embeddings))
            rows.append(f"| {name} | {total / 1e6:.0f}M ({embeddings / total:.0%} word embeddings) | {t} | {full:.2f} | {frozen:.2f} |")
    body = "\n".join([
        "## Multi-source gradient memory for XLM-R",
        "",
        "Gradients held by a multi-source update: (T + 1) x P float32 over the trainable parameters P (one row per",
        "language, plus `.grad`), independent of the batch. LibMTL's dense T x P matrix is the same order; the",
        "optimizer state (AdamW: 2 x P) and the weights come on top.",
        "",
        "| model | parameters | T | GiB, all trained | GiB, word embeddings frozen |",
        "|---|---|---|---|---|",
        *rows,
    ])
    update_section("multi-source-memory", body)
    print(body)


if __name__ == "__main__":
    main()
