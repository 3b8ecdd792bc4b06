"""The ``export`` commands (ONNX, TorchScript) and ``push`` (the Hugging Face Hub folder and upload)."""

from __future__ import annotations

import json
import os
import sys


def add_commands(commands) -> None:
    """``export`` (ONNX, TorchScript) and ``push`` (the Hugging Face Hub)."""
    export = commands.add_parser(
        "export", help="export a student as a graph (bag ids → embedding), checked against PyTorch"
    ).add_subparsers(dest="action", required=True, metavar="{onnx,torchscript}")
    for name, text in (("onnx", "ONNX (onnxruntime)"), ("torchscript", "TorchScript (torch.jit)")):
        parser = export.add_parser(name, help=f"export to {text}; the tokenizer stays in Python")
        parser.add_argument("--model", required=True, help="student folder (save_pretrained)")
        parser.add_argument("--out", required=True, help="output folder (graph, config, tokenizer files, export.json)")
        parser.add_argument("--texts", default=None, help="check on these texts: .jsonl ('text' fields) or one a line")
        parser.add_argument("--max-texts", type=int, default=1000, help="check on at most this many texts")
        parser.add_argument("--tolerance", type=float, default=None, help="max |export − PyTorch| allowed (1e-5)")
        if name == "onnx":
            parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx (int8 φ table)")
            parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
        parser.set_defaults(handler=_export)

    push = commands.add_parser("push", help="write the Hugging Face Hub folder (with model card) and upload it")
    push.add_argument("--model", required=True, help="student folder (save_pretrained)")
    push.add_argument("--repo-id", required=True, help="Hub model id, owner/name")
    push.add_argument("--results", default=None, help="benchmark results.json for the model card")
    push.add_argument("--training-report", default=None, help="training report.json (default: beside the model)")
    push.add_argument("--vocab", default=None, help="vocabulary folder (default: the one training.json names)")
    push.add_argument("--base-model", default=None, help="Hub id of the teacher (default: from the config)")
    push.add_argument("--license", default=None, help="license id for the card metadata, e.g. apache-2.0")
    push.add_argument("--out", default=None, help="write the Hub folder here (default: a temporary folder)")
    push.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--commit-message", default=None)
    push.add_argument("--dry-run", action="store_true", help="write the folder and list its files; no network")
    push.set_defaults(handler=_push)


def _export(args) -> int:
    from ..export import TOLERANCE, export_model, read_texts

    options = {"tolerance": TOLERANCE if args.tolerance is None else args.tolerance}
    if args.texts:
        options["texts"] = read_texts(args.texts, args.max_texts)
    if args.action == "onnx":
        options.update(int8=args.int8, opset=args.opset)
    try:
        report = export_model(args.action, args.model, args.out, **options)
    except ImportError as error:
        print(f"bertapprox: error: {error} (pip install 'bertapprox-hf[export]')", file=sys.stderr)
        return 2
    summary = {key: report[key] for key in ("format", "graph", "tolerance", "passed", "bytes", "seconds")}
    summary.update(out=args.out, max_abs_diff=report["check"]["max_abs_diff"], texts=report["check"]["texts"])
    if "int8" in report:
        summary["int8_vs_float32"] = report["int8"]["vs_float32_onnx"]
    print(json.dumps(summary, indent=1))
    return 0


def _push(args) -> int:
    import tempfile

    from ..hub.folder import check_repo_id, push_folder, write_hub_folder

    check_repo_id(args.repo_id)
    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"model folder not found: {args.model}")
    with tempfile.TemporaryDirectory(prefix="bertapprox-hub-") as scratch:
        folder = args.out or (tempfile.mkdtemp(prefix="bertapprox-hub-") if args.dry_run else scratch)
        files = write_hub_folder(
            args.model, folder, repo_id=args.repo_id, results=args.results, training_report=args.training_report,
            vocab_dir=args.vocab, base_model=args.base_model, license=args.license, overwrite=args.overwrite,
        )  # fmt: skip
        summary = {"repo_id": args.repo_id, "folder": folder, "dry_run": args.dry_run, "files": files}
        summary["total_bytes"] = sum(f["bytes"] for f in files)
        if not args.dry_run:
            summary["commit"] = push_folder(folder, args.repo_id, args.private, args.commit_message)
    print(json.dumps(summary, indent=1))
    return 0
