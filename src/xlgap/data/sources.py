"""Where a task's data comes from: explicit files, a local folder in the XTREME layout, or the hub.

`locate_split` tries, in order: the file given for "<split>.<lang>" in `files`, the local folder
`data_dir`, then the Hugging Face hub when enabled, and returns what it found (files, or the hub's
rows) with an `Origin` that records exactly what was read, so that results can say which data they
came from. Parsing is the job of the task's kind (`xlgap.kinds`), which turns a `Located` into
`SplitData`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets

from xlgap.data.formats import Example
from xlgap.data.tasks import SPLITS, HubLayout, TaskSpec, get_task
from xlgap.languages import check_language
from xlgap.utils.errors import UserError

log = logging.getLogger(__name__)


class DataSourceError(UserError, RuntimeError):
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


def _check_files(files: Mapping[str, str | Path | None]) -> None:
    """Every key of data.files must read '<split>.<lang>' with a known split and language."""
    for key in files:
        split, _, lang = key.partition(".")
        if split not in SPLITS or not lang:
            raise DataSourceError(
                f"data.files[{key!r}]: keys must read '<split>.<lang>' with split one of "
                f"{', '.join(SPLITS)}, e.g. 'train.en' or 'test.de'"
            )
        check_language(lang, f"data.files[{key!r}]")


@dataclass
class Located:
    """What was found for one task/language/split: files to read, or hub rows, and their origin."""

    task: TaskSpec
    language: str
    split: str
    origin: Origin
    paths: list[Path] = field(default_factory=list)
    rows: datasets.Dataset | None = None
    columns: tuple[str, ...] = ()
    """The hub layout's column names for `rows`."""


def _local_candidates(
    task: TaskSpec, language: str, split: str, data_dir: Path
) -> tuple[list[Path], list[str]]:
    """The files to read for a language/split under `data_dir`, and every path or pattern tried."""
    tried: list[str] = []
    for pattern in task.local.for_split(split):
        relative = pattern.for_language(language)
        if relative is None:
            continue
        path = data_dir / relative
        if path.is_file():
            return [path], tried
        tried.append(f"{path} ({'a folder, not a file' if path.is_dir() else 'not found'})")
    if task.local.ud_treebanks:
        # XTREME merges all treebanks of a language, in sorted order.
        pattern = f"ud/UD_*/{language}_*-ud-{split}.conllu"
        matches = sorted(p for p in data_dir.glob(pattern) if p.is_file())
        if matches:
            return matches, tried
        tried.append(f"{data_dir / pattern} (no match)")
    return [], tried


def locate_split(
    task: TaskSpec | str,
    language: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    files: Mapping[str, str | Path | None] | None = None,
    hub: bool = False,
    hub_repo: str | None = None,
    cache_dir: str | Path | None = None,
) -> Located:
    """Find one split ("train", "dev" or "test") of a task for one language; returns a `Located`.

    Tries `files["<split>.<lang>"]`, then the XTREME-layout folder `data_dir`, then the hub if
    `hub` is true or `hub_repo` (which overrides the task's repo id, e.g. a local folder laid out
    like the hub repo) is given. Raises SplitNotFoundError listing every path tried and what to set.
    """
    spec = _resolve_task(task)
    _check_split(split)
    check_language(language, f"{spec.name} {split} language")
    key = f"{split}.{language}"
    tried: list[str] = []
    if files:
        _check_files(files)
        if key in files:
            if files[key] is None:
                raise SplitNotFoundError(f"no {spec.name} {split} data for language {language!r}: data.files[{key!r}] is null")
            path = Path(files[key])
            if not path.is_file():
                what = "is a folder, not a file" if path.is_dir() else "does not exist"
                raise DataSourceError(f"data.files[{key!r}]: {path} {what}")
            return Located(spec, language, split, Origin(files=(str(path.resolve()),)), [path])
    tried.append(f"data.files[{key!r}] (not set)")
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataSourceError(
                f"data directory {root} does not exist (set data.dir to a folder in the XTREME layout)"
            )
        paths, local_tried = _local_candidates(spec, language, split, root)
        if paths:
            return Located(spec, language, split, Origin(files=tuple(str(p.resolve()) for p in paths)), paths)
        tried += local_tried
    else:
        tried.append("data.dir (not set)")
    layout = spec.hub_for(split, language)
    if layout is None:
        tried.append(f"the hub (no {split} split of {spec.name} for {language!r} on the hub)")
    elif hub or hub_repo is not None:
        return _from_hub(spec, layout, language, split, hub_repo or layout.repo, cache_dir)
    else:
        tried.append(f"hub {layout.repo} config {layout.config_for(language)} (hub not enabled)")
    raise SplitNotFoundError(
        f"no {spec.name} {split} data for language {language!r}. Tried:\n"
        + "".join(f"  - {t}\n" for t in tried)
        + f"Set data.files[{key!r}] to a file, data.dir to a folder in the XTREME layout, "
        "or enable the hub (data.hub: true) when the network is available."
    )


