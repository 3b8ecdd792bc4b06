"""What keeps a run's output folder consistent across failures: the metrics log cut back to the checkpoint a run
resumes from, and partial folders removed when a save fails (a full disk, a permission error)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator

# Messages of write failures that are the machine's state, not a bug: said in one line, with what to do.
_DISK_FULL_SIGNS = ("No space left", "StorageFull", "Disk quota exceeded", "QuotaExceeded")


def truncate_metrics_log(path: str, step: int) -> int:
    """Keep the records of ``path`` (a ``metrics.jsonl``) up to ``step``, the resumed checkpoint's: the steps after it
    are run again and logged again. A torn last line (a run killed while writing it) goes too. Returns the records
    removed."""
    if not os.path.isfile(path):
        return 0
    kept, removed = [], 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                keep = isinstance(record, dict) and int(record.get("step", 0)) <= step
            except (json.JSONDecodeError, TypeError, ValueError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                removed += 1
    if removed:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(kept)
        os.replace(tmp, path)
    return removed


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(sign in str(error) for sign in _DISK_FULL_SIGNS)


@contextlib.contextmanager
def staged_folder(tmp: str, what: str) -> Iterator[str]:
    """Write ``what`` into the folder ``tmp`` (renamed by the caller once complete); if writing fails, ``tmp`` is
    removed, and a full disk or a permission error becomes an ``OSError`` that says what failed and what to do."""
    try:
        yield tmp
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_disk_full(error):
            raise OSError(
                errno.ENOSPC,
                f"no space left on the device while writing {what} to {tmp} (the partial folder was removed); "
                "free some space and run again with --resume",
            ) from error
        if isinstance(error, PermissionError):
            raise PermissionError(
                errno.EACCES, f"permission denied while writing {what} to {tmp}: {error.filename or error}"
            ) from error
        raise
