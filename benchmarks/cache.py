"""The benchmarks' disk cache: teacher embeddings, BM25 indexes, distilled model2vec models.

Folder: ``--cache-dir``, else ``$BERTAPPROX_CACHE``, else ``~/.cache/bertapprox/bench``. Entries are
named by a hash of what made them (:func:`cache_key`): for embeddings, the teacher's ``describe()``
plus the corpus file's path, size and modification time and the ids of the documents taken from it,
so an edited corpus or another teacher never reads stale vectors. Writes are atomic (temporary name,
then rename): an interrupted run leaves no half entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ENV_VARIABLE = "BERTAPPROX_CACHE"


def cache_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The cache folder (created if missing)."""
    folder = Path(explicit or os.environ.get(ENV_VARIABLE) or Path.home() / ".cache" / "bertapprox" / "bench")
    folder = folder.expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size", "sha256"}`` of a file: its content, so a copy or a re-provisioned file (new path or
    modification time, same bytes) keeps its cached embeddings, and any edit invalidates them."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return {"size": os.path.getsize(path), "sha256": digest.hexdigest()}


def ids_digest(ids: Sequence[str]) -> str:
    """A hash of an ordered list of ids (which documents, in which order)."""
    digest = hashlib.sha256()
    for item in ids:
        digest.update(item.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def cache_key(*parts: Any) -> str:
    """A short hash of JSON-able parts."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def cached_embeddings(
    folder: str | os.PathLike, key: str, record: dict, rows: int, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """The float32 ``[rows, dim]`` array stored under ``key`` in ``folder/embeddings``, computed and stored
    first when absent (or when the stored one has another row count). ``record`` is kept beside it."""
    base = Path(folder) / "embeddings"
    base.mkdir(parents=True, exist_ok=True)
    array_path, record_path = base / f"{key}.npy", base / f"{key}.json"
    if array_path.is_file() and record_path.is_file():
        try:
            array = np.load(array_path, mmap_mode=None)
            if array.ndim == 2 and array.shape[0] == rows:
                logger.info("embeddings from the cache: %s", array_path)
                return np.ascontiguousarray(array, dtype=np.float32)
        except (OSError, ValueError) as error:
            logger.warning("ignoring an unreadable cache entry %s: %s", array_path, error)
    from bertapprox_hf.pipeline.jsonio import write_json_atomic

    array = np.ascontiguousarray(compute(), dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != rows:
        raise ValueError(f"expected {rows} embeddings, got an array of shape {array.shape}")
    tmp = array_path.with_suffix(".npy.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, array_path)
    write_json_atomic(str(record_path), {**record, "rows": rows, "dim": int(array.shape[1])})
    return array
