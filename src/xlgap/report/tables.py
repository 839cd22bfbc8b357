"""Per-language comparison tables over runs: methods as rows, languages as columns.

Each cell is the mean ± sample std over the run's finished seeds; the last columns are the average
over the target languages and the gap (source - target average). Rendered as a rich table for the
terminal, or as Markdown, CSV or LaTeX for papers.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from xlgap.results import Run, format_mean_std
from xlgap.utils.errors import UserError
from xlgap.utils.markdown import markdown_table


class TableError(UserError, ValueError):
    """Runs that cannot share a table: no scores for the split, different tasks, a missing metric."""


@dataclass
class Comparison:
    """A table of runs x languages for one split, task and metric, with the cells as {mean, std, n} dicts."""

    split: str
    metric: str
    languages: list[str]
    rows: list[tuple[str, list[dict[str, Any] | None]]]
    task: str = ""
    target_languages: dict[str, list[str]] | None = None
    """Per run, the languages its target average covers (they differ when some lack a split)."""
    notes: dict[str, str] | None = None
    """Per run, what a reader must know to read its row (e.g. one model per target language)."""

    def target_note(self) -> str:
        """Which languages the target averages cover (one line, or one per run where they differ), and
        the runs' notes."""
        covered = self.target_languages or {}
        distinct = {tuple(v) for v in covered.values()}
        if len(distinct) == 1:
            (languages,) = distinct
            lines = [f"target avg over {len(languages)} language{'s' * (len(languages) != 1)}: {', '.join(languages)}"]
        else:
            lines = ["; ".join(f"{name}: target avg over {', '.join(v)}" for name, v in covered.items())]
        lines += [f"{name}: {note}" for name, note in (self.notes or {}).items()]
        return "\n".join(lines)

    @property
    def columns(self) -> list[str]:
        """Column headers after the method name."""
        return [*self.languages, "target avg", "gap"]


def comparison(runs: list[Run], split: str = "test", metric: str | None = None) -> Comparison:
    """Compare runs of one task on `split` in one metric (default: the task's selection metric);
    languages in the order of the first run (sources first). Runs of different tasks, or a metric a run
    does not report, are errors: a table never mixes two metrics."""
    summaries = [(run.name, run.summary()) for run in runs]
    usable = [(name, s) for name, s in summaries if split in s]
    if not usable:
        raise TableError(f"none of the runs has {split} scores")
    tasks = sorted({s["task"] for _, s in usable})
    if len(tasks) > 1:
        raise TableError(f"the runs are of different tasks ({', '.join(tasks)}); compare runs of one task per table")
    metric = metric or usable[0][1][split]["metric"]
    for name, summary in usable:
        if metric not in summary[split]["metrics"]:
            known = ", ".join(summary[split]["metrics"])
            raise TableError(f"run {name} has no {split} metric {metric!r}; it has {known}")
    languages: list[str] = []
    for _, summary in usable:
        languages += [lang for lang in summary[split]["metrics"][metric]["scores"] if lang not in languages]
    rows = []
    covered = {}
    for name, summary in usable:
        block = summary[split]["metrics"][metric]
        cells = [block["scores"].get(lang) for lang in languages]
        rows.append((name, [*cells, block.get("target_avg"), block.get("gap")]))
        covered[name] = block.get("target_languages") or [lang for lang in block["scores"] if lang not in summary["sources"]]
    notes = {name: summary["per_target"] for name, summary in usable if "per_target" in summary}
    return Comparison(split, metric, languages, rows, tasks[0], covered, notes)


def to_rich(table: Comparison) -> Table:
    """A rich Table for the terminal."""
    title = f"{table.task} {table.split} {table.metric} (%), mean ± std over seeds"
    out = Table(title=title, caption=table.target_note(), padding=(0, 1), pad_edge=False)
    out.add_column("method", no_wrap=True)
    for column in table.columns:
        out.add_column(column.replace("target avg", "tgt avg"), justify="right", no_wrap=True)
    for name, cells in table.rows:
        out.add_row(name, *(format_mean_std(c) for c in cells))
    return out


def print_table(console: Console, table: Comparison) -> None:
    """Print the table at its natural width, even on a narrow terminal or into a file (no squeezed cells)."""
    rendered = to_rich(table)
    natural = Measurement.get(console, console.options.update_width(10_000), rendered).maximum
    terminal = console.width
    console.width = max(terminal, natural)  # print() cannot render wider than the console itself
    try:
        console.print(rendered, crop=False)
    finally:
        console.width = terminal


def to_markdown(table: Comparison) -> str:
    """The table in Markdown."""
    header = ["method", *table.columns]
    body = markdown_table(header, [[name, *(format_mean_std(c) for c in cells)] for name, cells in table.rows])
    return body + "\n\n" + table.target_note() + "\n"


def to_csv(table: Comparison) -> str:
    """The table as CSV with separate mean and std columns per language."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", *(f"{c} {part}" for c in table.columns for part in ("mean", "std")), "seeds"])
    for name, cells in table.rows:
        values = []
        for cell in cells:
            values += ["", ""] if cell is None else [f"{cell['mean']:.4f}", "" if cell["std"] is None else f"{cell['std']:.4f}"]
        seeds = max((c["n"] for c in cells if c), default=0)
        writer.writerow([name, *values, seeds])
    return buffer.getvalue()


def to_latex(table: Comparison) -> str:
    """The table as a LaTeX tabular (booktabs), cells as mean$_{\\pm std}$."""

    def cell(c: dict[str, Any] | None) -> str:
        if not c:
            return "--"
        return f"{c['mean']:.1f}" if c["std"] is None else f"{c['mean']:.1f}$_{{\\pm {c['std']:.1f}}}$"

    spec = "l" + "r" * len(table.columns)
    lines = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(["Method", *table.columns]) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join([name.replace("_", "\\_"), *(cell(c) for c in cells)]) + " \\\\" for name, cells in table.rows]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "tex": to_latex}
