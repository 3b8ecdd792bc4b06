"""Distill a student from precomputed teacher targets.

    accelerate launch train.py --config configs/demo.yaml
    python train.py --config configs/demo.yaml --set optim.lr=1e-3 run.output_dir=runs/x
    python train.py --config configs/demo.yaml --resume

Every configuration key is documented in bertapprox_hf/training/config.py. A recipe in ``stages`` trains them
in order, each from the one before; with ``--resume`` the finished stages are kept and the next resumes.
"""

from __future__ import annotations

import argparse
import json
import sys

from bertapprox_hf.errors import run_main
from bertapprox_hf.training import train
from bertapprox_hf.training.config import load_stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML configuration file")
    parser.add_argument(
        "--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override keys (repeatable)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    args = parser.parse_args(argv)

    def run() -> int:
        stages = load_stages(args.config, args.set)
        for number, stage in enumerate(stages, 1):
            if len(stages) > 1:
                if args.resume and stage.finished():
                    print(f"stage {stage.name}: finished before, kept ({stage.output_dir})")
                    continue
                print(f"stage {stage.name} ({number} of {len(stages)}) -> {stage.output_dir}")
            print(format_report(train(stage.config(), resume=args.resume)))
        return 0

    return run_main(run, prog="train.py")  # a user error (bad config, full disk, ...): one line and exit code 2


def format_report(report: dict) -> str:
    """A short human-readable summary of a finished run."""
    best = report.get("best", {})
    lines = [
        f"training time      {report['train_seconds']:.0f} s ({report['steps']} steps, best at {report['best_step']})",
        f"trainable params   {report['trainable_parameters']:,}",
    ]
    for bucket in ("query", "sentence", "passage", "all"):
        if f"cosine_{bucket}" in best:
            lines.append(
                f"{bucket:<9} n={best[f'count_{bucket}']:<5} cosine {best[f'cosine_{bucket}']:.4f}  "
                f"spearman {best[f'spearman_{bucket}']:.4f}"
            )
    lines.append(f"model saved in     {report['model_dir']}")
    return "\n".join(lines) + "\n" + json.dumps(report, default=str)


if __name__ == "__main__":
    sys.exit(main())
