"""Wall time of `xlgap demo` from a cold model cache (the bundled encoder is converted first).

    python bench/demo_time.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdoc import update_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    xlgap = Path(sys.executable).with_name("xlgap")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XLGAP_CACHE": str(Path(tmp) / "cache")}
        started = time.perf_counter()
        done = subprocess.run(
            [str(xlgap), "demo", "--data-dir", str(args.data_dir), "--out", str(Path(tmp) / "demo")],
            env=env, capture_output=True, text=True,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"xlgap demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    table = [line for line in done.stdout.splitlines() if line.startswith(("┃", "│", "┏", "┡", "└"))]
    body = "\n".join(
        [
            "## `xlgap demo` wall time",
            "",
            f"**{seconds:.0f} s** ({seconds / 60:.1f} min) from a cold cache: converting the bundled encoder, loading",
            "UD POS, DF and FSF runs with their probes, test on 11 languages, tables and figures (the target is",
            "10 minutes). Its table:",
            "",
            "```",
            *table,
            "```",
        ]
    )
    print(body)
    update_section("demo", body)


if __name__ == "__main__":
    main()
