"""XlgapTrainer: transformers.Trainer with named lr groups, dynamic multipliers, penalties and probes.

It keeps the Trainer's conventions (TrainingArguments, checkpoints, `resume_from_checkpoint`,
`accelerate launch`) and changes these things:

- the default loss is normalised over the whole accumulated batch (train/losses.py: works around
  a transformers bug that inflates the loss of BERT-style heads under gradient accumulation);
- the optimizer has one param group per combination of method groups (`optimizer_groups`), whose lr
  is `schedule(step) x static scale x the methods' dynamic multipliers` (`with_multipliers`);
- `compute_loss` adds the methods' penalties, records the task loss of every update (the statistics
  dynamic methods read, averaged over processes so every rank takes the same decision), and stops
  on a non-finite loss before that update is applied;
- when a method asks for it (`cka_interval()`), every so many updates it measures each layer's CKA to
  the model as passed in (the pretrained one) on the current training batch into `stats.cka` (this
  keeps a frozen copy of that model: its memory once more, and two forward passes per measurement);
- checkpoints also hold those statistics and the methods' state (`xlgap_state.json`), so a resumed
  run takes the same decisions as an uninterrupted one; with `compact_checkpoints`, they hold only the
  trainable weights (the frozen ones are written once, see train/checkpoints.py);
- with a `ProbeLog`, the trainable weights of the best probe so far (by its selection score) are kept
  in memory and in every checkpoint, and `restore_best()` puts them back after training: model
  selection without a checkpoint per probe (use it instead of `load_best_model_at_end`);
- `timing` accumulates the seconds spent in probes and in checkpoints;
- length-grouped batches are drawn from (seed, epoch) alone, so a resumed epoch sees the same batches;
- with a `MultiSource` (train/multi_source.py), every update takes one sub-batch per source language,
  one gradient per language, and the combination its gradient combiner chooses (Uniform, LF-MLF, PCGrad,
  GradVac, MGDA) in place of the one backward pass; the methods' lr groups and penalties still apply (the
  penalty's gradient is added to the combined one);
- an `eval_dataset` that is a dict of per-language `EncodedSplit`s (xlgap's encoded evaluation sets,
  of any task kind) is scored by `xlgap.kinds.evaluate_sets` (one inference pass, the kind's own
  metrics) instead of the Trainer's prediction loop; with a `ProbeLog`, each periodic evaluation
  becomes a `metrics.jsonl` record and adds `eval_select` (the selection score) for
  `metric_for_best_model`. Any other `eval_dataset` goes through `Trainer.evaluate` unchanged.

Use it in your own script like the Trainer: `XlgapTrainer(model, args, ..., method=FineTuningSlowFast())`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy

from xlgap.analysis.cka import layer_cka
from xlgap.kinds import EncodedSplit, classification_loss, evaluate_sets
from xlgap.methods.base import (
    Compose,
    Method,
    OptimizerGroupSpec,
    PrepareContext,
    ReferenceWeights,
    TrainingStats,
    group_multiplier,
    optimizer_groups,
)
from xlgap.train.checkpoints import (
    COMBINER_TENSORS_FILE,
    FROZEN_FILE,
    TENSORS_FILE,
    TRAINABLE_FILE,
    BestWeights,
    CheckpointError,
    load_state_tensors,
    load_training_weights,
    save_state_tensors,
    save_training_weights,
)
from xlgap.train.multi_source import LanguageBatchSampler, MultiSource, trim_padding
from xlgap.train.probes import ProbeLog
from xlgap.train.sampler import EpochSeededLengthGroupedSampler
from xlgap.train.schedule import with_multipliers
from xlgap.utils.errors import UserError
from xlgap.utils.files import read_json, write_json_atomic

STATE_FILE = "xlgap_state.json"
log = logging.getLogger(__name__)


class ParallelismError(UserError, ValueError):
    """One process asked to drive several GPUs (DataParallel), which XlgapTrainer does not support."""


class NonFiniteLossError(UserError, RuntimeError):
    """The training loss became NaN or infinite; no update was applied with it."""


class XlgapTrainer(Trainer):
    """A transformers.Trainer that applies an xlgap Method (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Any = None,
        *trainer_args: Any,
        method: Method | None = None,
        probe: ProbeLog | None = None,
        compact_checkpoints: bool = False,
        cka_inputs: dict[str, torch.Tensor] | None = None,
        context: PrepareContext | None = None,
        multi_source: MultiSource | None = None,
        **trainer_kwargs: Any,
    ):
        if model is None:
            raise ValueError("XlgapTrainer needs `model` (methods prepare it before training); model_init is not supported")
        self.method = method if method is not None else Compose()
        self.probe = probe
        self.compact_checkpoints = compact_checkpoints
        self.cka_inputs = cka_inputs
        self.multi_source = multi_source
        self.best: BestWeights | None = None
        self.timing = {"probes": 0.0, "checkpoints": 0.0}
        self._checkpointing = False
        self.stats = TrainingStats()
        self.group_specs: list[OptimizerGroupSpec] = []
        self.declared_groups: set[str] = set()
        self._update_loss: torch.Tensor | None = None
        self._update_penalties: dict[str, float] | None = None
        self.cka_every = self.method.cka_interval()
        trainer_kwargs.setdefault("compute_loss_func", classification_loss)
        super().__init__(model, args, *trainer_args, **trainer_kwargs)
        self.context = self._prepare_methods(context or PrepareContext())
        if self.args.n_gpu > 1:
            raise ParallelismError(
                f"this process sees {self.args.n_gpu} GPUs and would train with torch.nn.DataParallel, which "
                "XlgapTrainer does not support (its statistics and probes assume one model copy per process). "
                "Start one process per GPU with `accelerate launch -m xlgap run ...` or `torchrun`, or pick one "
                "GPU with CUDA_VISIBLE_DEVICES=0"
            )
        self.base_schedule: Any = None
        self.add_callback(_UpdateBoundary(self))

    def _prepare_methods(self, context: PrepareContext) -> PrepareContext:
        """Run the methods' `prepare` once, with the model on its device, the shared reference copy of
        the parameters they (and the CKA measurements) need taken first, before anything changes."""
        needed = self.method.reference_parameters(self.model)
        if self.cka_every:
            needed |= {name for name, _ in self.model.named_parameters()}
        context.seed = self.args.seed
        context.device = self.args.device
        context.tokenizer = context.tokenizer if context.tokenizer is not None else self.processing_class
        context.references = ReferenceWeights.capture(self.model, needed)
        self.method.prepare(self.model, context)
        return context

    # ---- optimizer and schedule ----

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """AdamW (or `args.optim`) over named groups: one per combination of method groups and decay."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        named = dict(opt_model.named_parameters())
        method_groups = self.method.param_groups(opt_model)
        self.declared_groups = set(method_groups)
        self.group_specs = optimizer_groups(
            named.items(), method_groups, set(self.get_decay_parameter_names(opt_model)), self.args.weight_decay
        )
        trained = {g for spec in self.group_specs for g in spec.member_of}
        for name in sorted(self.declared_groups - trained):
            log.warning("parameter group %s has no trainable parameter (all frozen): its lr multiplier has no effect", name)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        lr = optimizer_kwargs.pop("lr", self.args.learning_rate)
        groups = [
            {
                "params": [named[n] for n in spec.params],
                "weight_decay": spec.weight_decay,
                "lr": lr * spec.scale,
                "name": spec.name,
            }
            for spec in self.group_specs
        ]
        self.optimizer = optimizer_cls(groups, lr=lr, **optimizer_kwargs)
        self.optimizer.register_step_post_hook(lambda optimizer, *_: self._post_step(optimizer))
        return self.optimizer

    def _post_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The methods' `post_step`, with the lr each parameter's group used in the step just taken."""
        lr_by_param = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        named = dict(self.model.named_parameters())
        self.method.post_step(self.model, lambda name: lr_by_param[id(named[name])])

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """The Trainer's schedule (`lr_scheduler_type`, warm-up) times each group's dynamic multiplier."""
        if self.lr_scheduler is not None:
            return self.lr_scheduler
        optimizer = optimizer if optimizer is not None else self.optimizer
        if len(self.group_specs) != len(optimizer.param_groups):
            raise ValueError("XlgapTrainer builds its own optimizer groups; do not pass `optimizers=` to it")
        base = super().create_scheduler(num_training_steps, optimizer)
        self.stats.warmup_steps = self.args.get_warmup_steps(num_training_steps)
        self.stats.total_steps = num_training_steps
        self.base_schedule = base.lr_lambdas[0]
        self.lr_scheduler = with_multipliers(optimizer, base, self.multipliers_at)
        return self.lr_scheduler

    def multipliers_at(self, step: int) -> list[float]:
        """The dynamic multiplier of every optimizer group for the next update.

        The methods see the number of recorded update losses, not the scheduler's step: the two differ
        after an update the optimizer skipped (fp16 overflow), where the scheduler does not advance.
        """
        wanted = self.method.lr_multipliers(len(self.stats.losses), self.stats)
        undeclared = sorted(set(wanted) - self.declared_groups)
        if undeclared:
            raise ValueError(f"methods asked for multipliers of groups they did not declare: {undeclared}")
        return [group_multiplier(spec.member_of, wanted) for spec in self.group_specs]

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """Length-grouped batches that a resumed run reproduces exactly (see train/sampler.py)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        columns = getattr(dataset, "column_names", ())
        if self.args.train_sampling_strategy != "group_by_length" or "input_ids" not in columns:
            return super()._get_train_sampler(train_dataset)
        # The Trainer has already dropped the `length` column (not a model input) at this point.
        lengths = dataset[self.args.length_column_name] if self.args.length_column_name in columns else None
        if lengths is None:
            lengths = [len(ids) for ids in dataset["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # The global batch of an update: the processes then take consecutive slices of the same order,
        # so N processes see the batches of one process with an N times larger batch.
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        return EpochSeededLengthGroupedSampler(batch, list(lengths), seed)

    def get_train_dataloader(self) -> Any:
        """The Trainer's loader, or for multi-source training one whose batches hold B examples of every
        language (B = per-language batch x processes), not sharded: each process takes its rows."""
        if self.multi_source is None:
            return super().get_train_dataloader()
        ms = self.multi_source
        dataset = self.train_dataset
        if len(dataset) != sum(ms.sizes):
            raise ValueError(f"the training set has {len(dataset)} rows, the languages {ms.sizes} (sum {sum(ms.sizes)})")
        column = self.args.length_column_name
        lengths = dataset[column] if column in dataset.column_names else [len(ids) for ids in dataset["input_ids"]]
        bounds = [sum(ms.sizes[:t]) for t in range(len(ms.sizes) + 1)]
        sampler = LanguageBatchSampler(
            [list(lengths[bounds[t] : bounds[t + 1]]) for t in range(len(ms.sizes))],
            ms.batch_per_language * self.args.world_size,
            self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            self.args.train_sampling_strategy == "group_by_length",
        )
        return _EpochDataLoader(
            self._remove_unused_columns(dataset, description="training"),
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The Trainer's prefetch of an update's micro-batches; multi-source runs also count each
        language's labelled items in them (every process sees the global batches)."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.multi_source is not None:
            self.multi_source.count_items(batches, self.args.world_size)
        return batches, num_items

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """The Trainer's step, or the multi-source step (`_multi_source_step`)."""
        if self.multi_source is None:
            return super().training_step(model, inputs, num_items_in_batch)
        return self._multi_source_step(model, inputs)

    def _multi_source_step(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """One micro-batch of a multi-source update: a forward pass and a gradient per language into the
        buffer; at the update's last micro-batch the combination is written into `.grad`, the penalty's
        gradient added, and the per-language losses recorded (see train/multi_source.py)."""
        ms = self.multi_source
        model.train()
        inputs = self._prepare_inputs(inputs)
        unwrapped = self.accelerator.unwrap_model(model)
        rank, world = self.args.process_index, self.args.world_size
        subs = [trim_padding({k: v[ms.rows(t, rank, world)] for k, v in inputs.items()}) for t in range(len(ms.languages))]
        if ms.losses is None:
            ms.start_update(unwrapped)
            self._measure_cka(model, subs[0])
        share = torch.zeros((), device=self.args.device)
        for t, sub in enumerate(subs):
            labels = sub.pop("labels")
            with self.compute_loss_context_manager():
                outputs = unwrapped(**sub)
                loss = self.compute_loss_func(outputs, labels, num_items_in_batch=max(ms.items[t], 1.0))
            ms.add_language(t, loss)
            share = share + loss.detach() / len(ms.languages)
        if self.accelerator.sync_gradients:
            self._finish_multi_source_update(unwrapped)
        return share * world  # the Trainer averages the logged loss over processes

    def _finish_multi_source_update(self, model: nn.Module) -> None:
        ms = self.multi_source
        losses = ms.reduce_update(self.args.world_size)
        if not torch.isfinite(losses).all():
            raise NonFiniteLossError(
                f"the training loss of the source languages {ms.languages} is {losses.tolist()} at update "
                f"{self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}); the update was not applied "
                "and the last checkpoint is intact. Lower the learning rate, check the data, or use fp32."
            )
        weights = ms.combine_update(len(self.stats.losses), self.args.seed, self.args.world_size)
        terms = method_penalties(self.method, model)
        if terms:
            penalty = torch.stack(list(terms.values())).sum()
            if not torch.isfinite(penalty):
                raise NonFiniteLossError(f"the methods' penalty is {float(penalty)} at update {self.state.global_step + 1}")
            penalty.backward()
            self._update_penalties = {name: float(t.detach()) for name, t in terms.items()}
        self._update_loss = losses.mean().to(self.args.device)
        self.stats.language_losses.append([float(x) for x in losses])
        self.stats.combiner_weights.append([float(x) for x in (weights if weights.dim() == 1 else weights.mean(0))])

    # ---- loss ----

    def _loss_is_scaled(self, num_items_in_batch: Any) -> bool:
        """Whether the loss is already normalised over the whole accumulated batch (Trainer's rule)."""
        if self.loss_is_scaled_for_ga is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """Task loss plus the methods' penalty; records the task loss and stops on NaN/inf (on every
        process at once: the processes agree before any of them stops)."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            self._measure_cka(model, inputs)
            # Per-micro-batch shares that sum to the update's mean loss, however the Trainer scales it.
            scaled = self._loss_is_scaled(num_items_in_batch)
            share = loss.detach() if scaled else loss.detach() / self.current_gradient_accumulation_steps
            terms = method_penalties(self.method, self.accelerator.unwrap_model(model))
            if terms:
                penalty = torch.stack(list(terms.values())).sum()
                # Count the penalty once per update: the Trainer divides unscaled losses by the
                # accumulation steps itself.
                loss = loss + (penalty / self.current_gradient_accumulation_steps if scaled else penalty)
                if self._update_penalties is None:  # the weights, hence the penalties, are the update's
                    self._update_penalties = {name: float(t.detach()) for name, t in terms.items()}
            bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
            if self.args.world_size > 1:
                bad = self.accelerator.reduce(bad, reduction="sum")
            if bad.item():
                raise NonFiniteLossError(
                    f"the training loss is {loss.detach().float().mean().item()} (with the methods' penalty) at update "
                    f"{self.state.global_step + 1} (epoch {self.state.epoch or 0:.2f}) on at least one process; the "
                    "update was not applied and the last checkpoint is intact. Lower the learning rate, check the "
                    "data, or use fp32."
                )
            self._update_loss = share if self._update_loss is None else self._update_loss + share
        return (loss, outputs) if return_outputs else loss

    def _measure_cka(self, model: nn.Module, inputs: dict[str, Any]) -> None:
        """Every `cka_every` updates, at the update's first micro-batch: each layer's CKA to the reference on
        the fixed `cka_inputs` (else on this micro-batch), under the training autocast (mean over
        processes, so every rank takes the same decision)."""
        step = self.state.global_step
        if not self.cka_every or step % self.cka_every or (self.stats.cka and self.stats.cka[-1]["step"] == step):
            return
        unwrapped = self.accelerator.unwrap_model(model)
        device = next(unwrapped.parameters()).device
        if self.cka_inputs is not None:
            inputs = {k: v.to(device) for k, v in self.cka_inputs.items()}
        reference = self.context.references.tensors
        values = torch.tensor(layer_cka(reference, unwrapped, inputs), device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        self.stats.cka.append({"step": step, "layers": [float(v) for v in values.tolist()]})

    def end_update(self) -> None:
        """Append the finished update's loss (mean over processes) to the statistics."""
        if self._update_loss is None:
            return
        loss = self._update_loss.reshape(1)
        if self.multi_source is None:  # a multi-source update's loss is already summed over processes
            loss = self.accelerator.reduce(loss, reduction="mean")
        self.stats.losses.append(float(loss.item()))
        self._update_loss = None
        if self._update_penalties is not None:
            self.stats.penalties.append(self._update_penalties)
            self._update_penalties = None

    # ---- probes ----

    @property
    def eval_dtype(self) -> torch.dtype | None:
        """The autocast dtype of evaluation: the training precision (None: full precision)."""
        return torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else None

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Score per-language EncodedSplits with `evaluate_sets` (other datasets: Trainer.evaluate); the
        periodic evaluation of the probe sets also writes a probe record, once per step."""
        sets = self.eval_dataset if eval_dataset is None else eval_dataset
        if not _is_encoded_sets(sets):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        started = time.perf_counter()
        evaluation = evaluate_sets(self.model, sets, self.args.eval_batch_size, self.eval_dtype)
        # "<prefix>_<lang>/<metric>": trackers show it as eval/<lang>/<metric>, one curve per language
        metrics: dict[str, float] = {
            f"{metric_key_prefix}_{lang}/{name}": value
            for lang, scores in evaluation.scores.items()
            for name, value in scores.items()
        }
        probing = eval_dataset is None and self.probe is not None and metric_key_prefix == "eval"
        if probing:
            step = self.state.global_step
            record = self.probe.build(step, self.state.epoch, evaluation.scores, self.stats, self.method)
            if self.is_world_process_zero() and step > self.probe.last_step:
                self.probe.append(record)
            metrics.update(record_scalars(record, metric_key_prefix))
            if record["select"] is not None and (self.best is None or record["select"] > self.best.score):
                self.best = BestWeights.capture(self.model, step, record["select"])
        seconds = time.perf_counter() - started
        if probing:
            self.timing["probes"] += seconds
        metrics[f"{metric_key_prefix}_runtime"] = round(seconds, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- checkpoints ----

    def method_report(self) -> dict[str, Any]:
        """What the methods did over the run: their own report (e.g. FSF's P1 share), and for every
        method group its mean lr multiplier K and its share of the plain-lr budget (sum of K x schedule
        over sum of schedule, update by update)."""
        losses = self.stats.losses
        per_update = [self.method.lr_multipliers(t, self.stats) for t in range(len(losses))]
        schedule = [self.base_schedule(t) for t in range(len(losses))] if self.base_schedule else [1.0] * len(losses)
        groups = {}
        for group in sorted(self.declared_groups):
            ks = [m.get(group, 1.0) for m in per_update]
            if ks:
                budget = sum(k * s for k, s in zip(ks, schedule, strict=True)) / (sum(schedule) or 1.0)
                groups[group] = {"mean_k": sum(ks) / len(ks), "lr_budget_share": budget}
        report = {**self.method.report(self.stats), "groups": groups}
        if self.multi_source is not None:
            report["multi_source"] = self.multi_source_report()
        return report

    def multi_source_report(self) -> dict[str, Any]:
        """What the combiner did: its own report, each language's mean weight and mean loss, and the
        floats held for gradients."""
        ms = self.multi_source
        weights, losses = self.stats.combiner_weights, self.stats.language_losses
        mean = lambda rows, t: sum(r[t] for r in rows) / len(rows) if rows else None  # noqa: E731
        return {
            "combiner": ms.combiner.name,
            "languages": ms.languages,
            "batch_per_language": ms.batch_per_language,
            "mean_weight": {lang: mean(weights, t) for t, lang in enumerate(ms.languages)},
            "mean_loss": {lang: mean(losses, t) for t, lang in enumerate(ms.languages)},
            "gradient_floats": ms.gradient_floats(),
            **ms.combiner.report(),
        }

    def restore_best(self) -> int | None:
        """Put the trainable weights of the best probe back into the model; returns its step (None
        without probes)."""
        if self.best is None:
            return None
        self.best.restore(self.model)
        return self.best.step

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """Save the best weights and the method's tensors, then the Trainer's checkpoint, and last the
        statistics and method state (`STATE_FILE`): its presence marks a complete checkpoint, so a
        process killed while the Trainer writes its files (not atomically) leaves one that is skipped."""
        started = time.perf_counter()
        folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            folder.mkdir(parents=True, exist_ok=True)
            best = self.best.save(folder) if self.best is not None else None
            method_state = save_state_tensors(self.method.state_dict(), folder / TENSORS_FILE)
            combiner_state = (
                save_state_tensors(self.multi_source.combiner.state_dict(), folder / COMBINER_TENSORS_FILE)
                if self.multi_source is not None
                else None
            )
        self._checkpointing = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._checkpointing = False
        if self.args.should_save:
            state = {"stats": self.stats.state_dict(), "method": method_state, "best": best, "combiner": combiner_state}
            write_json_atomic(folder / STATE_FILE, state)
        self.timing["checkpoints"] += time.perf_counter() - started

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer.save_model; inside a compact checkpoint, only the trainable weights (frozen ones once)."""
        if self._checkpointing and self.compact_checkpoints:
            if self.args.should_save:
                save_training_weights(self.model, Path(output_dir), Path(self.args.output_dir) / FROZEN_FILE)
            return
        super().save_model(output_dir, _internal_call)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if (Path(resume_from_checkpoint) / TRAINABLE_FILE).exists():
            frozen = Path(resume_from_checkpoint).parent / FROZEN_FILE
            load_training_weights(model if model is not None else self.model, Path(resume_from_checkpoint), frozen)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / STATE_FILE
        if not path.exists():
            raise CheckpointError(
                f"{checkpoint} has no {STATE_FILE}: it was not written by XlgapTrainer or is incomplete; "
                "resume from another checkpoint"
            )
        state = read_json(path)
        self.stats.load_state_dict(state["stats"])
        self.method.load_state_dict(load_state_tensors(state["method"], Path(checkpoint) / TENSORS_FILE))
        if state.get("best"):
            self.best = BestWeights.load(Path(checkpoint), state["best"])
        if self.multi_source is not None:
            if state.get("combiner") is None:
                raise CheckpointError(f"{checkpoint} was written by a run without multi-source training; resume it without")
            self.multi_source.combiner.load_state_dict(load_state_tensors(state["combiner"], Path(checkpoint) / COMBINER_TENSORS_FILE))


class _UpdateBoundary(TrainerCallback):
    """Records each update's loss before the scheduler sets the next lr; probes the last update too."""

    def __init__(self, trainer: XlgapTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.end_update()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and args.eval_strategy == IntervalStrategy.STEPS:
            control.should_evaluate = True
            control.should_save = args.save_strategy == IntervalStrategy.STEPS or control.should_save
        return control


class _EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader whose `set_epoch` reaches its batch sampler (the Trainer calls it every epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


def method_penalties(method: Method, model: nn.Module) -> dict[str, torch.Tensor]:
    """Each method's penalty by name (a Compose names its parts), without the ones that are None."""
    if isinstance(method, Compose):
        return method.penalties(model)
    term = method.penalty(model)
    return {method.name: term} if term is not None else {}


def record_scalars(record: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """The numbers of a probe record as tracker scalars: `<prefix>_gap`, `<prefix>_target_avg`, ...,
    `<prefix>_p1` (1 in FSF's phase P1) and `<prefix>_lr_multiplier/<group>`."""
    scalars = {f"{prefix}_{key}": record[key] for key in ("select", "source", "target_avg", "avg", "gap") if record.get(key) is not None}
    if "phase" in record:
        scalars[f"{prefix}_p1"] = float(record["phase"] == "P1")
    scalars.update({f"{prefix}_lr_multiplier/{group}": k for group, k in record.get("lr_multipliers", {}).items()})
    scalars.update({f"{prefix}_penalty/{name}": v for name, v in (record.get("penalties") or {}).items()})
    return scalars


def _is_encoded_sets(sets: Any) -> bool:
    return isinstance(sets, Mapping) and bool(sets) and all(isinstance(v, EncodedSplit) for v in sets.values())


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint in `folder` (one with trainer and xlgap state), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    complete = [
        p
        for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists() and (p / STATE_FILE).exists()
    ]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)

