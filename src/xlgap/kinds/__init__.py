"""Task kinds: one module per kind of task, each owning its readers, encoder, head, loss, decoding and
metrics (see `base.py`). Importing this package registers the built-in kinds; a new kind is one module
with a `@register_kind` class and one import line below."""

from xlgap.kinds import classification, span, tagging  # noqa: F401  (registers the kinds)
from xlgap.kinds.base import (
    IGNORE_INDEX,
    EncodedSplit,
    EncodeSettings,
    TaskKind,
    classification_loss,
    encode_split,
    get_kind,
    kind_of,
    load_split,
    register_kind,
)
from xlgap.kinds.evaluate import Evaluation, evaluate_sets, language_scores, predict

__all__ = [
    "IGNORE_INDEX",
    "EncodeSettings",
    "EncodedSplit",
    "Evaluation",
    "TaskKind",
    "classification_loss",
    "encode_split",
    "evaluate_sets",
    "get_kind",
    "kind_of",
    "language_scores",
    "load_split",
    "predict",
    "register_kind",
]
