"""The fast encoder's pooling: the vocabulary's per-entry tables stored in a chosen precision, pooled by the
model's own code (:class:`~bertapprox_hf.model.pooling_bertapprox.BagPooling`).

Only how the φ table is read differs from the model: ``float32``, ``float16`` and ``bfloat16`` tables are summed
with ``embedding_bag`` (no gathered copy of the rows); an ``int8`` table is quantized per row (symmetric: int8
codes and one float32 scale per row) and, on CPU, stored in fbgemm's row-wise byte format so that the weighted sum
dequantizes inside the kernel. The other tables are kept in the values' precision (float32 for int8); the pooling
scores stay float32 and the pooling's modules run in float32. Self-attention runs per batch on the gathered
(dequantized) rows of the padded bags.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..model.modeling_bertapprox import BertApproxModel
from ..model.pooling_bertapprox import BagPooling, EntryTables
from .precision import DTYPES, has_fbgemm_byte_bag


def _float_copy(module: nn.Module | None, device: torch.device) -> nn.Module | None:
    if module is None:
        return None
    return copy.deepcopy(module).float().to(device).eval().requires_grad_(False)


class StoredTablePooling(BagPooling):
    """:class:`BagPooling` over the whole vocabulary's tables, kept in ``dtype`` on ``device``."""

    def __init__(self, model: BertApproxModel, dtype: str, device: torch.device) -> None:
        config = model.config
        super().__init__(
            config.num_heads,
            config.hidden_size // config.num_heads,
            _float_copy(model.pooling.context_queries, device),
            _float_copy(model.context_blocks, device),
            _float_copy(model.pairs, device),
            fused=True,
            self_attention=_float_copy(model.self_attention, device),
            queries=model.pooling.queries.detach().float().to(device),
        )
        self.dtype = dtype
        self.device = device
        tables = model.vocabulary_tables()
        table_dtype = torch.float32 if dtype == "int8" else DTYPES[dtype]

        def stored(table: torch.Tensor | None) -> torch.Tensor | None:
            if table is None:
                return None
            return table.to(device=device, dtype=table_dtype if table.is_floating_point() else table.dtype)

        self.int8 = self.int8_scale = self.packed = None
        values = self._store_values(tables.values)
        self.tables = EntryTables(
            values=values,
            scores=tables.scores.to(device),
            context_first=stored(tables.context_first),
            pair_left=stored(tables.pair_left),
            pair_right=stored(tables.pair_right),
            is_skipgram=stored(tables.is_skipgram),
        )

    def _store_values(self, values: torch.Tensor) -> torch.Tensor:
        """The φ table in the chosen precision (an empty placeholder when it is kept quantized)."""
        if self.dtype != "int8":
            return values.to(device=self.device, dtype=DTYPES[self.dtype]).contiguous()
        scale = values.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        quantized = torch.round(values / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        if self.device.type == "cpu" and has_fbgemm_byte_bag():
            # fbgemm's row-wise byte format, one row per (entry, head): uint8 codes then float32
            # scale and bias. Codes q + 128 with bias -128·scale decode to exactly scale·q.
            codes = (quantized.to(torch.int16) + 128).to(torch.uint8).view(-1, self.head_dim)
            row_scale = scale.repeat_interleave(self.num_heads)
            tail = torch.stack([row_scale, -128.0 * row_scale], dim=1).contiguous().view(torch.uint8)
            self.packed = torch.cat([codes, tail], dim=1).contiguous()
        else:
            self.int8 = quantized.to(self.device)
            self.int8_scale = scale.to(self.device)
        return torch.zeros(0, device=self.device)

    def gather_values(self, values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The φ rows of ``ids`` as float32 [batch, bag, hidden] (dequantized in int8 mode)."""
        hidden = self.num_heads * self.head_dim
        if self.packed is not None:
            rows = self.packed.view(-1, self.num_heads, self.packed.shape[1])[ids]  # codes, scale, bias per head
            scale = rows[..., self.head_dim : self.head_dim + 4].contiguous().view(torch.float32)
            return ((rows[..., : self.head_dim].float() - 128.0) * scale).view(*ids.shape, hidden)
        if self.int8 is not None:
            return F.embedding(ids, self.int8).float() * F.embedding(ids, self.int8_scale[:, None])
        return F.embedding(ids, values).float()

    def sum_values(self, values: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ over each bag of ``weights`` times each head's slice of the φ rows: [batch, hidden] float32."""
        if self.packed is not None:  # int8 on CPU: fbgemm dequantizes inside the sum
            batch, width = ids.shape
            heads = self.num_heads
            head = torch.arange(heads, device=ids.device)
            rows = (ids.unsqueeze(1) * heads + head.view(1, heads, 1)).reshape(-1)
            offsets = torch.arange(batch * heads, device=ids.device) * width
            per_sample = weights.transpose(1, 2).reshape(-1).contiguous()
            out = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
                self.packed, rows, offsets, False, 0, False, per_sample
            )
            return out.view(batch, heads * self.head_dim)
        if self.int8 is not None:  # int8 elsewhere: dequantize the gathered rows
            return self.weighted_sum(self.gather_values(values, ids), weights)
        return super().sum_values(values, ids, weights).float()

    @torch.inference_mode()
    def pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled vectors [batch, hidden] float32 of padded bags of entry ids."""
        pooled, _ = self(ids, mask, self.tables)
        return pooled.float()
