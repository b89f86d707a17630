"""Content codings the LLM layer undoes: gzip (and x-gzip) and deflate (RFC 9110 §8.4.1).

One incremental inflater serves both directions: the buffered request body, decoded before it
is rewritten, and the *copy* of a response that the observer reads for usage while the proxy
relays the encoded bytes unchanged. Output is bounded by the caller's limit and produced in
pieces of at most `STEP` bytes, so a compression bomb costs at most `limit` bytes of memory and
the work to produce them, never the whole expansion.

br and zstd are not here: Python 3.11's standard library has neither (agentgateway decodes both
for LLM responses; a response in them reports no usage here).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

__all__ = ["STEP", "CodingError", "Inflater", "UnsupportedCoding", "parse_codings"]

STEP = 64 * 1024  # the largest piece one decompress call produces
_SUPPORTED = frozenset({"gzip", "x-gzip", "deflate"})
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip container only (RFC 1952)


class UnsupportedCoding(ValueError):
    """A content coding we cannot undo (br, zstd, compress, anything unknown)."""

    def __init__(self, coding: str) -> None:
        super().__init__(f"unsupported content encoding: {coding}")
        self.coding = coding


class CodingError(ValueError):
    """Corrupt or truncated encoded data; the message starts `invalid <coding> body`."""


def parse_codings(content_encoding: str | None) -> list[str]:
    """The codings of a `Content-Encoding` value, in the order they were applied, lowercase.

    `identity` and empty members mean nothing and are dropped (RFC 9110 §8.4.1); an unknown
    coding raises `UnsupportedCoding`.
    """
    if not content_encoding:
        return []
    codings = []
    for member in content_encoding.split(","):
        coding = member.strip().lower()
        if coding in ("", "identity"):
            continue
        if coding not in _SUPPORTED:
            raise UnsupportedCoding(coding)
        codings.append(coding)
    return codings


def _looks_like_zlib(data: bytes) -> bool:
    # RFC 1950 §2.2: CM=8 in the low nibble of CMF and (CMF*256 + FLG) divisible by 31.
    # Raw deflate (RFC 1951), which some peers send as "deflate", fails this check.
    return data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


class Inflater:
    """Undoes one coding of a body fed in arbitrary pieces.

    gzip may hold several members (RFC 1952 §2.2), and zero padding after the last is
    tolerated. "deflate" means the zlib container (RFC 9110 §8.4.1.2), but raw deflate is
    common enough that the first two bytes decide which one this is. Bytes after the end of a
    deflate stream are ignored.
    """

    __slots__ = ("_coding", "_decoder", "_head", "_tail", "decoded")

    def __init__(self, coding: str) -> None:
        if coding not in _SUPPORTED:
            raise UnsupportedCoding(coding)
        self._coding = coding
        self._decoder: zlib._Decompress | None = (
            None if coding == "deflate" else zlib.decompressobj(_GZIP_WBITS)
        )
        self._head = b""  # deflate: the first byte, until the second tells the container
        self._tail = b""  # input held back because the caller's limit was reached
        self.decoded = 0  # bytes produced so far

    def feed(self, data: bytes, limit: int) -> Iterator[bytes]:
        """The decoded pieces of `data`, until `decoded` passes `limit` (then it stops early).

        The piece that passes the limit is still yielded, so the caller sees the overflow
        rather than guessing; past it nothing more is inflated, and the input not yet used is
        kept for a later call with a higher limit. Raises `CodingError` on corrupt data.
        """
        if self._tail:
            data = self._tail + data
            self._tail = b""
        decoder = self._decoder
        if decoder is None:  # deflate whose container is not known yet
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
            wbits = zlib.MAX_WBITS if _looks_like_zlib(data) else -zlib.MAX_WBITS
            decoder = self._decoder = zlib.decompressobj(wbits)
        while data:
            if self.decoded > limit:
                self._tail = data
                return
            if decoder.eof:
                if self._coding == "deflate" or not data.strip(b"\x00"):
                    return  # after a deflate stream, or zero padding after the last member
                decoder = self._decoder = zlib.decompressobj(_GZIP_WBITS)
            try:
                # max_length > 0 always: zlib stops when the piece is full, keeping the input
                # it did not need in unconsumed_tail, or when the input runs out.
                piece = decoder.decompress(data, min(STEP, limit - self.decoded + 1))
            except zlib.error as exc:
                raise CodingError(f"invalid {self._coding} body: {exc}") from None
            data = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
            if piece:
                self.decoded += len(piece)
                yield piece

    def end(self) -> None:
        """The body is complete: raise `CodingError` if the encoded stream is not."""
        decoder = self._decoder
        if decoder is None or not decoder.eof:
            raise CodingError(f"invalid {self._coding} body: truncated stream")
