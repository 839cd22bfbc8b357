"""Writing files so that an interruption never leaves a partial one behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from xlgap.utils.errors import UserError


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


class FileFormatError(UserError, ValueError):
    """A file xlgap wrote (or expects) that does not hold what it should."""


def read_json(path: Path) -> Any:
    """Read a JSON file, naming the file in the error when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise FileFormatError(f"{path}: not valid JSON ({err})") from None
    except UnicodeDecodeError as err:
        raise FileFormatError(f"{path}: not UTF-8 text ({err.reason})") from None


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder `tmp` to `target`, replacing an older one."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
