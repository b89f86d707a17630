"""The response side of a translated LLM call: the provider's bytes become the client's API.

A streamed (SSE) 2xx response is translated event by event and sent chunked as it arrives
(or close-delimited to an HTTP/1.0 client); anything else (a JSON body, an error) is read
whole, up to `JSON_LIMIT`, translated, and sent with its length. The provider's framing and
length fields do not apply to the translated body and are dropped; the rest of its head is
relayed as usual.

A provider read often holds many events (a busy stream's events queue up in the socket), and
the payload of each chunk reaches the relay on its own: `add` translates without writing, and
`take` hands over what one read produced as one chunk, so the client gets one write per read,
as an untranslated stream does, not one per event (a send call each).
"""

from __future__ import annotations

from agw_fast.llm.translate import StreamTranslator, Translation, TranslationError
from agw_fast.llm.translate.events import EventTooLarge
from agw_fast.llm.usage import Usage

__all__ = ["JSON_LIMIT", "TranslatedRelay"]

JSON_LIMIT = 8 * 1024 * 1024
# Provider fields the translated body replaces.
_STREAM_TYPES = (b"text/event-stream", b"application/vnd.amazon.eventstream")
_REPLACED = (b"content-length:", b"transfer-encoding:", b"content-type:", b"content-encoding:")


class TranslatedRelay:
    """One translated response. Sans-IO: `feed` and `finish` return the bytes to write."""

    __slots__ = (
        "translation", "status", "status_line", "lines", "streaming", "chunked", "dechunked",
        "stream", "parts", "size", "usage", "model", "first_token_at", "error", "held",
    )  # fmt: skip

    def __init__(
        self,
        translation: Translation,
        status: int,
        status_line: bytes,
        content_type: bytes,
        lines: list[bytes],
    ) -> None:
        self.translation = translation
        self.status = status
        self.status_line = status_line
        self.lines = [line for line in lines if not line.startswith(_REPLACED)]
        # SSE, or the AWS event stream Bedrock's converse-stream answers with.
        self.streaming = 200 <= status < 300 and content_type.startswith(_STREAM_TYPES)
        self.chunked = False  # set by the exchange: frame what `feed` returns as chunks
        self.dechunked = False  # set by the exchange: the provider's payload arrives de-chunked
        self.stream: StreamTranslator | None = translation.stream() if self.streaming else None
        self.parts: list[bytes] = []
        self.size = 0
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None
        self.error: str | None = None  # why the response could not be translated
        self.held: list[bytes] = []  # translated by `add`, not yet taken (unframed)

    def stream_head(self, extra: bytes, close: bool) -> bytes:
        framing = b"transfer-encoding: chunked\r\n" if self.chunked else b""
        return b"".join(
            (
                self.status_line,
                b"\r\n",
                b"".join(line + b"\r\n" for line in self.lines),
                b"content-type: text/event-stream\r\n",
                framing,
                extra,
                b"connection: close\r\n\r\n" if close else b"\r\n",
            )
        )

    def feed(self, data: bytes) -> bytes:
        """Provider payload in; for a stream, the client bytes (framed) to write now."""
        return self._frame(self._translate(data))

    def add(self, data: bytes) -> None:
        """Provider payload in, as `feed`, but a stream's client bytes are held for `take`."""
        out = self._translate(data)
        if out:
            self.held.append(out)

    def take(self) -> bytes:
        """What `add` translated since the last `take`, as one chunk (b"" if nothing)."""
        held = self.held
        if not held:
            return b""
        out = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        return self._frame(out)

    def finish(self) -> bytes:
        """The provider's stream ended: anything still held, the translated tail, and the
        last chunk; with `error` set, only what was translated before it (no last chunk: the
        caller cuts the connection so the client sees the body is incomplete)."""
        stream = self.stream
        assert stream is not None
        out = self.take()
        tail = b""
        if self.error is None:
            try:
                tail = stream.finish()
            except (TranslationError, EventTooLarge, ValueError) as error:
                self.error = f"failed to translate the LLM response: {error}"
        self._observe(stream)
        if self.error is not None:
            return out
        return out + self._frame(tail) + (b"0\r\n\r\n" if self.chunked else b"")

    def body(self) -> bytes:
        """A whole (non-stream) response translated; raises TranslationError."""
        if self.size > JSON_LIMIT:
            raise TranslationError(f"response over {JSON_LIMIT} bytes")
        raw = b"".join(self.parts)
        if self.status >= 400:
            return self.translation.error_json(self.status, raw)
        try:
            out, usage, model = self.translation.response_json(raw)
        except ValueError as error:  # a JSON parse error outside the translator's own checks
            raise TranslationError(str(error)) from None
        self.usage, self.model = usage, model
        return out

    def _translate(self, data: bytes) -> bytes:
        stream = self.stream
        if stream is None:
            self.size += len(data)
            if self.size <= JSON_LIMIT:
                self.parts.append(data)
            return b""
        if self.error is not None:
            return b""
        try:
            out = stream.feed(data)
        except (TranslationError, EventTooLarge, ValueError) as error:
            self.error = f"failed to translate the LLM response: {error}"
            return b""
        self._observe(stream)
        return out

    def _observe(self, stream: StreamTranslator) -> None:
        self.usage = stream.usage
        self.model = stream.model
        self.first_token_at = stream.first_token_at

    def _frame(self, out: bytes) -> bytes:
        if not out or not self.chunked:
            return out
        return b"%x\r\n" % len(out) + out + b"\r\n"
