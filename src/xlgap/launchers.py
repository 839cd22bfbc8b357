"""Where a sweep's independent runs execute: one after another in this process (`local`), N at a time
in worker processes of this machine (`local` with `parallel > 1`), or one job per run on a Slurm cluster
through submitit (`slurm`; `submitit-local` runs the same jobs as local processes, which is how the tests
and a laptop check a submission).

Every run is `run_point(config, overrides)`: load the config with the point's overrides and run or
resume it (`run_experiment(resume=True)`), so a job that is resubmitted after a preemption, a time limit
or a crash continues from its latest checkpoint, and a point whose seeds are all finished is never
submitted again. Submitted job ids are recorded in `<sweep>/jobs.json` (point name -> job id, latest
submission last), submitit's logs in `<sweep>/submitit/`. Written on submitit rather than by hand: it
handles Slurm arrays, requeueing and pickling the call.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlgap.utils.errors import UserError
from xlgap.utils.files import read_json, write_json_atomic

LAUNCHERS = ("local", "slurm", "submitit-local")
JOBS_FILE = "jobs.json"


class LaunchError(UserError, ValueError):
    """Launcher options that do not fit together (an unknown launcher, a non-positive count)."""


@dataclass
class LaunchOptions:
    """How to launch: the launcher and its resources (Slurm's only for `slurm` and `submitit-local`)."""

    launcher: str = "local"
    parallel: int = 1
    """local: runs at a time on this machine."""
    partition: str | None = None
    gpus: int = 1
    """GPUs per job (one process per job)."""
    cpus: int = 8
    """CPU cores per job."""
    time_minutes: int = 24 * 60
    array_parallelism: int = 64
    """Jobs of the array that run at once."""
    wait: bool = False
    """Wait for the submitted jobs to finish (and raise if one failed)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More submitit parameters (e.g. `slurm_account`, `slurm_qos`)."""

    def check(self) -> None:
        """Raise LaunchError for options that cannot work."""
        if self.launcher not in LAUNCHERS:
            raise LaunchError(f"--launcher {self.launcher!r}: expected one of {', '.join(LAUNCHERS)}")
        for name in ("parallel", "gpus", "cpus", "time_minutes", "array_parallelism"):
            value = getattr(self, name)
            if value < (0 if name == "gpus" else 1):
                raise LaunchError(f"--{name.replace('_', '-')} {value}: expected a positive number")


def run_point(config: str, overrides: list[str]) -> str:
    """Run or resume one point of a sweep in this process; returns its run folder."""
    from xlgap.config import load_config
    from xlgap.train.run import run_experiment

    cfg = load_config(config, overrides)
    run_experiment(cfg, resume=cfg.run_dir.exists())
    return str(cfg.run_dir)


def run_in_parallel(points: list[tuple[str, list[str]]], parallel: int) -> list[str]:
    """Run the points `parallel` at a time in fresh worker processes; returns their run folders."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=parallel, mp_context=context) as pool:
        return list(pool.map(run_point, *zip(*points, strict=True)))


def submit(points: dict[str, tuple[str, list[str]]], folder: Path, options: LaunchOptions) -> dict[str, str]:
    """Submit one submitit job per point (a Slurm array, or local processes for `submitit-local`),
    record their ids in `folder/jobs.json`; returns point name -> job id. With `options.wait`, waits for
    them and raises the first job's error."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "submitit", cluster="local" if options.launcher == "submitit-local" else "slurm")
    parameters: dict[str, Any] = {
        "timeout_min": options.time_minutes,
        "gpus_per_node": options.gpus,
        "cpus_per_task": options.cpus,
        "slurm_array_parallelism": options.array_parallelism,
        "name": folder.name,
        **options.extra,
    }
    if options.partition:
        parameters["slurm_partition"] = options.partition
    executor.update_parameters(**parameters)
    names = list(points)
    with executor.batch():
        jobs = [executor.submit(run_point, *points[name]) for name in names]
    ids = {name: str(job.job_id) for name, job in zip(names, jobs, strict=True)}
    record = folder / JOBS_FILE
    history = read_json(record) if record.exists() else {}
    for name, job_id in ids.items():
        history.setdefault(name, []).append(job_id)
    write_json_atomic(record, history)
    if options.wait:
        for job in jobs:
            job.result()
    return ids
