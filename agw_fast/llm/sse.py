"""Incremental observer of an OpenAI `text/event-stream` response: TTFT, model and usage.

The proxy relays the upstream bytes unchanged and hands each read to `SSEUsageObserver.feed`
as a side tap. Line and event rules follow the WHATWG HTML "event stream interpretation"
(§9.2.6): lines end in CRLF, LF or CR, a blank line dispatches the event, `data` lines are
joined with LF, lines starting with `:` are comments, and other fields are irrelevant here.

Cost model: one `bytes.find` per line; JSON is parsed only for the first data event (TTFT and
model), for later events only while no model is known and the event mentions `"model"`, and
for events whose `"usage"` key holds an object. OpenAI sends `"usage":null` on every chunk
when `include_usage` is on, so the cheap pre-check looks past the colon.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agw_fast.llm.jsonbytes import loads as _loads
from agw_fast.llm.usage import Usage, usage_from_mapping

__all__ = ["DEFAULT_MAX_EVENT_SIZE", "SSEUsageObserver"]

_log = logging.getLogger(__name__)

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024  # an event's data beyond this is skipped, not buffered

_LF = 0x0A
_CR = 0x0D
_COLON = 0x3A
_SPACE = 0x20
_OPEN_BRACE = 0x7B
_JSON_WS = b" \t\r\n"
_USAGE_KEY = b'"usage"'
_MODEL_KEY = b'"model"'


def _parse_object(data: bytes) -> dict[str, object] | None:
    try:
        obj = _loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if type(obj) is dict else None


def _has_usage_object(data: bytes) -> bool:
    """True if some `"usage"` key in `data` is followed by `:` and an object.

    Cheaper than parsing: a literal `"` in JSON text is always a string delimiter, so a key
    named usage can only appear as `"usage"` followed by optional whitespace and a colon.
    Matches inside strings at worst cost a parse, never a missed usage object.
    """
    find = data.find
    i = find(_USAGE_KEY)
    while i != -1:
        j = i + 7
        # Compact JSON, as OpenAI sends it, is settled without a byte loop.
        if data.startswith(b":{", j):
            return True
        if not data.startswith(b":null", j):
            n = len(data)
            while j < n and data[j] in _JSON_WS:
                j += 1
            if j < n and data[j] == _COLON:
                j += 1
                while j < n and data[j] in _JSON_WS:
                    j += 1
                if j < n and data[j] == _OPEN_BRACE:
                    return True
        i = find(_USAGE_KEY, j)
    return False


def _no_usage_object(chunk: bytes) -> bool:
    """True if every `"usage"` in the raw SSE bytes `chunk` is followed by `:null`, as
    OpenAI sends it in each chunk of a stream that asked for usage (so that common event
    takes the fast path). Anything else, spacing or a value split over `data:` lines
    included, says False and the events are parsed."""
    find = chunk.find
    i = find(_USAGE_KEY)
    while i != -1:
        if not chunk.startswith(b":null", i + 7):
            return False
        i = find(_USAGE_KEY, i + 12)
    return True


class SSEUsageObserver:
    """Watches an SSE body fed in arbitrary splits and keeps what telemetry needs.

    `feed` takes the *payload* bytes of the response: the caller has already removed HTTP/1.1
    chunked framing (RFC 9112 §7.1) and any content coding. It never raises; an unexpected
    internal error disables the observer for the rest of the stream.

    Results, readable at any time:
      - `first_data_at`: `clock()` when the first event whose data is a JSON object completed
        (time to first token = `first_data_at - request_start`);
      - `model`: the first non-empty string `model` seen;
      - `usage`: from the last event with a `usage` object;
      - `done`: whether `data: [DONE]` was seen.
    """

    __slots__ = (
        "_clock",
        "_cr_pending",
        "_discarding_line",
        "_event_size",
        "_failed",
        "_lines",
        "_max_event",
        "_skip_event",
        "_tail",
        "done",
        "first_data_at",
        "model",
        "usage",
    )

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        self._clock = clock
        self._max_event = max(max_event_size, 1)
        self._tail = bytearray()  # an incomplete line carried to the next feed
        self._cr_pending = False  # last chunk ended in CR: a leading LF next is part of CRLF
        self._discarding_line = False  # inside an over-long line: drop up to the next LF
        self._lines: list[bytes] = []  # data values of the event being read
        self._event_size = 0
        self._skip_event = False  # the current event went over the size bound
        self._failed = False
        self.first_data_at: float | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.done = False

    def ttft(self, start: float) -> float | None:
        """Seconds from `start` (same clock) to the first data event, if there was one."""
        first = self.first_data_at
        return None if first is None else first - start

    def feed(self, chunk: bytes) -> None:
        if not chunk or self._failed:
            return
        if (
            self.model is not None
            and self.first_data_at is not None
            and not self._tail
            and not self._lines
            and not self._skip_event
            and not self._cr_pending
            and not self._discarding_line
            and chunk.endswith(b"\n\n")
            and b"[DONE]" not in chunk
            and _no_usage_object(chunk)
        ):
            # Whole events, at an event boundary, with nothing left to learn from them
            # (model and first token known, no usage object, no end marker): parsing them
            # would change nothing, so the common mid-stream event costs a few byte scans.
            return
        try:
            self._feed(chunk)
        except Exception:
            # A side tap on a relayed stream: a bug here may cost telemetry, never the response.
            self._failed = True
            _log.debug("SSE usage observer disabled after an internal error", exc_info=True)

    def close(self) -> None:
        """End of stream. Leniently completes a final event that lacks its blank line.

        The spec discards such an event; usage from a sloppy upstream is worth keeping, and
        observing it changes nothing the client receives.
        """
        if self._failed:
            return
        try:
            if self._tail and not self._discarding_line:
                line = bytes(self._tail)
                self._tail.clear()
                self._line(line, 0, len(line))
            self._dispatch()
        except Exception:
            self._failed = True
            _log.debug("SSE usage observer failed at close", exc_info=True)

    def _feed(self, chunk: bytes) -> None:
        if self._cr_pending:
            self._cr_pending = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return
        if b"\r" in chunk:
            # Normalise to LF once per chunk. A CR at the very end may be the first half of a
            # CRLF split across reads, so the next chunk's leading LF is dropped.
            self._cr_pending = chunk[-1] == _CR
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._discarding_line:
            nl = chunk.find(b"\n")
            if nl == -1:
                return
            self._discarding_line = False
            chunk = chunk[nl + 1 :]
        pos = 0
        tail = self._tail
        if tail:
            nl = chunk.find(b"\n")
            if nl == -1:
                tail += chunk
                if len(tail) > self._max_event:
                    self._drop_line()
                return
            tail += memoryview(chunk)[:nl]
            line = bytes(tail)
            tail.clear()
            self._line(line, 0, len(line))
            pos = nl + 1
        find = chunk.find
        lines = self._lines
        while True:
            nl = find(b"\n", pos)
            if nl == -1:
                break
            if nl == pos:
                self._dispatch()
            elif chunk.startswith(b"data:", pos) and not self._skip_event:
                # The common `data: <json>` line, inlined; `_line` has the general rules.
                start = pos + 5
                if start < nl and chunk[start] == _SPACE:
                    start += 1
                size = self._event_size + nl - start + 1
                if size > self._max_event:
                    self._skip_event = True
                    lines.clear()
                else:
                    self._event_size = size
                    lines.append(chunk[start:nl])
            elif chunk.startswith(b"data", pos):
                self._line(chunk, pos, nl)
            # Comments (`:`) and the event/id/retry fields carry nothing we record.
            pos = nl + 1
        rest = len(chunk) - pos
        if rest:
            if rest > self._max_event:
                self._drop_line()
            else:
                tail += memoryview(chunk)[pos:]

    def _drop_line(self) -> None:
        # A line longer than the bound cannot belong to an event we would keep.
        self._tail.clear()
        self._discarding_line = True
        self._skip_event = True
        self._lines.clear()

    def _line(self, buf: bytes, start: int, end: int) -> None:
        """One complete, non-empty line `buf[start:end]`; only `data` fields matter."""
        if not buf.startswith(b"data", start):
            return
        p = start + 4
        if p == end:
            value = b""  # a bare `data` line is the field with an empty value
        elif buf[p] == _COLON:
            p += 1
            if p < end and buf[p] == _SPACE:
                p += 1
            value = buf[p:end]
        else:
            return  # some other field whose name starts with "data"
        if self._skip_event:
            return
        size = self._event_size + len(value) + 1
        if size > self._max_event:
            self._skip_event = True
            self._lines.clear()
            return
        self._event_size = size
        self._lines.append(value)

    def _dispatch(self) -> None:
        lines = self._lines
        self._event_size = 0
        if self._skip_event:
            self._skip_event = False
            lines.clear()
            return
        if not lines:
            return
        data = lines[0] if len(lines) == 1 else b"\n".join(lines)
        lines.clear()
        if data:
            self._on_data(data)

    def _on_data(self, data: bytes) -> None:
        if self.first_data_at is None:
            obj = _parse_object(data)
            if obj is None:
                if len(data) < 32 and data.strip() == b"[DONE]":
                    self.done = True
                return
            self.first_data_at = self._clock()
            self._inspect(obj)
            return
        if (self.model is None and _MODEL_KEY in data) or _has_usage_object(data):
            obj = _parse_object(data)
            if obj is not None:
                self._inspect(obj)
        elif len(data) < 32 and data.strip() == b"[DONE]":
            self.done = True

    def _inspect(self, obj: dict[str, object]) -> None:
        if self.model is None:
            model = obj.get("model")
            if type(model) is str and model:
                self.model = model
        usage = obj.get("usage")
        if type(usage) is dict:
            self.usage = usage_from_mapping(usage)
