"""Sweeps: the product of config overrides x seeds, run as ordinary run folders under one sweep folder.

A sweep is a base config and grids (`KEY=V1,V2,...`, values in YAML), given on the command line or in
a sweep file (`configs/sweeps/*.yaml`: `config:`, `grid: {key: [values]}`, `seeds:`). A sweep file
may also `zip` keys whose values go together instead of being crossed (EWC: each target language with
its own Fisher). Every point of
the product is one run folder `<sweep>/<index>-<key=value,...>` holding all the seeds, so `xlgap
report`, tables and plots work on it as on any run. Rerunning the sweep skips finished points and
resumes interrupted ones (`run_experiment(resume=True)`); the sweep table and figures are built from
whatever points have finished.

For layer sweeps (a grid over `layers[i]` selectors, Guo et al. Figure 3), `layer_figure` draws the
score per layer, one line per family (e.g. reinit / freeze), with a reference run (plain fine-tuning)
as a horizontal line, and `fsf_sets` derives FSF's sets from it, the way the paper chose them by hand:
re-initialising a layer hurts (its score falls below the reference) -> the layer holds cross-lingual
knowledge -> S1 (policy I); freezing a layer helps (its score rises above the reference) -> S2
(policy II), in the component the family's selector names.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xlgap.config import ConfigError, load_config
from xlgap.launchers import LaunchOptions, run_in_parallel, submit
from xlgap.results import Run, format_mean_std, load_run, seed_dirs
from xlgap.utils.errors import UserError
from xlgap.utils.files import write_text_atomic
from xlgap.utils.markdown import markdown_table

SWEEP_FILE = "sweep.yaml"
_LAYER = re.compile(r"^layers\[(-?\d+)\](\.\w+)?$")


class SweepError(UserError, ValueError):
    """A grid that does not parse, a sweep folder of another sweep, or a sweep with nothing to show."""


@dataclass(frozen=True)
class Grid:
    """One swept key and its values."""

    key: str
    values: tuple[Any, ...]


def split_values(text: str) -> list[str]:
    """Split `a,b,[c,d]` on the commas outside brackets, braces and quotes."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts


def parse_grid(text: str) -> Grid:
    """A `KEY=V1,V2,...` grid (each value parsed as YAML, so `0.1`, `null`, `layers[0:4]` all work)."""
    if "=" not in text:
        raise SweepError(f"--grid {text!r}: expected KEY=V1,V2,..., e.g. methods.1.c1=0.1,0.01")
    key, values = text.split("=", 1)
    parsed = []
    for raw in split_values(values):
        if not raw.strip():
            raise SweepError(f"--grid {text!r}: empty value")
        parsed.append(yaml.safe_load(raw))
    return Grid(key.strip(), tuple(parsed))


def _override_text(value: Any) -> str:
    return value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")


def point_name(index: int, point: dict[str, Any]) -> str:
    """The run-folder name of a sweep point: its index and its `key=value` pairs, made file-safe."""
    label = ",".join(f"{key.split('.')[-1]}={_override_text(v)}" for key, v in point.items())
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9._=+,-]", "_", label)[:120]


@dataclass
class Sweep:
    """A sweep's definition: the base config, its grids (crossed), its zipped keys (varied together,
    their values crossed with the grids as one axis), its seeds, and where it lives."""

    config: Path
    grids: list[Grid]
    seeds: list[int] | None
    folder: Path
    zipped: list[Grid] = field(default_factory=list)

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grids' values (and of the zipped values, taken together), in order."""
        axes: list[list[dict[str, Any]]] = [[{g.key: v} for v in g.values] for g in self.grids]
        if self.zipped:
            lengths = {len(g.values) for g in self.zipped}
            if len(lengths) != 1:
                raise SweepError(f"zip: the keys {[g.key for g in self.zipped]} need as many values each")
            axes.append([{g.key: g.values[i] for g in self.zipped} for i in range(lengths.pop())])
        return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]

    def overrides(self, index: int, point: dict[str, Any]) -> list[str]:
        """The dotted overrides that make the run of one point."""
        extra = [f"{key}={_override_text(value)}" for key, value in point.items()]
        extra += [f"output_dir={self.folder}", f"name={point_name(index, point)}"]
        if self.seeds is not None:
            extra.append(f"seeds={self.seeds}")
        return extra

    def definition(self) -> dict[str, Any]:
        """What `sweep.yaml` records (a rerun must match it); `grid` lists every swept key."""
        return {
            "config": str(self.config.resolve()),
            "grid": {g.key: list(g.values) for g in [*self.grids, *self.zipped]},
            "zip": [g.key for g in self.zipped],
            "seeds": self.seeds,
        }


