"""Running the app under uvicorn: one process serving a loaded model, or several workers each loading it."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import sys

from .config import ServeConfig


def _fastest(module: str, fallback: str) -> str:
    return module if importlib.util.find_spec(module) else fallback


def _exit_quietly(signum: int, frame) -> None:
    sys.exit(0)


def run_server(config: ServeConfig) -> int:
    """Serve until SIGINT/SIGTERM; then stop accepting, answer what was accepted, exit 0."""
    import uvicorn

    # uvicorn finishes the accepted requests, then re-raises the signal it caught: make that a clean exit
    signal.signal(signal.SIGTERM, _exit_quietly)

    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "access_log": False,  # per-request logging costs throughput; /metrics counts requests
        "loop": "uvloop" if _fastest("uvloop", "") else "asyncio",
        "http": "httptools" if _fastest("httptools", "") else "h11",
        "timeout_graceful_shutdown": config.shutdown_timeout_s,
        "backlog": 4096,
        "proxy_headers": False,  # no per-request header rewriting (nothing here logs client addresses)
        "server_header": False,
        "date_header": False,
    }
    if config.workers > 1:  # each worker process builds its own app from the environment
        os.environ.update(config.to_env())
        uvicorn.run("serving.app:app_from_env", factory=True, workers=config.workers, **options)
        return 0
    from .app import create_app
    from .service import EmbeddingService

    app = create_app(EmbeddingService.load(config))
    uvicorn.run(app, **options)
    return 0
