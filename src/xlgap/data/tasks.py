"""Task registry: a task name maps to a TaskSpec (kind, label set, metric, languages, data sources).

A new task is one `register_task(TaskSpec(...))` call: the readers, the local-folder lookup, the hub
loader and the encoders are chosen from the spec's kind and layouts, not from its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xlgap.languages import check_language, language_name

TOKEN_CLASSIFICATION = "token_classification"
SEQUENCE_CLASSIFICATION = "sequence_classification"
TASK_KINDS = (TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION)


@dataclass(frozen=True)
class LocalLayout:
    """Where a task's files lie in a folder in the XTREME layout.

    `file_patterns` are tried in order under `<dir>/<folder>/`, with `{split}` and `{lang}` filled in.
    With `ud_treebanks`, `<dir>/ud/UD_*/<lang>_*-ud-<split>.conllu` is the fallback.
    """

    folder: str
    file_patterns: tuple[str, ...] = ("{split}-{lang}.tsv",)
    ud_treebanks: bool = False


@dataclass(frozen=True)
class HubLayout:
    """Where a task lives on the Hugging Face hub.

    `config` is a format string with `{code}` (ISO code) and `{name}` (English name) fields.
    `columns` names the example fields: (tokens, tags) for token classification,
    (text_a, text_b, label) for sequence-pair classification. `splits` maps xlgap's split names
    (train, dev, test) to the hub's.
    """

    repo: str
    config: str
    columns: tuple[str, ...]
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("dev", "validation"), ("test", "test"))

    def config_for(self, language: str) -> str:
        """The hub config name for a language code, e.g. 'udpos.German' for 'de'."""
        return self.config.format(code=language, name=language_name(language))

    def split_for(self, split: str) -> str:
        """The hub split name for an xlgap split name."""
        return dict(self.splits)[split]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data layer needs to know about a task.

    `labels` fixes the label order (label ids are positions in it); `label_aliases` maps spellings
    found in some releases to a label, as pairs so that the spec stays hashable.
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    metric: str
    languages: tuple[str, ...]
    local: LocalLayout
    hub: HubLayout
    label_aliases: tuple[tuple[str, str], ...] = ()
    source_language: str = "en"
    description: str = ""

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.kind not in TASK_KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {', '.join(TASK_KINDS)}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"{where}: labels must be a non-empty tuple without repeats, got {self.labels}")
        for alias, label in self.label_aliases:
            if label not in self.labels:
                raise ValueError(f"{where}: alias {alias!r} maps to {label!r}, which is not a label")
        for code in (*self.languages, self.source_language):
            check_language(code, f"{where} languages")
        if self.source_language not in self.languages:
            raise ValueError(f"{where}: source language {self.source_language!r} is not in its languages")

    @property
    def aliases(self) -> Mapping[str, str]:
        """The label aliases as a mapping from the alternative spelling to the label."""
        return dict(self.label_aliases)


UPOS_TAGS: tuple[str, ...] = tuple(
    "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()
)

_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry and return it; a second task with the same name is an error."""
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    _TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The registered TaskSpec called `name`; the error lists the known tasks."""
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}") from None


def task_names() -> list[str]:
    """The names of all registered tasks, sorted."""
    return sorted(_TASKS)


register_task(
    TaskSpec(
        name="udpos",
        kind=TOKEN_CLASSIFICATION,
        labels=UPOS_TAGS,
        metric="accuracy",
        languages=tuple(
            "af ar bg de el en es et eu fa fi fr he hi hu id it ja kk ko mr nl pt ru ta te th tl tr ur vi yo zh".split()
        ),
        local=LocalLayout(folder="udpos", ud_treebanks=True),
        hub=HubLayout(repo="google/xtreme", config="udpos.{name}", columns=("tokens", "pos_tags")),
        description="Universal Dependencies part-of-speech tagging (UPOS), XTREME version",
    )
)

register_task(
    TaskSpec(
        name="xnli",
        kind=SEQUENCE_CLASSIFICATION,
        labels=("entailment", "neutral", "contradiction"),
        metric="accuracy",
        languages=tuple("ar bg de el en es fr hi ru sw th tr ur vi zh".split()),
        local=LocalLayout(folder="xnli"),
        hub=HubLayout(repo="facebook/xnli", config="{code}", columns=("premise", "hypothesis", "label")),
        # XTREME's MultiNLI training files spell the label "contradictory".
        label_aliases=(("contradictory", "contradiction"),),
        description="Cross-lingual natural language inference (premise, hypothesis) -> 3 classes",
    )
)
