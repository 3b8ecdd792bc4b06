"""Crops: more training texts from the long ones, each a random run of a text's words.

The corpus holds far fewer passages than short texts, and passages are where the student trails the
teacher most. A crop of a passage is a new passage-like text; the teacher embeds it like any other, so
its target is exact, and crops of one text teach how the embedding moves as words come and go.

A crop's id is its text's id + ``CROP_MARK`` + its number. It follows its text into the training or the
validation split (so no validation text leaks into training through its crops) and is never itself a
validation text (validation stays the corpus's own texts).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

CROP_MARK = "|crop"
Record = dict[str, str]


def source_id(record_id: str) -> str:
    """The id of the text a record was cropped from (the record's own id when it is not a crop)."""
    return record_id.split(CROP_MARK, 1)[0]


def is_crop(record_id: str) -> bool:
    return CROP_MARK in record_id


def crop_records(
    records: Iterable[Record], crops_per_text: int, min_words: int, seed: int = 0, first_crop: int = 0
) -> Iterator[Record]:
    """``crops_per_text`` crops of every record of at least ``min_words`` words (shorter ones yield none).

    A crop keeps between half and all but one of the words (whitespace-separated), in a run that starts
    anywhere. Crops depend only on ``seed``, the record's id and text and the crop's number, so a rebuild
    makes the same ones. ``first_crop`` numbers the first crop made: ``first_crop=1`` gives the crops that
    follow those of an earlier set made with ``crops_per_text=1`` (crop ``n`` is the same in either set).
    """
    if crops_per_text < 1:
        raise ValueError(f"crops_per_text must be at least 1, got {crops_per_text}")
    if first_crop < 0:
        raise ValueError(f"first_crop must not be negative, got {first_crop}")
    if min_words < 2:
        raise ValueError(f"min_words must be at least 2 (a crop drops a word), got {min_words}")
    for record in records:
        words = record["text"].split()
        if len(words) < min_words:
            continue
        rng = random.Random(f"{seed}:{record['id']}:{len(words)}")
        for number in range(first_crop + crops_per_text):
            length = rng.randint((len(words) + 1) // 2, len(words) - 1)
            start = rng.randint(0, len(words) - length)
            if number >= first_crop:
                yield {"id": f"{record['id']}{CROP_MARK}{number}", "text": " ".join(words[start : start + length])}
