"""Readers for the line-based benchmark formats (CoNLL-U, `token<TAB>tag`, TSV sentence pairs) and the
example types every reader returns (SQuAD JSON is read in `squad.py`).

The parsers are hand-written on purpose: the formats are a few lines of grammar each, and a
hand-written reader can stop at the first malformed line with the file, the line number and what
was expected (`DataFormatError`), which general CSV/CoNLL libraries do not do. Lines are split on
"\\n" only (a trailing "\\r" is removed), because tokens may legitimately contain other Unicode
line separators. Nothing is dropped silently: lines skipped by design are counted in
`ReadResult.skipped` and logged.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xlgap.utils.errors import UserError

log = logging.getLogger(__name__)


class DataFormatError(UserError, ValueError):
    """Malformed input: names the source (file or hub split), the place (line, row or JSON path) and the
    expectation."""

    def __init__(self, source: str | Path, line: int | str, expected: str, *, unit: str = "line") -> None:
        self.source = str(source)
        self.line = line
        self.expected = expected
        super().__init__(f"{source}, {unit} {line}: {expected}")


@dataclass(frozen=True, slots=True)
class TokenExample:
    """A sentence of words with one tag per word; `source` is 'file:line' of its first word."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    source: str = ""


@dataclass(frozen=True, slots=True)
class PairExample:
    """A text pair with one label; `source` is 'file:line' (or hub row) it came from."""

    text_a: str
    text_b: str
    label: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A gold answer of an extractive QA example: its text and its character offset in the context."""

    text: str
    start: int


@dataclass(frozen=True, slots=True)
class QAExample:
    """An extractive QA question: its id, question, context and gold answers (the first one trains);
    `source` is 'file: JSON path' (or hub row) it came from."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    source: str = ""


Example = TokenExample | PairExample | QAExample


@dataclass
class ReadResult:
    """What one file yielded: the examples and, by reason, the lines skipped by design."""

    path: Path
    examples: list[Example]
    skipped: Counter[str] = field(default_factory=Counter)


class LabelTable:
    """Maps the labels found in data (a task's labels or their aliases) to the task's labels."""

    def __init__(self, labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> None:
        self.labels = tuple(labels)
        self._lookup = {label: label for label in self.labels} | dict(aliases or {})

    def canonical(self, raw: str, source: str | Path, line: int, *, unit: str = "line") -> str:
        """The task label for `raw`; raises DataFormatError listing the allowed labels."""
        label = self._lookup.get(raw)
        if label is None:
            raise DataFormatError(
                source, line, f"unknown label {raw!r}; expected one of {', '.join(self.labels)}", unit=unit
            )
        return label


def read_file_bytes(path: Path) -> bytes:
    """The bytes of a data file, decompressed when its name ends in `.gz`; a `.gz` that is not gzip raises."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise DataFormatError(path, 1, f"the name ends in .gz but the file is not valid gzip ({err})") from None


def _read_lines(path: Path, expected: str) -> list[str]:
    """The file's lines (UTF-8, BOM allowed, "\\r\\n" or "\\n"); empty or undecodable files raise."""
    data = read_file_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFormatError(path, line, f"not valid UTF-8 (byte {err.start}: {err.reason})") from None
    if not text.strip():
        raise DataFormatError(path, 1, f"empty file; expected {expected}")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _log_skipped(result: ReadResult) -> None:
    if result.skipped:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(result.skipped.items()))
        log.info("%s: %d examples read; skipped by design: %s", result.path, len(result.examples), counts)


_CONLLU_RANGE = re.compile(r"[0-9]+-[0-9]+")
_CONLLU_EMPTY = re.compile(r"[0-9]+\.[0-9]+")


def read_conllu(
    path: str | Path, labels: Sequence[str], *, aliases: Mapping[str, str] | None = None
) -> ReadResult:
    """Read a Universal Dependencies CoNLL-U file into TokenExamples of (FORM, UPOS).

    Words are the lines with an integer ID (1, 2, ... within each sentence). Multiword-token
    ranges (`1-2`: a surface form whose words follow on their own lines) and empty nodes (`8.1`:
    nodes of the enhanced graph that are not in the text) are not words of the sentence, as the
    format defines, and are skipped and counted; `#` lines are comments; a blank line ends a
    sentence.
    """
    path = Path(path)
    table = LabelTable(labels, aliases)
    lines = _read_lines(path, "CoNLL-U sentences (10 tab-separated columns per word line)")
    result = ReadResult(path, [])
    words: list[str] = []
    tags: list[str] = []
    block_start = 0  # line number of the current sentence's first line, 0 between sentences

    def end_sentence() -> None:
        nonlocal block_start
        if block_start and not words:
            raise DataFormatError(path, block_start, "sentence without word lines (integer ID 1, 2, ...)")
        if words:
            result.examples.append(TokenExample(tuple(words), tuple(tags), f"{path.name}:{block_start}"))
        words.clear()
        tags.clear()
        block_start = 0

    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            end_sentence()
            continue
        block_start = block_start or lineno
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise DataFormatError(
                path,
                lineno,
                f"expected 10 tab-separated columns (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), "
                f"found {len(cols)}",
            )
        word_id = cols[0]
        if word_id.isascii() and word_id.isdigit():
            if int(word_id) != len(words) + 1:
                raise DataFormatError(path, lineno, f"expected word ID {len(words) + 1}, found {word_id}")
            words.append(cols[1])
            tags.append(table.canonical(cols[3], path, lineno))
        elif _CONLLU_RANGE.fullmatch(word_id):
            result.skipped["multiword-token lines"] += 1
        elif _CONLLU_EMPTY.fullmatch(word_id):
            result.skipped["empty-node lines"] += 1
        else:
            raise DataFormatError(
                path,
                lineno,
                f"ID {word_id!r} is not a word index (1, 2, ...), a range (1-2) or an empty node (8.1)",
            )
    end_sentence()
    _require_examples(result, "sentences")
    _log_skipped(result)
    return result


