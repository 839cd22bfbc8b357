"""Tiny random models, tokenizers and datasets for fast logic tests (no downloads)."""

from __future__ import annotations

import subprocess

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast


def run_process(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a command to the end and return it (text output); if it fails, the assertion shows the end of
    its stdout and stderr (where a launched worker's traceback is), which `check=True` would hide."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}"
    return done


SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
WORDS = [f"w{i}" for i in range(40)]


# FSF's sets for the 4-layer tiny BERT (the paper's are for 12 layers).
SETS_4_LAYERS = {
    "I": "layers[0:3]",
    "II": "layers[0:1].ffn",
    "III": "layers[-1:]",
    "IV": "layers[-1:].attention",
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over w0..w39 with XLM-R style specials (<s>=0, <pad>=1, </s>=2, <unk>=3)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_bert(num_labels: int = 3, layers: int = 4, seed: int = 0, dropout: float = 0.1) -> BertForTokenClassification:
    """A 4-layer, 16-wide random BERT token classifier over the tiny vocabulary."""
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=1,
        num_labels=num_labels,
    )
    return BertForTokenClassification(config)


def token_dataset(n: int = 64, seed: int = 0, num_labels: int = 3) -> Dataset:
    """Learnable token classification data: the label of word wi is i mod num_labels."""
    generator = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": [], "length": []}
    for _ in range(n):
        length = int(torch.randint(3, 12, (1,), generator=generator))
        words = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        ids = [0] + [len(SPECIALS) + w for w in words] + [2]
        rows["input_ids"].append(ids)
        rows["attention_mask"].append([1] * len(ids))
        rows["labels"].append([-100] + [w % num_labels for w in words] + [-100])
        rows["length"].append(len(ids))
    return Dataset.from_dict(rows)


def tiny_trainer(output_dir, method, examples: int, model=None, **training_args):
    """An XlgapTrainer on `examples` sentences of `token_dataset` with a tiny BERT, on CPU, without
    checkpoints, logs or progress bars; `training_args` go to TrainingArguments."""
    from transformers import DataCollatorForTokenClassification, TrainingArguments

    from xlgap.train.trainer import XlgapTrainer

    args = TrainingArguments(
        output_dir=str(output_dir), report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, **training_args
    )
    return XlgapTrainer(
        model if model is not None else tiny_bert(),
        args,
        train_dataset=token_dataset(examples),
        data_collator=DataCollatorForTokenClassification(tiny_tokenizer()),
        method=method,
    )


def write_tiny_model(folder, dropout: float = 0.1) -> str:
    """Save a tiny random BERT encoder and its tokenizer as a model folder; returns its path."""
    from transformers import BertModel

    model = BertModel(tiny_bert(dropout=dropout).config)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def write_tiny_udpos(root, languages=("en", "de", "fr"), sentences=24, seed=0, train=("en",)) -> str:
    """A folder in the XTREME layout with udpos train files of `train` and dev/test files of `languages`.

    Word wi is tagged with the (i mod 5)-th UPOS tag, in every language, so transfer is learnable.
    """
    from pathlib import Path

    from xlgap.data.tasks import UPOS_TAGS

    generator = torch.Generator().manual_seed(seed)
    folder = Path(root) / "udpos"
    folder.mkdir(parents=True, exist_ok=True)
    files = [("train", lang) for lang in train] + [(split, lang) for lang in languages for split in ("dev", "test")]
    for split, lang in files:
        blocks = []
        for _ in range(sentences):
            length = int(torch.randint(2, 9, (1,), generator=generator))
            words = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
            blocks.append("".join(f"w{w}\t{UPOS_TAGS[w % 5]}\n" for w in words))
        (folder / f"{split}-{lang}.tsv").write_text("\n".join(blocks), encoding="utf-8")
    return str(root)


def interrupt_at(monkeypatch, step, error=KeyboardInterrupt):
    """Make XlgapTrainer raise `error` when it is about to train update `step` + 1."""
    from xlgap.train.trainer import XlgapTrainer

    original = XlgapTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step:
            raise error()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(XlgapTrainer, "training_step", training_step)


def run_interrupted_then_resumed(cfg, step, monkeypatch):
    """Run `cfg` until it is interrupted before update `step` + 1, then resume it to the end."""
    import pytest

    from xlgap.train.run import run_experiment

    interrupt_at(monkeypatch, step)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg)
    monkeypatch.undo()
    run_experiment(cfg, resume=True)


def assert_same_outcome(seed_dir_a, seed_dir_b, keys=("dev", "test", "best_step", "steps", "train_loss")):
    """The two seed folders hold the same results and bit-identical final models."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    a, b = (json.loads((Path(d) / "results.json").read_text()) for d in (seed_dir_a, seed_dir_b))
    for key in keys:
        assert a[key] == b[key], key
    wa, wb = (load_file(Path(d) / "model" / "model.safetensors") for d in (seed_dir_a, seed_dir_b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    return a
