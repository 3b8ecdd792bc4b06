"""The fast student encoder: per-entry tables precomputed for the whole vocabulary, a text → embedding cache.

φ, the pooling scores and the other per-entry parts of :class:`~bertapprox_hf.model.BertApproxModel` depend on one
entry each, so :class:`Encoder` computes them once when it loads (:meth:`BertApproxModel.vocabulary_tables`) and
keeps them in the chosen precision (:mod:`.tables`). Encoding a batch is then: texts → bags of entry ids (length
-sorted batches, :mod:`~bertapprox_hf.model.encoding_bertapprox`) → the model's own pooling over the tables
(:class:`~bertapprox_hf.model.pooling_bertapprox.BagPooling`, the φ rows summed with ``embedding_bag``) → ρ.

    encoder = Encoder.from_pretrained("path/to/student", dtype="int8")
    embeddings = encoder.encode(["what is the interest rate", "new york city"])   # [2, dim] float32
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..model.encoding_bertapprox import check_batch_size, check_texts, embed_in_length_order, embed_sorted, finish
from ..model.modeling_bertapprox import BertApproxModel
from ..model.pooling_bertapprox import Readout
from ..model.tokenization_bertapprox import pad_bag_arrays, pad_flat_bags
from .cache import EmbeddingCache
from .precision import DTYPES, cpu_supports, dtype_name, int8_matmul_is_fast, int_mm_works, quantize_linears
from .protocol import ConfigProperties
from .tables import StoredTablePooling

ENTRY_CHUNK = 4096  # entries per pooling step on CPU for models that gather rows: their temporaries stay in cache


class EmbeddedTexts(NamedTuple):
    """:meth:`Encoder.embed_texts`' result: embeddings, bag sizes and the time each step took."""

    rows: np.ndarray  # [n, dim] float32
    bag_sizes: np.ndarray  # [n] int64: entries in each text's bag
    tokenize_seconds: float
    model_seconds: float


