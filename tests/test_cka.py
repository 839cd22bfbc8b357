"""Linear CKA, FSF's CKA gate on policy IV, and the trainer's CKA measurements."""

from __future__ import annotations

import pytest
import torch

from tiny import SETS_4_LAYERS, tiny_bert, tiny_trainer
from xlgap.analysis.cka import layer_cka, linear_cka
from xlgap.methods import FineTuningSlowFast, TrainingStats
from xlgap.methods.fsf import cka_still_falling, selector_layers, top_cka


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


def test_the_gate_reads_a_trend_with_a_tolerance_not_two_noisy_points():
    def measurements(tops):
        return [{"step": 2 * i, "layers": [1.0, 1.0, t, t]} for i, t in enumerate(tops)]

    assert cka_still_falling(measurements([])) and cka_still_falling(measurements([1.0, 0.9]))  # too few: falling
    assert cka_still_falling(measurements([0.95, 0.90, 0.91, 0.85]))  # a noisy fall: slope -0.03 per measurement
    # flat with noise: the last pair rises and falls, the slope of the last three stays within the tolerance
    assert not cka_still_falling(measurements([0.80, 0.8005, 0.7998, 0.8003]))
    assert not cka_still_falling(measurements([0.80, 0.78, 0.79, 0.80]))  # it rose again
    assert cka_still_falling(measurements([0.80, 0.8005, 0.7998, 0.8003]), tolerance=0.0)  # slope -0.0001: without a tolerance, noise reads as a fall
    assert cka_still_falling(measurements([0.9, 0.8, 0.7]), trend=3, tolerance=0.2) is False  # slope -0.1 > -0.2


def test_the_gate_watches_the_layers_of_policy_fours_set():
    assert selector_layers("layers[-2:].attention", 12) == [10, 11]
    assert selector_layers("layers[-4:].attention", 24) == [20, 21, 22, 23]
    assert selector_layers("layers[3] + layers[0:2].ffn", 12) == [0, 1, 3]
    assert selector_layers("attention", 12) == [10, 11]
    fsf = FineTuningSlowFast(iv_gate="cka")
    deep = {"step": 0, "layers": [1.0] * 24}
    assert fsf.gate_layers(deep) == [20, 21, 22, 23]  # depth-scaled V2 of a 24-layer model
    assert top_cka({"step": 0, "layers": list(range(24))}, fsf.gate_layers(deep)) == 21.5


def test_gated_policy_four_follows_the_measurements_taken_before_the_step():
    fsf = FineTuningSlowFast(window=2, threshold=0.1, policies=SETS_4_LAYERS, iv_gate="cka", cka_every=2, cka_trend=2)
    ungated = FineTuningSlowFast(window=2, threshold=0.1, policies=SETS_4_LAYERS)
    # a flat loss: outside P1 from update 5 on (two windows of 2 exist after 4 updates); V2 = layer 3
    stats = TrainingStats([1.0] * 8, [
        {"step": 0, "layers": [1.0, 1.0, 1.0, 1.0]},
        {"step": 2, "layers": [0.9, 0.9, 0.8, 0.7]},
        {"step": 4, "layers": [0.9, 0.9, 0.7, 0.9]},
    ])
    assert fsf.lr_multipliers(4, stats)["fsf.policy_IV"] == 10.0  # the step-4 measurement is not yet in
    assert fsf.lr_multipliers(5, stats)["fsf.policy_IV"] == 1.0  # layer 3's CKA rose: no more speed-up
    assert ungated.lr_multipliers(5, stats)["fsf.policy_IV"] == 10.0
    assert fsf.probe_values(5, stats)["cka_falling"] is False
    assert fsf.cka_interval() == 2 and ungated.cka_interval() is None
    with pytest.raises(ValueError, match="iv_gate"):
        FineTuningSlowFast(iv_gate="always")


def test_layer_cka_counts_real_tokens_only():
    torch.manual_seed(0)
    reference, model = tiny_bert(seed=1).eval(), tiny_bert(seed=2).eval()
    a, b = [0, 5, 6, 7, 8, 2], [0, 9, 10, 2]
    padded = {
        "input_ids": torch.tensor([a, b + [1, 1]]),
        "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0, 0]]),
    }
    ours = layer_cka(reference, model, padded)
    # the same tokens without any padding, one sequence at a time
    def hidden(m, ids):
        return m(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1:]

    with torch.no_grad():
        expected = []
        for layer in range(4):
            x = torch.cat([hidden(reference, s)[layer][0] for s in (a, b)])
            y = torch.cat([hidden(model, s)[layer][0] for s in (a, b)])
            expected.append(linear_cka(x, y))
    assert ours == pytest.approx(expected, abs=1e-5)
    with torch.no_grad():  # counting the padded positions too gives other numbers
        unmasked = [
            linear_cka(r.reshape(-1, 16), m.reshape(-1, 16))
            for r, m in zip(reference(**padded, output_hidden_states=True).hidden_states[1:], model(**padded, output_hidden_states=True).hidden_states[1:], strict=True)
        ]
    assert max(abs(u - e) for u, e in zip(unmasked, expected, strict=True)) > 1e-3


def test_the_trainer_measures_on_the_fixed_probe_batch(tmp_path, monkeypatch):
    from xlgap.train import trainer as trainer_module

    seen = []
    real = trainer_module.layer_cka

    def spy(reference, model, inputs):
        seen.append(inputs["input_ids"].clone())
        return real(reference, model, inputs)

    monkeypatch.setattr(trainer_module, "layer_cka", spy)
    fixed = {"input_ids": torch.tensor([[0, 5, 6, 2]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    fsf = FineTuningSlowFast(window=1, policies=SETS_4_LAYERS, iv_gate="cka", cka_every=2)
    trainer = tiny_trainer(tmp_path, fsf, examples=40, per_device_train_batch_size=8, max_steps=5, learning_rate=1e-2)
    trainer.cka_inputs = fixed
    trainer.train()
    assert len(seen) == 3 and all(torch.equal(ids, fixed["input_ids"]) for ids in seen)


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
    assert trainer.context.references.tensors == {} and trainer.cka_every is None
    gated = tiny_trainer(tmp_path, FineTuningSlowFast(window=1, policies=SETS_4_LAYERS, iv_gate="cka"), examples=8)
    assert set(gated.context.references.tensors) == {n for n, _ in gated.model.named_parameters()}


def test_cka_through_the_reference_values_equals_cka_against_a_model_copy():
    import copy

    model = tiny_bert(seed=3).eval()
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inputs = {"input_ids": torch.tensor([[0, 5, 6, 7, 2], [0, 9, 2, 1, 1]]), "attention_mask": torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])}
    state = {n: p.detach().clone() for n, p in reference.named_parameters()}
    assert layer_cka(state, model, inputs) == pytest.approx(layer_cka(reference, model, inputs), abs=1e-6)
