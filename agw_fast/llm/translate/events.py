"""Server-sent events split out of a byte stream, for the stream translators.

Only `event` and `data` matter to LLM APIs; `id`, `retry` and comments are dropped. Lines end
in LF, CRLF or CR (the SSE grammar); an event ends at a blank line. Sans-IO and bounded: an
event larger than `max_event` bytes raises `EventTooLarge` (the stream is then cut: a
translator cannot pass on an event it could not read).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_EVENT", "EventTooLarge", "SSEEventReader"]

DEFAULT_MAX_EVENT = 4 * 1024 * 1024


class EventTooLarge(Exception):
    pass


class SSEEventReader:
    """`feed(bytes)` -> the events it completed, as (event name or None, data) pairs.

    Data lines of one event are joined with LF, as the SSE spec does."""

    __slots__ = ("_buffer", "_event", "_data", "_size", "_max", "_cr_pending")

    def __init__(self, max_event: int = DEFAULT_MAX_EVENT) -> None:
        self._buffer = b""
        self._event: bytes | None = None
        self._data: list[bytes] = []
        self._size = 0  # bytes of data values in the event being read
        self._max = max_event
        self._cr_pending = False

    def feed(self, chunk: bytes) -> list[tuple[bytes | None, bytes]]:
        if self._cr_pending and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr_pending = False
        if b"\r" in chunk:
            self._cr_pending = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[tuple[bytes | None, bytes]] = []
        pos = 0
        find = buffer.find
        while True:
            nl = find(b"\n", pos)
            if nl == -1:
                break
            if nl == pos:
                data = self._data
                if data:
                    events.append((self._event, data[0] if len(data) == 1 else b"\n".join(data)))
                    self._data = []
                    self._size = 0
                self._event = None
            elif buffer.startswith(b"data: ", pos):
                # The two lines every LLM event has, without the general `_line`.
                self._data.append(buffer[pos + 6 : nl])
                self._size += nl - pos - 6
                if self._size > self._max:
                    raise EventTooLarge(f"an event is over {self._max} bytes")
            elif buffer.startswith(b"event: ", pos):
                self._event = buffer[pos + 7 : nl]
            else:
                self._line(buffer[pos:nl])
            pos = nl + 1
        self._buffer = buffer[pos:]
        if len(self._buffer) > self._max:
            raise EventTooLarge(f"an event line is over {self._max} bytes")
        return events

    def finish(self) -> list[tuple[bytes | None, bytes]]:
        """End of stream: a last event without its blank line still counts (lenient, as the
        usage observer is: providers have been seen to end that way)."""
        if self._buffer:
            self._line(self._buffer)
            self._buffer = b""
        events: list[tuple[bytes | None, bytes]] = []
        if self._data:
            events.append((self._event, b"\n".join(self._data)))
        self._event = None
        self._data = []
        self._size = 0
        return events

    def _line(self, line: bytes) -> None:
        colon = line.find(b":")
        if colon == 0:
            return  # a comment
        if colon == -1:
            name, value = line, b""
        else:
            name, value = line[:colon], line[colon + 1 :]
            if value.startswith(b" "):
                value = value[1:]
        if name == b"data":
            self._add_data(value)
        elif name == b"event":
            self._event = value

    def _add_data(self, value: bytes) -> None:
        self._data.append(value)
        self._size += len(value)
        if self._size > self._max:
            raise EventTooLarge(f"an event is over {self._max} bytes")
