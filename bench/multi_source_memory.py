"""Gradient memory of multi-source training for XLM-R base and large at T = 3 and T = 10: a dense
`[T, P]` float32 matrix plus `.grad` ((T + 1) x P, LibMTL's layout) against xlgap's layout (T x P' + P:
dense rows without the word embeddings, whose gradient is held as the touched rows, a few MiB per
language, not counted), with every weight trained and with the word embeddings frozen. The models are built from their configs on the meta device
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
        rest = total - embeddings
        for t in (3, 10):
            dense, ours, frozen = ((t + 1) * total, t * rest + total, (t + 1) * rest)
            cells = " | ".join(f"{x * 4 / 2**30:.2f}" for x in (dense, ours, frozen))
            rows.append(f"| {name} | {total / 1e6:.0f}M ({embeddings / total:.0%} word embeddings) | {t} | {cells} |")
    body = "\n".join([
        "## Multi-source gradient memory for XLM-R",
        "",
        "Gradients held by a multi-source update (float32, independent of the batch): a dense row per language plus",
        "`.grad` ((T + 1) x P, the layout of LibMTL's dense matrix), and xlgap's layout with the word embeddings' gradient",
        "held as the rows each language touched (T x P' + P, P' = the trainable values outside the word embeddings;",
        "the touched rows, a few MiB per language, are not counted). With frozen word embeddings the two agree.",
        "The optimizer state (AdamW: 2 x P) and the weights come on top.",
        "",
        "| model | parameters | T | GiB, dense, all trained | GiB, xlgap, all trained | GiB, word embeddings frozen |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    update_section("multi-source-memory", body)
    print(body)


if __name__ == "__main__":
    main()
