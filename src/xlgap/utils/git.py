"""The git commit of a source tree, for provenance in results and benchmarks."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.cache
def source_commit(path: Path) -> str | None:
    """The short commit of the checkout holding `path`, with "+dirty" when files under `path` have
    uncommitted changes; None outside a git checkout (an installed package). Read once per process: a
    process runs the code it imported, so commits made while it runs do not relabel its results."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "."], cwd=path, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty.strip() else "")
