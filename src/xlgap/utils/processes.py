"""Which process of a multi-process launch (`torchrun`, `accelerate launch`) this is, read from the
launcher's environment before any process group exists, so that run folders are created and written by
the main process only."""

from __future__ import annotations

import os


def process_rank() -> int:
    """The global rank of this process (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """True in the process that writes run folders, logs and tables (rank 0)."""
    return process_rank() == 0


def process_count() -> int:
    """The number of processes of the launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))
