"""model2vec as a baseline: distil a static model from a teacher once, into a cache folder, and encode with it.

``model2vec`` 0.10 is installed without its ``distill`` extra (which pins an old transformers);
``skeletoken`` is what ``model2vec.distill`` needs (see ``shared/NOTES.md``). :class:`Model2VecEncoder` is
the loaded model behind ``encode(texts, batch_size)``, as the quality benchmarks use it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def default_cache() -> Path:
    """``$BERTAPPROX_WORK`` (the Makefile's work folder), else ``~/.cache/bertapprox/work``."""
    return Path(os.environ.get("BERTAPPROX_WORK") or Path.home() / ".cache" / "bertapprox" / "work")


def cache_folder(teacher: str, cache_dir: str | os.PathLike | None = None, pca_dims: int = 256) -> Path:
    """Where the static model distilled from ``teacher`` lives (a folder name per teacher and PCA size)."""
    name = os.path.basename(os.path.normpath(teacher)) if os.path.isdir(teacher) else teacher.replace("/", "--")
    return Path(cache_dir or default_cache()) / f"model2vec-{name}-pca{pca_dims}"


def distilled_model2vec(teacher: str, cache_dir: str | os.PathLike | None = None, pca_dims: int = 256) -> str:
    """The folder of a model2vec model distilled from ``teacher``, distilling it first if absent (~2 min on CPU)."""
    folder = cache_folder(teacher, cache_dir, pca_dims)
    if (folder / "model.safetensors").is_file():
        return str(folder)
    from model2vec.distill import distill

    model = distill(model_name=str(teacher), pca_dims=pca_dims)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder from elsewhere
    partial.replace(folder)  # a complete folder or none: an interrupted run distils again
    return str(folder)


class Model2VecEncoder:
    """A ``model2vec.StaticModel`` behind ``encode(texts, batch_size)`` (one process, no multiprocessing)."""

    similarity = "cosine"

    def __init__(self, path: str) -> None:
        try:
            from model2vec import StaticModel
        except ImportError as error:
            raise ImportError("the model2vec baseline needs model2vec: pip install 'bertapprox-hf[bench]'") from error
        self.path = path
        self.model = StaticModel.from_pretrained(path)

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    def description(self) -> dict:
        """The static model behind these embeddings."""
        return {"kind": "model2vec", "path": self.path, "dim": self.dim, "similarity": self.similarity}

    def encode(self, texts: Sequence[str], batch_size: int = 1024, show_progress_bar: bool = False) -> np.ndarray:
        rows = self.model.encode(
            list(texts), batch_size=batch_size, use_multiprocessing=False, show_progress_bar=show_progress_bar
        )
        return np.asarray(rows, dtype=np.float32)
