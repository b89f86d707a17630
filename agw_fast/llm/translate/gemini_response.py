"""Gemini generateContent responses -> OpenAI chat completions, and the native passthrough.

Follows agentgateway's `vertex_gemini::to_completions` and `passthrough_stream`:

- text parts become `content`, parts marked `thought` become `reasoning_content`, and
  `functionCall` parts become `tool_calls` (the native id, else `call_{responseId}_{n}`; a
  Gemini 3 `thoughtSignature` rides inside the id after `__thought__` so the client echoes it
  back on its next turn);
- `finishReason` maps to `finish_reason` (MAX_TOKENS -> length, safety/recitation family ->
  content_filter, everything else -> stop, and stop becomes tool_calls once a call was seen);
  a prompt blocked before any candidate is one empty choice with `content_filter`;
- `usageMetadata` -> `usage`: Gemini counts thoughts apart from candidates
  (total = prompt + candidates + thoughts) while OpenAI counts reasoning inside completion, so
  `completion_tokens` = candidates + thoughts, with `thoughtsTokenCount` also reported as
  `reasoning_tokens` and `cachedContentTokenCount` as `cached_tokens`;
- streams: one `chat.completion.chunk` per Gemini event (role on the first; only the first
  candidate), usage only on a chunk that finishes (Gemini repeats its cumulative usage on
  every event), and a closing `data: [DONE]` Gemini itself never sends.

Telemetry (usage, model, time to first token) is read from every event, as agentgateway's
logger does: the model is the first `modelVersion`, usage the last `usageMetadata`, and the
first token the first event that parses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.events import EventTooLarge, SSEEventReader
from agw_fast.llm.usage import Usage

__all__ = [
    "THOUGHT_SIGNATURE_SEPARATOR",
    "CompletionsFromGemini",
    "GeminiPassthrough",
    "GeminiPassthroughStream",
    "GeminiToCompletionsStream",
    "anthropic_error_from_google",
    "count_tokens_total",
    "openai_error_from_google",
    "to_json_bytes",
]

_log = logging.getLogger(__name__)

THOUGHT_SIGNATURE_SEPARATOR = "__thought__"
_DONE = b"data: [DONE]\n\n"
_CONTENT_FILTER_REASONS = frozenset(
    (
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    )
)
# Google's error status -> OpenAI error type.
_ERROR_TYPES = {
    "INVALID_ARGUMENT": "invalid_request_error",
    "FAILED_PRECONDITION": "invalid_request_error",
    "NOT_FOUND": "not_found_error",
    "PERMISSION_DENIED": "authentication_error",
    "UNAUTHENTICATED": "authentication_error",
    "RESOURCE_EXHAUSTED": "rate_limit_error",
}

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(separators=(",", ":")).encode


def to_json_bytes(value: object) -> bytes:
    """Compact UTF-8 JSON, non-ASCII unescaped (as serde_json writes it)."""
    try:
        return _encode(value).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (valid in a JSON \u escape, not in UTF-8): keep it escaped.
        return _encode_ascii(value).encode("ascii")


def _bad(message: str) -> TranslationError:
    return TranslationError(f"invalid Gemini response: {message}")


def _opt(obj: dict[str, object], key: str, kind: type) -> object:
    value = obj.get(key)
    if value is None or type(value) is kind:
        return value
    raise _bad(f"{key} must be a {kind.__name__}")


def _count(obj: dict[str, object], key: str) -> int | None:
    value = obj.get(key)
    if value is None or (type(value) is int and value >= 0):
        return value
    raise _bad(f"usageMetadata.{key} must be a non-negative integer")


class _Counts:
    """Gemini usageMetadata normalised to the OpenAI convention (completion includes
    thoughts; total falls back to prompt + completion)."""

    __slots__ = ("cached", "completion", "prompt", "thoughts", "total")

    def __init__(self, metadata: dict[str, object]) -> None:
        self.prompt = _count(metadata, "promptTokenCount") or 0
        self.thoughts = _count(metadata, "thoughtsTokenCount")
        self.completion = (_count(metadata, "candidatesTokenCount") or 0) + (self.thoughts or 0)
        total = _count(metadata, "totalTokenCount")
        self.total = self.prompt + self.completion if total is None else total
        self.cached = _count(metadata, "cachedContentTokenCount")

    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.prompt,
            output_tokens=self.completion,
            total_tokens=self.total,
            cached_input_tokens=self.cached,
            reasoning_tokens=self.thoughts,
        )

    def openai(self) -> dict[str, object]:
        usage: dict[str, object] = {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.total,
        }
        if self.thoughts is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": self.thoughts}
        if self.cached is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached}
        return usage


class _Chunk:
    """The fields of one GenerateContentResponse this module reads, type-checked."""

    __slots__ = ("blocked", "candidates", "counts", "model", "response_id")

    def __init__(self, obj: object) -> None:
        if type(obj) is not dict:
            raise _bad("the body must be a JSON object")
        candidates = obj.get("candidates")
        if candidates is None:
            candidates = []
        elif type(candidates) is not list:
            raise _bad("candidates must be an array")
        for candidate in candidates:
            if type(candidate) is not dict:
                raise _bad("a candidate must be an object")
            content = _opt(candidate, "content", dict)
            if content is not None:
                _opt(content, "parts", list)  # type: ignore[arg-type]
            _opt(candidate, "finishReason", str)
        self.candidates: list[dict[str, object]] = candidates
        feedback = _opt(obj, "promptFeedback", dict)
        self.blocked = feedback is not None and (
            _opt(feedback, "blockReason", str) is not None  # type: ignore[arg-type]
        )
        metadata = _opt(obj, "usageMetadata", dict)
        self.counts = _Counts(metadata) if metadata is not None else None  # type: ignore[arg-type]
        self.response_id: str | None = _opt(obj, "responseId", str)  # type: ignore[assignment]
        self.model: str | None = _opt(obj, "modelVersion", str)  # type: ignore[assignment]


def _optional_is(value: object, kind: type) -> bool:
    return value is None or type(value) is kind


def _signature(part: dict[str, object]) -> object:
    value = part.get("thoughtSignature")
    return part.get("thought_signature") if value is None else value


class _Parts:
    """A candidate's parts split into answer text, reasoning text and function calls.

    Parts that are neither text nor a function call (inline data, code execution, shapes
    Gemini adds later) are skipped, as agentgateway's untyped catch-all does."""

    __slots__ = ("calls", "content", "reasoning")

    def __init__(self, candidate: dict[str, object] | None) -> None:
        content: list[str] = []
        reasoning: list[str] = []
        # (native id, name, args, thoughtSignature)
        calls: list[tuple[str | None, str, object, str | None]] = []
        body = candidate.get("content") if candidate is not None else None
        parts = body.get("parts") if type(body) is dict else None
        for part in parts or ():
            if type(part) is not dict:
                continue
            signature = _signature(part)
            if not _optional_is(part.get("thought"), bool) or not _optional_is(signature, str):
                continue
            text = part.get("text")
            if type(text) is str:
                (reasoning if part.get("thought") is True else content).append(text)
                continue
            call = part.get("functionCall")
            if call is None:
                call = part.get("function_call")
            if (
                type(call) is dict
                and type(call.get("name")) is str
                and _optional_is(call.get("id"), str)
            ):
                calls.append((call.get("id"), call["name"], call.get("args"), signature))  # type: ignore[arg-type]
        self.content = "".join(content)
        self.reasoning = "".join(reasoning)
        self.calls = calls


