"""Task catalog: a task name maps to a TaskSpec (its kind, labels, metrics, languages and data sources).

This module is declarative: it says where a task's files lie in a folder in the XTREME layout and on
the Hugging Face hub, which labels and metrics it has, and which *kind* of task it is. The behaviour of
a kind (readers, encoder, model head, loss, decoding, metrics) lives in `xlgap.kinds`, one module per
kind. A new task of an existing kind is one `register_task(TaskSpec(...))` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xlgap.languages import check_language, language_name
from xlgap.utils.errors import UserError

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class FilePattern:
    """One place a split's file may lie, relative to the data folder.

    `path` may contain `{lang}`; a path without it holds only `languages` (e.g. SQuAD's English train).
    """

    split: str
    path: str
    languages: tuple[str, ...] = ()

    def for_language(self, language: str) -> str | None:
        """The relative path for `language`, or None when this pattern cannot hold it."""
        if "{lang}" in self.path:
            return self.path.format(lang=language)
        return self.path if language in self.languages else None


def per_split(template: str, splits: tuple[str, ...] = SPLITS) -> tuple[FilePattern, ...]:
    """One FilePattern per split from a template with `{split}` and `{lang}`, e.g. 'panx/{split}-{lang}.tsv'."""
    return tuple(FilePattern(split, template.replace("{split}", split)) for split in splits)


@dataclass(frozen=True)
class LocalLayout:
    """Where a task's files lie in a folder in the XTREME layout.

    Patterns are tried in order for a split; with `ud_treebanks`, `<dir>/ud/UD_*/<lang>_*-ud-<split>.conllu`
    (every treebank of the language, merged in sorted order) is the fallback.
    """

    patterns: tuple[FilePattern, ...]
    ud_treebanks: bool = False

    def for_split(self, split: str) -> list[FilePattern]:
        """The patterns of one split, in order."""
        return [p for p in self.patterns if p.split == split]


@dataclass(frozen=True)
class HubLayout:
    """Where (some splits of) a task live on the Hugging Face hub.

    `config` is a format string with `{code}` (ISO code) and `{name}` (English name) fields. `columns`
    names the example fields the task's kind reads. `splits` maps xlgap's split names to the hub's.
    `languages`, when set, are the only languages this layout holds (e.g. SQuAD: English). With
    `id_prefix` (a format string like `{lower}-`), one config holds every language and a row belongs to
    the language whose prefix its `id` starts with (TyDiQA: `finnish-...`).
    """

    repo: str
    config: str
    columns: tuple[str, ...]
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("dev", "validation"), ("test", "test"))
    languages: tuple[str, ...] = ()
    id_prefix: str | None = None

    def covers(self, split: str, language: str) -> bool:
        """Whether this layout holds `split` of `language`."""
        return split in dict(self.splits) and (not self.languages or language in self.languages)

    def config_for(self, language: str) -> str:
        """The hub config name for a language code, e.g. 'udpos.German' for 'de'."""
        return self.config.format(code=language, name=language_name(language))

    def split_for(self, split: str) -> str:
        """The hub split name for an xlgap split name."""
        return dict(self.splits)[split]

    def prefix_for(self, language: str) -> str | None:
        """The `id` prefix of the rows of `language` when one config holds several languages."""
        if self.id_prefix is None:
            return None
        return self.id_prefix.format(code=language, lower=language_name(language).lower())


@dataclass(frozen=True)
class TaskSpec:
    """Everything that is declared about a task.

    `labels` fixes the label order (label ids are positions in it; empty for span extraction);
    `label_aliases` maps spellings found in some releases to a label. `metrics` are the metrics the
    task reports, the first being the one model selection uses (`metric`). `options` are settings of
    the task's kind (e.g. the answer normalisation of a QA task), as pairs so the spec stays hashable.
    """

    name: str
    kind: str
    languages: tuple[str, ...]
    local: LocalLayout
    hub: tuple[HubLayout, ...]
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("accuracy",)
    label_aliases: tuple[tuple[str, str], ...] = ()
    source_language: str = "en"
    options: tuple[tuple[str, Any], ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{where}: labels must not repeat, got {self.labels}")
        if not self.metrics:
            raise ValueError(f"{where}: at least one metric is needed (the first one selects models)")
        for alias, label in self.label_aliases:
            if label not in self.labels:
                raise ValueError(f"{where}: alias {alias!r} maps to {label!r}, which is not a label")
        for code in (*self.languages, self.source_language):
            check_language(code, f"{where} languages")
        if self.source_language not in self.languages:
            raise ValueError(f"{where}: source language {self.source_language!r} is not in its languages")

    @property
    def metric(self) -> str:
        """The metric model selection maximises (the first of `metrics`)."""
        return self.metrics[0]

    @property
    def aliases(self) -> Mapping[str, str]:
        """The label aliases as a mapping from the alternative spelling to the label."""
        return dict(self.label_aliases)

    @property
    def label2id(self) -> dict[str, int]:
        """Label -> id, in the task's label order."""
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        """Id -> label, in the task's label order."""
        return dict(enumerate(self.labels))

    def option(self, key: str, default: Any = None) -> Any:
        """A kind setting from `options`."""
        return dict(self.options).get(key, default)

    def hub_for(self, split: str, language: str) -> HubLayout | None:
        """The first hub layout that holds `split` of `language`, or None."""
        return next((layout for layout in self.hub if layout.covers(split, language)), None)


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the catalog and return it; a second task with the same name is an error."""
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    _TASKS[spec.name] = spec
    return spec


class UnknownTaskError(UserError, KeyError):
    """A task name that is not in the catalog; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_task(name: str) -> TaskSpec:
    """The registered TaskSpec called `name`; the error lists the known tasks."""
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}") from None


