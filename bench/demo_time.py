"""Wall time of `xlgap demo` from a cold model cache (the bundled encoder is converted first), in each
precision asked for: `auto` (bf16 on a CPU with native bf16 instructions) and `fp32` (what a machine
without them takes).

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
from xlgap.utils.hardware import cpu_has_native_bf16, device_description, resolve_precision


def timed_demo(data_dir: Path, precision: str) -> tuple[float, list[str]]:
    """Seconds of one cold-cache `xlgap demo --precision`, and the lines of its tables."""
    xlgap = Path(sys.executable).with_name("xlgap")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XLGAP_CACHE": str(Path(tmp) / "cache")}
        started = time.perf_counter()
        done = subprocess.run(
            [str(xlgap), "demo", "--data-dir", str(data_dir), "--out", str(Path(tmp) / "demo"), "--precision", precision],
            env=env, capture_output=True, text=True,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"xlgap demo --precision {precision} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, [line for line in done.stdout.splitlines() if line.startswith(("┃", "│", "┏", "┡", "└"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--precisions", default="auto,fp32", help="comma-separated; the first one's table is shown")
    args = parser.parse_args()
    measured = {p: timed_demo(args.data_dir, p) for p in args.precisions.split(",")}
    rows = [
        f"| {p} | {resolve_precision(p)[0]} | **{seconds:.0f} s** ({seconds / 60:.1f} min) |"
        for p, (seconds, _) in measured.items()
    ]
    body = "\n".join(
        [
            "## `xlgap demo` wall time",
            "",
            f"From a cold cache on {device_description('cpu')} (native bf16: {'yes' if cpu_has_native_bf16() else 'no'}): converting the bundled encoder, loading UD POS, DF and FSF",
            "runs with their probes, test on 11 languages, tables and figures (the target is 10 minutes).",
            "",
            "| `--precision` | used | wall time |",
            "|---|---|---|",
            *rows,
            "",
            f"Its table (`--precision {next(iter(measured))}`):",
            "",
            "```",
            *next(iter(measured.values()))[1],
            "```",
        ]
    )
    print(body)
    update_section("demo", body)


if __name__ == "__main__":
    main()
