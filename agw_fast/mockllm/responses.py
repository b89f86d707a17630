"""What the mock upstream answers, as bytes: no sockets and no event loop here.

`MockApp.handle()` maps a parsed `Request` to a `Reply`. Complete replies are plain `bytes` (head
and body in one buffer, so the connection issues one write); replies that unfold over time describe
themselves (`StreamReply`, `BulkReply`) and the connection drives them; `RESET` asks the
connection to reset itself. Chat completions are cached by everything that changes their bytes, so
the hot path is a JSON decode and a dict lookup. The other APIs (Anthropic, Gemini, Responses,
embeddings; apis.py) are built per request: they are for functional tests, not benchmarks.

Every request is counted by path (`GET /mock/stats`), and failures can be injected per process
(`MockLLMConfig.fail_status`, `fail_first`, `reset`) or per request (`x-mock-status`,
`x-mock-retry-after`, `x-mock-reset` request headers); see `agw-fast mock-llm --help`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from . import apis, bedrock, guards
from .apis import ANTHROPIC, GEMINI, OPENAI, ApiError, Completion
from .parser import Request

__all__ = [
    "BLOCK_SIZE",
    "BulkReply",
    "MockApp",
    "MockLLMConfig",
    "RESET",
    "RecordedRequest",
    "Reply",
    "RequestLog",
    "ResetReply",
    "StreamReply",
    "api_error_reply",
    "error_reply",
    "pseudo_random_bytes",
    "random_block",
    "split_content",
]

BLOCK_SIZE = 1024 * 1024  # period of the /bytes and /chunked payload
_CACHE_LIMIT = 4096  # distinct (model, prompt size, ...) keys kept before the caches reset
_RECORD_LIMIT = 100
# Chat replies for keep-alive HTTP/1.1 are also cached by request body: at most this many bodies of
# at most this size (so the cache stays under a few MiB).
_BODY_CACHE_LIMIT = 1024
_BODY_KEY_LIMIT = 4096
_PATH_LIMIT = 1024  # distinct paths counted for /mock/stats; later ones count under "(other)"
# A Retry-After value as sent: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a fraction is
# allowed too, for tests that do not want to wait a whole second.
RETRY_AFTER = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


@dataclass(frozen=True, slots=True)
class MockLLMConfig:
    """Behaviour of the mock. `chunks` content deltas per stream (also the completion token count),
    `chunk_delay` seconds between SSE events, `usage` whether any usage is reported (OpenAI
    shapes; Anthropic and Gemini always report it), `record` whether the last requests are kept
    for `request_log()`, `gzip` whether chat replies are gzip-encoded for requests whose
    Accept-Encoding allows it (as the OpenAI API does).

    Injected failures (every path but /mock/...): `fail_status` answers every request with that
    status in the API's own error JSON, with a `retry-after: <retry_after>` header when set;
    `reset` resets the connection instead of answering; `fail_first` limits either to the first N
    requests (alone it means status 500)."""

    chunks: int = 5
    chunk_delay: float = 0.0
    model: str = "mock-gpt"
    usage: bool = True
    content: str = "Hello from the mock LLM."
    record: bool = False
    gzip: bool = False
    fail_status: int | None = None
    retry_after: str | None = None
    fail_first: int | None = None
    reset: bool = False

    def __post_init__(self) -> None:
        if self.chunks < 0:
            raise ValueError(f"chunks must be >= 0, got {self.chunks}")
        if not self.chunk_delay >= 0.0:  # also rejects NaN
            raise ValueError(f"chunk_delay must be >= 0, got {self.chunk_delay}")
        if self.fail_status is not None and not 400 <= self.fail_status <= 599:
            raise ValueError(f"fail status must be 400-599, got {self.fail_status}")
        if self.fail_first is not None and self.fail_first < 0:
            raise ValueError(f"fail first must be >= 0, got {self.fail_first}")
        if self.retry_after is not None:
            if not RETRY_AFTER.fullmatch(self.retry_after):
                raise ValueError(f"retry-after must be a header value, got {self.retry_after!r}")
            if self.fail_status is None:
                raise ValueError("retry-after is only sent with an injected status (fail status)")
        if self.fail_status is not None and self.reset:
            raise ValueError("choose one of fail status and reset")

    @property
    def injects_failures(self) -> bool:
        return self.fail_status is not None or self.reset or self.fail_first is not None


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request as received; header names keep wire casing and order (latin-1 decoded)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class RequestLog:
    """The last `limit` requests of one server, oldest first."""

    def __init__(self, limit: int = _RECORD_LIMIT) -> None:
        self._items: deque[RecordedRequest] = deque(maxlen=limit)

    def add(self, request: Request) -> None:
        headers = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers)
        self._items.append(
            RecordedRequest(
                request.method.decode("ascii"),
                request.target.decode("ascii"),
                headers,
                request.body,
            )
        )

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True, slots=True)
class StreamReply:
    """A response head plus events to write one by one, `delay` seconds apart. Each event is
    already framed (one HTTP chunk each); the last one carries the end of the body."""

    head: bytes
    events: tuple[bytes, ...]
    delay: float


@dataclass(frozen=True, slots=True)
class BulkReply:
    """A response head plus `size` bytes of `pseudo_random_bytes`, produced under backpressure."""

    head: bytes
    size: int
    chunked: bool


class ResetReply:
    """Reset the connection (TCP RST) instead of answering: a crashed or overloaded upstream."""

    __slots__ = ()


RESET: Final = ResetReply()

Reply = bytes | StreamReply | BulkReply | ResetReply


@functools.cache
def _random_block() -> bytes:
    # SHAKE-256 rather than `random`: the payload is then reproducible from any language.
    return hashlib.shake_256(b"agw-fast mock-llm").digest(BLOCK_SIZE)


def random_block() -> bytes:
    return _random_block()


def pseudo_random_bytes(n: int) -> bytes:
    """The first `n` bytes of what `/bytes/N` and `/chunked/N` send."""
    block = _random_block()
    whole, rest = divmod(n, BLOCK_SIZE)
    return block * whole + block[:rest]


def split_content(content: str, n: int) -> tuple[str, ...]:
    """`n` non-empty, near-equal pieces of `content` (repeated when shorter than `n`)."""
    if n <= 0:
        return ()
    if not content:
        return ("",) * n
    text = content * -(-n // len(content)) if len(content) < n else content
    size = len(text)
    return tuple(text[i * size // n : (i + 1) * size // n] for i in range(n))


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")


_STATUS_LINES = {s.value: _status_line(s.value) for s in HTTPStatus}
_JSON = b"content-type: application/json\r\n"
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _connection(request: Request) -> bytes:
    # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with an explicit keep-alive.
    if not request.keep_alive:
        return b"connection: close\r\n"
    return b"connection: keep-alive\r\n" if request.minor == 0 else b""


def _fixed(request: Request, status: int, fields: bytes, body: bytes) -> bytes:
    line = _STATUS_LINES.get(status) or _status_line(status)
    head = b"%s%scontent-length: %d\r\n%s\r\n" % (line, fields, len(body), _connection(request))
    return head if request.method == b"HEAD" else head + body


def error_reply(request: Request | None, status: int, message: str) -> bytes:
    """An OpenAI-style JSON error. Without a request (unframeable input) the connection closes."""
    body = _DUMPS(
        {"error": {"message": message, "type": "invalid_request_error", "param": None,
                   "code": None}}
    ).encode()
    if request is None:
        line = _STATUS_LINES.get(status) or _status_line(status)
        return b"%s%scontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
            line, _JSON, len(body), body)
    return _fixed(request, status, _JSON, body)


def api_error_reply(
    request: Request, family: str, status: int, message: str, fields: bytes = b""
) -> bytes:
    """`status` with the error JSON of the API family (apis.OPENAI, ANTHROPIC, GEMINI)."""
    return _fixed(request, status, _JSON + fields, apis.error_body(family, status, message))


def _header(request: Request, name: bytes) -> bytes | None:
    for field, value in request.headers:
        if field.lower() == name:
            return value
    return None


def _query(target: bytes, name: bytes) -> bytes | None:
    """The first value of query parameter `name` (undecoded), or None."""
    for part in target.partition(b"?")[2].split(b"&"):
        key, _, value = part.partition(b"=")
        if key == name:
            return value
    return None


def _accepts_gzip(request: Request) -> bool:
    """Whether Accept-Encoding lists gzip without `q=0` (RFC 9110 §12.5.3), roughly."""
    for name, value in request.headers:
        if name.lower() == b"accept-encoding":
            for member in value.lower().split(b","):
                coding, _, params = member.partition(b";")
                if coding.strip() in (b"gzip", b"*") and params.replace(b" ", b"") not in (
                    b"q=0", b"q=0.0", b"q=0.00", b"q=0.000"
                ):
                    return True
    return False


def _gzip_events(payloads: list[bytes]) -> list[bytes]:
    """One gzip stream over all events, flushed after each so that every event can be read as
    soon as it arrives (how a streaming server compresses SSE)."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [encoder.compress(p) + encoder.flush(zlib.Z_SYNC_FLUSH) for p in payloads]
    out[-1] += encoder.flush()
    return out


