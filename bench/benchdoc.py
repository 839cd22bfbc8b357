"""Write a benchmark's results into its own section of docs/benchmarks.md.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; rerunning it
replaces that section with what it measured, the command that measured it, the machine and the commit.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from datetime import date
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def _this_checkouts_module(name: str):
    """`xlgap.utils.<name>` of this checkout, loaded by path: a benchmark may run with an older xlgap
    importable (bench/wall_split.py's 'before' rows), which may lack the module."""
    spec = importlib.util.spec_from_file_location(f"xlgap_bench_{name}", DOC.parents[1] / "src" / "xlgap" / "utils" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


source_commit = _this_checkouts_module("git").source_commit
_hardware = _this_checkouts_module("hardware")


def cpu_description() -> str:
    """The CPU model and threads, and whether it computes bf16 natively (what `precision: auto` reads)."""
    return f"{_hardware.device_description('cpu')}, native bf16: {'yes' if _hardware.cpu_has_native_bf16() else 'no'}"


STARTED_AT_COMMIT = source_commit(DOC.parents[1] / "src") or "unknown"  # the code that ran, even if the tree changes during a long benchmark


def provenance() -> str:
    """One line: date, commit at the start of the benchmark, machine, torch threads, and the exact command."""
    commit = STARTED_AT_COMMIT
    command = " ".join(["python", *[os.path.relpath(sys.argv[0], DOC.parents[1]), *sys.argv[1:]]])
    return (
        f"Measured {date.today()} at commit `{commit}` on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"({cpu_description()}), torch {torch.__version__}. Command: `{command}`"
    )


def add_override_option(parser) -> None:
    """Give a benchmark's argparse `parser` the repeatable `--set KEY=VALUE` (a config override for every
    run, as `xlgap run --set`); the values land in `args.set`."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for every run")


def overrides_note(overrides: list[str]) -> str:
    """The sentence a section carries when its runs were overridden ('' when they were not)."""
    return f" Every run with `{' '.join(overrides)}`." if overrides else ""


def update_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md with `body` plus provenance."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.rstrip()}\n\n{provenance()}\n{end}"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(DOC)
