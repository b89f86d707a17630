"""The AWS event stream (`application/vnd.amazon.eventstream`): binary frames, decoded.

Bedrock's `converse-stream` answers with this framing, not SSE. One message is

    prelude:  total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (u32 BE)
    headers:  repeated  name length (u8) | name (UTF-8) | value type (u8) | value
    payload:  total - headers - 16 bytes
    trailer:  message CRC32 (u32 BE) over everything before it

(AWS "Event stream encoding", as implemented by aws-smithy-eventstream, which agentgateway
uses). Both CRCs are checked; a bad one, an impossible length or a frame over the limit raises
`EventStreamError` and the stream cannot go on (there is no way to resynchronise). Sans-IO:
`feed` takes bytes in any split and returns the messages completed so far.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_FRAME",
    "EventStreamDecoder",
    "EventStreamError",
    "EventStreamMessage",
    "encode_message",
]

# aws-smithy-eventstream's limits: 16 MiB per message, 128 KiB of headers.
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
_MAX_HEADERS = 128 * 1024
_PRELUDE = 12
_MIN_FRAME = _PRELUDE + 4
_U32 = struct.Struct(">I")
_PRELUDE_FIELDS = struct.Struct(">III")
# Fixed-size header value types: type code -> size (0/1 are the booleans true/false).
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class EventStreamError(ValueError):
    """The bytes are not a valid AWS event stream."""


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    # String headers (`:event-type`, `:message-type`, ...) as str; other types as raw bytes,
    # booleans as bool: Bedrock only sends strings.
    headers: dict[str, str | bytes | bool]
    payload: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        return value if type(value) is str else None


class EventStreamDecoder:
    """`feed(bytes)` -> the messages it completed."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buffer = b""
        self._max = max_frame

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (non-zero at the end: a truncated stream)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventStreamMessage]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[EventStreamMessage] = []
        pos = 0
        size = len(buffer)
        while size - pos >= _PRELUDE:
            total, headers_length, prelude_crc = _PRELUDE_FIELDS.unpack_from(buffer, pos)
            # The length is only trusted once its own CRC holds: a corrupt length would
            # otherwise make the decoder wait for bytes that never come.
            if zlib.crc32(buffer[pos : pos + 8]) != prelude_crc:
                raise EventStreamError("event stream prelude CRC mismatch")
            if total < _MIN_FRAME or headers_length > total - _MIN_FRAME:
                raise EventStreamError(f"invalid event stream frame length {total}")
            if total > self._max or headers_length > _MAX_HEADERS:
                raise EventStreamError(
                    f"event stream frame of {total} bytes is over the {self._max} byte limit"
                )
            if size - pos < total:
                break
            end = pos + total
            (message_crc,) = _U32.unpack_from(buffer, end - 4)
            if zlib.crc32(buffer[pos : end - 4]) != message_crc:
                raise EventStreamError("event stream message CRC mismatch")
            headers_start = pos + _PRELUDE
            payload_start = headers_start + headers_length
            headers = _headers(buffer[headers_start:payload_start])
            messages.append(EventStreamMessage(headers, buffer[payload_start : end - 4]))
            pos = end
        self._buffer = buffer[pos:]
        return messages


def _headers(raw: bytes) -> dict[str, str | bytes | bool]:
    headers: dict[str, str | bytes | bool] = {}
    pos = 0
    size = len(raw)
    try:
        while pos < size:
            name_length = raw[pos]
            name = raw[pos + 1 : pos + 1 + name_length].decode()
            pos += 1 + name_length
            kind = raw[pos]
            pos += 1
            value: str | bytes | bool
            fixed = _FIXED.get(kind)
            if fixed is not None:
                value = kind == 0 if kind <= 1 else raw[pos : pos + fixed]
                pos += fixed
            elif kind in (6, 7):  # byte array, string: u16 length first
                (length,) = struct.unpack_from(">H", raw, pos)
                data = raw[pos + 2 : pos + 2 + length]
                value = data.decode() if kind == 7 else data
                pos += 2 + length
            else:
                raise EventStreamError(f"unknown event stream header type {kind}")
            if pos > size:
                raise EventStreamError("event stream header runs past its frame")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError):
        raise EventStreamError("malformed event stream headers") from None
    return headers


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame with string headers (for the mock LLM and tests)."""
    raw = b"".join(
        bytes((len(name.encode()),)) + name.encode() + b"\x07"
        + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers.items()
    )  # fmt: skip
    total = _MIN_FRAME + len(raw) + len(payload)
    prelude = struct.pack(">II", total, len(raw))
    prelude += _U32.pack(zlib.crc32(prelude))
    body = prelude + raw + payload
    return body + _U32.pack(zlib.crc32(body))