def load_sweep(path: Path, grids: list[str], seeds: list[int] | None, out: Path | None, name: str | None) -> Sweep:
    """A sweep from a config plus `--grid`s, or from a sweep file (a YAML with `config:` and `grid:`)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"{path}: cannot read it as YAML ({err})") from None
    parsed = [parse_grid(g) for g in grids]
    zipped: list[Grid] = []
    config = path
    if isinstance(raw, dict) and ("grid" in raw or "zip" in raw):
        unknown = sorted(set(raw) - {"config", "grid", "zip", "seeds", "name"})
        if unknown:
            raise SweepError(f"{path}: unknown sweep keys {unknown}; expected config, grid, zip, seeds, name")
        for key in ("grid", "zip"):
            if key in raw and (not isinstance(raw[key], dict) or not raw[key]):
                raise SweepError(f"{path}: '{key}' must map keys to lists of values")
        config = (path.parent / str(raw.get("config", ""))).resolve()
        parsed = [Grid(k, tuple(v if isinstance(v, list) else [v])) for k, v in raw.get("grid", {}).items()] + parsed
        zipped = [Grid(k, tuple(v if isinstance(v, list) else [v])) for k, v in raw.get("zip", {}).items()]
        seeds = seeds if seeds is not None else raw.get("seeds")
        name = name or raw.get("name")
    if not parsed and not zipped:
        raise SweepError("nothing to sweep: give --grid KEY=V1,V2 or a sweep file with a 'grid'")
    base = load_config(config)  # a broken base config fails here, before anything is written
    name = name or f"{base.name}-sweep"
    sweep = Sweep(config, parsed, seeds, Path(out or base.output_dir) / name, zipped)
    for index, point in enumerate(sweep.points()):
        try:
            load_config(config, sweep.overrides(index, point))
        except ConfigError as err:
            raise SweepError(f"sweep point {point}: {err}") from None
    return sweep


def prepare_sweep_folder(sweep: Sweep) -> None:
    """Create the sweep folder, or check that an existing one holds the same sweep."""
    record = sweep.folder / SWEEP_FILE
    if record.exists():
        old = yaml.safe_load(record.read_text(encoding="utf-8"))
        if old != sweep.definition():
            raise SweepError(f"{sweep.folder} holds another sweep ({record} differs); choose another --name")
        return
    write_text_atomic(record, yaml.safe_dump(sweep.definition(), sort_keys=False))


def finished(folder: Path, seeds: list[int]) -> bool:
    """Whether a point's run folder has results for every seed."""
    return all((folder / f"seed-{s}" / "results.json").exists() for s in seeds)


def run_sweep(sweep: Sweep, progress: Any = None, options: LaunchOptions | None = None) -> tuple[list[Path], dict[str, str]]:
    """Run every point not finished yet (resuming interrupted ones) with the launcher of `options`
    (default: one after another in this process); returns the points' run folders and the ids of the
    jobs submitted (empty unless submitted through submitit)."""
    from xlgap.train.run import run_experiment

    options = options or LaunchOptions()
    options.check()
    prepare_sweep_folder(sweep)
    folders, pending = [], {}
    for index, point in enumerate(sweep.points()):
        overrides = sweep.overrides(index, point)
        cfg = load_config(sweep.config, overrides)
        folders.append(cfg.run_dir)
        if not finished(cfg.run_dir, cfg.seeds):
            pending[cfg.run_dir.name] = (str(sweep.config), overrides)
    if options.launcher in ("slurm", "submitit-local"):
        return folders, submit(pending, sweep.folder, options) if pending else {}
    if options.parallel > 1:
        run_in_parallel(list(pending.values()), options.parallel)
        return folders, {}
    for position, (name, (config, overrides)) in enumerate(pending.items()):
        cfg = load_config(config, overrides)
        if progress is not None:
            progress.console.rule(f"sweep point {position + 1}/{len(pending)} to run: {name}")
        run_experiment(cfg, resume=cfg.run_dir.exists(), progress=progress)
    return folders, {}


