"""Distillation losses: match the teacher's embeddings, and its in-batch similarity structure."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import LossConfig


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """How far the student's in-batch similarity structure is from the teacher's.

    * ``cross``: KL divergence between the teacher's softmax over its in-batch similarities and the
      student's softmax over its scores against the batch's *teacher* embeddings: anchored in the
      teacher's space (what asymmetric retrieval needs), focused on each text's nearest neighbours.
    * ``kl``: the same with the student-student matrix; blind to rotations of the space.
    * ``pairwise``: mean squared difference between cos(studentᵢ, teacherⱼ) and cos(teacherᵢ, teacherⱼ)
      over all pairs, divided by ``temperature``: it weighs the error in the directions of real
      texts, i.e. the error that changes similarity rankings.

    Similarities are cosines divided by ``temperature``.
    """
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    if kind == "pairwise":
        return (s @ t.T - t @ t.T).pow(2).mean() / temperature
    target = torch.softmax(t @ t.T / temperature, dim=-1)
    other = t if kind == "cross" else s
    log_probs = torch.log_softmax(s @ other.T / temperature, dim=-1)
    return F.kl_div(log_probs, target, reduction="batchmean")


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the configured terms, and each term's value for logging (detached tensors: reading
    them waits for the device, so the loop does it only when it logs).

    * ``mse``: squared L2 distance to the teacher embedding, averaged over the batch;
    * ``cosine``: 1 − cosine to the teacher embedding;
    * ``relational``: :func:`relational_loss`.
    """
    student = student.float()
    teacher = teacher.float()
    parts: dict[str, torch.Tensor] = {}
    if config.mse:
        parts["mse"] = (student - teacher).pow(2).sum(-1).mean()
    if config.cosine:
        parts["cosine"] = (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if config.relational:
        parts["relational"] = relational_loss(student, teacher, config.relational_kind, config.temperature)
    total = sum(getattr(config, name) * value for name, value in parts.items())
    return total, {name: value.detach() for name, value in parts.items()}
