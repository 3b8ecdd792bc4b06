"""The compiled bag tokenizer: the same bags as :class:`BagEncoder`, many times faster, batches in parallel threads.

The C++ extension ``bertapprox_hf._fastbag`` is built by ``pip install`` where a compiler is present. Without it
(or with ``BERTAPPROX_PURE_PYTHON_TOKENIZER=1``) the pure-Python ``BagEncoder`` does the work, and a warning says
so once. Copied next to the model as remote code: the saved tokenizer uses the compiled path whenever an installed
``bertapprox_hf`` provides it. Imports only the standard library, numpy, ``regex`` and a sibling module.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import unicodedata

import numpy as np

logger = logging.getLogger(__name__)

ALGORITHM_VERSION = 2  # must equal the extension's: both change together with the tokenization rules
PURE_PYTHON_ENV = "BERTAPPROX_PURE_PYTHON_TOKENIZER"
THREADS_ENV = "BERTAPPROX_TOKENIZER_THREADS"
_MAX_CHARS_PER_WORD = 1 << 30  # settings beyond what the extension keeps of a word stay in Python
_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("%s; tokenizing in pure Python (slower, same bags)", message)


def load_extension():
    """The compiled module, or None (with one warning saying why) when it is absent, stale or switched off."""
    if os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0"):
        return None
    module = None
    # Relative from the package; absolute from a model folder's copy of this file (remote code).
    candidates = [("._fastbag", __package__)] if __package__ else []
    for name, package in candidates + [("bertapprox_hf._fastbag", None)]:
        try:
            module = importlib.import_module(name, package)
            break
        except ImportError:
            continue
        except Exception as error:  # a broken installation must not break the tokenizer
            _warn_once(f"the compiled tokenizer could not be imported ({type(error).__name__}: {error})")
            return None
    if module is None:
        _warn_once("the compiled tokenizer bertapprox_hf._fastbag is not built")
        return None
    if getattr(module, "ALGORITHM_VERSION", None) != ALGORITHM_VERSION:
        _warn_once(f"the compiled tokenizer is of another version ({getattr(module, 'ALGORITHM_VERSION', None)})")
        return None
    if module.UNIDATA_VERSION != unicodedata.unidata_version:
        _warn_once(
            f"the compiled tokenizer's Unicode tables are version {module.UNIDATA_VERSION}, this Python's "
            f"{unicodedata.unidata_version} (regenerate with bertapprox_hf/csrc/gen_unicode_tables.py)"
        )
        return None
    if not _tables_agree(module):
        _warn_once(
            f"the compiled tokenizer's tables (regex {module.REGEX_VERSION}) disagree with this regex "
            "(regenerate with bertapprox_hf/csrc/gen_unicode_tables.py)"
        )
        return None
    return module


@functools.lru_cache(maxsize=1)
def _tables_agree(module) -> bool:
    """Whether the tables made with another ``regex`` release still split like this one (checked on a sample of
    code points once per process; the same release needs no check)."""
    import regex

    if module.REGEX_VERSION == regex.__version__:
        return True
    from .text_normalization import normalize_text, split_words

    probe = module.Encoder(["[PAD]", "[UNK]"], frozenset(["[PAD]"]), 1)
    text = " ".join(chr(cp) for cp in range(0, 0x110000, 7))
    return probe.normalize(text) == normalize_text(text) and probe.words(text) == split_words(text)


def default_threads() -> int:
    """Threads a batch is tokenized with: ``BERTAPPROX_TOKENIZER_THREADS``, else as many as torch uses (when it
    is loaded), else the machine's cores."""
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError as error:
            raise ValueError(f"{THREADS_ENV} must be a whole number, got {configured!r}") from error
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.get_num_threads())
    return os.cpu_count() or 1


class CompiledBagEncoder:
    """:meth:`BagEncoder.encode` of one ``BagEncoder``'s vocabulary and settings, in compiled code.

    Read-only once built: any number of Python threads may call it at once (it releases the GIL), and
    :meth:`encode_batch` spreads a large batch over threads of its own.
    """

    def __init__(self, bag_encoder, module) -> None:
        self.bag_encoder = bag_encoder
        special = bag_encoder.special_tokens
        entries = bag_encoder.entries
        first = next((i for i, entry in enumerate(entries) if entry not in special), len(entries))
        count = bag_encoder.wordpiece_entries or len(entries)
        if not bag_encoder.wordpiece_entries:
            first = 0
        strip_accents = bag_encoder.strip_accents
        self._encoder = module.Encoder(
            list(entries),
            frozenset(special),
            bag_encoder.unk_id,
            bool(bag_encoder.lowercase),
            bool(bag_encoder.lowercase if strip_accents is None else strip_accents),
            bag_encoder.skipgram_max_gap,
            bag_encoder.max_chars_per_word,
            bag_encoder.teacher_window,
            first,
            count,
            list(bag_encoder.teacher_special_tokens),
        )

    def encode(self, text: str, max_entries: int) -> list[int]:
        """Entry ids of ``text``, at most ``max_entries`` (>= 0) of them."""
        return self._encoder.encode(text, max_entries)

    def encode_batch(self, texts: list[str], max_entries: int, threads: int | None = None) -> list[list[int]]:
        """Entry ids of each text, on ``threads`` threads (default: :func:`default_threads`)."""
        return self._encoder.encode_batch(texts, max_entries, threads or default_threads())

    def encode_flat(self, texts: list[str], max_entries: int, threads: int | None = None):
        """The bags of ``texts`` as flat numpy arrays, built without a Python object per entry: ``(ids, offsets)``,
        every entry id (int32) text after text, and where each text's bag starts in ``ids`` (int64, one more than
        there are texts: bag ``k`` is ``ids[offsets[k]:offsets[k + 1]]``), writable views of buffers made for them."""
        ids, offsets = self._encoder.encode_flat(texts, max_entries, threads or default_threads())
        return np.frombuffer(ids, dtype=np.int32), np.frombuffer(offsets, dtype=np.int64)

    def words(self, text: str, max_entries: int = -1) -> list[str]:
        """The normalized words of ``text``; with ``max_entries`` >= 0, those its bag may use."""
        return self._encoder.words(text, max_entries)

    def normalize(self, text: str) -> str:
        """``text`` normalized as :func:`normalize_text` does."""
        return self._encoder.normalize(text)

    def __reduce__(self):
        # Pickled (worker processes, deep copies) as its BagEncoder: the other side builds its own tables.
        return (compiled_bag_encoder, (self.bag_encoder,))


def compiled_bag_encoder(bag_encoder) -> CompiledBagEncoder | None:
    """The compiled twin of ``bag_encoder``, or None where the extension is unavailable or its settings are not
    supported (the caller then keeps using ``bag_encoder``)."""
    module = load_extension()
    if module is None:
        return None
    if not 0 <= bag_encoder.max_chars_per_word <= _MAX_CHARS_PER_WORD or bag_encoder.skipgram_max_gap < 0:
        return None
    return CompiledBagEncoder(bag_encoder, module)
