"""The teacher: a BERT-family sentence encoder loaded with transformers.

Pooling (mean / CLS / max) and normalization are read from the sentence-transformers files of the
model when present (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``),
so the embeddings equal what sentence-transformers computes for the same model.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from .precision import resolve_mixed_precision

DEFAULT_TEACHER = "sentence-transformers/msmarco-distilbert-dot-v5"
MAX_LENGTH = 512
# Teacher.mixed_precision: the dtype its forward pass autocasts to (None: float32 as loaded)
AUTOCAST_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Padded tokens a teacher batch holds at most, by device type. On a 2-core AVX2 CPU, batches of 2,048 tokens ran
# 1.29x as fast as 64 texts a batch on the demo's training texts (python -m benchmarks.teacher_batches;
# docs/training.md, "Teacher batches").
CPU_MAX_BATCH_TOKENS = 2048
ACCELERATOR_MAX_BATCH_TOKENS = 65536


@dataclass(frozen=True)
class PoolingSpec:
    """How token states become one sentence embedding."""

    mode: str = "mean"  # "mean", "cls" or "max"
    normalize: bool = False
    max_length: int = MAX_LENGTH

    @property
    def similarity(self) -> str:
        """The score to compare embeddings with: cosine for normalized teachers, else dot product."""
        return "cosine" if self.normalize else "dot"


def _read_json(name_or_path: str, filename: str, revision: str | None = None) -> dict | list | None:
    """A JSON file of a local folder or Hub repository, or None when it does not exist."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        if not os.path.isfile(path):
            return None
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(name_or_path, filename, revision=revision)
        except Exception:  # not on the Hub, offline, or the file does not exist
            return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_pooling_spec(name_or_path: str, revision: str | None = None) -> PoolingSpec:
    """Read pooling, normalization and max length from a sentence-transformers folder or repository.

    Without sentence-transformers files the defaults are mean pooling, no normalization, 512 tokens.
    """
    modules = _read_json(name_or_path, "modules.json", revision) or []
    mode, normalize = "mean", False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Normalize"):
            normalize = True
        elif kind.endswith("Pooling"):
            pooling = _read_json(name_or_path, f"{module.get('path', '1_Pooling')}/config.json", revision) or {}
            if pooling.get("pooling_mode_cls_token"):
                mode = "cls"
            elif pooling.get("pooling_mode_max_tokens"):
                mode = "max"
            elif pooling.get("pooling_mode") in ("cls", "max", "mean"):
                mode = pooling["pooling_mode"]
    st_config = _read_json(name_or_path, "sentence_bert_config.json", revision) or {}
    max_length = min(int(st_config.get("max_seq_length") or MAX_LENGTH), MAX_LENGTH)
    return PoolingSpec(mode=mode, normalize=normalize, max_length=max_length)


def looks_like_path(name: str) -> bool:
    """True for local paths (absolute, relative with ./ ../ ~, or deeper than a Hub "org/name" id)."""
    return name.startswith((os.sep, ".", "~")) or name.count("/") > 1 or os.path.exists(name)