def _prompt_tokens(messages: object) -> int:
    """A deterministic stand-in for a tokenizer: UTF-8 bytes of all text content // 4 + 1."""
    size = 0
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                size += len(content.encode())
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if isinstance(text, str):
                        size += len(text.encode())
    return size // 4 + 1


class MockApp:
    """Routing and response building for one server (shared by all its connections)."""

    def __init__(self, config: MockLLMConfig) -> None:
        self.config = config
        self.log = RequestLog()
        self._record = config.record
        self._created = int(time.time())
        self._id = f"chatcmpl-mock{self._created:x}"
        self._pieces = split_content(config.content, config.chunks)
        self._text = "".join(self._pieces)
        self._completions: dict[tuple[str, int, bool], tuple[bytes, bytes]] = {}
        self._streams: dict[tuple[str, int, bool, bool, bool], tuple[bytes, ...]] = {}
        self._by_body: dict[bytes, Reply] = {}
        models = {"object": "list", "data": [{"id": config.model, "object": "model",
                                               "created": self._created,
                                               "owned_by": "agw-fast-mock"}]}
        self._models = _DUMPS(models).encode()
        self._completion = Completion(self._pieces)
        # /mock/stats: requests by path (bytes keys: no decode on the hot path) and how many
        # were answered with an injected failure.
        self._counts: dict[bytes, int] = {}
        self._injected = 0
        self._faults = config if config.injects_failures else None
        self._fail_left = config.fail_first

    def handle(self, request: Request) -> Reply:
        if self._record:
            self.log.add(request)
        target = request.target
        query = target.find(b"?")
        path = target if query < 0 else target[:query]
        try:
            self._counts[path] += 1
        except KeyError:
            self._count_new(path)
        if self._faults is not None or request.mock is not None:
            fault = self._fault(request, path)
            if fault is not None:
                return fault
        method = request.method
        if path.startswith(b"/echo"):
            # First, so that a rewritten LLM path can be inspected under /echo too.
            return self._echo(request)
        if path.endswith(b"/chat/completions"):
            if method != b"POST":
                return error_reply(request, 405, "use POST for chat completions")
            if request.keep_alive and request.minor == 1 and not self.config.gzip:
                # Benchmarks repeat one body: skip the JSON decode for a body seen before.
                known = self._by_body.get(request.body)
                if known is not None:
                    return known
            return self._chat(request)
        return self._route(request, path)

    def _route(self, request: Request, path: bytes) -> Reply:
        """Every path but OpenAI chat completions and /echo (matched by suffix, so that Azure's
        `/openai/deployments/{d}/...`, Foundry's `/api/projects/{p}/openai/v1/...` and
        `/anthropic/v1/...`, and Gemini's `/v1beta/openai/...` reach the same handlers)."""
        method = request.method
        get = method == b"GET" or method == b"HEAD"
        if path.endswith(b"/v1/messages"):
            return self._api(request, ANTHROPIC, self._anthropic)
        if path.endswith(b"/v1/messages/count_tokens"):
            return self._api(request, ANTHROPIC, self._anthropic_count)
        if guards.is_guard_path(path):
            return self._guard(request, path)
        if b"/publishers/anthropic/models/" in path and b":" in path:
            return self._vertex_anthropic(request, path)
        if b":" in path and b"/models/" in path:
            return self._gemini(request, path)
        if path.startswith(b"/model/") and path.endswith((b"/converse", b"/converse-stream")):
            return self._converse(request, path.endswith(b"-stream"))
        if path.endswith(b"/responses"):
            return self._api(request, OPENAI, self._responses)
        if path.endswith(b"/embeddings"):
            return self._api(request, OPENAI, self._embeddings)
        if path.endswith(b"/moderations"):
            return self._api(request, OPENAI, self._moderations)
        if path.endswith(b"/models") and get:
            if path.endswith(b"/v1beta/models"):
                body = _DUMPS(apis.gemini_models(self.config.model)).encode()
                return _fixed(request, 200, _JSON, body)
            return _fixed(request, 200, _JSON, self._models)
        for prefix, chunked in ((b"/bytes/", False), (b"/chunked/", True)):
            if path.startswith(prefix) and get:
                return self._bulk(request, path[len(prefix) :], chunked)
        if path.startswith(b"/status/"):
            return self._status(request, path[8:])
        if path.startswith(b"/mock/"):
            return self._control(request, path)
        target = request.target.decode("ascii")
        return error_reply(request, 404, f"no mock route for {target}")

    # -- request counting and injected failures -----------------------------------------------

    def _count_new(self, path: bytes) -> None:
        counts = self._counts
        if len(counts) >= _PATH_LIMIT:
            path = b"(other)"
        counts[path] = counts.get(path, 0) + 1

    def _fault(self, request: Request, path: bytes) -> Reply | None:
        """The injected failure for this request, if any: its `x-mock-*` headers first, then the
        process's (`--fail-status`, `--reset`, `--fail-first`)."""
        if path.startswith(b"/mock/"):
            return None
        status: int | None = None
        retry_after: str | None = None
        reset = False
        mock = request.mock
        if mock is not None:
            raw = mock.get(b"x-mock-status")
            if raw is not None:
                if len(raw) != 3 or not raw.isdigit() or not 400 <= int(raw) <= 599:
                    return error_reply(request, 400, "x-mock-status must be a status 400-599")
                status = int(raw)
            raw = mock.get(b"x-mock-retry-after")
            if raw is not None:
                retry_after = raw.decode("latin-1")
                if not RETRY_AFTER.fullmatch(retry_after):
                    return error_reply(request, 400, "x-mock-retry-after must be a header value")
            reset = mock.get(b"x-mock-reset", b"0").lower() in (b"1", b"true", b"yes")
        faults = self._faults
        if status is None and not reset and faults is not None:
            left = self._fail_left
            if left is not None:
                if left <= 0:
                    return None
                self._fail_left = left - 1
            reset = faults.reset
            status = None if reset else faults.fail_status or 500
            retry_after = retry_after or faults.retry_after
        if reset:
            self._injected += 1
            return RESET
        if status is None:
            return None
        self._injected += 1
        fields = b"retry-after: %s\r\n" % retry_after.encode() if retry_after else b""
        return api_error_reply(request, apis.api_family(path), status,
                               apis.injected_message(status), fields)

    def _control(self, request: Request, path: bytes) -> bytes:
        """GET /mock/stats, POST /mock/reset: the mock's own endpoints (never counted, never
        failed)."""
        counts = self._counts
        left = counts.get(path, 0) - 1
        if left > 0:
            counts[path] = left
        else:
            counts.pop(path, None)
        if path == b"/mock/stats" and request.method in (b"GET", b"HEAD"):
            by_path = {p.decode("latin-1"): n for p, n in counts.items()}
            doc = {"requests": sum(by_path.values()), "by_path": by_path,
                   "injected": self._injected}
            return _fixed(request, 200, _JSON, _DUMPS(doc).encode())
        if path == b"/mock/reset" and request.method == b"POST":
            counts.clear()
            self._injected = 0
            self._fail_left = self.config.fail_first
            return _fixed(request, 200, _JSON, b'{"requests":0,"by_path":{},"injected":0}')
        target = request.target.decode("ascii")
        return error_reply(request, 404, f"no mock route for {request.method.decode()} {target}")

    # -- chat --------------------------------------------------------------------------------

    def _chat(self, request: Request) -> Reply:
        try:
            payload = json.loads(request.body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both derive from it
            return error_reply(request, 400, f"request body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return error_reply(request, 400, "request body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            model = self.config.model
        prompt_tokens = _prompt_tokens(payload.get("messages"))
        if "tool_choice" in payload:
            tool = apis.openai_forced_tool(payload)
            if tool is not None:
                return self._tool_call(request, payload, model, prompt_tokens, tool)
        gzipped = self.config.gzip and _accepts_gzip(request)
        if payload.get("stream") is True:
            options = payload.get("stream_options")
            include_usage = (
                isinstance(options, dict) and options.get("include_usage") is True
            )
            reply = self._stream(request, model, prompt_tokens, include_usage, gzipped)
        else:
            cached = self._completions.get((model, prompt_tokens, gzipped))
            if cached is None:
                cached = self._build_completion(model, prompt_tokens, gzipped)
            if not (request.keep_alive and request.minor == 1):
                fields = _JSON + b"content-encoding: gzip\r\n" if gzipped else _JSON
                return _fixed(request, 200, fields, cached[1])
            reply = cached[0]
        # Only replies that do not depend on the connection's framing (nor, with `gzip`, on
        # the request's headers) are reusable by body.
        if (
            request.keep_alive
            and request.minor == 1
            and not self.config.gzip
            and len(request.body) <= _BODY_KEY_LIMIT
        ):
            if len(self._by_body) >= _BODY_CACHE_LIMIT:
                self._by_body.clear()
            self._by_body[request.body] = reply
        return reply

    def _tool_call(
        self, request: Request, payload: dict[str, Any], model: str, prompt_tokens: int,
        tool: apis.ForcedTool,
    ) -> Reply:
        """A chat completion whose request forces a tool call (not cached: tests only)."""
        usage = self._usage(prompt_tokens) if self.config.usage else None
        if payload.get("stream") is not True:
            doc = apis.openai_tool_call_completion(tool, model, self._created, usage)
            return _fixed(request, 200, _JSON, _DUMPS(doc).encode())
        options = payload.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            usage = None
        docs = apis.openai_tool_call_chunks(tool, model, self._created, self.config.chunks,
                                            usage)
        payloads = [b"data: %s\n\n" % _DUMPS(doc).encode() for doc in docs]
        payloads.append(b"data: [DONE]\n\n")
        return self._sse_reply(request, payloads)

    def _usage(self, prompt_tokens: int) -> dict[str, int]:
        completion = self.config.chunks
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def _build_completion(
        self, model: str, prompt_tokens: int, gzipped: bool
    ) -> tuple[bytes, bytes]:
        doc: dict[str, Any] = {
            "id": self._id, "object": "chat.completion", "created": self._created,
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": self._text,
                                     "refusal": None}}],
        }
        if self.config.usage:
            doc["usage"] = self._usage(prompt_tokens)
        doc["system_fingerprint"] = None
        body = _DUMPS(doc).encode()
        fields = _JSON
        if gzipped:
            body = gzip.compress(body, mtime=0)
            fields += b"content-encoding: gzip\r\n"
        wire = b"%s%scontent-length: %d\r\n\r\n%s" % (_STATUS_LINES[200], fields, len(body), body)
        if len(self._completions) >= _CACHE_LIMIT:
            self._completions.clear()
        self._completions[(model, prompt_tokens, gzipped)] = (wire, body)
        return wire, body

    def _stream(
        self, request: Request, model: str, prompt_tokens: int, include_usage: bool,
        gzipped: bool,
    ) -> Reply:
        # RFC 9112 §6.1: no chunked coding towards an HTTP/1.0 client; the close ends the body.
        chunked = request.minor == 1
        if not chunked:
            request.keep_alive = False
        head = b"%scontent-type: text/event-stream\r\ncache-control: no-cache\r\n%s%s%s\r\n" % (
            _STATUS_LINES[200],
            b"content-encoding: gzip\r\n" if gzipped else b"",
            b"transfer-encoding: chunked\r\n" if chunked else b"",
            _connection(request),
        )
        key = (model, prompt_tokens, include_usage, chunked, gzipped)
        events = self._streams.get(key)
        if events is None:
            events = self._build_events(key)
        return StreamReply(head, events, self.config.chunk_delay)

    def _build_events(self, key: tuple[str, int, bool, bool, bool]) -> tuple[bytes, ...]:
        model, prompt_tokens, include_usage, chunked, gzipped = key
        include_usage = include_usage and self.config.usage

        def chunk(delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            doc: dict[str, Any] = {
                "id": self._id, "object": "chat.completion.chunk", "created": self._created,
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}],
            }
            if include_usage:
                doc["usage"] = None  # as OpenAI does on every chunk before the usage one
            return doc

        docs = [chunk({"role": "assistant", "content": ""}, None)]
        docs += [chunk({"content": piece}, None) for piece in self._pieces]
        docs.append(chunk({}, "stop"))
        if include_usage:
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = self._usage(prompt_tokens)
            docs.append(final)
        payloads = [b"data: %s\n\n" % _DUMPS(doc).encode() for doc in docs]
        payloads.append(b"data: [DONE]\n\n")
        if gzipped:
            payloads = _gzip_events(payloads)
        if chunked:
            payloads = [b"%x\r\n%s\r\n" % (len(p), p) for p in payloads]
            payloads[-1] += b"0\r\n\r\n"
        events = tuple(payloads)
        if len(self._streams) >= _CACHE_LIMIT:
            self._streams.clear()
        self._streams[key] = events
        return events

    # -- the other APIs (apis.py builds the documents) ----------------------------------------

    def _api(
        self,
        request: Request,
        family: str,
        handler: Callable[[Request, dict[str, Any]], Reply],
    ) -> Reply:
        """POST, a JSON object body, then `handler`; refusals in the API family's error JSON."""
        if request.method != b"POST":
            return api_error_reply(request, family, 405, "use POST")
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            return api_error_reply(request, family, 400, f"request body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return api_error_reply(request, family, 400, "request body must be a JSON object")
        try:
            return handler(request, payload)
        except ApiError as exc:
            return api_error_reply(request, family, exc.status, exc.message)

    def _model(self, payload: dict[str, Any]) -> str:
        model = payload.get("model")
        return model if isinstance(model, str) and model else self.config.model

    def _sse_reply(
        self,
        request: Request,
        payloads: list[bytes],
        fields: bytes = b"",
        content_type: bytes = b"text/event-stream",
    ) -> Reply:
        # RFC 9112 §6.1: no chunked coding towards an HTTP/1.0 client; the close ends the body.
        chunked = request.minor == 1
        if not chunked:
            request.keep_alive = False
        head = b"%scontent-type: %s\r\ncache-control: no-cache\r\n%s%s%s\r\n" % (
            _STATUS_LINES[200],
            content_type,
            fields,
            b"transfer-encoding: chunked\r\n" if chunked else b"",
            _connection(request),
        )
        if request.method == b"HEAD":
            return head
        if chunked:
            payloads = [b"%x\r\n%s\r\n" % (len(p), p) for p in payloads]
            payloads[-1] += b"0\r\n\r\n"
        return StreamReply(head, tuple(payloads), self.config.chunk_delay)

    def _converse(self, request: Request, stream: bool) -> Reply:
        """Bedrock's Converse API (the model is in the path; the mock answers any)."""
        try:
            bedrock.check_auth(_header(request, b"authorization"))
            if request.method != b"POST":
                raise ApiError(405, "use POST")
            try:
                payload = json.loads(request.body)
            except ValueError as exc:
                raise ApiError(400, f"request body is not valid JSON: {exc}") from None
            if not isinstance(payload, dict):
                raise ApiError(400, "request body must be a JSON object")
            if stream:
                frames = bedrock.converse_frames(payload, self._completion)
                return self._sse_reply(
                    request, frames, content_type=b"application/vnd.amazon.eventstream"
                )
            doc = bedrock.converse_response(payload, self._completion)
        except ApiError as exc:
            body, fields = bedrock.error_body(exc.status, exc.message)
            return _fixed(request, exc.status, _JSON + fields, body)
        return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

    def _guard(self, request: Request, path: bytes) -> Reply:
        """The cloud guard services (guards.py): Bedrock Guardrails wants a SigV4 signature
        or a Bedrock API key, the others a bearer token (Azure: or a resource key)."""
        bedrock_api = path.endswith(b"/apply")

        def handle(request: Request, payload: dict[str, Any]) -> Reply:
            authorization = _header(request, b"authorization")
            if bedrock_api:
                bedrock.check_auth(authorization)
                doc = guards.bedrock_apply_guardrail(payload)
            elif b"/contentsafety/" in path:
                if not (authorization or b"").startswith(b"Bearer ") and _header(
                    request, b"ocp-apim-subscription-key"
                ) is None:
                    raise ApiError(401, "Access denied due to missing subscription key or token")
                if path.endswith(b":analyze"):
                    doc = guards.azure_analyze(payload)
                else:
                    doc = guards.azure_detect_jailbreak(payload)
            else:
                if not (authorization or b"").startswith(b"Bearer "):
                    raise ApiError(401, "Request is missing required authentication credential")
                doc = guards.model_armor_sanitize(path, payload)
            return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

        if bedrock_api:
            try:
                bedrock.check_auth(_header(request, b"authorization"))
            except ApiError as exc:
                body, fields = bedrock.error_body(exc.status, exc.message)
                return _fixed(request, exc.status, _JSON + fields, body)
        return self._api(request, GEMINI if b"/templates/" in path else OPENAI, handle)

    def _anthropic_auth(self, request: Request) -> None:
        # As the real API: a key is required (any value is accepted here), then the version.
        # The key travels as x-api-key or as a bearer token (what the `anthropic` SDK sends
        # since 2.x; also Foundry's Entra ID tokens).
        if _header(request, b"x-api-key") is None and _header(request, b"authorization") is None:
            raise ApiError(401, "x-api-key header is required")
        if _header(request, b"anthropic-version") is None:
            raise ApiError(400, "anthropic-version: header is required")

    def _anthropic(self, request: Request, payload: dict[str, Any]) -> Reply:
        self._anthropic_auth(request)
        if not isinstance(payload.get("model"), str):
            raise ApiError(400, "model: Field required")
        model = self._model(payload)
        fields = b"request-id: %s\r\n" % apis.request_id().encode()
        if payload.get("stream") is True:
            events = apis.anthropic_events(payload, model, self._completion)
            return self._sse_reply(request, events, fields)
        doc = apis.anthropic_message(payload, model, self._completion)
        return _fixed(request, 200, _JSON + fields, _DUMPS(doc).encode())

    def _anthropic_count(self, request: Request, payload: dict[str, Any]) -> Reply:
        self._anthropic_auth(request)
        doc = apis.anthropic_count_tokens(payload)
        return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

    def _vertex_anthropic(self, request: Request, path: bytes) -> Reply:
        """Vertex AI's Anthropic models: `.../publishers/anthropic/models/{model}:rawPredict`
        (`:streamRawPredict`; `count-tokens:rawPredict` counts). As Vertex: an OAuth bearer
        token is required (401 without), the version is `anthropic_version` in the body, the
        model is the path's."""
        start = path.rfind(b"/models/") + len(b"/models/")
        colon = path.find(b":", start)
        model = path[start:colon].decode("latin-1")
        action = path[colon + 1 :]
        if action not in (b"rawPredict", b"streamRawPredict"):
            target = request.target.decode("ascii")
            return api_error_reply(request, GEMINI, 404, f"no mock route for {target}")
        auth = _header(request, b"authorization")
        if auth is None or not auth.lower().startswith(b"bearer "):
            return api_error_reply(
                request, GEMINI, 401,
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.")

        def handle(request: Request, payload: dict[str, Any]) -> Reply:
            if payload.get("anthropic_version") != "vertex-2023-10-16":
                raise ApiError(400, "anthropic_version: Input should be 'vertex-2023-10-16'")
            if model == "count-tokens":
                doc = apis.anthropic_count_tokens(payload)
                return _fixed(request, 200, _JSON, _DUMPS(doc).encode())
            if action == b"streamRawPredict" or payload.get("stream") is True:
                events = apis.anthropic_events(payload, model, self._completion)
                return self._sse_reply(request, events)
            doc = apis.anthropic_message(payload, model, self._completion)
            return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

        return self._api(request, ANTHROPIC, handle)

    def _gemini(self, request: Request, path: bytes) -> Reply:
        """`.../models/{model}:{action}`: Gemini's API (`/v1beta/...`) and Vertex AI's
        (`/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{action}`)."""
        start = path.rfind(b"/models/") + len(b"/models/")
        colon = path.find(b":", start)
        model = path[start:colon].decode("latin-1") or self.config.model
        action = path[colon + 1 :]
        target = request.target
        if (
            _header(request, b"x-goog-api-key") is None
            and _header(request, b"authorization") is None
            and _query(target, b"key") is None
        ):
            return api_error_reply(
                request, GEMINI, 403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.")
        completion = self._completion

        def generate(request: Request, payload: dict[str, Any]) -> Reply:
            doc = apis.gemini_response(payload, model, completion)
            return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

        def stream(request: Request, payload: dict[str, Any]) -> Reply:
            chunks = apis.gemini_chunks(payload, model, completion)
            if _query(target, b"alt") == b"sse":
                return self._sse_reply(request, apis.gemini_sse(chunks))
            # Without alt=sse the real API streams one JSON array; here it comes in one piece.
            return _fixed(request, 200, _JSON, _DUMPS(chunks).encode())

        def count(request: Request, payload: dict[str, Any]) -> Reply:
            doc = apis.gemini_count_tokens(payload)
            return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

        handlers = {b"generateContent": generate, b"streamGenerateContent": stream,
                    b"countTokens": count}
        handler = handlers.get(action)
        if handler is None:
            return api_error_reply(request, GEMINI, 404,
                                   f"no mock route for {target.decode('ascii')}")
        return self._api(request, GEMINI, handler)

    def _responses(self, request: Request, payload: dict[str, Any]) -> Reply:
        model = self._model(payload)
        if payload.get("stream") is True:
            return self._sse_reply(
                request, apis.responses_events(payload, model, self._completion))
        doc = apis.responses_object(payload, model, self._completion)
        return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

    def _embeddings(self, request: Request, payload: dict[str, Any]) -> Reply:
        doc = apis.embeddings(payload, self._model(payload))
        return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

    def _moderations(self, request: Request, payload: dict[str, Any]) -> Reply:
        doc = apis.moderations(payload)
        return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

    # -- test endpoints ----------------------------------------------------------------------

    def _echo(self, request: Request) -> bytes:
        body = request.body
        doc = {
            "method": request.method.decode("ascii"),
            "target": request.target.decode("ascii"),
            "http_version": f"HTTP/1.{request.minor}",
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        return _fixed(request, 200, _JSON, _DUMPS(doc).encode())

    def _bulk(self, request: Request, arg: bytes, chunked: bool) -> Reply:
        if not arg.isdigit() or len(arg) > 15:
            return error_reply(request, 404, "expected a byte count")
        size = int(arg)
        if chunked and request.minor == 0:
            chunked = False
            request.keep_alive = False
        framing = b"transfer-encoding: chunked\r\n" if chunked else b"content-length: %d\r\n" % size
        head = b"%scontent-type: application/octet-stream\r\n%s%s\r\n" % (
            _STATUS_LINES[200], framing, _connection(request))
        if request.method == b"HEAD":
            return head
        return BulkReply(head, size, chunked)

    def _status(self, request: Request, arg: bytes) -> bytes:
        if len(arg) != 3 or not arg.isdigit() or not 200 <= int(arg) <= 599:
            return error_reply(request, 400, "expected a final status code 200-599")
        status = int(arg)
        if status in (204, 304):
            # RFC 9110 §15.3.5, §15.4.5: these carry no content (and no Content-Length here).
            line = _STATUS_LINES.get(status) or _status_line(status)
            return b"%s%s\r\n" % (line, _connection(request))
        return _fixed(request, status, _JSON, b'{"status":%d}' % status)
