"""What the mock upstream answers, as bytes: no sockets and no event loop here.

`MockApp.handle()` maps a parsed `Request` to a `Reply`. Complete replies are plain `bytes` (head
and body in one buffer, so the connection issues one write); replies that unfold over time describe
themselves (`StreamReply`, `BulkReply`) and the connection drives them. Chat completions are
cached by everything that changes their bytes, so the hot path is a JSON decode and a dict lookup.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import time
import zlib
from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from .parser import Request

__all__ = [
    "BLOCK_SIZE",
    "BulkReply",
    "MockApp",
    "MockLLMConfig",
    "RecordedRequest",
    "Reply",
    "RequestLog",
    "StreamReply",
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


@dataclass(frozen=True, slots=True)
class MockLLMConfig:
    """Behaviour of the mock. `chunks` content deltas per stream (also the completion token count),
    `chunk_delay` seconds between SSE events, `usage` whether any usage is reported, `record`
    whether the last requests are kept for `request_log()`, `gzip` whether chat replies are
    gzip-encoded for requests whose Accept-Encoding allows it (as the OpenAI API does)."""

    chunks: int = 5
    chunk_delay: float = 0.0
    model: str = "mock-gpt"
    usage: bool = True
    content: str = "Hello from the mock LLM."
    record: bool = False
    gzip: bool = False

    def __post_init__(self) -> None:
        if self.chunks < 0:
            raise ValueError(f"chunks must be >= 0, got {self.chunks}")
        if not self.chunk_delay >= 0.0:  # also rejects NaN
            raise ValueError(f"chunk_delay must be >= 0, got {self.chunk_delay}")


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


Reply = bytes | StreamReply | BulkReply


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

    def handle(self, request: Request) -> Reply:
        if self._record:
            self.log.add(request)
        target = request.target
        query = target.find(b"?")
        path = target if query < 0 else target[:query]
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
        get = method == b"GET" or method == b"HEAD"
        if path.endswith(b"/v1/models") and get:
            return _fixed(request, 200, _JSON, self._models)
        for prefix, chunked in ((b"/bytes/", False), (b"/chunked/", True)):
            if path.startswith(prefix) and get:
                return self._bulk(request, path[len(prefix) :], chunked)
        if path.startswith(b"/status/"):
            return self._status(request, path[8:])
        return error_reply(request, 404, f"no mock route for {target.decode('ascii')}")

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
