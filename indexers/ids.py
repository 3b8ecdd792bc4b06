"""Duplicate ids: a document indexed twice appears twice in a run, and queries sharing an id interleave in a TREC
run and collapse in a JSON one. Both are refused with the ids named, or de-duplicated (first one kept) on request."""

from __future__ import annotations

from collections.abc import Iterable


class DuplicateIds:
    """The ids seen so far and those seen more than once (in first-repeat order)."""

    def __init__(self, what: str) -> None:
        self.what = what  # "document", "query"
        self.seen: set[str] = set()
        self.repeated: dict[str, int] = {}  # id -> times it came again

    def is_new(self, item_id: str) -> bool:
        """True the first time ``item_id`` is seen; counts the repeats."""
        if item_id in self.seen:
            self.repeated[item_id] = self.repeated.get(item_id, 0) + 1
            return False
        self.seen.add(item_id)
        return True

    def summary(self, limit: int = 10) -> str:
        names = ", ".join(repr(item_id) for item_id in list(self.repeated)[:limit])
        more = f" and {len(self.repeated) - limit} more" if len(self.repeated) > limit else ""
        return f"{len(self.repeated)} {self.what} ids occur more than once: {names}{more}"

    def check(self, source: str, flag: str) -> None:
        """Raise ``ValueError`` naming the repeated ids of ``source``, if any; ``flag`` is the option that keeps
        the first of each instead."""
        if self.repeated:
            raise ValueError(f"{source}: {self.summary()}; make the ids unique, or pass {flag} to keep the first")


def unique_positions(ids: Iterable[str], what: str, source: str, dedupe: bool, flag: str) -> list[int]:
    """Positions of the first occurrence of each id; with ``dedupe`` off, any repeat raises ``ValueError``."""
    tracker = DuplicateIds(what)
    kept = [position for position, item_id in enumerate(ids) if tracker.is_new(item_id)]
    if not dedupe:
        tracker.check(source, flag)
    return kept
