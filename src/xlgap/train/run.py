"""Run an experiment config: load and encode the data once, train every seed, write the run folder.

`<run>/config.yaml` is the resolved config; each seed gets `seed-<s>/` with `metrics.jsonl` (probes),
`checkpoints/` while it trains (removed when the seed is done), `losses.json` (the training loss of
every update, what FSF's phase detector saw), `cka.json` (each layer's CKA to the pretrained model,
when a method measured it), `sources.json` (multi-source runs: each language's loss and combiner weight
at every update), `results.json`, `predictions/<task>/test-<lang>.<ext>` with
`train.save_predictions`, and `model/` when `save_model` is set; `summary.json` / `summary.md` cover
the finished seeds. Everything is loaded and checked (task, methods, model, every data split) before
the run folder is created. Under `torchrun` or `accelerate launch` every process trains (the Trainer
shards the batches, the methods' statistics are averaged over processes) and only the main process
writes the run folder. A run interrupted at any point resumes with `resume=True`: finished seeds
are kept, the others continue from their latest complete checkpoint with the probe log cut back to it.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
import transformers
import yaml
from transformers import PrinterCallback, ProgressCallback, TrainingArguments, set_seed

import xlgap
from xlgap.combiners import build_combiner
from xlgap.config import ExperimentConfig, config_from_dict, dump_config
from xlgap.data.tasks import TaskSpec, get_task
from xlgap.kinds import EncodedSplit, evaluate_sets, kind_of
from xlgap.kinds.evaluate import fixed_batch
from xlgap.methods import PrepareContext, build_methods
from xlgap.methods.base import ReferenceWeights
from xlgap.models.load import load_tokenizer, resolve_model
from xlgap.results import read_records, summarize, write_summary
from xlgap.train.checkpoints import CheckpointClock
from xlgap.train.data import ExperimentData, SeedData
from xlgap.train.multi_source import MultiSource
from xlgap.train.per_target import merge_target_results, target_configs
from xlgap.train.probes import ProbeLog
from xlgap.train.progress import RunProgress
from xlgap.train.scores import scores_of_record, split_results
from xlgap.train.trainer import XlgapTrainer, latest_checkpoint
from xlgap.utils.errors import UserError
from xlgap.utils.files import read_json, replace_dir, write_json_atomic, write_text_atomic
from xlgap.utils.git import source_commit
from xlgap.utils.hardware import device_description, resolve_precision
from xlgap.utils.processes import is_main_process, process_count

log = logging.getLogger(__name__)
XLGAP_SOURCE = Path(xlgap.__file__).resolve().parent


class RunFolderError(UserError, RuntimeError):
    """The run folder exists and neither resuming nor overwriting was asked for, or configs differ."""


def training_arguments(cfg: ExperimentConfig, seed: int, output_dir: Path, precision: str) -> TrainingArguments:
    """TrainingArguments for one seed of `cfg` in `precision` (resolved, not `auto`): probes every
    `eval.every` updates; checkpoints are asked for by a CheckpointClock, model selection is the
    trainer's best-probe weights (not `load_best_model_at_end`, which would tie checkpoints to probes)."""
    t = cfg.train
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        # transformers reads a value below 1 as a ratio of the run and 1 or more as updates
        warmup_steps=t.warmup_ratio if t.warmup_steps is None else t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        lr_scheduler_type=t.scheduler,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        length_column_name="length",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # without a GPU, mixed precision and several processes (gloo) must be asked for on the CPU explicitly
        # (not always: that would also turn off Apple's MPS)
        use_cpu=not torch.cuda.is_available() and (precision != "fp32" or process_count() > 1),
        eval_strategy="steps",
        eval_steps=cfg.eval.every,
        save_strategy="no",
        save_total_limit=1,
        label_names=["labels"],
        logging_strategy="steps",
        logging_steps=cfg.eval.every,
        # TensorBoard is attached by `build_trainer` with its own folder (the Trainer's default lies
        # inside the checkpoints folder, which is removed when the seed is done)
        report_to=[r for r in t.report_to if r not in ("none", "tensorboard")],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=t.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,
    )