def task_names() -> list[str]:
    """The names of all registered tasks, sorted."""
    return sorted(_TASKS)


UPOS_TAGS: tuple[str, ...] = tuple(
    "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()
)
PANX_TAGS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

TAGGING, CLASSIFICATION, SPAN_EXTRACTION = "tagging", "classification", "span_extraction"
QA_COLUMNS = ("id", "context", "question", "answers")
# SQuAD v1.1, the English training (and, for XQuAD, dev) data of the XQuAD/MLQA setting (XTREME's
# download/squad/ folder; rajpurkar/squad on the hub).
SQUAD_TRAIN = FilePattern("train", "squad/train-v1.1.json", ("en",))
SQUAD_DEV = FilePattern("dev", "squad/dev-v1.1.json", ("en",))
SQUAD_HUB = HubLayout(
    "rajpurkar/squad", "plain_text", QA_COLUMNS, splits=(("train", "train"), ("dev", "validation")), languages=("en",)
)

register_task(
    TaskSpec(
        name="udpos",
        kind=TAGGING,
        labels=UPOS_TAGS,
        # accuracy selects; "f1" is XTREME's seqeval F1 over the POS tags (its tagging script's number)
        metrics=("accuracy", "f1"),
        languages=tuple(
            "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh".split()
        ),
        local=LocalLayout(per_split("udpos/{split}-{lang}.tsv"), ud_treebanks=True),
        hub=(HubLayout("google/xtreme", "udpos.{name}", ("tokens", "pos_tags")),),
        description="Universal Dependencies part-of-speech tagging (UPOS), XTREME version",
    )
)

register_task(
    TaskSpec(
        name="panx",
        kind=TAGGING,
        labels=PANX_TAGS,
        metrics=("f1", "precision", "recall"),
        languages=tuple(
            "af ar bg bn de el en es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr ms my nl pt ru sw ta te "
            "th tl tr ur vi yo zh".split()
        ),
        local=LocalLayout(per_split("panx/{split}-{lang}.tsv")),
        hub=(HubLayout("google/xtreme", "PAN-X.{code}", ("tokens", "ner_tags")),),
        description="WikiANN named entities (PER, LOC, ORG) in IOB2, XTREME's PAN-X splits; entity-level F1",
    )
)

