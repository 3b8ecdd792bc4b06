"""Fidelity metrics of a student against its teacher, by kind of text.

* ``mse``: mean squared L2 distance between student and teacher embeddings;
* ``cosine``: mean cosine between them;
* ``spearman``: Spearman correlation between the student's and the teacher's pairwise similarity
  matrices (upper triangles), with the teacher's similarity function (cosine or dot).

Texts are grouped by length: ``query`` (≤ 12 words), ``sentence`` (13–40) and ``passage`` (> 40);
``all`` covers every text.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BUCKETS = (("query", 0, 12), ("sentence", 13, 40), ("passage", 41, 10**9))


def text_bucket(text: str) -> str:
    """The length bucket of a text, counted in whitespace-separated words."""
    words = len(text.split())
    return next(name for name, low, high in BUCKETS if low <= words <= high)


def _ranks(values: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(values)
    ranks[values.argsort()] = torch.arange(len(values), dtype=values.dtype, device=values.device)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by position)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a.double()), _ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def pairwise_spearman(student: torch.Tensor, teacher: torch.Tensor, similarity: str, max_texts: int = 1000) -> float:
    """Spearman correlation of the two models' pairwise similarities over the first ``max_texts`` texts."""
    s, t = student[:max_texts].double(), teacher[:max_texts].double()
    if similarity == "cosine":
        s, t = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
    upper = torch.triu_indices(len(s), len(s), offset=1)
    return spearman((s @ s.T)[upper[0], upper[1]], (t @ t.T)[upper[0], upper[1]])


def fidelity(
    student: np.ndarray | torch.Tensor,
    teacher: np.ndarray | torch.Tensor,
    texts: list[str],
    similarity: str = "cosine",
) -> dict[str, float]:
    """``{metric}_{bucket}`` for every bucket with at least 3 texts, plus ``count_{bucket}``."""
    student = torch.as_tensor(np.asarray(student, dtype=np.float32))
    teacher = torch.as_tensor(np.asarray(teacher, dtype=np.float32))
    if student.shape != teacher.shape or len(texts) != len(student):
        raise ValueError(
            f"shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}, {len(texts)} texts"
        )
    groups = {"all": list(range(len(texts)))}
    for index, text in enumerate(texts):
        groups.setdefault(text_bucket(text), []).append(index)
    results: dict[str, float] = {}
    for name, index in groups.items():
        if len(index) < 3:
            continue
        s, t = student[index], teacher[index]
        results[f"count_{name}"] = len(index)
        results[f"mse_{name}"] = float((s - t).pow(2).sum(-1).mean())
        results[f"cosine_{name}"] = float(F.cosine_similarity(s, t, dim=-1).mean())
        results[f"spearman_{name}"] = pairwise_spearman(s, t, similarity)
    return results
