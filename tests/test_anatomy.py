"""Anatomy (parameter -> layer, component) and the selector language, on tiny random models."""

from __future__ import annotations

import logging
from functools import cache

import pytest
import torch
import transformers as tf

from xlgap.models.anatomy import COMPONENTS, ParamInfo, SelectorError, model_anatomy

LAYERS = 4
SIZES = dict(
    vocab_size=100, hidden_size=16, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=32
)
CONFIGS = {
    "bert": lambda: tf.BertConfig(**SIZES, max_position_embeddings=64),
    "xlmr": lambda: tf.XLMRobertaConfig(**SIZES, max_position_embeddings=64),
    "roberta": lambda: tf.RobertaConfig(**SIZES, max_position_embeddings=64),
    "distilbert": lambda: tf.DistilBertConfig(
        vocab_size=100, dim=16, n_layers=LAYERS, n_heads=2, hidden_dim=32, max_position_embeddings=64
    ),
    "electra": lambda: tf.ElectraConfig(**SIZES, embedding_size=8, max_position_embeddings=64),
    "deberta": lambda: tf.DebertaV2Config(
        **SIZES,
        max_position_embeddings=64,
        relative_attention=True,
        position_buckets=8,
        pos_att_type=["p2c", "c2p"],
        share_att_key=False,
        conv_kernel_size=3,
        norm_rel_ebd="layer_norm",
    ),
}
HEADS = {
    "bert": (tf.BertForTokenClassification, tf.BertForSequenceClassification),
    "xlmr": (tf.XLMRobertaForTokenClassification, tf.XLMRobertaForSequenceClassification),
    "roberta": (tf.RobertaForTokenClassification, tf.RobertaForSequenceClassification),
    "distilbert": (tf.DistilBertForTokenClassification, tf.DistilBertForSequenceClassification),
    "electra": (tf.ElectraForTokenClassification, tf.ElectraForSequenceClassification),
    "deberta": (tf.DebertaV2ForTokenClassification, tf.DebertaV2ForSequenceClassification),
}
CASES = [(arch, head) for arch in CONFIGS for head in ("token", "sequence")]


@cache
def build(arch: str, head: str) -> torch.nn.Module:
    torch.manual_seed(0)
    token_cls, sequence_cls = HEADS[arch]
    return (token_cls if head == "token" else sequence_cls)(CONFIGS[arch]())


@cache
def anatomy(arch: str, head: str):
    return model_anatomy(build(arch, head))


def names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


@pytest.mark.parametrize(("arch", "head"), CASES)
def test_every_parameter_is_mapped_and_blocks_are_recognised(arch, head, caplog):
    model = build(arch, head)
    with caplog.at_level(logging.WARNING, logger="xlgap.models.anatomy"):
        anat = model_anatomy(model)
    assert caplog.records == []
    assert anat.num_layers == LAYERS
    assert list(anat.params) == names(model)
    assert {p.component for p in anat.params.values()} <= set(COMPONENTS)
    in_blocks = [p for p in anat.params.values() if p.layer is not None]
    assert {p.layer for p in in_blocks} == set(range(LAYERS))
    assert {p.component for p in in_blocks} == {"attention", "ffn"}
    assert all(p.numel == dict(model.named_parameters())[p.name].numel() for p in anat.params.values())


@pytest.mark.parametrize(("arch", "head"), CASES)
def test_all_and_the_partition(arch, head):
    anat = anatomy(arch, head)
    every = list(anat.params)
    assert anat.select("all") == every
    # `other` is non-empty only for DeBERTa-v2 (relative embeddings, encoder LayerNorm, conv); elsewhere
    # it matches nothing and is therefore an error (see ERRORS).
    terms = ["embeddings", "layers[0:]", "head"] + (["other"] if arch == "deberta" else [])
    parts = [anat.select(term) for term in terms]
    assert sorted(n for part in parts for n in part) == sorted(every)  # no overlap, nothing missing
    assert anat.select(" + ".join(terms)) == every


