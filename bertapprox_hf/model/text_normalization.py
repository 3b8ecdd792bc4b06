"""Text normalization and word splitting that mirror a BERT-style teacher tokenizer.

The rules follow BERT's basic tokenizer: drop control and format characters, treat any Unicode
whitespace as a separator, optionally lower-case and strip accents, put every CJK ideograph and
every punctuation character (ASCII punctuation or Unicode category P*) in a word of its own.
Everything is done with a handful of precompiled regular expressions, so it is fast.

This module is copied next to the model as remote code: it may import only the standard
library and packages that transformers itself depends on (``regex``).
"""

from __future__ import annotations

import unicodedata

import regex

_CJK = (
    "\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff"
    "\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
    "\U0002b920-\U0002ceaf\U0002f800-\U0002fa1f"
)  # as the teachers' (Rust) tokenizers have them: U+2B820..U+2B91F are not in the list
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
# Control (Cc), format (Cf) and private-use (Co) characters are removed, except tab, newline and carriage return,
# which are whitespace; so are NUL and the replacement character.
_DROP_RE = regex.compile(r"[\x00\ufffd]|(?![\t\n\r])[\p{Cc}\p{Cf}\p{Co}]")
_MARK_RE = regex.compile(r"\p{Mn}")
_WORD_RE = regex.compile(rf"[{_CJK}]|[{_ASCII_PUNCT}\p{{P}}]|[^\s{_ASCII_PUNCT}\p{{P}}{_CJK}]+")


def normalize_text(text: str, lowercase: bool = True, strip_accents: bool | None = None) -> str:
    """Clean, lower-case and de-accent ``text`` the way the teacher's tokenizer does.

    ``strip_accents=None`` follows ``lowercase``, as in BERT.
    """
    if strip_accents is None:
        strip_accents = lowercase
    if not text.isascii():
        text = _DROP_RE.sub("", text)
    elif "\x00" in text or not text.isprintable():
        text = _DROP_RE.sub("", text)
    if lowercase:
        text = text.lower()
    if strip_accents and not text.isascii():
        text = _MARK_RE.sub("", unicodedata.normalize("NFD", text))
    return text


def split_words(text: str, lowercase: bool = True, strip_accents: bool | None = None) -> list[str]:
    """Normalize ``text`` and split it into words, punctuation marks and CJK characters."""
    return _WORD_RE.findall(normalize_text(text, lowercase, strip_accents))


# Whitespace that no normalization rule looks across (not dropped, no case or combining context): a text cut there
# normalizes piece by piece exactly as it does whole.
_CHUNK_BOUNDARY_RE = regex.compile(r"[ \t\n\r]")
_CHUNK_CHARS = 4096


def iter_words(text: str, lowercase: bool = True, strip_accents: bool | None = None):
    """Like :func:`split_words`, but lazily, a chunk at a time: callers that stop early never normalize or scan
    the whole text."""
    start = 0
    while start < len(text):
        boundary = _CHUNK_BOUNDARY_RE.search(text, start + _CHUNK_CHARS)
        end = boundary.start() if boundary else len(text)
        for match in _WORD_RE.finditer(normalize_text(text[start:end], lowercase, strip_accents)):
            yield match.group()
        start = end
