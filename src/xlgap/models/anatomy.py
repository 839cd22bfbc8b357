"""Where each parameter of an encoder lives, and the selector language that names sets of them.

`model_anatomy(model)` maps every parameter to a transformer block (layer index, or None outside the
blocks) and a component: ``embeddings``, ``attention``, ``ffn``, ``head`` (everything outside the base
model, plus the pooler), ``lora``, ``adapter`` and ``prompt`` (parameters added by parameter-efficient
methods) or
``other``. "Weights" of a layer or component means its weight matrices,
their biases and its LayerNorms (see shared/notes/papers.md, section 1).

Selectors name parameter sets everywhere in xlgap (FSF sets, freezing, re-initialisation, BitFit,
lr scaling)::

    layers[0:10]                    layers 1-10 (Python slices, negative indices allowed)
    layers[0:4].ffn                 '.' intersects: the feed-forward weights of layers 1-4
    layers[-2:].attention           the attention weights of the last two layers
    layers[0:10] - layers[0:4].ffn  '+' (union) and '-' (difference), left to right
    embeddings + head               atoms: layers[i], layers[a:b], embeddings, word_embeddings,
                                    attention, ffn, layernorm, bias, head, lora, adapter, prompt,
                                    other, all

A selector that matches nothing is an error, not a silent no-op. The parser is a small hand-written
tokeniser and recursive-descent parser: nothing in torch, transformers or peft names parameter sets by
layer *and* component with set algebra (peft's `target_modules` is a module-name regex), and a
grammar this size is clearer by hand than through a parser-generator dependency.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from xlgap.utils.errors import UserError

logger = logging.getLogger(__name__)

COMPONENTS = ("embeddings", "attention", "ffn", "head", "lora", "adapter", "prompt", "other")
# Parameters added by parameter-efficient methods, by a segment of their name: peft's LoRA layers and
# xlgap's bottleneck adapters and soft prompts (`xlgap.methods.efficient`) get components of their own.
ADAPTER_ATTRIBUTE = "xlgap_adapter"
PROMPT_ATTRIBUTE = "xlgap_prompt"
_ADDED_PARTS = {
    "lora_A": "lora", "lora_B": "lora", "lora_embedding_A": "lora", "lora_embedding_B": "lora",
    ADAPTER_ATTRIBUTE: "adapter", PROMPT_ATTRIBUTE: "prompt",
}  # fmt: skip

# A transformer block: `encoder.layer.N.` (BERT family, DeBERTa), `transformer.layer.N.` (DistilBERT),
# `layers.N.` (ModernBERT and most newer models).
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")
# First name inside a block -> component.
_BLOCK_PARTS = {
    "attention": "attention",  # BERT family, DistilBERT, DeBERTa (incl. XLM-R XL's pre-attention LN)
    "sa_layer_norm": "attention",  # DistilBERT
    "attn": "attention",  # ModernBERT
    "attn_norm": "attention",  # ModernBERT (pre-LN)
    "intermediate": "ffn",  # BERT family, DeBERTa
    "output": "ffn",  # BERT family, DeBERTa: FFN output dense + its LayerNorm
    "LayerNorm": "ffn",  # XLM-R XL: the pre-FFN LayerNorm of a block
    "ffn": "ffn",  # DistilBERT
    "output_layer_norm": "ffn",  # DistilBERT
    "mlp": "ffn",  # ModernBERT
    "mlp_norm": "ffn",  # ModernBERT (pre-LN)
}
_CONFIG_DEPTH_KEYS = ("num_hidden_layers", "n_layers", "num_layers")
_MAX_LISTED = 20


class SelectorError(UserError, ValueError):
    """A selector that does not parse, names an unknown atom or layer, or matches nothing."""


@dataclass(frozen=True)
class ParamInfo:
    """Where one parameter lives."""

    name: str  # as in model.named_parameters()
    layer: int | None  # transformer block index (0-based), None outside the blocks
    component: str  # one of COMPONENTS
    is_bias: bool
    is_norm: bool  # a LayerNorm (or RMSNorm) weight or bias
    is_word_embeddings: bool  # model.get_input_embeddings().weight
    numel: int


# Atoms other than layers[...]: name -> membership test.
_ATOMS: dict[str, Callable[[ParamInfo], bool]] = {
    "embeddings": lambda p: p.component == "embeddings",
    "word_embeddings": lambda p: p.is_word_embeddings,
    "attention": lambda p: p.component == "attention",
    "ffn": lambda p: p.component == "ffn",
    "layernorm": lambda p: p.is_norm,
    "bias": lambda p: p.is_bias,
    "head": lambda p: p.component == "head",
    "lora": lambda p: p.component == "lora",
    "adapter": lambda p: p.component == "adapter",
    "prompt": lambda p: p.component == "prompt",
    "other": lambda p: p.component == "other",
    "all": lambda p: True,
}
_ATOM_HELP = "layers[i], layers[a:b], " + ", ".join(_ATOMS)


@dataclass(frozen=True)
class Anatomy:
    """The parameters of one model, each with its layer and component."""

    num_layers: int
    params: dict[str, ParamInfo]  # in named_parameters() order
    architecture: str = "model"

    def select(self, selector: str) -> list[str]:
        """Return the names of the parameters `selector` names, in model order.

        Raises SelectorError for a malformed selector, an unknown atom, a layer outside the model, or a
        term (or the whole selector) that matches no parameter of this model.
        """
        chosen = _Parser(selector, self).parse()
        return [name for name in self.params if name in chosen]

    def summary(self) -> str:
        """Return a readable table of parameter counts per layer (rows) and component (columns)."""
        rows: list[int | None] = [*range(self.num_layers), None]
        counts = {(row, c): 0 for row in rows for c in COMPONENTS}
        for p in self.params.values():
            counts[(p.layer, p.component)] += p.numel

        def line(label: str, cells: list[int]) -> str:
            return f"{label:<10}" + "".join(f"{f'{n:,}' if n else '-':>13}" for n in [*cells, sum(cells)])

        lines = [f"{'':<10}" + "".join(f"{c:>13}" for c in [*COMPONENTS, "total"])]
        lines += [
            line("no layer" if row is None else f"layer {row}", [counts[(row, c)] for c in COMPONENTS])
            for row in rows
        ]
        lines.append(line("total", [sum(counts[(row, c)] for row in rows) for c in COMPONENTS]))
        norms = sum(p.numel for p in self.params.values() if p.is_norm)
        biases = sum(p.numel for p in self.params.values() if p.is_bias)
        title = f"{self.architecture}: {self.num_layers} layers; {norms:,} values in LayerNorms, {biases:,} in biases"
        return "\n".join([title, *lines])


def model_anatomy(model: torch.nn.Module) -> Anatomy:
    """Map every parameter of `model` to its layer and component; return the Anatomy.

    The base model (`model.base_model`, found through `base_model_prefix`) holds the body; everything
    outside it is the task head. The depth comes from the config and must agree with the block
    indices found; if it does not, or no blocks are found, the block parameters fall into `other`
    with a warning (layer selectors then match nothing and raise).
    """
    base = getattr(model, "base_model", model)
    prefix = model.base_model_prefix + "." if base is not model else ""
    try:
        word_embeddings = model.get_input_embeddings().weight
    except (AttributeError, NotImplementedError):
        word_embeddings = None

    named = list(model.named_parameters())
    blocks = {}
    for name, _ in named:
        if name.startswith(prefix) and (match := _BLOCK.search(name[len(prefix) :])):
            blocks[name] = (int(match.group(1)), name[len(prefix) + match.end() :].split(".")[0])
    found = {layer for layer, _ in blocks.values()}
    config = getattr(model, "config", None)
    depth = next((getattr(config, key) for key in _CONFIG_DEPTH_KEYS if getattr(config, key, None)), None)
    num_layers = depth if depth is not None else max(found, default=-1) + 1
    if found and found != set(range(num_layers)):
        logger.warning(
            "%s: expected layers 0..%d but found blocks %s; their parameters go to 'other'",
            type(model).__name__,
            num_layers - 1,
            sorted(found),
        )
        blocks = {}

    params, unplaced = {}, []
    for name, param in named:
        owner = model.get_submodule(name.rpartition(".")[0])
        is_word = param is word_embeddings
        layer = None
        if not name.startswith(prefix):
            component = "head"
        elif name in blocks:
            layer, part = blocks[name]
            component = _BLOCK_PARTS.get(part, "other")
        else:
            first = name[len(prefix) :].split(".")[0]
            component = (
                "embeddings" if first.startswith("embed") else "head" if first == "pooler" else "other"
            )
        if is_word:
            component = "embeddings"
        added = next((_ADDED_PARTS[part] for part in name.split(".") if part in _ADDED_PARTS), None)
        if added is not None:
            component = added
        if component == "other" and (layer is not None or not blocks):
            unplaced.append(name)
        params[name] = ParamInfo(
            name=name,
            layer=layer,
            component=component,
            is_bias=name.rpartition(".")[2] == "bias",
            is_norm=type(owner).__name__.endswith(("LayerNorm", "RMSNorm")),
            is_word_embeddings=is_word,
            numel=param.numel(),
        )
    if unplaced:
        listed = ", ".join(unplaced[:_MAX_LISTED])
        more = f" and {len(unplaced) - _MAX_LISTED} more" if len(unplaced) > _MAX_LISTED else ""
        logger.warning(
            "%s: parameters not recognised, put in 'other': %s%s", type(model).__name__, listed, more
        )
    return Anatomy(num_layers=num_layers, params=params, architecture=type(model).__name__)


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "int", "end", or the punctuation character itself
    text: str
    pos: int


_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)|(?P<int>\d+)|(?P<punct>[-+.\[\]:]))")


class _Parser:
    """expression := term (('+' | '-') term)* ; term := atom ('.' atom)* ;
    atom := NAME | 'layers' '[' (int | [int] ':' [int]) ']' ; int := ['-'] DIGITS"""

    def __init__(self, selector: str, anatomy: Anatomy):
        self.selector, self.anatomy = selector, anatomy
        self.tokens: list[_Token] = []
        pos = 0
        while selector[pos:].strip():
            match = _TOKEN.match(selector, pos)
            if match is None:
                bad = len(selector) - len(selector[pos:].lstrip())
                raise self.error(bad, f"unexpected character {selector[bad]!r}")
            kind = match.lastgroup
            text = match.group(kind)
            self.tokens.append(_Token(text if kind == "punct" else kind, text, match.start(kind)))
            pos = match.end()
        self.tokens.append(_Token("end", "", len(selector)))
        self.i = 0

    def error(self, pos: int, message: str) -> SelectorError:
        return SelectorError(f"selector {self.selector!r}: {message}\n    {self.selector}\n    {' ' * pos}^")

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self, kind: str, expected: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            found = "the end" if token.kind == "end" else repr(token.text)
            raise self.error(token.pos, f"expected {expected}, found {found}")
        self.i += 1
        return token

    def parse(self) -> set[str]:
        if self.peek().kind == "end":
            raise self.error(0, "empty selector")
        chosen = self.term()
        while self.peek().kind in ("+", "-"):
            op = self.take(self.peek().kind, "'+' or '-'")
            if self.peek().kind == "end":
                raise self.error(op.pos, f"dangling {op.text!r}: expected a term after it")
            right = self.term()
            chosen = chosen | right if op.kind == "+" else chosen - right
        self.take("end", "'+', '-', '.' or the end")
        if not chosen:
            raise self.error(0, f"the selector matches no parameter of this {self.anatomy.architecture}")
        return chosen

    def term(self) -> set[str]:
        start = self.peek().pos
        chosen, empty_atoms = self.atom()
        while self.peek().kind == ".":
            self.take(".", "'.'")
            names, empty = self.atom()
            chosen &= names
            empty_atoms += empty
        if not chosen:
            text = self.selector[start : self.tokens[self.i - 1].pos + len(self.tokens[self.i - 1].text)]
            why = (
                f" ({', '.join(empty_atoms)} matches none)" if empty_atoms else " (its atoms do not overlap)"
            )
            raise self.error(start, f"{text!r} matches no parameter of this {self.anatomy.architecture}{why}")
        return chosen

    def atom(self) -> tuple[set[str], list[str]]:
        """Return the parameter names of the next atom, and [its text] if that set is empty."""
        token = self.take("name", f"an atom ({_ATOM_HELP})")
        params = self.anatomy.params.values()
        if token.text == "layers":
            layers = self.layers(token)
            names = {p.name for p in params if p.layer in layers}
            text = self.selector[token.pos : self.tokens[self.i - 1].pos + 1]
        elif token.text in _ATOMS:
            names = {p.name for p in params if _ATOMS[token.text](p)}
            text = token.text
        else:
            close = difflib.get_close_matches(token.text, ["layers", *_ATOMS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.error(token.pos, f"unknown atom {token.text!r}{hint} (valid atoms: {_ATOM_HELP})")
        return names, ([] if names else [repr(text)])

    def layers(self, token: _Token) -> set[int]:
        """Parse `[i]` or `[a:b]` after 'layers'; return the layer indices it names."""
        n = self.anatomy.num_layers
        if self.peek().kind != "[":
            raise self.error(
                self.peek().pos, "'layers' needs an index or a slice: layers[i], layers[a:b], layers[-2:]"
            )
        self.take("[", "'['")
        start = self.integer()
        if self.peek().kind != ":":
            if start is None:
                raise self.error(self.peek().pos, "expected a layer index or a slice a:b")
            self.take("]", "']'")
            if not -n <= start[0] < n:
                raise self.error(
                    start[1],
                    f"layer index {start[0]} is outside this {n}-layer model (0..{n - 1}, or -{n}..-1 from the end)",
                )
            return {range(n)[start[0]]}
        self.take(":", "':'")
        stop = self.integer()
        if self.peek().kind == ":":
            raise self.error(self.peek().pos, "a step in a layer slice is not supported")
        self.take("]", "']'")
        for bound in (start, stop):
            if bound is not None and not -n <= bound[0] <= n:
                raise self.error(
                    bound[1], f"slice bound {bound[0]} is outside this {n}-layer model ({-n}..{n})"
                )
        chosen = set(range(n)[None if start is None else start[0] : None if stop is None else stop[0]])
        if not chosen:
            raise self.error(token.pos, f"this slice selects no layer of this {n}-layer model")
        return chosen

    def integer(self) -> tuple[int, int] | None:
        """Parse an optional signed integer; return (value, position) or None."""
        token = self.peek()
        if token.kind == "-":
            self.i += 1
            return -int(self.take("int", "a digit after '-'").text), token.pos
        if token.kind == "int":
            self.i += 1
            return int(token.text), token.pos
        return None
