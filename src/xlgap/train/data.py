"""The data of an experiment: every split it reads, subsets, few-shot draws, encoded once where it can be.

Sources train on their train split (or dev split, `data.train_split: dev`), optionally minus a held-out
dev set (`data.dev_holdout`: for tasks without a dev split, such as XQuAD); every language is
evaluated on its dev split (probes and model selection; languages without one are tested only) and
tested on its test split (languages without one are left out of the test table, with a note).

Zero-shot runs encode everything once for all seeds. Few-shot runs (`data.few_shot: M`) draw M
examples from each target language's full dev set with the seed (keyed by seed and language, so every
method sees the same M examples at a seed), add them to training and keep the rest as that language's
dev set, so their training and dev sets are built per seed; test sets are shared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets

from xlgap.config import ExperimentConfig
from xlgap.data.sampling import subsample_indices, subsample_split
from xlgap.data.sources import SplitData, SplitNotFoundError, available_languages
from xlgap.data.tasks import TaskSpec
from xlgap.kinds import EncodedSplit, EncodeSettings, kind_of, load_split
from xlgap.languages import check_language
from xlgap.utils.errors import UserError

log = logging.getLogger(__name__)


class DataPlanError(UserError, ValueError):
    """The configured data cannot make an experiment (no dev set to select by, too few examples, ...)."""


@dataclass
class SeedData:
    """What one seed trains and evaluates on: training parts by language, and per-language dev, probe
    and test sets; `provenance` says where each came from and what encoding counted."""

    sources: list[str]
    targets: list[str]
    train: dict[str, EncodedSplit]
    dev: dict[str, EncodedSplit]
    probe: dict[str, EncodedSplit]
    test: dict[str, EncodedSplit]
    provenance: dict[str, dict[str, Any]]
    few_shot: dict[str, dict[str, Any]] = field(default_factory=dict)

    def train_dataset(self) -> Dataset:
        """The training rows of every part as one `datasets.Dataset`."""
        parts = [split.dataset() for split in self.train.values()]
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def target_languages(cfg: ExperimentConfig, task: TaskSpec) -> list[str]:
    """The configured targets, or every language of the task with test data (locally or on the hub).

    An explicit empty list means the sources only (no target average, no gap: the bilingual model of
    `xlgap trio`)."""
    sources = cfg.data.source_languages
    where = ""
    if cfg.data.target_languages == []:
        return []
    if cfg.data.target_languages is not None:
        targets = cfg.data.target_languages
    elif cfg.data_dir() and not cfg.data.hub:
        targets = available_languages(task, "test", Path(cfg.data_dir()))
        where = f" (the default is every language with a {task.name} test file in {cfg.data_dir()})"
    else:
        targets = list(task.languages)
    targets = [check_language(t, "data.target_languages") for t in targets if t not in sources]
    if not targets:
        raise DataPlanError(f"data.target_languages: no target language left besides the sources{where}")
    return targets


def encode_settings(cfg: ExperimentConfig, task: TaskSpec) -> EncodeSettings:
    """The encoding settings of `cfg` for `task` (its kind's default length unless data.max_length is set)."""
    return EncodeSettings(
        max_length=cfg.data.max_length or kind_of(task).default_max_length,
        doc_stride=cfg.qa.doc_stride,
        max_query_length=cfg.qa.max_query_length,
        n_best=cfg.qa.n_best,
        max_answer_length=cfg.qa.max_answer_length,
    )


def few_shot_seed(seed: int, language: str) -> int:
    """The sampling seed of a few-shot draw: a function of the run's seed and the language only."""
    digest = hashlib.blake2b(f"few-shot {seed} {language}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def split_off(data: SplitData, indices: list[int], what: str) -> tuple[SplitData, SplitData]:
    """(the examples at `indices`, the others) of `data`, their origins noting the split."""
    chosen = set(indices)
    picked = [data.examples[i] for i in indices]
    rest = [ex for i, ex in enumerate(data.examples) if i not in chosen]
    note = f"{len(picked)} of {len(data)} examples: {what}"
    rest_note = f"{len(rest)} of {len(data)} examples: all but the {what}"
    return (
        dataclasses.replace(data, examples=picked, origin=dataclasses.replace(data.origin, subset=note)),
        dataclasses.replace(data, examples=rest, origin=dataclasses.replace(data.origin, subset=rest_note)),
    )


class ExperimentData:
    """Loads every split an experiment needs up front (so bad data fails before anything is written),
    and builds each seed's `SeedData`."""

    def __init__(self, cfg: ExperimentConfig, task: TaskSpec, tokenizer: Any):
        self.cfg, self.task, self.tokenizer = cfg, task, tokenizer
        folder = cfg.data_dir()
        if folder and not cfg.data.hub and not Path(folder).is_dir():
            raise DataPlanError(
                f"data.dir: {folder} is not a folder (resolved to {Path(folder).resolve()}; relative paths are "
                "read from the working directory). Set data.dir or $XLGAP_DATA to a folder in the XTREME layout"
            )
        self.settings = encode_settings(cfg, task)
        self.sources = [check_language(s, "data.source_languages") for s in cfg.data.source_languages]
        self.targets = target_languages(cfg, task)
        self.notes: dict[str, dict[str, Any]] = {}
        self.train_raw: dict[str, SplitData] = {}
        self.dev_raw: dict[str, SplitData] = {}
        for source in self.sources:
            self.train_raw[source] = self._load(source, cfg.data.train_split)
        for language in self.languages:
            dev = self._optional(language, "dev")
            if dev is not None:
                self.dev_raw[language] = dev
        self._hold_out_source_dev()
        for source, data in self.train_raw.items():
            if cfg.data.max_train_examples is not None and cfg.data.max_train_examples < len(data):
                self.train_raw[source] = subsample_split(data, cfg.data.max_train_examples, cfg.data.sample_seed)
        self._check_dev_sets()
        self.test: dict[str, EncodedSplit] = {}
        if cfg.eval.test:
            for language in self.languages:
                data = self._optional(language, "test")
                if data is not None:
                    self.test[language] = self._encode(self._cap(data, cfg.data.max_test_examples))
        self._train_encoded = {s: self._encode(d) for s, d in self.train_raw.items()}
        self._shared: SeedData | None = None

    @property
    def languages(self) -> list[str]:
        """Sources first, then targets."""
        return [*self.sources, *self.targets]

    # ---- loading ----

    def _load(self, language: str, split: str) -> SplitData:
        cfg = self.cfg
        data_dir = None if cfg.data.hub else cfg.data_dir()
        return load_split(
            self.task,
            language,
            split,
            data_dir=Path(data_dir) if data_dir else None,
            files={k: (Path(v) if v is not None else None) for k, v in cfg.data.files.items()},
            hub=not data_dir,
        )

    def _optional(self, language: str, split: str) -> SplitData | None:
        """A split that a language may lack (XTREME has test-only languages and dev-only copies)."""
        try:
            return self._load(language, split)
        except SplitNotFoundError as err:
            if split == "dev" and language in self.sources and self.cfg.data.dev_holdout is not None:
                return None
            if split == "dev" and language in self.sources and self.cfg.eval.selection != "last":
                raise DataPlanError(
                    f"{err}\nThe source language {language!r} needs a dev set for model selection "
                    f"({self.cfg.eval.selection}): set data.dev_holdout=N to hold out N of its training "
                    "examples, or eval.selection=last"
                ) from None
            what = "tested but left out of the probes and model selection" if split == "dev" else "not tested"
            log.warning("no %s set for %s: it is %s", split, language, what)
            self.notes[f"{split}.{language}"] = {"origin": None, "note": f"no {split} set; {what}"}
            return None

    def _hold_out_source_dev(self) -> None:
        holdout = self.cfg.data.dev_holdout
        if holdout is None:
            return
        for source, data in self.train_raw.items():
            if holdout >= len(data):
                raise DataPlanError(
                    f"data.dev_holdout: {holdout} held-out examples leave nothing to train on in the "
                    f"{len(data)} {self.cfg.data.train_split} examples of {source}"
                )
            indices = subsample_indices(len(data), holdout, self.cfg.data.sample_seed)
            what = f"held out as dev (data.dev_holdout, seed {self.cfg.data.sample_seed})"
            self.dev_raw[source], self.train_raw[source] = split_off(data, indices, what)

    def _check_dev_sets(self) -> None:
        cfg = self.cfg
        if cfg.eval.selection == "source_dev" and not all(s in self.dev_raw for s in self.sources):
            raise DataPlanError("eval.selection: source_dev needs a dev set for every source; set data.dev_holdout")
        if cfg.eval.selection == "avg_dev" and not self.dev_raw:
            raise DataPlanError("eval.selection: avg_dev needs at least one dev set; set data.dev_holdout or use 'last'")
        if cfg.data.few_shot is not None:
            for target in self.targets:
                dev = self.dev_raw.get(target)
                if dev is None or cfg.data.few_shot >= len(dev):
                    have = "no dev set" if dev is None else f"only {len(dev)} dev examples"
                    raise DataPlanError(
                        f"data.few_shot: {cfg.data.few_shot} examples per target are drawn from the dev set, "
                        f"and {target} has {have}"
                    )

    def _cap(self, data: SplitData, limit: int | None) -> SplitData:
        return subsample_split(data, limit, self.cfg.data.sample_seed) if limit is not None and limit < len(data) else data

    def _encode(self, data: SplitData) -> EncodedSplit:
        return kind_of(self.task).encode_split(data, self.task, self.tokenizer, self.settings)

    # ---- per seed ----

    def for_seed(self, seed: int) -> SeedData:
        """The training, dev, probe and test sets of `seed` (the same object for every seed in zero-shot)."""
        if self.cfg.data.few_shot is None:
            if self._shared is None:
                self._shared = self._build(dict(self.dev_raw), {}, {})
            return self._shared
        dev, extra, drawn = dict(self.dev_raw), {}, {}
        for target in self.targets:
            data = self.dev_raw[target]
            indices = subsample_indices(len(data), self.cfg.data.few_shot, few_shot_seed(seed, target))
            shots, dev[target] = split_off(data, indices, f"few-shot training examples (seed {seed})")
            extra[target] = self._encode(shots)
            drawn[target] = {"m": len(indices), "indices": indices, "examples": [_example_id(ex) for ex in shots.examples]}
        return self._build(dev, extra, drawn)

    def _build(self, dev_raw: dict[str, SplitData], extra: dict[str, EncodedSplit], drawn: dict[str, Any]) -> SeedData:
        cfg = self.cfg
        dev = {lang: self._encode(self._cap(data, cfg.data.max_dev_examples)) for lang, data in dev_raw.items()}
        if cfg.eval.probe_examples is None:
            probe = dev
        else:
            probe = {lang: self._encode(self._cap(split_data(s), cfg.eval.probe_examples)) for lang, s in dev.items()}
        train = {**self._train_encoded, **{f"few_shot.{lang}": split for lang, split in extra.items()}}
        provenance = {f"train.{lang}": split.describe() for lang, split in train.items()}
        provenance |= {f"dev.{lang}": split.describe() for lang, split in dev.items()}
        if probe is not dev:
            provenance |= {f"probe.{lang}": split.describe() for lang, split in probe.items()}
        provenance |= {f"test.{lang}": split.describe() for lang, split in self.test.items()}
        provenance |= self.notes
        return SeedData(self.sources, self.targets, train, dev, probe, self.test, provenance, drawn)


def split_data(split: EncodedSplit) -> SplitData:
    """The examples of an encoded split as SplitData again (to subsample and re-encode them)."""
    return SplitData(split.task.name, split.language, split.split, split.examples, split.origin, split.skipped)


def _example_id(example: Any) -> str:
    """What identifies a drawn example in results.json: its question id (QA) or 'file:line'."""
    return getattr(example, "id", None) or example.source
