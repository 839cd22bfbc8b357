"""Run folders: reading them back, and the summary of a run over its seeds.

Layout: `<run>/config.yaml`, `<run>/seed-<s>/metrics.jsonl` (probes), `<run>/seed-<s>/losses.json`
(the loss of every update), `<run>/seed-<s>/cka.json` (CKA measurements, when taken),
`<run>/seed-<s>/results.json` (final per-language scores), `<run>/summary.json` and `<run>/summary.md` (mean ± std over seeds).
Aggregates (source, target average, average, gap) are computed per seed first, then averaged, so
their std is the spread over seeds. Each split is summarised for every metric of the task; the
selection metric's block sits at the top level of the split, every metric's under `metrics`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, stdev
from typing import Any

import yaml

from xlgap.utils.errors import UserError
from xlgap.utils.files import FileFormatError, read_json, write_json_atomic, write_text_atomic
from xlgap.utils.markdown import markdown_table

AGGREGATES = ("source", "target_avg", "avg", "gap")
log = logging.getLogger(__name__)


class NotARunError(UserError, FileNotFoundError):
    """A folder given as a run folder that is not one (no config.yaml)."""


def read_records(path: Path) -> list[dict[str, Any]]:
    """All probe records of a `metrics.jsonl` file (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        # A record is written with its newline in one flushed write: an unterminated last line is a
        # write cut short by a crash, and the probe it belonged to is repeated after resuming.
        log.warning("%s: ignoring an unfinished last line (a write interrupted by a crash)", path)
        lines = lines[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise FileFormatError(f"{path}:{number}: not a JSON record ({err})") from None
    return records


def mean_std(values: list[float]) -> dict[str, Any]:
    """`{"mean", "std", "n"}` of values; std is the sample std (None for a single value)."""
    return {"mean": fmean(values), "std": stdev(values) if len(values) > 1 else None, "n": len(values)}


def _summarize_block(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of one metric's per-language scores and aggregates."""
    languages = list(blocks[0]["scores"])
    return {
        "target_languages": blocks[0].get("target_languages", []),
        "scores": {lang: mean_std([b["scores"][lang] for b in blocks]) for lang in languages},
        **{key: mean_std([b[key] for b in blocks]) for key in AGGREGATES if all(b.get(key) is not None for b in blocks)},
    }


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of every language's dev and test score and of the aggregates, per metric."""
    if not results:
        raise ValueError("no finished seed to summarize")
    first = results[0]
    summary: dict[str, Any] = {
        "name": first["name"],
        "task": first["task"],
        "metric": first["metric"],
        "model": first["model"],
        "methods": first["methods"],
        "selection": first["selection"],
        "sources": first["sources"],
        "targets": first["targets"],
        "seeds": [r["seed"] for r in results],
        "best_steps": [r["best_step"] for r in results],
    }
    if "per_target" in first:
        summary["per_target"] = first["per_target"]["note"]
    reports = [r.get("methods_report") or {} for r in results]
    numbers = sorted({k for rep in reports for k, v in rep.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    summary["methods_report"] = {k: mean_std([rep[k] for rep in reports if rep.get(k) is not None]) for k in numbers}
    summary["methods_settings"] = {
        k: v for k, v in reports[0].items() if isinstance(v, str | dict) and k not in ("groups", "multi_source")
    }
    multi = [rep["multi_source"] for rep in reports if rep.get("multi_source")]
    if multi:
        summary["multi_source"] = {
            "combiner": multi[0]["combiner"],
            "languages": multi[0]["languages"],
            "mean_weight": {lang: mean_std([m["mean_weight"][lang] for m in multi]) for lang in multi[0]["languages"]},
            "failed_solves": sum(m.get("failed_solves", 0) for m in multi),
        }
    groups = sorted({g for rep in reports for g in rep.get("groups", {})})
    summary["groups"] = {
        g: {key: mean_std([rep["groups"][g][key] for rep in reports if g in rep.get("groups", {})]) for key in ("mean_k", "lr_budget_share")}
        for g in groups
    }
    for split in ("dev", "test"):
        if not all(r.get(split) for r in results):
            continue
        metrics = list(first[split]["metrics"])
        per_metric = {m: _summarize_block([r[split]["metrics"][m] for r in results]) for m in metrics}
        summary[split] = {"metric": first[split]["metric"], **per_metric[first[split]["metric"]], "metrics": per_metric}
    return summary


def target_note(block: dict[str, Any]) -> str:
    """The line under a table that says which languages its target average covers."""
    languages = block.get("target_languages") or []
    return f"target avg over {len(languages)} language{'s' * (len(languages) != 1)}: {', '.join(languages)}" if languages else ""


def format_mean_std(cell: dict[str, Any] | None, digits: int = 1) -> str:
    """`mean ± std` (or just the mean for one seed; `-` when missing)."""
    if not cell:
        return "-"
    if cell["std"] is None:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown document: one table per split and metric, languages as columns."""
    lines = [
        f"# {summary['name']}",
        "",
        f"- task: {summary['task']} (selection metric {summary['metric']}, %), model: {summary['model']}",
        f"- methods: {summary['methods'] or 'plain fine-tuning'}; model selection: {summary['selection']}",
        f"- sources: {', '.join(summary['sources'])}; seeds: {summary['seeds']} (best steps {summary['best_steps']})",
        "- cells are mean ± sample std over seeds; target avg excludes the sources; gap = source - target avg",
    ]
    if "per_target" in summary:
        lines.append(f"- {summary['per_target']}")
    for key, value in summary.get("methods_settings", {}).items():
        lines.append(f"- {key}: {value}")
    if "multi_source" in summary:
        multi = summary["multi_source"]
        weights = ", ".join(f"{lang} {format_mean_std(cell, 3)}" for lang, cell in multi["mean_weight"].items())
        failed = f"; failed QP solves over all seeds: {multi['failed_solves']}" if multi["combiner"] == "lf-mlf" else ""
        lines.append(f"- multi-source: {multi['combiner']}, one gradient per source; mean weight {weights}{failed}")
    for key, cell in summary.get("methods_report", {}).items():
        lines.append(f"- {key}: {format_mean_std(cell, 3)}")
    for group, cells in summary.get("groups", {}).items():
        lines.append(
            f"- {group}: mean lr multiplier K {format_mean_std(cells['mean_k'], 3)}, "
            f"share of the plain-lr budget {format_mean_std(cells['lr_budget_share'], 3)}"
        )
    lines.append("")
    for split in ("test", "dev"):
        if split not in summary:
            continue
        for metric, block in summary[split]["metrics"].items():
            langs = list(block["scores"])
            header = [*langs, "target avg", "gap"]
            cells = [format_mean_std(block["scores"][lang]) for lang in langs]
            cells += [format_mean_std(block.get("target_avg")), format_mean_std(block.get("gap"))]
            lines += [f"## {split}: {metric}", "", markdown_table(header, [cells]), "", target_note(block), ""]
    return "\n".join(lines)


@dataclass
class Run:
    """A run folder read back: its config, per-seed results and probe records, and its summary."""

    path: Path
    config: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    losses: dict[int, list[float]] = field(default_factory=dict)
    cka: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    sources: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Multi-source runs: each seed's `sources.json` (per-update losses and weights of every source)."""

    @property
    def name(self) -> str:
        """The experiment name (the folder name when the config has none)."""
        return self.config.get("name") or self.path.name

    def summary(self) -> dict[str, Any]:
        """The summary over the finished seeds."""
        return summarize(self.results)


def seed_dirs(run_dir: Path) -> list[Path]:
    """The `seed-<s>` folders of a run, by seed."""
    return sorted(
        (p for p in Path(run_dir).glob("seed-*") if p.name[5:].lstrip("-").isdigit()), key=lambda p: int(p.name[5:])
    )


def load_run(run_dir: Path) -> Run:
    """Read a run folder; errors say what is missing."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise NotARunError(f"{run_dir} is not an xlgap run folder (no config.yaml)")
    run = Run(run_dir, yaml.safe_load(config_path.read_text(encoding="utf-8")) or {})
    for folder in seed_dirs(run_dir):
        seed = int(folder.name[5:])
        run.records[seed] = read_records(folder / "metrics.jsonl")
        if (folder / "losses.json").exists():
            run.losses[seed] = read_json(folder / "losses.json")
        if (folder / "cka.json").exists():
            run.cka[seed] = read_json(folder / "cka.json")
        if (folder / "sources.json").exists():
            run.sources[seed] = read_json(folder / "sources.json")
        if (folder / "results.json").exists():
            run.results.append(read_json(folder / "results.json"))
    return run


def write_summary(run_dir: Path, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Write `summary.json` and `summary.md` for the finished seeds; returns the summary."""
    summary = summarize(results)
    write_json_atomic(Path(run_dir) / "summary.json", summary)
    write_text_atomic(Path(run_dir) / "summary.md", summary_markdown(summary))
    return summary
