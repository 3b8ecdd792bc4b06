"""Pack what experiments/gpu/gpu_session.sh needs into one folder small enough to travel to a remote GPU machine.

Such a machine may have neither the Hub nor ``../shared``, and what is uploaded to it may be size-limited
(``LIMIT_MB``). The bundle is one xz archive of the teacher with its weights in float16 and the corpus files
(all-MiniLM-L6-v2: 91 MB of weights and 74 MB of text → 53.3 MiB). ``unpack`` on the other side writes the
teacher back in float32 (its weights rounded to float16 once: embeddings within about 1e-5 cosine of the
original's) and the data in the shared layout, each file checked against its SHA-256.

    python experiments/gpu/gpu_bundle.py pack --teacher TEACHER --data ../shared/data --out runs/gpu-bundle
    python experiments/gpu/gpu_bundle.py unpack --bundle runs/gpu-bundle --out /tmp/bundle
        → /tmp/bundle/data (DATA=) and /tmp/bundle/teacher (TEACHER=); gpu_session.sh does this with BUNDLE=

Only the documents the vocabulary and targets read travel (the same files as the Makefile's CORPUS): never the
evaluation sets' queries or judgments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import tempfile

import torch
from safetensors.torch import load_file, save_file

from benchmarks.cache import file_identity  # the repository root on the path: installed, or PYTHONPATH

# The corpus of make vocab / make targets, relative to the data folder.
CORPUS_FILES = (
    "train/msmarco_queries.jsonl",
    "train/msmarco_v2_passages.jsonl",
    "train/reuters21578_sentences.jsonl",
    "train/wordnet30_glosses.jsonl",
    "train/senteval_sentences.jsonl",
    "msmarco-passage-dl19/corpus.jsonl",
    "beir/scifact/corpus.jsonl",
)
WEIGHTS = "model.safetensors"
ARCHIVE = "bundle.tar.xz"
MANIFEST = "bundle.json"
LIMIT_MB = 64.0  # MiB: the upload limit the bundle is checked against


def sha256(path: str) -> str:
    return file_identity(path)["sha256"]


def folder_mb(folder: str) -> float:
    sizes = (os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)
    return sum(sizes) / 2**20


def _copy_weights(source: str, dest: str, dtype: torch.dtype) -> None:
    """``source``'s safetensors with every floating tensor cast to ``dtype`` (others as they are)."""
    tensors = load_file(source)
    save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, dest, {"format": "pt"})


def _copy_teacher(source: str, dest: str, dtype: torch.dtype) -> None:
    """A teacher folder (its files and sub-folders, e.g. ``1_Pooling``) with its weights in ``dtype``."""
    if not os.path.isfile(os.path.join(source, WEIGHTS)):
        raise FileNotFoundError(f"{source} has no {WEIGHTS} (a local teacher folder in safetensors is needed)")
    skip = shutil.ignore_patterns(WEIGHTS, ".git*", "*.bin", "*.onnx", "onnx", "openvino")  # other formats' copies
    shutil.copytree(source, dest, ignore=skip)
    _copy_weights(os.path.join(source, WEIGHTS), os.path.join(dest, WEIGHTS), dtype)


def pack(teacher: str, data: str, out: str, limit_mb: float = LIMIT_MB) -> dict:
    """Write ``out`` (one archive: the teacher in float16 and the corpus); refuse if it exceeds ``limit_mb``."""
    missing = [name for name in CORPUS_FILES if not os.path.isfile(os.path.join(data, name))]
    if missing:
        raise FileNotFoundError(f"{data} lacks {', '.join(missing)} (the shared data layout is expected)")
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    with tempfile.TemporaryDirectory() as staging:
        _copy_teacher(teacher, os.path.join(staging, "teacher"), torch.float16)
        with tarfile.open(os.path.join(out, ARCHIVE), "w:xz", preset=9) as archive:
            archive.add(os.path.join(staging, "teacher"), arcname="teacher")
            for name in CORPUS_FILES:
                archive.add(os.path.join(data, name), arcname=f"data/{name}")
    manifest = {
        "teacher": os.path.basename(os.path.normpath(teacher)),
        "teacher_weights_sha256": sha256(os.path.join(teacher, WEIGHTS)),
        "files": {name: sha256(os.path.join(data, name)) for name in CORPUS_FILES},
    }
    with open(os.path.join(out, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    size = folder_mb(out)
    if size > limit_mb:
        raise ValueError(f"{out} holds {size:.1f} MiB, more than the {limit_mb:g} MiB that can travel")
    return {**manifest, "mb": round(size, 1)}


def unpack(bundle: str, out: str) -> tuple[str, str]:
    """Extract ``bundle`` into ``out``: ``(data folder, teacher folder)``, the teacher in float32."""
    manifest_path = os.path.join(bundle, MANIFEST)
    if not os.path.isfile(manifest_path):
        raise FileNotFoundError(f"{bundle} has no {MANIFEST}: not a bundle written by `gpu_bundle.py pack`")
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    data, teacher = os.path.join(out, "data"), os.path.join(out, "teacher", manifest["teacher"])
    with tempfile.TemporaryDirectory() as staging, tarfile.open(os.path.join(bundle, ARCHIVE), "r:xz") as archive:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 (and the 3.8-3.10 security releases)
            archive.extractall(staging, filter="data")
        else:
            archive.extractall(staging)
        for name, digest in manifest["files"].items():
            if sha256(os.path.join(staging, "data", name)) != digest:
                raise ValueError(f"{name} in {bundle} does not match its checksum: the bundle is corrupt")
        for folder in (data, teacher):
            if os.path.exists(folder):
                shutil.rmtree(folder)
        shutil.move(os.path.join(staging, "data"), data)
        _copy_teacher(os.path.join(staging, "teacher"), teacher, torch.float32)
    return data, teacher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="the teacher (float16) and the corpus in one xz archive")
    packing.add_argument("--teacher", required=True, help="a local teacher folder")
    packing.add_argument("--data", required=True, help="the shared data folder")
    packing.add_argument("--out", required=True)
    packing.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    listing = commands.add_parser("corpus", help="the corpus files under a data folder, one a line")
    listing.add_argument("--data", required=True)
    unpacking = commands.add_parser("unpack", help="the data and a float32 teacher, from a bundle")
    unpacking.add_argument("--bundle", required=True)
    unpacking.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "corpus":
            print("\n".join(os.path.join(args.data, name) for name in CORPUS_FILES))
        elif args.command == "pack":
            written = pack(args.teacher, args.data, args.out, args.limit_mb)
            print(f"{written['mb']} MiB in {args.out}")
        else:
            data, teacher = unpack(args.bundle, args.out)
            print(f"DATA={data}\nTEACHER={teacher}")
    except (OSError, ValueError) as error:
        print(f"gpu_bundle: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
