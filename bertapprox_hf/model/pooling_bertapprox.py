"""The student's arithmetic after φ, written once: per-entry tables in, pooled vector and sentence embedding out.

Everything that depends on one entry alone is a row of a table (:class:`EntryTables`): φ, the first round's
pooling scores, the first context block's first layer ``up(LN(φ))`` (not with self-attention) and a pair model's
``A·φ`` and ``B·φ``.
:meth:`BertApproxModel.entry_tables <.modeling_bertapprox.BertApproxModel.entry_tables>` computes them, for the
distinct ids of a training batch or once for the whole vocabulary. :class:`BagPooling` then pools padded bags of
table rows::

    rows ─▶ self-attention layers between each bag's entries (φ + Δ)              (optional)
         ─▶ softmax of the scores per bag and head ─▶ weighted sum per head        (round 1)
         ─▶ scores += rows · queries(previous pooled), softmax, sum                (further rounds)
         ─▶ context blocks: entries updated with their text's pooled vector, summed with the last weights
         ─▶ + pooled pair features (consecutive entries other than skip-grams)
    pooled ─▶ ρ (:class:`Readout`) ─▶ embedding

The same code serves training (:class:`BertApproxModel`), the fast ``Encoder`` (which stores the tables in a
chosen precision and overrides :meth:`BagPooling.gather_values` and :meth:`BagPooling.sum_values`) and the
exported ONNX/TorchScript graph (it is scriptable and traceable: plain Gather, Softmax, Einsum, Gemm, LayerNorm,
Gelu and TopK ops). The last context block is applied to the pooled vector directly:
``Σⱼ wⱼₕ·(xⱼ + down(gⱼ))ₕ = pooledₕ + downₕ(Σⱼ wⱼₕ·gⱼ) + bₕ·Σⱼ wⱼₕ``, so its second layer runs per text, not per
entry; the first block's first layer comes from its table, ``up(LN(φ) + U·c) = up(LN(φ)) + W_up·U·c``.
Self-attention (:class:`SelfAttentionBlock`) changes each entry's φ by a Δ that depends on its whole bag, so it
runs per text on the gathered rows; the linear tables stay valid: the first round's score of ``φ + Δ`` is the
table's score plus ``q·Δ``, a pair's ``A·(φ + Δ)`` is ``A·φ + A·Δ``.

Copied next to the model as remote code: imports only torch and transformers-level packages.
"""

# TorchScript compiles this module (the exported graph): it reads typing.Optional/Tuple, not PEP 604 unions.
# ruff: noqa: UP006, UP035, UP045

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class EntryTables(NamedTuple):
    """Per-entry rows the pooling gathers; row ``i`` belongs to the id that ``i`` stands for in the bags."""

    values: torch.Tensor  # φ [rows, hidden]
    scores: torch.Tensor  # first-round pooling scores [rows, heads], float32
    context_first: Optional[torch.Tensor]  # the first context block's up(LN(φ)) [rows, inner]
    pair_left: Optional[torch.Tensor]  # A·φ [rows, rank] (pair models)
    pair_right: Optional[torch.Tensor]  # B·φ [rows, rank]
    is_skipgram: Optional[torch.Tensor]  # [rows] bool: skip-grams are left out of pairs


def bag_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax of ``[batch, bag, heads]`` scores over each bag, ``mask`` [batch, bag, 1] bool: an all-padding bag
    gets all-zero weights."""
    scores = scores.masked_fill(~mask, -3.4028234663852886e38)  # float32's lowest (TorchScript has no finfo)
    return torch.softmax(scores, dim=1) * mask.to(scores.dtype)


def consecutive_pairs(
    units: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of consecutive pairs of the ``units`` ([batch, bag] bool: entries that take part) of each bag, in
    bag order: left and right positions and a mask, each [batch, bag - 1]."""
    width = units.shape[1]
    key = torch.arange(width, device=units.device) + width * (~units).long()  # units first, in order
    order = torch.argsort(key, dim=1)
    valid = torch.gather(units, 1, order)
    return order[:, :-1], order[:, 1:], valid[:, 1:]


