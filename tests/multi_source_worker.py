"""Train a tiny two-language multi-source run and save its weights: run by test_multi_source.py once in
one process and once under `torchrun --nproc_per_node 2` (gloo on CPU), the same global batch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from datasets import concatenate_datasets
from transformers import DataCollatorForTokenClassification, TrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_bert, tiny_tokenizer, token_dataset  # noqa: E402
from xlgap.combiners import build_combiner  # noqa: E402
from xlgap.train.multi_source import MultiSource  # noqa: E402
from xlgap.train.trainer import XlgapTrainer  # noqa: E402
from xlgap.utils.processes import end_process_group  # noqa: E402


def main(out: str, combiner: str, batch_per_process: int) -> None:
    data = concatenate_datasets([token_dataset(12, seed=1), token_dataset(8, seed=2)])
    args = TrainingArguments(
        output_dir=out, report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, max_steps=4,
        learning_rate=1e-2, warmup_steps=0, seed=5, per_device_train_batch_size=batch_per_process,
        lr_scheduler_type="constant",
    )
    trainer = XlgapTrainer(
        tiny_bert(dropout=0.0), args, train_dataset=data, data_collator=DataCollatorForTokenClassification(tiny_tokenizer()),
        multi_source=MultiSource(["en", "de"], [12, 8], batch_per_process, build_combiner(combiner)),
    )
    trainer.train()
    if trainer.is_world_process_zero():
        torch.save(
            {"weights": {n: p.detach() for n, p in trainer.model.named_parameters()}, "losses": trainer.stats.language_losses,
             "combiner_weights": trainer.stats.combiner_weights},
            Path(out) / "final.pt",
        )
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
