"""Writing a benchmark's results: its JSON file, and the short Markdown table it prints."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence


def number(value: float | None, digits: int = 4) -> str:
    """A metric for a table: ``digits`` decimals, ``–`` for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(out: str | os.PathLike, name: str, results: dict) -> str:
    """Write ``results`` to ``out/name.json`` (atomically); returns the path."""
    from bertapprox_hf.pipeline.jsonio import write_json_atomic

    os.makedirs(out, exist_ok=True)
    path = os.path.join(os.fspath(out), f"{name}.json")
    write_json_atomic(path, results)
    return path
