"""What the proxy hands to telemetry when a request ends: one frozen record, one call.

This module is the proxy's whole view of telemetry: `RequestRecord` (what the exchange or the
local answer knew) and the `RequestRecorder` interface it is given (reasons are
`core.reason.Reason` values). Metrics, the access log and their formats live behind that
interface (`recorder.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from agw_fast.llm.exchange import LLMOutcome
    from agw_fast.plan import RouteLabels
    from agw_fast.policies.request import PolicyRequest
    from agw_fast.telemetry.metrics import Hist

__all__ = ["RequestRecord", "RequestRecorder"]


# One finished request, as a plain tuple: it is built once per request, and a tuple display
# is the cheapest frozen record Python has (measured: ~0.08 µs, where calling a 14-field
# NamedTuple costs ~0.45 µs and a __slots__ class ~0.36 µs). Fields, in order:
#   labels        RouteLabels: bind, gateway, listener, route, route rule
#   backend       agentgateway's backend name; None for a local answer
#   endpoint      "host:port" the request went to, or None
#   protocol      "http" or "llm"
#   method        bytes, as received
#   host          bytes: the Host the client sent
#   path          bytes: the client's path without the query (clients put credentials there)
#   http_version  "HTTP/1.1" or "HTTP/1.0"
#   peer          the client's "addr:port"
#   status        int; 0 when no response was started (the client left first)
#   reason        a `Reason`; None when the client left before any response
#   error         str or None
#   duration      float seconds from the request head to the end of the response
#   llm           LLMOutcome or None
#   retries       int: how many times the request was sent again (`retry`); 0 without
#   request       the PolicyRequest the policy steps saw, or None when no step ran (it is
#                 only captured for every request when an accessLog expression needs it)
#   body_bytes    int: bytes of the response body the client was sent (its payload:
#                 chunk framing is not counted, as agentgateway counts body data frames)
#   request_processing   float seconds from the request head to the first upstream call
#                 being made, or None when no call was made
#   response_processing  float seconds from the upstream response head to the response
#                 being ready for the client, or None when no upstream response was relayed
RequestRecord: TypeAlias = tuple[
    "RouteLabels",
    str | None,
    str | None,
    str,
    bytes,
    bytes,
    bytes,
    str,
    str,
    int,
    str | None,
    str | None,
    float,
    "LLMOutcome | None",
    int,
    "PolicyRequest | None",
    int,
    float | None,
    float | None,
]


class RequestRecorder(Protocol):
    """What the proxy needs from telemetry."""

    def record(self, record: RequestRecord) -> None:
        """Count and log one finished request; must not raise into the proxy."""
        ...

    def guardrail_checks(self, checks: Sequence[tuple[str, str]]) -> None:
        """Count one request's guard checks: (phase, action) pairs; must not raise."""
        ...

    def connection_series(self, labels: RouteLabels, protocol: str) -> Hist:
        """The CONNECTION record (`telemetry.metrics`) of client connections with these
        labels (a bind's for HTTP, the SNI-chosen listener's for HTTPS), `protocol` "http"
        or "https": a connection counts itself in it, and its bytes as it closes."""
        ...

    def upstream_connect(self, tls: bool, seconds: float) -> None:
        """An upstream connection opened (TLS handshake included) in `seconds`."""
        ...

    def upstream_call(self, llm: bool, seconds: float, mirror: bool = False) -> None:
        """An upstream call ended (its response head, or its failure) `seconds` after it
        was made (a pooled connection taken, or a new one begun)."""
        ...
