"""One model per target language: EWC as the L2/EWC paper runs it ("Frustratingly simple regularization
to improve zero-shot cross-lingual robustness", Section 4.2: "we fine-tune the model for each target
language separately", each with the Fisher of that language; Appendix A illustrates it).

An `ewc` method whose `fisher` is a mapping `{target language: file}` turns one run into one
sub-run per target, `<run>/target-<lang>/`, each an ordinary run folder (its own seeds, checkpoints,
resume) trained with that language's Fisher and evaluated on the sources and that language only. The
run's own `seed-<s>/results.json` then holds each target's score from its own model and, for a source
language, the mean of the per-target models' scores on it (every model is trained on the same source
data; they differ only in their Fisher); `per_target` in results.json and a line in every table say
so. The mapping's languages are the run's targets: `data.target_languages`, when given, must name
exactly them.
"""

from __future__ import annotations

import dataclasses
from statistics import fmean
from typing import Any

from xlgap.config import ConfigError, ExperimentConfig
from xlgap.data.tasks import TaskSpec
from xlgap.train.scores import split_results

PER_TARGET_NOTE = (
    "one model per target language (ewc with that language's Fisher): each target's score is its own "
    "model's; a source language's score is the mean over the per-target models"
)


def target_configs(cfg: ExperimentConfig) -> dict[str, ExperimentConfig] | None:
    """The config of every target's sub-run when an `ewc` method has one Fisher per target, else None."""
    mapped = [(i, spec) for i, spec in enumerate(cfg.methods) if spec.get("name") == "ewc" and isinstance(spec.get("fisher"), dict)]
    if not mapped:
        return None
    if len(mapped) > 1:
        raise ConfigError(f"methods.{mapped[1][0]}.fisher: only one ewc method may give a Fisher per target language")
    index, spec = mapped[0]
    fishers = spec["fisher"]
    if not fishers:
        raise ConfigError(f"methods.{index}.fisher: expected {{target language: Fisher file}} with at least one language")
    wanted = cfg.data.target_languages
    if wanted is not None and set(wanted) != set(fishers):
        missing, extra = sorted(set(wanted) - set(fishers)), sorted(set(fishers) - set(wanted))
        raise ConfigError(
            f"methods.{index}.fisher: one Fisher per target language; data.target_languages {wanted} "
            + (f"has no Fisher for {missing}" if missing else "")
            + (" and " if missing and extra else "")
            + (f"does not list {extra}" if extra else "")
        )
    overlap = sorted(set(fishers) & set(cfg.data.source_languages))
    if overlap:
        raise ConfigError(f"methods.{index}.fisher: {overlap} are source languages, not targets")
    configs = {}
    for lang in wanted or list(fishers):
        methods = [dict(m) for m in cfg.methods]
        methods[index]["fisher"] = fishers[lang]
        configs[lang] = dataclasses.replace(
            cfg,
            name=f"target-{lang}",
            output_dir=str(cfg.run_dir),
            data=dataclasses.replace(cfg.data, target_languages=[lang]),
            methods=methods,
        )
    return configs


def merge_target_results(cfg: ExperimentConfig, task: TaskSpec, parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One seed's results.json from its per-target sub-runs' (`parts[lang]`): each target's scores from
    its own model, each source's the mean over the models; training figures summed or per target."""
    first = next(iter(parts.values()))
    sources, targets = list(first["sources"]), list(parts)
    merged = {
        **first,
        "name": cfg.name,
        "methods": cfg.methods,
        "targets": targets,
        "best_step": {lang: p["best_step"] for lang, p in parts.items()},
        "steps": sum(p["steps"] for p in parts.values()),
        "train_loss": fmean(p["train_loss"] for p in parts.values()),
        "train_seconds": sum(p["train_seconds"] for p in parts.values()),
        "per_target": {
            "note": PER_TARGET_NOTE,
            "models": {lang: {"folder": f"target-{lang}", "best_step": p["best_step"]} for lang, p in parts.items()},
        },
    }
    if all("wall_seconds" in p for p in parts.values()):
        merged["wall_seconds"] = {k: sum(p["wall_seconds"][k] for p in parts.values()) for k in first["wall_seconds"]}
    for split in ("dev", "test"):
        merged.pop(split, None)
        blocks = {lang: p[split] for lang, p in parts.items() if p.get(split)}
        if not blocks:
            continue
        evaluated: dict[str, dict[str, float]] = {}
        examples: dict[str, int] = {}
        for lang in sources:
            scored = [b for b in blocks.values() if lang in b["examples"]]
            if scored:
                evaluated[lang] = {m: fmean(b["metrics"][m]["scores"][lang] for b in scored) for m in task.metrics}
                examples[lang] = scored[0]["examples"][lang]
        for lang, block in blocks.items():
            if lang in block["examples"]:
                evaluated[lang] = {m: block["metrics"][m]["scores"][lang] for m in task.metrics}
                examples[lang] = block["examples"][lang]
        merged[split] = split_results(evaluated, task, sources, targets, examples)
    return merged