@pytest.mark.parametrize(("arch", "head"), CASES)
def test_word_embeddings_is_exactly_the_input_embedding_matrix(arch, head):
    model, anat = build(arch, head), anatomy(arch, head)
    (name,) = anat.select("word_embeddings")
    assert dict(model.named_parameters())[name] is model.get_input_embeddings().weight
    assert anat.params[name].component == "embeddings"


EXPECTED = [
    # (arch, head, parameter, layer, component, is_bias, is_norm)
    ("bert", "token", "bert.embeddings.word_embeddings.weight", None, "embeddings", False, False),
    ("bert", "token", "bert.embeddings.token_type_embeddings.weight", None, "embeddings", False, False),
    ("bert", "token", "bert.embeddings.LayerNorm.bias", None, "embeddings", True, True),
    ("bert", "token", "bert.encoder.layer.0.attention.self.query.weight", 0, "attention", False, False),
    ("bert", "token", "bert.encoder.layer.1.attention.output.dense.bias", 1, "attention", True, False),
    ("bert", "token", "bert.encoder.layer.1.attention.output.LayerNorm.weight", 1, "attention", False, True),
    ("bert", "token", "bert.encoder.layer.2.intermediate.dense.weight", 2, "ffn", False, False),
    ("bert", "token", "bert.encoder.layer.3.output.dense.weight", 3, "ffn", False, False),
    ("bert", "token", "bert.encoder.layer.3.output.LayerNorm.bias", 3, "ffn", True, True),
    ("bert", "token", "classifier.weight", None, "head", False, False),
    ("bert", "sequence", "bert.pooler.dense.weight", None, "head", False, False),
    ("bert", "sequence", "classifier.bias", None, "head", True, False),
    ("xlmr", "token", "roberta.embeddings.position_embeddings.weight", None, "embeddings", False, False),
    ("xlmr", "token", "roberta.encoder.layer.3.attention.self.value.bias", 3, "attention", True, False),
    ("xlmr", "token", "roberta.encoder.layer.0.output.LayerNorm.weight", 0, "ffn", False, True),
    ("xlmr", "sequence", "classifier.dense.weight", None, "head", False, False),
    ("xlmr", "sequence", "classifier.out_proj.bias", None, "head", True, False),
    (
        "roberta",
        "sequence",
        "roberta.encoder.layer.2.attention.output.LayerNorm.bias",
        2,
        "attention",
        True,
        True,
    ),
    ("distilbert", "token", "distilbert.embeddings.LayerNorm.weight", None, "embeddings", False, True),
    (
        "distilbert",
        "token",
        "distilbert.transformer.layer.0.attention.q_lin.weight",
        0,
        "attention",
        False,
        False,
    ),
    (
        "distilbert",
        "token",
        "distilbert.transformer.layer.1.attention.out_lin.bias",
        1,
        "attention",
        True,
        False,
    ),
    (
        "distilbert",
        "token",
        "distilbert.transformer.layer.1.sa_layer_norm.weight",
        1,
        "attention",
        False,
        True,
    ),
    ("distilbert", "token", "distilbert.transformer.layer.2.ffn.lin1.weight", 2, "ffn", False, False),
    ("distilbert", "token", "distilbert.transformer.layer.3.ffn.lin2.bias", 3, "ffn", True, False),
    ("distilbert", "token", "distilbert.transformer.layer.3.output_layer_norm.bias", 3, "ffn", True, True),
    ("distilbert", "sequence", "pre_classifier.weight", None, "head", False, False),
    ("electra", "token", "electra.embeddings_project.weight", None, "embeddings", False, False),
    ("electra", "token", "electra.encoder.layer.1.attention.self.key.weight", 1, "attention", False, False),
    ("electra", "sequence", "classifier.out_proj.weight", None, "head", False, False),
    ("deberta", "token", "deberta.embeddings.LayerNorm.weight", None, "embeddings", False, True),
    (
        "deberta",
        "token",
        "deberta.encoder.layer.0.attention.self.query_proj.weight",
        0,
        "attention",
        False,
        False,
    ),
    (
        "deberta",
        "token",
        "deberta.encoder.layer.0.attention.self.pos_key_proj.bias",
        0,
        "attention",
        True,
        False,
    ),
    ("deberta", "token", "deberta.encoder.layer.2.output.LayerNorm.weight", 2, "ffn", False, True),
    ("deberta", "token", "deberta.encoder.rel_embeddings.weight", None, "other", False, False),
    ("deberta", "token", "deberta.encoder.LayerNorm.weight", None, "other", False, True),
    ("deberta", "token", "deberta.encoder.conv.conv.weight", None, "other", False, False),
    ("deberta", "sequence", "pooler.dense.weight", None, "head", False, False),
]


