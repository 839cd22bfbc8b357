"""Run an experiment config: load and encode the data once, train every seed, write the run folder.

`<run>/config.yaml` is the resolved config; each seed gets `seed-<s>/` with `metrics.jsonl` (probes),
`checkpoints/` while it trains (removed when the seed is done), `losses.json` (the training loss of
every update, what FSF's phase detector saw), `cka.json` (each layer's CKA to the pretrained model,
when a method measured it), `results.json`, and `model/` when
`save_model` is set; `summary.json` / `summary.md` cover the finished seeds. A run interrupted at any
point resumes with `resume=True`: finished seeds are kept, the others continue from their latest
complete checkpoint with the probe log cut back to it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
import transformers
import yaml
from datasets import Dataset
from transformers import PrinterCallback, ProgressCallback, TrainingArguments, set_seed

import xlgap
from xlgap.config import ExperimentConfig, dump_config
from xlgap.data.encode import collator_for, encode_split
from xlgap.data.sampling import subsample_split
from xlgap.data.sources import SplitData, SplitNotFoundError, available_languages, load_split
from xlgap.data.tasks import TaskSpec, get_task
from xlgap.languages import check_language
from xlgap.methods import build_methods
from xlgap.models.load import load_model, load_tokenizer, resolve_model
from xlgap.results import write_summary
from xlgap.train.evaluate import argmax_logits, language_scores, metric_fn
from xlgap.train.probes import ProbeLog, read_records
from xlgap.train.progress import RunProgress
from xlgap.train.trainer import XlgapTrainer, latest_checkpoint
from xlgap.utils.files import read_json, replace_dir, write_json_atomic

log = logging.getLogger(__name__)


class RunFolderError(RuntimeError):
    """The run folder exists and neither resuming nor overwriting was asked for, or configs differ."""


@dataclass
class ExperimentData:
    """Encoded data of an experiment, shared by its seeds."""

    train: Dataset
    dev: dict[str, Dataset]
    probe: dict[str, Dataset]
    test: dict[str, Dataset]
    sources: list[str]
    targets: list[str]
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)


def target_languages(cfg: ExperimentConfig, task: TaskSpec) -> list[str]:
    """The configured targets, or every language of the task with test data (locally or on the hub)."""
    sources = cfg.data.source_languages
    if cfg.data.target_languages is not None:
        targets = cfg.data.target_languages
    elif cfg.data_dir() and not cfg.data.hub:
        targets = available_languages(task, "test", Path(cfg.data_dir()))
    else:
        targets = list(task.languages)
    targets = [check_language(t, "data.target_languages") for t in targets if t not in sources]
    if not targets:
        raise ValueError("data.target_languages: no target language left besides the sources")
    return targets


def _load(cfg: ExperimentConfig, task: TaskSpec, language: str, split: str) -> SplitData:
    data_dir = None if cfg.data.hub else cfg.data_dir()
    return load_split(
        task,
        language,
        split,
        data_dir=Path(data_dir) if data_dir else None,
        files={k: Path(v) for k, v in cfg.data.files.items()},
        hub=not data_dir,
    )


def prepare_data(cfg: ExperimentConfig, task: TaskSpec, tokenizer: Any) -> ExperimentData:
    """Load, subsample and encode the train split of the sources and the dev/test split of every language."""
    sources = [check_language(s, "data.source_languages") for s in cfg.data.source_languages]
    targets = target_languages(cfg, task)
    provenance: dict[str, dict[str, Any]] = {}

    def encoded(language: str, split: str, limit: int | None, tag: str = "") -> Dataset:
        data = _load(cfg, task, language, split)
        if limit is not None and limit < len(data):
            data = subsample_split(data, limit, cfg.data.sample_seed)
        result = encode_split(data, task, tokenizer, cfg.data.max_length)
        provenance[f"{tag or split}.{language}"] = {"origin": data.origin.to_dict(), **result.stats.as_dict()}
        return result.dataset

    train_parts = [encoded(s, cfg.data.train_split, cfg.data.max_train_examples, "train") for s in sources]
    train = train_parts[0] if len(train_parts) == 1 else _concat(train_parts)
    languages = [*sources, *targets]
    dev = {}
    for lang in languages:
        try:
            dev[lang] = _by_length(encoded(lang, "dev", cfg.data.max_dev_examples))
        except SplitNotFoundError:
            if lang in sources:
                raise
            # XTREME has test-only languages (udpos kk, th, tl, yo): tested, but not probed or selected on.
            log.warning("no dev set for %s: it is tested but left out of the probes and model selection", lang)
            provenance[f"dev.{lang}"] = {"origin": None, "note": "no dev set; left out of probes and selection"}
    if cfg.eval.probe_examples is None:
        probe = dev
    else:
        probe = {lang: _by_length(encoded(lang, "dev", cfg.eval.probe_examples, "probe")) for lang in dev}
    test = {}
    if cfg.eval.test:
        test = {lang: _by_length(encoded(lang, "test", cfg.data.max_test_examples)) for lang in languages}
    return ExperimentData(train, dev, probe, test, sources, targets, provenance)


def _concat(parts: list[Dataset]) -> Dataset:
    from datasets import concatenate_datasets

    return concatenate_datasets(parts)


def _by_length(dataset: Dataset) -> Dataset:
    """Evaluation order by length, longest first, so batches hold sentences of similar length (less padding).

    A stable argsort rather than `Dataset.sort`, which warns under pyarrow >= 25.
    """
    lengths = dataset["length"]
    order = sorted(range(len(dataset)), key=lambda i: -lengths[i])
    return dataset.select(order)


def training_arguments(cfg: ExperimentConfig, seed: int, output_dir: Path) -> TrainingArguments:
    """TrainingArguments for one seed of `cfg`: probes and checkpoints every `eval.every` updates."""
    t = cfg.train
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.scheduler,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        length_column_name="length",
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        eval_strategy="steps",
        eval_steps=cfg.eval.every,
        save_strategy="steps",
        save_steps=cfg.eval.every,
        save_total_limit=1,
        load_best_model_at_end=cfg.eval.selection != "last",
        metric_for_best_model="select",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=cfg.eval.every,
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=t.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
    )


def train_seed(
    cfg: ExperimentConfig,
    seed: int,
    data: ExperimentData,
    task: TaskSpec,
    model_path: str,
    tokenizer: Any,
    resume: bool,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Train and evaluate one seed; write `results.json` in its folder and return the results."""
    seed_dir = cfg.run_dir / f"seed-{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = seed_dir / "checkpoints"
    checkpoint = latest_checkpoint(checkpoints) if resume else None
    probe = ProbeLog(
        seed_dir / "metrics.jsonl",
        task.metric,
        data.sources,
        [t for t in data.targets if t in data.probe],
        cfg.eval.selection,
        on_record=progress.show_record if progress else None,
    )
    probe.truncate(int(checkpoint.name.split("-")[-1]) if checkpoint else 0)

    set_seed(seed)
    model = load_model(model_path, task)
    trainer = XlgapTrainer(
        model,
        training_arguments(cfg, seed, checkpoints),
        train_dataset=data.train,
        eval_dataset=data.probe,
        data_collator=collator_for(task, tokenizer),
        processing_class=tokenizer,
        compute_metrics=metric_fn(task.metric),
        preprocess_logits_for_metrics=argmax_logits,
        method=build_methods(cfg.methods),
        probe=probe,
    )
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    if progress is not None:
        trainer.add_callback(progress.callback(f"seed {seed}"))

    started = time.perf_counter()
    first_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - started
    best_step = trainer.state.global_step if cfg.eval.selection == "last" else trainer.state.best_global_step

    results: dict[str, Any] = {
        "name": cfg.name,
        "seed": seed,
        "task": task.name,
        "metric": task.metric,
        "model": cfg.model.name,
        "methods": cfg.methods,
        "selection": cfg.eval.selection,
        "sources": data.sources,
        "targets": data.targets,
        "best_step": best_step,
        "steps": trainer.state.global_step,
        "train_loss": fmean(trainer.stats.losses),
        "train_seconds": train_seconds,
        "train_steps_timed": trainer.state.global_step - first_step,
        "data": data.provenance,
        "versions": {
            "xlgap": xlgap.__version__,
            "commit": source_commit(),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "device": str(trainer.args.device),
    }
    probed = {r["step"]: r["dev"] for r in read_records(probe.path)}
    for split, sets in (("dev", data.dev), ("test", data.test)):
        if not sets:
            continue
        if split == "dev" and data.probe is data.dev and best_step in probed:
            scores = probed[best_step]  # the selected model was probed on exactly these sets
        else:
            scores = evaluate_languages(trainer, sets, task.metric, split, progress)
        targets = [t for t in data.targets if t in scores]
        results[split] = {"scores": scores, **language_scores(scores, data.sources, targets)}

    if cfg.save_model:
        tmp = seed_dir / ".model.tmp"
        trainer.save_model(str(tmp))
        replace_dir(tmp, seed_dir / "model")
    write_json_atomic(seed_dir / "losses.json", trainer.stats.losses)
    if trainer.stats.cka:
        write_json_atomic(seed_dir / "cka.json", trainer.stats.cka)
    write_json_atomic(seed_dir / "results.json", results)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return results


def source_commit() -> str | None:
    """The git commit of the xlgap source tree (with "+dirty" for uncommitted changes), when it is a checkout."""
    source = Path(xlgap.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "."], cwd=source, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")


def evaluate_languages(
    trainer: XlgapTrainer, sets: dict[str, Dataset], metric: str, split: str, progress: RunProgress | None
) -> dict[str, float]:
    """Score the current model on every language's dataset; returns {language: score}."""
    scores = {}
    for lang, dataset in sets.items():
        if progress is not None:
            progress.status(f"{split} {lang} ({len(dataset)} sequences)")
        metrics = trainer.evaluate(eval_dataset=dataset, metric_key_prefix=f"{split}_{lang}")
        scores[lang] = metrics[f"{split}_{lang}_{metric}"]
    return scores


def prepare_run_folder(cfg: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """Create the run folder, or check it for resuming; refuses to mix two different configs."""
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    elif saved.exists():
        if not resume:
            raise RunFolderError(
                f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        old = yaml.safe_load(saved.read_text(encoding="utf-8"))
        new = cfg.to_dict()
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if changed:
            raise RunFolderError(f"{saved} differs from the config being resumed in: {', '.join(changed)}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderError(f"{run_dir} exists and is not an xlgap run folder; choose another name or output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, saved)


def run_experiment(
    cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False, progress: RunProgress | None = None
) -> dict[str, Any]:
    """Run every seed of `cfg` (skipping finished ones when resuming); returns the summary over seeds."""
    prepare_run_folder(cfg, resume, overwrite)
    task = get_task(cfg.data.task)
    model_path = resolve_model(cfg.model.name, cfg.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    data = prepare_data(cfg, task, tokenizer)
    if progress is not None:
        progress.show_data(data.provenance)
    results = []
    for seed in cfg.seeds:
        done = cfg.run_dir / f"seed-{seed}" / "results.json"
        if resume and done.exists():
            results.append(read_json(done))
            continue
        results.append(train_seed(cfg, seed, data, task, model_path, tokenizer, resume, progress))
        write_summary(cfg.run_dir, results)
    return write_summary(cfg.run_dir, results)
