"""Linear CKA (Kornblith et al., 2019) between the hidden states of two models, layer by layer.

Written here because none of the field's libraries ships it for PyTorch tensors; the formula is two
lines. FSF's policy IV can be gated on it (Guo et al., Section 3.2: speed up the top layers only while
their CKA to the pretrained model is still falling), and analyses plot it per layer.

Precision: the trainer measures inside its loss computation, so both models run their forward pass in
the training precision (under bf16 autocast when training in bf16): the gate compares the model as it
is trained with the pretrained one under the same arithmetic. The CKA itself is computed in float64 from
the hidden states (a ratio of squared Frobenius norms of small Gram products: cheap, and free of the
rounding of the training precision).
"""

from __future__ import annotations

import torch
from torch import nn


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same n examples (`x`: n x d1, `y`: n x d2), in [0, 1].

    CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X and Y; it is 1 for
    representations equal up to rotation and isotropic scaling.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: {x.shape[0]} and {y.shape[0]} examples; expected the same examples")
    x, y = x.double(), y.double()
    x, y = x - x.mean(0, keepdim=True), y - y.mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norms) if norms > 0 else 0.0


@torch.no_grad()
def layer_cka(
    reference: nn.Module | dict[str, torch.Tensor], model: nn.Module, inputs: dict[str, torch.Tensor]
) -> list[float]:
    """CKA between `reference` and `model`, for each transformer layer's output on the real tokens of `inputs`.

    `reference` is a model, or the reference values of (some of) `model`'s parameters, run through
    `model` itself with `torch.func.functional_call` (no second copy of the model). Both run in eval mode
    (no dropout, no random numbers drawn); `model`'s mode is restored. Returns one value per layer,
    first layer first (the embeddings are not included).
    """
    keep = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    real = keep["attention_mask"].bool() if "attention_mask" in keep else None
    was_training = model.training
    model.eval()
    try:
        ours = model(**keep, output_hidden_states=True).hidden_states[1:]
        if isinstance(reference, nn.Module):
            theirs = reference.eval()(**keep, output_hidden_states=True).hidden_states[1:]
        else:
            theirs = torch.func.functional_call(model, reference, (), {**keep, "output_hidden_states": True}).hidden_states[1:]
    finally:
        model.train(was_training)
    if len(ours) != len(theirs):
        raise ValueError(f"layer_cka: the models have {len(theirs)} and {len(ours)} layers")
    return [linear_cka(_tokens(a, real), _tokens(b, real)) for a, b in zip(theirs, ours, strict=True)]


def _tokens(hidden: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """(batch, length, width) hidden states -> (real tokens, width)."""
    return hidden[real] if real is not None else hidden.reshape(-1, hidden.shape[-1])
