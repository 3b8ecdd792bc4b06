"""The one ``encode`` loop: texts → bags → length-sorted batches → embeddings in input order.

``BertApproxModel.encode``, the fast ``Encoder`` and the exported-graph runtimes differ only in how they embed one
batch of bags; this module does the rest (argument checks, sorting by bag length so that a batch pads little,
restoring the input order, float32, optional L2 normalisation, numpy or torch out, one row for one string).

Copied next to the model as remote code: imports only numpy and torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

BatchEmbedder = Callable[[list], torch.Tensor]  # a batch of bags (lists of entry ids) -> [batch, dim] float32


def check_texts(texts) -> list[str]:
    """``texts`` as a list of strings, or a ``TypeError`` naming what was wrong."""
    if texts is None or not isinstance(texts, (list, tuple)):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, not str")
    return list(texts)


def check_batch_size(batch_size) -> int:
    """``batch_size`` if it is a positive integer, else a ``TypeError``/``ValueError`` saying what is expected."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a positive integer, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return int(batch_size)


def embed_sorted(
    bags: Sequence[Sequence[int]],
    embed_batch: BatchEmbedder,
    dim: int,
    batch_size: int,
    show_progress_bar: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Embeddings [len(bags), dim] float32 of ``bags``, embedded ``batch_size`` at a time from the shortest to the
    longest, returned in input order (on the device the batches come from; ``device`` when there are none)."""
    lengths = np.fromiter((len(bag) for bag in bags), dtype=np.int64, count=len(bags))
    return embed_in_length_order(
        lengths, lambda rows: embed_batch([bags[i] for i in rows]), dim, batch_size, show_progress_bar, device
    )


def embed_in_length_order(
    lengths: np.ndarray,
    embed_rows: Callable[[np.ndarray], torch.Tensor],
    dim: int,
    batch_size: int,
    show_progress_bar: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """:func:`embed_sorted` of bags given by their ``lengths``: ``embed_rows`` embeds the bags of a batch, given as
    their positions (an int64 array), ``batch_size`` at a time from the shortest to the longest. Bags that fit in
    one batch go as they come (the same padded batch, without sorting and putting back)."""
    if 0 < len(lengths) <= batch_size and not show_progress_bar:  # one batch: its order changes nothing
        return embed_rows(np.arange(len(lengths))).float()
    order = np.argsort(lengths, kind="stable")
    starts = range(0, len(order), batch_size)
    if show_progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="Encoding", unit="batch")
    chunks = [embed_rows(order[start : start + batch_size]).float() for start in starts]
    if not chunks:
        return torch.zeros(0, dim, device=device)
    sorted_rows = torch.cat(chunks)
    result = torch.empty_like(sorted_rows)
    result[torch.from_numpy(order).to(sorted_rows.device)] = sorted_rows
    return result


def finish(
    result: torch.Tensor | np.ndarray, single: bool, normalize_embeddings: bool, convert_to_numpy: bool
) -> np.ndarray | torch.Tensor:
    """Normalise if asked, convert to numpy (float32) or keep the tensor, and give one row for one string."""
    if isinstance(result, np.ndarray):
        result = torch.from_numpy(result)
    if normalize_embeddings:
        result = F.normalize(result.float(), dim=-1)
    if convert_to_numpy:
        result = result.float().cpu().numpy()
    return result[0] if single else result


def encode_texts(
    texts: str | Sequence[str],
    to_bags: Callable[[list[str]], list],
    embed_batch: BatchEmbedder,
    dim: int,
    batch_size: int = 64,
    convert_to_numpy: bool = True,
    normalize_embeddings: bool = False,
    show_progress_bar: bool = False,
    device: torch.device | str | None = None,
) -> np.ndarray | torch.Tensor:
    """Embed texts like sentence-transformers' ``encode``: [n, dim] float32 (one row, 1-D, for a single string).

    ``to_bags`` tokenizes a list of texts into bags of entry ids; ``embed_batch`` embeds a batch of bags.
    """
    single = isinstance(texts, str)
    texts = [texts] if single else check_texts(texts)
    batch_size = check_batch_size(batch_size)
    result = embed_sorted(to_bags(texts), embed_batch, dim, batch_size, show_progress_bar, device)
    return finish(result, single, normalize_embeddings, convert_to_numpy)
