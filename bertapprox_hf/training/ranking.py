"""Ranking distillation: train the student's query embedding to rank the teacher's candidates as the teacher does.

Each step draws ``queries_per_batch`` training queries of a candidates folder (``bertapprox candidates build``)
and ``candidates_per_query`` of each one's top-k (the teacher's first, the rest at random). Every query is scored
against every document drawn in the step: its own candidates are the hard ones, the other queries' the in-batch
negatives. Scores use the teacher's similarity (cosine or dot); the teacher's scores come from its fixed
embeddings of both sides. The student's query is scored against the teacher's documents (``sides: query``, what
asymmetric search scores) and, with ``sides: both``, also against its own document embeddings (student-only).

* ``listwise``: KL divergence between the teacher's and the student's softmax over the step's documents;
* ``margin_mse``: squared difference of the student's and the teacher's margins between each query's first
  candidate and its others.

Both are on the ``temperature``-scaled scores, and zero when the student equals the teacher.
The validation view (:class:`RankingValidation`) ranks a pool made of held-out queries' candidates, and measures
how much of the teacher's top 10 the student's ranking keeps, without judgments.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..pipeline.candidates import Candidates, load_candidates, teacher_similarity
from ..pipeline.targets import check_teacher_compatible
from .config import RankingConfig
from .data import Batcher, TokenizedBags, is_validation

TOP = 10  # the ranking view's depth


def similarity_scores(queries: torch.Tensor, documents: torch.Tensor, similarity: str) -> torch.Tensor:
    """``[queries, documents]`` scores with the teacher's similarity function."""
    queries, documents = queries.float(), documents.float()
    if similarity == "cosine":
        queries, documents = F.normalize(queries, dim=-1), F.normalize(documents, dim=-1)
    return queries @ documents.T


