"""The student as one exportable graph: bag ids and mask in, sentence embedding out.

φ and the pooling scores depend on one entry each, so (as in :class:`~bertapprox_hf.inference.Encoder`)
they are computed once for the whole vocabulary and stored as two tables; the graph then only
gathers rows, softmaxes the scores over each bag (padding masked out), takes the weighted sum per
head (again per further pooling round, the previous scores plus the rows' dot products with queries computed
from the previous round's pooled vector), runs the optional context blocks on the gathered rows (each then
summed again with the last round's weights), adds a pair model's pooled pair features (their per-entry parts
are tables too; the pairs come from a sort of each bag's positions) and applies ρ. Every op is plain (Gather,
Softmax, Einsum, Gemm, LayerNorm, Gelu, TopK), so ONNX and TorchScript export it with dynamic batch and bag axes.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling_bertapprox import BertApproxModel, consecutive_pairs

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
VALUES_NAME = "entry_values"  # the φ table; the int8 ONNX variant quantizes this one
SCORES_NAME = "entry_scores"
PRECOMPUTE_CHUNK = 8192


class BagEmbeddingGraph(nn.Module):
    """``forward(input_ids [batch, bag] int64, attention_mask [batch, bag] int64) -> [batch, dim] float32``.

    Equal to ``BertApproxModel.forward(...).pooler_output`` up to float rounding; an all-padding
    bag gives ρ(0), as in the model.
    """

    def __init__(self, model: BertApproxModel) -> None:
        super().__init__()
        config = model.config
        self.num_heads = int(config.num_heads)
        self.head_dim = int(config.hidden_size // config.num_heads)
        self.normalize = bool(config.normalize)
        self.mask_value = float(torch.finfo(torch.float32).min)  # a plain float: TorchScript has no finfo
        values, scores = entry_tables(model)
        self.register_buffer(VALUES_NAME, values)
        self.register_buffer(SCORES_NAME, scores)
        self.context_queries = copy.deepcopy(model.pooling.context_queries).float()
        self.context_blocks = copy.deepcopy(model.context_blocks).float()
        self.pairs = nn.ModuleList([PairGraph(model, values)] if model.pairs is not None else [])
        self.rho = nn.Sequential(*copy.deepcopy(list(model.rho)), copy.deepcopy(model.output_projection)).float()
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1) > 0
        scores = F.embedding(input_ids, self.entry_scores)
        values = F.embedding(input_ids, self.entry_values).unflatten(-1, (self.num_heads, self.head_dim))
        weights = self._weights(scores, mask)
        pooled = torch.einsum("bnh,bnhd->bhd", weights, values).flatten(-2)
        for context in self.context_queries:  # each round refines the previous round's scores
            scores = scores + torch.einsum("bnhd,bhd->bnh", values, context(pooled))
            weights = self._weights(scores, mask)
            pooled = torch.einsum("bnh,bnhd->bhd", weights, values).flatten(-2)
        for block in self.context_blocks:  # entries updated with their text's pooled vector, same weights
            values = block(values.flatten(-2), pooled.unsqueeze(1)).unflatten(-1, (self.num_heads, self.head_dim))
            pooled = torch.einsum("bnh,bnhd->bhd", weights, values).flatten(-2)
        for pairs in self.pairs:
            pooled = pooled + pairs(input_ids, attention_mask)
        out = self.rho(pooled)
        if self.normalize:
            out = F.normalize(out, dim=-1)
        return out

    def _weights(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Softmax of [batch, bag, heads] scores over each bag; an all-padding bag gets all zero."""
        scores = scores.masked_fill(~mask, self.mask_value)
        return torch.softmax(scores, dim=1) * mask.to(scores.dtype)


class PairGraph(nn.Module):
    """A pair model's pair term from tables: ``A·φ`` and ``B·φ`` of every entry and the skip-gram flags, then the
    model's own :class:`~bertapprox_hf.modeling_bertapprox.PairPooling` (its score and map)."""

    def __init__(self, model: BertApproxModel, values: torch.Tensor) -> None:
        super().__init__()
        pairs = copy.deepcopy(model.pairs).float().cpu()
        with torch.no_grad():
            self.register_buffer("pair_left", pairs.left(values).contiguous())
            self.register_buffer("pair_right", pairs.right(values).contiguous())
        pairs.left = pairs.right = None  # now tables
        self.register_buffer("entry_is_skipgram", model.entry_is_skipgram.detach().cpu().clone())
        self.pooling = pairs

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        left, right, pair_mask = consecutive_pairs(input_ids, attention_mask, self.entry_is_skipgram)
        left_rows = F.embedding(torch.gather(input_ids, 1, left), self.pair_left)
        right_rows = F.embedding(torch.gather(input_ids, 1, right), self.pair_right)
        return self.pooling(left_rows, right_rows, pair_mask)


@torch.inference_mode()
def entry_tables(model: BertApproxModel) -> tuple[torch.Tensor, torch.Tensor]:
    """φ of every entry [vocab, hidden] and its pooling scores [vocab, heads], float32 on the CPU."""
    was_training = model.training
    model.eval()
    device = model.output_projection.weight.device
    values, scores = [], []
    try:
        for start in range(0, model.config.vocab_size, PRECOMPUTE_CHUNK):
            ids = torch.arange(start, min(start + PRECOMPUTE_CHUNK, model.config.vocab_size), device=device)
            features = model.entry_features(ids)
            values.append(features.float().cpu())
            scores.append(model.pooling.scores(features, ids).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(values).clone(), torch.cat(scores).clone()
