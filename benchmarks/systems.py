"""The systems every benchmark compares, defined once.

* ``teacher``: the teacher encodes queries and documents.
* ``student``: the student encodes queries and documents (student-only).
* ``asymmetric``: the teacher encodes the documents once, offline; the student encodes queries.
  In STS: the first sentence by the student, the second by the teacher.
* ``model2vec``: a static model distilled from the same teacher (``model2vec.distill``, PCA 256),
  cached on disk.
* ``bm25``: Pyserini's Lucene BM25 with default parameters (retrieval only; see :mod:`benchmarks.bm25`).

Dense scores use the teacher's similarity (``describe()["similarity"]``: cosine or dot) for the teacher,
the student and the asymmetric system; model2vec (normalized output) uses cosine. Teacher embeddings of
a corpus are cached on disk (:mod:`benchmarks.cache`), so reruns skip the slow pass.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from .cache import cache_dir, cache_key, cached_embeddings
from .model2vec_baseline import Model2VecEncoder

logger = logging.getLogger(__name__)

SYSTEMS = {
    "teacher": "the teacher encodes queries and documents",
    "student": "the student encodes queries and documents",
    "asymmetric": "documents by the teacher (offline, once), queries by the student",
    "model2vec": "model2vec static model distilled from the same teacher (PCA 256)",
    "bm25": "BM25, Pyserini Lucene index, default parameters (k1=0.9, b=0.4)",
}
DENSE_SYSTEMS = ("teacher", "student", "asymmetric", "model2vec")
NEEDS_STUDENT = ("student", "asymmetric")
MODEL2VEC_PCA_DIMS = 256


def read_student_teacher(model: str) -> str | None:
    """The teacher a student folder records (``config.json`` ``teacher``), or None."""
    from bertapprox_hf.pipeline.jsonio import read_json

    config = os.path.join(model, "config.json")
    return read_json(config, "model config").get("teacher") if os.path.isfile(config) else None


class Systems:
    """The compared systems' encoders, loaded when first needed and shared by every benchmark of a run.

    Args:
        names: systems to run (a subset of :data:`SYSTEMS`).
        model: a saved student folder (needed by ``student`` and ``asymmetric``).
        teacher: the teacher folder; default: the teacher the student's ``config.json`` names.
        model2vec: a saved model2vec folder; default: distil one from the teacher into the cache.
        cache: the cache folder (see :func:`benchmarks.cache.cache_dir`).
        dtype: the student's precision (``Encoder`` dtype).
    """

    def __init__(
        self,
        names: Sequence[str],
        model: str | None = None,
        teacher: str | None = None,
        model2vec: str | None = None,
        cache: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        unknown = [name for name in names if name not in SYSTEMS]
        if unknown:
            raise ValueError(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
        self.names = list(dict.fromkeys(names))
        if not self.names:
            raise ValueError("no systems to run")
        if model is not None:
            from indexers.encoders import is_student_folder

            if not os.path.isdir(model):
                raise FileNotFoundError(f"student folder not found: {model}")
            if not is_student_folder(model):
                raise ValueError(f"{model} is not a saved student (config.json with model_type 'bertapprox')")
        self.model = model
        recorded = read_student_teacher(model) if model else None
        self.teacher_path = teacher or recorded
        self.teacher_mismatch = None
        if teacher and recorded and os.path.realpath(teacher) != os.path.realpath(recorded):
            self.teacher_mismatch = f"the student records teacher {recorded}, the benchmark uses {teacher}"
            logger.warning(self.teacher_mismatch)
        needs_student = [name for name in self.names if name in NEEDS_STUDENT]
        if needs_student and not model:
            raise ValueError(f"systems {needs_student} need a student folder (--model)")
        needs_teacher = [
            n for n in self.names if n in ("teacher", "asymmetric") or (n == "model2vec" and not model2vec)
        ]
        if needs_teacher and not self.teacher_path:
            raise ValueError(f"systems {needs_teacher} need the teacher (--teacher; the student records none)")
        if self.teacher_path and os.path.isdir(self.teacher_path):
            self.teacher_path = os.path.abspath(self.teacher_path)
        if model2vec is not None and not os.path.isdir(model2vec):
            raise FileNotFoundError(f"model2vec folder not found: {model2vec}")
        self.model2vec_path = model2vec
        self.cache = cache_dir(cache)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.progress = progress

    # --- encoders -----------------------------------------------------------------------------------
    @cached_property
    def teacher(self):
        from bertapprox_hf.pipeline.teacher import Teacher

        return Teacher.from_pretrained(self.teacher_path, device=self.device)

    @cached_property
    def student(self):
        from bertapprox_hf.inference import Encoder

        # no embedding cache: every system's timing encodes every text
        return Encoder.from_pretrained(self.model, device=self.device, dtype=self.dtype, cache_size=0)

    def model2vec_dir(self) -> str:
        """The model2vec folder: the one given, else one distilled from the teacher (cached; ~1 min once)."""
        if self.model2vec_path is None:
            from .model2vec_baseline import distilled_model2vec

            self.model2vec_path = distilled_model2vec(
                self.teacher_path, self.cache / "model2vec", pca_dims=MODEL2VEC_PCA_DIMS
            )
        return self.model2vec_path

    @cached_property
    def model2vec(self) -> Model2VecEncoder:
        return Model2VecEncoder(self.model2vec_dir())

    def encoders(self, name: str) -> tuple[str, str]:
        """``(query encoder, document encoder)`` of a dense system: each ``"teacher"``, ``"student"`` or
        ``"model2vec"``."""
        return {
            "teacher": ("teacher", "teacher"),
            "student": ("student", "student"),
            "asymmetric": ("student", "teacher"),
            "model2vec": ("model2vec", "model2vec"),
        }[name]

    def similarity(self, name: str) -> str:
        """``"cosine"`` or ``"dot"``: model2vec's cosine, else the teacher's similarity."""
        if name == "model2vec":
            return Model2VecEncoder.similarity
        if self.teacher_path is None:  # student-only run without a teacher: the student's own (copied from it)
            return self.student.similarity
        return self.teacher_similarity

    @cached_property
    def teacher_similarity(self) -> str:
        from bertapprox_hf.pipeline.teacher import read_pooling_spec

        return read_pooling_spec(self.teacher_path).similarity

    def encoder(self, kind: str) -> Any:
        """The ``"teacher"``, ``"student"`` or ``"model2vec"`` encoder (loaded on first use)."""
        if kind not in ("teacher", "student", "model2vec"):
            raise ValueError(f"no encoder {kind!r}")
        return getattr(self, kind)

    def encode(self, kind: str, texts: Sequence[str], identity: dict | None = None, desc: str = "") -> np.ndarray:
        """Embeddings of ``texts`` by the ``kind`` encoder (float32 ``[n, dim]``).

        Teacher embeddings with an ``identity`` (what the texts are: corpus file, ids) come from the disk
        cache, or are computed and stored there.
        """
        texts = list(texts)
        if kind == "teacher" and identity is not None:
            description = self.teacher.describe()
            key = cache_key("teacher-embeddings", description, identity)
            record = {"teacher": description, "texts": identity}
            return cached_embeddings(self.cache, key, record, len(texts), lambda: self._encode(kind, texts, desc))
        return self._encode(kind, texts, desc)

    def _encode(self, kind: str, texts: list[str], desc: str) -> np.ndarray:
        if desc and self.progress:
            print(f"{desc}: {len(texts)} texts by the {kind}", flush=True)
        encoder = self.encoder(kind)
        rows = encoder.encode(texts, batch_size=self.batch_size, show_progress_bar=self.progress and bool(desc))
        return np.asarray(rows, dtype=np.float32)

    def describe(self) -> dict:
        """What the systems were, for a results file."""
        return {
            "systems": {name: SYSTEMS[name] for name in self.names},
            "model": os.path.abspath(self.model) if self.model else None,
            "teacher": self.teacher_path,
            "teacher_similarity": self.teacher_similarity if self.teacher_path else None,
            "teacher_mismatch": self.teacher_mismatch,
            "model2vec": self.model2vec_path,
            "model2vec_pca_dims": MODEL2VEC_PCA_DIMS,
            "student_dtype": self.dtype,
            "batch_size": self.batch_size,
            "device": self.device or "auto",
            "cache_dir": str(self.cache),
        }


# --- command line ---------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, default_systems: Sequence[str]) -> None:
    """The options every benchmark shares: the models, the systems, the cache, the output folder."""
    group = parser.add_argument_group("systems")
    group.add_argument("--model", help="saved student folder (the student and asymmetric systems)")
    group.add_argument("--teacher", help="teacher folder (default: the one the student's config.json names)")
    group.add_argument(
        "--systems",
        nargs="+",
        default=list(default_systems),
        metavar="NAME",
        help=f"systems to compare, of {', '.join(SYSTEMS)} (default: {' '.join(default_systems)}; those needing "
        "a student are left out without --model)",
    )
    group.add_argument("--model2vec", help="a saved model2vec folder (default: distil one from the teacher, cached)")
    group.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "int8"])
    group.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    group.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--cache-dir", default=None, help="cache folder (default: $BERTAPPROX_CACHE, else ~/.cache/bertapprox/bench)"
    )
    parser.add_argument("--out", default="results/bench", help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def from_args(args: argparse.Namespace, explicit_systems: bool | None = None) -> Systems:
    """The :class:`Systems` of parsed options. Without ``--model``, default system lists drop the student's."""
    names = list(args.systems)
    if not args.model and not explicit_systems:
        names = [name for name in names if name not in NEEDS_STUDENT]
    return Systems(
        names,
        model=args.model,
        teacher=args.teacher,
        model2vec=args.model2vec,
        cache=args.cache_dir,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )


def systems_given(argv: Sequence[str] | None) -> bool:
    """Whether the command line (``argv``, else ``sys.argv``) names ``--systems`` itself."""
    import sys

    items = sys.argv[1:] if argv is None else argv
    return any(item == "--systems" or item.startswith("--systems=") for item in items)
