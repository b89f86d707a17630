"""One call to a guard service (a webhook, OpenAI moderation): the exchange's async step.

The request bytes come from the sans-IO guard (`llm.guardrails.GuardCall`); the connection
comes from the worker's upstream pool, as any upstream's, and goes back to it when the
answer ended cleanly. The whole call is bounded by the guard's timeout. The answer is read
whole, up to `MAX_ANSWER` bytes.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from agw_fast.core.http1 import BODY_CHUNKED, ResponseHead
from agw_fast.core.rewrite import RESPONSE_HOP_BY_HOP
from agw_fast.llm.guardrails import GuardCall
from agw_fast.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from agw_fast.plan import RuntimeBackend
    from agw_fast.proxy.pool import UpstreamPool

__all__ = ["GuardCallError", "MAX_ANSWER", "call_guard"]

MAX_ANSWER = 1024 * 1024


class GuardCallError(Exception):
    """The guard service could not be asked (connect, TLS, timeout, a broken answer)."""


class _Unanswered(GuardCallError):
    """The connection closed before any answer byte: a pooled one the server had closed."""


class _Answer:
    """The ResponseSink of one guard call: collects the answer, resolves `done`."""

    head_request = False
    response_drop = RESPONSE_HOP_BY_HOP

    def __init__(self, connection: UpstreamConnection, done: asyncio.Future[bool]) -> None:
        self.connection = connection
        self.done = done
        self.status = 0
        self.parts: list[bytes] = []
        self.size = 0
        self.dechunked = False

    def on_response_head(self, head: ResponseHead) -> None:
        self.status = head.status
        if head.framing == BODY_CHUNKED:
            self.dechunked = True
            self.connection.set_payload_observer(self._payload)

    def flush_response_head(self) -> None:
        pass

    def _payload(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= MAX_ANSWER:
            self.parts.append(data)

    def on_response_body(self, data: bytes) -> None:
        if not self.dechunked:
            self._payload(data)

    def on_response_end(self, reusable: bool) -> None:
        if not self.done.done():
            self.done.set_result(reusable)

    def on_upstream_lost(self, message: str, response_started: bool, retryable: bool) -> None:
        if not self.done.done():
            error = _Unanswered(message) if retryable else GuardCallError(message)
            self.done.set_exception(error)

    def pause_request_body(self) -> None:
        pass

    def resume_request_body(self) -> None:
        pass


async def call_guard(pool: UpstreamPool, call: GuardCall) -> tuple[int, bytes]:
    """(status, body) of the guard service's answer; raises GuardCallError."""
    target: RuntimeBackend = call.target  # type: ignore[assignment]
    request = call.request
    credential = call.credential
    if credential is not None:
        line = credential.line
        if not line:
            raise GuardCallError("no Google access token yet (see the gateway log)")
        # After the request line: the token's field joins the head.
        end = request.index(b"\r\n") + 2
        request = request[:end] + line + request[end:]
    loop = pool.loop
    connection: UpstreamConnection | None = None
    try:
        async with asyncio.timeout(call.timeout):
            connection = pool.take(target.pool_key)
            pooled = connection is not None
            while True:
                if connection is None:
                    connection = await pool.connect(target)
                done: asyncio.Future[bool] = loop.create_future()
                answer = _Answer(connection, done)
                connection.attach(answer)
                connection.write(request)
                try:
                    reusable = await done
                    break
                except _Unanswered:
                    if not pooled:
                        raise
                    # The server closed the idle connection as we reused it: once more, on
                    # a fresh one (as the proxy does for a client's request).
                    connection.close()
                    connection, pooled = None, False
    except TimeoutError:
        if connection is not None:
            connection.close()
        raise GuardCallError(f"no answer within {call.timeout:g}s") from None
    except (OSError, ssl.SSLError) as error:
        if connection is not None:
            connection.close()
        raise GuardCallError(str(error) or type(error).__name__) from None
    except GuardCallError:
        assert connection is not None
        connection.close()
        raise
    if answer.size > MAX_ANSWER:
        connection.close()
        raise GuardCallError(f"answer over {MAX_ANSWER} bytes")
    if reusable:
        connection.detach()
        pool.put(connection)
    else:
        connection.close()
    return answer.status, b"".join(answer.parts)
