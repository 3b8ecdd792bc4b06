"""The benchmarks by name, as the built-in ``bench`` plugin offers them (``bertapprox benchmark list/run``).

Each name runs one benchmark module's ``main`` with fixed arguments plus the plugin options turned into
command-line options (``{"max_docs": 300, "systems": ["teacher", "student"]}`` → ``--max-docs 300
--systems teacher student``; ``True`` → a bare flag). ``model`` is a student folder (``--model``) or a
teacher folder (``--teacher``; the student's systems are then left out)::

    bertapprox benchmark run scifact --model RUN/best --set out=results/scifact max_docs=300
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Benchmark:
    module: str  # benchmarks.<module>
    args: tuple[str, ...]  # fixed command-line arguments
    description: str


BENCHMARKS = {
    "scifact": Benchmark(
        "beir",
        ("--dataset", "scifact"),
        "BEIR SciFact test: nDCG@10, MRR@10, Recall@100/1000 of teacher, student, asymmetric, model2vec, BM25",
    ),
    "beir": Benchmark(
        "beir", (), "any BEIR-format folder or BEIR dataset name (option dataset=NAME_OR_PATH), same metrics"
    ),
    "dl19": Benchmark(
        "msmarco", ("--dataset", "dl19"), "TREC DL 2019 passages: nDCG@10 (graded), MRR@10 and Recall@100 (grade >= 2)"
    ),
    "msmarco-dev": Benchmark(
        "msmarco", ("--dataset", "dev"), "MS MARCO dev small from local tsv files (option data=DIR): MRR@10"
    ),
    "stsb": Benchmark("sts", (), "STS Benchmark test: Spearman of cosine similarity with the gold scores"),
    "fidelity": Benchmark(
        "fidelity", (), "student-teacher cosine (mean, percentiles) and pairwise-similarity Spearman on held-out texts"
    ),
}


def descriptions() -> dict[str, str]:
    """Benchmark names → one-line descriptions."""
    return {name: benchmark.description for name, benchmark in BENCHMARKS.items()}


def options_to_argv(options: dict[str, Any]) -> list[str]:
    """Plugin options as command-line options (keys with ``_`` or ``-``; lists repeat values; True is a flag)."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *(str(item) for item in value)]
        else:
            argv += [flag, str(value)]
    return argv


def run(name: str, model: Any, options: dict | None = None) -> dict | None:
    """Run benchmark ``name`` on ``model`` (a student or teacher folder); None when ``name`` is not one of ours."""
    benchmark = BENCHMARKS.get(name)
    if benchmark is None:
        return None
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"benchmark {name!r} needs a model folder, got {type(model).__name__}")
    from indexers.encoders import is_student_folder

    model = os.fspath(model)
    argv = [*benchmark.args, "--model" if is_student_folder(model) else "--teacher", model]
    argv += options_to_argv(dict(options or {}))
    module = importlib.import_module(f"benchmarks.{benchmark.module}")
    try:
        return module.main(argv)
    except SystemExit as error:  # argparse rejected the options (it printed why)
        raise ValueError(
            f"benchmark {name!r}: invalid options {options!r} (see python -m benchmarks.{benchmark.module} --help)"
        ) from error
