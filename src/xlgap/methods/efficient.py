"""Parameter-efficient fine-tuning baselines (the L2/EWC regularization paper's Table 6): each trains a
few parameters of its own plus the task head and freezes everything else.

- `bitfit` (Ben Zaken, Goldberg and Ravfogel, "BitFit: Simple Parameter-efficient Fine-tuning for
  Transformer-based Masked Language-models", ACL 2022): every bias term (LayerNorm biases included) and
  the head; a selector, no new modules.
- `lora` (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, Eq. 3:
  h = W0 x + (alpha / r) B A x, B initialised to zero): through peft's `inject_adapter_in_model`, which
  adds the low-rank layers in place, so the model stays the object the Trainer holds (peft's
  `get_peft_model` would wrap it). Defaults as the LoRA paper's GLUE runs: rank 8, alpha 16 (scale 2),
  dropout 0.1, on the attention query and value projections.
- `adapter` (Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019, Figure 2): a
  bottleneck h + W_up f(W_down h) of size 64 (GELU, W_up initialised to zero, so the model starts as the
  pretrained one) after the attention output projection and after the feed-forward output projection
  of every layer, before the residual connection and LayerNorm; the LayerNorms are trained too, as in
  the paper. Written here because the `adapters` library does not support transformers 5 and peft has
  no bottleneck adapter: each adapter is a submodule beside the projection it follows (`.xlgap_adapter`)
  applied by a forward hook, so no pretrained parameter is renamed.

- `prompt` (Lester, Al-Rfou and Constant, "The Power of Scale for Parameter-Efficient Prompt Tuning",
  EMNLP 2021; the L2 paper's Table 6 uses 20 prompt vectors): `tokens` trainable vectors (peft's
  `PromptEmbedding`, initialised from the embeddings of randomly drawn vocabulary tokens, Lester et al.'s
  choice) prepended to every sequence's input embeddings, the encoder frozen, the head trained. peft's
  `get_peft_model` would wrap the model and, for token tasks, leave the labels one prompt longer than
  the logits; here a forward pre-hook prepends the prompt (extending the attention mask, token types,
  token labels with -100) and a forward hook drops the prompt positions from token logits, QA logits
  and hidden states (and computes a QA model's loss over the input's own positions), so every output
  lines up with the input tokens and the model stays the object the Trainer holds. As in peft, the prompt goes before the
  first token, so a sentence classifier's pooled first position is a prompt vector.

The anatomy gives the new parameters components of their own (`lora`, `adapter`, `prompt`), so
`xlgap anatomy` counts them and selectors (`layers[-2:].adapter`) name them. A saved model keeps the
new weights in its state dict; loading it back needs the same method applied first (`from_pretrained`
alone drops them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xlgap.methods.base import Method, PrepareContext, register_method
from xlgap.models.anatomy import ADAPTER_ATTRIBUTE, PROMPT_ATTRIBUTE, model_anatomy
from xlgap.utils.options import option

HOULSBY_AFTER = ["attention.output.dense", "output.dense"]


def train_only(model: nn.Module, selector: str) -> None:
    """requires_grad on the parameters `selector` names, on the task head (if the model has one) and on
    every module a parameter-efficient method added; off on every other one."""
    anatomy = model_anatomy(model)
    keep = set(anatomy.select(selector)) | {n for n, p in anatomy.params.items() if p.component in ("head", "lora", "adapter", "prompt")}
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)


@register_method("bitfit")
@dataclass(eq=False)
class BitFit(Method):
    """Train the bias terms and the task head only (BitFit)."""

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Freeze every parameter but the biases and the head."""
        train_only(model, "bias")


@register_method("lora")
@dataclass(eq=False)
class LoRA(Method):
    """Low-rank updates of the projections `target_modules` through peft; the head is trained too."""

    rank: int = option(8, "r, the rank of the update B A (>= 1)")
    alpha: float = option(16.0, "the update is scaled by alpha / r")
    dropout: float = option(0.1, "dropout on the LoRA input, in [0, 1)")
    target_modules: list[str] = option(
        ["query", "value"], "names of the linear modules that get a low-rank update (peft's target_modules)"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"lora rank: expected an integer >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora dropout: expected a value in [0, 1), got {self.dropout}")

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Inject the LoRA layers (seeded: A is random), then train only them and the head."""
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            try:
                inject_adapter_in_model(config, model)
            except ValueError as err:
                raise ValueError(f"target_modules {self.target_modules}: {err}") from None
        train_only(model, "lora")


class BottleneckAdapter(nn.Module):
    """h + W_up GELU(W_down h), W_up zero-initialised (an identity map at the start)."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(nn.functional.gelu(self.down(hidden)))