@dataclass
class TrainedSeed:
    """A seed after training: its trainer (holding the selected weights), probe log and timings."""

    trainer: XlgapTrainer
    probe: ProbeLog | None
    best_step: int
    first_step: int
    train_seconds: float
    precision: str
    why: str


def train_seed(
    cfg: ExperimentConfig,
    seed: int,
    data: SeedData,
    task: TaskSpec,
    model_path: str,
    tokenizer: Any,
    resume: bool,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Train and evaluate one seed; write `results.json` (and the other seed files) and return the results."""
    seed_dir = cfg.run_dir / f"seed-{seed}"
    if is_main_process():
        seed_dir.mkdir(parents=True, exist_ok=True)
    trained = train_and_select(cfg, seed, data, task, model_path, tokenizer, resume, progress)
    results = results_header(cfg, seed, data, task, trained)
    started = time.perf_counter()
    final_evaluation(cfg, seed_dir, data, task, trained, results, progress)
    results["wall_seconds"] = wall_time_split(trained.train_seconds, trained.trainer.timing, time.perf_counter() - started)
    if is_main_process():
        write_seed_files(cfg, seed_dir, trained.trainer, results)
    return results


def train_and_select(
    cfg: ExperimentConfig,
    seed: int,
    data: SeedData,
    task: TaskSpec,
    model_path: str,
    tokenizer: Any,
    resume: bool,
    progress: RunProgress | None,
) -> TrainedSeed:
    """Train one seed (from its latest checkpoint when resuming) and restore the weights its selection
    rule picked."""
    checkpoint = latest_checkpoint(cfg.run_dir / f"seed-{seed}" / "checkpoints") if resume else None
    first_step = int(checkpoint.name.split("-")[-1]) if checkpoint else 0
    precision, why = resolve_precision(cfg.train.precision)
    trainer, probe = build_trainer(cfg, seed, data, task, model_path, tokenizer, first_step, precision, progress)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - started
    best_step = trainer.state.global_step if cfg.eval.selection == "last" else trainer.restore_best()
    return TrainedSeed(trainer, probe, best_step, first_step, train_seconds, precision, why)


def results_header(cfg: ExperimentConfig, seed: int, data: SeedData, task: TaskSpec, trained: TrainedSeed) -> dict[str, Any]:
    """The part of results.json that says what ran: config, data, training, methods, versions, hardware."""
    trainer = trained.trainer
    return {
        "name": cfg.name,
        "seed": seed,
        "task": task.name,
        "metric": task.metric,
        "metrics": list(task.metrics),
        "model": cfg.model.name,
        "methods": cfg.methods,
        "selection": cfg.eval.selection,
        "sources": data.sources,
        "targets": data.targets,
        "best_step": trained.best_step,
        "steps": trainer.state.global_step,
        "train_loss": fmean(trainer.stats.losses),
        "train_seconds": trained.train_seconds,
        "train_steps_timed": trainer.state.global_step - trained.first_step,
        "methods_report": trainer.method_report(),
        "schedule": {"warmup_steps": trainer.stats.warmup_steps, "total_steps": trainer.stats.total_steps},
        "data": data.provenance,
        **({"few_shot": data.few_shot} if data.few_shot else {}),
        "versions": {
            "xlgap": xlgap.__version__,
            "commit": source_commit(XLGAP_SOURCE),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "precision": {"requested": cfg.train.precision, "used": trained.precision, "why": trained.why},
        "device": str(trainer.args.device),
        "hardware": device_description(trainer.args.device),
    }


def final_evaluation(
    cfg: ExperimentConfig,
    seed_dir: Path,
    data: SeedData,
    task: TaskSpec,
    trained: TrainedSeed,
    results: dict[str, Any],
    progress: RunProgress | None,
) -> None:
    """Score the selected model on the dev and test sets into `results` (the dev scores of a probed
    step are reused: the probe scored exactly these sets), writing test predictions when asked."""
    trainer = trained.trainer
    probed = {r["step"]: r for r in read_records(trained.probe.path)} if trained.probe else {}
    for split, sets in (("dev", data.dev), ("test", data.test)):
        if not sets:
            continue
        if split == "dev" and data.probe is data.dev and trained.best_step in probed:
            evaluated = scores_of_record(probed[trained.best_step])
        else:
            on_language = (lambda lang, s, split=split: progress.status(f"{split} {lang} ({len(s)} sequences)")) if progress else None
            evaluation = evaluate_sets(trainer.model, sets, cfg.train.eval_batch_size, trainer.eval_dtype, on_language)
            evaluated = evaluation.scores
            if split == "test" and cfg.train.save_predictions and is_main_process():
                results["predictions"] = write_predictions(seed_dir, sets, evaluation.predictions)
        examples = {lang: len(sets[lang].examples) for lang in evaluated}
        results[split] = split_results(evaluated, task, results["sources"], results["targets"], examples)


def write_seed_files(cfg: ExperimentConfig, seed_dir: Path, trainer: XlgapTrainer, results: dict[str, Any]) -> None:
    """The seed's files: `model/` (with save_model), `losses.json`, `cka.json`, and `results.json` last
    (its presence marks the seed done); the checkpoints are removed."""
    if cfg.save_model:
        tmp = seed_dir / ".model.tmp"
        trainer.save_model(str(tmp))
        replace_dir(tmp, seed_dir / "model")
    write_json_atomic(seed_dir / "losses.json", trainer.stats.losses)
    if trainer.stats.cka:
        write_json_atomic(seed_dir / "cka.json", trainer.stats.cka)
    if trainer.multi_source is not None:
        languages = trainer.multi_source.languages
        write_json_atomic(
            seed_dir / "sources.json",
            {"languages": languages, "losses": trainer.stats.language_losses, "weights": trainer.stats.combiner_weights},
        )
    write_json_atomic(seed_dir / "results.json", results)
    shutil.rmtree(seed_dir / "checkpoints", ignore_errors=True)


def build_trainer(
    cfg: ExperimentConfig,
    seed: int,
    data: SeedData,
    task: TaskSpec,
    model_path: str,
    tokenizer: Any,
    first_step: int,
    precision: str,
    progress: RunProgress | None,
) -> tuple[XlgapTrainer, ProbeLog | None]:
    """The XlgapTrainer of one seed (model with a fresh head, methods, probes) and its probe log."""
    seed_dir = cfg.run_dir / f"seed-{seed}"
    kind = kind_of(task)
    probe = None
    if data.probe:
        probe = ProbeLog(
            seed_dir / "metrics.jsonl",
            task.metric,
            [s for s in data.sources if s in data.probe],
            [t for t in data.targets if t in data.probe],
            cfg.eval.selection,
            on_record=progress.show_record if progress else None,
        )
        if is_main_process():
            probe.truncate(first_step)
    set_seed(seed)
    model = kind.load_model(model_path, task)
    args = training_arguments(cfg, seed, seed_dir / "checkpoints", precision)
    if not data.probe:
        args.eval_strategy = "no"
    trainer = XlgapTrainer(
        model,
        args,
        train_dataset=data.train_dataset(),
        eval_dataset=data.probe or None,
        data_collator=kind.collator(tokenizer),
        processing_class=tokenizer,
        compute_loss_func=kind.loss,
        method=build_methods(cfg.methods),
        probe=probe,
        compact_checkpoints=True,
        cka_inputs=fixed_batch(data.probe[data.sources[0]]) if data.sources[0] in data.probe else None,
        context=PrepareContext(
            tokenizer=tokenizer,
            task=task,
            texts={lang: [kind.text_of(ex) for ex in split.examples] for lang, split in data.dev.items()},
        ),
        callbacks=[CheckpointClock(cfg.train.checkpoint_every, cfg.train.checkpoint_minutes), *trackers(cfg, seed_dir)],
        multi_source=multi_source_of(cfg, data),
    )
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    if progress is not None:
        trainer.add_callback(progress.callback(f"seed {seed}"))
    return trainer, probe


def multi_source_of(cfg: ExperimentConfig, data: SeedData) -> MultiSource | None:
    """The multi-source set-up of a seed (its combiner fresh), or None for one mixed training set."""
    multi = cfg.train.multi_source
    if multi.combiner is None:
        return None
    return MultiSource(
        languages=list(data.train),
        sizes=[len(split) for split in data.train.values()],
        batch_per_language=multi.batch_size or cfg.train.batch_size,
        combiner=build_combiner(multi.combiner, multi.options),
    )


def trackers(cfg: ExperimentConfig, seed_dir: Path) -> list[Any]:
    """Tracker callbacks xlgap attaches itself: TensorBoard, writing into `seed-<s>/logs`."""
    if "tensorboard" not in cfg.train.report_to:
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return [TensorBoardCallback(SummaryWriter(log_dir=str(seed_dir / "logs")))]


def wall_time_split(train_seconds: float, timing: dict[str, float], final_seconds: float) -> dict[str, float]:
    """Where a seed's wall time went: training proper, probes, checkpoints, final evaluation (seconds)."""
    split = {
        "training": train_seconds - timing["probes"] - timing["checkpoints"],
        "probes": timing["probes"],
        "checkpoints": timing["checkpoints"],
        "final_evaluation": final_seconds,
    }
    split["total"] = sum(split.values())
    return split


def write_predictions(seed_dir: Path, sets: dict[str, EncodedSplit], predictions: dict[str, list]) -> dict[str, Any]:
    """Write each language's predictions in XTREME's submission layout; returns what was written.

    When a test set is a subset of its file (`data.max_test_examples`), its gold examples are written
    beside the predictions (`test-<lang>.gold.<ext>`) so that `xlgap score` scores the same examples.
    """
    written: dict[str, Any] = {}
    for lang, split in sets.items():
        kind = kind_of(split.task)
        folder = seed_dir / "predictions" / split.task.name
        path = folder / f"test-{lang}.{kind.predictions_suffix}"
        write_text_atomic(path, kind.format_predictions(split, predictions[lang]))
        entry: dict[str, Any] = {"file": str(path.relative_to(seed_dir)), "examples": len(split.examples)}
        if split.origin.subset:
            gold = folder / f"test-{lang}.gold.{kind.predictions_suffix}"
            write_text_atomic(gold, kind.format_examples(split))
            entry["gold"] = str(gold.relative_to(seed_dir))
        written[lang] = entry
    return written


def prepare_run_folder(cfg: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """Create the run folder, or check it for resuming; refuses to mix two different configs (resuming
    with more seeds than the folder was started with is not a different config: it adds those seeds)."""
    run_dir = cfg.run_dir
    saved = run_dir / "config.yaml"
    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    elif saved.exists():
        if not resume:
            raise RunFolderError(
                f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        # Read back through the config loader, so that a key added to xlgap since the run was written
        # compares as its default instead of as a change.
        old = config_from_dict(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, str(saved)).to_dict()
        new = cfg.to_dict()
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if "seeds" in changed and set(old["seeds"]) <= set(new["seeds"]):
            changed.remove("seeds")  # more seeds extend the run; its finished seeds are kept
        if changed:
            raise RunFolderError(f"{saved} differs from the config being resumed in: {', '.join(changed)}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderError(f"{run_dir} exists and is not an xlgap run folder; choose another name or output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, saved)


def check_methods(cfg: ExperimentConfig, task: TaskSpec, model_path: str) -> None:
    """Apply the methods once to the model, so that a selector that matches nothing, two methods that
    claim one group or an option a method refuses fail before the run folder exists."""
    model = kind_of(task).load_model(model_path, task)
    methods = build_methods(cfg.methods)
    references = ReferenceWeights.capture(model, methods.reference_parameters(model))
    methods.prepare(model, PrepareContext(seed=cfg.seeds[0], task=task, references=references))
    methods.param_groups(model)


@dataclass
class PreparedExperiment:
    """What a run needs once its config has been checked: the task, the model, the tokenizer, the data."""

    task: TaskSpec
    model_path: str
    tokenizer: Any
    data: ExperimentData


def prepare_experiment(cfg: ExperimentConfig) -> PreparedExperiment:
    """Check the task, the methods and the combiner, load the model's tokenizer and every data split,
    and apply the methods to the model once: everything that can fail on the user's input, before
    anything is written."""
    task = get_task(cfg.data.task)
    kind_of(task)
    build_methods(cfg.methods)
    if cfg.train.multi_source.combiner is not None:
        build_combiner(cfg.train.multi_source.combiner, cfg.train.multi_source.options)
    model_path = resolve_model(cfg.model.name, cfg.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    data = ExperimentData(cfg, task, tokenizer)
    check_methods(cfg, task, model_path)
    return PreparedExperiment(task, model_path, tokenizer, data)


def run_experiment(
    cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False, progress: RunProgress | None = None
) -> dict[str, Any]:
    """Run every seed of `cfg` (skipping finished ones when resuming); returns the summary over seeds.

    The task, the methods, the model and all data are loaded and checked before the run folder is
    touched. With one EWC Fisher per target language, one model per target (`xlgap.train.per_target`).
    """
    source_commit(XLGAP_SOURCE)  # read now, before a long run: results name the code this process loaded
    targets = target_configs(cfg)
    if targets is not None:
        return run_per_target(cfg, targets, resume, overwrite, progress)
    prepared = prepare_experiment(cfg)
    if is_main_process():  # under torchrun / accelerate launch every process runs this; one writes
        prepare_run_folder(cfg, resume, overwrite)
    return run_seeds(cfg, prepared, resume, progress)


def run_seeds(cfg: ExperimentConfig, prepared: PreparedExperiment, resume: bool, progress: RunProgress | None) -> dict[str, Any]:
    """Train and evaluate every seed of a prepared run into its (existing) folder; returns the summary."""
    data = prepared.data
    if progress is not None:
        progress.show_data(data.for_seed(cfg.seeds[0]).provenance)
    results = []
    for seed in cfg.seeds:
        done = cfg.run_dir / f"seed-{seed}" / "results.json"
        if resume and done.exists():
            results.append(read_json(done))
            continue
        seed_data = data.for_seed(seed)
        results.append(train_seed(cfg, seed, seed_data, prepared.task, prepared.model_path, prepared.tokenizer, resume, progress))
        if is_main_process():
            write_summary(cfg.run_dir, results)
    return write_summary(cfg.run_dir, results) if is_main_process() else summarize(results)


def run_per_target(
    cfg: ExperimentConfig,
    targets: dict[str, ExperimentConfig],
    resume: bool,
    overwrite: bool,
    progress: RunProgress | None,
) -> dict[str, Any]:
    """One sub-run per target language in `<run>/target-<lang>/` (every one checked before anything is
    written), then each seed's results merged into `<run>/seed-<s>/results.json`; returns the summary."""
    prepared = {lang: prepare_experiment(sub) for lang, sub in targets.items()}
    main = is_main_process()
    if main:
        prepare_run_folder(cfg, resume, overwrite)
    for lang, sub in targets.items():
        if main:
            prepare_run_folder(sub, resume, overwrite=False)
        run_seeds(sub, prepared[lang], resume, progress)
    task = next(iter(prepared.values())).task
    results = []
    for seed in cfg.seeds:
        parts = {lang: read_json(sub.run_dir / f"seed-{seed}" / "results.json") for lang, sub in targets.items()}
        results.append(merge_target_results(cfg, task, parts))
        if main:
            (cfg.run_dir / f"seed-{seed}").mkdir(exist_ok=True)
            write_json_atomic(cfg.run_dir / f"seed-{seed}" / "results.json", results[-1])
    return write_summary(cfg.run_dir, results) if main else summarize(results)
