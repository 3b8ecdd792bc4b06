"""The ASGI application (Starlette): the endpoints, their error answers and the metrics of every request.

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
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .batcher import Overloaded, ShuttingDown
from .config import ServeConfig
from .metrics import CONTENT_TYPE
from .schemas import (
    RequestError,
    bool_field,
    choice_field,
    k_field,
    parse_body,
    search_texts,
    texts_field,
)
from .service import EmbeddingService, normalized

logger = logging.getLogger("serving")
JSON = "application/json"
Handler = Callable[[Request], Awaitable[Response]]


def json_response(value, status: int = 200) -> Response:
    return Response(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON)


def tei_error(status: int, message: str, kind: str, param: str | None) -> Response:
    """text-embeddings-inference's error body."""
    return json_response({"error": message, "error_type": kind}, status)


def openai_error(status: int, message: str, kind: str, param: str | None) -> Response:
    """OpenAI's error body."""
    code = {429: "rate_limit_exceeded", 413: "payload_too_large"}.get(status, kind)
    kind = "invalid_request_error" if status < 429 else ("rate_limit_error" if status == 429 else "server_error")
    return json_response({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (checked before and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body has {declared} bytes; at most {limit} are read", "payload_too_large")
    if declared is not None:
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body exceeds {limit} bytes", "payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: EmbeddingService) -> Starlette:
    """The application serving ``service`` (started and stopped with the app's lifespan)."""
    metrics = service.metrics
    body_limit = service.config.max_body_bytes

    def endpoint(name: str, handler: Handler, error: Callable = tei_error) -> Handler:
        async def run(request: Request) -> Response:
            start = time.perf_counter()
            kind = None
            try:
                response = await handler(request)
            except RequestError as failure:
                kind = failure.kind
                response = error(failure.status, str(failure), kind, failure.param)
            except Overloaded as failure:
                kind = "overloaded"
                service.overloaded()
                response = error(429, str(failure), kind, None)
            except (ShuttingDown, LookupError) as failure:
                kind = "unavailable" if isinstance(failure, ShuttingDown) else "not_found"
                response = error(503 if kind == "unavailable" else 404, str(failure), kind, None)
            except ClientDisconnect:
                kind = "client_disconnected"
                response = Response(status_code=499)
            except Exception as failure:  # a bug: answer 500 with the reason, keep serving
                logger.exception("%s failed", name)
                kind = "internal"
                response = error(500, f"internal error: {type(failure).__name__}: {failure}", kind, None)
            metrics.request(name, response.status_code, time.perf_counter() - start, kind)
            return response

        return run

    async def embed(request: Request) -> Response:
        body = parse_body(await read_body(request, body_limit))
        texts, _ = texts_field(body, "inputs", service.limits)
        normalize = bool_field(body, "normalize", True)
        result = await service.embed(texts)
        return json_response(normalized(result.rows) if normalize else result.rows)

    async def openai_embeddings(request: Request) -> Response:
        body = parse_body(await read_body(request, body_limit))
        if isinstance(body.get("input"), list) and body["input"] and not isinstance(body["input"][0], str):
            raise RequestError(422, "'input' must be a string or a list of strings (token ids are not supported)",
                               param="input")  # fmt: skip
        texts, _ = texts_field(body, "input", service.limits)
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
        return json_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})  # fmt: skip

    async def search(request: Request) -> Response:
        body = parse_body(await read_body(request, body_limit))
        texts, _ = search_texts(body, service.limits)
        k = k_field(body, service.limits)
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
                from .search import overlap

                teacher_hits, seconds = await service.teacher_search(texts, k)
                answer["teacher"] = {
                    "model": service.teacher_name,
                    "results": [_results(text, found) for text, found in zip(texts, teacher_hits, strict=True)],
                    "seconds": {"total": seconds},
                    "overlap": [overlap(s, t, k) for s, t in zip(hits, teacher_hits, strict=True)],
                }
        return json_response(answer)

    async def health(request: Request) -> Response:
        status, reasons = service.health()
        return json_response({"status": status, "reasons": reasons}, 200 if status in ("ready", "degraded") else 503)

    async def info(request: Request) -> Response:
        return json_response(service.info())

    async def prometheus(request: Request) -> Response:
        text = metrics.render(service.batcher.accepted, service.batcher.queued_texts)
        return Response(text, media_type=CONTENT_TYPE)

    async def page(request: Request) -> Response:
        return HTMLResponse(resources.files("serving").joinpath("static/index.html").read_text(encoding="utf-8"))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/embed", endpoint("embed", embed), methods=["POST"]),
        Route("/v1/embeddings", endpoint("openai_embeddings", openai_embeddings, openai_error), methods=["POST"]),
        Route("/search", endpoint("search", search), methods=["POST"]),
        Route("/health", endpoint("health", health), methods=["GET"]),
        Route("/info", endpoint("info", info), methods=["GET"]),
        Route("/metrics", endpoint("metrics", prometheus), methods=["GET"]),
        Route("/", endpoint("page", page), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app


def _results(text: str, hits) -> dict:
    return {
        "query": text,
        "hits": [
            {"id": hit.id, "score": hit.score, **({"text": hit.text} if hit.text is not None else {})} for hit in hits
        ],
    }


def app_from_env() -> Starlette:
    """The app of the ``BERTAPPROX_SERVE_*`` settings (uvicorn's factory for worker processes)."""
    return create_app(EmbeddingService.load(ServeConfig.from_env()))