def _tool_call_id(native: str | None, seed: str, index: int, signature: str | None) -> str:
    base = native if native is not None else f"call_{seed}_{index}"
    return f"{base}{THOUGHT_SIGNATURE_SEPARATOR}{signature}" if signature else base


def _finish_reason(reason: object, saw_tool_call: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _CONTENT_FILTER_REASONS:
        return "content_filter"
    # STOP, MALFORMED_FUNCTION_CALL, OTHER, unspecified, absent and anything new.
    return "tool_calls" if saw_tool_call else "stop"


def _choice(index: int, candidate: dict[str, object], seed: str) -> dict[str, object]:
    parts = _Parts(candidate)
    tool_calls = [
        {
            "id": _tool_call_id(native, seed, n, signature),
            "type": "function",
            "function": {"name": name, "arguments": to_json_bytes(args).decode("utf-8")},
        }
        for n, (native, name, args, signature) in enumerate(parts.calls)
    ]
    message: dict[str, object] = {}
    if parts.content or not (tool_calls or parts.reasoning):
        message["content"] = parts.content
    message["role"] = "assistant"
    if tool_calls:
        message["tool_calls"] = tool_calls
    if parts.reasoning:
        message["reasoning_content"] = parts.reasoning
    return {
        "index": index,
        "message": message,
        "finish_reason": _finish_reason(candidate.get("finishReason"), bool(tool_calls)),
    }


def _completion(chunk: _Chunk) -> dict[str, object]:
    response_id = chunk.response_id
    if response_id is None:
        response_id = f"vertex-gemini-{int(time.time() * 1000)}"
    if chunk.candidates:
        # Parallel candidates restart call numbering at 0, so the seed names the candidate.
        choices = [
            _choice(i, c, response_id if i == 0 else f"{response_id}_{i}")
            for i, c in enumerate(chunk.candidates)
        ]
    else:
        choices = [
            {
                "index": 0,
                "message": {"content": "", "role": "assistant"},
                "finish_reason": "content_filter" if chunk.blocked else "stop",
            }
        ]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chunk.model or "",
        "choices": choices,
        "usage": chunk.counts.openai() if chunk.counts is not None else None,
    }


