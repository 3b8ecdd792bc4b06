"""What produced a benchmark figure: library versions, the repository's commit, the machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "bertapprox-hf",
    "torch",
    "transformers",
    "tokenizers",
    "sentence-transformers",
    "numpy",
    "scipy",
    "faiss-cpu",
    "pyserini",
    "beir",
    "pytrec-eval-terrier",
    "model2vec",
    "skeletoken",
    "matplotlib",
)


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries the benchmarks use (None when absent), Python and the git commit."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found.update(git_state())
    return found


def git_state() -> dict[str, str | bool | None]:
    """``{"git_commit", "git_dirty"}`` of the repository (None when git or the repository is missing)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def machine() -> dict:
    """The machine (:func:`benchmarks.machine.machine_info`) plus the thread settings of this process."""
    from benchmarks.machine import machine_info

    info = machine_info()
    info.pop("versions", None)  # versions() has them, and more
    info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    import torch

    info["torch_threads"] = torch.get_num_threads()
    return info


def provenance(prog: str, argv: Sequence[str] | None) -> dict:
    """``{"machine", "versions", "command", "date"}`` for a results file (``command``: ``prog`` and its
    arguments, ``sys.argv`` when ``argv`` is None)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return {
        "machine": machine(),
        "versions": versions(),
        "command": " ".join([prog, *argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