def _apply_adapter(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return module.xlgap_adapter_ref(output)


@register_method("adapter")
@dataclass(eq=False)
class Adapter(Method):
    """Houlsby bottleneck adapters of `size` after the modules `after` of every layer (BERT / XLM-R
    names by default); trains them, the LayerNorms (`train_layernorm`) and the head."""

    size: int = option(64, "the bottleneck width (>= 1)")
    after: list[str] = option(
        HOULSBY_AFTER, "names (suffixes) of the linear modules of each layer that an adapter follows"
    )
    train_layernorm: bool = option(True, "train the LayerNorms too, as Houlsby et al. do")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.size < 1:
            raise ValueError(f"adapter size: expected an integer >= 1, got {self.size}")

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Add one adapter after each matching projection (seeded), then freeze everything else."""
        anatomy = model_anatomy(model)
        pattern = re.compile(rf"\.\d+\.({'|'.join(map(re.escape, self.after))})$")
        targets = [path for path, module in model.named_modules() if pattern.search(path) and isinstance(module, nn.Linear)]
        if not targets:
            raise ValueError(f"adapter after {self.after}: no such linear module in the layers of this {anatomy.architecture}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            for path in targets:
                projection = model.get_submodule(path)
                parent = model.get_submodule(path.rpartition(".")[0])
                adapter = BottleneckAdapter(projection.out_features, self.size).to(projection.weight.device)
                parent.add_module(ADAPTER_ATTRIBUTE, adapter)
                object.__setattr__(projection, "xlgap_adapter_ref", adapter)  # not a second registration
                projection.register_forward_hook(_apply_adapter)
        train_only(model, "adapter" + (" + layernorm" if self.train_layernorm else ""))


@register_method("prompt")
@dataclass(eq=False)
class SoftPrompt(Method):
    """Soft prompt tuning (Lester et al.): `tokens` trainable vectors prepended to every input; the
    encoder is frozen, the prompt and the task head are trained."""

    tokens: int = option(20, "the number of prompt vectors (the L2 paper's Table 6: 20)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tokens < 1:
            raise ValueError(f"prompt tokens: expected an integer >= 1, got {self.tokens}")

    def prepare(self, model: nn.Module, context: PrepareContext) -> None:
        """Add the prompt (seeded, from random vocabulary embeddings) and its two hooks, then freeze all
        but the prompt and the head."""
        from peft import PromptTuningConfig
        from peft.tuners.prompt_tuning import PromptEmbedding

        words = model.get_input_embeddings()
        config = PromptTuningConfig(
            num_virtual_tokens=self.tokens, token_dim=words.embedding_dim, num_transformer_submodules=1, prompt_tuning_init="SAMPLE_VOCAB"
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            prompt = PromptEmbedding(config, words).to(words.weight.device)
        model.add_module(PROMPT_ATTRIBUTE, prompt)
        model.register_forward_pre_hook(_prepend_prompt, with_kwargs=True)
        model.register_forward_hook(_drop_prompt_positions, with_kwargs=True)
        train_only(model, "prompt")


def _prepend_prompt(model: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    if args:
        raise TypeError("prompt: call the model with keyword arguments (input_ids=..., attention_mask=...)")
    prompt_module = getattr(model, PROMPT_ATTRIBUTE)
    count = prompt_module.embedding.num_embeddings
    embeds = kwargs.pop("inputs_embeds", None)
    if embeds is None:
        embeds = model.get_input_embeddings()(kwargs.pop("input_ids"))
    batch = embeds.shape[0]
    prompt = prompt_module.embedding.weight.unsqueeze(0).expand(batch, -1, -1).to(embeds.dtype)
    kwargs["inputs_embeds"] = torch.cat([prompt, embeds], dim=1)

    def widen(name: str, fill: int) -> None:
        value = kwargs.get(name)
        if value is not None:
            pad = torch.full((batch, count), fill, dtype=value.dtype, device=value.device)
            kwargs[name] = torch.cat([pad, value], dim=1)

    widen("attention_mask", 1)
    widen("token_type_ids", 0)
    labels = kwargs.get("labels")
    if labels is not None and labels.dim() == 2:  # token labels: the prompt positions are not scored
        widen("labels", -100)
    # QA: the model's loss would softmax over the prompt positions too; it is computed after them instead
    positions = (kwargs.pop("start_positions", None), kwargs.pop("end_positions", None))
    object.__setattr__(model, "xlgap_prompt_positions", positions if positions[0] is not None else None)
    if kwargs.get("position_ids") is not None:
        raise ValueError("prompt: explicit position_ids are not supported (the model numbers the longer sequence itself)")
    return args, kwargs


def _drop_prompt_positions(model: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
    count = getattr(model, PROMPT_ATTRIBUTE).embedding.num_embeddings
    for name in ("start_logits", "end_logits"):
        if getattr(output, name, None) is not None:
            output[name] = output[name][:, count:]
    logits = getattr(output, "logits", None)
    if logits is not None and logits.dim() == 3:  # per-token logits; a sentence's [batch, classes] stay
        output["logits"] = logits[:, count:]
    if getattr(output, "hidden_states", None) is not None:
        output["hidden_states"] = tuple(h[:, count:] for h in output["hidden_states"])
    positions = getattr(model, "xlgap_prompt_positions", None)
    if positions is not None:  # Hugging Face's QA loss, over the input's own positions
        ignored = output["start_logits"].size(1)
        start, end = (p.reshape(-1).clamp(0, ignored) for p in positions)
        loss = nn.CrossEntropyLoss(ignore_index=ignored)
        output["loss"] = (loss(output["start_logits"], start) + loss(output["end_logits"], end)) / 2
    return output

