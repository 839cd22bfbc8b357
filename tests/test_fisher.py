"""The diagonal Fisher (per-example, not of a batch mean), its estimators, the MLM head fitted where a
model has none, the Fisher file, EWC's penalty, the Fréchet distance and its correlation with scores."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
from typer.testing import CliRunner

from tiny import SPECIALS, WORDS, tiny_bert, write_tiny_udpos
from xlgap.analysis.fisher import (
    FisherError,
    compute_fisher,
    correlations,
    diagonal_fisher,
    frechet_distance,
    frechet_rows,
    mask_tokens,
)
from xlgap.cli import app
from xlgap.methods import EWC, PrepareContext
from xlgap.methods.base import ReferenceWeights
from xlgap.methods.fisher_file import Fisher

runner = CliRunner()


def tiny_mlm(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=48, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return BertForMaskedLM(config).eval()


def examples(n=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 48, (8,), generator=generator)
        special = torch.zeros(8, dtype=torch.bool)
        special[0] = special[-1] = True
        out.append(mask_tokens(ids, special, mask_id=4, generator=generator))
    return out


def test_fisher_is_the_mean_of_squared_per_example_gradients_not_the_square_of_a_mean():
    model, data = tiny_mlm(), examples()
    ours = diagonal_fisher(model, data, select="all - head")
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    grads = []
    for ids, labels in data:  # brute force, one example at a time
        model.zero_grad()
        model(input_ids=ids[None], labels=labels[None]).loss.backward()
        grads.append(dict(model.named_parameters())[name].grad.clone())
    expected = torch.stack([g**2 for g in grads]).mean(0)
    assert torch.allclose(ours[name], expected, rtol=1e-5, atol=0)
    squared_mean = torch.stack(grads).mean(0) ** 2  # the mistake: it shrinks as batches grow
    assert ours[name].sum() > 1.5 * squared_mean.sum()
    assert "cls.predictions.transform.dense.weight" not in ours  # the head is not part of it


def test_the_two_estimators_differ_and_are_seeded():
    model, data = tiny_mlm(), examples()
    empirical = diagonal_fisher(model, data, estimator="empirical")
    sampled = diagonal_fisher(model, data, estimator="sampled", seed=3)
    again = diagonal_fisher(model, data, estimator="sampled", seed=3)
    name = "bert.encoder.layer.1.attention.self.query.weight"
    assert not torch.allclose(empirical[name], sampled[name], rtol=1e-2, atol=0) and torch.equal(sampled[name], again[name])
    with pytest.raises(FisherError, match="estimator: expected one of empirical, sampled"):
        diagonal_fisher(model, data, estimator="exact")


def tokenizer_with_mask():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS + ["<mask>"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>")  # fmt: skip


def masked_tiny_model(folder):
    """The tiny BERT encoder (no MLM head) with one more token in its vocabulary, <mask>, and its tokenizer."""
    from transformers import BertModel

    config = tiny_bert().config
    config.vocab_size += 1
    BertModel(config).save_pretrained(folder)
    tokenizer_with_mask().save_pretrained(folder)
    return str(folder)


def test_a_model_without_an_mlm_head_gets_one_fitted(tmp_path):
    folder = masked_tiny_model(tmp_path / "encoder")
    tokenizer = tokenizer_with_mask()
    texts = [" ".join(f"w{(i * 7 + j) % 40}" for j in range(6)) for i in range(20)]
    fisher = compute_fisher(str(folder), tokenizer, texts, "de", "test texts", head_steps=30)
    assert fisher.provenance["head"].startswith("masked-LM head tied to the word embeddings, fitted for 30 updates")
    assert fisher.provenance["examples"] == 20 and fisher.provenance["estimator"] == "empirical"
    assert all(t.min() >= 0 for t in fisher.tensors.values()) and any(t.sum() > 0 for t in fisher.tensors.values())
    fisher.save(tmp_path / "de.safetensors")
    back = Fisher.load(tmp_path / "de.safetensors")
    assert back.provenance == fisher.provenance and all(torch.equal(back.tensors[k], v) for k, v in fisher.tensors.items())
    from tiny import tiny_tokenizer

    with pytest.raises(FisherError, match="no mask token"):
        compute_fisher(str(folder), tiny_tokenizer(), texts, "de", "test texts")


def test_fisher_files_that_are_not_fishers(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FisherError, match="no such Fisher file"):
        Fisher.load(tmp_path / "none.safetensors")
    save_file({"a": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(FisherError, match="not a Fisher written by `xlgap fisher`"):
        Fisher.load(tmp_path / "plain.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(FisherError, match="not a safetensors file"):
        Fisher.load(tmp_path / "text.safetensors")


def test_frechet_distance_on_hand_made_fishers():
    a = Fisher({"w": torch.tensor([1.0, 3.0])}, {})
    b = Fisher({"w": torch.tensor([3.0, 1.0])}, {})
    # normalised: (0.25, 0.75) and (0.75, 0.25); d^2 = 1/2 * 2 * (sqrt(.75) - sqrt(.25))^2
    expected = (0.75**0.5 - 0.5) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected)
    assert frechet_distance(a, a) == 0.0
    assert frechet_distance(a, Fisher({"w": torch.tensor([10.0, 30.0])}, {})) == pytest.approx(0.0)  # scale-free
    rows = frechet_rows({"en": a, "de": b, "fr": a}, "en")
    assert rows == [("de", pytest.approx(expected)), ("fr", 0.0)]
    stats = correlations({"de": 0.1, "fr": 0.2, "zh": 0.4, "ar": 0.3}, {"de": 80, "fr": 75, "zh": 50, "ar": 60})
    assert stats["spearman"] == pytest.approx(-1.0) and stats["pearson"] < -0.95 and stats["languages"] == ["ar", "de", "fr", "zh"]
    with pytest.raises(FisherError, match="at least 3 languages"):
        correlations({"de": 0.1}, {"de": 80})


def test_ewc_penalty_is_the_fisher_weighted_distance(tmp_path):
    model = tiny_bert(seed=4)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    weights = torch.rand_like(dict(model.named_parameters())[name])
    Fisher({name: weights}, {"language": "fr"}).save(tmp_path / "fr.safetensors")
    Fisher({name: 2 * weights}, {"language": "en"}).save(tmp_path / "en.safetensors")
    for files, factor in (([str(tmp_path / "fr.safetensors")], 1.0), ([str(tmp_path / "fr.safetensors"), str(tmp_path / "en.safetensors")], 3.0)):
        ewc = EWC(fisher=files, strength=0.5)
        references = ReferenceWeights.capture(model, ewc.reference_parameters(model))
        ewc.prepare(model, PrepareContext(references=references))
        assert float(ewc.penalty(model)) == 0.0
        with torch.no_grad():
            param = dict(model.named_parameters())[name]
            start = references.tensors[name].clone()
            param.add_(0.1)
        expected = 0.5 * 0.5 * factor * float((weights * (param.detach() - start) ** 2).sum())
        assert float(ewc.penalty(model)) == pytest.approx(expected, rel=1e-5)
        with torch.no_grad():
            param.copy_(start)
    Fisher({"not.a.parameter": weights}, {"language": "de"}).save(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="not parameters of this model"):
        EWC(fisher=str(tmp_path / "bad.safetensors")).reference_parameters(model)


def test_fisher_and_fisher_distance_commands(tmp_path):
    model = masked_tiny_model(tmp_path / "model")
    data = write_tiny_udpos(tmp_path / "data", languages=("en", "de", "fr"))
    written = []
    for lang in ("en", "de", "fr"):
        out = tmp_path / f"fisher-{lang}.safetensors"
        result = runner.invoke(app, ["fisher", model, "--lang", lang, "--from-data", "udpos", "--data-dir", data,
                                     "--examples", "12", "--head-steps", "10", "-o", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert Fisher.load(out).provenance["source"].endswith(f"udpos/dev-{lang}.tsv")
        written.append(str(out))
    text = tmp_path / "de.txt"
    text.write_text("w1 w2 w3\n\nw4 w5\n")
    assert runner.invoke(app, ["fisher", model, "--lang", "de", "--text", str(text), "--head-steps", "5", "-o", str(tmp_path / "t.safetensors")]).exit_code == 0
    assert Fisher.load(tmp_path / "t.safetensors").provenance["examples"] == 2
    result = runner.invoke(app, ["fisher-distance", *written, "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    distances = json.loads((tmp_path / "rep" / "frechet.json").read_text())["distances"]
    assert set(distances) == {"de", "fr"} and all(d > 0 for d in distances.values())
    bad = runner.invoke(app, ["fisher", model, "--lang", "de", "-o", str(tmp_path / "x.safetensors")])
    assert bad.exit_code == 2 and "give exactly one of --text FILE, --from-data TASK or --hub" in bad.output
    bad = runner.invoke(app, ["fisher-distance", written[1], written[2], "--reference", "en"])
    assert bad.exit_code == 2 and "no Fisher of the reference language 'en'" in bad.output


def test_ewc_with_a_fisher_per_target_trains_one_model_per_target(tmp_path):
    """The paper's EWC: one model per target language, each with that language's Fisher and scored on
    that language; a source's score is the mean over the models; the table says so."""
    from tiny import write_tiny_model
    from xlgap.config import ConfigError, config_from_dict
    from xlgap.results import load_run
    from xlgap.train.run import run_experiment

    model_dir, data = write_tiny_model(tmp_path / "model"), write_tiny_udpos(tmp_path / "data")
    shapes = {n: p.shape for n, p in tiny_bert(num_labels=17).named_parameters() if ".layer." in n}
    fishers = {}
    for i, lang in enumerate(("de", "fr")):
        generator = torch.Generator().manual_seed(i)
        fishers[lang] = str(tmp_path / f"{lang}.safetensors")
        Fisher({n: 50 * torch.rand(s, generator=generator) for n, s in shapes.items()}, {"language": lang}).save(fishers[lang])

    def config(name, fisher, targets=None):
        return config_from_dict({
            "name": name, "output_dir": str(tmp_path / "runs"), "seeds": [1], "model": {"name": model_dir},
            "data": {"task": "udpos", "dir": data, "target_languages": targets, "max_length": 16},
            "methods": [{"name": "ewc", "fisher": fisher, "strength": 10.0}],
            "train": {"learning_rate": 3e-3, "epochs": 2, "batch_size": 4}, "eval": {"every": 6, "probe_examples": 10},
        })  # fmt: skip

    run_experiment(config("per-target", fishers))
    run_dir = tmp_path / "runs" / "per-target"
    merged = json.loads((run_dir / "seed-1" / "results.json").read_text())
    parts = {lang: json.loads((run_dir / f"target-{lang}" / "seed-1" / "results.json").read_text()) for lang in fishers}
    assert merged["targets"] == ["de", "fr"] and all(p["targets"] == [lang] for lang, p in parts.items())
    for lang in fishers:
        assert merged["test"]["scores"][lang] == parts[lang]["test"]["scores"][lang]
        assert merged["best_step"][lang] == parts[lang]["best_step"]
    assert merged["test"]["scores"]["en"] == pytest.approx((parts["de"]["test"]["scores"]["en"] + parts["fr"]["test"]["scores"]["en"]) / 2)
    assert merged["test"]["target_avg"] == pytest.approx((merged["test"]["scores"]["de"] + merged["test"]["scores"]["fr"]) / 2)
    assert "one model per target language" in (run_dir / "summary.md").read_text()
    # each model is exactly a run with that language's Fisher: the same scores as that run on its own
    alone = run_experiment(config("fr-alone", fishers["fr"], ["fr"]))
    assert alone["test"]["metrics"]["accuracy"]["scores"]["fr"]["mean"] == parts["fr"]["test"]["scores"]["fr"]
    assert [m["fisher"] for m in parts["de"]["methods"]] == [fishers["de"]]  # each model got its own language's Fisher
    from xlgap.report.tables import comparison

    assert "one model per target language" in comparison([load_run(run_dir)]).target_note()
    # resuming a finished per-target run trains nothing again
    stamp = (run_dir / "target-de" / "seed-1" / "results.json").stat().st_mtime_ns
    run_experiment(config("per-target", fishers), resume=True)
    assert (run_dir / "target-de" / "seed-1" / "results.json").stat().st_mtime_ns == stamp
    # targets that do not match the Fishers are refused before any folder is written
    with pytest.raises(ConfigError, match=r"methods.0.fisher: one Fisher per target language; data.target_languages \['de'\] does not list \['fr'\]"):
        run_experiment(config("mismatch", fishers, ["de"]))
    assert not (tmp_path / "runs" / "mismatch").exists()
