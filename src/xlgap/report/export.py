"""Every probe and final score of many runs as long-format rows, for users' own analysis.

One row per (run, seed, split, step, language, metric): the run and its method(s), the seed, the
source languages, the language, the split (`probe` for the periodic dev probes, `dev` and `test` for
the selected model), the step (the probe's, or the selected model's), the metric and its value, the
number of examples scored, the selection rule, the precision and the commit. Written as CSV, or as
Parquet (through pandas and pyarrow).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from xlgap.results import Run
from xlgap.utils.errors import UserError
from xlgap.utils.files import write_text_atomic

COLUMNS = ("run", "method", "seed", "sources", "language", "split", "step", "metric", "value", "examples",
           "selection", "precision", "commit")  # fmt: skip


class ExportError(UserError, ValueError):
    """An export target with an unknown extension, or runs with nothing to export."""


def method_label(methods: list[dict[str, Any]], combiner: str | None = None) -> str:
    """The run's methods by name, `+`-joined (`DF` for plain fine-tuning), then a multi-source run's
    gradient combiner."""
    label = "+".join(m.get("name", "?") for m in methods) or "DF"
    return f"{label}+{combiner}" if combiner else label


def rows(runs: list[Run]) -> list[dict[str, Any]]:
    """The long-format rows of `runs` (see the module docstring)."""
    out = []
    for run in runs:
        for result in run.results:
            seed = result["seed"]
            common = {
                "run": run.name,
                "method": method_label(result.get("methods") or [], ((result.get("methods_report") or {}).get("multi_source") or {}).get("combiner")),
                "seed": seed,
                "sources": ",".join(result["sources"]),
                "selection": result["selection"],
                "precision": (result.get("precision") or {}).get("used"),
                "commit": (result.get("versions") or {}).get("commit"),
            }
            data = result.get("data", {})
            for record in run.records.get(seed, []):
                for metric, values in record.get("metrics", {"": record["dev"]}).items():
                    for lang, value in values.items():
                        examples = (data.get(f"probe.{lang}") or data.get(f"dev.{lang}") or {}).get("examples")
                        out.append({**common, "language": lang, "split": "probe", "step": record["step"],
                                    "metric": metric or result["metric"], "value": value, "examples": examples})  # fmt: skip
            for split in ("dev", "test"):
                block = result.get(split)
                if not block:
                    continue
                for metric, values in block["metrics"].items():
                    for lang, value in values["scores"].items():
                        out.append({**common, "language": lang, "split": split, "step": selected_step(result, lang),
                                    "metric": metric, "value": value, "examples": block["examples"].get(lang)})  # fmt: skip
    return out


def selected_step(result: dict, language: str) -> int | None:
    """The step of the model that scored `language`: the seed's selected step, or, with one model per
    target language, that target's model's (None for a source: its score is a mean over the models)."""
    step = result["best_step"]
    return step.get(language) if isinstance(step, dict) else step


def export(runs: list[Run], path: Path) -> int:
    """Write the rows of `runs` to `path` (.csv or .parquet); returns the number of rows."""
    path = Path(path)
    table = rows(runs)
    if not table:
        raise ExportError("nothing to export: none of the runs has a finished seed")
    if path.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table)
        write_text_atomic(path, buffer.getvalue())
    elif path.suffix == ".parquet":
        import pandas as pd

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pd.DataFrame(table, columns=COLUMNS).to_parquet(tmp, index=False)
        tmp.replace(path)
    else:
        raise ExportError(f"-o {path}: expected a .csv or .parquet file name")
    return len(table)
