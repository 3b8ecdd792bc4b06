"""Reading and writing the project's JSON records: clear errors on read, atomic writes."""

from __future__ import annotations

import json
import os
from typing import Any


def read_json(path: str, what: str = "file") -> Any:
    """Parse a JSON file; a missing file or bad JSON raises an error naming ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is corrupt (not valid JSON: {error})") from error


def write_json_atomic(path: str, data: Any, indent: int | None = 1) -> None:
    """Write JSON to a temporary file, then rename it: readers never see half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=indent)
    os.replace(tmp, path)
