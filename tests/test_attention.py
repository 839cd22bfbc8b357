"""Length-dispatched attention (models/attention.py): the matmul product computes SDPA's function (and
transformers' eager attention), is used exactly for bf16 CPU training calls with dropout or on short
sequences, and a model loaded by xlgap uses it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import xlgap.models.attention as attention
from tiny import tiny_bert
from xlgap.models.attention import (
    MATMUL_MAX_LENGTH,
    length_dispatched_attention,
    matmul_attention,
    use_length_dispatched_attention,
)
from xlgap.models.load import load_model


def qkv(length: int, dtype=torch.float32, batch: int = 3, heads: int = 2, dim: int = 8):
    generator = torch.Generator().manual_seed(length)
    return [torch.randn(batch, heads, length, dim, generator=generator).to(dtype) for _ in range(3)]


def padding_mask(batch: int, length: int) -> torch.Tensor:
    """SDPA's boolean mask (True attends): row r has its last r keys padded."""
    keep = torch.ones(batch, length, dtype=torch.bool)
    for row in range(batch):
        keep[row, length - row :] = row == 0
    return keep[:, None, None, :]


def test_the_product_computes_sdpa_in_fp32_with_boolean_and_additive_masks():
    q, k, v = qkv(10)
    mask = padding_mask(3, 10)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3).transpose(1, 2)
    assert torch.allclose(matmul_attention(q, k, v, mask, 0.0, 0.3), expected, atol=1e-6)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    assert torch.allclose(matmul_attention(q, k, v, additive, 0.0, 0.3), expected, atol=1e-6)
    # default scale 1/sqrt(head_dim), no mask
    assert torch.allclose(matmul_attention(q, k, v, None, 0.0, None), F.scaled_dot_product_attention(q, k, v).transpose(1, 2), atol=1e-6)


def test_bf16_product_is_transformers_eager_attention():
    from transformers.models.bert.modeling_bert import eager_attention_forward

    q, k, v = qkv(16, torch.bfloat16)
    mask = padding_mask(3, 16)
    additive = torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill(~mask, torch.finfo(torch.bfloat16).min)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = matmul_attention(q, k, v, mask, 0.0, None)
        expected, _ = eager_attention_forward(Module().eval(), q, k, v, additive, dropout=0.0)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


class Module(torch.nn.Module):
    is_causal = False


@pytest.mark.parametrize(
    ("dtype", "length", "dropout", "grad", "uses_product"),
    [
        (torch.bfloat16, 8, 0.0, True, True),
        (torch.bfloat16, MATMUL_MAX_LENGTH, 0.0, True, True),
        (torch.bfloat16, MATMUL_MAX_LENGTH + 1, 0.0, True, False),  # long without dropout: SDPA's flash kernel
        (torch.bfloat16, MATMUL_MAX_LENGTH + 1, 0.1, True, True),  # with dropout SDPA would take its math path
        (torch.bfloat16, 8, 0.0, False, False),  # inference: SDPA
        (torch.float32, 8, 0.1, True, False),  # fp32: SDPA
    ],
)
def test_dispatch_uses_the_product_only_for_bf16_training_calls(monkeypatch, dtype, length, dropout, grad, uses_product):
    used = []
    monkeypatch.setattr(attention, "matmul_attention", lambda *args: used.append("product") or matmul_attention(*args))
    q, k, v = qkv(length, dtype)
    with torch.set_grad_enabled(grad):
        out, weights = length_dispatched_attention(Module(), q, k, v, None, dropout=dropout)
    assert weights is None and out.shape == (3, length, 2, 8)
    assert bool(used) == uses_product
    causal = Module()
    causal.is_causal = True
    used.clear()
    with torch.set_grad_enabled(True):
        length_dispatched_attention(causal, *qkv(8, torch.bfloat16), None)
    assert not used  # a causal module keeps SDPA


def test_a_loaded_model_uses_it_and_trains_as_the_sdpa_model(tmp_path):
    tiny = tiny_bert(num_labels=3, dropout=0.0)
    with torch.no_grad():  # sharper attention than the random init's near-uniform one, so masks matter
        for name, parameter in tiny.named_parameters():
            if "attention.self" in name or "value" in name:
                parameter.mul_(30)
    tiny.save_pretrained(tmp_path)
    from transformers import AutoModelForTokenClassification

    model = load_model(str(tmp_path), AutoModelForTokenClassification, num_labels=3)
    assert model.config._attn_implementation == "xlgap_cpu"
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("sdpa")
    ids = torch.randint(4, 40, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[1, 7:] = 0
    labels = torch.randint(0, 3, (4, 12)).masked_fill(mask == 0, -100)
    for m in (model, reference):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            m(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    grads = [(p.grad, r.grad) for p, r in zip(model.parameters(), reference.parameters(), strict=True) if p.grad is not None]
    assert grads and all(torch.allclose(g, r, rtol=0.05, atol=2e-3) for g, r in grads)
    # a padded row's real tokens see only real tokens: the same outputs as the row alone
    with torch.autocast("cpu", dtype=torch.bfloat16):
        padded = model(input_ids=ids[1:2], attention_mask=mask[1:2]).logits[0, :7].float()
        alone = model(input_ids=ids[1:2, :7]).logits[0].float()
    assert (padded - alone).norm() < 0.02 * alone.norm()


def test_models_not_on_sdpa_are_left_alone():
    model = tiny_bert()
    model.set_attn_implementation("eager")
    assert not use_length_dispatched_attention(model)
    assert model.config._attn_implementation == "eager"
