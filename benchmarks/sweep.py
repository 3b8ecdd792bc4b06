"""Train several variants of a recipe and tabulate their validation fidelity.

    python -m benchmarks.sweep --config experiments/configs/minilm.yaml --out results/sweep \\
        --variant "mean: optim.epochs=0 model.phi_layers=0 model.rho_layers=0 model.entry_bias=false" \\
        --variant "deepsets:"

Each variant is ``name: key=value ...`` (overrides of the config); its run goes to ``OUT/name``.
Writes ``OUT/sweep.json`` and ``OUT/sweep.md`` (cosine and pairwise Spearman to the teacher on the
held-out texts, by text length, at each run's best step).
"""

from __future__ import annotations

import argparse
import json
import os

from bertapprox_hf.training import load_config, train

COLUMNS = ("cosine_query", "cosine_sentence", "cosine_passage", "spearman_query", "spearman_passage", "spearman_all")


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name.strip():
        raise ValueError(f"variant '{text}' needs a name before ':'")
    return name.strip(), overrides.split()


def to_markdown(rows: list[dict]) -> str:
    header = ["variant", "params", "steps", "train s", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        best = row["best"]
        cells = [row["name"], f"{row['trainable_parameters']:,}", str(row["steps"]), f"{row['train_seconds']:.0f}"]
        cells += [f"{best[c]:.4f}" if c in best else "–" for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--variant", action="append", required=True, help="'name: key=value ...'")
    parser.add_argument("--out", default="results/sweep")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, overrides in map(parse_variant, args.variant):
        config = load_config(args.config, [*overrides, f"run.output_dir={os.path.join(args.out, name)}"])
        report = train(config)
        rows.append({"name": name, "overrides": overrides, **report})
        with open(os.path.join(args.out, "sweep.json"), "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
        with open(os.path.join(args.out, "sweep.md"), "w", encoding="utf-8") as handle:
            handle.write(to_markdown(rows))
        print(to_markdown(rows))
    return rows


if __name__ == "__main__":
    main()
