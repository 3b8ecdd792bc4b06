"""The computations of the failure analysis (:mod:`benchmarks.failures`): rankings, per-query agreement, bags
with their pooling weights, and figures grouped by text length, out-of-vocabulary rate and source.

Pure functions over arrays and dicts; nothing here loads a model or writes a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import per_query_ndcg

#: word-count buckets of texts (upper bounds, inclusive); the last one is open
LENGTH_BINS = (3, 6, 10, 20, 50, 100, 200)
#: out-of-vocabulary-rate buckets (upper bounds, inclusive): the share of a text's words no entry covers
OOV_BINS = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5)


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def rank(
    queries: np.ndarray,
    documents: np.ndarray,
    doc_ids: Sequence[str],
    query_ids: Sequence[str],
    similarity: str,
    k: int,
) -> dict[str, dict[str, float]]:
    """Exact top-``k`` run ``{query id: {doc id: score}}`` by cosine or dot product."""
    if similarity == "cosine":
        queries, documents = normalized(queries), normalized(documents)
    scores = queries @ documents.T
    k = min(k, len(doc_ids))
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    run = {}
    for row, qid in enumerate(query_ids):
        run[qid] = {doc_ids[j]: float(scores[row, j]) for j in top[row]}
    return run


def top_ids(run: dict[str, dict[str, float]], qid: str, k: int = 10) -> list[str]:
    """A query's ``k`` best documents, best first (ties by document id, descending, as trec_eval)."""
    ranked = sorted(run.get(qid, {}).items(), key=lambda item: (item[1], item[0]), reverse=True)
    return [doc for doc, _ in ranked[:k]]


def overlap_at(run: dict, reference: dict, qid: str, k: int = 10) -> float:
    """Share of the reference's top ``k`` of a query that the run's top ``k`` holds."""
    mine, theirs = set(top_ids(run, qid, k)), top_ids(reference, qid, k)
    return len(mine.intersection(theirs)) / max(len(theirs), 1)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, dim] matrices."""
    return np.sum(normalized(a) * normalized(b), axis=1)


@dataclass
class BagStats:
    """How the vocabulary covers one text: words read, words no entry covers (fallback), of them unknown."""

    words: int
    fallback_words: int
    unknown_words: int

    @property
    def oov_rate(self) -> float:
        return self.fallback_words / self.words if self.words else 0.0


def bag_stats(bag_encoder, text: str) -> BagStats:
    """Coverage of ``text`` by the vocabulary (a tokenizer's ``bag_encoder``)."""
    steps = bag_encoder.segments(text)
    words = sum(len(covered) for covered, _, _ in steps)
    fallback = [ids for _, ids, matched in steps if not matched]
    unknown = sum(1 for ids in fallback if bag_encoder.unk_id in ids)
    return BagStats(words, len(fallback), unknown)


def labelled_bag(bag_encoder, text: str, max_entries: int) -> list[tuple[int, str]]:
    """The bag of ``text`` (entry ids, as the model reads them) with each entry's role: ``entry`` (a word or
    n-gram of the vocabulary), ``skipgram``, ``fallback`` (a WordPiece piece of a word no entry covers) or
    ``unknown``."""
    from bertapprox_hf.model.tokenization_bertapprox import entry_kind

    steps = [
        (entry, "entry" if matched else ("unknown" if entry == bag_encoder.unk_id else "fallback"))
        for _, ids, matched in bag_encoder.segments(text, max_entries)
        for entry in ids
    ]
    labelled, position = [], 0
    for entry in bag_encoder.encode(text, max_entries):
        if position < len(steps) and steps[position][0] == entry:
            labelled.append(steps[position])
            position += 1
        else:  # skip-grams are added beside their first word, outside the longest-match steps
            kind = entry_kind(bag_encoder.entries[entry])
            labelled.append((entry, "skipgram" if kind == "skipgram" else "entry"))
    return labelled


def bin_label(value: float, bins: Sequence[float], percent: bool = False) -> str:
    """The bucket of ``value``: ``≤ b`` for the first upper bound it does not exceed, ``> last`` otherwise."""
    fmt = (lambda b: f"{100 * b:g}%") if percent else (lambda b: f"{b:g}")
    lower = None
    for bound in bins:
        if value <= bound:
            if lower is None:
                return fmt(bound) if bound == 0 else f"≤ {fmt(bound)}"
            return f"{fmt(lower)}–{fmt(bound)}" if percent else f"{int(lower) + 1}–{fmt(bound)}"
        lower = bound
    return f"> {fmt(bins[-1])}"


def bin_order(bins: Sequence[float], percent: bool = False) -> list[str]:
    """Every bucket label of ``bins``, in order."""
    probes = [bins[0]] + [b for b in bins[1:]] + [bins[-1] + 1]
    labels = [bin_label(p, bins, percent) for p in probes]
    return list(dict.fromkeys(labels))


def grouped(rows: Sequence[dict], key: str, values: Sequence[str], order: Sequence[str] | None = None) -> list[dict]:
    """Per value of ``rows[i][key]``: the count and the mean of each of ``values`` (rows lacking one skip it)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    names = [name for name in (order or sorted(groups)) if name in groups]
    out = []
    for name in names:
        members = groups[name]
        summary: dict = {key: name, "count": len(members)}
        for value in values:
            numbers = [row[value] for row in members if row.get(value) is not None]
            summary[value] = float(np.mean(numbers)) if numbers else None
        out.append(summary)
    return out


def per_query_rows(
    qrels: dict,
    runs: dict[str, dict],
    query_texts: dict[str, str],
    query_fidelity: dict[str, float],
    query_bags: dict[str, BagStats],
    k: int = 10,
) -> list[dict]:
    """One row per judged query: each system's nDCG@k, the top-``k`` overlap of the student's (student-only and
    asymmetric) with the teacher's, the query's fidelity, length and out-of-vocabulary rate."""
    ndcg = {}
    queries = None
    for name, run in runs.items():
        queries, scores = per_query_ndcg(qrels, run, queries, k)
        ndcg[name] = dict(zip(queries, scores.tolist(), strict=True))
    rows = []
    for qid in queries or []:
        stats = query_bags[qid]
        row = {"query_id": qid, "text": query_texts[qid]}
        row.update({f"ndcg_{name}": ndcg[name][qid] for name in runs})
        for name in runs:
            if name != "teacher":
                row[f"overlap_{name}"] = overlap_at(runs[name], runs["teacher"], qid, k)
                row[f"delta_{name}"] = ndcg["teacher"][qid] - ndcg[name][qid]
        row.update(
            fidelity=query_fidelity[qid],
            words=stats.words,
            oov_rate=stats.oov_rate,
            unknown_words=stats.unknown_words,
        )
        rows.append(row)
    return rows
