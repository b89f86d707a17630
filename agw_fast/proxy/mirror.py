"""`requestMirror`: send a copy of a request to another backend, and forget about it.

As agentgateway (crates/agentgateway/src/proxy/httpproxy.rs, `send_mirror`): the copy is
the request's head (method, target, the fields after the route's header changes) with an
empty body (its framing fields dropped), sent on its own; its response is read and
dropped, and a failure is only logged. Nothing of it reaches the client's request: the
copy starts after the proxied exchange has, uses a pooled connection of its own, and its
errors never leave this module.

One Task per copy (mirroring is opt-in per route), which a worker's stop does not wait
for. A copy whose response has not ended
after `MIRROR_TIMEOUT` seconds is cut, so a slow mirror target cannot pile up connections.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence

from agw_fast.core.http1 import ResponseHead
from agw_fast.core.rewrite import build_upstream_head
from agw_fast.log import logger
from agw_fast.plan import RuntimeMirror
from agw_fast.proxy.exchange import Services
from agw_fast.proxy.upstream import UpstreamConnection

__all__ = ["MIRROR_TIMEOUT", "DiscardSink", "send_mirror"]

MIRROR_TIMEOUT = 60.0
# Methods whose empty body needs no `content-length: 0` to say so (RFC 9110 §8.6).
_BODILESS = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE", b"CONNECT"})
_EMPTY_BODY = b"content-length: 0\r\n"
# At most one warning per this many seconds per worker; the rest are counted.
_LOG_INTERVAL = 10.0


class _RateLimitedLog:
    __slots__ = ("last", "suppressed")

    def __init__(self) -> None:
        self.last = -_LOG_INTERVAL
        self.suppressed = 0

    def warn(self, endpoint: str, message: str) -> None:
        now = time.monotonic()
        if now - self.last < _LOG_INTERVAL:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        logger.warning("error sending mirror request to %s: %s%s", endpoint, message, more)


_log = _RateLimitedLog()
_tasks: set[asyncio.Task[None]] = set()  # copies in flight (the loop holds tasks weakly)


class DiscardSink:
    """A `ResponseSink` that reads a response to its end and keeps nothing of it."""

    __slots__ = ("head_request", "response_drop", "done", "head_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, head_request: bool) -> None:
        self.head_request = head_request
        self.response_drop: frozenset[bytes] = frozenset()
        # True: ended and the connection is reusable; False: ended, not reusable;
        # a str: lost (why).
        self.done: asyncio.Future[bool | str] = loop.create_future()
        self.head_at = 0.0  # when the response head came (`upstream_call_duration`)

    def on_response_head(self, head: ResponseHead) -> None:
        self.head_at = time.monotonic()

    def flush_response_head(self) -> None:
        pass

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self, reusable: bool) -> None:
        if not self.done.done():
            self.done.set_result(reusable)

    def on_upstream_lost(self, message: str, response_started: bool, retryable: bool) -> None:
        if not self.done.done():
            self.done.set_result(message)

    def pause_request_body(self) -> None:
        pass

    def resume_request_body(self) -> None:
        pass


def send_mirror(
    services: Services,
    mirror: RuntimeMirror,
    method: bytes,
    target: bytes,
    authority: bytes,
    headers: Sequence[tuple[bytes, bytes]],
) -> None:
    """Start sending the copy (never raises, never waits)."""
    backend = mirror.backend
    head = build_upstream_head(
        method,
        target,
        backend.auto_authority or authority,
        headers,
        backend.request_headers,
        b"" if method in _BODILESS else _EMPTY_BODY,
    )
    # Held here, not by `services.spawn`: a worker's drain waits for its own tasks, and a
    # copy must never hold up a stop (the loop cancels what is left when it closes).
    task = services.loop.create_task(_send(services, mirror, head, method == b"HEAD"))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _send(services: Services, mirror: RuntimeMirror, head: bytes, head_only: bool) -> None:
    backend = mirror.backend
    pool = services.pool
    connection: UpstreamConnection | None = None
    sink: DiscardSink | None = None
    started = time.monotonic()
    try:
        connection = pool.take(backend.pool_key)
        if connection is None:
            connection = await pool.connect(backend)
        sink = DiscardSink(services.loop, head_only)
        connection.attach(sink)
        connection.write(head)
        async with asyncio.timeout(MIRROR_TIMEOUT):
            outcome = await sink.done
    except TimeoutError:
        _log.warn(backend.endpoint, "timed out")
    except (OSError, ssl.SSLError) as error:
        _log.warn(backend.endpoint, str(error) or type(error).__name__)
    except Exception:
        logger.exception("internal error sending a mirror request")
    else:
        if isinstance(outcome, str):
            _log.warn(backend.endpoint, outcome)
        elif outcome and connection is not None:
            connection.detach()
            pool.put(connection)
            return
    finally:
        # agentgateway's `upstream_call_duration{kind="Mirror"}`: to the response head, or
        # to the failure.
        ended = sink.head_at if sink is not None and sink.head_at else time.monotonic()
        services.recorder.upstream_call(backend.ai is not None, ended - started, mirror=True)
    if connection is not None:
        connection.close()