def _text_list(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("expected a list of strings; wrap a single text in a list")
    return list(texts)


class Teacher:
    """A sentence encoder: transformers model + tokenizer + pooling, with batched ``encode``."""

    def __init__(
        self,
        model,
        tokenizer,
        pooling: PoolingSpec,
        name_or_path: str,
        device: str | None = None,
        mixed_precision: str = "no",
        max_batch_tokens: int | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.name_or_path = name_or_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.mixed_precision = resolve_mixed_precision(mixed_precision, self.device.type)
        if max_batch_tokens is None:
            cpu = self.device.type == "cpu"
            max_batch_tokens = CPU_MAX_BATCH_TOKENS if cpu else ACCELERATOR_MAX_BATCH_TOKENS
        if isinstance(max_batch_tokens, bool) or not isinstance(max_batch_tokens, int) or max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be a positive integer, got {max_batch_tokens!r}")
        self.max_batch_tokens = max_batch_tokens
        self.model.to(self.device)
        self._forward_inputs = set(inspect.signature(self.model.forward).parameters)

    def _autocast(self):
        """The teacher's forward context: autocast to ``mixed_precision`` (pooling stays in float32)."""
        dtype = AUTOCAST_DTYPES[self.mixed_precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_TEACHER,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        revision: str | None = None,
        max_length: int | None = None,
        mixed_precision: str = "no",
        max_batch_tokens: int | None = None,
    ) -> Teacher:
        """Load a teacher from a Hub id or a local folder; ``mixed_precision`` ("no", "bf16", "fp16", or "auto":
        bf16 on a GPU that has it, else no) runs its forward pass under autocast (bf16 on a CPU with AVX-512
        BF16 is 1.8-2.2x as fast here, its embeddings within 1e-4 cosine of float32's: docs/training.md);
        ``max_batch_tokens`` bounds a batch's padded tokens (default: ``CPU_MAX_BATCH_TOKENS`` on a CPU)."""
        name_or_path = str(name_or_path)
        if looks_like_path(name_or_path) and not os.path.isdir(name_or_path):
            raise FileNotFoundError(f"teacher folder not found: {name_or_path}")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        model = AutoModel.from_pretrained(name_or_path, revision=revision, dtype=dtype)
        pooling = read_pooling_spec(name_or_path, revision)
        if max_length is not None:
            pooling = PoolingSpec(pooling.mode, pooling.normalize, min(max_length, MAX_LENGTH))
        return cls(model, tokenizer, pooling, name_or_path, device, mixed_precision, max_batch_tokens)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.model.config.hidden_size)

    @property
    def similarity(self) -> str:
        """``"cosine"`` or ``"dot"``: how the teacher's embeddings are compared."""
        return self.pooling.similarity

    def description(self) -> dict:
        """:meth:`describe` with ``kind: teacher`` (the :class:`~bertapprox_hf.inference.TextEncoder` record)."""
        return {"kind": "teacher", **self.describe()}

    def describe(self) -> dict:
        """What identifies this teacher's embeddings (recorded with every artifact made from them)."""
        return {
            "name_or_path": self.name_or_path,
            "dim": self.dim,
            "pooling": self.pooling.mode,
            "normalize": self.pooling.normalize,
            "similarity": self.pooling.similarity,
            "max_length": self.pooling.max_length,
            "mixed_precision": self.mixed_precision,
        }

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling.mode == "cls":
            pooled = hidden[:, 0]
        elif self.pooling.mode == "max":
            pooled = hidden.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(hidden.dtype).min).max(1).values
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        pooled = pooled.float()
        return F.normalize(pooled, dim=-1) if self.pooling.normalize else pooled

    @torch.inference_mode()
    def _embed_batch(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v.to(self.device) for k, v in features.items() if k in self._forward_inputs}
        with self._autocast():
            hidden = self.model(**inputs).last_hidden_state
        return self._pool(hidden.float(), inputs["attention_mask"]).cpu()

    def _batches(
        self, encoded: dict[str, list[list[int]]], batch_size: int, show_progress_bar: bool
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(indices, padded features) of batches of tokenized sequences, longest first: at most ``batch_size``
        sequences and ``max_batch_tokens`` padded tokens a batch (a longer sequence goes alone)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        lengths = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        start = 0
        with tqdm(total=len(order), desc="Teacher", unit="text", disable=not show_progress_bar) as progress:
            while start < len(order):
                size = max(1, min(batch_size, self.max_batch_tokens // max(1, int(lengths[order[start]]))))
                idx = order[start : start + size]
                batch = {key: [values[i] for i in idx] for key, values in encoded.items()}
                yield idx, self.tokenizer.pad(batch, padding=True, return_tensors="pt")
                progress.update(len(idx))
                start += size

    def _text_batches(
        self, texts: list[str], batch_size: int, show_progress_bar: bool
    ) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """(indices, tokenized features) of batches of texts formed by token count, longest first."""
        if not texts:
            return self._batches({"input_ids": []}, batch_size, show_progress_bar)
        encoded = self.tokenizer(texts, truncation=True, max_length=self.pooling.max_length)
        return self._batches(dict(encoded), batch_size, show_progress_bar)

    def encode(self, texts: list[str], batch_size: int = 256, show_progress_bar: bool = False) -> np.ndarray:
        """Embed texts: a [n, dim] float32 array, in input order (batches of at most ``batch_size`` texts and
        ``max_batch_tokens`` padded tokens, formed by length)."""
        texts = _text_list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for idx, features in self._text_batches(texts, batch_size, show_progress_bar):
            out[idx] = self._embed_batch(features).numpy()
        return out

    @torch.inference_mode()
    def token_states(
        self, texts: list[str], batch_size: int = 256, show_progress_bar: bool = False
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The last layer's state of every token the teacher reads, [CLS] and [SEP] included: (index of the
        text, [tokens, dim] float32 array) for each text, in batches formed by length (not in input order)."""
        texts = _text_list(texts)
        for idx, features in self._text_batches(texts, batch_size, show_progress_bar):
            inputs = {k: v.to(self.device) for k, v in features.items() if k in self._forward_inputs}
            with self._autocast():
                hidden = self.model(**inputs).last_hidden_state
            hidden = hidden.float().cpu().numpy()
            lengths = inputs["attention_mask"].sum(1).tolist()
            for row, index in enumerate(idx):
                yield int(index), hidden[row, : lengths[row]]

    def pool_token_states(self, states: np.ndarray) -> np.ndarray:
        """The teacher's embedding of one text from its :meth:`token_states` ([dim] float32): what
        :meth:`encode` gives for the text, up to rounding."""
        hidden = torch.from_numpy(np.ascontiguousarray(states, dtype=np.float32)).unsqueeze(0)
        return self._pool(hidden, torch.ones(hidden.shape[:2])).squeeze(0).numpy()

    def _with_special_tokens(self, ids: list[int]) -> list[int]:
        tok = self.tokenizer
        start = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        end = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        body = list(ids)[: self.pooling.max_length - 2]
        return [x for x in [start] if x is not None] + body + [x for x in [end] if x is not None]

    def encode_token_ids(
        self, token_ids: list[list[int]], batch_size: int = 256, show_progress_bar: bool = False
    ) -> np.ndarray:
        """Embed sequences given as token ids (without special tokens); [CLS]/[SEP] are added."""
        out = np.zeros((len(token_ids), self.dim), dtype=np.float32)
        encoded = {"input_ids": [self._with_special_tokens(ids) for ids in token_ids]}
        for idx, features in self._batches(encoded, batch_size, show_progress_bar):
            out[idx] = self._embed_batch(features).numpy()
        return out
