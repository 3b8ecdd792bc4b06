"""Training data: teacher targets split by id, tokenized once up front (or on the fly), batched into padded bags.

The split is a hash of each record's id, so it is the same in every process and every run, and
a text never moves between training and validation when the corpus grows. Batches are formed from
a permutation seeded by (seed, epoch): a run can resume at any batch, and process ``rank`` of
``world`` takes every world-th batch, so all processes take the same number of steps.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
from collections.abc import Iterator

import numpy as np
import torch

from ..model.tokenization_bertapprox import BertApproxTokenizer, pad_bag_arrays
from ..pipeline.crops import is_crop, source_id
from ..pipeline.targets import load_targets, targets_columns
from .config import DataConfig

HASH_BUCKETS = 1_000_000
GROUP_BATCHES = 50  # batches per pool sorted by length (length_grouping)
TOKENIZE_CHUNK = 2048  # texts a tokenizing worker takes at a time


def _held_out(record_id: str, val_fraction: float) -> bool:
    """Whether the text a record comes from is held out (a stable hash of its id, not Python's hash())."""
    digest = hashlib.md5(source_id(record_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") % HASH_BUCKETS < val_fraction * HASH_BUCKETS


def is_validation(record_id: str, val_fraction: float) -> bool:
    """Whether a record is a validation text. Crops are never: they go where their text goes."""
    return not is_crop(record_id) and _held_out(record_id, val_fraction)


def is_training(record_id: str, val_fraction: float) -> bool:
    """Whether a record is a training text: not held out, nor cropped from a held-out text."""
    return not _held_out(record_id, val_fraction)


def records_containing(texts: list[str], candidates: np.ndarray, probes: list[str], min_words: int) -> np.ndarray:
    """The candidates (indices into ``texts``) whose words hold a probe's words, in a row, for a probe of
    ``min_words`` words or more.

    Keeps validation texts out of training when a corpus holds both a document and its sentences,
    or near-duplicate documents. Words are whitespace-separated and compared verbatim.
    """
    wanted: dict[tuple[str, ...], list[list[str]]] = {}  # a probe's first min_words words -> the probes' words
    for probe in probes:
        words = probe.split()
        if len(words) >= min_words:
            wanted.setdefault(tuple(words[:min_words]), []).append(words)
    found = []
    for index in candidates if wanted else ():
        words = texts[index].split()
        for start in range(len(words) - min_words + 1):
            probes_here = wanted.get(tuple(words[start : start + min_words]), ())
            if any(words[start : start + len(p)] == p for p in probes_here):
                found.append(index)
                break
    return np.asarray(found, dtype=np.int64)


class Batcher:
    """Turns texts and target embeddings into model inputs."""

    def __init__(self, tokenizer: BertApproxTokenizer, max_bag_size: int) -> None:
        self.tokenizer = tokenizer
        self.max_bag_size = max_bag_size

    def __call__(self, texts: list[str], targets: np.ndarray) -> dict[str, torch.Tensor]:
        return self.from_bags(self.tokenizer.encode_bags(texts, self.max_bag_size), targets)

    def from_bags(self, bags: list, targets: np.ndarray) -> dict[str, torch.Tensor]:
        """Model inputs from bags tokenized earlier (``__call__`` tokenizes, then comes here)."""
        input_ids, attention_mask = pad_bag_arrays(bags, self.tokenizer.pad_token_id)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "targets": torch.as_tensor(np.asarray(targets, dtype=np.float32)),
        }


_WORKER_BATCHER: Batcher | None = None


def _tokenize_chunk(texts: list[str]) -> list[list[int]]:
    assert _WORKER_BATCHER is not None
    return _WORKER_BATCHER.tokenizer.encode_bags(texts, _WORKER_BATCHER.max_bag_size)


class TokenizedBags:
    """Every text's bag of entry ids, tokenized once and kept flat (ids + offsets), in memory.

    The pass runs in ``workers`` forked processes (each takes chunks of texts); the result is the
    same as tokenizing in one process, so it does not change what a run learns.
    """

    def __init__(self, batcher: Batcher, texts: list[str], workers: int = 0) -> None:
        from tqdm.auto import tqdm

        global _WORKER_BATCHER
        workers = workers or os.cpu_count() or 1
        chunks = [texts[start : start + TOKENIZE_CHUNK] for start in range(0, len(texts), TOKENIZE_CHUNK)]
        progress = tqdm(total=len(texts), desc="Tokenizing", unit=" texts")
        bags: list[list[int]] = []
        _WORKER_BATCHER = batcher
        try:
            if workers > 1 and len(chunks) > 1 and "fork" in multiprocessing.get_all_start_methods():
                with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
                    for chunk_bags in pool.imap(_tokenize_chunk, chunks):
                        bags.extend(chunk_bags)
                        progress.update(len(chunk_bags))
            else:
                for chunk in chunks:
                    bags.extend(_tokenize_chunk(chunk))
                    progress.update(len(chunk))
        finally:
            _WORKER_BATCHER = None
            progress.close()
        lengths = np.array([len(bag) for bag in bags], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.fromiter(itertools.chain.from_iterable(bags), dtype=np.int32, count=int(self.offsets[-1]))

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def __len__(self) -> int:
        return len(self.offsets) - 1


class TargetData:
    """Map-style targets held in memory (texts and float16 embeddings)."""

    def __init__(self, config: DataConfig, batcher: Batcher) -> None:
        self.record_ids, self.texts, self.embeddings = targets_columns(load_targets(config.targets))
        held_out = np.array([_held_out(i, config.val_fraction) for i in self.record_ids], dtype=bool)
        crops = np.array([is_crop(i) for i in self.record_ids], dtype=bool)
        self.train_index = np.flatnonzero(~held_out)  # is_training
        validation = held_out & ~crops  # is_validation
        if config.max_train:
            self.train_index = self.train_index[: config.max_train]
        self.val_index = np.flatnonzero(validation)[: config.max_val]
        self.excluded = 0
        if config.exclude_overlap:
            overlapping = records_containing(
                self.texts, self.train_index, [self.texts[i] for i in self.val_index], config.exclude_overlap
            )
            self.train_index = np.setdiff1d(self.train_index, overlapping)
            self.excluded = len(overlapping)
        if len(self.train_index) == 0 or len(self.val_index) < 3:
            raise ValueError(
                f"{config.targets}: {len(self.train_index)} training and {len(self.val_index)} validation "
                "records; need more records or another data.val_fraction"
            )
        self.lengths = np.array([len(text) for text in self.texts], dtype=np.int64)
        self.length_grouping = config.length_grouping
        self.batcher = batcher
        self.bags: TokenizedBags | None = None
        if config.pretokenize:  # training texts only (validation texts go through model.encode)
            self.bags = TokenizedBags(batcher, [self.texts[i] for i in self.train_index], config.tokenize_workers)
            self.bag_of_record = np.full(len(self.texts), -1, dtype=np.int64)
            self.bag_of_record[self.train_index] = np.arange(len(self.train_index))

    def batches_per_epoch(self, batch_size: int, world: int) -> int:
        """Batches each process takes in one epoch (incomplete batches are dropped)."""
        return len(self.train_index) // batch_size // world

    def epoch_batches(self, epoch: int, batch_size: int, seed: int) -> list[np.ndarray]:
        """All batches of one epoch (record indices), the same in every process.

        With ``length_grouping``, a shuffled epoch is cut into pools of ``GROUP_BATCHES`` batches, each
        pool is sorted by text length and cut into batches, and the batches are shuffled: bags of a
        batch have similar sizes, so little compute goes to padding.
        """
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(self.train_index)
        count = len(order) // batch_size
        order = order[: count * batch_size]
        if self.length_grouping:
            pool = batch_size * GROUP_BATCHES
            order = np.concatenate(
                [
                    chunk[np.argsort(self.lengths[chunk], kind="stable")]
                    for chunk in np.split(order, range(pool, len(order), pool))
                ]
            )
        batches = order.reshape(count, batch_size)
        return list(batches[rng.permutation(count)] if self.length_grouping else batches)

    def batches(self, epoch: int, start: int, batch_size: int, seed: int, rank: int, world: int) -> Iterator[dict]:
        """This process's batches of one epoch, from its ``start``-th batch on."""
        everyone = self.epoch_batches(epoch, batch_size, seed)
        per_process = self.batches_per_epoch(batch_size, world)
        for local in range(start, per_process):
            chunk = everyone[local * world + rank]
            if self.bags is not None:
                yield self.batcher.from_bags([self.bags[i] for i in self.bag_of_record[chunk]], self.embeddings[chunk])
            else:
                yield self.batcher([self.texts[i] for i in chunk], self.embeddings[chunk])

    def validation(self) -> tuple[list[str], np.ndarray]:
        return [self.texts[i] for i in self.val_index], self.embeddings[self.val_index].astype(np.float32)


class StreamingTargetData:
    """Targets streamed with ``datasets`` (for corpora larger than memory), shuffled in a buffer."""

    def __init__(self, config: DataConfig, batcher: Batcher, num_records: int) -> None:
        self.config = config
        self.batcher = batcher
        self.num_train = int(num_records * (1 - config.val_fraction))
        if config.max_train:
            self.num_train = min(self.num_train, config.max_train)
        stream = load_targets(config.targets, streaming=True)
        val = stream.filter(lambda row: is_validation(row["id"], config.val_fraction))
        rows = list(itertools.islice(iter(val), config.max_val))
        if len(rows) < 3:
            raise ValueError(f"{config.targets}: fewer than 3 validation records; raise data.val_fraction")
        self._validation = [r["text"] for r in rows], np.asarray([r["embedding"] for r in rows], dtype=np.float32)

    def batches_per_epoch(self, batch_size: int, world: int) -> int:
        return self.num_train // batch_size // world

    def batches(self, epoch: int, start: int, batch_size: int, seed: int, rank: int, world: int) -> Iterator[dict]:
        config = self.config
        stream = load_targets(config.targets, streaming=True)
        stream = stream.filter(lambda row: is_training(row["id"], config.val_fraction))
        if config.max_train:
            stream = stream.take(config.max_train)
        stream = stream.shuffle(seed=seed + epoch, buffer_size=config.shuffle_buffer)
        per_process = self.batches_per_epoch(batch_size, world)
        rows = iter(stream)
        for index in range(per_process * world):
            chunk = list(itertools.islice(rows, batch_size))
            if len(chunk) < batch_size:
                return
            local, owner = divmod(index, world)
            if owner == rank and local >= start:
                yield self.batcher([r["text"] for r in chunk], np.asarray([r["embedding"] for r in chunk]))

    def validation(self) -> tuple[list[str], np.ndarray]:
        return self._validation
