"""Scoring as the official XTREME scripts do it: their file reading, and the answer metrics of extractive QA.

Written here because the project must not need the official scripts at run time (and they are
scripts, not libraries): the SQuAD v1.1 evaluation script (exact match and F1 over normalised answer
tokens, maximum over gold answers) for XQuAD and TyDiQA-GoldP, and MLQA's `mlqa_evaluation_v1.py`
(the same with language-aware normalisation) for MLQA. Each rule is a line-for-line transcription,
quirks included, and `tests/test_scoring.py` holds them against the official copies in
`../shared/official-eval` on generated inputs. The quirks users meet most:

- SQuAD normalisation removes only ASCII punctuation and the English articles a/an/the; MLQA removes
  every Unicode punctuation character (category P*) plus ASCII symbols such as `$+<=>^|~`, and
  per-language articles (for Arabic every occurrence of "ال", even inside words);
- MLQA splits Chinese into single CJK characters (U+4E00-U+9FA5) and whitespace-separated runs;
- an answer that normalises to nothing scores EM 1 but F1 0 against a gold answer that also
  normalises to nothing (`the` vs `an`);
- a question without a prediction scores 0 (the scripts print a note); predictions for unknown
  question ids are ignored; MLQA knows only en, es, hi, vi, de, ar and zh;
- classification and tagging files are read line by line with every line stripped: for
  classification every line is a label (a blank line is the label ""), for tagging a blank line ends
  a sentence (two blank lines make an empty sentence); a predictions line is taken whole, tabs
  included (only gold files may be in the task's own TSV).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path

from xlgap.utils.errors import UserError


class ScoreError(UserError, ValueError):
    """Gold and predictions cannot be scored together (counts differ, a file is malformed)."""


def read_official_lines(path: Path) -> Iterator[str]:
    """The lines of a text file as the official scripts iterate them (universal newlines, UTF-8)."""
    try:
        with open(path, encoding="utf-8") as handle:
            yield from handle
    except UnicodeDecodeError as err:
        raise ScoreError(f"{path}: not valid UTF-8 ({err.reason})") from None
    except OSError as err:
        raise ScoreError(f"{path}: cannot be read ({err.strerror})") from None


# ---------------------------------------------------------------- SQuAD v1.1


def squad_normalize(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (SQuAD v1.1)."""
    text = text.lower()
    exclude = set(string.punctuation)
    text = "".join(ch for ch in text if ch not in exclude)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


# ---------------------------------------------------------------- MLQA

MLQA_WHITESPACE_LANGUAGES = ("en", "es", "hi", "vi", "de", "ar")
MLQA_MIXED_SEGMENTATION_LANGUAGES = ("zh",)
MLQA_LANGUAGES = MLQA_WHITESPACE_LANGUAGES + MLQA_MIXED_SEGMENTATION_LANGUAGES
_MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")


@cache
def mlqa_punctuation() -> frozenset[str]:
    """Every character of a Unicode punctuation category, plus ASCII punctuation (MLQA's PUNCT)."""
    return frozenset(
        {chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")}
    ) | frozenset(string.punctuation)


def _mixed_segmentation(text: str) -> list[str]:
    punctuation = mlqa_punctuation()
    segments: list[str] = []
    pending = ""
    for char in text:
        if _CJK.search(char) or char in punctuation:
            if pending:
                segments.extend(pending.split())
                pending = ""
            segments.append(char)
        else:
            pending += char
    if pending:
        segments.extend(pending.split())
    return segments


def check_mlqa_language(language: str | None) -> str:
    """`language` if MLQA's evaluation knows it; otherwise a ScoreError listing the languages it knows."""
    if language not in MLQA_LANGUAGES:
        raise ScoreError(
            f"MLQA's evaluation needs the answer language, one of {', '.join(MLQA_LANGUAGES)}; got {language!r}"
        )
    return language


def mlqa_normalize(text: str, language: str) -> str:
    """MLQA's normalisation: lower, strip Unicode punctuation, remove the language's articles, re-tokenise."""
    check_mlqa_language(language)
    punctuation = mlqa_punctuation()
    text = "".join(ch for ch in text.lower() if ch not in punctuation)
    if language in _MLQA_ARTICLES:
        text = re.sub(_MLQA_ARTICLES[language], " ", text)
    tokens = text.split() if language in MLQA_WHITESPACE_LANGUAGES else _mixed_segmentation(text)
    return " ".join(t for t in tokens if t.strip() != "")


# ---------------------------------------------------------------- metrics


def answer_normalizer(style: str, language: str | None) -> Callable[[str], str]:
    """The normalisation of `style` ("squad" or "mlqa", the latter for `language`)."""
    if style == "squad":
        return squad_normalize
    if style == "mlqa":
        lang = check_mlqa_language(language)
        return lambda text: mlqa_normalize(text, lang)
    raise ValueError(f"unknown answer normalisation {style!r}; expected squad or mlqa")


def token_f1(prediction: str, truth: str, normalize: Callable[[str], str]) -> float:
    """Bag-of-tokens F1 of two answers after normalisation (0 when they share no token)."""
    predicted = normalize(prediction).split()
    gold = normalize(truth).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0
    precision = 1.0 * same / len(predicted)
    recall = 1.0 * same / len(gold)
    return (2 * precision * recall) / (precision + recall)


def answer_scores(
    questions: Iterable[tuple[str, list[str], str | None]], style: str, language: str | None = None
) -> tuple[dict[str, float], int]:
    """`({"exact_match", "f1"}, unanswered)` in percent over `questions` (id, gold answer texts,
    prediction or None), as the official scripts compute them: the maximum over gold answers, 0 for a
    question without prediction."""
    normalize = answer_normalizer(style, language)
    f1 = exact_match = total = unanswered = 0
    for qid, truths, prediction in questions:
        total += 1
        if prediction is None:
            unanswered += 1
            continue
        if not truths:
            raise ScoreError(f"question {qid} has no gold answer")
        if not isinstance(prediction, str):
            raise ScoreError(f"question {qid}: the prediction must be a string, got {prediction!r:.60}")
        exact_match += max(normalize(prediction) == normalize(truth) for truth in truths)
        f1 += max(token_f1(prediction, truth, normalize) for truth in truths)
    if total == 0:
        raise ScoreError("no questions to score")
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}, unanswered
