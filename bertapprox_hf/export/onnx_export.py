"""ONNX export (``torch.onnx.export``, dynamo), checked with ONNX Runtime; optional int8 tables."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Sequence

import torch

from .common import finish, load_student, write_side_files
from .graph import INPUT_NAMES, OUTPUT_NAME, VALUES_NAME, BagEmbeddingGraph
from .runtime import ONNX_FILES, OnnxStudent
from .verify import DEFAULT_TEXTS, TOLERANCE, check_parity, model_run, quantization_loss

EXTERNAL_DATA_BYTES = 1 << 30  # larger graphs keep their weights in a side file (ONNX protobufs stop at 2 GB)


def save_onnx_graph(graph: BagEmbeddingGraph, path: str, opset: int | None = None) -> None:
    """Export ``graph`` to ``path`` with dynamic ``batch`` and ``bag`` axes."""
    try:
        import onnxscript  # noqa: F401 (the dynamo exporter needs it; fail early with a clear message)
    except ImportError as error:
        raise ImportError(f"ONNX export needs onnxscript: {error}") from error
    # Example sizes above 1: torch.export specializes dimensions of size 0 and 1.
    example = (torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
    batch, bag = torch.export.Dim("batch"), torch.export.Dim("bag")
    axes = {"input_ids": {0: batch, 1: bag}, "attention_mask": {0: batch, 1: bag}}
    size = sum(t.numel() * t.element_size() for t in graph.state_dict().values())
    exporter_log = logging.getLogger("torch.onnx")  # warns about every torchvision op it cannot register
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # it prints its progress
            warnings.filterwarnings("ignore", message="# The axis name")  # names shared by both inputs: expected
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec")  # inside torch.export
            program = torch.onnx.export(
                graph,
                example,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=axes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    program.save(path, external_data=size > EXTERNAL_DATA_BYTES)


def quantize_tables(path: str, out_path: str) -> list[str]:
    """Dynamic int8 quantization of the φ table's Gather (ρ stays float32); returns the quantized nodes.

    ρ is left in float32 on purpose: ONNX Runtime's dynamic MatMul quantization picks one activation
    scale per batch, so an embedding would depend on the other texts of its batch.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(path, load_external_data=False)
    nodes = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input and n.input[0] == VALUES_NAME]
    if not nodes:
        raise ValueError(f"{path} has no Gather over '{VALUES_NAME}' to quantize")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # quantize_dynamic logs advice about static pre-processing
    try:
        quantize_dynamic(path, out_path, weight_type=QuantType.QInt8, nodes_to_quantize=nodes)
    finally:
        logging.disable(previous)
    return nodes


def export_onnx(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    int8: bool = False,
    texts: Sequence[str] | None = None,
    tolerance: float = TOLERANCE,
    opset: int | None = None,
) -> dict:
    """Export a saved student to ``out_dir/model.onnx`` (and ``model_int8.onnx``) and check it.

    The folder also gets the config and tokenizer files, ``export.json`` (the check: max absolute
    difference to PyTorch on ``texts`` and on batch × bag sizes 1 × 1 … 37 × 512; with ``int8``,
    its cosine loss to the float32 graph) and a README. Raises ``ValueError`` when the float32
    graph differs from PyTorch by more than ``tolerance``.
    """
    started = time.perf_counter()
    model = load_student(model_dir)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, ONNX_FILES["float32"])
    save_onnx_graph(BagEmbeddingGraph(model), path, opset)
    write_side_files(model, out_dir)
    encoder = OnnxStudent.from_pretrained(out_dir, providers=["CPUExecutionProvider"])
    texts = list(DEFAULT_TEXTS if texts is None else texts)
    report = {
        "format": "onnx",
        "source": os.path.abspath(os.fspath(model_dir)),
        "graph": ONNX_FILES["float32"],
        "opset": _opset(path),
        "tolerance": tolerance,
        "check": check_parity(model, encoder._run, texts),
        "bytes": {ONNX_FILES["float32"]: os.path.getsize(path)},
    }
    if int8:
        int8_path = os.path.join(out_dir, ONNX_FILES["int8"])
        nodes = quantize_tables(path, int8_path)
        quantized = OnnxStudent.from_pretrained(out_dir, dtype="int8", providers=["CPUExecutionProvider"])
        bags = model.get_tokenizer().encode_bags(texts, model.config.max_bag_size)
        report["int8"] = {
            "graph": ONNX_FILES["int8"],
            "quantized": "the φ table (Gather, int8, one scale for the table); pooling scores and ρ float32",
            "nodes": nodes,
            "vs_float32_onnx": quantization_loss(encoder._run, quantized._run, bags),
            "vs_pytorch": quantization_loss(model_run(model), quantized._run, bags),
        }
        report["bytes"][ONNX_FILES["int8"]] = os.path.getsize(int8_path)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return finish(out_dir, report, model, ONNX_FILES["float32"], "OnnxStudent", "onnxruntime")


def _opset(path: str) -> int | None:
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
