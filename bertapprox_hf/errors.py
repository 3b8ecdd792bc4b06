"""User errors and how a command line reports them: one line, exit code 2; a traceback only for bugs.

A user error is bad input or a state of the machine the user must fix: a missing, unreadable or damaged file, a
bad argument, a full disk. Library code raises the usual types (``FileNotFoundError``, ``PermissionError``,
``ValueError`` and its subclasses such as ``UnicodeDecodeError``, :class:`~.model.integrity.IntegrityError`)
or :class:`UserError`; :func:`run_main` turns those into ``bertapprox: error: ...``. Anything else (``TypeError``,
``KeyError``, ``AttributeError``, ...) is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input that the user must fix; its message is the whole report."""


# What counts as a user error. OSError covers missing files, permissions, symbolic-link loops and a full disk;
# ValueError covers bad values, bad or damaged files (JSON, UTF-8, safetensors checked on load).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError, ValueError)


def _optional_user_errors() -> tuple[type[BaseException], ...]:
    """Error types of libraries that report bad files with their own classes (when those are loaded)."""
    found = []
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None and hasattr(safetensors, "SafetensorError"):
        found.append(safetensors.SafetensorError)
    return tuple(found)


def describe_error(error: BaseException) -> str:
    """The one line a user reads: the message on one line; an ``OSError`` as its reason and file (without the
    ``[Errno N]`` prefix); a ``UnicodeDecodeError`` (whose file the reading code should name) with its position."""
    if isinstance(error, UnicodeDecodeError):
        return f"a file is not valid UTF-8 ({error.reason} at byte {error.start})"
    if isinstance(error, OSError) and error.strerror:
        names = [os.fspath(name) for name in (error.filename, error.filename2) if name is not None]
        return ": ".join([error.strerror, " -> ".join(map(str, names))] if names else [error.strerror])
    return " ".join(str(error).split()) or type(error).__name__


def run_main(main: Callable[[], int], prog: str = "bertapprox") -> int:
    """Run ``main`` and return its exit code; a user error prints ``{prog}: error: ...`` (one line) and returns 2,
    an interrupt returns 130. Bugs propagate with their traceback."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS + _optional_user_errors() as error:
        print(f"{prog}: error: {describe_error(error)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _os_error(kind: type[OSError], code: int, message: str) -> OSError:
    """An ``OSError`` of ``kind`` whose text is ``message`` alone (no ``[Errno N]`` prefix) and whose ``errno`` is
    ``code``."""
    error = kind(message)
    error.errno = code
    return error


def unreadable_path_error(path: str | os.PathLike, what: str) -> OSError:
    """The error to raise for a ``path`` that cannot be read as ``what`` (e.g. ``"corpus file"``): not found, a
    permission denied on it or a folder above it, or a symbolic-link loop; each said as such."""
    path = os.fspath(path)
    try:
        os.stat(path)
    except FileNotFoundError:
        return _os_error(FileNotFoundError, errno.ENOENT, f"{what} not found: {path}")
    except PermissionError:
        return _os_error(PermissionError, errno.EACCES, f"permission denied: cannot read {what} {path}")
    except OSError as error:
        return _os_error(OSError, error.errno or 0, f"cannot open {what} {path}: {error.strerror}")
    if not os.access(path, os.R_OK):
        return _os_error(PermissionError, errno.EACCES, f"permission denied: cannot read {what} {path}")
    if os.path.isdir(path):
        return _os_error(IsADirectoryError, errno.EISDIR, f"{what} {path} is a folder, not a file")
    return _os_error(FileNotFoundError, errno.ENOENT, f"{what} is not a regular file: {path}")
