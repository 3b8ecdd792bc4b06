"""Training throughput of one recipe on several devices and precisions (the GPU speed-up over the CPU).

    python -m benchmarks.training_speed --config experiments/configs/minilm-large.yaml --steps 300 \\
        --setups cpu:no cuda:no cuda:bf16 --out results/training-speed

Each setup (``DEVICE:PRECISION``; precision ``no``, ``bf16`` or ``fp16``) runs ``train.py`` in a fresh process for
``--steps`` optimizer steps with the recipe's batch size and model, without intermediate evaluations or
checkpoints. Throughput is read from the run's own log (``metrics.jsonl``: steps and seconds at each logged
step) after the first logged interval, so start-up, data loading, the pre-tokenizing pass and the first
(compiling, allocating) steps are left out. Writes ``training_speed.json`` and prints a table with the
speed-up over the first setup.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from .provenance import provenance
from .reporting import markdown_table, number, write_results

PROG = "python -m benchmarks.training_speed"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = ("no", "bf16", "fp16")


def parse_setup(text: str) -> tuple[str, str]:
    """``"cuda:bf16"`` → ``("cuda", "bf16")``; a bad setup raises ``ValueError`` naming it."""
    device, _, precision = text.partition(":")
    precision = precision or "no"
    if device not in ("cpu", "cuda") or precision not in PRECISIONS:
        raise ValueError(f"setup '{text}': expected DEVICE:PRECISION with DEVICE cpu or cuda, PRECISION {PRECISIONS}")
    return device, precision


def throughput(records: list[dict], batch_size: int) -> dict:
    """Steps and texts a second between the first and the last logged training step."""
    logged = [r for r in records if r.get("event") == "train" and "seconds" in r]
    if len(logged) < 2:
        raise ValueError("fewer than two logged training steps: raise --steps or lower --log-every")
    first, last = logged[0], logged[-1]
    steps, seconds = last["step"] - first["step"], last["seconds"] - first["seconds"]
    return {
        "measured_steps": steps,
        "measured_seconds": round(seconds, 3),
        "steps_per_second": steps / seconds,
        "texts_per_second": steps * batch_size / seconds,
    }


def run_setup(
    config: str, device: str, precision: str, steps: int, log_every: int, out: str, overrides: Sequence[str]
) -> dict:
    """Train ``steps`` steps in a subprocess; its throughput and report."""
    name = f"{device}-{precision}"
    output_dir = os.path.join(out, name)
    settings = [  # after the user's overrides: these must hold
        *overrides,
        f"run.device={device}",
        f"run.mixed_precision={precision}",
        f"optim.max_steps={steps}",
        f"run.log_every={log_every}",
        f"eval.every_steps={10**9}",
        f"run.checkpoint_every={10**9}",
        "run.tensorboard=false",
        f"run.output_dir={output_dir}",
    ]
    command = [sys.executable, os.path.join(REPO_ROOT, "train.py"), "--config", config]
    for item in settings:
        command += ["--set", item]
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"setup {name} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(output_dir, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    with open(os.path.join(output_dir, "best", "training.json"), encoding="utf-8") as handle:
        batch_size = json.load(handle)["config"]["optim"]["batch_size"]
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return {
        "setup": name,
        "device": device,
        "mixed_precision": report["mixed_precision"],
        "batch_size": batch_size,
        "steps": report["steps"],
        "wall_seconds": round(time.time() - started, 1),
        **throughput(records, batch_size),
    }


def table(results: dict) -> tuple[list[str], list[list[str]]]:
    header = ["setup", "precision", "batch", "steps/s", "texts/s", "speed-up"]
    rows = []
    base = results["setups"][0]["steps_per_second"] if results["setups"] else None
    for row in results["setups"]:
        rows.append(
            [
                row["device"],
                row["mixed_precision"],
                str(row["batch_size"]),
                number(row["steps_per_second"], 1),
                f"{row['texts_per_second']:,.0f}",
                f"{row['steps_per_second'] / base:.1f}×" if base else "–",
            ]
        )
    return header, rows


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training recipe (YAML), as for train.py")
    parser.add_argument("--setups", nargs="+", default=["cpu:no", "cuda:bf16"], help="DEVICE:PRECISION, first = base")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps a setup")
    parser.add_argument("--log-every", type=int, default=25, help="logged steps (throughput is read from them)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--out", default="results/training-speed")
    args = parser.parse_args(argv)
    setups = [parse_setup(text) for text in args.setups]
    if any(device == "cuda" for device, _ in setups):
        import torch

        if not torch.cuda.is_available():
            parser.error("a cuda setup was asked for, but torch sees no CUDA device")
    rows = [
        run_setup(args.config, device, precision, args.steps, args.log_every, args.out, args.overrides)
        for device, precision in setups
    ]
    results = {"benchmark": "training_speed", "setups": rows, **provenance(PROG, argv)}
    path = write_results(args.out, "training_speed", results)
    print(markdown_table(*table(results)))
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
