"""`xlgap trio` and `xlgap interpolate`: the interpolation analysis of Wu, Van Durme and Dredze (2022) on
xlgap runs, and interpolation of a fine-tuned run back towards its pretrained weights.

A trio is three ordinary run folders trained from one config with the same seeds (so the same
initialisation and the same head initialisation at each seed: `build_trainer` seeds before loading the
model), under `<output_dir>/<name>-trio-<source>-<target>/`: `src` (trained on the source only),
`tgt` (the target only) and `bi` (both, one mixed training set: the bilingual model), each with
`save_model: true`; `trio.json` names them. `xlgap interpolate TRIO` then scores, for every seed that
all three finished, the 1D lines from each monolingual model to the bilingual one (Eq. 1-2) and the 2D
plane around the bilingual model (Eq. 3) on the source and target dev sets, and writes
`interpolation/`: the raw grids per seed (`seed-<s>/*.json`, resumable), `summary.json` (normalised
mean, variance and 95% CI per point, the deltas' norm ratio and angle per seed), `summary.md` and the
figures. `xlgap interpolate RUN --to pretrained` scores (1 - alpha) theta_pre + alpha theta_ft of the
encoder (head kept) on the run's dev and test sets, picks alpha on dev by the run's selection rule,
saves that model as `seed-<s>/model-interpolated/` and writes `interpolation-pretrained/`. The grid
math is `xlgap.analysis.interpolate`; the figures are `xlgap.report.interpolation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import torch
import yaml

from xlgap.analysis.interpolate import (
    AffinePoints,
    InterpolationError,
    delta_geometry,
    evaluate_grid,
    line_points,
    normalised,
    paper_grid,
    parameter_state,
    plane_points,
    point_key,
    summarize_seeds,
)
from xlgap.config import ExperimentConfig, load_config
from xlgap.data.tasks import get_task
from xlgap.kinds import kind_of, language_scores
from xlgap.models.load import load_tokenizer, resolve_model
from xlgap.report.interpolation import plot_gap_along_alpha, plot_geometry, plot_lines, plot_plane
from xlgap.train.data import ExperimentData
from xlgap.train.progress import RunProgress
from xlgap.train.run import run_experiment
from xlgap.utils.files import read_json, replace_dir, write_json_atomic, write_text_atomic
from xlgap.utils.markdown import markdown_table

TRIO_FILE = "trio.json"
ROLES = ("src", "tgt", "bi")
PRETRAINED_ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---- the trio ----


def trio_folder(cfg: ExperimentConfig, source: str, target: str) -> Path:
    """Where the trio of `cfg` for the pair (source, target) goes."""
    return Path(cfg.output_dir) / f"{cfg.name}-trio-{source}-{target}"


BILINGUAL = ("uniform", "mixed")


def trio_configs(
    config: Path, source: str, target: str, overrides: Sequence[str] = (), bilingual: str = "uniform"
) -> dict[str, ExperimentConfig]:
    """The three configs of a trio: {"src": source only, "tgt": target only, "bi": both}; each is
    evaluated on both languages' dev sets (the bilingual one has no target left: no gap). The bilingual
    model takes one gradient per language and their mean (`bilingual: uniform`, multi-source training
    with the Uniform combiner, every update holding a batch of each language) or trains on the two
    languages' examples mixed (`mixed`)."""
    if bilingual not in BILINGUAL:
        raise InterpolationError(f"--bilingual {bilingual!r}: expected one of {', '.join(BILINGUAL)}")
    base = load_config(config, list(overrides))
    if source == target:
        raise InterpolationError(f"xlgap trio: the source and the target are both {source!r}")
    folder = trio_folder(base, source, target)
    plan = {"src": ([source], [target]), "tgt": ([target], [source]), "bi": ([source, target], [])}
    combiner = {"bi": ["train.multi_source.combiner=uniform"] if bilingual == "uniform" else []}
    return {
        role: load_config(
            config,
            [
                *overrides,
                f"name={role}",
                f"output_dir={folder}",
                f"data.source_languages={sources}",
                f"data.target_languages={targets}",
                "save_model=true",
                *combiner.get(role, []),
            ],
        )
        for role, (sources, targets) in plan.items()
    }