def ranking_loss(
    student_queries: torch.Tensor,
    teacher_queries: torch.Tensor,
    teacher_documents: torch.Tensor,
    own: torch.Tensor,
    config: RankingConfig,
    similarity: str,
    student_documents: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted ranking terms and each one's detached value.

    ``own[i]`` holds the columns of query ``i``'s own candidates in the document matrices, its first one first.
    """
    tau = config.temperature
    teacher = similarity_scores(teacher_queries, teacher_documents, similarity) / tau
    sides = {"query": similarity_scores(student_queries, teacher_documents, similarity) / tau}
    if student_documents is not None:
        sides["student"] = similarity_scores(student_queries, student_documents, similarity) / tau
    parts: dict[str, torch.Tensor] = {}
    if config.listwise:
        target = torch.softmax(teacher, dim=-1)
        values = [F.kl_div(torch.log_softmax(s, dim=-1), target, reduction="batchmean") for s in sides.values()]
        parts["listwise"] = torch.stack(values).mean()
    if config.margin_mse:
        own_teacher = teacher.gather(1, own)
        teacher_margin = own_teacher[:, :1] - own_teacher[:, 1:]
        values = []
        for scores in sides.values():
            own_student = scores.gather(1, own)
            values.append((own_student[:, :1] - own_student[:, 1:] - teacher_margin).pow(2).mean())
        parts["margin_mse"] = torch.stack(values).mean()
    total = sum(getattr(config, name) * value for name, value in parts.items())
    return total, {name: value.detach() for name, value in parts.items()}


def ranking_view(
    student_queries: np.ndarray,
    documents: np.ndarray,
    teacher_top: np.ndarray,
    similarity: str,
) -> dict[str, float]:
    """Overlap@10 and nDCG@10 of the student's ranking of ``documents`` against the teacher's top 10.

    ``teacher_top[i]`` is the teacher's best 10 of ``documents`` for query ``i``, best first; the document at the
    teacher's rank ``r`` has gain ``10 - r`` (others 0), so nDCG@10 is 1 when the student's top 10 is the
    teacher's, in its order.
    """
    scores = similarity_scores(torch.from_numpy(student_queries), torch.from_numpy(documents), similarity)
    student_top = scores.topk(TOP, dim=-1).indices.numpy()
    discounts = 1.0 / np.log2(np.arange(TOP) + 2)
    ideal = float(((TOP - np.arange(TOP)) * discounts).sum())
    overlaps, ndcgs = [], []
    for mine, theirs in zip(student_top, teacher_top, strict=True):
        gain = {int(doc): TOP - rank for rank, doc in enumerate(theirs[:TOP])}
        overlaps.append(len(gain.keys() & set(mine.tolist())) / TOP)
        ndcgs.append(sum(gain.get(int(doc), 0) * discounts[rank] for rank, doc in enumerate(mine)) / ideal)
    return {"overlap10": float(np.mean(overlaps)), "ndcg10": float(np.mean(ndcgs))}


def stack_inputs(parts: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Padded model inputs of several batches as one (right-padded to the widest), for a single forward pass."""
    width = max(part["input_ids"].shape[1] for part in parts)
    ids, masks = [], []
    for part in parts:
        extra = width - part["input_ids"].shape[1]
        ids.append(F.pad(part["input_ids"], (0, extra), value=pad_id))
        masks.append(F.pad(part["attention_mask"], (0, extra), value=0))
    return {"input_ids": torch.cat(ids), "attention_mask": torch.cat(masks)}


class RankingData:
    """The training queries of a candidates folder, drawn into ranking batches."""

    def __init__(
        self,
        config: RankingConfig,
        val_fraction: float,
        teacher: dict,
        batcher: Batcher,
        pretokenize: bool = True,
        workers: int = 0,
    ) -> None:
        self.config = config
        self.candidates: Candidates = load_candidates(config.candidates)
        manifest = self.candidates.manifest
        check_teacher_compatible(manifest["teacher"], teacher, f"the candidates in {config.candidates}")
        if abs(manifest["val_fraction"] - val_fraction) > 1e-12:
            raise ValueError(
                f"the candidates in {config.candidates} were mined with val_fraction {manifest['val_fraction']}, "
                f"but data.val_fraction is {val_fraction}: their documents would include validation texts"
            )
        if config.candidates_per_query > manifest["k"]:
            raise ValueError(
                f"ranking.candidates_per_query={config.candidates_per_query} exceeds the {manifest['k']} candidates "
                f"per query in {config.candidates}"
            )
        self.similarity = teacher_similarity(teacher)
        held_out = np.array([is_validation(i, val_fraction) for i in self.candidates.query_ids], dtype=bool)
        self.train_queries = np.flatnonzero(~held_out)
        self.val_queries = np.flatnonzero(held_out)[: config.eval_queries]
        if len(self.train_queries) < config.queries_per_batch:
            raise ValueError(
                f"{len(self.train_queries)} training queries in {config.candidates}, fewer than "
                f"ranking.queries_per_batch={config.queries_per_batch}"
            )
        self.batcher = batcher
        self.query_bags = self.doc_bags = None
        if pretokenize:
            self.query_bags = TokenizedBags(batcher, self.candidates.query_texts, workers)
            if config.sides == "both":
                self.doc_bags = TokenizedBags(batcher, self.candidates.doc_texts, workers)

    @property
    def training(self) -> bool:
        """Whether the ranking terms are trained (validation alone needs only the candidates)."""
        return bool(self.config.listwise or self.config.margin_mse)

    def _inputs(self, rows: np.ndarray, bags: TokenizedBags | None, texts: list[str]) -> dict[str, torch.Tensor]:
        empty = np.zeros((len(rows), 1), dtype=np.float32)
        if bags is not None:
            batch = self.batcher.from_bags([bags[r] for r in rows], empty)
        else:
            batch = self.batcher([texts[r] for r in rows], empty)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def batch(self, position: tuple[int, int], seed: int, rank: int = 0) -> dict:
        """The ranking batch drawn beside batch ``position`` = (epoch, batch in epoch) of process ``rank``: the
        same on a rerun, so a resumed run draws what the uninterrupted one would have."""
        config, data = self.config, self.candidates
        rng = np.random.default_rng([seed, *position, rank, 7])
        queries = rng.choice(self.train_queries, size=config.queries_per_batch, replace=False)
        per_query = config.candidates_per_query
        columns = np.stack(
            [
                np.concatenate([[0], 1 + rng.choice(data.candidates.shape[1] - 1, per_query - 1, replace=False)])
                for _ in queries
            ]
        )
        documents = data.candidates[queries[:, None], columns].reshape(-1)
        batch = {
            "queries": self._inputs(queries, self.query_bags, data.query_texts),
            "teacher_queries": torch.from_numpy(data.query_embeddings[queries].astype(np.float32)),
            "teacher_documents": torch.from_numpy(data.doc_embeddings[documents].astype(np.float32)),
            "own": torch.arange(len(documents)).reshape(len(queries), per_query),
        }
        if config.sides == "both":
            batch["documents"] = self._inputs(documents, self.doc_bags, data.doc_texts)
        return batch


class RankingValidation:
    """The validation's ranking view: held-out queries against a pool of their candidates."""

    def __init__(self, data: RankingData) -> None:
        candidates = data.candidates
        rows = data.val_queries
        self.similarity = data.similarity
        self.query_texts = [candidates.query_texts[r] for r in rows]
        pool = np.unique(candidates.candidates[rows].reshape(-1))
        self.doc_texts = [candidates.doc_texts[d] for d in pool]
        self.teacher_documents = candidates.doc_embeddings[pool].astype(np.float32)
        position = {int(doc): i for i, doc in enumerate(pool)}
        # The teacher's top 10 over the whole pool of documents lies in every query's candidates, best first.
        self.teacher_top = np.array([[position[int(d)] for d in candidates.candidates[r, :TOP]] for r in rows])

    def __len__(self) -> int:
        return len(self.query_texts)

    def evaluate(self, model) -> dict[str, float]:
        """``rank_{overlap10,ndcg10}_{asymmetric,student}`` of a model with an ``encode`` method."""
        if len(self) == 0:
            return {}
        queries = model.encode(self.query_texts, batch_size=256, convert_to_numpy=True).astype(np.float32)
        documents = model.encode(self.doc_texts, batch_size=256, convert_to_numpy=True).astype(np.float32)
        results = {}
        for mode, pool in (("asymmetric", self.teacher_documents), ("student", documents)):
            for name, value in ranking_view(queries, pool, self.teacher_top, self.similarity).items():
                results[f"rank_{name}_{mode}"] = value
        return results
