"""One contract over every registered method, the way peft tests every tuner: its state survives a
round trip, it composes with FSF, an interrupted run resumes to the same weights, and the multipliers
replayed from `losses.json` are the ones training used. Plus penalties under gradient accumulation."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch

from tiny import (
    SETS_4_LAYERS,
    assert_same_outcome,
    run_interrupted_then_resumed,
    tiny_bert,
    tiny_trainer,
    write_tiny_model,
    write_tiny_udpos,
)
from xlgap.combiners import COMBINERS
from xlgap.config import config_from_dict
from xlgap.methods import L2, METHODS, Compose, FineTuningSlowFast, MethodError, build_method
from xlgap.report.plots import multiplier_curves
from xlgap.results import load_run
from xlgap.train.run import run_experiment
from xlgap.utils.options import REQUIRED, coerce, option, option_hints, options_of

FSF_TINY = {"window": 2, "threshold": 0.05, "policies": SETS_4_LAYERS}
# Every registered method, with options that fit the 4-layer tiny BERT. A new method must add itself here.
CASES = {
    "fsf": {"name": "fsf", **FSF_TINY},
    "fs": {"name": "fs", "window": 2, "threshold": 0.05, "policies": {"I": "layers[0:3]", "II": "layers[0:1].ffn"}},
    "ff": {"name": "ff", "window": 2, "threshold": 0.05, "policies": {"III": "layers[-1:]", "IV": "layers[-1:].attention"}},
    "freeze": {"name": "freeze", "select": "layers[0:2]"},
    "reinit": {"name": "reinit", "select": "layers[1].ffn"},
    "lr_scale": {"name": "lr_scale", "select": "layers[-1:]", "scale": 5},
    "noisytune": {"name": "noisytune"},
    "l2": {"name": "l2", "strength": 0.1},
    "ewc": {"name": "ewc", "strength": 100.0, "fisher": "FISHER"},  # a Fisher of the tiny model, written below
    "bitfit": {"name": "bitfit"},
    "lora": {"name": "lora", "rank": 2, "alpha": 4},
    "adapter": {"name": "adapter", "size": 4},
    "prompt": {"name": "prompt", "tokens": 3},
}
PARTNER = {"name": "fsf", **FSF_TINY}
FSF_FAMILY = {"fsf", "fs", "ff"}


def test_every_registered_method_is_under_contract():
    assert set(CASES) == set(METHODS)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from xlgap.methods.fisher_file import Fisher

    root = tmp_path_factory.mktemp("contract")
    model = tiny_bert(num_labels=17)
    torch.manual_seed(0)
    tensors = {n: torch.rand_like(p) for n, p in model.named_parameters() if ".layer." in n}
    Fisher(tensors, {"language": "de"}).save(root / "fisher-de.safetensors")
    CASES["ewc"]["fisher"] = str(root / "fisher-de.safetensors")
    return write_tiny_model(root / "model"), write_tiny_udpos(root / "data")


def methods_for(name: str) -> list[dict]:
    partner = {"name": "l2", "strength": 0.1} if name in FSF_FAMILY else PARTNER
    return [CASES[name], partner]


def config(tiny_setup, out, methods):
    model, data = tiny_setup
    return config_from_dict(
        {
            "name": "contract",
            "output_dir": str(out),
            "seeds": [4],
            "model": {"name": model},
            "data": {"task": "udpos", "dir": data, "target_languages": ["de"], "max_length": 16},
            "methods": methods,
            "train": {"learning_rate": 3e-3, "epochs": 2, "batch_size": 4, "warmup_ratio": 0.1, "checkpoint_every": 4},
            "eval": {"every": 3},
            "save_model": True,
        }
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_round_trip(name, tiny_setup):
    method = build_method(CASES[name])
    trainer_free = tiny_bert()
    method.param_groups(trainer_free)
    again = build_method(CASES[name])
    again.load_state_dict(method.state_dict())
    assert again.state_dict() == method.state_dict()


@pytest.mark.parametrize("name", sorted(CASES))
def test_composes_with_fsf_resumes_exactly_and_replays_its_multipliers(name, tiny_setup, tmp_path, monkeypatch):
    methods = methods_for(name)
    run_experiment(config(tiny_setup, tmp_path / "whole", methods))
    run_interrupted_then_resumed(config(tiny_setup, tmp_path / "cut", methods), 10, monkeypatch)
    folders = [tmp_path / x / "contract" / "seed-4" for x in ("whole", "cut")]
    assert_same_outcome(*folders, keys=("dev", "test", "best_step", "train_loss", "methods_report"))
    # the multipliers recomputed from losses.json are those the probes recorded during training
    run = load_run(tmp_path / "whole" / "contract")
    updates, curves = multiplier_curves(run)
    for record in run.records[4]:
        for group, k in record["lr_multipliers"].items():
            if record["step"] < len(updates):
                assert curves[group][record["step"]] == pytest.approx(k), (group, record["step"])


def test_a_quadratic_penalty_gives_the_same_updates_under_gradient_accumulation(tmp_path):
    def train(batch, accumulate, mode):
        trainer = tiny_trainer(
            tmp_path / f"{batch}x{accumulate}{mode}", Compose(L2(strength=0.5, mode=mode)), examples=32,
            model=tiny_bert(dropout=0.0), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate,
            learning_rate=1e-1, max_steps=4, warmup_steps=0, seed=3, train_sampling_strategy="group_by_length",
            optim="sgd",  # Adam would amplify float noise in gradients that are zero in exact arithmetic (key biases)
        )
        trainer.train()
        return trainer

    for mode in ("penalty", "decoupled"):
        whole, split = train(8, 1, mode), train(4, 2, mode)
        for (name, p), q in zip(whole.model.named_parameters(), split.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5), (mode, name)
    assert whole.stats.losses == pytest.approx(split.stats.losses, rel=1e-5)


def test_l2_pulls_towards_the_pretrained_weights_and_logs_its_penalty(tmp_path):
    model = tiny_bert(seed=5)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    plain = tiny_trainer(tmp_path / "df", None, examples=32, model=tiny_bert(seed=5), per_device_train_batch_size=8,
                         learning_rate=5e-3, num_train_epochs=3)  # fmt: skip
    plain.train()
    strong = tiny_trainer(tmp_path / "l2", L2(strength=5.0), examples=32, model=model, per_device_train_batch_size=8,
                          learning_rate=5e-3, num_train_epochs=3)  # fmt: skip
    strong.train()

    def distance(trainer):
        return sum(((p.detach() - start[n]) ** 2).sum() for n, p in trainer.model.named_parameters() if not n.startswith("classifier"))

    assert distance(strong) < 0.5 * distance(plain)
    # the penalty of every update is recorded: zero at the first update (theta = theta*), then positive
    penalties = [p["l2"] for p in strong.stats.penalties]
    assert len(penalties) == len(strong.stats.losses) and penalties[0] == 0.0 and max(penalties) > 0
    reference = strong.context.references.tensors
    assert set(reference) == {n for n, _ in model.named_parameters() if not n.startswith("classifier")}
    assert all(torch.equal(reference[n], start[n]) for n in reference)  # taken before training, shared


def test_l2_options_are_checked():
    with pytest.raises(
        ValueError, match="l2 mode: expected one of 'penalty', 'decoupled', got 'weight_decay'"
    ):
        L2(mode="weight_decay")
    with pytest.raises(ValueError, match="l2 strength: expected a number, got 'strong'"):
        L2(strength="strong")
    with pytest.raises(ValueError, match="l2 strength"):
        L2(strength=-1)


def test_method_tensor_state_is_checkpointed_as_safetensors(tmp_path):
    from xlgap.train.checkpoints import load_state_tensors, save_state_tensors

    state = {"0": {"fisher": torch.arange(6.0).reshape(2, 3), "note": "x"}, "1": [torch.ones(2), 3]}
    stored = save_state_tensors(state, tmp_path / "t.safetensors")
    assert json.dumps(stored)  # JSON-safe
    back = load_state_tensors(stored, tmp_path / "t.safetensors")
    assert torch.equal(back["0"]["fisher"], state["0"]["fisher"]) and back["0"]["note"] == "x" and back["1"][1] == 3
    plain = save_state_tensors({"a": 1}, tmp_path / "none.safetensors")
    assert plain == {"a": 1} and not (tmp_path / "none.safetensors").exists()


def test_fsf_composes_with_a_method_that_reads_references(tmp_path):
    method = Compose(FineTuningSlowFast(**FSF_TINY), L2(strength=0.1))
    trainer = tiny_trainer(tmp_path, method, examples=24, per_device_train_batch_size=8, max_steps=3)
    trainer.train()
    assert trainer.state.global_step == 3 and len(trainer.stats.penalties) == 3


def test_a_method_registers_itself_with_its_decorator():
    from xlgap.methods import Method, register_method

    @register_method("contract_probe")
    @dataclass(eq=False)
    class Probe(Method):
        select: str = option(REQUIRED, "what it acts on")
        strength: float = option(1.0, "how strong")

    try:
        built = build_method({"name": "contract_probe", "strength": 2, "select": "head"})
        assert isinstance(built, Probe) and built.name == "contract_probe" and built.strength == 2.0
        assert isinstance(built.strength, float)  # an integer in YAML is a number
        assert [(o.name, o.type, o.default, o.help) for o in options_of(Probe)] == [
            ("select", "a string", None, "what it acts on"),
            ("strength", "a number", "1.0", "how strong"),
        ]
        with pytest.raises(
            MethodError,
            match="methods.select: method 'contract_probe' needs this option \\(what it acts on\\)",
        ):
            build_method({"name": "contract_probe"})
        with pytest.raises(ValueError, match="'contract_probe' is registered twice"):
            register_method("contract_probe")(dataclass(type("Other", (Method,), {})))
        with pytest.raises(TypeError, match="decorate it with @dataclass"):
            register_method("contract_plain")(type("Plain", (Method,), {}))
    finally:
        METHODS.pop("contract_probe")


@pytest.mark.parametrize("registry", [METHODS, COMBINERS], ids=["methods", "combiners"])
def test_every_option_has_help_and_a_default_of_its_type(registry):
    """What `xlgap methods` shows: every option of every method and combiner says what it does, and its
    default passes its own type check."""
    for name, cls in registry.items():
        hints = option_hints(cls)
        for info in options_of(cls):
            assert len(info.help) > 15, f"{name}.{info.name} has no help text"
            default = next(f for f in dataclasses.fields(cls) if f.name == info.name)
            if info.default is not None:
                value = (
                    default.default_factory() if default.default is dataclasses.MISSING else default.default
                )
                assert coerce(value, hints[info.name], info.name, ValueError) == value
