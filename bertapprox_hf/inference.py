"""Production inference: precomputed per-entry tables, a text → embedding cache and request batching.

φ and the pooling scores of :class:`~.modeling_bertapprox.BertApproxModel` depend on one entry each,
so :class:`Encoder` computes them once for the whole vocabulary when it loads::

    values = φ(E)                     [vocab, hidden]   (float32, float16, bfloat16 or int8 + scale)
    scores = pooling.scores(values)   [vocab, heads]    (always float32)

Encoding a batch is then: texts → bags of entry ids (concatenated, with lengths) → gather scores →
softmax per head over each bag (``segment_reduce``) → weighted sum of the gathered ``values`` rows per
head (one ``embedding_bag`` call over the table seen as ``[vocab * heads, head_dim]``) → ρ. An empty
bag pools to zero, as in the model. No padding, and no Python loop over texts beyond tokenization.
A model with further pooling rounds (``pooling_rounds``) repeats the softmax and the sum per round, each
round's scores being the previous round's plus the gathered rows' dot products with that round's queries
(a linear map of the previous round's pooled vector). A model with context blocks (``context_layers``)
then updates the gathered rows of each bag with its pooled vector and sums them again with the last round's
weights: the one step whose cost grows with bag size × block width. A single block's first layer splits into
a per-entry part, precomputed as one more table (``up(LN(φ))``, [vocab, inner]), and a per-text part, so
per entry it costs a gather, an add and a GELU; stacked blocks run the MLP on every gathered row (float32).
A pair model (``pair_rank``) keeps ``A·φ`` and ``B·φ`` as two more tables ([vocab, rank]): per bag its
entries other than skip-grams are paired with the next one, the pairs' rows multiplied, scored, softmaxed
per bag, summed (``segment_reduce``) and mapped onto the pooled vector before ρ.

    encoder = Encoder.from_pretrained("path/to/student", dtype="int8")
    embeddings = encoder.encode(["what is the interest rate", "new york city"])   # [2, dim] float32

    with BatchingEncoder(encoder, max_batch=64, max_wait_ms=2) as batcher:        # many threads
        row = batcher.submit("single query").result()
"""

from __future__ import annotations

import copy
import itertools
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .configuration_bertapprox import BertApproxConfig
from .modeling_bertapprox import BertApproxModel

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
}
PRECOMPUTE_CHUNK = 8192  # entries per φ call when the tables are built
CONTEXT_CHUNK = 4096  # entries per step of a context block on CPU
ROUND_CHUNK = 1024  # entries per step of a further pooling round on CPU: its temporaries stay in cache


def _dtype_name(dtype: str | torch.dtype) -> str:
    for name, value in DTYPES.items():
        if dtype == name or dtype == value:
            return name
    raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def _cpu_supports(dtype: torch.dtype) -> bool:
    """Whether the CPU has fast matrix multiplication in ``dtype`` (AVX512-BF16 / AMX-FP16)."""
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if dtype == torch.float16:
            return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        pass
    return False


def _has_fbgemm_byte_bag() -> bool:
    try:
        torch.ops.quantized.embedding_bag_byte_rowwise_offsets  # noqa: B018 (raises when missing)
    except (AttributeError, RuntimeError):
        return False
    return True


class _Rho(nn.Module):
    """ρ: a private copy of the model's residual blocks and output map, plus the optional L2 norm."""

    def __init__(self, model: BertApproxModel) -> None:
        super().__init__()
        self.net = nn.Sequential(*copy.deepcopy(list(model.rho)), copy.deepcopy(model.output_projection))
        self.normalize = bool(model.config.normalize)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        out = self.net(pooled).float()
        return F.normalize(out, dim=-1) if self.normalize else out


