"""Reading and writing the project's JSON records: clear errors on read, atomic writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any


def read_json(path: str, what: str = "file") -> Any:
    """Parse a JSON file; a missing file or bad JSON raises an error naming ``path``."""
    if not os.path.isfile(path):
        from ..errors import unreadable_path_error

        raise unreadable_path_error(path, what)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is corrupt (not valid JSON: {error})") from error


def iter_json_objects(path: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of a JSON-lines file; a line that is not valid JSON or
    not an object raises an error naming the file and line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(utf8_lines(handle, path), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object")
            yield number, row


def utf8_lines(handle, path: str) -> Iterator[str]:
    """The lines of a text file opened as UTF-8; a byte that is not UTF-8 raises an error naming the file and
    line."""
    number = 0
    try:
        for number, line in enumerate(handle, start=1):  # noqa: B007 (the line number of the error)
            yield line
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}:{number + 1}: not valid UTF-8 ({error.reason}); save the file as UTF-8") from error


def write_json_atomic(path: str, data: Any, indent: int | None = 1) -> None:
    """Write JSON to a temporary file, then rename it: readers never see half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=indent)
    os.replace(tmp, path)
