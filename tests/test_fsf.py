"""Fine-tuning Slow and Fast: phase detector, R(phi), per-policy multipliers, and the lrs the optimizer uses."""

from __future__ import annotations

import math

import pytest
from transformers import TrainerCallback

from tiny import SETS_4_LAYERS, tiny_bert, tiny_trainer
from xlgap.methods import FineTuningFast, FineTuningSlow, FineTuningSlowFast, TrainingStats, build_method
from xlgap.methods.fsf import (
    adaptive_multiplier,
    calibrate_threshold,
    depth_scaled_sets,
    in_phase_one,
    loss_ratio,
)


def test_phase_one_before_two_windows_and_while_loss_falls_fast():
    assert in_phase_one([3.0, 2.0, 1.0], window=2, threshold=0.1)  # 3 < 2 windows
    # windows [2.0, 1.8, 1.6] and [1.0, 0.9, 0.8]: means 1.8 and 0.9, drop 0.9 > 0.1
    assert in_phase_one([2.0, 1.8, 1.6, 1.0, 0.9, 0.8], window=3, threshold=0.1)
    # means 0.5 and 0.45: drop 0.05 <= 0.1
    assert not in_phase_one([0.5, 0.5, 0.5, 0.46, 0.45, 0.44], window=3, threshold=0.1)
    # only the two most recent windows count
    assert not in_phase_one([9.0, 9.0, 0.5, 0.5, 0.5, 0.46, 0.45, 0.44], window=3, threshold=0.1)


def test_adaptive_multiplier_values():
    assert adaptive_multiplier(0.9, 3) == pytest.approx(1 - 0.729)
    assert adaptive_multiplier(0.5, 3) == pytest.approx(0.875)
    assert adaptive_multiplier(0.5, 1) == pytest.approx(0.5)
    assert adaptive_multiplier(1.2, 3) == 0.0  # a rising loss stops policy II's weights
    assert loss_ratio([0.5, 0.5, 0.5, 0.46, 0.45, 0.44], 3) == pytest.approx(0.9)


def test_multipliers_of_each_policy_in_and_out_of_phase_one():
    fsf = FineTuningSlowFast(c1=0.01, c2=10, r=3, window=3, threshold=0.1)
    falling = [2.0, 1.8, 1.6, 1.0, 0.9, 0.8]
    assert fsf.multipliers_at(falling) == {
        "fsf.policy_I": 0.01,
        "fsf.policy_II": 1.0,
        "fsf.policy_III": 1.0,
        "fsf.policy_IV": 1.0,
    }
    slow = [0.5, 0.5, 0.5, 0.46, 0.45, 0.44]
    got = fsf.multipliers_at(slow)
    assert got["fsf.policy_I"] == 1.0
    assert got["fsf.policy_II"] == pytest.approx(0.271)
    assert got["fsf.policy_III"] == 1.0
    assert got["fsf.policy_IV"] == 10.0


def test_multiplier_on_a_loss_curve_at_chosen_steps():
    """L_t = 0.3 + 2 exp(-t / 50), window 10, threshold 0.1; values worked out by hand below."""
    losses = [0.3 + 2 * math.exp(-t / 50) for t in range(1, 301)]
    fsf = FineTuningSlowFast(window=10, threshold=0.1)
    stats = TrainingStats(losses)
    # step 40: windows t=21..30 and 31..40; means 0.3 + 2 e^{-t/50} averaged
    prev = 0.3 + 2 * sum(math.exp(-t / 50) for t in range(21, 31)) / 10  # 1.640
    recent = 0.3 + 2 * sum(math.exp(-t / 50) for t in range(31, 41)) / 10  # 1.397
    assert prev - recent > 0.1
    assert fsf.lr_multipliers(40, stats)["fsf.policy_I"] == 0.01
    # step 200: drop below 0.1 -> P2; phi = recent / prev, K_II = 1 - phi^3
    prev = 0.3 + 2 * sum(math.exp(-t / 50) for t in range(181, 191)) / 10
    recent = 0.3 + 2 * sum(math.exp(-t / 50) for t in range(191, 201)) / 10
    assert prev - recent < 0.1
    got = fsf.lr_multipliers(200, stats)
    assert got["fsf.policy_I"] == 1.0
    assert got["fsf.policy_IV"] == 10.0
    assert got["fsf.policy_II"] == pytest.approx(1 - (recent / prev) ** 3)
    assert 0.0 < got["fsf.policy_II"] < 0.1  # the loss has almost stalled
    assert fsf.probe_values(200, stats)["phase"] == "P2"


