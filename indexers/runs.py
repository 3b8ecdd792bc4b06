"""Queries in, run files out: TREC (``qid Q0 docid rank score tag``) and JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from bertapprox_hf.errors import unreadable_path_error
from bertapprox_hf.pipeline.jsonio import iter_json_objects, utf8_lines

from .base import SearchResults, _query_names
from .ids import unique_positions


def read_queries(path: str | os.PathLike, dedupe: bool = False) -> tuple[list[str], list[str]]:
    """``(query_ids, texts)`` of a topics file; a repeated query id raises ``ValueError`` naming it (with
    ``dedupe``, the first query of each id is kept).

    ``.jsonl``: one ``{"_id" or "id", "text"}`` per line (BEIR layout); ``.tsv``/``.txt``: ``id<TAB>text``
    per line (MS MARCO and Pyserini topic files), a header line ``query-id...``/``qid...`` is skipped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise unreadable_path_error(path, "queries file")
    ids: list[str] = []
    texts: list[str] = []
    if path.endswith((".jsonl", ".json")):
        for number, row in iter_json_objects(path):
            query_id = row.get("_id", row.get("id", row.get("qid")))
            text = row.get("text", row.get("query"))
            if query_id is None or not isinstance(text, str):
                raise ValueError(f"{path}:{number}: expected an '_id' (or 'id') and a 'text' string")
            ids.append(str(query_id))
            texts.append(text)
    else:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(utf8_lines(handle, path), start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                parts = line.split("\t", 1)
                if len(parts) != 2:
                    raise ValueError(f"{path}:{number}: expected 'id<TAB>text'")
                if number == 1 and parts[0].lower() in ("query-id", "qid", "id", "query_id"):
                    continue
                ids.append(parts[0])
                texts.append(parts[1])
    if not ids:
        raise ValueError(f"{path}: no queries")
    kept = unique_positions(ids, "query", path, dedupe, "--dedupe-ids")
    if len(kept) < len(ids):
        ids, texts = [ids[i] for i in kept], [texts[i] for i in kept]
    return ids, texts


def write_trec(
    path: str | os.PathLike, results: SearchResults, query_ids: Sequence[str] | None = None, tag: str = "bertapprox"
) -> None:
    """A TREC run file: ``qid Q0 docid rank score tag``, ranks from 1, best first."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"the run tag must be one word, got {tag!r}")
    names = _query_names(results, query_ids)
    _make_parent(path)
    with open(path, "w", encoding="utf-8") as handle:
        for name, ids, scores in zip(names, results.ids, results.scores, strict=True):
            for rank, (doc, score) in enumerate(zip(ids, scores, strict=True), start=1):
                handle.write(f"{name} Q0 {doc} {rank} {float(score):.6f} {tag}\n")


def write_json(path: str | os.PathLike, results: SearchResults, query_ids: Sequence[str] | None = None) -> None:
    """``{query_id: {doc_id: score}}`` in rank order."""
    _make_parent(path)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(results.as_dict(query_ids), handle, indent=1)


def write_run(
    path: str | os.PathLike, results: SearchResults, query_ids: Sequence[str] | None = None, tag: str = "bertapprox"
) -> str:
    """A run file in the format its name says: ``.json`` → JSON, anything else → TREC. Returns the format."""
    if os.fspath(path).endswith(".json"):
        write_json(path, results, query_ids)
        return "json"
    write_trec(path, results, query_ids, tag)
    return "trec"


def read_trec(path: str | os.PathLike) -> dict[str, list[tuple[str, int, float]]]:
    """``{qid: [(docid, rank, score), ...]}`` of a TREC run file, in file order."""
    run: dict[str, list[tuple[str, int, float]]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if len(parts) != 6:
                raise ValueError(f"{path}:{number}: expected 6 columns, got {len(parts)}")
            run.setdefault(parts[0], []).append((parts[2], int(parts[3]), float(parts[4])))
    return run


def _make_parent(path: str | os.PathLike) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
