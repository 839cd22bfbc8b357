"""Parameter-efficient baselines: what each trains, that the added modules start as the identity (the
model's outputs unchanged), that training leaves every frozen weight bit-identical, and that the
anatomy gives the new parameters components of their own."""

from __future__ import annotations

import pytest
import torch

from tiny import tiny_bert, tiny_trainer
from xlgap.methods import Adapter, BitFit, LoRA, PrepareContext, SoftPrompt, build_method
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


@pytest.mark.parametrize("spec", [{"name": "bitfit"}, {"name": "lora", "rank": 2}, {"name": "adapter", "size": 4}, {"name": "prompt", "tokens": 3}])
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


def test_soft_prompt_is_prepended_and_every_output_lines_up_with_the_input():
    model = tiny_bert(num_labels=5, dropout=0.0)
    words = model.get_input_embeddings().weight.detach().clone()
    SoftPrompt(tokens=3).prepare(model, PrepareContext(seed=2))
    prompt = model.xlgap_prompt.embedding.weight
    assert prompt.shape == (3, 16) and all(any(torch.equal(row, w) for w in words) for row in prompt.detach())  # vocab rows
    anatomy = model_anatomy(model)
    assert anatomy.select("prompt") == ["xlgap_prompt.embedding.weight"]
    assert trainable(model) == {"xlgap_prompt.embedding.weight"} | {n for n, p in anatomy.params.items() if p.component == "head"}
    torch.manual_seed(0)
    ids = torch.randint(4, 44, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    labels = torch.randint(0, 5, (2, 7))
    labels[1, 5:] = -100
    model.eval()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    assert out.logits.shape == (2, 7, 5) and all(h.shape[1] == 7 for h in out.hidden_states)
    # the model's own loss scores exactly the real tokens: the prompt positions carry label -100
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 5), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    # and the prompt is really read: changing it changes the token logits
    with torch.no_grad():
        prompt.add_(torch.randn_like(prompt))  # not a constant: LayerNorm removes a shift
    assert not torch.allclose(model(input_ids=ids, attention_mask=mask).logits, out.logits)
    with pytest.raises(TypeError, match="keyword arguments"):
        model(ids)


def test_soft_prompt_shifts_qa_positions_and_keeps_sentence_logits():
    from transformers import BertForQuestionAnswering, BertForSequenceClassification

    config = tiny_bert().config
    config.num_labels = 2
    qa = BertForQuestionAnswering(config).eval()
    SoftPrompt(tokens=4).prepare(qa, PrepareContext())
    ids = torch.randint(4, 44, (2, 9))
    start, end = torch.tensor([2, 0]), torch.tensor([3, 0])
    out = qa(input_ids=ids, attention_mask=torch.ones_like(ids), start_positions=start, end_positions=end)
    assert out.start_logits.shape == (2, 9) and out.end_logits.shape == (2, 9)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(out.loss, (ce(out.start_logits, start) + ce(out.end_logits, end)) / 2, atol=1e-6)
    config.num_labels = 3
    classifier = BertForSequenceClassification(config).eval()
    SoftPrompt(tokens=4).prepare(classifier, PrepareContext())
    assert classifier(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (2, 3)


def test_options_are_checked():
    with pytest.raises(ValueError, match="lora rank"):
        LoRA(rank=0)
    with pytest.raises(ValueError, match="adapter size"):
        Adapter(size=0)
    with pytest.raises(ValueError, match="prompt tokens"):
        SoftPrompt(tokens=0)
