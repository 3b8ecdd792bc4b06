"""Exporting a student for serving: ONNX and TorchScript graphs (bag ids → embedding) and their runtimes.

The tokenizer stays in Python (``BertApproxTokenizer``); an export folder holds the graph, the
config and tokenizer files, ``export.json`` (the parity check) and a README.
"""

from __future__ import annotations

import os

from .runtime import OnnxStudent, TorchScriptStudent
from .verify import DEFAULT_TEXTS, TOLERANCE, read_texts

FORMATS = ("onnx", "torchscript")


def export_model(format: str, model_dir: str | os.PathLike, out_dir: str | os.PathLike, **options) -> dict:
    """Export ``model_dir`` in ``format`` (``"onnx"`` or ``"torchscript"``) to ``out_dir``; returns the report."""
    if format == "onnx":
        from .onnx_export import export_onnx

        return export_onnx(model_dir, out_dir, **options)
    if format == "torchscript":
        from .torchscript_export import export_torchscript

        return export_torchscript(model_dir, out_dir, **options)
    raise ValueError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")


__all__ = [
    "DEFAULT_TEXTS",
    "FORMATS",
    "TOLERANCE",
    "OnnxStudent",
    "TorchScriptStudent",
    "export_model",
    "read_texts",
]
