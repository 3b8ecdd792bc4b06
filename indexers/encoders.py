"""Loading a document or query encoder from a folder: a student (fast Encoder) or a teacher."""

from __future__ import annotations

import os

from bertapprox_hf.inference.protocol import TextEncoder
from bertapprox_hf.pipeline.jsonio import read_json


def is_student_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` (a folder or a Hub id) holds a saved student (``config.json`` with ``model_type: bertapprox``).

    A Hub id's ``config.json`` is fetched through the Hub cache; one that cannot be fetched is not a student.
    """
    path = os.fspath(path)
    config = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        from bertapprox_hf.pipeline.teacher import looks_like_path

        if looks_like_path(path):
            return False
        try:
            from huggingface_hub import hf_hub_download

            config = hf_hub_download(path, "config.json")
        except Exception:  # offline, unknown repo, no config.json: leave it to the teacher loader's error
            return False
    if not os.path.isfile(config):
        return False
    return read_json(config, "model config").get("model_type") == "bertapprox"


def load_encoder(
    path: str | os.PathLike, device: str | None = None, dtype: str = "float32", cache_size: int = 10000
) -> TextEncoder:
    """The fast :class:`~bertapprox_hf.inference.Encoder` of a student folder, else a
    :class:`~bertapprox_hf.pipeline.teacher.Teacher` (a sentence-transformers folder or Hub id)."""
    path = os.fspath(path)
    if is_student_folder(path):
        from bertapprox_hf.inference import Encoder

        return Encoder.from_pretrained(path, device=device, dtype=dtype, cache_size=cache_size)
    from bertapprox_hf.pipeline.teacher import Teacher

    return Teacher.from_pretrained(path, device=device)


def load_index_encoders(
    model: str | os.PathLike,
    teacher: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str = "float32",
) -> tuple[TextEncoder, TextEncoder]:
    """``(queries, documents)``: the student of ``model`` and the document encoder, the same one or, for an
    asymmetric index, ``teacher`` (whose embeddings must have the student's size). Documents get no cache."""
    queries = load_encoder(model, device=device, dtype=dtype, cache_size=0)
    documents = load_encoder(teacher, device=device) if teacher else queries
    if int(documents.dim) != int(queries.dim):
        raise ValueError(
            f"the teacher makes {documents.dim}-d embeddings but the model {queries.dim}-d: "
            "an asymmetric index needs the student of that teacher"
        )
    return queries, documents
