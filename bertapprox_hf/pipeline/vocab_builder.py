"""Mine a vocabulary from a corpus and embed every entry with the teacher.

Steps:

1. **Count** (one streaming pass): words, word n-grams (n = 2..``max_ngram``) and skip-grams
   (two words with 1..``skipgram_max_gap`` words between them), after the teacher's normalization.
   Multi-word candidates must consist of words (no punctuation) and must start and end with a
   word of two or more characters that is not a stopword; skip-grams join two different such words.
2. **Select**, within each kind's budget:
   * words (not already one of the teacher's WordPiece tokens): by count, at least ``min_count``;
   * n-grams and skip-grams: count at least ``min_count`` and normalized PMI at least ``min_npmi``,
     ranked by ``count × npmi``. For an n-gram g of words w₁..wₙ, with N words in the corpus,
     ``pmi = log(c(g)/N) − Σ log(c(wᵢ)/N)`` and ``npmi = pmi / ((n−1)·(−log(c(g)/N)))``, which is
     at most 1 (1: the words only ever occur together). Skip-grams use the same formula with
     the chance of the pair multiplied by the number of gaps allowed.
3. **Add** the teacher's own WordPiece tokens (minus its special and ``[unused]`` tokens), so any
   word can fall back to pieces, and ``[PAD]`` (zero vector) and the teacher's unknown token.
4. **Embed** each entry with the teacher: words, n-grams and skip-grams ("a b") as text, WordPiece
   tokens by their token id (so ``##ing`` is the piece, not three characters). Embedding runs in
   chunks written to a cache folder, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from ..model.text_normalization import split_words
from ..model.tokenization_bertapprox import PIECE_PREFIX, SKIP_MARKER
from .corpus import iter_texts
from .teacher import Teacher
from .vocabulary import PAD_TOKEN, Vocabulary

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most
    my myself no nor not now of off on once only or other our ours ourselves out over own same she should
    so some such than that the their theirs them themselves then there these they this those through to
    too under until up very was we were what when where which while who whom why will with would you
    your yours yourself yourselves""".split()
)
_UNUSED_RE = re.compile(r"^\[unused\d+\]$")