@pytest.mark.parametrize(("arch", "head", "name", "layer", "component", "is_bias", "is_norm"), EXPECTED)
def test_expected_place_of_named_parameters(arch, head, name, layer, component, is_bias, is_norm):
    info = anatomy(arch, head).params[name]
    assert (info.layer, info.component, info.is_bias, info.is_norm) == (layer, component, is_bias, is_norm)


BERT_ATTENTION = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
]
BERT_FFN = [
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
]


def bert_block(layers, suffixes=BERT_ATTENTION + BERT_FFN):
    return [f"bert.encoder.layer.{i}.{s}" for i in layers for s in suffixes]


def test_paper_selectors_on_a_four_layer_model():
    anat = anatomy("bert", "token")
    assert anat.select("layers[0:3]") == bert_block([0, 1, 2])  # S1 shape: all but the last layers
    assert anat.select("layers[:-1]") == bert_block([0, 1, 2])
    assert anat.select("layers[0:2].ffn") == bert_block([0, 1], BERT_FFN)  # S2 shape
    assert anat.select("layers[-2:]") == bert_block([2, 3])  # V1: all weights of the last two layers
    assert anat.select("layers[-2:].attention") == bert_block([2, 3], BERT_ATTENTION)  # V2
    assert anat.select("layers[-1]") == anat.select("layers[3]") == bert_block([3])
    assert anat.select("layers[1:-1]") == bert_block([1, 2])


def test_union_difference_intersection_left_to_right():
    anat = anatomy("bert", "sequence")
    embeddings = [n for n in anat.params if n.startswith("bert.embeddings.")]
    head = ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]
    assert anat.select("embeddings") == embeddings
    assert anat.select("head") == head
    assert anat.select("embeddings + head") == embeddings + head
    assert anat.select("head+embeddings") == embeddings + head  # always model order
    assert anat.select("layers[0:3] - layers[0:2].ffn") == bert_block([0, 1], BERT_ATTENTION) + bert_block(
        [2]
    )
    assert anat.select("head + embeddings - head") == embeddings  # left to right, no precedence
    assert anat.select("head - head + embeddings") == embeddings
    assert anat.select("attention.layernorm") == bert_block(range(LAYERS), BERT_ATTENTION[-2:])
    assert anat.select("layers[1].ffn.bias") == bert_block([1], [s for s in BERT_FFN if s.endswith("bias")])
    assert anat.select("  layers [ -2 : ] . attention ") == anat.select("layers[-2:].attention")


@pytest.mark.parametrize(("arch", "head"), CASES)
def test_bias_and_layernorm(arch, head):
    model, anat = build(arch, head), anatomy(arch, head)
    assert anat.select("bias") == [n for n in names(model) if n.endswith(".bias")]
    norms = {
        f"{module_name}.{p}"
        for module_name, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for p, _ in module.named_parameters()
    }
    assert set(anat.select("layernorm")) == norms
    assert len(norms) == 2 * (2 * LAYERS + 1) + (4 if arch == "deberta" else 0)  # + encoder and conv LN


def test_distilbert_layernorms_are_attention_and_ffn():
    anat = anatomy("distilbert", "token")
    assert anat.select("layers[0].layernorm") == [
        "distilbert.transformer.layer.0.sa_layer_norm.weight",
        "distilbert.transformer.layer.0.sa_layer_norm.bias",
        "distilbert.transformer.layer.0.output_layer_norm.weight",
        "distilbert.transformer.layer.0.output_layer_norm.bias",
    ]
    assert (
        anat.select("layers[0].ffn.layernorm")[0] == "distilbert.transformer.layer.0.output_layer_norm.weight"
    )


