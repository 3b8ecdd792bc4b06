"""The systems ``benchmarks.speed`` times: how each loads (teacher, student in each precision, model2vec, ONNX)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from bertapprox_hf.inference.protocol import TextEncoder

BATCH_SIZES = (64, 256)
SPEEDUP_BATCH_SIZE = 64  # the batch size of the returned "speedup" figures
BASELINE = "teacher"
SETS = ("queries", "passages")

Loader = Callable[[dict[str, str], str], TextEncoder]


@dataclass(frozen=True)
class System:
    """A system to time: how to load it, which source folder it reads, where it can run."""

    load: Loader  # (sources, device) -> encoder; sources maps "teacher", "model", "model2vec", ... to paths
    source: str  # the key of its folder in sources (its size on disk); the system runs when it is given
    devices: tuple[str, ...] = ("cpu", "cuda")


def load_teacher(sources: dict[str, str], device: str) -> TextEncoder:
    """The transformers teacher (its own tokenizer, batches formed by length, as in training)."""
    from bertapprox_hf.pipeline.teacher import Teacher

    return Teacher.from_pretrained(sources["teacher"], device=device)


def load_student(sources: dict[str, str], device: str, dtype: str = "float32") -> TextEncoder:
    """The production fast path, cache off."""
    from bertapprox_hf.inference import Encoder

    return Encoder.from_pretrained(sources["model"], device=device, dtype=dtype, cache_size=0)


def load_model2vec(sources: dict[str, str], device: str) -> TextEncoder:
    from benchmarks.model2vec_baseline import Model2VecEncoder

    return Model2VecEncoder(sources["model2vec"])


class OnnxAtTorchThreads:
    """An ONNX Runtime session per torch thread count (ONNX Runtime fixes its threads when a session starts)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.sessions: dict[int, TextEncoder] = {}

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch

        from bertapprox_hf.export import OnnxStudent

        threads = torch.get_num_threads()
        if threads not in self.sessions:
            self.sessions[threads] = OnnxStudent.from_pretrained(self.folder, num_threads=threads)
        return self.sessions[threads].encode(texts, batch_size=batch_size)


def load_onnx(sources: dict[str, str], device: str) -> TextEncoder:
    """The student exported by ``bertapprox export onnx``, on ONNX Runtime's CPU provider."""
    encoder = OnnxAtTorchThreads(sources["onnx"])
    encoder.encode(["warm up"])
    return encoder


SYSTEMS: dict[str, System] = {
    "teacher": System(load_teacher, "teacher"),
    "student": System(partial(load_student, dtype="float32"), "model"),
    "student-int8": System(partial(load_student, dtype="int8"), "model"),
    "student-bfloat16": System(partial(load_student, dtype="bfloat16"), "model"),
    "model2vec": System(load_model2vec, "model2vec", devices=("cpu",)),
    "student-onnx": System(load_onnx, "onnx", devices=("cpu",)),
}
