"""The drift watch's teacher in a process of its own, so that its passes never hold the server's GIL nor its core.

:class:`TeacherProcess` has the teacher's ``encode(texts, batch_size)``: the texts go through a pipe to a child
process that loaded the teacher and the embeddings come back. The caller (the drift watch's thread) waits on the pipe
without the GIL. The child runs at the lowest CPU priority the system offers (``SCHED_IDLE`` on Linux: only CPU time
nothing else wants, else nice 19), with one torch thread: when the server is busy the teacher falls behind, and the
drift watch drops samples instead of taking CPU from the answers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)
START_TIMEOUT_S = 600.0  # loading the teacher in the child
LOWEST_NICE = 19


def lower_priority() -> str:
    """Give this process the lowest CPU priority allowed; returns which (``idle``, ``nice 19`` or ``unchanged``)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (AttributeError, OSError):
        pass
    try:
        os.nice(LOWEST_NICE - os.nice(0))
        return "nice 19"
    except (AttributeError, OSError):
        return "unchanged"


def _serve(load: Callable[[], Any], connection: Any, threads: int) -> None:
    """The child: load the teacher, then answer ``texts`` with ``("ok", rows)`` until ``None`` or the pipe closes."""
    priority = lower_priority()
    import torch

    torch.set_num_threads(threads)
    try:
        teacher = load()
    except Exception as error:  # the parent reports it
        connection.send(("error", f"the teacher did not load: {type(error).__name__}: {error}"))
        return
    connection.send(("ready", {"dim": int(teacher.dim), "priority": priority}))
    while True:
        try:
            texts = connection.recv()
        except (EOFError, OSError):
            return
        if texts is None:
            return
        try:
            rows = np.asarray(teacher.encode(texts, batch_size=max(1, len(texts))), dtype=np.float32)
            connection.send(("ok", rows))
        except Exception as error:  # one failing batch does not stop the child
            connection.send(("error", f"{type(error).__name__}: {error}"))


class TeacherProcess:
    """A teacher loaded by ``load`` (a picklable callable) in a child process; ``encode`` runs there.

    ``encode`` may be called from one thread at a time (calls are serialized); it raises ``RuntimeError`` when the
    child failed or is gone. :meth:`close` stops the child."""

    def __init__(self, load: Callable[[], Any], threads: int = 1) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a process with threads and torch state
        self._connection, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(load, child, threads), name="bertapprox-teacher", daemon=True
        )
        self.process.start()
        child.close()
        self._lock = threading.Lock()
        self.info: dict[str, Any] | None = None  # the child's dim and priority, once it has loaded the teacher

    def _receive(self) -> Any:
        try:
            kind, value = self._connection.recv()
        except (EOFError, OSError):
            raise RuntimeError("the teacher process is gone") from None
        if kind == "error":
            raise RuntimeError(value)
        return value

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """Wait until the child has loaded the teacher; its ``dim`` and ``priority``."""
        with self._lock:
            return self._ready(timeout)

    def _ready(self, timeout: float) -> dict[str, Any]:
        if self.info is None:
            if not self._connection.poll(timeout):
                raise RuntimeError(f"the teacher process did not load the teacher within {timeout:g} s")
            self.info = self._receive()
            logger.info("drift watch teacher process %d ready (priority: %s)", self.process.pid, self.info["priority"])
        return self.info

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """The teacher's embeddings of ``texts`` [n, dim] float32, computed in the child."""
        with self._lock:
            self._ready(START_TIMEOUT_S)
            try:
                self._connection.send(list(texts))
            except (BrokenPipeError, OSError):
                raise RuntimeError("the teacher process is gone") from None
            return self._receive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (idempotent)."""
        if self.process.is_alive():
            try:
                self._connection.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        self._connection.close()