class Encoder(ConfigProperties):
    """Fast sentence embeddings from a :class:`BertApproxModel`, like sentence-transformers' ``encode``.

    Build it with :meth:`from_pretrained`. Output equals the model's ``forward`` (its
    ``pooler_output``): in float32 within 1e-5 absolute (tested; measured ≤ 2e-7 on real text
    and random bags of up to 512 entries), the only difference being the order of floating-point
    sums. Reduced precisions, as cosine loss (1 − cosine) to the float32 output on real text
    (float16, bfloat16: MiniLM-vocabulary student, ``tests/test_inference.py``), mean / worst:

    * ``float16``: values table in float16; ρ in float16 on GPUs and CPUs with fast float16 matmul
      (AMX-FP16), else float32. Loss ~1e-8 / 2e-7 (tested ≤ 1e-6 / 1e-5).
    * ``bfloat16``: values table in bfloat16; ρ in bfloat16 on GPUs and CPUs with fast bfloat16
      matmul (AVX512-BF16, AMX), else float32. Loss 1.4e-5 / 2.4e-5 (tested ≤ 3e-5 / 5e-5).
    * ``int8``: values table quantized per row, symmetric (int8 codes + one float32 scale per row).
      ρ's Linear layers run int8 × int8 (:class:`~.precision.Int8Linear`) on CPUs with int8 dot
      products (AVX512-VNNI, AMX); elsewhere ``torch._int_mm`` is a plain loop, 10–25× slower than
      float32, and ρ stays float32, as on GPUs. Worst loss ≤ 1e-3 (``INT8_LOSS_BOUND``, tested on
      real texts of every corpus and fuzzed texts, ``tests/test_int8_bound.py``). Measured on the
      demo student, 18,343 texts of 11 corpora (``python -m benchmarks.student_precision --model M``,
      ``results/student-precision/``), mean / p99.9 / max: int8 ρ 4.1e-5 / 2.1e-4 / 4.5e-4 (fuzzed
      texts ≤ 1.8e-4), float32 ρ 1.5e-5 / 4.3e-5 / 6.3e-5.

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
        self.cache = EmbeddingCache(cache_size)
        self.config = model.config
        self.tokenizer = model.get_tokenizer()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = dtype_name(dtype)
        self.vocab_size = model.config.vocab_size
        self.max_bag_size = model.config.max_bag_size
        self.pooling = StoredTablePooling(model, self.dtype, self.device)
        config = model.config
        gathers_rows = (
            config.pooling_rounds > 1
            or config.context_layers > 0
            or config.pair_rank > 0
            or config.self_attention_layers > 0
        )
        self._entry_chunk = ENTRY_CHUNK if gathers_rows and self.device.type == "cpu" else None
        self._build_rho(model, rho_dtype)

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

    def _build_rho(self, model: BertApproxModel, rho_dtype) -> None:
        """ρ in the requested precision, else the fastest that keeps the stated accuracy here."""
        rho = Readout(copy.deepcopy(model.rho), copy.deepcopy(model.output_projection), model.config.normalize)
        rho = rho.eval().float().to(self.device).requires_grad_(False)
        int8_ok = int_mm_works(self.device)
        if rho_dtype is not None:
            self.rho_dtype = dtype_name(rho_dtype)
            if self.rho_dtype == "int8" and not int8_ok:
                raise ValueError(f"int8 ρ needs torch._int_mm on {self.device.type}")
        elif self.dtype == "int8":
            self.rho_dtype = "int8" if int8_ok and int8_matmul_is_fast() else "float32"
        elif self.dtype != "float32" and (self.device.type != "cpu" or cpu_supports(DTYPES[self.dtype])):
            self.rho_dtype = self.dtype
        else:
            self.rho_dtype = "float32"
        if self.rho_dtype == "int8":
            quantize_linears(rho)
            self._rho_input_dtype = torch.float32
        else:
            rho.to(DTYPES[self.rho_dtype])
            self._rho_input_dtype = DTYPES[self.rho_dtype]
        self._rho = rho

    def __repr__(self) -> str:
        return (
            f"Encoder(vocab={self.vocab_size}, dim={self.dim}, dtype={self.dtype}, rho={self.rho_dtype}, "
            f"device={self.device}, cache={self.cache.size})"
        )

    # --- bags in, embeddings out ----------------------------------------------------------------
    def pool_bags(self, bags: list[Sequence[int]]) -> torch.Tensor:
        """Pooled vectors [len(bags), hidden] (float32, on the device) of a batch of bags of valid entry ids."""
        return self.pool_padded(*pad_bag_arrays(bags))

    @torch.inference_mode()
    def pool_padded(self, ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        """Pooled vectors [batch, hidden] (float32, on the device) of right-padded bags: ``ids`` and ``mask``
        [batch, width] int64 arrays (:func:`pad_bag_arrays`), taken as they are (``torch.from_numpy``)."""
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
        if self.device.type != "cpu":
            ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        step = len(ids)
        if self._entry_chunk is not None:
            step = max(1, self._entry_chunk // ids.shape[1])
        if step >= len(ids):  # one piece: no copy through torch.cat
            return self.pooling.pool(ids, mask)
        pieces = range(0, len(ids), step)
        return torch.cat([self.pooling.pool(ids[i : i + step], mask[i : i + step]) for i in pieces])

    @torch.inference_mode()
    def readout(self, pooled: torch.Tensor) -> torch.Tensor:
        """ρ (in its precision) on pooled vectors: embeddings, float32."""
        return self._rho(pooled.to(self._rho_input_dtype)).float()

    def _embed(self, bags: list[Sequence[int]]) -> torch.Tensor:
        """Embeddings [len(bags), dim] (float32, on the device) of a batch of bags of valid entry ids."""
        return self.readout(self.pool_bags(bags))

    def embed_bags(
        self, bags: Sequence[Sequence[int]], batch_size: int = 64, convert_to_numpy: bool = True
    ) -> np.ndarray | torch.Tensor:
        """Embeddings [len(bags), dim] float32 of bags of entry ids (no tokenizer, no cache)."""
        if bags is None or isinstance(bags, (str, bytes)):
            raise TypeError(f"expected a list of bags of entry ids, got {type(bags).__name__}")
        batch_size = check_batch_size(batch_size)
        bags = list(bags)
        self._check_bags(bags)
        out = embed_sorted(bags, self._embed, self.dim, batch_size, device=self.device)
        return out.cpu().numpy() if convert_to_numpy else out

    def _check_bags(self, bags: list) -> None:
        """A ``TypeError``/``ValueError`` naming the first bag that is not a list of entry ids of the vocabulary."""
        for position, bag in enumerate(bags):
            if bag is None or isinstance(bag, (str, bytes)) or not hasattr(bag, "__len__"):
                raise TypeError(f"bag {position} is {type(bag).__name__}, not a list of entry ids")
        ends = np.cumsum([len(bag) for bag in bags])
        items = list(itertools.chain.from_iterable(bags))
        flat = np.array(items)
        if flat.size and (flat.dtype.kind not in "iu" or flat.ndim != 1):
            bad = next((i for i, x in enumerate(items) if not isinstance(x, (int, np.integer))), 0)
            position = int(np.searchsorted(ends, bad, side="right"))
            raise TypeError(f"bag {position} holds {type(items[bad]).__name__}, not integer entry ids")
        outside = (flat < 0) | (flat >= self.vocab_size)
        if outside.any():
            position = int(np.searchsorted(ends, int(outside.argmax()), side="right"))
            raise ValueError(f"bag {position} has ids outside [0, {self.vocab_size}), the vocabulary size")

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
        texts = [texts] if single else check_texts(texts)
        batch_size = check_batch_size(batch_size)
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        first, repeats = self.cache.lookup(texts, result)
        pending = list(first)
        if pending:
            rows = self.embed_texts(pending, batch_size, show_progress_bar).rows
            result[np.fromiter(first.values(), dtype=np.intp, count=len(first))] = rows
            self.cache.store(pending, rows)
        if repeats:
            targets, sources = zip(*repeats, strict=True)
            result[list(targets)] = result[list(sources)]
        out = finish(result, single, normalize_embeddings, convert_to_numpy)
        return out if convert_to_numpy else out.to(self.device)

    def embed_texts(self, texts: list[str], batch_size: int = 64, show_progress_bar: bool = False) -> EmbeddedTexts:
        """What :meth:`encode` does to the texts it does not find in the cache (it calls this), with what it cost:
        each text's embedding [len(texts), dim] float32 (numpy), its bag size and the seconds spent tokenizing and
        in the model. No cache, no checks of ``texts`` (a list of str).

        The bags come as flat arrays where the tokenizer gives them so (:meth:`~BertApproxTokenizer.
        encode_bags_flat`: no Python object per entry) and are padded a batch at a time; else as lists. Both give the
        same padded batches, so the same embeddings. Texts that fit in one batch are embedded as they come."""
        start = time.perf_counter()
        flat = getattr(self.tokenizer, "encode_bags_flat", None)
        if flat is None:  # a tokenizer of another version (remote code)
            bags = self.tokenizer.encode_bags(texts, self.max_bag_size)
            sizes = np.fromiter(map(len, bags), dtype=np.int64, count=len(bags))
            tokenized = time.perf_counter()
            out = embed_sorted(bags, self._embed, self.dim, batch_size, show_progress_bar, self.device)
        else:
            ids, offsets = flat(texts, self.max_bag_size)
            sizes = np.diff(offsets)
            tokenized = time.perf_counter()

            def embed_rows(rows: np.ndarray) -> torch.Tensor:
                return self.readout(self.pool_padded(*pad_flat_bags(ids, offsets, rows)))

            out = embed_in_length_order(sizes, embed_rows, self.dim, batch_size, show_progress_bar, self.device)
        rows = out.cpu().numpy()
        return EmbeddedTexts(rows, sizes, tokenized - start, time.perf_counter() - tokenized)

    def cache_info(self) -> dict:
        """``hits``/``misses`` (texts asked for, counting repeats), ``size``, ``maxsize``, ``hit_rate``."""
        return self.cache.info()

    def clear_cache(self) -> None:
        """Empty the cache and reset its counters."""
        self.cache.clear()
