"""Fine-tuning Slow and Fast plus an L2 pull towards the pretrained weights in your own Trainer script.

A plain Hugging Face token-classification script (the data read with `datasets`, transformers' own
collator and TrainingArguments); the only xlgap pieces are the methods and `XlgapTrainer`, a
`transformers.Trainer` subclass that wires them (per-group learning-rate multipliers, penalties, the
per-update loss record FSF's phase detector reads). No xlgap CLI, config or runner.

    python examples/trainer_fsf_l2.py --model xlm-roberta-base --train train-en.tsv --output out/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    TrainingArguments,
)

from xlgap.methods import L2, Compose, FineTuningSlowFast, Freeze
from xlgap.train.trainer import XlgapTrainer


def read_tagged(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a `token<TAB>tag` file (blank lines between sentences)."""
    sentences, words, tags = [], [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.strip():
            word, tag = line.split("\t")[:2]
            words.append(word)
            tags.append(tag)
        elif words:
            sentences.append((words, tags))
            words, tags = [], []
    return sentences


def encode_tagged(tokenizer, sentences: list[tuple[list[str], list[str]]], labels: list[str]) -> list[dict]:
    """Tokenised sentences with their tag ids on the first sub-word of each word (-100 elsewhere)."""
    rows = []
    for words, tags in sentences:
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=128)
        previous, aligned = None, []
        for word in encoded.word_ids():
            aligned.append(-100 if word is None or word == previous else labels.index(tags[word]))
            previous = word
        rows.append({**encoded, "labels": aligned})
    return rows


def example_arguments(description: str) -> argparse.ArgumentParser:
    """The command-line options both examples take."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="a Hugging Face model id or folder")
    parser.add_argument("--train", type=Path, required=True, help="a token<TAB>tag file")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=10, help="FSF's loss window (the paper: 100 updates)")
    return parser


def main() -> None:
    args = example_arguments(__doc__.splitlines()[0]).parse_args()

    sentences = read_tagged(args.train)
    labels = sorted({t for _, tags in sentences for t in tags})
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    train = Dataset.from_list(encode_tagged(tokenizer, sentences, labels))
    model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(labels))
    depth = model.config.num_hidden_layers
    method = Compose(
        Freeze("word_embeddings"),
        # the paper's sets are for 12 layers; FineTuningSlowFast scales them to other depths itself
        FineTuningSlowFast(window=args.window, threshold="auto"),
        L2(strength=0.01, select="all - head - word_embeddings"),
    )
    trainer = XlgapTrainer(
        model,
        TrainingArguments(str(args.output), max_steps=args.steps, learning_rate=5e-4 if depth < 6 else 2e-5,
                          per_device_train_batch_size=8, report_to=[], save_strategy="no", use_cpu=True, seed=1),
        method=method,
        train_dataset=train,
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    trainer.train()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "training.json").write_text(json.dumps({
        "losses": trainer.stats.losses,
        "penalties": trainer.stats.penalties,
        "multipliers": [method.lr_multipliers(t, trainer.stats) for t in range(len(trainer.stats.losses))],
        "report": method.report(trainer.stats),
    }, indent=1))
    print(f"trained {len(trainer.stats.losses)} updates; FSF phase P1 covered {method.report(trainer.stats)['fsf.p1_share']:.0%}")


if __name__ == "__main__":
    main()
