"""The ASGI application: the endpoints, their error answers and the metrics of every request.

============================  ===========================================================================
``POST /embed``               text-embeddings-inference: ``{"inputs": str | [str], "normalize": bool}`` →
                              ``[[float, ...], ...]``
``POST /v1/embeddings``       OpenAI: ``{"input", "model", "encoding_format": "float" | "base64"}`` →
                              ``{"object": "list", "data": [{"embedding", "index"}], "model", "usage"}``
``POST /search``              ``{"query" | "queries", "k", "compare"}`` → ``{"results": [{"query", "hits":
                              [{"id", "score", "text"}]}]}`` (+ the teacher's with ``compare``)
``GET /health``               ``{"status": "ready" | "degraded", "reasons": [...]}`` (503 while stopping)
``GET /info``                 model, teacher, dim, dtype, vocabulary size, version, index size, limits
``GET /metrics``              Prometheus text format
``GET /``                     the search page
============================  ===========================================================================

The endpoints are plain ASGI handlers dispatched by path (a request costs a dictionary lookup, not a middleware
stack: at thousands of requests per second per core that overhead is most of the time); Starlette runs the
lifespan (start and graceful stop of the service) and answers unknown paths.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import orjson
from starlette.applications import Starlette

from .batcher import Overloaded, ShuttingDown
from .config import ServeConfig
from .metrics import CONTENT_TYPE
from .schemas import RequestError, bool_field, choice_field, k_field, parse_body, search_texts, texts_field
from .search import overlap
from .service import EmbeddingService, normalized

logger = logging.getLogger("serving")
JSON = b"application/json"


class ClientDisconnect(Exception):
    """The client went away before its request was read."""


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: bytes = JSON


def json_answer(value, status: int = 200) -> Answer:
    return Answer(status, orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def tei_error(status: int, message: str, kind: str, param: str | None) -> Answer:
    """text-embeddings-inference's error body."""
    return json_answer({"error": message, "error_type": kind}, status)