class ResidualBlock(nn.Module):
    """x + W₂·dropout(GELU(W₁·LayerNorm(x))), with W₂ zero-initialised (identity at start)."""

    def __init__(self, size: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(size)
        self.up = nn.Linear(size, inner)
        self.down = nn.Linear(inner, size)
        self.dropout = nn.Dropout(dropout)
        self.down.init_rule = "zero"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(self.dropout(F.gelu(self.up(self.norm(x)))))


def query_scores(features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Each head's query ``queries`` [heads, head_dim] dotted with its slice of ``features`` [..., hidden], scaled:
    [..., heads]."""
    heads = features.unflatten(-1, (queries.shape[0], queries.shape[1]))
    scores = torch.einsum("...hd,hd->...h", heads, queries.to(heads.dtype))
    return scores / math.sqrt(queries.shape[1])


class SelfAttentionBlock(nn.Module):
    """A pre-LN Transformer encoder layer over the entries of each bag, without positions (a bag is a set):
    ``x + out(attention(LN(x)))``, then a :class:`ResidualBlock`.

    Multi-head scaled dot-product attention between the bag's entries (``scaled_dot_product_attention``: no
    ``[bag, bag]`` weights held per head on CPU); padding is masked out as a key, so it gives nothing to any entry,
    and what a padding row receives is never pooled (an all-padding bag's rows attend to each other, so that no
    row is left without a key). The output map and the MLP's second layer start at zero: a new layer is the
    identity. It scripts (TorchScript) and exports (ONNX: MatMul, Softmax, Where), dynamic bag axis included."""

    def __init__(self, size: int, width: int, heads: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.heads = int(heads)
        self.head_dim = int(width) // int(heads)
        self.norm = nn.LayerNorm(size)
        self.qkv = nn.Linear(size, 3 * width)
        self.out = nn.Linear(width, size)
        self.out.init_rule = "zero"
        self.dropout = nn.Dropout(dropout)
        self.mlp = ResidualBlock(size, inner, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [batch, bag, size] entries, ``mask`` [batch, bag, 1] bool (True = entry): [batch, bag, size]."""
        keys = mask.squeeze(-1)
        keys = keys | ~keys.any(dim=1, keepdim=True)  # an empty bag: its padding attends to itself, never pooled
        parts = self.qkv(self.norm(x)).unflatten(-1, (3, self.heads, self.head_dim)).permute(2, 0, 3, 1, 4)
        query, key, value = parts.unbind(0)  # each [batch, heads, bag, head_dim]
        mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=keys[:, None, None, :])
        return self.mlp(x + self.dropout(self.out(mixed.transpose(1, 2).flatten(-2))))


class ContextQuery(nn.Module):
    """The queries of a further pooling round: a linear map of the previous round's pooled vector,
    ``[batch, hidden] -> [batch, heads, head_dim]``, scaled so that a dot product with an entry's slice is
    its score. Zero at start: the round then repeats the previous one."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.proj.init_rule = "zero"

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        queries = self.proj(pooled.to(self.proj.weight.dtype)) / math.sqrt(self.head_dim)
        return queries.unflatten(-1, (self.num_heads, self.head_dim))


class ContextBlock(ResidualBlock):
    """A residual block on each entry that also sees its text's pooled vector: ``x + W₂·GELU(W₁·(LN(x) + U·c))``.

    The one step where entries interact (through ``c``, the pooling of the whole bag), the equivariant
    layer of DeepSets. ``W₁·(LN(x) + U·c) = entry_part(x) + text_part(c)``: the first depends on the entry alone
    (a table for the first block), the second on the text. W₂ starts at zero (identity at start)."""

    def __init__(self, size: int, inner: int, dropout: float) -> None:
        super().__init__(size, inner, dropout)
        self.context = nn.Linear(size, size, bias=False)

    def entry_part(self, x: torch.Tensor) -> torch.Tensor:
        """``W₁·LN(x) + b₁``: [..., inner]."""
        return self.up(self.norm(x))

    def text_part(self, pooled: torch.Tensor) -> torch.Tensor:
        """``W₁·U·c``: [..., inner]."""
        return F.linear(self.context(pooled.to(self.context.weight.dtype)), self.up.weight)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """``x`` [..., hidden] entries, ``pooled`` their texts' pooled vectors, broadcastable to ``x``."""
        return x + self.down(self.dropout(F.gelu(self.entry_part(x) + self.text_part(pooled))))


