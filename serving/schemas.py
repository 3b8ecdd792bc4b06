"""Request bodies of the endpoints, checked by hand (fast, and with errors that name the field).

Errors are :class:`RequestError` with an HTTP status: 400 (not JSON), 413 (too many texts, body too large),
422 (wrong shape or type, text too long), as text-embeddings-inference answers them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


class RequestError(ValueError):
    """A request the server refuses: ``status`` and an error ``kind`` for the JSON answer."""

    def __init__(self, status: int, message: str, kind: str = "validation", param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.param = param


@dataclass(frozen=True)
class Limits:
    max_texts: int
    max_chars: int
    max_k: int


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body."""
    if not body:
        raise RequestError(422, "the request has no body: send a JSON object", "validation")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"the body is not valid JSON: {error}", "invalid_json") from None
    if not isinstance(value, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type(value).__name__}")
    return value


def texts_field(body: dict[str, Any], name: str, limits: Limits) -> tuple[list[str], bool]:
    """``(texts, single)`` of a field holding a string or a list of strings, within the limits."""
    if name not in body:
        raise RequestError(422, f"missing field '{name}' (a string or a list of strings)", param=name)
    value = body[name]
    single = isinstance(value, str)
    texts = [value] if single else value
    if not isinstance(texts, list):
        raise RequestError(422, f"'{name}' must be a string or a list of strings, got {_kind(value)}", param=name)
    if not texts:
        raise RequestError(422, f"'{name}' is an empty list", param=name)
    if len(texts) > limits.max_texts:
        raise RequestError(
            413, f"'{name}' has {len(texts)} texts; at most {limits.max_texts} are allowed per request",
            "payload_too_large", name,
        )  # fmt: skip
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            where = name if single else f"{name}[{position}]"
            raise RequestError(422, f"'{where}' must be a string, got {_kind(text)}", param=name)
        if len(text) > limits.max_chars:
            where = name if single else f"{name}[{position}]"
            raise RequestError(
                422, f"'{where}' has {len(text)} characters; at most {limits.max_chars} are allowed",
                "text_too_long", name,
            )  # fmt: skip
    return texts, single


def bool_field(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"'{name}' must be true or false, got {_kind(value)}", param=name)
    return value


def choice_field(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name, choices[0])
    if value is None:
        return choices[0]
    if value not in choices:
        raise RequestError(422, f"'{name}' must be one of {', '.join(choices)}, got {value!r}", param=name)
    return value


def k_field(body: dict[str, Any], limits: Limits, default: int = 10) -> int:
    value = body.get("k", default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(422, f"'k' must be a positive integer, got {value!r}", param="k")
    if value > limits.max_k:
        raise RequestError(422, f"'k' is {value}; at most {limits.max_k} is allowed", param="k")
    return value


def search_texts(body: dict[str, Any], limits: Limits) -> tuple[list[str], bool]:
    """The ``query`` (one) or ``queries`` (a list) of a search request."""
    if ("query" in body) == ("queries" in body):
        raise RequestError(422, "give exactly one of 'query' (a string) or 'queries' (a list of strings)")
    if "query" in body and not isinstance(body["query"], str):
        raise RequestError(422, f"'query' must be a string, got {_kind(body['query'])}", param="query")
    if "queries" in body and not isinstance(body["queries"], list):
        raise RequestError(422, f"'queries' must be a list of strings, got {_kind(body['queries'])}", param="queries")
    return texts_field(body, "query" if "query" in body else "queries", limits)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )
