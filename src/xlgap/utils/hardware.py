"""What the machine can do: native bf16 arithmetic, and a name for the device a run used.

bf16 autocast pays only where the hardware computes in bf16: on a CPU without AVX512-BF16 or AMX, or
a GPU without bf16 tensor cores, PyTorch emulates it and it is slower than fp32 (measured on this
project's AMD EPYC machines without AVX-512: a bf16 matmul runs at a few percent of the fp32 rate).
So `auto` picks bf16 only where the instructions are there, detected, never assumed.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path
from typing import Any

# torch is imported inside the functions: the config (which names PRECISIONS) must load without it.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports in /proc/cpuinfo (empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX), asked of PyTorch and of the OS."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if any(getattr(torch.cpu, probe, lambda: False)() for probe in probes):
        return True
    return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)


def resolve_precision(requested: str, use_gpu: bool | None = None) -> tuple[str, str]:
    """(precision, why) for `requested`: `auto` becomes bf16 on a GPU with bf16 support or a CPU with
    native bf16 instructions, fp32 elsewhere; explicit choices stay as they are."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested, "asked for"
    import torch

    gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    if gpu:
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name()} supports bf16"
        return "fp32", f"auto: {torch.cuda.get_device_name()} has no bf16 support"
    if cpu_has_native_bf16():
        return "bf16", "auto: the CPU has native bf16 instructions (AVX512-BF16 or AMX)"
    return "fp32", "auto: the CPU has no native bf16 instructions (AVX512-BF16, AMX), where bf16 is emulated and slower"


def device_description(device: Any) -> str:
    """A human name for `device` (a torch.device or its name): the GPU's name, or the CPU model and the
    threads PyTorch uses."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} (cpu, {torch.get_num_threads()} threads)"