def _google_error(body: bytes) -> tuple[str, str | None] | None:
    """(message, status) of `{"error": {code, message, status}}`, also in the one-element
    array Google's OpenAI-compatible shim wraps it in; None if the body is not one."""
    try:
        obj = loads(body)
    except (ValueError, RecursionError):
        return None
    if type(obj) is list:
        obj = obj[0] if obj else None
    error = obj.get("error") if type(obj) is dict else None
    if type(error) is not dict:
        return None
    code, message, status = error.get("code"), error.get("message"), error.get("status")
    if type(code) is not int or type(message) is not str or not _optional_is(status, str):
        return None
    return message, status


def openai_error_from_google(status: int, body: bytes) -> bytes:
    """A Google error body as an OpenAI error (`error.type` from Google's status, which also
    goes in `error.code`). Also what agentgateway sends an OpenAI Responses client that
    reached Gemini through the OpenAI-compatible endpoint, which answers in Google's shape."""
    parsed = _google_error(body)
    error: dict[str, object]
    if parsed is None:
        error = {"type": "api_error", "message": _error_text(status, body)}
    else:
        message, google_status = parsed
        error = {"type": _ERROR_TYPES.get(google_status or "", "api_error"), "message": message}
        if google_status is not None:
            error["code"] = google_status
    return to_json_bytes({"event_id": None, "error": error})


def is_google_error(body: bytes) -> bool:
    """Whether `body` is a Google error (`{"error": {"code", "message", "status"}}`, or a list
    of one), as Gemini's OpenAI-compatible endpoint answers."""
    return _google_error(body) is not None


def anthropic_error_from_google(status: int, body: bytes) -> bytes:
    """A Google error body as an Anthropic Messages error, for a Messages client sent to
    Gemini's OpenAI-compatible endpoint."""
    parsed = _google_error(body)
    if parsed is None:
        error = {"type": "api_error", "message": _error_text(status, body)}
    else:
        message, google_status = parsed
        error = {"type": _ERROR_TYPES.get(google_status or "", "api_error"), "message": message}
    return to_json_bytes({"type": "error", "error": error})


def _error_text(status: int, body: bytes) -> str:
    return body.decode("utf-8", "replace") or f"upstream error (HTTP {status})"


