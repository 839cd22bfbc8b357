"""Attention that picks its kernel per call: the matmul product when training in bf16 on a CPU, PyTorch's
SDPA everywhere else.

Why by hand: transformers fixes one attention implementation per model, and on a CPU neither is best
for every call. With attention dropout (BERT's 0.1) PyTorch's SDPA cannot use its CPU flash kernel and
falls back to its math path, which computes the same product as transformers' `eager` attention, only
slower; without dropout its flash kernel's bf16 backward is slow on short sequences. So a bf16 training
step of a 12-layer encoder is faster with the plain product (matmul, softmax, dropout, matmul) on every
length with dropout and up to 128 tokens without it (`bench/attention.py`, section `attention` of
docs/benchmarks.md), while in fp32, in inference and on a GPU SDPA is as fast or faster. `xlgap_cpu` is
registered with transformers' `AttentionInterface` and uses SDPA's masks, so a model that supports SDPA
switches to it with `use_length_dispatched_attention`; the product's numerics are those of
transformers' `eager` attention (and of SDPA's math path): scores, softmax and dropout in the autocast
dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "xlgap_cpu"
MATMUL_MAX_LENGTH = 128  # without dropout, the longest key sequence the product takes (SDPA's flash kernel wins from about 192)


def matmul_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
    scaling: float | None,
) -> torch.Tensor:
    """dropout(softmax(q k^T * scaling + mask)) v as `(batch, length, heads, head_dim)`, as transformers'
    eager attention computes it. `attention_mask` is SDPA's: boolean (True attends) or additive."""
    scores = torch.matmul(query, key.transpose(-2, -1)) * (scaling if scaling is not None else query.size(-1) ** -0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = F.softmax(scores, dim=-1)
    if dropout > 0:
        probabilities = F.dropout(probabilities, p=dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous()


def length_dispatched_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: the product for a bf16 CPU training call with dropout or on
    short sequences (bidirectional, no grouped heads), SDPA for everything else."""
    if (
        query.device.type == "cpu"
        and query.dtype == torch.bfloat16
        and torch.is_grad_enabled()
        and (dropout > 0 or key.shape[-2] <= MATMUL_MAX_LENGTH)
        and not is_causal
        and not getattr(module, "is_causal", True)  # SDPA's reading: a module that does not say is causal
        and key.shape[1] == query.shape[1]
    ):
        return matmul_attention(query, key, value, attention_mask, dropout, scaling), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)


AttentionInterface.register(IMPLEMENTATION, length_dispatched_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def use_length_dispatched_attention(model: PreTrainedModel) -> bool:
    """Switch `model` from SDPA to `xlgap_cpu` (a model on another implementation is left as it is);
    returns whether it switched."""
    if model.config._attn_implementation != "sdpa" or not model._can_set_attn_implementation():
        return False
    model.set_attn_implementation(IMPLEMENTATION)
    return model.config._attn_implementation == IMPLEMENTATION