def test_fs_and_ff_are_the_halves_with_their_values():
    falling, slow = [2.0, 1.8, 1.6, 1.0, 0.9, 0.8], [0.5, 0.5, 0.5, 0.46, 0.45, 0.44]
    fs, ff = FineTuningSlow(window=3, threshold=0.1, phase="per_update"), FineTuningFast(window=3, threshold=0.1, phase="per_update")
    assert fs.multipliers_at(falling) == {"fsf.policy_I": 0.01, "fsf.policy_II": 1.0}
    assert fs.multipliers_at(slow) == pytest.approx({"fsf.policy_I": 1.0, "fsf.policy_II": 0.271})
    assert ff.multipliers_at(falling) == {"fsf.policy_III": 1.0, "fsf.policy_IV": 1.0}
    assert ff.multipliers_at(slow) == {"fsf.policy_III": 1.0, "fsf.policy_IV": 10.0}
    assert FineTuningSlow(c1=0.1, window=3).multipliers_at(falling)["fsf.policy_I"] == 0.1
    assert FineTuningFast(c2=5, window=3, phase="per_update").multipliers_at(slow)["fsf.policy_IV"] == 5


def test_fs_and_ff_are_the_halves():
    assert set(FineTuningSlow(window=3).multipliers_at([1.0])) == {"fsf.policy_I", "fsf.policy_II"}
    assert set(FineTuningFast(window=3).multipliers_at([1.0])) == {"fsf.policy_III", "fsf.policy_IV"}
    no_iv = FineTuningSlowFast(policies={"IV": None})
    assert "fsf.policy_IV" not in no_iv.multipliers_at([1.0])


def test_groups_follow_the_selectors_and_policy_three_spares_its_set():
    model = tiny_bert()
    fsf = FineTuningSlowFast(
        policies={"I": "layers[0:4]", "II": SETS_4_LAYERS["II"], "III": "layers[-1:]", "IV": None}
    )
    groups = fsf.param_groups(model)
    assert set(groups) == {"fsf.policy_I", "fsf.policy_II", "fsf.policy_III"}
    slow = groups["fsf.policy_I"].params
    assert not any(".layer.3." in n for n in slow)  # layer 3 is in policy III's set
    assert any(".layer.2." in n for n in slow)
    assert all(
        ".layer.0." in n and ("intermediate" in n or "output" in n) for n in groups["fsf.policy_II"].params
    )
    assert not any("attention" in n for n in groups["fsf.policy_II"].params)


def test_default_sets_are_the_papers_at_12_layers_and_scaled_otherwise():
    assert depth_scaled_sets(12) == {
        "I": "layers[0:10]",
        "II": "layers[0:4].ffn",
        "III": "layers[-2:]",
        "IV": "layers[-2:].attention",
    }
    assert depth_scaled_sets(24) == {
        "I": "layers[0:20]",
        "II": "layers[0:8].ffn",
        "III": "layers[-4:]",
        "IV": "layers[-4:].attention",
    }


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="methods.0.c3: not an option of method 'fsf'"):
        build_method({"name": "fsf", "c3": 1}, "methods.0")
    with pytest.raises(ValueError, match="unknown policy"):
        FineTuningSlowFast(policies={"V": "head"})
    with pytest.raises(ValueError, match="unknown method 'fsff'"):
        build_method({"name": "fsff"})