class CompletionsFromGemini:
    """`Translation` for a chat completions request sent as native generateContent."""

    __slots__ = ("_clock", "_model")

    def __init__(self, model: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._model = model  # the chunk model until Gemini names its modelVersion
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        try:
            obj = loads(body)
        except (ValueError, RecursionError) as e:
            raise _bad(f"not JSON ({e})") from e
        chunk = _Chunk(obj)
        usage = chunk.counts.usage() if chunk.counts is not None else None
        return to_json_bytes(_completion(chunk)), usage, chunk.model

    def error_json(self, status: int, body: bytes) -> bytes:
        return openai_error_from_google(status, body)

    def stream(self) -> GeminiToCompletionsStream:
        return GeminiToCompletionsStream(self._model, self._clock)


class _Telemetry:
    """What telemetry reads from a Gemini stream, updated per parsed event."""

    __slots__ = ("_clock", "first_token_at", "model", "usage")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def _parse(self, data: bytes) -> _Chunk | None:
        if data == b"[DONE]":
            return None
        try:
            chunk = _Chunk(loads(data))
        except (ValueError, RecursionError, TranslationError) as e:
            # agentgateway skips an event it cannot read; a translated stream that skipped
            # content would look complete while missing some, so it is cut instead.
            raise TranslationError(f"provider stream: unreadable Gemini event: {e}") from None
        if self.first_token_at is None:
            self.first_token_at = self._clock()
        if self.model is None and chunk.model is not None:
            self.model = chunk.model
        if chunk.counts is not None:
            # Cumulative: the last event's counts are the whole response's.
            self.usage = chunk.counts.usage()
        return chunk


class GeminiToCompletionsStream(_Telemetry):
    """Gemini `streamGenerateContent?alt=sse` events -> `chat.completion.chunk` events."""

    __slots__ = (
        "_created",
        "_fallback_model",
        "_id",
        "_reader",
        "_role_sent",
        "_saw_call",
        "_tool_index",
        "_chunk_model",
    )

    def __init__(self, model: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._reader = SSEEventReader()
        self._created = int(time.time())
        self._fallback_model = model
        self._chunk_model = ""
        self._id: str | None = None
        self._role_sent = False
        self._saw_call = False
        self._tool_index = 0

    def feed(self, data: bytes) -> bytes:
        try:
            events = self._reader.feed(data)
        except EventTooLarge as e:
            raise TranslationError(str(e)) from e
        return self._translate_events(events)

    def finish(self) -> bytes:
        return self._translate_events(self._reader.finish()) + _DONE

    def _translate_events(self, events: list[tuple[bytes | None, bytes]]) -> bytes:
        out = b""
        for _name, data in events:
            chunk = self._parse(data)
            if chunk is not None:
                translated = self._translate(chunk)
                if translated is not None:
                    out += b"data: " + to_json_bytes(translated) + b"\n\n"
        return out

    def _translate(self, chunk: _Chunk) -> dict[str, object] | None:
        if self._id is None:
            self._id = chunk.response_id or f"vertex-gemini-{self._created}"
        if not self._chunk_model and chunk.model:
            self._chunk_model = chunk.model
        role = not self._role_sent
        self._role_sent = True
        # Only the first candidate streams (asking for several while streaming is rare).
        candidate = chunk.candidates[0] if chunk.candidates else None
        parts = _Parts(candidate)
        tool_calls: list[dict[str, object]] = []
        for native, name, args, signature in parts.calls:
            self._saw_call = True
            index = self._tool_index
            self._tool_index += 1
            tool_calls.append(
                {
                    "index": index,
                    "id": _tool_call_id(native, self._id, index, signature),
                    "type": "function",
                    "function": {"name": name, "arguments": to_json_bytes(args).decode("utf-8")},
                }
            )
        reason = candidate.get("finishReason") if candidate is not None else None
        finish: str | None = None
        if reason is not None:
            # A call seen in an earlier event still turns a later STOP into tool_calls.
            finish = _finish_reason(reason, self._saw_call)
        elif not chunk.candidates and chunk.blocked:
            finish = "content_filter"
        delta: dict[str, object] = {"content": parts.content or None}
        if tool_calls:
            delta["tool_calls"] = tool_calls
        if role:
            delta["role"] = "assistant"
        if parts.reasoning:
            delta["reasoning_content"] = parts.reasoning
        has_delta = role or bool(parts.content or parts.reasoning or tool_calls)
        # Gemini repeats its cumulative usage on every event; the client sees it once, on the
        # chunk that finishes (or a usage-only event).
        usage = None
        if chunk.counts is not None and (finish is not None or not has_delta):
            usage = chunk.counts.openai()
        choices: list[dict[str, object]] = []
        if has_delta or finish is not None:
            choice: dict[str, object] = {"index": 0, "delta": delta}
            if finish is not None:
                choice["finish_reason"] = finish
            choices.append(choice)
        elif usage is None:
            return None
        return {
            "id": self._id,
            "choices": choices,
            "created": self._created,
            "model": self._chunk_model or self._fallback_model,
            "service_tier": None,
            "system_fingerprint": None,
            "object": "chat.completion.chunk",
            "usage": usage,
        }


class GeminiPassthrough:
    """`Translation` for a Gemini client on the native routes: nothing is rewritten."""

    __slots__ = ("_clock",)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        try:
            obj = loads(body)
        except (ValueError, RecursionError) as e:
            raise _bad(f"not JSON ({e})") from e
        chunk = _Chunk(obj)
        return body, (chunk.counts.usage() if chunk.counts is not None else None), chunk.model

    def error_json(self, status: int, body: bytes) -> bytes:
        return body  # a Gemini client expects Google's error shape

    def stream(self) -> GeminiPassthroughStream:
        return GeminiPassthroughStream(self._clock)


class GeminiPassthroughStream(_Telemetry):
    """Relays a native Gemini stream byte for byte, reading its telemetry on the side."""

    __slots__ = ("_reader",)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._reader: SSEEventReader | None = SSEEventReader()

    def feed(self, data: bytes) -> bytes:
        reader = self._reader
        if reader is not None:
            try:
                events = reader.feed(data)
            except EventTooLarge:
                # Telemetry gives up; the client's stream must not.
                _log.debug("a Gemini stream event is too large to read usage from")
                self._reader = None
                return data
            for _name, event in events:
                self._parse(event)
        return data

    def finish(self) -> bytes:
        if self._reader is not None:
            for _name, event in self._reader.finish():
                self._parse(event)
        return b""


def count_tokens_total(body: bytes) -> int | None:
    """`totalTokens` of a `:countTokens` response (agentgateway records it as the request's
    token count, not as usage); None if the body is not a countTokens response."""
    try:
        obj = loads(body)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict:
        return None
    total = obj.get("totalTokens", 0)
    return total if type(total) is int and total >= 0 else None
