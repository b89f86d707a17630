"""What a request policy sees of a request, and the shape of a compiled policy step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

__all__ = ["PolicyAnswer", "PolicyRequest", "RequestStep"]


class PolicyRequest:
    """A routed request as policies see it: the client's values, before any rewrite.

    Built only for routes that have steps. `headers` are (lowercase name, value) pairs as
    the client sent them; `query` keeps its leading `?` (b"" when there is none);
    `matched_prefix` is the route's path prefix when a prefix match selected it.
    """

    __slots__ = ("method", "host", "path", "query", "headers", "matched_prefix")

    def __init__(
        self,
        method: bytes,
        host: bytes,
        path: bytes,
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        matched_prefix: str | None,
    ) -> None:
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
        self.matched_prefix = matched_prefix


class PolicyAnswer(NamedTuple):
    """A policy's own answer to a request: the complete response and why (a `Reason`)."""

    response: bytes
    reason: str


# None lets the request go on; an answer ends it with the gateway's own response.
RequestStep = Callable[[PolicyRequest], PolicyAnswer | None]
