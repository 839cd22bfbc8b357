"""Multi-source training: the per-language batches, the gradient buffer, the combined update, composition
with FSF and L2, and exact resume of an LF-MLF run (its accumulated direction restored)."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import concatenate_datasets
from transformers import DataCollatorForTokenClassification, TrainingArguments

from tiny import (
    assert_same_outcome,
    run_interrupted_then_resumed,
    run_process,
    tiny_bert,
    tiny_tokenizer,
    token_dataset,
    write_tiny_model,
    write_tiny_udpos,
)
from xlgap.combiners import LFMLF, Uniform, build_combiner
from xlgap.config import ConfigError, config_from_dict
from xlgap.methods import Compose
from xlgap.train.multi_source import GradientBuffer, LanguageBatchSampler, MultiSource
from xlgap.train.run import run_experiment
from xlgap.train.trainer import XlgapTrainer


def test_batches_hold_every_language_in_order_and_cycle_the_smaller_one():
    sampler = LanguageBatchSampler([[5] * 10, [5] * 3], batch_per_language=4, seed=1, group_by_length=False)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 3  # ceil(10 / 4): the largest language is seen once
    for batch in batches:
        assert all(i < 10 for i in batch[:4]) and all(10 <= i < 13 for i in batch[4:])
    first = [i for b in batches for i in b[:4]]
    assert sorted(first[:10]) == list(range(10))  # every example of the largest language in the epoch
    second = [i - 10 for b in batches for i in b[4:]]
    assert sorted(second[:3]) == [0, 1, 2] and sorted(second[3:6]) == [0, 1, 2]  # the small one restarts
    again = LanguageBatchSampler([[5] * 10, [5] * 3], batch_per_language=4, seed=1, group_by_length=False)
    assert list(again) == batches  # a function of (seed, epoch)
    again.set_epoch(1)
    assert list(again) != batches


def test_buffer_grams_and_combination_match_the_gradients():
    model = tiny_bert(dropout=0.0)
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    buffer = GradientBuffer(model, 2)
    frozen = model.bert.embeddings.word_embeddings.weight.numel()
    assert buffer.size == sum(p.numel() for p in model.parameters()) - frozen  # frozen weights take no room
    assert buffer.layers[0] == "embeddings" and buffer.layers[1:5] == ("0", "1", "2", "3")
    g = torch.randn(2, buffer.size, generator=torch.Generator().manual_seed(0))
    buffer.matrix.copy_(g)
    grams = buffer.layer_grams()
    assert grams.sum(0) == pytest.approx((g.double() @ g.double().T), rel=1e-10)
    d = buffer.combine(torch.tensor([0.25, 0.75], dtype=torch.float64))
    torch.testing.assert_close(d, 0.25 * g[0] + 0.75 * g[1])  # float32 rounding: the BLAS kernel sums in its own order
    per_layer = torch.tensor([[1.0, 0.0]] * len(buffer.layers), dtype=torch.float64)
    assert torch.equal(buffer.combine(per_layer), g[0])
    buffer.write_grad(d)
    start, end = buffer.spans[0]
    assert torch.equal(buffer.params[0].grad.reshape(-1), d[start:end])


def _two_language_trainer(tmp_path, combiner, steps=1, method=None, accumulation=1, batch=4, sampling="group_by_length", sparse=True):
    data = concatenate_datasets([token_dataset(12, seed=1), token_dataset(8, seed=2)])
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, max_steps=steps,
        learning_rate=1e-2, warmup_steps=0, gradient_accumulation_steps=accumulation, seed=5,
        per_device_train_batch_size=batch, max_grad_norm=0.0, lr_scheduler_type="constant",
        train_sampling_strategy=sampling,
    )
    ms = MultiSource(["en", "de"], [12, 8], batch, combiner, sparse_embeddings=sparse)
    trainer = XlgapTrainer(
        tiny_bert(dropout=0.0), args, train_dataset=data, data_collator=DataCollatorForTokenClassification(tiny_tokenizer()),
        method=method or Compose(), multi_source=ms,
    )
    return trainer, data


def _language_gradient(model, batch):
    """The gradient of the mean token loss of one batch (plain PyTorch)."""
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, float(loss.detach())


def test_a_uniform_update_applies_the_mean_of_the_language_gradients(tmp_path):
    trainer, data = _two_language_trainer(tmp_path, Uniform())
    loader = trainer.get_train_dataloader()
    batch = next(iter(loader))
    collate = trainer.data_collator
    rows = [data[i] for i in next(iter(loader.batch_sampler))]
    en, de = collate(rows[:4]), collate(rows[4:])
    reference = tiny_bert(dropout=0.0)
    g_en, loss_en = _language_gradient(reference, en)
    g_de, loss_de = _language_gradient(reference, de)
    captured = {}
    trainer.create_optimizer()
    trainer.optimizer.register_step_pre_hook(
        lambda opt, *_: captured.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
    )
    trainer.train()
    assert batch["input_ids"].shape[0] == 8
    for name, grad in captured.items():
        assert torch.allclose(grad, (g_en[name] + g_de[name]) / 2, atol=1e-6), name
    assert trainer.stats.language_losses[0] == pytest.approx([loss_en, loss_de], rel=1e-5)
    assert trainer.stats.losses[0] == pytest.approx((loss_en + loss_de) / 2, rel=1e-5)
    assert trainer.stats.combiner_weights[0] == [0.5, 0.5]


def test_gradient_accumulation_per_language_equals_the_large_batch(tmp_path):
    # Random (not length-grouped) orders do not depend on the batch size, so 2 micro-batches of 2 per
    # language hold the examples of one batch of 4: losses, weights and the trained model must agree.
    big, _ = _two_language_trainer(tmp_path / "a", build_combiner("lf-mlf"), steps=3, batch=4, sampling="random")
    big.train()
    small, _ = _two_language_trainer(tmp_path / "b", build_combiner("lf-mlf"), steps=3, batch=2, accumulation=2, sampling="random")
    small.train()
    for a, b in zip(big.stats.language_losses, small.stats.language_losses, strict=True):
        assert a == pytest.approx(b, rel=1e-5)
    for a, b in zip(big.stats.combiner_weights, small.stats.combiner_weights, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    for (name, pa), pb in zip(big.model.named_parameters(), small.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-5), name


def test_lf_mlf_keeps_its_direction_and_reports(tmp_path):
    trainer, _ = _two_language_trainer(tmp_path, build_combiner("lf-mlf"), steps=3)
    trainer.train()
    combiner = trainer.multi_source.combiner
    assert isinstance(combiner, LFMLF) and combiner.direction is not None
    assert combiner.direction.shape == (trainer.multi_source.buffer.size,)
    report = trainer.method_report()["multi_source"]
    assert report["combiner"] == "lf-mlf" and report["solved_updates"] == 3 and report["failed_solves"] == 0
    assert sum(report["mean_weight"].values()) == pytest.approx(1.0)
    buffer = trainer.multi_source.buffer
    rows = sum(len(r.rows) for r in buffer.rows) * buffer.sparse.shape[1]
    assert 0 < rows < 2 * buffer.sparse.numel()  # the word embeddings are held as the rows the batches touched
    assert report["gradient_floats"] == 2 * buffer.dense_size + rows + buffer.size


def test_sparse_embedding_rows_give_the_dense_update(tmp_path):
    for combiner in ("lf-mlf", "gradvac"):
        sparse, _ = _two_language_trainer(tmp_path / f"s-{combiner}", build_combiner(combiner), steps=3)
        sparse.train()
        dense, _ = _two_language_trainer(tmp_path / f"d-{combiner}", build_combiner(combiner), steps=3, sparse=False)
        dense.train()
        assert sparse.multi_source.buffer.sparse is not None and dense.multi_source.buffer.sparse is None
        for a, b in zip(sparse.stats.combiner_weights, dense.stats.combiner_weights, strict=True):
            assert a == pytest.approx(b, abs=1e-5)
        for (name, pa), pb in zip(sparse.model.named_parameters(), dense.model.parameters(), strict=True):
            assert torch.allclose(pa, pb, atol=1e-6), name


@pytest.fixture(scope="module")
def tiny_multi(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-multi")
    return write_tiny_model(root / "model"), write_tiny_udpos(root / "data", languages=("en", "de", "fr", "es"), train=("en", "de"))


def multi_config(tiny_multi, out, combiner="lf-mlf", name="multi", methods=None, **train):
    model, data = tiny_multi
    raw = {
        "name": name,
        "output_dir": str(out),
        "seeds": [3],
        "model": {"name": model},
        "data": {"task": "udpos", "dir": data, "source_languages": ["en", "de"], "target_languages": ["fr", "es"], "max_length": 16},
        "methods": methods if methods is not None else [
            {"name": "fsf", "window": 2, "threshold": 0.05, "policies": {"I": "layers[0:3]", "II": "layers[0:1].ffn", "III": "layers[-1:]", "IV": "layers[-1:].attention"}},
            {"name": "l2", "strength": 0.01},
        ],
        "train": {"learning_rate": 3e-3, "epochs": 2, "batch_size": 4, "warmup_ratio": 0.1, "checkpoint_every": 3,
                  "multi_source": {"combiner": combiner}, **train},
        "eval": {"every": 3, "probe_examples": 10},
        "save_model": True,
    }
    return config_from_dict(raw)


def test_lf_mlf_with_fsf_and_l2_runs_end_to_end(tiny_multi, tmp_path):
    cfg = multi_config(tiny_multi, tmp_path)
    run_experiment(cfg)
    seed_dir = tmp_path / "multi" / "seed-3"
    results = json.loads((seed_dir / "results.json").read_text())
    report = results["methods_report"]
    assert report["multi_source"]["combiner"] == "lf-mlf" and report["multi_source"]["languages"] == ["en", "de"]
    assert "fsf.p1_updates" in report  # FSF acted on the combined gradient's lr groups
    sources = json.loads((seed_dir / "sources.json").read_text())
    steps = results["steps"]
    assert steps == 12  # 24 sentences per language / 4 per batch x 2 epochs
    assert len(sources["losses"]) == len(sources["weights"]) == steps and all(len(x) == 2 for x in sources["losses"])
    losses = json.loads((seed_dir / "losses.json").read_text())
    assert losses == pytest.approx([sum(x) / 2 for x in sources["losses"]])
    records = [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("penalties" in r and r["penalties"] for r in records)  # the L2 penalty was applied and logged
    summary = (tmp_path / "multi" / "summary.md").read_text()
    assert "- multi-source: lf-mlf, one gradient per source; mean weight en " in summary and "failed QP solves over all seeds: 0" in summary
    from xlgap.report.plots import moving_average, write_figures
    from xlgap.results import load_run

    written = write_figures([load_run(tmp_path / "multi")], tmp_path / "figures")
    assert tmp_path / "figures" / "sources.png" in written
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]


def test_an_interrupted_lf_mlf_run_resumes_to_the_same_result(tiny_multi, tmp_path, monkeypatch):
    whole = multi_config(tiny_multi, tmp_path / "a")
    run_experiment(whole)
    cut = multi_config(tiny_multi, tmp_path / "b")
    run_interrupted_then_resumed(cut, 7, monkeypatch)  # after the checkpoint of update 6
    a, b = tmp_path / "a" / "multi" / "seed-3", tmp_path / "b" / "multi" / "seed-3"
    assert_same_outcome(a, b)
    assert json.loads((a / "sources.json").read_text()) == json.loads((b / "sources.json").read_text())


@pytest.mark.parametrize("combiner", ["uniform", "pcgrad", "gradvac", "mgda"])
def test_every_combiner_trains(tiny_multi, tmp_path, combiner):
    cfg = multi_config(tiny_multi, tmp_path, combiner=combiner, methods=[], epochs=1)
    run_experiment(cfg)
    results = json.loads((tmp_path / "multi" / "seed-3" / "results.json").read_text())
    assert results["methods_report"]["multi_source"]["combiner"] == combiner
    assert set(results["test"]["scores"]) == {"en", "de", "fr", "es"}


def test_multi_source_config_errors(tiny_multi, tmp_path):
    with pytest.raises(ConfigError, match="data.source_languages has \\['en'\\]"):
        config_from_dict({"data": {"source_languages": ["en"]}, "train": {"multi_source": {"combiner": "uniform"}}})
    with pytest.raises(ConfigError, match="fp16 needs loss scaling"):
        config_from_dict({"data": {"source_languages": ["en", "de"]}, "train": {"precision": "fp16", "multi_source": {"combiner": "uniform"}}})
    with pytest.raises(ConfigError, match="need a combiner"):
        config_from_dict({"train": {"multi_source": {"batch_size": 4}}})
    with pytest.raises(ConfigError, match="train.multi_source.batch_size"):
        config_from_dict({"data": {"source_languages": ["en", "de"]}, "train": {"multi_source": {"combiner": "uniform", "batch_size": 0}}})
    cfg = multi_config(tiny_multi, tmp_path, combiner="lfmlf")
    from xlgap.combiners import CombinerError

    with pytest.raises(CombinerError, match="did you mean 'lf-mlf'"):
        run_experiment(cfg)
    assert not (tmp_path / "multi").exists()  # nothing written before the error


def test_two_processes_take_the_same_steps_as_one(tmp_path):
    """2 gloo processes with 2 examples per language each = 1 process with 4: the per-language gradients
    are summed over processes before the combiner, so both solve the same LF-MLF problems."""
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "multi_source_worker.py"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    run_process([sys.executable, str(worker), str(one), "lf-mlf", "4"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    run_process([*torchrun, str(worker), str(two), "lf-mlf", "2"])
    a, b = torch.load(one / "final.pt"), torch.load(two / "final.pt")
    for x, y in zip(a["losses"], b["losses"], strict=True):
        assert x == pytest.approx(y, rel=1e-5)
    for x, y in zip(a["combiner_weights"], b["combiner_weights"], strict=True):
        assert x == pytest.approx(y, abs=1e-5)
    assert a["combiner_weights"][1] != pytest.approx([0.5, 0.5], abs=1e-2)  # LF-MLF did not just average
    for name, value in a["weights"].items():
        assert torch.allclose(value, b["weights"][name], atol=1e-5), name