def finished_runs(folder: Path) -> list[Run]:
    """The sweep's point runs that have at least one finished seed, in point order."""
    runs = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_dir() and (p / "config.yaml").exists()):
        if any((d / "results.json").exists() for d in seed_dirs(path)):
            runs.append(load_run(path))
    return runs


def sweep_rows(folder: Path, split: str = "test") -> list[dict[str, Any]]:
    """One row per finished point: its overrides and its source / target average / gap (mean ± std)."""
    definition = yaml.safe_load((Path(folder) / SWEEP_FILE).read_text(encoding="utf-8"))
    keys = list(definition["grid"])
    rows = []
    for run in finished_runs(folder):
        summary = run.summary()
        if split not in summary:
            continue
        values = {key: _lookup(run.config, key) for key in keys}
        block = summary[split]
        rows.append({"run": run.name, **values, "metric": block["metric"], "source": block.get("source"),
                     "target_avg": block.get("target_avg"), "gap": block.get("gap"), "seeds": len(run.results)})  # fmt: skip
    if not rows:
        raise SweepError(f"{folder}: no finished point has {split} scores yet")
    return rows


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node.get(part)
    return node


def table_markdown(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The sweep table in Markdown: one row per point."""
    header = [*keys, "source", "target avg", "gap", "seeds"]
    cells = [[*(row[k] for k in keys), *(format_mean_std(row[k]) for k in ("source", "target_avg", "gap")), row["seeds"]] for row in rows]
    return markdown_table(header, cells) + "\n"


def table_csv(rows: list[dict[str, Any]], keys: list[str]) -> str:
    """The sweep table as CSV, means and stds in separate columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*keys, *(f"{k} {p}" for k in ("source", "target_avg", "gap") for p in ("mean", "std")), "seeds"])
    for row in rows:
        cells = []
        for key in ("source", "target_avg", "gap"):
            cell = row[key]
            cells += ["", ""] if not cell else [f"{cell['mean']:.4f}", "" if cell["std"] is None else f"{cell['std']:.4f}"]
        writer.writerow([*(row[k] for k in keys), *cells, row["seeds"]])
    return buffer.getvalue()


def layer_families(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """Rows of a layer sweep as {family: {layer: row}}: the key whose values are `layers[i]` selectors
    gives the layer; the other keys' values name the family."""
    layer_keys = [k for k in keys if all(isinstance(r[k], str) and _LAYER.match(r[k]) for r in rows)]
    if not layer_keys:
        raise SweepError("not a layer sweep: no grid key takes values of the form layers[i]")
    (layer_key,) = layer_keys[:1]
    families: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        match = _LAYER.match(row[layer_key])
        family = ",".join(str(row[k]) for k in keys if k != layer_key) + (match.group(2) or "")
        families.setdefault(family or "layer", {})[int(match.group(1))] = row
    return families


def fsf_sets(rows: list[dict[str, Any]], keys: list[str], reference: float, margin: float = 0.0) -> dict[str, str]:
    """FSF's sets from a layer sweep (see the module docstring): S1 = the layers whose re-initialisation
    scores below `reference - margin`; S2 = the layers whose freezing scores above `reference + margin`,
    in the component of the freezing family's selector. Families are recognised by the method name
    (`reinit`, `freeze`) in their label."""
    sets = {}
    for family, layers in layer_families(rows, keys).items():
        scores = {layer: row["target_avg"]["mean"] for layer, row in layers.items() if row.get("target_avg")}
        component = next((f".{c}" for c in ("ffn", "attention") if family.endswith(f".{c}")), "")
        if "reinit" in family:
            chosen = sorted(layer for layer, score in scores.items() if score < reference - margin)
            if chosen:
                sets["I"] = " + ".join(f"layers[{layer}]{component}" for layer in chosen)
        elif "freeze" in family:
            chosen = sorted(layer for layer, score in scores.items() if score > reference + margin)
            if chosen:
                sets["II"] = " + ".join(f"layers[{layer}]{component}" for layer in chosen)
    if not sets:
        raise SweepError("no layer passes the rule: nothing re-initialised hurt and nothing frozen helped")
    return sets
