"""Reader for SQuAD v1.1 JSON (plain or gzipped): XQuAD, MLQA, TyDiQA-GoldP and SQuAD itself.

Hand-written rather than `datasets.load_dataset("json")` so that a malformed file stops at the first
bad item with the file, its JSON path (`data[3].paragraphs[0].qas[2]`), the question id and what was
expected, and so that every answer is checked against its context (the training label is the span at
`answer_start`). SQuAD 2.0 questions marked `is_impossible` have no span to extract: they are skipped
and counted, never silently dropped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from xlgap.data.formats import Answer, DataFormatError, QAExample, ReadResult, read_file_bytes

_UNIT = "JSON path"
log = logging.getLogger(__name__)


def _field(node: Any, key: str, kind: type, path: Path, where: str, note: str = "") -> Any:
    """`node[key]`, checked to be of `kind`; raises DataFormatError naming `where` (and `note`, the
    question id)."""
    if not isinstance(node, dict):
        raise DataFormatError(path, where + note, f"expected an object, found {type(node).__name__}", unit=_UNIT)
    if key not in node:
        found = ", ".join(map(repr, node)) or "none"
        raise DataFormatError(path, where + note, f"missing {key!r}; found keys {found}", unit=_UNIT)
    value = node[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        expected = {list: "a list", str: "a string", int: "an integer"}.get(kind, "a string or an integer")
        raise DataFormatError(path, f"{where}.{key}{note}", f"expected {expected}, found {value!r:.60}", unit=_UNIT)
    return value


def load_squad_json(path: Path) -> Any:
    """The parsed JSON of a SQuAD-style file (plain or .gz); invalid UTF-8 or JSON names the line."""
    data = read_file_bytes(path)
    try:
        return json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise DataFormatError(path, data[: err.start].count(b"\n") + 1, f"not valid UTF-8 ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"not valid JSON ({err.msg}, column {err.colno})") from None


def read_squad(path: str | Path) -> ReadResult:
    """Read a SQuAD v1.1 JSON file into QAExamples, one per question, in file order.

    Every question needs an `id`, a non-empty `question` and at least one answer whose `text` is found
    at `answer_start` in its paragraph's (non-empty) `context`. Ids may repeat (some TyDiQA-GoldP
    training copies number questions per article); a repeat is logged, since a predictions file,
    keyed by id, cannot hold two answers for one id.
    """
    path = Path(path)
    root = load_squad_json(path)
    articles = _field(root, "data", list, path, "(top level)")
    result = ReadResult(path, [])
    seen: set[str] = set()
    repeated = 0
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{i}]")):
            where_p = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, path, where_p)
            if not context.strip():
                raise DataFormatError(path, f"{where_p}.context", "empty context; expected the paragraph text", unit=_UNIT)
            for k, qa in enumerate(_field(paragraph, "qas", list, path, where_p)):
                where = f"{where_p}.qas[{k}]"
                qid = str(_field(qa, "id", str | int, path, where))
                note = f" (question id {qid})"
                repeated += qid in seen
                seen.add(qid)
                question = _field(qa, "question", str, path, where, note)
                if not question.strip():
                    raise DataFormatError(path, where + note, "empty question", unit=_UNIT)
                raw_answers = _field(qa, "answers", list, path, where, note)
                if not raw_answers:
                    if qa.get("is_impossible") is True:
                        result.skipped["unanswerable questions (is_impossible)"] += 1
                        continue
                    raise DataFormatError(path, f"{where}.answers{note}", "no answers; expected at least one", unit=_UNIT)
                answers = tuple(
                    _answer(answer, context, path, f"{where}.answers[{a}]", note) for a, answer in enumerate(raw_answers)
                )
                result.examples.append(QAExample(qid, question, context, answers, f"{path.name}: {where}{note}"))
    if not result.examples:
        raise DataFormatError(path, "data", "no questions found", unit=_UNIT)
    if repeated:
        log.info("%s: %d questions repeat an earlier question id", path, repeated)
    return result


def answer_problem(context: str, text: str, start: int) -> str | None:
    """What is wrong with a gold answer (empty, or not found at `start` in `context`), or None."""
    if not text.strip():
        return "empty answer text"
    found = context[start : start + len(text)] if 0 <= start <= len(context) else ""
    if found != text:
        return f"answer text {text!r} is not at answer_start {start} of the context (found {found!r})"
    return None


def _answer(node: Any, context: str, path: Path, where: str, note: str) -> Answer:
    text = _field(node, "text", str, path, where, note)
    start = _field(node, "answer_start", int, path, where, note)
    problem = answer_problem(context, text, start)
    if problem:
        raise DataFormatError(path, where + note, problem, unit=_UNIT)
    return Answer(text, start)
