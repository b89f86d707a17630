"""What a request policy sees of a request, and the shape of a compiled policy step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["PolicyAnswer", "PolicyRequest", "RequestStep"]


class PolicyRequest:
    """A routed request as policies see it: the client's values, before any rewrite.

    Built only for routes that have steps. `headers` are (lowercase name, value) pairs as
    the client sent them; `query` keeps its leading `?` (b"" when there is none);
    `matched_prefix` is the route's path prefix when a prefix match selected it. A step may
    also add response fields (`add_response_header`), e.g. rate-limit or CORS headers.
    """

    __slots__ = (
        "method", "host", "path", "query", "headers", "matched_prefix", "source",
        "response_lines",
    )  # fmt: skip

    def __init__(
        self,
        method: bytes,
        host: bytes,
        path: bytes,
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        matched_prefix: str | None,
        source: str = "",
    ) -> None:
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
        self.matched_prefix = matched_prefix
        self.source = source  # the client's "addr:port" (IPv6 in brackets)
        # Lines (`name: value\r\n`) steps add to whatever response the request gets.
        self.response_lines: list[bytes] | None = None

    def add_response_header(self, name: bytes, value: bytes) -> None:
        """Have the response, proxied or answered by a later step, carry this field."""
        line = b"%s: %s\r\n" % (name, value)
        if self.response_lines is None:
            self.response_lines = [line]
        else:
            self.response_lines.append(line)

    def add_response_lines(self, lines: bytes) -> None:
        """Like `add_response_header`, for prebuilt field lines (each `name: value\r\n`)."""
        if self.response_lines is None:
            self.response_lines = [lines]
        else:
            self.response_lines.append(lines)


class PolicyAnswer(NamedTuple):
    """A policy's own answer to a request: the complete response and why (a `Reason`)."""

    response: bytes
    reason: str


# None lets the request go on; an answer ends it with the gateway's own response.
RequestStep = Callable[[PolicyRequest], PolicyAnswer | None]