def test_headless_base_model():
    config = CONFIGS["bert"]()
    with_pooler = model_anatomy(tf.BertModel(config))
    assert with_pooler.select("head") == ["pooler.dense.weight", "pooler.dense.bias"]
    assert with_pooler.params["encoder.layer.0.attention.output.LayerNorm.weight"].component == "attention"
    bare = model_anatomy(tf.BertModel(config, add_pooling_layer=False))
    assert bare.select("all") == bare.select("embeddings + layers[0:]")
    with pytest.raises(SelectorError, match=r"'head' matches no parameter of this BertModel"):
        bare.select("embeddings + head")


def test_other_generic_layer_naming_modernbert_and_xlmr_xl():
    modern = model_anatomy(
        tf.ModernBertForSequenceClassification(
            tf.ModernBertConfig(
                **SIZES, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2
            )
        )
    )
    assert modern.num_layers == LAYERS
    place = {n: (p.layer, p.component) for n, p in modern.params.items()}
    assert place["model.embeddings.tok_embeddings.weight"] == (None, "embeddings")
    assert place["model.layers.1.attn_norm.weight"] == (1, "attention")
    assert place["model.layers.1.attn.Wqkv.weight"] == (1, "attention")
    assert place["model.layers.2.mlp_norm.weight"] == (2, "ffn")
    assert place["model.layers.2.mlp.Wo.weight"] == (2, "ffn")
    assert place["model.final_norm.weight"] == (None, "other")
    assert place["head.norm.weight"] == (None, "head")
    xl = model_anatomy(tf.XLMRobertaXLForTokenClassification(tf.XLMRobertaXLConfig(**SIZES)))
    assert xl.params["roberta.encoder.layer.0.attention.self_attn_layer_norm.weight"].component == "attention"
    assert xl.params["roberta.encoder.layer.0.LayerNorm.weight"].component == "ffn"  # pre-FFN LN
    assert xl.params["roberta.encoder.LayerNorm.weight"].component == "other"


class ToyBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.Linear(4, 4)
        self.mixer = torch.nn.Linear(4, 4)  # not a known component


class Toy(torch.nn.Module):
    """An unknown architecture with `layers.N` naming and no config."""

    def __init__(self, blocks: str = "layers"):
        super().__init__()
        self.wte = torch.nn.Embedding(10, 4)
        setattr(self, blocks, torch.nn.ModuleList([ToyBlock(), ToyBlock()]))
        self.norm = torch.nn.LayerNorm(4)

    def get_input_embeddings(self):
        return self.wte


def test_unknown_architecture_keeps_layers_and_warns_about_the_rest(caplog):
    with caplog.at_level(logging.WARNING, logger="xlgap.models.anatomy"):
        anat = model_anatomy(Toy())
    assert anat.num_layers == 2
    assert anat.params["wte.weight"].component == "embeddings"
    assert anat.params["layers.1.attn.weight"] == ParamInfo(
        "layers.1.attn.weight", 1, "attention", False, False, False, 16
    )
    assert (anat.params["layers.1.mixer.bias"].layer, anat.params["layers.1.mixer.bias"].component) == (
        1,
        "other",
    )
    assert anat.params["norm.weight"].is_norm and anat.params["norm.weight"].component == "other"
    assert anat.select("layers[1]") == [
        "layers.1.attn.weight",
        "layers.1.attn.bias",
        "layers.1.mixer.weight",
        "layers.1.mixer.bias",
    ]
    (record,) = caplog.records
    assert "layers.0.mixer.weight" in record.message and "layers.1.mixer.bias" in record.message
    assert "norm.weight" not in record.message
    with pytest.raises(
        SelectorError, match=r"'layers\[0:2\]\.ffn' matches no parameter of this Toy \('ffn' matches none\)"
    ):
        anat.select("layers[0:2].ffn")


def test_no_blocks_found_puts_everything_in_other(caplog):
    with caplog.at_level(logging.WARNING, logger="xlgap.models.anatomy"):
        anat = model_anatomy(Toy(blocks="stack"))
    assert anat.num_layers == 0
    assert {p.component for p in anat.params.values()} == {"embeddings", "other"}
    assert "stack.0.attn.weight" in caplog.text and "norm.weight" in caplog.text
    with pytest.raises(SelectorError, match="outside this 0-layer model"):
        anat.select("layers[0]")