@dataclass
class VocabularyConfig:
    """Settings of the vocabulary builder (each documented in the module docstring)."""

    max_ngram: int = 3
    skipgram_max_gap: int = 2
    min_count: int = 5
    min_npmi: float = 0.25
    max_words: int = 20000
    max_ngrams: int = 15000
    max_skipgrams: int = 5000
    drop_stopword_edges: bool = True
    max_candidates: int = 5_000_000
    dtype: str = "float16"
    batch_size: int = 256
    chunk_size: int = 8192

    def __post_init__(self) -> None:
        for name in ("max_ngram", "min_count", "batch_size", "chunk_size", "max_candidates"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"VocabularyConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("skipgram_max_gap", "max_words", "max_ngrams", "max_skipgrams"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"VocabularyConfig.{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"VocabularyConfig.dtype must be 'float16' or 'float32', got {self.dtype!r}")


class NgramCounter:
    """Counts words, n-grams and skip-grams of normalized texts (strings joined by spaces)."""

    def __init__(self, config: VocabularyConfig) -> None:
        self.config = config
        self.words: Counter[str] = Counter()
        self.ngrams: Counter[str] = Counter()
        self.skipgrams: Counter[str] = Counter()
        self.num_words = 0
        self.num_texts = 0
        self.pruned = 0

    def _content(self, word: str) -> bool:
        """A word that may start or end a multi-word entry: alphanumeric, 2+ characters, no stopword."""
        return len(word) > 1 and word.isalnum() and not (self.config.drop_stopword_edges and word in STOPWORDS)

    def add(self, words: list[str]) -> None:
        """Count one text's words."""
        self.num_texts += 1
        self.num_words += len(words)
        self.words.update(words)
        word_like = [w.isalnum() for w in words]
        content = [self._content(w) for w in words]
        n_words = len(words)
        grams = []
        for n in range(2, self.config.max_ngram + 1):
            for i in range(n_words - n + 1):
                if content[i] and content[i + n - 1] and all(word_like[i + 1 : i + n - 1]):
                    grams.append(" ".join(words[i : i + n]))
        self.ngrams.update(grams)
        skips = []
        for gap in range(1, self.config.skipgram_max_gap + 1):
            for i in range(n_words - gap - 1):
                if content[i] and content[i + gap + 1] and words[i] != words[i + gap + 1]:
                    skips.append(words[i] + SKIP_MARKER + words[i + gap + 1])
        self.skipgrams.update(skips)
        if len(self.ngrams) + len(self.skipgrams) > self.config.max_candidates:
            self.prune()

    def prune(self) -> None:
        """Drop candidates seen once, to bound memory on large corpora (counted in ``pruned``)."""
        for counter in (self.ngrams, self.skipgrams):
            rare = [key for key, count in counter.items() if count <= 1]
            for key in rare:
                del counter[key]
            self.pruned += len(rare)


def npmi(count: int, parts: list[str], words: Counter, total: int, chances: int = 1) -> float:
    """Normalized PMI of a multi-word candidate (see the module docstring)."""
    log_p = math.log(count / total)
    expected = math.log(chances) + sum(math.log(max(words[w], 1) / total) for w in parts)
    return (log_p - expected) / ((len(parts) - 1) * -log_p) if log_p < 0 else 1.0


def select_multiword(
    counter: Counter, words: Counter, total: int, config: VocabularyConfig, budget: int, skip: bool
) -> list[tuple[str, int, float]]:
    """The best multi-word candidates: (entry, count, npmi), ranked by count × npmi."""
    scored = []
    for entry, count in counter.items():
        if count < config.min_count:
            continue
        parts = entry.split(SKIP_MARKER) if skip else entry.split(" ")
        score = npmi(count, parts, words, total, config.skipgram_max_gap if skip else 1)
        if score >= config.min_npmi:
            scored.append((entry, count, score))
    # Ranked on 10 significant digits, then by text: math.log may differ in the last bit between C libraries,
    # and the same corpus must give the same vocabulary, in the same order, on every machine.
    scored.sort(key=lambda item: (-float(f"{item[1] * item[2]:.10g}"), item[0]))
    return scored[:budget]


def teacher_pieces(teacher: Teacher) -> tuple[list[str], dict[str, int], str]:
    """The teacher's WordPiece tokens worth keeping, their ids, and its unknown token."""
    tokenizer = teacher.tokenizer
    vocab = tokenizer.get_vocab()
    special = set(tokenizer.all_special_tokens)
    unk = tokenizer.unk_token or "[UNK]"
    kept = [
        token
        for token, _ in sorted(vocab.items(), key=lambda item: item[1])
        if token not in special and not _UNUSED_RE.match(token) and token.strip() == token and " " not in token
    ]
    return kept, vocab, unk


def _fingerprint(teacher: Teacher, items: list[tuple[str, tuple[int, ...] | None]]) -> str:
    digest = hashlib.sha256(json.dumps([teacher.describe(), items]).encode("utf-8"))
    return digest.hexdigest()[:32]


def embed_entries(
    teacher: Teacher,
    items: list[tuple[str, tuple[int, ...] | None]],
    config: VocabularyConfig,
    cache_dir: str | None = None,
    show_progress_bar: bool = True,
) -> np.ndarray:
    """Teacher embeddings of entries given as (text, token ids or None), resumable through ``cache_dir``.

    Each chunk of ``chunk_size`` entries is written atomically to ``cache_dir`` with a fingerprint
    of the teacher and the chunk's entries; a rerun reuses the chunks whose fingerprint matches.
    """
    dtype = np.float16 if config.dtype == "float16" else np.float32
    out = np.zeros((len(items), teacher.dim), dtype=dtype)
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    starts = range(0, len(items), config.chunk_size)
    for chunk_index, start in enumerate(
        tqdm(starts, desc="Embedding entries", unit="chunk", disable=not show_progress_bar)
    ):
        chunk = items[start : start + config.chunk_size]
        fingerprint = _fingerprint(teacher, chunk)
        path = os.path.join(cache_dir, f"chunk_{chunk_index:05d}.safetensors") if cache_dir else None
        if path and os.path.isfile(path):
            try:
                cached = load_file(path)
                if bytes(cached["fingerprint"]).decode() == fingerprint:
                    out[start : start + len(chunk)] = cached["embeddings"]
                    continue
            except Exception:  # a damaged cache chunk is recomputed
                pass
        by_ids = [i for i, (_, ids) in enumerate(chunk) if ids is not None]
        by_text = [i for i, (_, ids) in enumerate(chunk) if ids is None]
        block = np.zeros((len(chunk), teacher.dim), dtype=np.float32)
        if by_ids:
            block[by_ids] = teacher.encode_token_ids([chunk[i][1] for i in by_ids], batch_size=config.batch_size)
        if by_text:
            block[by_text] = teacher.encode([chunk[i][0] for i in by_text], batch_size=config.batch_size)
        out[start : start + len(chunk)] = block
        if path:
            tmp = path + ".tmp"
            save_file(
                {"embeddings": block.astype(dtype), "fingerprint": np.frombuffer(fingerprint.encode(), dtype=np.uint8)},
                tmp,
            )
            os.replace(tmp, path)
    return out


def build_vocabulary(
    corpus,
    teacher: Teacher,
    config: VocabularyConfig | None = None,
    cache_dir: str | None = None,
    show_progress_bar: bool = True,
    corpus_description: dict | None = None,
    **corpus_options,
) -> Vocabulary:
    """Mine, select and embed a vocabulary (see the module docstring for each step).

    Args:
        corpus: anything :func:`bertapprox_hf.pipeline.corpus.iter_texts` reads (jsonl paths, a dataset, strings).
        teacher: the teacher whose normalization and embeddings are used.
        cache_dir: where embedding chunks are kept, so an interrupted build resumes.
        corpus_options: passed to :func:`iter_texts` (``max_per_source``, ``max_records``, ...).
    """
    config = config or VocabularyConfig()
    started = time.time()
    lowercase = bool(getattr(teacher.tokenizer, "do_lower_case", True))
    strip_accents = getattr(teacher.tokenizer, "strip_accents", None)
    counter = NgramCounter(config)
    for text in tqdm(
        iter_texts(corpus, **corpus_options), desc="Counting n-grams", unit=" texts", disable=not show_progress_bar
    ):
        counter.add(split_words(text, lowercase, strip_accents))
    if counter.num_words == 0:
        raise ValueError("the corpus has no words: cannot build a vocabulary")

    pieces, piece_ids, unk = teacher_pieces(teacher)
    piece_set = set(pieces)
    new_words = [
        (w, c)
        for w, c in counter.words.most_common()
        if c >= config.min_count and w not in piece_set and not w.startswith(PIECE_PREFIX)
    ][: config.max_words]
    ngrams = select_multiword(counter.ngrams, counter.words, counter.num_words, config, config.max_ngrams, skip=False)
    skipgrams = select_multiword(
        counter.skipgrams, counter.words, counter.num_words, config, config.max_skipgrams, skip=True
    )

    entries = (
        [PAD_TOKEN, unk] + pieces + [w for w, _ in new_words] + [g for g, _, _ in ngrams] + [g for g, _, _ in skipgrams]
    )
    counts = np.array(
        [0, 0]
        + [counter.words.get(p, 0) for p in pieces]
        + [c for _, c in new_words]
        + [c for _, c, _ in ngrams]
        + [c for _, c, _ in skipgrams],
        dtype=np.int64,
    )
    items: list[tuple[str, tuple[int, ...] | None]] = [(unk, (piece_ids[unk],))]
    items += [(p, (piece_ids[p],)) for p in pieces]
    items += [(entry.replace(SKIP_MARKER, " "), None) for entry in entries[2 + len(pieces) :]]
    vectors = embed_entries(teacher, items, config, cache_dir, show_progress_bar)
    embeddings = np.concatenate([np.zeros((1, teacher.dim), dtype=vectors.dtype), vectors])

    metadata = {
        "teacher": teacher.describe(),
        "tokenizer": {
            "unk_token": unk,
            "do_lower_case": lowercase,
            "strip_accents": strip_accents,
            "skipgram_max_gap": config.skipgram_max_gap,
            "special_tokens": list(teacher.tokenizer.all_special_tokens),  # read whole by the teacher
        },
        "corpus": {**(corpus_description or {}), "texts": counter.num_texts, "words": counter.num_words},
        "settings": asdict(config),
        "stats": {
            "entries": len(entries),
            "pieces": len(pieces),
            "words": len(new_words),
            "ngrams": len(ngrams),
            "skipgrams": len(skipgrams),
            "distinct_words_seen": len(counter.words),
            "ngram_candidates": len(counter.ngrams),
            "skipgram_candidates": len(counter.skipgrams),
            "pruned_candidates": counter.pruned,
            "seconds": round(time.time() - started, 1),
        },
    }
    vocabulary = Vocabulary(entries, embeddings, counts, metadata)
    if cache_dir and os.path.isdir(cache_dir):
        shutil.rmtree(cache_dir, ignore_errors=True)
    return vocabulary
