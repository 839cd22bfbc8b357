"""Progress display for runs: a rich progress bar per seed and one line per probe."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from transformers import TrainerCallback


def describe_record(record: dict[str, Any]) -> str:
    """One line for a probe record: step, loss, source/target scores, gap, FSF phase."""
    parts = [f"step {record['step']:>5}"]
    if record.get("train_loss") is not None:
        parts.append(f"loss {record['train_loss']:.3f}")
    for key, label in (("source", "source"), ("target_avg", "targets"), ("gap", "gap")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.1f}")
    if "phase" in record:
        parts.append(f"phase {record['phase']}")
    return "  ".join(parts)


class RunProgress:
    """Shows training progress (updates, probes, evaluation) on a rich console."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        self.task_id: Any = None

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def show_record(self, record: dict[str, Any]) -> None:
        """Print a probe record as one line above the bar."""
        self.progress.console.print(describe_record(record))

    def show_data(self, provenance: dict[str, dict[str, Any]]) -> None:
        """Print where every data set came from and how much of it is used."""
        table = Table(title="data", box=None, pad_edge=False)
        for column in ("set", "examples", "sequences", "tokens", "from"):
            table.add_column(column, justify="right" if column in ("examples", "sequences", "tokens") else "left")
        for key, info in provenance.items():
            origin = info["origin"]
            if origin is None:
                table.add_row(key, "-", "-", "-", info["note"])
                continue
            where = ", ".join(origin.get("files", [])) or f"hub {origin.get('hub_repo')} {origin.get('hub_config')}"
            if origin.get("subset"):
                where += f" [{origin['subset']}]"
            table.add_row(key, str(info["examples"]), str(info["sequences"]), str(info["tokens"]), where)
        self.console.print(table)

    def status(self, text: str) -> None:
        """Show what is being done now next to the bar."""
        if self.task_id is not None:
            self.progress.update(self.task_id, status=text)

    def callback(self, description: str) -> TrainerCallback:
        """A Trainer callback that drives a new bar labelled `description`."""
        return _ProgressCallback(self, description)


class _ProgressCallback(TrainerCallback):
    def __init__(self, owner: RunProgress, description: str):
        self.owner = owner
        self.description = description

    def on_train_begin(self, args, state, control, **kwargs):
        owner = self.owner
        owner.task_id = owner.progress.add_task(
            self.description, total=state.max_steps, completed=state.global_step, status="training"
        )

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_evaluate:
            status = "probing dev sets"
        else:
            status = "training"
        self.owner.progress.update(self.owner.task_id, completed=state.global_step, status=status)

    def on_evaluate(self, args, state, control, **kwargs):
        self.owner.status("training")