def test_config_depth_disagreeing_with_blocks_falls_back_to_other(caplog):
    model = tf.BertModel(CONFIGS["bert"](), add_pooling_layer=False)
    model.config.num_hidden_layers = 6
    with caplog.at_level(logging.WARNING, logger="xlgap.models.anatomy"):
        anat = model_anatomy(model)
    assert "expected layers 0..5 but found blocks [0, 1, 2, 3]" in caplog.text
    assert anat.params["encoder.layer.0.output.dense.weight"].component == "other"
    with pytest.raises(SelectorError, match="matches no parameter"):
        anat.select("layers[0:2]")


ERRORS = [
    ("ffm", "unknown atom 'ffm'; did you mean 'ffn'?", 0),
    ("layer[0:2]", "unknown atom 'layer'; did you mean 'layers'?", 0),
    ("embeddings + heads", "did you mean 'head'?", 13),
    ("xyzzy", "valid atoms: layers[i], layers[a:b], embeddings, word_embeddings, attention, ffn", 0),
    ("layers", "'layers' needs an index or a slice", 6),
    ("layers[a:2]", "expected a layer index or a slice a:b", 7),
    ("layers[0:2", "expected ']', found the end", 10),
    ("layers[1:-]", "expected a digit after '-'", 10),
    ("layers[]", "expected a layer index or a slice", 7),
    ("layers[0:4:2]", "a step in a layer slice is not supported", 10),
    ("layers[0:2]..ffn", "expected an atom", 12),
    ("+ head", "expected an atom", 0),
    ("head + - ffn", "expected an atom", 7),
    ("head -", "dangling '-': expected a term after it", 5),
    ("head ffn", "expected '+', '-', '.' or the end, found 'ffn'", 5),
    ("ffn[0]", "expected '+', '-', '.' or the end, found '['", 3),
    ("head * ffn", "unexpected character '*'", 5),
    ("", "empty selector", 0),
    ("layers[4]", "layer index 4 is outside this 4-layer model (0..3, or -4..-1 from the end)", 7),
    ("layers[-5]", "layer index -5 is outside this 4-layer model", 7),
    ("layers[0:10]", "slice bound 10 is outside this 4-layer model (-4..4)", 9),
    ("layers[-6:]", "slice bound -6 is outside this 4-layer model", 7),
    ("layers[3:1]", "this slice selects no layer", 0),
    (
        "ffn + head.layers[0]",
        "'head.layers[0]' matches no parameter of this BertForTokenClassification (its atoms do not overlap)",
        6,
    ),
    ("other", "'other' matches no parameter", 0),
    ("bias - bias", "the selector matches no parameter", 0),
]


@pytest.mark.parametrize(("selector", "message", "pos"), ERRORS)
def test_selector_errors_quote_the_selector_and_point_at_the_problem(selector, message, pos):
    with pytest.raises(SelectorError) as caught:
        anatomy("bert", "token").select(selector)
    first, quoted, caret = str(caught.value).split("\n")
    assert first.startswith(f"selector {selector!r}: ")
    assert message in first
    assert quoted == f"    {selector}"
    assert caret == " " * (4 + pos) + "^"


def test_summary_counts_per_layer_and_component():
    anat = anatomy("bert", "sequence")
    lines = anat.summary().splitlines()
    assert lines[0].startswith("BertForSequenceClassification: 4 layers;")
    assert lines[1].split() == [*COMPONENTS, "total"]
    rows = {line.split()[0] + line.split()[1]: line.split()[2:] for line in lines[2:-1]}
    assert list(rows) == ["layer0", "layer1", "layer2", "layer3", "nolayer"]
    attention = sum(anat.params[n].numel for n in anat.select("layers[2].attention"))
    assert rows["layer2"][1] == f"{attention:,}"
    assert lines[-1].split()[-1] == f"{sum(p.numel for p in anat.params.values()):,}"