def run_trio(
    config: Path,
    source: str,
    target: str,
    overrides: Sequence[str] = (),
    progress: RunProgress | None = None,
    bilingual: str = "uniform",
) -> Path:
    """Train (or finish) the three runs of a trio (the bilingual one as `trio_configs` says); returns the
    trio folder."""
    configs = trio_configs(config, source, target, overrides, bilingual)
    folder = configs["bi"].run_dir.parent
    for role in ROLES:  # each run validates its config and data before it writes anything
        if progress is not None:
            progress.console.rule(f"trio {source}-{target}: {role}")
        run_experiment(configs[role], resume=True, progress=progress)
    # written once all three runs exist: a trio folder with trio.json is complete
    write_json_atomic(folder / TRIO_FILE, {"source": source, "target": target, "config": str(config), "overrides": list(overrides), "runs": list(ROLES), "bilingual": bilingual})
    return folder


# ---- loading runs for interpolation ----


@dataclass
class LoadedRun:
    """A finished run folder's config, task and tokenizer, and the data it was evaluated on."""

    folder: Path
    cfg: ExperimentConfig
    data: ExperimentData

    def load_model(self, seed: int) -> Any:
        """The fine-tuned model of `seed` (encoder and head), in float32 on the CPU."""
        return kind_of(self.data.task).load_model(str(saved_model_dir(self.folder, seed)), self.data.task)

    def dtype(self, seed: int) -> torch.dtype | None:
        """The autocast dtype the seed trained and evaluated in (None: full precision)."""
        used = (read_json(self.folder / f"seed-{seed}" / "results.json").get("precision") or {}).get("used", "fp32")
        return PRECISION_DTYPES.get(used)

    def seeds(self) -> list[int]:
        """The seeds that finished with a saved model."""
        return saved_seeds(self.folder, self.cfg.seeds)


def saved_model_dir(folder: Path, seed: int) -> Path:
    """The saved model of `seed` in a run folder; an error naming the fix when the run did not save it."""
    path = folder / f"seed-{seed}" / "model"
    if not (path / "config.json").exists():
        raise InterpolationError(f"{path}: no saved model (rerun {folder} with save_model=true)")
    return path


def saved_seeds(folder: Path, seeds: Sequence[int]) -> list[int]:
    """The seeds of a run folder that finished with a saved model."""
    return [s for s in seeds if (folder / f"seed-{s}" / "model" / "config.json").exists()]


def load_finished_run(folder: Path, test: bool) -> LoadedRun:
    """A run folder with its resolved config and its data (dev sets, and test sets if `test`)."""
    config = folder / "config.yaml"
    if not config.exists():
        raise InterpolationError(f"{folder}: not a run folder (no config.yaml)")
    cfg = load_config(config, [f"eval.test={'true' if test else 'false'}"])
    task = get_task(cfg.data.task)
    tokenizer = load_tokenizer(resolve_model(cfg.model.name, cfg.model.cache_dir))
    return LoadedRun(folder, cfg, ExperimentData(cfg, task, tokenizer))


# ---- xlgap interpolate TRIO ----


