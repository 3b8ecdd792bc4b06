"""TorchScript export (``torch.jit.script``), loaded back with ``torch.jit.load`` and checked."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence

import torch

from .common import finish, load_student, write_side_files
from .graph import BagEmbeddingGraph
from .runtime import TORCHSCRIPT_FILE, TorchScriptStudent
from .verify import DEFAULT_TEXTS, TOLERANCE, check_parity

NOTE = "torch.jit is deprecated in recent torch releases (it still works in 2.13); ONNX is the long-lived format"


def export_torchscript(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    texts: Sequence[str] | None = None,
    tolerance: float = TOLERANCE,
) -> dict:
    """Script the student's graph to ``out_dir/model.pt``, load it back and check it against PyTorch.

    Writes the config and tokenizer files, ``export.json`` and a README beside it; raises
    ``ValueError`` when the loaded module differs from the model by more than ``tolerance``.
    """
    started = time.perf_counter()
    model = load_student(model_dir)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, TORCHSCRIPT_FILE)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
        torch.jit.script(BagEmbeddingGraph(model)).save(path)
    write_side_files(model, out_dir)
    encoder = TorchScriptStudent.from_pretrained(out_dir)
    report = {
        "format": "torchscript",
        "source": os.path.abspath(os.fspath(model_dir)),
        "graph": TORCHSCRIPT_FILE,
        "tolerance": tolerance,
        "check": check_parity(model, encoder._run, list(DEFAULT_TEXTS if texts is None else texts)),
        "bytes": {TORCHSCRIPT_FILE: os.path.getsize(path)},
        "note": NOTE,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return finish(out_dir, report, model, TORCHSCRIPT_FILE, "TorchScriptStudent", "torch")
