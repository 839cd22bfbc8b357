"""Parameter-efficient baselines: what each trains, that the added modules start as the identity (the
model's outputs unchanged), that training leaves every frozen weight bit-identical, and that the
anatomy gives the new parameters components of their own."""

from __future__ import annotations

import pytest
import torch

from tiny import tiny_bert, tiny_trainer
from xlgap.methods import Adapter, BitFit, LoRA, PrepareContext, build_method
from xlgap.models.anatomy import model_anatomy


def outputs(model, seed=0):
    torch.manual_seed(seed)
    ids = torch.randint(4, 44, (3, 9))
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_bitfit_trains_the_biases_and_the_head_only():
    model = tiny_bert()
    BitFit().prepare(model, PrepareContext())
    names = trainable(model)
    assert names == {n for n, _ in model.named_parameters() if n.endswith(".bias") or n.startswith("classifier.")}
    assert "bert.encoder.layer.0.attention.output.LayerNorm.bias" in names
    assert "bert.encoder.layer.0.attention.output.LayerNorm.weight" not in names


def test_lora_starts_as_the_pretrained_model_and_gets_its_own_component():
    model = tiny_bert(dropout=0.0)
    before = outputs(model)
    LoRA(rank=2, alpha=4, dropout=0.0).prepare(model, PrepareContext(seed=1))
    assert torch.equal(outputs(model), before)  # B = 0: the low-rank update starts at zero
    anatomy = model_anatomy(model)
    lora = [n for n, p in anatomy.params.items() if p.component == "lora"]
    # A and B for query and value in each of the 4 layers
    assert len(lora) == 4 * 2 * 2 and all(anatomy.params[n].layer is not None for n in lora)
    assert trainable(model) == set(lora) | {"classifier.weight", "classifier.bias"}
    assert anatomy.select("layers[0].lora") == [n for n in lora if ".layer.0." in n]
    with pytest.raises(ValueError, match="target_modules"):
        LoRA(target_modules=["nope"]).prepare(tiny_bert(), PrepareContext())


def test_houlsby_adapters_after_both_projections_of_every_layer():
    model = tiny_bert(dropout=0.0)
    before = outputs(model)
    Adapter(size=4).prepare(model, PrepareContext(seed=1))
    assert torch.equal(outputs(model), before)  # W_up = 0: every adapter is the identity at the start
    anatomy = model_anatomy(model)
    adapters = sorted({n.rsplit(".", 2)[0] for n, p in anatomy.params.items() if p.component == "adapter"})
    assert adapters == sorted(
        f"bert.encoder.layer.{i}.{where}.xlgap_adapter" for i in range(4) for where in ("attention.output", "output")
    )
    norms = {n for n, p in anatomy.params.items() if p.is_norm}
    assert trainable(model) == {n for n, p in anatomy.params.items() if p.component in ("adapter", "head")} | norms
    # the hook really applies the adapter: a non-zero W_up changes the outputs
    with torch.no_grad():
        model.bert.encoder.layer[2].output.xlgap_adapter.up.weight.normal_(std=0.5)  # not constant: LayerNorm removes a shift
    assert not torch.allclose(outputs(model), before)
    with pytest.raises(ValueError, match="no such linear module"):
        Adapter(after=["nowhere"]).prepare(tiny_bert(), PrepareContext())


@pytest.mark.parametrize("spec", [{"name": "bitfit"}, {"name": "lora", "rank": 2}, {"name": "adapter", "size": 4}])
def test_training_moves_only_what_the_method_trains(spec, tmp_path):
    model = tiny_bert()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = tiny_trainer(tmp_path, build_method(spec), examples=32, model=model, per_device_train_batch_size=8, max_steps=4, learning_rate=1e-2)
    trainer.train()
    def pretrained_name(name):  # peft moves a wrapped projection's own weights under `base_layer`
        return name.replace(".base_layer.", ".")

    moved = {n for n, p in model.named_parameters() if pretrained_name(n) not in start or not torch.equal(p.detach(), start[pretrained_name(n)])}
    assert moved and moved <= trainable(model)
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    for name, param in frozen:
        assert torch.equal(param.detach(), start[pretrained_name(name)]), name


def test_options_are_checked():
    with pytest.raises(ValueError, match="lora rank"):
        LoRA(rank=0)
    with pytest.raises(ValueError, match="adapter size"):
        Adapter(size=0)
