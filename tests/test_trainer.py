"""XlgapTrainer details: gradient accumulation, mixed precision, and the update-loss statistics."""

from __future__ import annotations

import pytest
import torch

from tiny import tiny_bert, tiny_trainer
from xlgap.methods import FineTuningSlowFast


def train(tmp_path, batch_size, grad_accum, **extra):
    method = FineTuningSlowFast(window=2, threshold=0.05, policies={"I": "layers[0:3]", "IV": "layers[-1:].attention"})
    trainer = tiny_trainer(
        tmp_path,
        method,
        examples=48,
        model=tiny_bert(dropout=0.0),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=5e-3,
        num_train_epochs=2,
        warmup_steps=0.1,
        train_sampling_strategy="group_by_length",
        seed=7,
        **extra,
    )
    trainer.train()
    return trainer


def test_gradient_accumulation_gives_the_same_updates_and_losses(tmp_path):
    whole = train(tmp_path / "a", batch_size=8, grad_accum=1)
    split = train(tmp_path / "b", batch_size=4, grad_accum=2)
    assert whole.state.global_step == split.state.global_step == 12
    # the loss of an update is the token-weighted mean over its micro-batches: the same numbers
    assert split.stats.losses == pytest.approx(whole.stats.losses, rel=1e-5)
    for (name, a), b in zip(whole.model.named_parameters(), split.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_bf16_autocast_trains_with_finite_losses(tmp_path):
    trainer = train(tmp_path, batch_size=8, grad_accum=1, bf16=True)
    assert len(trainer.stats.losses) == 12
    assert all(torch.isfinite(torch.tensor(trainer.stats.losses)))
    assert trainer.stats.losses[-1] < trainer.stats.losses[0]
