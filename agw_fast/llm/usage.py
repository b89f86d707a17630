"""Token usage of an LLM response: the value object and the non-streaming extraction.

Streaming responses are observed by `agw_fast.llm.sse`; this module covers the buffered
JSON case and the field mapping both share. Nothing here raises on malformed input: usage is
telemetry, and a response must never fail because its accounting could not be read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from agw_fast.llm.jsonbytes import loads as _loads

__all__ = [
    "CacheExcludedUsage",
    "JSONBodyCollector",
    "Usage",
    "usage_from_json_body",
    "usage_from_mapping",
]


@dataclass(slots=True)  # not frozen: one per LLM call (see LLMRequest)
class Usage:
    """Token counts reported by the provider; `None` where the provider said nothing."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    # Read-only here, fields of `CacheExcludedUsage`: an OpenAI-style response (every call
    # on the fast path) builds no more fields than before (a frozen field costs ~0.15 µs).
    @property
    def cache_write_tokens(self) -> int | None:
        """Tokens written to the prompt cache (Anthropic, Bedrock report them)."""
        return None

    @property
    def input_excludes_cache(self) -> bool:
        """Whether `input_tokens` leaves cache reads and writes out (Anthropic, Bedrock) rather
        than counting them in (OpenAI, Gemini): agentgateway's CacheTokenConvention."""
        return False


@dataclass(slots=True)
class CacheExcludedUsage(Usage):
    """Anthropic's and Bedrock's accounting: `input_tokens` is the uncached input only."""

    cache_write_tokens: int | None = None

    @property
    def input_excludes_cache(self) -> bool:
        return True


def _count(value: object) -> int | None:
    # `type(...) is int` rejects bool (a subclass of int) without an isinstance chain.
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def _detail(details: object, key: str) -> int | None:
    if type(details) is dict:
        return _count(details.get(key))
    return None


def usage_from_mapping(usage: Mapping[str, object]) -> Usage:
    """Map an OpenAI `usage` object to `Usage`.

    Chat Completions names (`prompt_tokens`, `completion_tokens`, `*_tokens_details`) come
    first; the Responses API names (`input_tokens`, `output_tokens`) are the fallback so a
    `responses` route reports usage too.
    """
    get = usage.get
    input_tokens = _count(get("prompt_tokens"))
    if input_tokens is None:
        input_tokens = _count(get("input_tokens"))
    output_tokens = _count(get("completion_tokens"))
    if output_tokens is None:
        output_tokens = _count(get("output_tokens"))
    in_details = get("prompt_tokens_details")
    if in_details is None:
        in_details = get("input_tokens_details")
    out_details = get("completion_tokens_details")
    if out_details is None:
        out_details = get("output_tokens_details")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=_count(get("total_tokens")),
        cached_input_tokens=_detail(in_details, "cached_tokens"),
        reasoning_tokens=_detail(out_details, "reasoning_tokens"),
    )


_raw_decode = json.JSONDecoder().raw_decode


def _value_after(text: str, key: str) -> object:
    """The JSON value of the last `"key":` in `text`, decoded on its own, or None.

    Inside JSON strings quotes are escaped, so an unescaped `"usage":` is a key; OpenAI puts
    the top-level `usage` and `model` where `rfind` meets them first in practice, and the
    caller falls back to a full parse when the value is not what it expects.
    """
    at = text.rfind(key)
    if at == -1:
        return None
    start = at + len(key)
    while start < len(text) and text[start] in " \t\r\n":
        start += 1
    try:
        return _raw_decode(text, start)[0]
    except ValueError:
        return None


def usage_from_json_body(body: bytes) -> tuple[Usage | None, str | None]:
    """Usage and response model of a buffered (non-streaming) JSON response; never raises.

    Fast path: decode only the `usage` object and the `model` string rather than the whole
    response (choices can be kilobytes); anything unexpected takes the full parse.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, None
    stripped = text.rstrip()
    if stripped.startswith("{") and stripped.endswith("}"):
        usage = _value_after(text, '"usage":')
        model = _value_after(text, '"model":')
        if type(usage) is dict and type(model) is str:
            return usage_from_mapping(usage), model
    return _full_parse(body)


def _full_parse(body: bytes) -> tuple[Usage | None, str | None]:
    try:
        obj = _loads(body)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and UnicodeDecodeError; deep nesting recurses.
        return None, None
    if type(obj) is not dict:
        return None, None
    model = obj.get("model")
    usage = obj.get("usage")
    return (
        usage_from_mapping(usage) if type(usage) is dict else None,
        model if type(model) is str else None,
    )


class JSONBodyCollector:
    """Copies a non-streaming response body, up to `limit` decoded bytes, to read usage.

    The proxy relays the body unchanged and feeds each chunk here as well (the HTTP chunked
    framing and any content coding already removed). Past `limit` the collector drops what it
    holds and stops: the response goes on, it just reports no usage.
    """

    __slots__ = ("_collecting", "_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = max(limit, 0)
        self._parts: list[bytes] = []
        self._size = 0
        self._collecting = True

    @property
    def collecting(self) -> bool:
        """False once the body went over the limit (or `stop` was called)."""
        return self._collecting

    def feed(self, chunk: bytes) -> None:
        if not self._collecting or not chunk:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self.stop()
            return
        self._parts.append(chunk)

    def finish(self) -> tuple[Usage | None, str | None]:
        """Usage and response model of what was collected; (None, None) if nothing usable."""
        if not self._collecting:
            return None, None
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        return usage_from_json_body(body)

    def stop(self) -> None:
        """Drop what was collected and report no usage (the body could not be read)."""
        self._collecting = False
        self._parts = []