class _Int8Linear(nn.Module):
    """A Linear layer with int8 weights (symmetric, per output channel) and int8 activations
    (symmetric, per row, computed on the fly): ``torch._int_mm`` then one float rescale.

    Unlike ``torch.ao``'s dynamic quantization (one activation scale per batch), each row is
    quantized on its own, so a text's embedding does not depend on the rest of its batch.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros_like(scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        codes = torch.round(x / scale).to(torch.int8)
        out = torch._int_mm(codes, self.weight_t).float() * (scale * self.weight_scale) + self.bias
        return out.reshape(*shape[:-1], out.shape[-1])


def _quantize_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, _Int8Linear(child))
        else:
            _quantize_linears(child)


def _int_mm_works(device: torch.device) -> bool:
    """Whether ``torch._int_mm`` runs on ``device`` for the shapes ρ uses (it is CPU-fast, CUDA-picky)."""
    if device.type != "cpu":
        return False  # CUDA wants ≥ 17 rows; the GPU path keeps ρ in float
    try:
        a = torch.ones(1, 8, dtype=torch.int8)
        return bool(torch._int_mm(a, torch.ones(8, 8, dtype=torch.int8))[0, 0] == 8)
    except (AttributeError, RuntimeError):
        return False


class _PairTables:
    """A pair model's per-entry parts, ``A·φ`` and ``B·φ``, and the rest of its pair pooling, for flat bags."""

    def __init__(self, model: BertApproxModel, values: torch.Tensor, dtype: torch.dtype, device: torch.device):
        pairs = model.pairs
        self.is_skipgram = model.entry_is_skipgram.to(device)
        self.score_weight = pairs.score.weight.detach().float().reshape(-1).to(device)
        self.score_bias = pairs.score.bias.detach().float().to(device)
        self.up = pairs.up.weight.detach().float().t().contiguous().to(device)  # [rank, hidden]
        left, right = [], []
        with torch.inference_mode():
            for start in range(0, values.shape[0], PRECOMPUTE_CHUNK):
                chunk = values[start : start + PRECOMPUTE_CHUNK].to(device=device, dtype=pairs.left.weight.dtype)
                left.append(pairs.left(chunk).to(dtype))
                right.append(pairs.right(chunk).to(dtype))
        self.left, self.right = torch.cat(left).contiguous(), torch.cat(right).contiguous()

    def pooled(self, flat: torch.Tensor, lengths: torch.Tensor, bag_softmax) -> torch.Tensor:
        """The pair term of each of the concatenated bags: [bags, hidden] float32 (0 for a bag without pairs)."""
        bags = lengths.numel()
        bag_of_entry = torch.repeat_interleave(torch.arange(bags, device=flat.device), lengths)
        keep = ~self.is_skipgram.index_select(0, flat)
        units, unit_bag = flat[keep], bag_of_entry[keep]
        same = unit_bag[1:] == unit_bag[:-1]  # consecutive units of one bag
        pair_bag = unit_bag[1:][same]
        if pair_bag.numel() == 0:
            return torch.zeros(bags, self.up.shape[1], device=flat.device)
        counts = torch.bincount(pair_bag, minlength=bags)  # pairs come bag by bag
        pair = self.left.index_select(0, units[:-1][same]).float()
        pair.mul_(self.right.index_select(0, units[1:][same]))
        weights = bag_softmax(torch.mv(pair, self.score_weight).add_(self.score_bias)[:, None], counts)
        summed = torch.segment_reduce(pair.mul_(weights), "sum", lengths=counts, unsafe=True)
        return summed @ self.up


class ConfigProperties:
    """``dim``, ``similarity`` and sentence-transformers' ``get_sentence_embedding_dimension``, read from the
    model config (``self.config``) of an encoder: :class:`Encoder` and the exported-graph encoders."""

    config: BertApproxConfig

    @property
    def dim(self) -> int:
        """Size of the embeddings."""
        return self.config.output_dim

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    @property
    def similarity(self) -> str:
        """``"cosine"`` or ``"dot"``: the teacher's scoring function, from the model config."""
        return self.config.similarity


