"""The teacher's special tokens written inside a text, for counting the tokens the teacher reads.

A BERT-style tokenizer matches its special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]``, ``[UNK]``) in the raw
text, case-sensitively and before any normalization: a literal ``[CLS]`` is one token for the teacher, while its
words (``[``, ``cls``, ``]``) would count as four. :func:`words_with_special_marks` yields each word of a text with a
mark that says whether it starts (1) or continues (2) such an occurrence, so the caller counts one token for the
occurrence and none for the rest of its words.

Copied next to the model as remote code: imports only the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

# What BERT-family teachers (BERT, MiniLM, DistilBERT) use; a vocabulary records its own teacher's list.
BERT_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]")
PLAIN, SPECIAL_START, SPECIAL_REST = 0, 1, 2


def special_token_pattern(tokens: Iterable[str]) -> re.Pattern | None:
    """A regular expression matching any of ``tokens`` (longest first), ``None`` when there are none."""
    tokens = sorted({token for token in tokens if token}, key=len, reverse=True)
    return re.compile("|".join(re.escape(token) for token in tokens)) if tokens else None


def words_with_special_marks(
    text: str, pattern: re.Pattern | None, words_of: Callable[[str], Iterable[str]]
) -> Iterator[tuple[str, int]]:
    """``(word, mark)`` of each word of ``text`` in order, ``words_of`` splitting a piece of text into words; the mark
    is :data:`SPECIAL_START` for the first word of a special-token occurrence, :data:`SPECIAL_REST` for its other
    words, :data:`PLAIN` otherwise."""
    if pattern is None or pattern.search(text) is None:
        for word in words_of(text):
            yield word, PLAIN
        return
    position = 0
    for match in pattern.finditer(text):
        for word in words_of(text[position : match.start()]):
            yield word, PLAIN
        for rank, word in enumerate(words_of(match.group())):
            yield word, SPECIAL_START if rank == 0 else SPECIAL_REST
        position = match.end()
    for word in words_of(text[position:]):
        yield word, PLAIN
