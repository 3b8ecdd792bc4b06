"""Retrieval and STS metrics, with the conventions of BEIR and TREC DL.

* ``ndcg@k``: trec_eval's nDCG (``pytrec_eval`` ``ndcg_cut``), gain = the graded label, log2 discount;
  every positive grade counts, whatever the relevance threshold.
* ``mrr@k``: reciprocal rank of the first document with grade ≥ ``relevance_threshold`` in the top ``k``
  (0 when there is none).
* ``recall@k``: share of the documents with grade ≥ ``relevance_threshold`` that are in the top ``k``.

TREC DL counts grade ≥ 2 as relevant for MRR and recall (``relevance_threshold=2``); BEIR sets use 1.
Means run over the queries of the qrels that have a relevant document (a positive grade for nDCG); a
query the run lacks scores 0. Ties in the run are broken as trec_eval does (by document id, descending).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def drop_identical_ids(run: Run) -> Run:
    """The run without documents whose id equals their query's id (BEIR's ``ignore_identical_ids``)."""
    return {qid: {doc: score for doc, score in docs.items() if doc != qid} for qid, docs in run.items()}


def top_k(run: Run, k: int) -> Run:
    """Each query's ``k`` best documents (ties by document id, descending, as trec_eval ranks them)."""
    cut = {}
    for qid, docs in run.items():
        ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k]
        cut[qid] = dict(ranked)
    return cut


def _evaluate(qrels: Qrels, run: Run, measures: set[str], relevance_level: int) -> dict[str, dict[str, float]]:
    import pytrec_eval

    run = {qid: docs for qid, docs in run.items() if docs and qid in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures, relevance_level=relevance_level)
    return evaluator.evaluate(run)


def _mean(per_query: dict[str, dict[str, float]], measure: str, queries: Sequence[str]) -> float:
    if not queries:
        return float("nan")
    return float(np.mean([per_query.get(qid, {}).get(measure, 0.0) for qid in queries]))


def per_query_ndcg(
    qrels: Qrels, run: Run, queries: Sequence[str] | None = None, k: int = 10
) -> tuple[list[str], np.ndarray]:
    """``(queries, nDCG@k of each)``: by default the qrels' queries with a positive grade, in sorted order (a query
    the run lacks scores 0), as :func:`retrieval_metrics` averages them."""
    if queries is None:
        queries = sorted(qid for qid, docs in qrels.items() if any(grade > 0 for grade in docs.values()))
    per_query = _evaluate(qrels, run, {f"ndcg_cut.{k}"}, 1)
    return list(queries), np.array([per_query.get(qid, {}).get(f"ndcg_cut_{k}", 0.0) for qid in queries])


def retrieval_metrics(
    qrels: Qrels,
    run: Run,
    relevance_threshold: int = 1,
    ndcg_k: int = 10,
    mrr_k: int = 10,
    recall_k: Sequence[int] = (100, 1000),
    num_docs: int | None = None,
) -> dict[str, float | int | None]:
    """``ndcg@{ndcg_k}``, ``mrr@{mrr_k}``, ``recall@{k}`` for each of ``recall_k``, and ``queries``.

    Args:
        qrels: ``{query_id: {doc_id: grade}}``.
        run: ``{query_id: {doc_id: score}}`` (any depth; higher scores rank first).
        relevance_threshold: the lowest grade that counts as relevant for MRR and recall.
        num_docs: the corpus size; ``recall@k`` for a ``k`` above it is None (it would equal recall@all).
    """
    if relevance_threshold < 1:
        raise ValueError(f"relevance_threshold must be ≥ 1, got {relevance_threshold}")
    graded = [qid for qid, docs in qrels.items() if any(grade > 0 for grade in docs.values())]
    relevant = [qid for qid, docs in qrels.items() if any(grade >= relevance_threshold for grade in docs.values())]
    recall_k = [k for k in recall_k]
    measures = {f"ndcg_cut.{ndcg_k}"}
    measures |= {f"recall.{k}" for k in recall_k}
    per_query = _evaluate(qrels, run, measures, relevance_threshold)
    reciprocal = _evaluate(qrels, top_k(run, mrr_k), {"recip_rank"}, relevance_threshold)
    results: dict[str, float | int | None] = {
        f"ndcg@{ndcg_k}": _mean(per_query, f"ndcg_cut_{ndcg_k}", graded),
        f"mrr@{mrr_k}": _mean(reciprocal, "recip_rank", relevant),
    }
    for k in recall_k:
        too_deep = num_docs is not None and k > num_docs
        results[f"recall@{k}"] = None if too_deep else _mean(per_query, f"recall_{k}", relevant)
    results["queries"] = len(graded)
    results["queries_with_relevant"] = len(relevant)
    return results


def spearman(predicted: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties, as scipy computes it)."""
    from scipy.stats import spearmanr

    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold scores")
    if len(gold) < 3:
        raise ValueError(f"Spearman correlation needs at least 3 pairs, got {len(gold)}")
    return float(spearmanr(predicted, gold).statistic)


def pearson(predicted: Sequence[float], gold: Sequence[float]) -> float:
    """Pearson correlation."""
    return float(np.corrcoef(np.asarray(predicted, dtype=float), np.asarray(gold, dtype=float))[0, 1])