class _RecordLrs(TrainerCallback):
    """Before each update: the lr of every optimizer group and the losses known at that point."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.seen = []

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        self.seen.append((state.global_step, list(self.trainer.stats.losses), lrs))


def test_optimizer_lrs_are_schedule_times_multipliers(tmp_path):
    lr, window, threshold = 1e-2, 2, 0.05
    method = FineTuningSlowFast(
        c1=0.01, c2=10, r=3, window=window, threshold=threshold, policies=SETS_4_LAYERS
    )
    trainer = tiny_trainer(
        tmp_path,
        method,
        examples=96,
        per_device_train_batch_size=8,
        learning_rate=lr,
        num_train_epochs=2,
        lr_scheduler_type="linear",
        warmup_steps=0,
    )
    recorder = _RecordLrs(trainer)
    trainer.add_callback(recorder)
    trainer.train()
    total = trainer.state.max_steps
    names = {g["name"] for g in trainer.optimizer.param_groups}
    assert "fsf.policy_I+fsf.policy_II/decay" in names  # layer-0 FFN: both policies, multipliers multiply
    assert "fsf.policy_III+fsf.policy_IV/decay" in names
    phases = set()
    for step, losses, lrs in recorder.seen:
        assert len(losses) == step
        schedule = lr * (total - step) / total
        if len(losses) < 2 * window:
            p1, phi = True, None
        else:
            prev = sum(losses[-4:-2]) / 2
            recent = sum(losses[-2:]) / 2
            p1, phi = prev - recent > threshold, recent / prev
        phases.add(p1)
        k_i = 0.01 if p1 else 1.0
        k_ii = 1.0 if p1 else max(1 - phi**3, 0.0)
        k_iv = 1.0 if p1 else 10.0
        assert lrs["fsf.policy_I/decay"] == pytest.approx(schedule * k_i)
        assert lrs["fsf.policy_I+fsf.policy_II/decay"] == pytest.approx(schedule * k_i * k_ii)
        assert lrs["fsf.policy_III/decay"] == pytest.approx(schedule)
        assert lrs["fsf.policy_III+fsf.policy_IV/decay"] == pytest.approx(schedule * k_iv)
        assert lrs["rest/decay"] == pytest.approx(schedule)
    assert phases == {True, False}, "the test curve should visit both phases"


def test_policies_can_name_the_papers_sets_for_table_8_ablations():
    swapped = FineTuningSlowFast(policies={"I": "S2", "II": "S1"})  # Table 8, "S_II to S_I"
    assert swapped.resolved_selectors(12) == {
        "I": "layers[0:4].ffn",
        "II": "layers[0:10]",
        "III": "layers[-2:]",
        "IV": "layers[-2:].attention",
    }
    only_v2 = FineTuningFast(policies={"III": "V2", "IV": "V2"})
    assert only_v2.resolved_selectors(24) == {"III": "layers[-4:].attention", "IV": "layers[-4:].attention"}


def test_calibrated_threshold_puts_phase_one_on_the_first_fifth_of_the_reference_curve():
    losses = [0.3 + 2 * math.exp(-t / 20) + 0.02 * math.sin(t) for t in range(1, 101)]
    threshold = calibrate_threshold(losses, window=10)
    phases = [in_phase_one(losses[:t], 10, threshold) for t in range(100)]
    assert phases[:20] == [True] * 20 and not any(phases[20:])
    # the window drop just after update 20 is the largest of the rest: drop(20) = mean(L1..10) - mean(L11..20)
    drop = sum(losses[:10]) / 10 - sum(losses[10:20]) / 10
    assert threshold == pytest.approx(math.ceil(drop * 100) / 100)


def test_fsf_with_a_frozen_set_warns_and_trains(tmp_path, caplog):
    from xlgap.methods import Compose, Freeze

    method = Compose(Freeze("layers[0:3]"), FineTuningSlowFast(window=1, policies=SETS_4_LAYERS))
    trainer = tiny_trainer(tmp_path, method, examples=24, per_device_train_batch_size=8, max_steps=3)
    trainer.train()
    assert "fsf.policy_I has no trainable parameter" in caplog.text
    assert trainer.state.global_step == 3