class Encoder(ConfigProperties):
    """Fast sentence embeddings from a :class:`BertApproxModel`, like sentence-transformers' ``encode``.

    Build it with :meth:`from_pretrained`. Output equals the model's ``forward`` (its
    ``pooler_output``): in float32 within 1e-5 absolute (tested; measured ≤ 2e-7 on real text
    and random bags of up to 512 entries), the only difference being the order of floating-point
    sums. Reduced precisions, as cosine loss (1 − cosine) to the float32 output on real text
    (MiniLM-vocabulary student, ``tests/test_inference.py``), mean / worst:

    * ``float16``: values table in float16; ρ in float16 on GPUs and CPUs with fast float16 matmul
      (AMX-FP16), else float32. Loss ~1e-8 / 2e-7 (tested ≤ 1e-6 / 1e-5).
    * ``bfloat16``: values table in bfloat16; ρ in bfloat16 on GPUs and CPUs with fast bfloat16
      matmul (AVX512-BF16, AMX), else float32. Loss 1.4e-5 / 2.4e-5 (tested ≤ 3e-5 / 5e-5).
    * ``int8``: values table quantized per row, symmetric (int8 codes + one float32 scale per row);
      on CPU ρ's Linear layers run int8 × int8 (weights per output channel, activations per row,
      see :class:`_Int8Linear`). Loss 6e-4 / 7e-4 (tested ≤ 8e-4 / 1e-3); with
      ``rho_dtype="float32"`` ~1e-5. On GPUs ρ stays float32.

    ``rho_dtype`` overrides the choice of ρ's precision. No mode makes a text's embedding depend on
    the other texts of its batch (beyond float rounding, ~1e-7).

    Pooling scores stay float32 in every mode. ``encode`` is thread-safe; its LRU cache of
    text → embedding (``cache_size`` texts, 0 disables) is shared by all threads.
    """

    def __init__(
        self,
        model: BertApproxModel,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        cache_size: int = 10000,
        rho_dtype: str | torch.dtype | None = None,
    ) -> None:
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be a non-negative integer, got {cache_size!r}")
        self.config = model.config
        self.tokenizer = model.get_tokenizer()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype_name(dtype)
        self.num_heads = model.config.num_heads
        self.head_dim = model.config.hidden_size // model.config.num_heads
        self.vocab_size = model.config.vocab_size
        self.max_bag_size = model.config.max_bag_size
        values, scores = self._precompute(model)
        self._scores = scores.to(self.device)
        self._build_values(values)
        contexts = copy.deepcopy(model.pooling.context_queries).float().to(self.device)
        self._context_queries = contexts.eval().requires_grad_(False)
        blocks = copy.deepcopy(model.context_blocks).float().to(self.device)
        self._context_blocks = blocks.eval().requires_grad_(False)
        self._context_table = self._precompute_context(values) if len(blocks) == 1 else None
        if self._context_table is not None:  # the text's part of the first layer, W_up·U, as one matrix
            self._context_up = blocks[0].up.weight @ blocks[0].context.weight
        self._pairs = _PairTables(model, values, self._table_dtype(), self.device) if model.pairs is not None else None
        self._build_rho(model, rho_dtype)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_model: str | os.PathLike | BertApproxModel,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        cache_size: int = 10000,
        rho_dtype: str | torch.dtype | None = None,
    ) -> Encoder:
        """An encoder for a saved model folder (or Hub id) or an in-memory model with its tokenizer.

        Args:
            path_or_model: folder written by ``save_pretrained``, or a :class:`BertApproxModel`
                (left unchanged: the encoder copies what it needs).
            device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
            dtype: ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"`` (see the class notes).
            cache_size: texts kept in the LRU cache of embeddings; 0 disables it.
            rho_dtype: force ρ's precision (``"float32"``, ``"float16"``, ``"bfloat16"`` or, on
                CPU, ``"int8"``); ``None`` picks what is fast on the device for ``dtype``.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(path_or_model, BertApproxModel):
            model = path_or_model
        elif isinstance(path_or_model, (str, os.PathLike)):
            model = BertApproxModel.from_pretrained(os.fspath(path_or_model))
            model.to(device)  # our own copy: build the tables where they will be used
        else:
            raise TypeError(f"expected a model folder or a BertApproxModel, got {type(path_or_model).__name__}")
        return cls(model, device=device, dtype=dtype, cache_size=cache_size, rho_dtype=rho_dtype)

    @torch.inference_mode()
    def _precompute(self, model: BertApproxModel) -> tuple[torch.Tensor, torch.Tensor]:
        """φ and the pooling scores of every entry, in chunks, where the model lives."""
        was_training = model.training
        model.eval()
        try:
            device = model.output_projection.weight.device
            values, scores = [], []
            for start in range(0, self.vocab_size, PRECOMPUTE_CHUNK):
                ids = torch.arange(start, min(start + PRECOMPUTE_CHUNK, self.vocab_size), device=device)
                features = model.entry_features(ids)
                values.append(features.float())
                scores.append(model.pooling.scores(features, ids).float())
        finally:
            model.train(was_training)
        return torch.cat(values), torch.cat(scores)

    @torch.inference_mode()
    def _precompute_context(self, values: torch.Tensor) -> torch.Tensor:
        """A single context block's first layer on every entry's own part, ``up(LN(φ))``: [vocab, inner].

        ``up(LN(φ) + U·c) = up(LN(φ)) + W_up·U·c``, so per text only the second term is new: the block then
        costs a gather, an add and a GELU per entry, a weighted sum per head and the per-head ``down`` map per
        text, instead of two matrix products per entry. Stored in the values' precision (float32 for int8).
        """
        block = self._context_blocks[0]
        dtype = self._table_dtype()
        rows = []
        for start in range(0, self.vocab_size, PRECOMPUTE_CHUNK):
            chunk = values[start : start + PRECOMPUTE_CHUNK].to(self.device)
            rows.append(block.up(block.norm(chunk)).to(dtype))
        return torch.cat(rows).contiguous()

    def _table_dtype(self) -> torch.dtype:
        """Precision of the per-entry tables other than the values: the values' own, float32 for int8."""
        return torch.float32 if self.dtype == "int8" else DTYPES[self.dtype]

    def _build_values(self, values: torch.Tensor) -> None:
        """The table that pooling sums rows of, in the chosen precision."""
        self._values = None
        self._int8 = None
        self._int8_scale = None
        self._packed = None
        if self.dtype != "int8":
            self._values = values.to(device=self.device, dtype=DTYPES[self.dtype]).contiguous()
            return
        scale = values.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        quantized = torch.round(values / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        if self.device.type == "cpu" and _has_fbgemm_byte_bag():
            # fbgemm's row-wise byte format, one row per (entry, head): uint8 codes then float32
            # scale and bias. Codes q + 128 with bias -128·scale decode to exactly scale·q.
            heads = self.num_heads
            codes = (quantized.to(torch.int16) + 128).to(torch.uint8).view(-1, self.head_dim)
            row_scale = scale.repeat_interleave(heads)
            tail = torch.stack([row_scale, -128.0 * row_scale], dim=1).contiguous().view(torch.uint8)
            self._packed = torch.cat([codes, tail], dim=1).contiguous()
        else:
            self._int8 = quantized.to(self.device)
            self._int8_scale = scale.to(self.device)

    def _build_rho(self, model: BertApproxModel, rho_dtype) -> None:
        """ρ in the requested precision, else the fastest that keeps the stated accuracy here."""
        rho = _Rho(model).eval().float().to(self.device)
        for param in rho.parameters():
            param.requires_grad_(False)
        int8_ok = _int_mm_works(self.device)
        if rho_dtype is not None:
            self.rho_dtype = _dtype_name(rho_dtype)
            if self.rho_dtype == "int8" and not int8_ok:
                raise ValueError(f"int8 ρ needs torch._int_mm on {self.device.type}")
        elif self.dtype == "int8":
            self.rho_dtype = "int8" if int8_ok else "float32"
        elif self.dtype != "float32" and (self.device.type != "cpu" or _cpu_supports(DTYPES[self.dtype])):
            self.rho_dtype = self.dtype
        else:
            self.rho_dtype = "float32"
        if self.rho_dtype == "int8":
            _quantize_linears(rho)
            self._rho_input_dtype = torch.float32
        else:
            rho.to(DTYPES[self.rho_dtype])
            self._rho_input_dtype = DTYPES[self.rho_dtype]
        self._rho = rho

    def __repr__(self) -> str:
        return (
            f"Encoder(vocab={self.vocab_size}, dim={self.dim}, dtype={self.dtype}, rho={self.rho_dtype}, "
            f"device={self.device}, cache={self._cache_size})"
        )

    # --- the fast path --------------------------------------------------------------------------
    def _weighted_bag_sum(self, flat: torch.Tensor, lengths: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_j weights[j, h] · values[flat[j], h, :] per bag and head: [bags, hidden].

        One ``embedding_bag`` over the table seen as ``[rows * heads, head_dim]``; its bags are
        ordered head-major (all bags of head 0, then head 1, ...), so each is contiguous.
        """
        heads, head_dim = self.num_heads, self.head_dim
        n, b = flat.numel(), lengths.numel()
        head = torch.arange(heads, device=flat.device)
        starts = torch.cumsum(lengths, 0) - lengths
        offsets = (starts[None, :] + n * head[:, None]).reshape(-1)
        per_sample = weights.t().reshape(-1)
        if self._packed is not None:  # int8 on CPU: fbgemm dequantizes inside the sum
            rows = (flat[None, :] * heads + head[:, None]).reshape(-1)
            out = torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
                self._packed, rows, offsets, False, 0, False, per_sample.contiguous()
            )
        else:
            if self._int8 is not None:  # int8 elsewhere: dequantize the gathered rows
                table = self._int8[flat].float().view(-1, head_dim)
                per_sample = (weights * self._int8_scale[flat, None]).t().reshape(-1)
                rows = (torch.arange(n, device=flat.device)[None, :] * heads + head[:, None]).reshape(-1)
            else:
                table = self._values.view(-1, head_dim)
                rows = (flat[None, :] * heads + head[:, None]).reshape(-1)
            out = F.embedding_bag(rows, table, offsets, mode="sum", per_sample_weights=per_sample.to(table.dtype))
        return out.view(heads, b, head_dim).transpose(0, 1).reshape(b, heads * head_dim)

    def _entry_values(self, flat: torch.Tensor) -> torch.Tensor:
        """The φ rows of ``flat`` entries as float32 ``[n, heads, head_dim]`` (dequantized in int8 mode)."""
        heads, head_dim = self.num_heads, self.head_dim
        if self._values is not None:
            return self._values.index_select(0, flat).float().view(-1, heads, head_dim)
        if self._int8 is not None:
            rows = self._int8.index_select(0, flat).float() * self._int8_scale.index_select(0, flat)[:, None]
            return rows.view(-1, heads, head_dim)
        rows = self._packed.view(-1, heads, self._packed.shape[1]).index_select(0, flat)  # codes, scale, bias
        scale = rows[..., head_dim : head_dim + 4].contiguous().view(torch.float32)
        return (rows[..., :head_dim].float() - 128.0) * scale

    @staticmethod
    def _bag_softmax(scores: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Softmax of ``[n, heads]`` scores over each bag of concatenated bags."""
        peak = torch.segment_reduce(scores, "max", lengths=lengths, unsafe=True)  # empty bags: unused
        exp = torch.exp(scores - peak.repeat_interleave(lengths, dim=0))
        total = torch.segment_reduce(exp, "sum", lengths=lengths, unsafe=True)
        return exp / total.repeat_interleave(lengths, dim=0)

    def _pool(self, flat: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Attention pooling of concatenated bags: a masked softmax per head, then the weighted sum (per
        round)."""
        b = lengths.numel()
        if flat.numel() == 0:
            return torch.zeros(b, self.num_heads * self.head_dim, device=self.device, dtype=self._rho_input_dtype)
        scores = self._scores[flat]  # [n, heads]
        weights = self._bag_softmax(scores, lengths)
        pooled = self._weighted_bag_sum(flat, lengths, weights)
        if len(self._context_queries) or len(self._context_blocks):
            bag_of_entry = torch.repeat_interleave(torch.arange(b, device=flat.device), lengths)
            for context in self._context_queries:
                scores = scores + self._round_scores(flat, bag_of_entry, context(pooled.float()))
                weights = self._bag_softmax(scores, lengths)
                pooled = self._weighted_bag_sum(flat, lengths, weights)
            if self._context_table is not None:
                pooled = self._context_pool_precomputed(flat, lengths, bag_of_entry, weights, pooled)
            elif len(self._context_blocks):
                pooled = self._context_pool(flat, lengths, bag_of_entry, weights, pooled)
        if self._pairs is not None:
            pooled = pooled + self._pairs.pooled(flat, lengths, self._bag_softmax)
        return pooled.to(self._rho_input_dtype)

    def _context_pool_precomputed(
        self,
        flat: torch.Tensor,
        lengths: torch.Tensor,
        bag_of_entry: torch.Tensor,
        weights: torch.Tensor,
        pooled: torch.Tensor,
    ) -> torch.Tensor:
        """One context block from its precomputed table: per head h, ``pooled_h + down_h(Σⱼ wⱼₕ·GELU(up(LN(φⱼ))
        + W_up·U·c)) + b_h·Σⱼ wⱼₕ``, equal to the block on every row followed by the weighted sum."""
        block = self._context_blocks[0]
        heads, head_dim = self.num_heads, self.head_dim
        b = lengths.numel()
        pooled = pooled.float()
        text_part = F.linear(pooled, self._context_up)  # [bags, inner]; the bias is in the table
        inner = text_part.shape[1]
        mixed = torch.zeros(heads, b, inner, device=flat.device)
        head = torch.arange(heads, device=flat.device)
        ends = torch.cumsum(lengths, 0)
        for first, last in self._bag_chunks(lengths):  # whole bags, about CONTEXT_CHUNK entries at a time
            start = int(ends[first - 1]) if first else 0
            stop = int(ends[last - 1])
            rows = self._context_table.index_select(0, flat[start:stop]).float()
            gelu = F.gelu(rows + text_part.index_select(0, bag_of_entry[start:stop]))  # [m, inner]
            m = stop - start
            starts = ends[first:last] - lengths[first:last] - start
            offsets = (starts[None, :] + m * head[:, None]).reshape(-1)  # head-major bags, as in the first sum
            indices = torch.arange(m, device=flat.device).repeat(heads)
            per_sample = weights[start:stop].t().reshape(-1)
            summed = F.embedding_bag(indices, gelu, offsets, mode="sum", per_sample_weights=per_sample)
            mixed[:, first:last] = summed.view(heads, last - first, inner)
        down = block.down.weight.view(heads, head_dim, inner)
        delta = torch.einsum("hbk,hdk->bhd", mixed, down)
        mass = torch.segment_reduce(weights, "sum", lengths=lengths, unsafe=True)  # 1 per head, 0 if empty
        delta = delta + mass[:, :, None] * block.down.bias.view(heads, head_dim)
        return pooled + delta.reshape(b, heads * head_dim)

    def _bag_chunks(self, lengths: torch.Tensor) -> list[tuple[int, int]]:
        """Consecutive ranges of whole bags of about ``CONTEXT_CHUNK`` entries each on CPU (one range elsewhere)."""
        if self.device.type != "cpu":
            return [(0, lengths.numel())]
        chunks, first, size = [], 0, 0
        for index, length in enumerate(lengths.tolist()):
            if size and size + length > CONTEXT_CHUNK:
                chunks.append((first, index))
                first, size = index, 0
            size += length
        chunks.append((first, lengths.numel()))
        return chunks

    def _context_pool(
        self,
        flat: torch.Tensor,
        lengths: torch.Tensor,
        bag_of_entry: torch.Tensor,
        weights: torch.Tensor,
        pooled: torch.Tensor,
    ) -> torch.Tensor:
        """The context blocks on the bags' gathered φ rows, each followed by the weighted sum per head with
        the last round's ``weights``: [bags, hidden] float32."""
        heads, head_dim = self.num_heads, self.head_dim
        n = flat.numel()
        step = CONTEXT_CHUNK if self.device.type == "cpu" else max(n, 1)
        rows = self._entry_values(flat).reshape(n, heads * head_dim)  # float32 [n, hidden]
        pooled = pooled.float()
        for block in self._context_blocks:
            updated = torch.empty_like(rows)
            for start in range(0, n, step):  # the block's [chunk, inner] temporaries stay small
                stop = min(start + step, n)
                updated[start:stop] = block(rows[start:stop], pooled.index_select(0, bag_of_entry[start:stop]))
            rows = updated
            weighted = (rows.view(n, heads, head_dim) * weights.unsqueeze(-1)).view(n, heads * head_dim)
            pooled = torch.segment_reduce(weighted, "sum", lengths=lengths, unsafe=True)
        return pooled

    def _round_scores(self, flat: torch.Tensor, bag_of_entry: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Each entry's φ rows dotted with its bag's ``queries`` ([bags, heads, head_dim]), per head: [n, heads].
        In chunks on CPU (no bag-sized temporaries), at once elsewhere."""
        n = flat.numel()
        step = ROUND_CHUNK if self.device.type == "cpu" else max(n, 1)
        rows = queries.reshape(queries.shape[0], -1)
        out = torch.empty(n, self.num_heads, device=flat.device)
        for start in range(0, n, step):
            stop = min(start + step, n)
            own = rows.index_select(0, bag_of_entry[start:stop]).view(-1, self.num_heads, self.head_dim)
            out[start:stop] = (self._entry_values(flat[start:stop]) * own).sum(-1)
        return out

    def _embed(self, bags: list[list[int]]) -> torch.Tensor:
        """Embeddings [len(bags), dim] (float32, on the device) of bags of valid entry ids."""
        flat = torch.tensor(list(itertools.chain.from_iterable(bags)), dtype=torch.long)
        return self._embed_flat(flat, torch.tensor([len(bag) for bag in bags], dtype=torch.long))

    @torch.inference_mode()
    def _embed_flat(self, flat: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
            flat = flat.to(self.device, non_blocking=True)
            lengths = lengths.to(self.device, non_blocking=True)
        return self._rho(self._pool(flat, lengths))

    def embed_bags(
        self, bags: Sequence[Sequence[int]], batch_size: int = 64, convert_to_numpy: bool = True
    ) -> np.ndarray | torch.Tensor:
        """Embeddings [len(bags), dim] float32 of bags of entry ids (no tokenizer, no cache)."""
        if bags is None or isinstance(bags, (str, bytes)):
            raise TypeError(f"expected a list of bags of entry ids, got {type(bags).__name__}")
        bags = list(bags)
        chunks = []
        for start in range(0, len(bags), batch_size):
            batch = bags[start : start + batch_size]
            for position, bag in enumerate(batch, start):
                if bag is None or isinstance(bag, (str, bytes)):
                    raise TypeError(f"bag {position} is {type(bag).__name__}, not a list of entry ids")
            lengths = np.array([len(bag) for bag in batch], dtype=np.int64)
            flat = np.array(list(itertools.chain.from_iterable(batch)))
            ends = np.cumsum(lengths)
            if flat.size and (flat.dtype.kind not in "iu" or flat.ndim != 1):
                items = list(itertools.chain.from_iterable(batch))
                bad = next((i for i, x in enumerate(items) if not isinstance(x, (int, np.integer))), 0)
                position = start + int(np.searchsorted(ends, bad, side="right"))
                raise TypeError(f"bag {position} holds {type(items[bad]).__name__}, not integer entry ids")
            outside = (flat < 0) | (flat >= self.vocab_size)
            if outside.any():
                position = start + int(np.searchsorted(ends, int(outside.argmax()), side="right"))
                raise ValueError(f"bag {position} has ids outside [0, {self.vocab_size}), the vocabulary size")
            flat_ids = torch.from_numpy(flat.astype(np.int64, copy=False))
            chunks.append(self._embed_flat(flat_ids, torch.from_numpy(lengths)))
        out = torch.cat(chunks) if chunks else torch.zeros(0, self.dim, device=self.device)
        return out.cpu().numpy() if convert_to_numpy else out

    # --- text in, embeddings out ----------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 64,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts: a [n, dim] float32 array (one row, 1-D, for a single string).

        Cached texts are copied from the cache; the others, each distinct text once, go through
        the model ``batch_size`` at a time. ``convert_to_numpy=False`` gives a tensor on the device.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else _check_texts(texts)
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        first: dict[str, int] = {}  # text not in the cache → its first position
        repeats: list[tuple[int, int]] = []  # (position, first position of the same text)
        with self._cache_lock:
            cache = self._cache if self._cache_size else {}
            hits = 0
            for position, text in enumerate(texts):
                row = cache.get(text)
                if row is not None:
                    cache.move_to_end(text)
                    result[position] = row
                    hits += 1
                elif first.setdefault(text, position) != position:
                    repeats.append((position, first[text]))
            self._hits += hits
            self._misses += len(texts) - hits
        pending = list(first)
        positions = np.fromiter(first.values(), dtype=np.intp, count=len(first))
        starts = range(0, len(pending), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Encoding", unit="batch")
        for start in starts:
            chunk = pending[start : start + batch_size]
            rows = self._embed(self.tokenizer.encode_bags(chunk, self.max_bag_size)).cpu().numpy()
            result[positions[start : start + batch_size]] = rows
            self._remember(chunk, rows)
        if repeats:
            targets, sources = zip(*repeats, strict=True)
            result[list(targets)] = result[list(sources)]
        if normalize_embeddings:
            norms = np.linalg.norm(result, axis=1, keepdims=True)
            result /= np.maximum(norms, 1e-12)
        if not convert_to_numpy:
            result = torch.from_numpy(result).to(self.device)
        return result[0] if single else result

    def _remember(self, texts: list[str], rows: np.ndarray) -> None:
        if not self._cache_size:
            return
        with self._cache_lock:
            for text, row in zip(texts, rows, strict=True):
                self._cache[text] = row.copy()  # a private copy: the caller's array is its own
                self._cache.move_to_end(text)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def cache_info(self) -> dict:
        """``hits``/``misses`` (texts asked for, counting repeats), ``size``, ``maxsize``, ``hit_rate``."""
        with self._cache_lock:
            asked = self._hits + self._misses
            return {
                "hits": self._hits,
                "misses": self._misses,
                "size": len(self._cache),
                "maxsize": self._cache_size,
                "hit_rate": self._hits / asked if asked else 0.0,
            }

    def clear_cache(self) -> None:
        """Empty the cache and reset its counters."""
        with self._cache_lock:
            self._cache.clear()
            self._hits = self._misses = 0


def _check_texts(texts) -> list[str]:
    if texts is None:
        raise TypeError("texts must be a string or a list of strings, got None")
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, not str")
    return list(texts)


_STOP = object()


class BatchingEncoder:
    """Collects single texts from many threads and encodes them together in one background thread.

    A batch goes out when it holds ``max_batch`` texts or ``max_wait_ms`` after its first text
    arrived, whichever comes first. ``submit`` returns a :class:`~concurrent.futures.Future` of the
    text's embedding (1-D float32). ``close`` (or leaving a ``with`` block) encodes what was
    already submitted, then stops the thread.
    """

    def __init__(
        self, encoder: Encoder, max_batch: int = 64, max_wait_ms: float = 2.0, normalize_embeddings: bool = False
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be ≥ 1 and max_wait_ms ≥ 0")
        self.encoder = encoder
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.normalize_embeddings = normalize_embeddings
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="BatchingEncoder", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future:
        """A future of ``text``'s embedding."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("this BatchingEncoder is closed")
            self._queue.put((text, future))
        return future

    def encode(self, text: str, timeout: float | None = None) -> np.ndarray:
        """``submit(text).result(timeout)``."""
        return self.submit(text).result(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._encode(batch)
            if stop:
                return

    def _encode(self, batch: list[tuple[str, Future]]) -> None:
        live = [(text, future) for text, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            rows = self.encoder.encode(
                [text for text, _ in live], batch_size=len(live), normalize_embeddings=self.normalize_embeddings
            )
        except BaseException as error:  # hand the failure to every waiting caller
            for _, future in live:
                future.set_exception(error)
            return
        for (_, future), row in zip(live, rows, strict=True):
            future.set_result(row.copy())

    def close(self) -> None:
        """Encode what was submitted, then stop the background thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> BatchingEncoder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
