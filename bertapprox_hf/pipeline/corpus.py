"""Streaming text corpora: jsonl files, folders of them, `datasets` datasets, or plain lists.

Every reader yields ``{"id": str, "text": str}`` records without loading the corpus in memory.
A record's text is its ``text`` field, preceded by its ``title`` when it has a non-empty one.
"""

from __future__ import annotations

import glob
import itertools
import logging
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import unreadable_path_error
from .jsonio import iter_json_objects

Record = dict[str, str]
logger = logging.getLogger(__name__)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class RecordTally:
    """Records of one source that were skipped (``text`` not a string) or cleaned (lone surrogates, which no
    tokenizer or file format accepts, replaced by U+FFFD); reported in one warning when the source is read."""

    def __init__(self, source: str, unit: str) -> None:
        self.source, self.unit = source, unit  # unit: what a record's number counts ("line", "row")
        self.skipped: list[int] = []
        self.cleaned: list[int] = []

    def report(self) -> None:
        parts = [
            f"{len(found)} records {what} ({self.unit} {', '.join(map(str, found[:5]))}{', ...' * (len(found) > 5)})"
            for found, what in ((self.skipped, "skipped: text is not a string"),
                                (self.cleaned, "cleaned: lone surrogates replaced by U+FFFD"))
            if found
        ]  # fmt: skip
        if parts:
            logger.warning("%s: %s", self.source, "; ".join(parts))


def clean_text(text: str) -> str:
    """``text`` with its lone surrogates (invalid in UTF-8) replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def _record_text(
    row: dict[str, Any],
    text_field: str,
    title_field: str | None,
    where: str,
    tally: RecordTally | None = None,
    number: int = 0,
) -> str | None:
    """The record's text (title first), ``None`` for a record to skip (its text is not a string)."""
    if text_field not in row:
        raise ValueError(f"{where}: no '{text_field}' field (fields: {sorted(row)})")
    text = row[text_field]
    if not isinstance(text, str):
        if tally is None:
            raise TypeError(f"{where}: '{text_field}' is {type(text).__name__}, not a string")
        tally.skipped.append(number)
        return None
    title = row.get(title_field) if title_field else None
    text = f"{title} {text}" if isinstance(title, str) and title.strip() else text
    cleaned = clean_text(text)
    if cleaned is not text and tally is not None:
        tally.cleaned.append(number)
    return cleaned


def row_record(
    row: dict[str, Any],
    where: str,
    fallback_id: str | None = None,
    text_field: str = "text",
    title_field: str | None = "title",
    id_field: str | None = None,
    tally: RecordTally | None = None,
    number: int = 0,
) -> Record | None:
    """The record of one parsed jsonl line (``None``: skip it, its text is not a string). Its id is ``id_field``
    (default ``_id``, else ``id``), else ``fallback_id``; without either, ValueError naming ``where``."""
    text = _record_text(row, text_field, title_field, where, tally, number)
    if text is None:
        return None
    key = id_field or ("_id" if "_id" in row else "id")
    record_id = row.get(key)
    if record_id is not None:
        return {"id": clean_text(str(record_id)), "text": text}
    if fallback_id is None:
        raise ValueError(f"{where}: no '{key}' field (this reader needs every record to carry its id)")
    return {"id": fallback_id, "text": text}


def expand_paths(source: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Files named by ``source``: a file, a folder (its ``*.jsonl`` files) or a list of those."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in items:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "*.jsonl")))
            if not found:
                raise FileNotFoundError(f"no *.jsonl files in folder {item}")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise unreadable_path_error(item, "corpus file")
    return paths


def read_jsonl(
    path: str,
    text_field: str = "text",
    title_field: str | None = "title",
    id_field: str | None = None,
) -> Iterator[Record]:
    """Records of one jsonl file; a bad line raises an error naming the file and line."""
    tally = RecordTally(path, "line")
    try:
        for number, row in iter_json_objects(path):
            fallback = f"{os.path.basename(path)}:{number}"
            record = row_record(row, f"{path}:{number}", fallback, text_field, title_field, id_field, tally, number)
            if record is not None:
                yield record
    finally:  # also when the reader stops early (max_per_source)
        tally.report()


def iter_records(
    source,
    text_field: str = "text",
    title_field: str | None = "title",
    max_per_source: int | None = None,
    max_records: int | None = None,
    skip_per_source: int = 0,
    crops_per_text: int = 0,
    crop_min_words: int = 41,
    first_crop: int = 0,
) -> Iterator[Record]:
    """Records of any supported corpus.

    Args:
        source: a jsonl path, a folder of jsonl files, a list of paths, a `datasets` dataset
            (map-style or iterable), or an iterable of strings.
        max_per_source: take at most this many records from each file (balances a mix of sources).
        skip_per_source: first skip this many records of each file (to add the next texts of the same sources
            to an earlier set: ``skip_per_source=15000`` continues one made with ``max_per_source=15000``).
        crops_per_text: instead of the records, that many crops of each record of ``crop_min_words`` words or
            more (see :mod:`bertapprox_hf.pipeline.crops`); ``max_records`` then counts crops.
        first_crop: the number of the first crop of each record (to add crops to an earlier set of them).
        max_records: stop after this many records in all.
    """
    if skip_per_source < 0:
        raise ValueError(f"skip_per_source must not be negative, got {skip_per_source}")
    if first_crop and not crops_per_text:
        raise ValueError(f"first_crop={first_crop} numbers crops, but crops_per_text is 0 (no crops are made)")
    stream = _records(source, text_field, title_field, max_per_source, skip_per_source)
    if crops_per_text:
        from .crops import crop_records

        stream = crop_records(stream, crops_per_text, crop_min_words, first_crop=first_crop)
    return itertools.islice(stream, max_records) if max_records is not None else stream


def _records(
    source, text_field: str, title_field: str | None, max_per_source: int | None, skip: int
) -> Iterator[Record]:
    stop = None if max_per_source is None else skip + max_per_source
    if _names_files(source):
        for path in expand_paths(source):
            yield from itertools.islice(read_jsonl(path, text_field, title_field), skip, stop)
        return
    if _is_hf_dataset(source):
        rows = itertools.islice(iter(source), skip, stop)
        tally = RecordTally("dataset", "row")
        for number, row in enumerate(rows, start=skip):
            text = _record_text(row, text_field, title_field, f"dataset row {number}", tally, number)
            if text is None:
                continue
            record_id = row.get("_id", row.get("id"))
            yield {"id": clean_text(str(record_id)) if record_id is not None else str(number), "text": text}
        tally.report()
        return
    if isinstance(source, Iterable):
        for number, text in enumerate(itertools.islice(source, skip, stop), start=skip):
            if not isinstance(text, str):
                raise TypeError(f"corpus item {number} is {type(text).__name__}, not a string")
            yield {"id": str(number), "text": clean_text(text)}
        return
    raise TypeError(f"unsupported corpus type: {type(source).__name__}")


def _names_files(source) -> bool:
    """A path, or a list of paths that all exist (a list of other strings is a list of texts)."""
    if isinstance(source, (str, os.PathLike)):
        return True
    return (
        isinstance(source, (list, tuple))
        and len(source) > 0
        and all(isinstance(item, (str, os.PathLike)) and os.path.exists(os.fspath(item)) for item in source)
    )


def _is_hf_dataset(source) -> bool:
    module = type(source).__module__ or ""
    return module.startswith("datasets.")


def iter_texts(source, **kwargs) -> Iterator[str]:
    """Texts of any supported corpus (see :func:`iter_records` for the arguments)."""
    for record in iter_records(source, **kwargs):
        yield record["text"]
