"""Layer surgery and NoisyTune: what each changes, to what, with which seed, and what it leaves alone."""

from __future__ import annotations

import pytest
import torch

from tiny import tiny_bert, tiny_trainer
from xlgap.methods import Compose, Freeze, LrScale, NoisyTune, PrepareContext, Reinit, build_method


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_reinit_uses_the_models_initialiser_on_the_selected_weights_only():
    model = tiny_bert(seed=0)
    with torch.no_grad():  # make the "pretrained" weights distinguishable from a fresh initialisation
        for p in model.parameters():
            p.add_(1.0)
    before = params(model)
    Reinit("layers[1].ffn").prepare(model, PrepareContext(seed=3))
    after = params(model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".layer.1." in n and ("intermediate" in n or ".output." in n) for n in changed)
    assert not any("attention" in n for n in changed)
    dense = after["bert.encoder.layer.1.intermediate.dense.weight"]
    assert abs(dense.std().item() - model.config.initializer_range) < 0.01 and abs(dense.mean().item()) < 0.01
    assert torch.equal(after["bert.encoder.layer.1.intermediate.dense.bias"], torch.zeros(32))
    assert torch.equal(after["bert.encoder.layer.1.output.LayerNorm.weight"], torch.ones(16))
    again = tiny_bert(seed=0)
    with torch.no_grad():
        for p in again.parameters():
            p.add_(1.0)
    Reinit("layers[1].ffn").prepare(again, PrepareContext(seed=3))
    assert torch.equal(params(again)["bert.encoder.layer.1.intermediate.dense.weight"], dense)  # seeded


def test_noisytune_adds_uniform_noise_scaled_by_each_matrix_std():
    model = tiny_bert(seed=1)
    before = params(model)
    NoisyTune(noise=0.15).prepare(model, PrepareContext(seed=5))
    after = params(model)
    for name, old in before.items():
        delta = after[name] - old
        if old.dim() < 2 or name.startswith("classifier"):
            assert torch.equal(delta, torch.zeros_like(delta)), name  # vectors and the new head untouched
            continue
        bound = 0.15 / 2 * old.std()
        assert delta.abs().max() <= bound + 1e-7, name
        if old.numel() >= 500:  # U(-b, b) has std b / sqrt(3)
            assert delta.std().item() == pytest.approx(bound.item() / 3**0.5, rel=0.15), name
    twin = tiny_bert(seed=1)
    NoisyTune(noise=0.15).prepare(twin, PrepareContext(seed=5))
    assert all(torch.equal(after[n], p) for n, p in params(twin).items())
    other = tiny_bert(seed=1)
    NoisyTune(noise=0.15).prepare(other, PrepareContext(seed=6))
    assert not torch.equal(params(other)["bert.encoder.layer.0.attention.self.query.weight"], after["bert.encoder.layer.0.attention.self.query.weight"])


def test_lr_scale_multiplies_the_group_lr(tmp_path):
    trainer = tiny_trainer(
        tmp_path, LrScale("layers[-1:].attention", 10), examples=8, per_device_train_batch_size=8, max_steps=1,
        learning_rate=1e-3, warmup_steps=0, lr_scheduler_type="constant",
    )
    trainer.train()
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    scaled = [lr for name, lr in lrs.items() if name.startswith("lr_scale[")]
    assert scaled and all(lr == pytest.approx(1e-2) for lr in scaled)
    assert lrs["rest/decay"] == pytest.approx(1e-3)


def test_frozen_weights_stay_bit_identical_through_training(tmp_path):
    model = tiny_bert(seed=2)
    before = params(model)
    method = Compose(Freeze("layers[0:2] + embeddings"), LrScale("layers[-1:]", 5))
    trainer = tiny_trainer(tmp_path, method, examples=32, model=model, per_device_train_batch_size=8, num_train_epochs=2, learning_rate=1e-2)
    trainer.train()
    for name, p in trainer.model.named_parameters():
        frozen = "embeddings" in name or ".layer.0." in name or ".layer.1." in name
        assert torch.equal(p.detach(), before[name]) == frozen, name


def test_last_k_layers_and_surgery_options_build_from_configs():
    method = build_method({"name": "freeze", "select": "all - layers[-2:] - head"})
    model = tiny_bert()
    method.prepare(model, PrepareContext())
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".layer.2." in n or ".layer.3." in n or n.startswith("classifier") for n in trained)
    with pytest.raises(ValueError, match="lr_scale scale: expected a positive factor"):
        build_method({"name": "lr_scale", "select": "head", "scale": 0})
    with pytest.raises(ValueError, match="noisytune noise"):
        build_method({"name": "noisytune", "noise": -1})
