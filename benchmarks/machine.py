"""What a benchmark ran on: CPU model, cores, memory, GPU, and the versions of the libraries that matter."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("torch", "transformers", "tokenizers", "sentence-transformers", "model2vec", "onnxruntime", "numpy")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine_info() -> dict:
    """CPU model and flags of interest, cores, memory, torch's threads and build, GPUs, library versions."""
    import torch

    flags = (_cpuinfo_field("flags") or "").split()
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    return {
        "cpu": _cpuinfo_field("model name") or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "cpu_flags": [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if flag in flags],
        "memory_gb": _memory_gb(),
        "torch_threads_default": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpus": gpus,
        "versions": _versions(),
    }


def describe(machine: dict) -> str:
    """One line for a report: CPU, cores, memory, GPU, torch."""
    gpu = ", ".join(g["name"] for g in machine.get("gpus") or []) or "no GPU"
    return (
        f"{machine['cpu']}, {machine['usable_cores']} usable cores, {machine.get('memory_gb')} GB RAM, {gpu}, "
        f"torch {machine['torch']}, Python {machine['python']}"
    )
