"""OpenAI provider, request side: route type, upstream path, body decoding and rewriting.

Mirrors agentgateway's `ai` backend for `provider: openAI` (see the reference, sections 2.1
to 2.3): the route type comes from `policies.ai.routes` path suffixes, the provider model
always replaces the body's, a missing model is a 400, and `stream: true` without
`stream_options` gets `include_usage` so the usage chunk can be observed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from agw_fast.errors import ProxyError
from agw_fast.llm.codings import CodingError, Inflater, UnsupportedCoding, parse_codings
from agw_fast.llm.jsonbytes import loads as _loads

__all__ = [
    "COMPLETIONS",
    "DEFAULT_BASE_PATH",
    "WILDCARD_ROUTE",
    "LLMRequestError",
    "RewrittenBody",
    "RouteTypeResolver",
    "decode_request_body",
    "default_path",
    "resolve_route_type",
    "rewrite_request_body",
    "serialize_body",
]

COMPLETIONS = "completions"
WILDCARD_ROUTE = "*"
DEFAULT_BASE_PATH = "/v1"

# Route types with their own OpenAI endpoint; every other type is served (or translated
# down to) chat completions, as agentgateway does.
_SUFFIX_BY_ROUTE_TYPE = {
    "responses": "/responses",
    "embeddings": "/embeddings",
    "realtime": "/realtime",
    "rerank": "/rerank",
}
_CHAT_SUFFIX = "/chat/completions"

# Built once: json.dumps with non-default arguments constructs a new encoder on every call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode
_NUMBER_TYPES = (int, float)


class LLMRequestError(ProxyError):
    """The request cannot be processed for the LLM backend.

    `message` is the detail; the client sees `failed to process LLM request: <message>` with
    `status` (400 for bad JSON or a missing model, 413 too large, 415 unknown encoding).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, f"failed to process LLM request: {message}")
        self.message = message


class RouteTypeResolver:
    """Maps a request path to an LLM route type from `policies.ai.routes`, precomputed.

    The longest matching suffix wins (config order breaks ties), `"*"` applies when no
    suffix matches, and with neither the type is `completions`. The query is ignored.
    """

    __slots__ = ("_fallback", "_suffixes")

    def __init__(self, routes: Sequence[tuple[str, str]]) -> None:
        fallback: str | None = None
        suffixes: list[tuple[str, str]] = []
        seen: set[str] = set()
        for suffix, route_type in routes:
            if suffix == WILDCARD_ROUTE:
                if fallback is None:
                    fallback = route_type
            elif suffix not in seen:
                seen.add(suffix)
                suffixes.append((suffix, route_type))
        suffixes.sort(key=lambda item: len(item[0]), reverse=True)  # stable: ties keep order
        self._suffixes = tuple(suffixes)
        self._fallback = COMPLETIONS if fallback is None else fallback

    def __call__(self, path: str) -> str:
        query = path.find("?")
        if query != -1:
            path = path[:query]
        for suffix, route_type in self._suffixes:
            if path.endswith(suffix):
                return route_type
        return self._fallback

    def __repr__(self) -> str:
        return f"RouteTypeResolver({list(self._suffixes)!r}, fallback={self._fallback!r})"


def resolve_route_type(path: str, routes: Sequence[tuple[str, str]]) -> str:
    """One-off form of `RouteTypeResolver`; build the resolver once per backend instead."""
    return RouteTypeResolver(routes)(path)


def default_path(route_type: str, path_prefix: str | None) -> str:
    """Upstream path (no query) for `route_type`: `/v1` or `path_prefix`, plus the suffix.

    A trailing `/` on the prefix is dropped so the result never contains `//`.
    """
    base = DEFAULT_BASE_PATH if path_prefix is None else path_prefix.rstrip("/")
    return base + _SUFFIX_BY_ROUTE_TYPE.get(route_type, _CHAT_SUFFIX)