def read_token_tags(
    path: str | Path,
    labels: Sequence[str],
    *,
    aliases: Mapping[str, str] | None = None,
    lang_prefix: str | None = None,
) -> ReadResult:
    """Read XTREME's `token<TAB>tag` files (udpos/, panx/): one word per line, blank line between
    sentences. Returns TokenExamples.

    Some XTREME releases of PAN-X prefix every token with its language (`en:word`). With
    `lang_prefix="en"`, the prefix `en:` is removed when every token of the file carries it (and
    only then, so that a real token such as `at:1994` is never cut).
    """
    path = Path(path)
    table = LabelTable(labels, aliases)
    lines = _read_lines(path, "token<TAB>tag lines")
    sentences: list[tuple[list[str], list[str], int]] = []
    words: list[str] = []
    tags: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            if words:
                sentences.append((words, tags, lineno - len(words)))
                words, tags = [], []
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise DataFormatError(
                path, lineno, f"expected 2 tab-separated columns (token, tag), found {len(cols)}"
            )
        if not cols[0]:
            raise DataFormatError(path, lineno, "empty token; expected token<TAB>tag")
        words.append(cols[0])
        tags.append(table.canonical(cols[1], path, lineno))
    if words:
        sentences.append((words, tags, len(lines) + 1 - len(words)))

    strip = 0
    if lang_prefix:
        prefix = f"{lang_prefix}:"
        if all(word.startswith(prefix) for words, _, _ in sentences for word in words):
            strip = len(prefix)
            log.info("%s: removed the language prefix %r from every token", path, prefix)
    result = ReadResult(
        path,
        [
            TokenExample(tuple(w[strip:] for w in words), tuple(tags), f"{path.name}:{first}")
            for words, tags, first in sentences
        ],
    )
    _require_examples(result, "sentences")
    return result


PAIR_HEADER = ("sentence1", "sentence2", "label")


def read_pair_tsv(
    path: str | Path,
    labels: Sequence[str],
    *,
    aliases: Mapping[str, str] | None = None,
    columns: tuple[int | str, int | str, int | str] = (0, 1, 2),
    header: bool | None = False,
    n_columns: int = 3,
) -> ReadResult:
    """Read a TSV of text pairs into PairExamples: XNLI's `premise<TAB>hypothesis<TAB>label`.

    `columns` gives the (text_a, text_b, label) columns, as positions or, with `header=True`, as
    names from the first line (PAWS-X `test-*.hf.tsv`: `("sentence1", "sentence2", "label")`).
    With `header=None` the first line is a header exactly when it names the columns
    `sentence1`, `sentence2` and `label` (PAWS-X's `id sentence1 sentence2 label` layout), and those
    columns are read. Every line must have `n_columns` fields (the header's count with a header).
    Blank lines are skipped and counted.
    """
    path = Path(path)
    table = LabelTable(labels, aliases)
    lines = _read_lines(path, "text<TAB>text<TAB>label lines")
    result = ReadResult(path, [])
    first = 1
    if header is None:
        header = set(PAIR_HEADER) <= set(lines[0].split("\t"))
        if header:
            columns = PAIR_HEADER
    positions = list(columns)
    if header:
        names = lines[0].split("\t")
        n_columns = len(names)
        for i, col in enumerate(positions):
            if isinstance(col, str):
                if col not in names:
                    raise DataFormatError(path, 1, f"header has no column {col!r}; found {', '.join(names)}")
                positions[i] = names.index(col)
        first = 2
    elif not all(isinstance(col, int) for col in positions):
        raise ValueError(f"read_pair_tsv({path}): column names {columns} need header=True")
    a, b, lab = (int(p) for p in positions)
    for lineno, line in enumerate(lines[first - 1 :], first):
        if not line.strip():
            result.skipped["blank lines"] += 1
            continue
        cols = line.split("\t")
        if len(cols) != n_columns:
            raise DataFormatError(
                path,
                lineno,
                f"expected {n_columns} tab-separated columns (text_a, text_b, label), found {len(cols)}",
            )
        label = table.canonical(cols[lab].strip(), path, lineno)
        result.examples.append(PairExample(cols[a], cols[b], label, f"{path.name}:{lineno}"))
    _require_examples(result, "text pairs")
    _log_skipped(result)
    return result


def _require_examples(result: ReadResult, what: str) -> None:
    if not result.examples:
        raise DataFormatError(result.path, 1, f"no {what} found")
