"""FSF's phase P1 as the paper means it: one initial phase (latched) or re-tested at every update, the
detector after the warm-up, a scale-free threshold, and what a run reports about it; plus the trainer's
correctness fixes found in review (empty sets, skipped updates, duplicate probes, NaN penalties,
weight decay under K, DataParallel)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from tiny import SETS_4_LAYERS, tiny_bert, tiny_trainer
from xlgap.methods import FineTuningSlowFast, Method, TrainingStats
from xlgap.methods.fsf import PhaseDetector
from xlgap.train.trainer import NonFiniteLossError


def phases(fsf: FineTuningSlowFast, losses: list[float], warmup: int = 0) -> list[bool]:
    stats = TrainingStats(losses, warmup_steps=warmup)
    return [fsf.probe_values(t, stats)["phase"] == "P1" for t in range(len(losses))]


def decaying(n: int, scale: float = 1.0, tau: float = 50.0, start: int = 0) -> list[float]:
    """A loss flat at its initial value for `start` updates, then 0.3 + 2 exp(-(t - start) / tau)."""
    return [scale * (0.3 + 2 * math.exp(-max(t - start, 0) / tau)) for t in range(1, n + 1)]


def test_a_flat_start_during_a_long_warm_up_is_p1():
    # the loss is flat for 100 updates (warm-up at a tiny lr), then falls
    losses = decaying(400, start=100)
    literal = FineTuningSlowFast(window=10, threshold=0.1, phase="per_update")
    # without the warm-up the flat start looks like "not falling": P2 from update 21 on, P1 again later
    no_warmup = phases(literal, losses, warmup=0)
    assert no_warmup[:20] == [True] * 20 and not any(no_warmup[20:100]) and any(no_warmup[100:])
    # with the detector after the warm-up, the flat start is P1 and the fast fall after it too
    after_warmup = phases(literal, losses, warmup=100)
    assert all(after_warmup[:120]) and after_warmup[120] and not after_warmup[-1]


def test_latched_p1_never_returns_after_an_epoch_bump():
    losses = decaying(200, tau=20)
    losses[120:130] = [v + 1.0 for v in losses[120:130]]  # a bump (a new epoch, a hard batch): a rise, then a fall
    per_update = phases(FineTuningSlowFast(window=10, threshold=0.1, phase="per_update"), losses)
    latched = phases(FineTuningSlowFast(window=10, threshold=0.1), losses)
    end = latched.index(False)
    assert all(latched[:end]) and not any(latched[end:])
    assert any(per_update[end:])  # the literal reading flips back into P1 after the bump
    assert per_update[:end] == latched[:end]


def test_the_literal_threshold_on_a_long_run_leaves_only_the_forced_windows():
    # an XNLI-sized run: 120k updates, loss 1.1 -> 0.35 with a time constant of 8k updates
    losses = [0.35 + 0.75 * math.exp(-t / 8000) for t in range(1, 120_001)]
    fsf = FineTuningSlowFast(window=100, threshold=0.1)
    stats = TrainingStats(losses, warmup_steps=0)
    report = fsf.report(stats)
    assert report["fsf.p1_updates"] == 200  # the two forced windows: the test never holds
    assert report["fsf.p1_share"] == pytest.approx(200 / 120_000)
    # "auto" reads "falling fast" relative to this run's own initial drop: P1 lasts until the drop between
    # windows is half the first one, about 8000 ln 2 updates after the first test (update 200)
    auto = FineTuningSlowFast(window=100, threshold="auto").report(stats)
    assert auto["fsf.p1_updates"] == pytest.approx(200 + 8000 * math.log(2), abs=100)


def test_auto_threshold_is_half_the_first_drop_and_scale_free():
    losses = decaying(300)
    detector = PhaseDetector(window=10, threshold="auto")
    first = sum(losses[10:20]) / 10 - sum(losses[0:10]) / 10
    assert detector.resolved_threshold(losses, warmup=0) == pytest.approx(-0.5 * first)
    for scale in (0.01, 1.0, 100.0):
        scaled = [scale * v for v in losses]
        fsf = FineTuningSlowFast(window=10, threshold="auto")
        assert phases(fsf, scaled) == phases(FineTuningSlowFast(window=10, threshold="auto"), losses)
    # P1 ends at the first update whose drop is at most half the first one: worked out from the curve
    drops = [sum(losses[t - 20 : t - 10]) / 10 - sum(losses[t - 10 : t]) / 10 for t in range(20, 301)]
    end = next(t for t, d in zip(range(20, 301), drops, strict=True) if not d > 0.5 * drops[0])
    assert PhaseDetector(10, "auto").end(losses) == end


def test_report_warns_when_p1_is_a_sliver(caplog):
    losses = [0.35 + 0.75 * math.exp(-t / 8000) for t in range(1, 20_001)]
    with caplog.at_level(logging.WARNING):
        FineTuningSlowFast(window=100, threshold=0.1).report(TrainingStats(losses))
    assert "phase P1 covered 200 of 20000 updates (1.0%)" in caplog.text


class CountingLosses(list):
    """A loss list that counts the values its readers take out of it by index or slice."""

    read = 0

    def __getitem__(self, index):
        value = super().__getitem__(index)
        self.read += len(value) if isinstance(index, slice) else 1
        return value


def test_detector_cost_is_linear_in_the_run():
    """Asking for the multipliers of every update of a 20,000-update run reads, per update, phi's two
    windows and the detector's one new loss, not the curve so far: a copy of `losses[:step]` per update
    reads 2 * 10^8 values (this test failed so before the fix, and its wall time depended on the machine)."""
    updates, window = 20_000, 100
    losses = CountingLosses(decaying(updates, tau=1000))
    fsf = FineTuningSlowFast(window=window, threshold=0.01)
    stats = TrainingStats(losses)
    for t in range(updates + 1):
        fsf.lr_multipliers(t, stats)
    assert losses.read <= updates * (2 * window + 1) + updates


def test_options_are_checked():
    with pytest.raises(ValueError, match="fsf phase: expected one of 'latched', 'per_update', got 'once'"):
        FineTuningSlowFast(phase="once")
    with pytest.raises(ValueError, match="fsf threshold: expected a number or 'auto', got 'calibrate'"):
        FineTuningSlowFast(threshold="calibrate")


# ---------------------------------------------------------------- review fixes


def test_a_policy_left_empty_by_the_v1_exclusion_is_dropped_not_a_crash(tmp_path, caplog):
    # on a 1-layer model, S1 = layers[0:1] lies inside V1 = layers[-1:]: policy I has nothing left
    method = FineTuningSlowFast(window=1, policies={"I": "layers[0:1]", "II": None, "III": "layers[-1:]", "IV": None})
    trainer = tiny_trainer(tmp_path, method, examples=16, model=tiny_bert(layers=1), per_device_train_batch_size=8, max_steps=2)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert "the set of policy ['I'] is empty" in caplog.text
    assert trainer.state.global_step == 2


def test_multipliers_follow_the_recorded_losses_not_the_scheduler(tmp_path):
    method = FineTuningSlowFast(window=1, threshold=0.05, policies=SETS_4_LAYERS)
    trainer = tiny_trainer(tmp_path, method, examples=16, per_device_train_batch_size=8, max_steps=2)
    trainer.train()
    trainer.stats.losses = [2.0, 1.0, 1.0, 1.0]  # an update the scheduler skipped (fp16 overflow) is recorded
    expected = method.lr_multipliers(4, trainer.stats)
    got = dict(zip([s.member_of for s in trainer.group_specs], trainer.multipliers_at(3), strict=True))
    assert got[("fsf.policy_III", "fsf.policy_IV")] == expected["fsf.policy_IV"] == 10.0


def test_evaluate_after_training_appends_no_duplicate_probe(tmp_path):
    from tiny import tiny_tokenizer
    from xlgap.data.formats import TokenExample
    from xlgap.data.sources import Origin, SplitData
    from xlgap.data.tasks import get_task
    from xlgap.kinds import encode_split
    from xlgap.results import read_records
    from xlgap.train.probes import ProbeLog

    task = get_task("udpos")
    examples = [TokenExample(("w1", "w2"), ("NOUN", "VERB")), TokenExample(("w3",), ("ADJ",))]
    dev = encode_split(SplitData("udpos", "en", "dev", examples, Origin()), task, tiny_tokenizer(), 16)
    from transformers import DataCollatorForTokenClassification, TrainingArguments

    from tiny import token_dataset
    from xlgap.train.trainer import XlgapTrainer

    probe = ProbeLog(tmp_path / "metrics.jsonl", "accuracy", ["en"], [], "avg_dev")
    args = TrainingArguments(
        str(tmp_path), report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, max_steps=2,
        per_device_train_batch_size=8, eval_strategy="steps", eval_steps=1,
    )
    trainer = XlgapTrainer(
        tiny_bert(num_labels=17), args, train_dataset=token_dataset(16), eval_dataset={"en": dev},
        data_collator=DataCollatorForTokenClassification(tiny_tokenizer()), probe=probe,
    )
    trainer.train()
    trainer.evaluate()
    assert [r["step"] for r in read_records(probe.path)] == [1, 2]


class NaNPenalty(Method):
    def penalty(self, model):
        return torch.tensor(float("nan"))


def test_a_non_finite_penalty_stops_the_run_before_the_update(tmp_path):
    trainer = tiny_trainer(tmp_path, NaNPenalty(), examples=16, per_device_train_batch_size=8, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with pytest.raises(NonFiniteLossError, match="with the methods' penalty.* at update 1"):
        trainer.train()
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())


def test_k_scales_adamw_decoupled_weight_decay_too(tmp_path):
    # zero learning signal for layer 0 (its gradient is masked to 0): only weight decay moves it, by lr * K * wd
    method = FineTuningSlowFast(c1=0.01, window=100, policies={"I": "layers[0:1]", "II": None, "III": None, "IV": None})
    lr, wd = 0.1, 0.5
    trainer = tiny_trainer(
        tmp_path, method, examples=8, per_device_train_batch_size=8, max_steps=1, learning_rate=lr,
        weight_decay=wd, warmup_steps=0, lr_scheduler_type="constant",
    )
    layer0 = [p for n, p in trainer.model.named_parameters() if ".layer.0." in n and n.endswith("weight") and p.dim() == 2]
    for p in layer0:
        p.register_hook(lambda grad: torch.zeros_like(grad))
    before = [p.detach().clone() for p in layer0]
    trainer.train()
    for old, p in zip(before, layer0, strict=True):
        assert torch.allclose(p.detach(), old * (1 - lr * 0.01 * wd), atol=1e-7)  # decay shrunk by K = c1 in P1


def test_two_gpus_in_one_process_are_refused(tmp_path, monkeypatch):
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))
    with pytest.raises(ValueError, match="sees 2 GPUs .*accelerate launch"):
        tiny_trainer(tmp_path, None, examples=8, per_device_train_batch_size=8, max_steps=1)