@dataclass(slots=True)  # not frozen: built per request (see LLMRequest)
class RewrittenBody:
    """Result of `rewrite_request_body`.

    `body` is the input object itself when `changed` is false. `model` is the request model
    as sent upstream. The sampling fields are for access logs and spans only.
    """

    body: bytes
    changed: bool
    model: str
    stream: bool
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


def _serialize(obj: dict[str, object]) -> bytes:
    try:
        return _encode(obj).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate from a `\ud800` escape cannot be UTF-8 encoded; escaping it
        # again keeps the JSON meaning intact.
        return _encode_ascii(obj).encode("ascii")


def rewrite_request_body(
    body: bytes, *, model_override: str | None, include_usage: bool = True
) -> RewrittenBody:
    """Apply the OpenAI provider's request-body rules to a JSON body.

    - `model_override` (provider `model`), when set, always replaces `"model"`;
    - otherwise a missing or non-string `"model"` is a 400 (`missing field: model not
      specified`);
    - with `include_usage` (pass False for route types without `stream_options`, such as
      `responses` or `embeddings`), `"stream": true` with `"stream_options"` absent or null
      sets it to `{"include_usage": true}`; any other client value is left alone.

    The body is re-serialised compactly only if something changed. Raises `LLMRequestError`.
    """
    try:
        obj = _loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and invalid UTF-8; RecursionError deep nesting.
        raise LLMRequestError(f"invalid JSON: {exc}") from None
    if type(obj) is not dict:
        raise LLMRequestError("invalid JSON: request body must be a JSON object")
    changed = False
    model = obj.get("model")
    if model_override is not None:
        if model != model_override:
            obj["model"] = model_override
            changed = True
        model = model_override
    elif type(model) is not str:
        raise LLMRequestError("missing field: model not specified")
    stream = obj.get("stream") is True
    # `"stream_options": null` counts as absent, as it does for agentgateway's typed model.
    if stream and include_usage and obj.get("stream_options") is None:
        obj["stream_options"] = {"include_usage": True}
        changed = True
    # Log-only fields; `type(...) in` rejects bool and avoids an isinstance chain per call.
    temperature = obj.get("temperature")
    if type(temperature) not in _NUMBER_TYPES:
        temperature = None
    top_p = obj.get("top_p")
    if type(top_p) not in _NUMBER_TYPES:
        top_p = None
    max_tokens = obj.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = obj.get("max_tokens")
    if type(max_tokens) is not int:
        max_tokens = None
    # Positional: a frozen dataclass's keyword __init__ costs measurably more per request.
    return RewrittenBody(
        _serialize(obj) if changed else body, changed, model, stream, temperature, top_p, max_tokens
    )


serialize_body = _serialize  # compact JSON, as the rewritten bodies are sent


def _too_large() -> LLMRequestError:
    return LLMRequestError("request was too large", status=413)


def decode_request_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo the request `Content-Encoding` (gzip, x-gzip, deflate, identity).

    Codings are listed in the order they were applied (RFC 9110 §8.4), so they are undone
    right to left. An unknown coding is a 415, a decoded body over `limit` a 413, corrupt
    data a 400; all raised as `LLMRequestError`. The caller must drop `Content-Encoding` and
    recompute `Content-Length` when it forwards the decoded body.
    """
    limit = max(limit, 0)
    try:
        codings = parse_codings(content_encoding)
    except UnsupportedCoding as exc:
        raise LLMRequestError(str(exc), status=415) from None
    for coding in reversed(codings):
        inflater = Inflater(coding)
        parts: list[bytes] = []
        try:
            for piece in inflater.feed(body, limit):
                parts.append(piece)
            if inflater.decoded > limit:
                raise _too_large()
            # Below the limit the inflater used all the input, so an unfinished stream is
            # a truncated one.
            inflater.end()
        except CodingError as exc:
            raise LLMRequestError(str(exc)) from None
        body = parts[0] if len(parts) == 1 else b"".join(parts)
    if len(body) > limit:
        raise _too_large()
    return body
