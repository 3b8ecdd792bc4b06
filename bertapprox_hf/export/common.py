"""What every export shares: loading the student, the files beside the graph, the report and its check."""

from __future__ import annotations

import os
import platform
from string import Template

import torch

from ..model.modeling_bertapprox import BertApproxModel
from ..pipeline.jsonio import read_json, write_json_atomic
from .graph import INPUT_NAMES, OUTPUT_NAME

REPORT_FILE = "export.json"
LOAD_TIME_KEYS = ("is_local", "local_files_only")  # written by transformers when a loaded tokenizer is saved

README = Template(
    """# BertApprox student exported to $format

`$graph`: `input_ids` [batch, bag] int64 and `attention_mask` [batch, bag] int64 (1 = entry, 0 = padding)
in, `sentence_embedding` [batch, $dim] float32 out; batch and bag sizes are dynamic (a bag holds at most
$max_bag entries). The tokenizer is not part of the graph: texts become bags of vocabulary entries in
Python, with the tokenizer files beside it (`vocab.txt`, `tokenizer_config.json`, `tokenization_bertapprox.py`,
`text_normalization.py`); `config.json` holds the model settings. `export.json` records the check against
PyTorch (max absolute difference on real text and on batch × bag sizes 1 × 1 to 37 × 512).

With bertapprox-hf:

```python
from bertapprox_hf.export import $encoder
encoder = $encoder.from_pretrained("path/to/this/folder")
embeddings = encoder.encode(["what is the interest rate of the bank?", "new york city"])
```

Without it (transformers, the tokenizer's remote code, and $runtime):

```python
$plain
```
"""
)

PLAIN_USAGE = {
    "onnx": """import onnxruntime
from transformers import AutoTokenizer
folder = "path/to/this/folder"
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer(["what is the interest rate of the bank?", "new york city"], padding=True, return_tensors="np")
session = onnxruntime.InferenceSession(f"{folder}/model.onnx")
feeds = {name: batch[name].astype("int64") for name in ("input_ids", "attention_mask")}
embeddings = session.run(None, feeds)[0]""",
    "torchscript": """import torch
from transformers import AutoTokenizer
folder = "path/to/this/folder"
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
batch = tokenizer(["what is the interest rate of the bank?", "new york city"], padding=True, return_tensors="pt")
module = torch.jit.load(f"{folder}/model.pt")
embeddings = module(batch["input_ids"], batch["attention_mask"])""",
}


def load_student(model_dir: str | os.PathLike) -> BertApproxModel:
    """The saved student in float32, in eval mode, with its tokenizer; a missing folder is a clear error."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    model = BertApproxModel.from_pretrained(model_dir).float().eval()
    model.get_tokenizer()
    return model


def write_side_files(model: BertApproxModel, out_dir: str) -> None:
    """The config and tokenizer files (with their remote code) beside the graph: the folder stands alone.

    ``config.json`` keeps only its ``AutoConfig`` entry in ``auto_map``: there are no weights here
    for ``AutoModel`` to load.
    """
    model.config.save_pretrained(out_dir)
    save_tokenizer(model.get_tokenizer(), out_dir)
    path = os.path.join(out_dir, "config.json")
    config = read_json(path, "model config")
    config.get("auto_map", {}).pop("AutoModel", None)
    write_json_atomic(path, config, indent=2)


def save_tokenizer(tokenizer, out_dir: str) -> None:
    """``tokenizer.save_pretrained(out_dir)`` without the load-time keys transformers adds to a reloaded one."""
    tokenizer.save_pretrained(out_dir)
    scrub_tokenizer_config(out_dir)


def scrub_tokenizer_config(out_dir: str) -> None:
    """Drop ``is_local``/``local_files_only`` (how the tokenizer was last loaded) from ``tokenizer_config.json``."""
    path = os.path.join(out_dir, "tokenizer_config.json")
    config = read_json(path, "tokenizer config")
    removed = [config.pop(key) for key in LOAD_TIME_KEYS if key in config]
    if removed:
        write_json_atomic(path, config, indent=2)


def versions() -> dict:
    """Library versions that matter for reading the export."""
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "onnxscript", "transformers"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def finish(out_dir: str, report: dict, model: BertApproxModel, graph_file: str, encoder: str, runtime: str) -> dict:
    """Write ``export.json`` and ``README.md``; raise when the check exceeded the tolerance."""
    report = {
        **report,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "dim": model.config.output_dim,
        "files": sorted(os.listdir(out_dir) + [REPORT_FILE, "README.md"]),
        "versions": versions(),
        "tokenizer": "not in the graph: BertApproxTokenizer (Python) from the files beside it",
    }
    report["files"] = sorted(set(report["files"]))
    report["passed"] = report["check"]["max_abs_diff"] <= report["tolerance"]
    write_json_atomic(os.path.join(out_dir, REPORT_FILE), report)
    readme = README.substitute(
        format=report["format"],
        graph=graph_file,
        dim=model.config.output_dim,
        max_bag=model.config.max_bag_size,
        encoder=encoder,
        runtime=runtime,
        plain=PLAIN_USAGE[report["format"]],
    )
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as handle:
        handle.write(readme)
    if not report["passed"]:
        raise ValueError(
            f"the {report['format']} export differs from PyTorch by {report['check']['max_abs_diff']:.3g} "
            f"(tolerance {report['tolerance']:g}); see {os.path.join(out_dir, REPORT_FILE)}"
        )
    return report