def openai_error(status: int, message: str, kind: str, param: str | None) -> Answer:
    """OpenAI's error body."""
    code = {429: "rate_limit_exceeded", 413: "payload_too_large"}.get(status, kind)
    kind = "invalid_request_error" if status < 429 else ("rate_limit_error" if status == 429 else "server_error")
    return json_answer({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


async def read_body(scope: dict, receive: Callable, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (checked before and while reading)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise RequestError(413, f"the body has {int(value)} bytes; at most {limit} are read", "payload_too_large")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body exceeds {limit} bytes", "payload_too_large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


Handler = Callable[[bytes], Awaitable[Answer]]


class ServingApp:
    """The ASGI callable: the routes of :func:`create_app`, the lifespan and unknown paths by Starlette."""

    def __init__(self, service: EmbeddingService, routes: dict[tuple[str, str], tuple[str, Handler, Callable]]):
        self.service = service
        self.routes = routes
        self.body_limit = service.config.max_body_bytes

        @asynccontextmanager
        async def lifespan(app: Starlette):
            await service.start()
            try:
                yield
            finally:
                await service.stop()

        self.fallback = Starlette(lifespan=lifespan)
        self.state = self.fallback.state
        self.state.service = service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        route = self.routes.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if route is None:
            if scope["type"] == "http" and any(path == scope["path"] for _, path in self.routes):
                await self._send(send, tei_error(405, f"{scope['method']} is not allowed here", "method", None))
                return
            await self.fallback(scope, receive, send)
            return
        name, handler, error = route
        start = time.perf_counter()
        kind = None
        try:
            body = await read_body(scope, receive, self.body_limit) if scope["method"] == "POST" else b""
            answer = await handler(body)
        except RequestError as failure:
            kind = failure.kind
            answer = error(failure.status, str(failure), kind, failure.param)
        except Overloaded as failure:
            kind = "overloaded"
            self.service.overloaded()
            answer = error(429, str(failure), kind, None)
        except ShuttingDown as failure:
            kind = "unavailable"
            answer = error(503, str(failure), kind, None)
        except LookupError as failure:
            kind = "not_found"
            answer = error(404, str(failure), kind, None)
        except ClientDisconnect:
            self.service.metrics.request(name, 499, time.perf_counter() - start, "client_disconnected")
            return
        except Exception as failure:  # a bug: answer 500 with the reason, keep serving
            logger.exception("%s failed", name)
            kind = "internal"
            answer = error(500, f"internal error: {type(failure).__name__}: {failure}", kind, None)
        await self._send(send, answer)
        self.service.metrics.request(name, answer.status, time.perf_counter() - start, kind)

    @staticmethod
    async def _send(send: Callable, answer: Answer) -> None:
        headers = [(b"content-type", answer.content_type), (b"content-length", str(len(answer.body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


def create_app(service: EmbeddingService) -> ServingApp:
    """The application serving ``service`` (started and stopped with the app's lifespan)."""
    limits = service.limits
    admit = service.batcher.admit  # a full queue answers 429 before the body is parsed

    async def embed(raw: bytes) -> Answer:
        admit()
        body = parse_body(raw)
        texts, _ = texts_field(body, "inputs", limits)
        normalize = bool_field(body, "normalize", True)
        result = await service.embed(texts)
        return json_answer(normalized(result.rows) if normalize else result.rows)

    async def openai_embeddings(raw: bytes) -> Answer:
        admit()
        body = parse_body(raw)
        if isinstance(body.get("input"), list) and body["input"] and not isinstance(body["input"][0], str):
            message = "'input' must be a string or a list of strings (token ids are not supported)"
            raise RequestError(422, message, param="input")
        texts, _ = texts_field(body, "input", limits)
        encoding = choice_field(body, "encoding_format", ("float", "base64"))
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != service.backend.dim:
            message = f"'dimensions' must be {service.backend.dim} (this model's size)"
            raise RequestError(422, message, param="dimensions")
        result = await service.embed(texts)
        if encoding == "base64":
            vectors = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in result.rows]
        else:
            vectors = result.rows
        data = [{"object": "embedding", "index": i, "embedding": vector} for i, vector in enumerate(vectors)]
        tokens = int(sum(result.tokens))
        model = body.get("model") if isinstance(body.get("model"), str) else service.model_name
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_answer({"object": "list", "data": data, "model": model, "usage": usage})

    async def search(raw: bytes) -> Answer:
        admit()
        body = parse_body(raw)
        texts, _ = search_texts(body, limits)
        k = k_field(body, limits)
        compare = bool_field(body, "compare", False)
        hits, embed_seconds, search_seconds = await service.search(texts, k)
        answer = {
            "model": service.model_name,
            "k": k,
            "results": [_results(text, found) for text, found in zip(texts, hits, strict=True)],
            "seconds": {"embed": embed_seconds, "search": search_seconds, "total": embed_seconds + search_seconds},
        }
        if compare:
            answer["teacher"] = None
            if service.teacher_backend is not None:
                teacher_hits, seconds = await service.teacher_search(texts, k)
                answer["teacher"] = {
                    "model": service.teacher_name,
                    "results": [_results(text, found) for text, found in zip(texts, teacher_hits, strict=True)],
                    "seconds": {"total": seconds},
                    "overlap": [overlap(s, t, k) for s, t in zip(hits, teacher_hits, strict=True)],
                }
        return json_answer(answer)

    async def health(raw: bytes) -> Answer:
        status, reasons = service.health()
        return json_answer({"status": status, "reasons": reasons}, 200 if status in ("ready", "degraded") else 503)

    async def info(raw: bytes) -> Answer:
        return json_answer(service.info())

    async def prometheus(raw: bytes) -> Answer:
        text = service.metrics.render(service.batcher.accepted, service.batcher.queued_texts)
        return Answer(200, text, CONTENT_TYPE.encode())

    page_html = resources.files("serving").joinpath("static/index.html").read_bytes()

    async def page(raw: bytes) -> Answer:
        return Answer(200, page_html, b"text/html; charset=utf-8")

    routes = {
        ("POST", "/embed"): ("embed", embed, tei_error),
        ("POST", "/v1/embeddings"): ("openai_embeddings", openai_embeddings, openai_error),
        ("POST", "/search"): ("search", search, tei_error),
        ("GET", "/health"): ("health", health, tei_error),
        ("GET", "/info"): ("info", info, tei_error),
        ("GET", "/metrics"): ("metrics", prometheus, tei_error),
        ("GET", "/"): ("page", page, tei_error),
    }
    return ServingApp(service, routes)


def _results(text: str, hits) -> dict:
    return {
        "query": text,
        "hits": [
            {"id": hit.id, "score": hit.score, **({"text": hit.text} if hit.text is not None else {})} for hit in hits
        ],
    }


def app_from_env() -> ServingApp:
    """The app of the ``BERTAPPROX_SERVE_*`` settings (uvicorn's factory for worker processes)."""
    return create_app(EmbeddingService.load(ServeConfig.from_env()))
