"""Linear CKA, FSF's CKA gate on policy IV, and the trainer's CKA measurements."""

from __future__ import annotations

import pytest
import torch

from tiny import SETS_4_LAYERS, tiny_bert, tiny_trainer
from xlgap.analysis.cka import layer_cka, linear_cka
from xlgap.methods import FineTuningSlowFast, TrainingStats
from xlgap.methods.fsf import cka_still_falling


def test_linear_cka_of_one_feature_is_the_squared_correlation():
    x = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    y = torch.tensor([[1.0], [3.0], [2.0], [4.0]])
    # centred: x = (-1.5, -0.5, 0.5, 1.5), y = (-1.5, 0.5, -0.5, 1.5); corr = 4 / 5
    assert linear_cka(x, y) == pytest.approx(0.64)


def test_linear_cka_ignores_rotation_and_scale_but_not_other_maps():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)))
    assert linear_cka(x, 3.0 * x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, x[:, :2]) < 0.9
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:10])


def test_layer_cka_is_one_against_itself_and_leaves_the_training_mode():
    model = tiny_bert().train()
    inputs = {"input_ids": torch.tensor([[0, 5, 6, 7, 2, 1]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]])}
    values = layer_cka(tiny_bert(), model, inputs)
    assert values == pytest.approx([1.0] * 4)
    assert model.training


def test_the_top_layers_stop_falling_when_their_mean_cka_does_not_drop():
    first = {"step": 0, "layers": [1.0, 1.0, 1.0, 1.0]}
    second = {"step": 2, "layers": [0.9, 0.9, 0.8, 0.7]}  # top two: 0.75
    third = {"step": 4, "layers": [0.9, 0.9, 0.7, 0.9]}  # top two: 0.80
    assert cka_still_falling([]) and cka_still_falling([first])
    assert cka_still_falling([first, second])
    assert not cka_still_falling([first, second, third])


def test_gated_policy_four_follows_the_measurements_taken_before_the_step():
    fsf = FineTuningSlowFast(window=2, threshold=0.1, policies=SETS_4_LAYERS, iv_gate="cka", cka_every=2)
    ungated = FineTuningSlowFast(window=2, threshold=0.1, policies=SETS_4_LAYERS)
    # a flat loss: outside P1 from update 5 on (two windows of 2 exist after 4 updates)
    stats = TrainingStats([1.0] * 8, [
        {"step": 0, "layers": [1.0, 1.0, 1.0, 1.0]},
        {"step": 2, "layers": [0.9, 0.9, 0.8, 0.7]},
        {"step": 4, "layers": [0.9, 0.9, 0.7, 0.9]},
    ])
    assert fsf.lr_multipliers(4, stats)["fsf.policy_IV"] == 10.0  # the step-4 measurement is not yet in
    assert fsf.lr_multipliers(5, stats)["fsf.policy_IV"] == 1.0  # the CKA rose: no more speed-up
    assert ungated.lr_multipliers(5, stats)["fsf.policy_IV"] == 10.0
    assert fsf.probe_values(5, stats)["cka_falling"] is False
    assert fsf.cka_every() == 2 and ungated.cka_every() is None
    with pytest.raises(ValueError, match="iv_gate"):
        FineTuningSlowFast(iv_gate="always")


def test_trainer_measures_cka_every_n_updates_against_the_model_it_was_given(tmp_path):
    fsf = FineTuningSlowFast(window=1, policies=SETS_4_LAYERS, iv_gate="cka", cka_every=2)
    trainer = tiny_trainer(tmp_path, fsf, examples=40, per_device_train_batch_size=8, max_steps=5, learning_rate=1e-2)
    trainer.train()
    steps = [m["step"] for m in trainer.stats.cka]
    assert steps == [0, 2, 4]
    assert trainer.stats.cka[0]["layers"] == pytest.approx([1.0] * 4)  # before any update: the same model
    assert all(v < 0.9999 for v in trainer.stats.cka[-1]["layers"])
    restored = TrainingStats()
    restored.load_state_dict(trainer.stats.state_dict())
    assert restored.cka == trainer.stats.cka


def test_no_reference_copy_without_the_gate(tmp_path):
    trainer = tiny_trainer(tmp_path, FineTuningSlowFast(window=1, policies=SETS_4_LAYERS), examples=8)
    assert trainer.cka_reference is None and trainer.cka_every is None