def interpolate_trio(
    folder: Path,
    alphas: Sequence[float] | None = None,
    plane: Sequence[float] | None = None,
    select: str = "all",
    batch_size: int = 64,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """The 1D lines (both monolingual models to the bilingual one) and the 2D plane of a trio, for every
    seed all three runs finished; writes `interpolation/` and returns its summary. `plane=()` skips 2D."""
    if not (folder / TRIO_FILE).exists():
        raise InterpolationError(f"{folder}: not a trio folder (no {TRIO_FILE}; make one with xlgap trio)")
    info = read_json(folder / TRIO_FILE)
    source, target = info["source"], info["target"]
    bi = load_finished_run(folder / "bi", test=False)
    seeds = sorted(set.intersection(*(set(saved_seeds(folder / role, bi.cfg.seeds)) for role in ROLES)))
    if not seeds:
        raise InterpolationError(f"{folder}: no seed has all three models saved (run xlgap trio first)")
    # the anchors are always points: alpha 0 and 1 (the two models of a line), a = 0 and 1 (the three
    # models of the plane; (0, 0), the bilingual model, normalises it)
    alphas = sorted({*(paper_grid() if alphas is None else alphas), 0.0, 1.0})
    plane = sorted({*(paper_grid(extra=()) if plane is None else plane), 0.0, 1.0}) if plane != [] else []
    kind, out = kind_of(bi.data.task), folder / "interpolation"
    grids: dict[int, dict[str, Any]] = {}
    geometry: dict[int, dict[str, float]] = {}
    for seed in seeds:
        sets = {lang: bi.data.for_seed(seed).dev[lang] for lang in (source, target)}
        model = bi.load_model(seed)  # the working copy; every point is written into it
        anchors = {"bi": parameter_state(model)}
        for role in ("src", "tgt"):
            anchors[role] = parameter_state(kind.load_model(str(saved_model_dir(folder / role, seed)), bi.data.task))
        dtype, seed_out = bi.dtype(seed), out / f"seed-{seed}"
        grids[seed] = {}
        for mono in ("src", "tgt"):
            points = AffinePoints(model, [anchors[mono], anchors["bi"]], select)
            grids[seed][f"line-{mono}"] = evaluate_grid(
                points, line_points(alphas), sets, seed_out / f"line-{mono}.json", batch_size, dtype, _announce(progress, seed, mono)
            )
        points = AffinePoints(model, [anchors["bi"], anchors["src"], anchors["tgt"]], select)
        delta_src, delta_tgt = points.deltas(origin=0)
        geometry[seed] = delta_geometry(delta_src, delta_tgt)
        if plane:
            grids[seed]["plane"] = evaluate_grid(
                points, plane_points(plane, plane), sets, seed_out / "plane.json", batch_size, dtype, _announce(progress, seed, "2D")
            )
    summary = summarize_trio(grids, geometry, source, target, bi.data.task.metric, alphas, plane, select)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", trio_markdown(summary))
    plot_lines(summary, out / "lines.png")
    if plane:
        plot_plane(summary, out / "plane.png")
    plot_geometry(summary, out / "geometry.png")
    return summary


def _announce(progress: RunProgress | None, seed: int, what: str) -> Any:
    if progress is None:
        return None
    return lambda point: progress.status(f"seed {seed} {what}: point {point.coordinates}")


def summarize_trio(
    grids: dict[int, dict[str, Any]],
    geometry: dict[int, dict[str, float]],
    source: str,
    target: str,
    metric: str,
    alphas: Sequence[float],
    plane: Sequence[float],
    select: str,
) -> dict[str, Any]:
    """Normalised mean / variance / 95% CI over seeds of every line point (by language) and the mean
    normalised plane, plus raw scores and the deltas' geometry."""
    seeds = sorted(grids)
    lines: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for mono in ("src", "tgt"):
        per_seed = [normalised(grids[s][f"line-{mono}"], point_key((1.0,)), metric) for s in seeds]
        lines[mono] = {
            lang: [
                {"alpha": a, **_summary_dict(summarize_seeds([n[point_key((a,))][lang] for n in per_seed])),
                 "raw": fmean(grids[s][f"line-{mono}"][point_key((a,))][lang][metric] for s in seeds)}
                for a in alphas
            ]
            for lang in (source, target)
        }
    result: dict[str, Any] = {
        "source": source,
        "target": target,
        "metric": metric,
        "seeds": seeds,
        "select": select,
        "normalised_by": "the bilingual model (alpha = 1; a1 = a2 = 0) of the same seed",
        "lines": lines,
        "geometry": {str(s): g for s, g in geometry.items()},
    }
    if plane and all("plane" in grids[s] for s in seeds):
        per_seed = [normalised(grids[s]["plane"], point_key((0.0, 0.0)), metric) for s in seeds]
        result["plane"] = {
            "axis": list(plane),
            **{lang: [[fmean(n[point_key((a1, a2))][lang] for n in per_seed) for a2 in plane] for a1 in plane] for lang in (source, target)},
        }
    return result


def _summary_dict(summary: Any) -> dict[str, Any]:
    return {"mean": summary.mean, "variance": summary.variance, "ci_low": summary.low, "ci_high": summary.high, "n": summary.n}


def trio_markdown(summary: dict[str, Any]) -> str:
    """The 1D lines as a table (normalised mean ± CI half-width per language, both directions) and the
    geometry per seed."""
    source, target = summary["source"], summary["target"]
    lines = [
        f"# Interpolation: {source} -> {target} ({summary['metric']}, seeds {summary['seeds']}, parameters `{summary['select']}`)",
        "",
        f"Normalised by {summary['normalised_by']}; ± is the 95% confidence interval's half-width over seeds.",
        "alpha = 0 is the monolingual model, alpha = 1 the bilingual one.",
        "",
    ]
    src, tgt = summary["lines"]["src"], summary["lines"]["tgt"]
    header = ["alpha", f"src-only → bi: {source}", f"src-only → bi: {target}", f"tgt-only → bi: {source}", f"tgt-only → bi: {target}"]
    rows = [
        [f"{point['alpha']:g}", _cell(src[source][i]), _cell(src[target][i]), _cell(tgt[source][i]), _cell(tgt[target][i])]
        for i, point in enumerate(src[source])
    ]
    geometry = [
        [seed, f"{g['norm_first']:.3f}", f"{g['norm_second']:.3f}", f"{g['norm_ratio']:.3f}", f"{g['angle_degrees']:.1f}"]
        for seed, g in summary["geometry"].items()
    ]
    lines += [markdown_table(header, rows), "", markdown_table(["seed", "‖δ_src‖", "‖δ_tgt‖", "ratio", "angle (°)"], geometry)]
    return "\n".join(lines) + "\n"


def _cell(point: dict[str, Any]) -> str:
    if point["ci_high"] is None:
        return f"{point['mean']:.3f}"
    return f"{point['mean']:.3f} ± {(point['ci_high'] - point['ci_low']) / 2:.3f}"


# ---- xlgap interpolate RUN --to pretrained ----


SELECTION_KEY = {"source_dev": "source", "avg_dev": "avg"}


def selection_score(dev: dict[str, dict[str, float]], sources: list[str], targets: list[str], metric: str, selection: str) -> float:
    """The dev score alpha is chosen by: the source dev score for `source_dev` (and `last`, which has no
    dev rule of its own), the average over every dev set for `avg_dev`."""
    present = [t for t in targets if t in dev]
    scores = language_scores({lang: s[metric] for lang, s in dev.items()}, [s for s in sources if s in dev], present)
    return scores[SELECTION_KEY.get(selection, "source")]


def interpolate_to_pretrained(
    folder: Path,
    alphas: Sequence[float] = PRETRAINED_ALPHAS,
    select: str = "all - head",
    batch_size: int = 64,
    progress: RunProgress | None = None,
) -> dict[str, Any]:
    """Score (1 - alpha) theta_pre + alpha theta_ft on the run's dev and test sets for every seed with a
    saved model, choose alpha on dev, save that model, and write `interpolation-pretrained/`; returns
    the summary."""
    run = load_finished_run(folder, test=True)
    seeds = run.seeds()
    if not seeds:
        raise InterpolationError(f"{folder}: no seed has a saved model (rerun it with save_model=true)")
    if 1.0 not in alphas:
        alphas = sorted({*alphas, 1.0})
    task, cfg = run.data.task, run.cfg
    kind, metric = kind_of(task), task.metric
    pretrained = parameter_state(kind.load_model(resolve_model(cfg.model.name, cfg.model.cache_dir), task))
    out = folder / "interpolation-pretrained"
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        data = run.data.for_seed(seed)
        model = run.load_model(seed)
        points = AffinePoints(model, [pretrained, parameter_state(model)], select)
        grid = line_points(alphas)
        dtype = run.dtype(seed)
        dev = evaluate_grid(points, grid, data.dev, out / f"seed-{seed}" / "dev.json", batch_size, dtype, _announce(progress, seed, "dev"))
        test = evaluate_grid(points, grid, data.test, out / f"seed-{seed}" / "test.json", batch_size, dtype, _announce(progress, seed, "test")) if data.test else {}
        chosen = max(alphas, key=lambda a: (selection_score(dev[point_key((a,))], data.sources, data.targets, metric, cfg.eval.selection), a))
        points.move_to(line_points([chosen])[0].weights)
        tmp = folder / f"seed-{seed}" / ".model-interpolated.tmp"
        model.save_pretrained(tmp)
        load_tokenizer(str(saved_model_dir(folder, seed))).save_pretrained(tmp)
        (tmp / "xlgap-interpolation.yaml").write_text(yaml.safe_dump({"alpha": chosen, "from": "pretrained", "select": select, "selection": cfg.eval.selection}))
        replace_dir(tmp, folder / f"seed-{seed}" / "model-interpolated")
        per_seed[seed] = {
            "alpha": chosen,
            "dev": {point_key((a,)): _language_block(dev[point_key((a,))], data.sources, data.targets, metric) for a in alphas},
            "test": {point_key((a,)): _language_block(test[point_key((a,))], data.sources, data.targets, metric) for a in alphas} if test else {},
        }
    summary = summarize_pretrained(per_seed, alphas, metric, cfg.eval.selection, select)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", pretrained_markdown(summary))
    plot_gap_along_alpha(summary, out / "gap.png")
    return summary


def _language_block(scores: dict[str, dict[str, float]], sources: list[str], targets: list[str], metric: str) -> dict[str, Any]:
    by_lang = {lang: s[metric] for lang, s in scores.items()}
    present = [t for t in targets if t in by_lang]
    return {"scores": by_lang, **language_scores(by_lang, [s for s in sources if s in by_lang], present)}


def summarize_pretrained(per_seed: dict[int, dict[str, Any]], alphas: Sequence[float], metric: str, selection: str, select: str) -> dict[str, Any]:
    """Mean over seeds at every alpha (dev and test: per language, source, target average, gap), the
    chosen alphas, and the chosen models against the fine-tuned ones (alpha = 1)."""
    seeds = sorted(per_seed)

    def mean_of(split: str, key: str, alpha: float | None = None) -> float | None:
        values = []
        for s in seeds:
            block = per_seed[s][split].get(point_key((per_seed[s]["alpha"] if alpha is None else alpha,)))
            if block is None or block[key] is None:
                return None
            values.append(block[key])
        return fmean(values)

    table = {
        split: [
            {"alpha": a, **{key: mean_of(split, key, a) for key in ("source", "target_avg", "gap", "avg")}}
            for a in alphas
        ]
        for split in ("dev", "test")
        if all(per_seed[s][split] for s in seeds)
    }
    chosen = {split: {key: mean_of(split, key) for key in ("source", "target_avg", "gap", "avg")} for split in table}
    return {
        "metric": metric,
        "selection": selection,
        "select": select,
        "seeds": seeds,
        "alphas": list(alphas),
        "chosen_alpha": {str(s): per_seed[s]["alpha"] for s in seeds},
        "along_alpha": table,
        "chosen": chosen,
        "fine_tuned": {split: next(row for row in rows if math.isclose(row["alpha"], 1.0)) for split, rows in table.items()},
        "per_seed": {str(s): per_seed[s] for s in seeds},
    }


def pretrained_markdown(summary: dict[str, Any]) -> str:
    """The score and gap at each alpha (mean over seeds) and the dev-chosen model against the fine-tuned one."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"# Interpolation towards the pretrained weights ({summary['metric']}, parameters `{summary['select']}`, seeds {summary['seeds']})",
        "",
        f"theta(alpha) = (1 - alpha) theta_pretrained + alpha theta_finetuned; alpha chosen on dev by `{summary['selection']}`: "
        + ", ".join(f"seed {s}: {a:g}" for s, a in summary["chosen_alpha"].items()),
        "",
    ]
    for split, rows in summary["along_alpha"].items():
        chosen, tuned = summary["chosen"][split], summary["fine_tuned"][split]
        cells = [[f"{r['alpha']:g}", fmt(r["source"]), fmt(r["target_avg"]), fmt(r["gap"])] for r in rows]
        cells.append(["**chosen**", fmt(chosen["source"]), fmt(chosen["target_avg"]), fmt(chosen["gap"])])
        lines += [
            f"## {split}",
            "",
            markdown_table(["alpha", "source", "target avg", "gap"], cells),
            "",
            f"Chosen − fine-tuned ({split}): source {_diff(chosen['source'], tuned['source'])}, target avg "
            f"{_diff(chosen['target_avg'], tuned['target_avg'])}, gap {_diff(chosen['gap'], tuned['gap'])}.",
            "",
        ]
    return "\n".join(lines)


def _diff(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.1f}"
