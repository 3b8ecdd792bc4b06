"""Contextual entry tables: what the teacher makes of each entry inside real texts.

A built vocabulary holds the teacher's embedding of each entry read on its own ("isolated"). The
teacher's embedding of a text, though, pools the last layer's states of its tokens, and each state
depends on the whole text. A contextual table holds instead, for each entry, the mean over training
texts of the states of the teacher's tokens that the entry covers there (one occurrence = the mean
over its tokens). It is a frozen table like the other, computed offline by the teacher, so the model,
the ``Encoder`` and the exported graphs use it unchanged.

An entry seen in few texts is pulled toward a linear map of its isolated embedding (least squares over
the entries seen): ``(Σ states + prior · map(isolated)) / (occurrences + prior)``; an entry never seen
gets the map alone. Rows are then scaled to a mean norm of 1, the scale of the isolated table.

With ``keep_isolated``, the table holds both embeddings of each entry side by side (contextual first),
twice the teacher's width: the student's input projection (identity on the leading dimensions at start,
so an untrained student is the plain mean of the contextual rows) learns what to take from each.

Build it from texts the student trains on, never from its validation texts (their token states would
leak into the table): ``bertapprox vocab contextualize`` takes a targets folder's training split and records
its ``val_fraction``; training refuses a table that read texts its run holds out (:func:`check_table_split`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.tokenization_bertapprox import MAX_BAG_SIZE, BagEncoder
from .targets import check_teacher_compatible
from .teacher import Teacher
from .vocabulary import Vocabulary


@dataclass
class TokenStateSums:
    """Per entry: the sum of its occurrences' mean token states, and how many occurrences."""

    sums: np.ndarray  # [entries, dim] float64
    occurrences: np.ndarray  # [entries] int64
    texts: int = 0  # texts read
    skipped: int = 0  # texts whose teacher tokens did not line up with the tokenizer's count


def _aligned(encoder: BagEncoder, text: str, tokens: int, window: int) -> bool:
    """Whether the teacher read ``tokens`` tokens of ``text`` where the tokenizer counts them."""
    expected = encoder.teacher_token_count(text)
    return tokens == expected or (tokens == window and expected > window)


def accumulate_token_states(
    teacher: Teacher,
    encoder: BagEncoder,
    texts: list[str],
    batch_size: int = 256,
    show_progress_bar: bool = False,
    embeddings_out: np.ndarray | None = None,
) -> TokenStateSums:
    """Run the teacher over ``texts`` and add up, for every entry of each text's bag, its tokens' mean state.

    ``embeddings_out`` ([len(texts), dim]), when given, receives each text's teacher embedding from the same pass.
    """
    entries = len(encoder.entries)
    result = TokenStateSums(np.zeros((entries, teacher.dim)), np.zeros(entries, dtype=np.int64))
    if embeddings_out is not None and embeddings_out.shape != (len(texts), teacher.dim):
        raise ValueError(f"embeddings_out is {embeddings_out.shape}, expected {(len(texts), teacher.dim)}")
    window = teacher.pooling.max_length
    for index, states in teacher.token_states(texts, batch_size, show_progress_bar):
        result.texts += 1
        if embeddings_out is not None:
            embeddings_out[index] = teacher.pool_token_states(states)
        if not _aligned(encoder, texts[index], len(states), window):
            result.skipped += 1
            continue
        for entry, positions in encoder.encode_with_positions(texts[index], MAX_BAG_SIZE):
            result.sums[entry] += states[list(positions)].mean(0)
            result.occurrences[entry] += 1
    return result


def smoothed_table(isolated: np.ndarray, sums: TokenStateSums, prior: float = 2.0) -> np.ndarray:
    """The contextual table (float32, row 0 zero): means shrunk toward a linear map of ``isolated``, unit mean
    norm (see the module docstring)."""
    if prior < 0:
        raise ValueError(f"prior must not be negative, got {prior}")
    if isolated.shape != sums.sums.shape:
        raise ValueError(f"isolated table {isolated.shape} and token-state sums {sums.sums.shape} differ")
    seen = sums.occurrences > 0
    seen[0] = False  # [PAD] stays zero
    if seen.sum() <= isolated.shape[1]:
        raise ValueError(
            f"only {int(seen.sum())} entries occur in the texts read; a contextual table needs more than "
            f"{isolated.shape[1]} (read more texts)"
        )
    design = np.concatenate([isolated.astype(np.float64), np.ones((len(isolated), 1))], axis=1)
    means = sums.sums[seen] / sums.occurrences[seen, None]
    mapping, *_ = np.linalg.lstsq(design[seen], means, rcond=None)
    table = design @ mapping  # an entry never seen gets the map alone
    occurring = sums.occurrences > 0
    table[occurring] = (sums.sums[occurring] + prior * table[occurring]) / (sums.occurrences[occurring, None] + prior)
    table[0] = 0.0
    table /= np.linalg.norm(table[1:], axis=1).mean()
    return table.astype(np.float32)


def check_table_split(vocabulary: Vocabulary, val_fraction: float, where: str) -> None:
    """Refuse a contextual table that read texts a run with ``val_fraction`` holds out for validation.

    The split hashes each text's id against a threshold, so a table read with a fraction at least as large
    read none of them; a smaller fraction, or none recorded, may have read some.
    """
    table = vocabulary.metadata.get("table") or {}
    if not str(table.get("kind", "")).startswith("contextual"):
        return
    read_with = table.get("val_fraction")
    if read_with is not None and read_with >= val_fraction:
        return
    read = "records no val_fraction" if read_with is None else f"read the training split of val_fraction {read_with}"
    raise ValueError(
        f"the contextual table of {where} {read}, but this run holds out data.val_fraction {val_fraction}: some "
        f"of its validation texts may have been read; rebuild it with bertapprox vocab contextualize "
        f"--val-fraction {val_fraction}"
    )


def contextualize(
    vocabulary: Vocabulary,
    teacher: Teacher,
    texts: list[str],
    prior: float = 2.0,
    batch_size: int = 256,
    show_progress_bar: bool = False,
    keep_isolated: bool = False,
    embeddings_out: np.ndarray | None = None,
) -> Vocabulary:
    """A copy of ``vocabulary`` whose table is contextual (``keep_isolated``: contextual and isolated side by
    side), from the teacher's reading of ``texts`` (``embeddings_out``: see :func:`accumulate_token_states`)."""
    check_teacher_compatible(vocabulary.metadata.get("teacher", {}), teacher.describe(), "the vocabulary")
    encoder = vocabulary.tokenizer().bag_encoder
    sums = accumulate_token_states(teacher, encoder, texts, batch_size, show_progress_bar, embeddings_out)
    table = smoothed_table(vocabulary.embeddings, sums, prior)
    if keep_isolated:
        table = np.concatenate([table, vocabulary.embeddings.astype(np.float32)], axis=1)
    record = {
        "kind": "contextual+isolated" if keep_isolated else "contextual",
        "texts": sums.texts,
        "skipped_texts": sums.skipped,
        "entries_seen": int((sums.occurrences[1:] > 0).sum()),
        "prior": prior,
    }
    metadata = {**vocabulary.metadata, "table": record}
    return Vocabulary(list(vocabulary.entries), table.astype(vocabulary.embeddings.dtype), vocabulary.counts, metadata)
