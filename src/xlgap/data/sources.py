"""Where a task's data comes from: explicit files, a local folder in the XTREME layout, or the hub.

`load_split` tries, in order: the file given for "<split>.<lang>" in `files`, the local folder
`data_dir`, then the Hugging Face hub when enabled. The returned SplitData's `origin` records
exactly what was read, so that results can say which data they came from.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from xlgap.data.formats import (
    DataFormatError,
    Example,
    LabelTable,
    PairExample,
    ReadResult,
    TokenExample,
    read_conllu,
    read_pair_tsv,
    read_token_tags,
)
from xlgap.data.tasks import TOKEN_CLASSIFICATION, TaskSpec, get_task
from xlgap.languages import check_language

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
_LANG_CODE = re.compile(r"[a-z]{2,3}")


class DataSourceError(RuntimeError):
    """No data could be found or loaded for a task/language/split; says what was tried."""


class SplitNotFoundError(DataSourceError):
    """The task has no data for that language and split in any source tried (e.g. XTREME test-only languages)."""


class HubUnreachableError(DataSourceError):
    """The Hugging Face hub could not be reached; says what to set instead."""


@dataclass(frozen=True)
class Origin:
    """Exactly what a split was read from: local files, or a hub repo/config/split (and a subset)."""

    files: tuple[str, ...] = ()
    hub_repo: str | None = None
    hub_config: str | None = None
    hub_split: str | None = None
    subset: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The origin as a JSON-friendly dict, leaving out empty fields."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v}

    def __str__(self) -> str:
        if self.files:
            where = ", ".join(self.files)
        elif self.hub_repo:
            where = f"hub {self.hub_repo} config {self.hub_config} split {self.hub_split}"
        else:
            where = "examples built in memory"
        return f"{where} ({self.subset})" if self.subset else where


@dataclass
class SplitData:
    """The examples of one task/language/split, where they came from, and what was skipped reading them."""

    task: str
    language: str
    split: str
    examples: list[Example]
    origin: Origin
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.examples)


def _resolve_task(task: TaskSpec | str) -> TaskSpec:
    return task if isinstance(task, TaskSpec) else get_task(task)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _check_files(files: Mapping[str, str | Path]) -> None:
    """Every key of data.files must read '<split>.<lang>' with a known split and language."""
    for key in files:
        split, _, lang = key.partition(".")
        if split not in SPLITS or not lang:
            raise ValueError(
                f"data.files[{key!r}]: keys must read '<split>.<lang>' with split one of "
                f"{', '.join(SPLITS)}, e.g. 'train.en' or 'test.de'"
            )
        check_language(lang, f"data.files[{key!r}]")


def read_task_file(task: TaskSpec, path: Path, language: str) -> ReadResult:
    """Read one file of `task`: CoNLL-U by extension (.conllu), otherwise the task kind's TSV format."""
    if path.suffix == ".conllu":
        return read_conllu(path, task.labels, aliases=task.aliases)
    if task.kind == TOKEN_CLASSIFICATION:
        return read_token_tags(path, task.labels, aliases=task.aliases, lang_prefix=language)
    return read_pair_tsv(path, task.labels, aliases=task.aliases)


def _from_files(task: TaskSpec, language: str, split: str, paths: list[Path]) -> SplitData:
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    for path in paths:
        result = read_task_file(task, path, language)
        examples += result.examples
        skipped += result.skipped
    origin = Origin(files=tuple(str(p.resolve()) for p in paths))
    return SplitData(task.name, language, split, examples, origin, skipped)


def _local_candidates(
    task: TaskSpec, language: str, split: str, data_dir: Path
) -> tuple[list[Path], list[str]]:
    """The files to read for a language/split under `data_dir`, and every path or pattern tried."""
    tried: list[str] = []
    for pattern in task.local.file_patterns:
        path = data_dir / task.local.folder / pattern.format(split=split, lang=language)
        if path.is_file():
            return [path], tried
        tried.append(f"{path} (not found)")
    if task.local.ud_treebanks:
        # XTREME merges all treebanks of a language, in sorted order.
        pattern = f"ud/UD_*/{language}_*-ud-{split}.conllu"
        matches = sorted(p for p in data_dir.glob(pattern) if p.is_file())
        if matches:
            return matches, tried
        tried.append(f"{data_dir / pattern} (no match)")
    return [], tried


