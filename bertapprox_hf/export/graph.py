"""The student as one exportable graph: bag ids and mask in, sentence embedding out.

The per-entry tables (φ, pooling scores, the first context block's first layer, pair tables) are computed once for
the whole vocabulary (:meth:`BertApproxModel.vocabulary_tables`) and stored as buffers; the graph then runs the
model's own pooling code (:class:`~bertapprox_hf.model.pooling_bertapprox.BagPooling`) on the gathered rows and ρ
(with self-attention between the entries of each bag first, when the model has it). Every op is plain (Gather,
Softmax, Einsum, Gemm, LayerNorm, Gelu, TopK), so ONNX and TorchScript export it with dynamic batch and bag axes.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..model.modeling_bertapprox import BertApproxModel
from ..model.pooling_bertapprox import BagPooling, EntryTables, Readout

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
VALUES_NAME = "entry_values"  # the φ table; the int8 ONNX variant quantizes this one
SCORES_NAME = "entry_scores"


class BagEmbeddingGraph(nn.Module):
    """``forward(input_ids [batch, bag] int64, attention_mask [batch, bag] int64) -> [batch, dim] float32``.

    Equal to ``BertApproxModel.forward(...).pooler_output`` up to float rounding; an all-padding
    bag gives ρ(0), as in the model.
    """

    def __init__(self, model: BertApproxModel) -> None:
        super().__init__()
        tables = model.vocabulary_tables()
        self.register_buffer(VALUES_NAME, tables.values.cpu())
        self.register_buffer(SCORES_NAME, tables.scores.cpu())
        # optional tables are empty when absent: TorchScript wants a buffer of each name
        for name in ("context_first", "pair_left", "pair_right", "is_skipgram"):
            table = getattr(tables, name)
            self.register_buffer(name, table.cpu() if table is not None else torch.zeros(0))
        self.has_context = tables.context_first is not None
        self.has_pairs = tables.pair_left is not None
        config = model.config

        def own(module: nn.Module | None) -> nn.Module | None:  # a float32 CPU copy
            return None if module is None else copy.deepcopy(module).float().cpu()

        self.pooling = BagPooling(
            config.num_heads,
            config.hidden_size // config.num_heads,
            own(model.pooling.context_queries),
            own(model.context_blocks),
            own(model.pairs),
            self_attention=own(model.self_attention),
            queries=model.pooling.queries.detach().float().cpu(),
        )
        self.readout = Readout(own(model.rho), own(model.output_projection), config.normalize)
        self.eval()
        for param in self.parameters():
            param.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tables = EntryTables(
            self.entry_values,
            self.entry_scores,
            self.context_first if self.has_context else None,
            self.pair_left if self.has_pairs else None,
            self.pair_right if self.has_pairs else None,
            self.is_skipgram if self.has_pairs else None,
        )
        pooled, _ = self.pooling(input_ids, attention_mask, tables)
        return self.readout(pooled)
