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


def end_process_group() -> None:
    """Wait for every process, then destroy the default process group (a no-op without one). A process
    that exits with the group alive can abort in interpreter shutdown (SIGABRT from gloo's worker threads
    still holding tensors; pytorch/pytorch#179291), which fails a finished launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
