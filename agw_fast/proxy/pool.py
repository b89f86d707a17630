"""Per-worker pool of idle upstream connections, keyed by (host, port, TLS settings).

The decisions (reuse, keep, evict) are synchronous and cheap; only opening a connection
awaits. Idle connections are reused LIFO so the warmest one goes first and the coldest ones
age out. Connections never call back into the pool: one the server closed while idle is
marked `closed`, skipped by `take` and dropped by `put` and `sweep`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from agw_fast.config.model import KeepaliveConfig
from agw_fast.log import logger
from agw_fast.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from agw_fast.plan import RuntimeBackend

__all__ = ["UpstreamPool", "keepalive_options"]

SocketOption = tuple[int, int, int]  # (level, option, value) for setsockopt


def keepalive_options(keepalive: KeepaliveConfig) -> tuple[SocketOption, ...]:
    """The setsockopt calls that give an upstream socket agentgateway's TCP keepalive.

    In agentgateway's order (SO_KEEPALIVE, then idle time, interval, probe count); none
    when disabled, which leaves the socket as the OS opens it (keepalive off).
    """
    if not keepalive.enabled:
        return ()
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    # Linux names; macOS spells the idle time TCP_KEEPALIVE.
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))
    for option, value in (
        (idle, keepalive.time),
        (getattr(socket, "TCP_KEEPINTVL", None), keepalive.interval),
        (getattr(socket, "TCP_KEEPCNT", None), keepalive.retries),
    ):
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return tuple(options)


class UpstreamPool:
    """A worker's idle upstream connections, keyed by (host, port, TLS context).

    `take` and `put` are synchronous and O(1); `connect` opens a new connection; `sweep`
    (once a second) drops closed and expired ones; `close_all` at stop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_idle: int | None,
        keepalive: KeepaliveConfig | None = None,
    ) -> None:
        self.loop = loop
        # Computed once: each new upstream socket gets the same few setsockopt calls.
        self.socket_options = keepalive_options(
            KeepaliveConfig() if keepalive is None else keepalive
        )
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.idle: dict[tuple[str, int, int], list[UpstreamConnection]] = {}
        self.opened = 0  # connections ever opened: tests and benches read it
        # Called before each new connection: the worker's descriptor budget closes idle
        # connections here if the new one would not fit otherwise.
        self.before_connect: Callable[[], object] | None = None
        # Told how long each new connection took to open (TLS or not, seconds): the
        # worker's `upstream_connect_duration_seconds`.
        self.on_connect: Callable[[bool, float], object] | None = None

    def __repr__(self) -> str:
        idle = sum(len(v) for v in self.idle.values())
        return f"<UpstreamPool idle={idle} opened={self.opened} keys={len(self.idle)}>"

    def take(self, key: tuple[str, int, int]) -> UpstreamConnection | None:
        connections = self.idle.get(key)
        while connections:
            connection = connections.pop()
            if not connection.closed:
                return connection
        return None

    def put(self, connection: UpstreamConnection) -> None:
        if connection.closed:
            return
        connections = self.idle.setdefault(connection.key, [])
        if self.max_idle is not None and len(connections) >= self.max_idle:
            connections[:] = [c for c in connections if not c.closed]
        if self.max_idle is not None and len(connections) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        connections.append(connection)

    def sweep(self) -> None:
        """Drop closed connections; close those idle past the idle timeout."""
        deadline = self.loop.time() - self.idle_timeout
        for connections in self.idle.values():
            if any(c.closed for c in connections):
                connections[:] = [c for c in connections if not c.closed]
            while connections and connections[0].idle_since < deadline:
                connections.pop(0).close()

    def close_all(self) -> None:
        for connections in self.idle.values():
            while connections:
                connections.pop().close()

    async def connect(self, backend: RuntimeBackend) -> UpstreamConnection:
        """Open a new connection (raises OSError / ssl.SSLError / TimeoutError)."""
        key = backend.pool_key
        if self.before_connect is not None:
            self.before_connect()
        started = time.monotonic()
        async with asyncio.timeout(self.connect_timeout):
            transport, protocol = await self.loop.create_connection(
                lambda: UpstreamConnection(key),
                backend.host.strip("[]"),
                backend.port,
                ssl=backend.ssl,
                server_hostname=backend.server_hostname if backend.ssl is not None else None,
                family=socket.AF_UNSPEC,
            )
        if self.socket_options:
            sock = transport.get_extra_info("socket")
            try:
                for level, option, value in self.socket_options:
                    sock.setsockopt(level, option, value)
            except OSError as error:
                # As agentgateway: the connection is still good, only its probing is not.
                logger.debug("upstream keepalive not set: %s", error)
        self.opened += 1
        if self.on_connect is not None:
            self.on_connect(backend.ssl is not None, time.monotonic() - started)
        return protocol