def _from_hub(
    task: TaskSpec, layout: HubLayout, language: str, split: str, repo: str, cache_dir: str | Path | None
) -> Located:
    config = layout.config_for(language)
    hub_split = layout.split_for(split)
    what = f"hub dataset {repo!r} config {config!r} split {hub_split!r}"
    try:
        rows = datasets.load_dataset(
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
    prefix = layout.prefix_for(language)
    subset = None
    if prefix is not None:
        if "id" not in rows.column_names:
            raise DataSourceError(f"{what}: expected an 'id' column to tell the languages apart")
        total = len(rows)
        rows = rows.filter(lambda ids: [str(i).startswith(prefix) for i in ids], batched=True, input_columns="id")
        subset = f"{len(rows)} of {total} rows, ids starting with {prefix!r}"
        if not len(rows):
            raise SplitNotFoundError(f"{what}: no rows of language {language!r} (ids starting with {prefix!r})")
    origin = Origin(hub_repo=repo, hub_config=config, hub_split=hub_split, subset=subset)
    missing = [c for c in layout.columns if c not in rows.column_names]
    if missing:
        raise DataSourceError(
            f"{origin}: expected columns {', '.join(layout.columns)}; missing {', '.join(missing)} "
            f"(found {', '.join(rows.column_names)})"
        )
    return Located(task, language, split, origin, rows=rows, columns=layout.columns)


def hub_label_names(dataset: datasets.Dataset, column: str) -> list[str] | None:
    """The names of a ClassLabel column (or of a list of ClassLabels); None for plain strings."""
    feature = dataset.features[column]
    feature = getattr(feature, "feature", feature)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def available_languages(task: TaskSpec | str, split: str, data_dir: str | Path) -> list[str]:
    """The sorted language codes that have a file for `split` of `task` in the XTREME-layout folder."""
    spec = _resolve_task(task)
    _check_split(split)
    root = Path(data_dir)
    found: set[str] = set()
    for pattern in spec.local.for_split(split):
        if "{lang}" not in pattern.path:
            if (root / pattern.path).is_file():
                found |= set(pattern.languages)
            continue
        escaped = re.escape(pattern.path).replace(re.escape("{lang}"), "(?P<lang>[a-z]{2,3})", 1)
        shape = re.compile(escaped.replace(re.escape("{lang}"), "(?P=lang)"))
        for path in root.glob(pattern.path.replace("{lang}", "*")):
            match = shape.fullmatch(path.relative_to(root).as_posix())
            if match and path.is_file():
                found.add(match["lang"])
    if spec.local.ud_treebanks:
        found |= {p.name.split("_", 1)[0] for p in root.glob(f"ud/UD_*/*_*-ud-{split}.conllu")}
    return sorted(found)