class PairPooling(nn.Module):
    """Features of consecutive entry pairs, pooled and mapped onto the pooled vector (zero at start).

    Pair ``(u, v)`` has the feature ``(A·φ_u) ⊙ (B·φ_v)`` (``rank`` values); a text's pairs are averaged with
    softmax weights of a linear score of their own. ``A·φ`` and ``B·φ`` depend on one entry each (tables), so a
    pair costs a product and a dot product. ``A``, ``B`` and the score keep torch's default initialisation, the
    map ``up`` starts at zero: a model with pairs starts as the model without.
    """

    def __init__(self, hidden: int, rank: int) -> None:
        super().__init__()
        self.left = nn.Linear(hidden, rank, bias=False)
        self.right = nn.Linear(hidden, rank, bias=False)
        self.score = nn.Linear(rank, 1)
        self.up = nn.Linear(rank, hidden, bias=False)
        for layer in (self.left, self.right, self.score):
            layer.init_rule = "default"
        self.up.init_rule = "zero"

    def forward(self, left: torch.Tensor, right: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``left``/``right`` [batch, pairs, rank] (``A·φ``, ``B·φ`` of each pair's entries), ``mask`` [batch, pairs]:
        [batch, hidden]; a text without pairs gets 0."""
        pair = left * right
        mask = mask.to(torch.bool).unsqueeze(-1)
        weights = bag_softmax(self.score(pair).float(), mask)
        return self.up(torch.einsum("bp,bpr->br", weights.squeeze(-1).to(pair.dtype), pair))


class AttentionPooling(nn.Module):
    """The pooling's learned scores: one query per head, an optional per-entry bias, and the query maps of the
    further rounds (``pooling_rounds``). :class:`BagPooling` does the pooling."""

    def __init__(self, vocab_size: int, hidden_size: int, num_heads: int, entry_bias: bool, rounds: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.queries = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.entry_bias = nn.Embedding(vocab_size, num_heads) if entry_bias else None
        self.context_queries = nn.ModuleList(ContextQuery(hidden_size, num_heads) for _ in range(rounds - 1))

    def scores(self, features: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """First-round pooling score of each entry for each head: [..., num_heads]."""
        scores = query_scores(features, self.queries)
        if self.entry_bias is not None:
            scores = scores + self.entry_bias(input_ids).to(scores.dtype)
        return scores


class Readout(nn.Module):
    """ρ: residual blocks and the output map on the pooled vector, then the optional L2 norm (float32 out)."""

    def __init__(self, rho: nn.Module, output_projection: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.rho = rho
        self.output_projection = output_projection
        self.normalize = bool(normalize)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.output_projection(self.rho(pooled)).float()
        return F.normalize(out, dim=-1) if self.normalize else out


class BagPooling(nn.Module):
    """Attention pooling of padded bags over :class:`EntryTables`: self-attention, rounds, context blocks and pairs.

    Holds the pooling's own modules (the further rounds' query maps, the context blocks, the pair pooling, the
    self-attention layers and, for them, the first round's ``queries`` [heads, head_dim]): the model's, or copies
    of them. ``fused`` sums table rows with ``embedding_bag`` (no gathered copy of the rows; fast in eager PyTorch
    and TorchScript) instead of a gather and an einsum (training, ONNX); self-attention always gathers.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        context_queries: nn.ModuleList,
        context_blocks: nn.ModuleList,
        pairs: Optional[nn.Module],
        fused: bool = False,
        self_attention: Optional[nn.ModuleList] = None,
        queries: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim)
        self.context_queries = context_queries
        self.context_blocks = context_blocks
        self.pairs = nn.ModuleList([pairs] if pairs is not None else [])
        self.fused = bool(fused)
        self.self_attention = self_attention if self_attention is not None else nn.ModuleList()
        if len(self.self_attention) and queries is None:
            raise ValueError("self-attention needs the first round's queries (its scores are the table's plus q·Δ)")
        if queries is None or not isinstance(queries, nn.Parameter):  # a copy: held, not trained
            queries = nn.Parameter(torch.zeros(0) if queries is None else queries.detach().clone(), requires_grad=False)
        self.queries = queries

    # --- reading the values table (an Encoder stores it in other precisions and overrides these two) ---------
    def gather_values(self, values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The φ rows of ``ids`` ([batch, bag]): [batch, bag, hidden]."""
        return F.embedding(ids, values)

    def sum_values(self, values: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ over each bag of ``weights`` [batch, bag, heads] times each head's slice of the φ rows: [batch, hidden].

        One ``embedding_bag`` over the table seen as ``[rows * heads, head_dim]``, one bag per (text, head)."""
        batch, width = ids.shape
        heads = self.num_heads
        head = torch.arange(heads, device=ids.device)
        rows = (ids.unsqueeze(1) * heads + head.view(1, heads, 1)).reshape(batch * heads, width)
        per_sample = weights.transpose(1, 2).reshape(batch * heads, width).to(values.dtype)
        table = values.view(-1, self.head_dim)
        out = F.embedding_bag(rows, table, mode="sum", per_sample_weights=per_sample)
        return out.view(batch, heads * self.head_dim)

    def weighted_sum(self, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ over each bag of ``weights`` [batch, bag, heads] times each head's slice of ``rows``: [batch, hidden]."""
        heads = rows.unflatten(-1, (self.num_heads, self.head_dim))
        return torch.einsum("bnh,bnhd->bhd", weights.to(heads.dtype), heads).flatten(-2)

    # --- the pooling ---------------------------------------------------------------------------------------
    def attend(
        self, rows: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The self-attention layers on gathered rows [batch, bag, hidden] (``mask`` [batch, bag, 1] bool): the rows
        after them, their change Δ and the first round's ``scores`` [batch, bag, heads] of the new rows."""
        changed = rows
        for block in self.self_attention:
            changed = block(changed, mask)
        delta = changed - rows
        return changed, delta, scores + query_scores(delta, self.queries).float()

    @torch.jit.unused
    def last_weights(self, ids: torch.Tensor, mask: torch.Tensor, tables: EntryTables) -> torch.Tensor:
        """The last pooling round's weights [batch, bag, heads] (the context blocks pool with them too); padding
        gets 0. For inspection (failure analysis), not on the encoding path."""
        mask = (mask > 0).unsqueeze(-1)
        scores = F.embedding(ids, tables.scores).float()
        rows = F.embedding(ids, tables.values)
        if len(self.self_attention):
            rows, _, scores = self.attend(rows, mask, scores)
        weights = bag_softmax(scores, mask)
        pooled = self.weighted_sum(rows, weights)
        for context in self.context_queries:
            heads = rows.unflatten(-1, (self.num_heads, self.head_dim))
            scores = scores + torch.einsum("bnhd,bhd->bnh", heads, context(pooled).to(heads.dtype)).float()
            weights = bag_softmax(scores, mask)
            pooled = self.weighted_sum(rows, weights)
        return weights

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, tables: EntryTables, entry_states: bool = False
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Pool bags of table rows ``ids`` [batch, bag] (``mask`` [batch, bag], nonzero = entry).

        Returns the pooled vector [batch, hidden] and, with ``entry_states``, each entry's features after the
        self-attention and context blocks [batch, bag, hidden] (then every block runs on every entry); else ``None``.
        """
        mask = (mask > 0).unsqueeze(-1)
        scores = F.embedding(ids, tables.scores).float()
        attends = len(self.self_attention) > 0
        fused = self.fused and not attends  # self-attention changes the rows: they are summed as they are
        needs_rows = entry_states or not fused or len(self.context_queries) > 0 or len(self.context_blocks) > 0
        rows = self.gather_values(tables.values, ids) if needs_rows else tables.values
        shift: Optional[torch.Tensor] = None  # the self-attention's Δ of each entry
        if attends:
            rows, shift, scores = self.attend(rows, mask, scores)
        weights = bag_softmax(scores, mask)
        if fused:
            pooled = self.sum_values(tables.values, ids, weights)
        else:
            pooled = self.weighted_sum(rows, weights)
        for context in self.context_queries:  # each round refines the previous round's scores
            heads = rows.unflatten(-1, (self.num_heads, self.head_dim))
            queries = context(pooled).to(heads.dtype)
            scores = scores + torch.einsum("bnhd,bhd->bnh", heads, queries).float()
            weights = bag_softmax(scores, mask)
            pooled = self.sum_values(tables.values, ids, weights) if fused else self.weighted_sum(rows, weights)
        last = len(self.context_blocks) - 1
        for index, block in enumerate(self.context_blocks):  # entries see their text, pooled with the same weights
            first = tables.context_first if index == 0 and not attends else None  # a table of φ, not of φ + Δ
            if first is not None:
                inner = F.embedding(ids, first).to(block.up.weight.dtype)
            else:
                inner = block.entry_part(rows)
            hidden = block.dropout(F.gelu(inner + block.text_part(pooled).unsqueeze(1)))
            if index == last and not entry_states:  # Σⱼ wⱼₕ·down(hⱼ)ₕ without running down per entry
                mixed = torch.einsum("bnh,bnk->bhk", weights.to(hidden.dtype), hidden)  # [batch, heads, inner]
                down = block.down.weight.view(self.num_heads, self.head_dim, -1)
                delta = torch.einsum("bhk,hdk->bhd", mixed, down)
                mass = weights.sum(dim=1).to(delta.dtype)  # 1 per head, 0 for an empty bag
                delta = delta + mass.unsqueeze(-1) * block.down.bias.view(self.num_heads, self.head_dim)
                pooled = pooled + delta.flatten(-2).to(pooled.dtype)
            else:
                rows = rows.to(hidden.dtype) + block.down(hidden)
                pooled = self.weighted_sum(rows, weights)
        for pairs in self.pairs:  # consecutive entries other than skip-grams, in bag order
            is_skipgram, left_table, right_table = tables.is_skipgram, tables.pair_left, tables.pair_right
            assert is_skipgram is not None and left_table is not None and right_table is not None, "no pair tables"
            left, right, pair_mask = consecutive_pairs(mask.squeeze(-1) & ~is_skipgram[ids])
            dtype = pairs.up.weight.dtype
            left_rows = F.embedding(torch.gather(ids, 1, left), left_table).to(dtype)
            right_rows = F.embedding(torch.gather(ids, 1, right), right_table).to(dtype)
            if shift is not None:  # A·(φ + Δ) = A·φ + A·Δ
                change = shift.to(dtype)
                size = change.shape[-1]
                left_rows = left_rows + pairs.left(torch.gather(change, 1, left.unsqueeze(-1).expand(-1, -1, size)))
                right_rows = right_rows + pairs.right(torch.gather(change, 1, right.unsqueeze(-1).expand(-1, -1, size)))
            pooled = pooled + pairs(left_rows, right_rows, pair_mask).to(pooled.dtype)
        return pooled, (rows if entry_states else None)


__all__ = [
    "AttentionPooling",
    "BagPooling",
    "ContextBlock",
    "ContextQuery",
    "EntryTables",
    "PairPooling",
    "Readout",
    "ResidualBlock",
    "SelfAttentionBlock",
    "bag_softmax",
    "consecutive_pairs",
    "query_scores",
]