def load_split(
    task: TaskSpec | str,
    language: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    files: Mapping[str, str | Path] | None = None,
    hub: bool = False,
    hub_repo: str | None = None,
    cache_dir: str | Path | None = None,
) -> SplitData:
    """Load one split ("train", "dev" or "test") of a task for one language and return SplitData.

    Tries `files["<split>.<lang>"]`, then the XTREME-layout folder `data_dir`, then the hub if
    `hub` is true or `hub_repo` (which overrides the task's repo id, e.g. a local folder laid out
    like the hub repo) is given. Raises DataSourceError listing every path tried and what to set.
    """
    spec = _resolve_task(task)
    _check_split(split)
    check_language(language, f"{spec.name} {split} language")
    key = f"{split}.{language}"
    tried: list[str] = []
    if files:
        _check_files(files)
        if key in files:
            path = Path(files[key])
            if not path.is_file():
                raise DataSourceError(f"data.files[{key!r}]: {path} does not exist or is not a file")
            return _from_files(spec, language, split, [path])
    tried.append(f"data.files[{key!r}] (not set)")
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataSourceError(
                f"data directory {root} does not exist (set data.dir to a folder in the XTREME layout)"
            )
        paths, local_tried = _local_candidates(spec, language, split, root)
        if paths:
            return _from_files(spec, language, split, paths)
        tried += local_tried
    else:
        tried.append("data.dir (not set)")
    if hub or hub_repo is not None:
        return _from_hub(spec, language, split, hub_repo or spec.hub.repo, cache_dir)
    tried.append(f"hub {spec.hub.repo} config {spec.hub.config_for(language)} (hub not enabled)")
    raise SplitNotFoundError(
        f"no {spec.name} {split} data for language {language!r}. Tried:\n"
        + "".join(f"  - {t}\n" for t in tried)
        + f"Set data.files[{key!r}] to a file, data.dir to a folder in the XTREME layout, "
        "or enable the hub (data.hub: true) when the network is available."
    )


def _from_hub(
    task: TaskSpec, language: str, split: str, repo: str, cache_dir: str | Path | None
) -> SplitData:
    config = task.hub.config_for(language)
    hub_split = task.hub.split_for(split)
    what = f"hub dataset {repo!r} config {config!r} split {hub_split!r}"
    try:
        dataset = datasets.load_dataset(
            repo, config, split=hub_split, cache_dir=str(cache_dir) if cache_dir is not None else None
        )
    except (ConnectionError, TimeoutError) as err:
        raise HubUnreachableError(
            f"could not reach the Hugging Face hub for {what}: {err}. Without network access, point "
            f"data.dir at a local copy in the XTREME layout or set data.files['{split}.{language}'] to a file."
        ) from err
    except (ValueError, FileNotFoundError) as err:
        if "Unknown split" in str(err):
            raise SplitNotFoundError(f"{what}: no such split ({err})") from err
        raise DataSourceError(f"{what}: {err}") from err
    origin = Origin(hub_repo=repo, hub_config=config, hub_split=hub_split)
    examples, skipped = _examples_from_hub(task, dataset, str(origin))
    log.info("%s %s %s: %d examples from %s", task.name, language, split, len(examples), origin)
    return SplitData(task.name, language, split, examples, origin, skipped)


def _label_names(dataset: datasets.Dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel column (or of a list of ClassLabels); None for plain strings."""
    feature = dataset.features[column]
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _examples_from_hub(
    task: TaskSpec, dataset: datasets.Dataset, source: str
) -> tuple[list[Example], Counter[str]]:
    """Convert hub rows to examples, checking labels like the file readers do."""
    columns = task.hub.columns
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataSourceError(
            f"{source}: expected columns {', '.join(columns)}; missing {', '.join(missing)} "
            f"(found {', '.join(dataset.column_names)})"
        )
    table = LabelTable(task.labels, task.aliases)
    names = _label_names(dataset, columns[-1])

    def label(raw: int | str, row: int) -> str:
        if names is not None:
            if not 0 <= raw < len(names):
                raise DataFormatError(source, row, f"label id {raw} outside 0..{len(names) - 1}", unit="row")
            raw = names[raw]
        return table.canonical(raw, source, row, unit="row")

    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    data = dataset.to_dict()
    if task.kind == TOKEN_CLASSIFICATION:
        for row, (tokens, tags) in enumerate(zip(data[columns[0]], data[columns[1]], strict=True)):
            if len(tokens) != len(tags):
                raise DataFormatError(source, row, f"{len(tokens)} tokens but {len(tags)} tags", unit="row")
            if not tokens:
                skipped["empty sentences"] += 1
                continue
            examples.append(
                TokenExample(tuple(tokens), tuple(label(t, row) for t in tags), f"{source}#{row}")
            )
    else:
        rows = zip(data[columns[0]], data[columns[1]], data[columns[2]], strict=True)
        for row, (text_a, text_b, raw) in enumerate(rows):
            examples.append(PairExample(text_a, text_b, label(raw, row), f"{source}#{row}"))
    if skipped:
        log.info("%s: skipped %s", source, dict(skipped))
    return examples, skipped


def available_languages(task: TaskSpec | str, split: str, data_dir: str | Path) -> list[str]:
    """The sorted language codes that have a file for `split` of `task` in the XTREME-layout folder."""
    spec = _resolve_task(task)
    _check_split(split)
    root = Path(data_dir)
    found: set[str] = set()
    for pattern in spec.local.file_patterns:
        prefix, _, suffix = pattern.format(split=split, lang="\0").partition("\0")
        for path in (root / spec.local.folder).glob(f"{prefix}*{suffix}"):
            lang = path.name[len(prefix) : len(path.name) - len(suffix)]
            if _LANG_CODE.fullmatch(lang):
                found.add(lang)
    if spec.local.ud_treebanks:
        found |= {p.name.split("_", 1)[0] for p in root.glob(f"ud/UD_*/*_*-ud-{split}.conllu")}
    return sorted(found)