register_task(
    TaskSpec(
        name="xnli",
        kind=CLASSIFICATION,
        labels=("entailment", "neutral", "contradiction"),
        languages=tuple("ar bg de el en es fr hi ru sw th tr ur vi zh".split()),
        local=LocalLayout(per_split("xnli/{split}-{lang}.tsv")),
        hub=(HubLayout("facebook/xnli", "{code}", ("premise", "hypothesis", "label")),),
        # XTREME's MultiNLI training files spell the label "contradictory".
        label_aliases=(("contradictory", "contradiction"),),
        description="Cross-lingual natural language inference (premise, hypothesis) -> 3 classes",
    )
)

register_task(
    TaskSpec(
        name="pawsx",
        kind=CLASSIFICATION,
        labels=("0", "1"),
        languages=tuple("de en es fr ja ko zh".split()),
        local=LocalLayout(
            (
                FilePattern("train", "pawsx/train-{lang}.tsv"),
                FilePattern("dev", "pawsx/dev-{lang}.tsv"),
                FilePattern("test", "pawsx/test-{lang}.hf.tsv"),
                FilePattern("test", "pawsx/test-{lang}.tsv"),
            )
        ),
        hub=(HubLayout("google/xtreme", "PAWS-X.{code}", ("sentence1", "sentence2", "label")),),
        description="Paraphrase identification (sentence1, sentence2) -> 0/1, PAWS-X",
    )
)

register_task(
    TaskSpec(
        name="xquad",
        kind=SPAN_EXTRACTION,
        metrics=("f1", "exact_match"),
        languages=tuple("ar de el en es hi ro ru th tr vi zh".split()),
        local=LocalLayout((SQUAD_TRAIN, SQUAD_DEV, FilePattern("test", "xquad/xquad.{lang}.json"))),
        hub=(SQUAD_HUB, HubLayout("google/xtreme", "XQuAD.{code}", QA_COLUMNS, splits=(("test", "validation"),))),
        options=(("answers", "squad"),),
        description="XQuAD extractive QA (SQuAD v1.1 dev translated; test only), trained on SQuAD v1.1; "
        "English dev: SQuAD's",
    )
)

register_task(
    TaskSpec(
        name="mlqa",
        kind=SPAN_EXTRACTION,
        metrics=("f1", "exact_match"),
        languages=tuple("ar de en es hi vi zh".split()),
        local=LocalLayout(
            (
                SQUAD_TRAIN,
                FilePattern("dev", "mlqa/dev-context-{lang}-question-{lang}.json"),
                FilePattern("dev", "mlqa/MLQA_V1/dev/dev-context-{lang}-question-{lang}.json"),
                FilePattern("test", "mlqa/test-context-{lang}-question-{lang}.json"),
                FilePattern("test", "mlqa/MLQA_V1/test/test-context-{lang}-question-{lang}.json"),
            )
        ),
        hub=(
            HubLayout(
                "google/xtreme", "MLQA.{code}.{code}", QA_COLUMNS, splits=(("dev", "validation"), ("test", "test"))
            ),
            SQUAD_HUB,  # English training data (MLQA's own English dev wins for dev)
        ),
        options=(("answers", "mlqa"),),
        description="MLQA extractive QA, same-language context and question; MLQA's own answer normalisation",
    )
)

register_task(
    TaskSpec(
        name="tydiqa",
        kind=SPAN_EXTRACTION,
        metrics=("f1", "exact_match"),
        languages=tuple("ar bn en fi id ko ru sw te".split()),
        local=LocalLayout(
            (
                FilePattern("train", "tydiqa/tydiqa.goldp.{lang}.train.json"),
                FilePattern("train", "tydiqa/tydiqa-goldp-v1.1-train/tydiqa.goldp.{lang}.train.json"),
                # XTREME tests on the GoldP dev set
                FilePattern("test", "tydiqa/tydiqa.goldp.{lang}.dev.json"),
                FilePattern("test", "tydiqa/tydiqa-goldp-v1.1-dev/tydiqa.goldp.{lang}.dev.json"),
            )
        ),
        hub=(
            HubLayout(
                "google/xtreme",
                "tydiqa",
                QA_COLUMNS,
                splits=(("train", "train"), ("test", "validation")),
                id_prefix="{lower}-",
            ),
        ),
        options=(("answers", "squad"),),
        description="TyDiQA-GoldP extractive QA (XTREME: GoldP train, tested on GoldP dev)",
    )
)
