"""A worker's listening sockets: how many connections it takes, and how a listener closes.

uvloop accepts, in C. What it does when accept() fails with EMFILE or ENFILE is the reason for
`DescriptorBudget`: libuv (`uv__emfile_trick` in src/unix/stream.c) closes a spare descriptor it
keeps for the purpose, accepts every pending connection and closes it at once, and tells uvloop
nothing (uvloop 0.23 `__uv_streamserver_on_listen` only hears of it if that trick fails, and
then closes the listening handle for good). Clients see a reset or an empty reply and the
operator sees nothing. So a worker never lets accept() get that far: it takes at most as many
client connections as its open-file limit has room for, and closes the ones beyond at once,
counted and logged.

The count is kept by the protocol factory, which uvloop calls as it accepts, before the
connection's `connection_made` (a later callback), so it is exact however many connections are
accepted before any is made. libuv (since 1.45, libuv/libuv#3696; every uvloop we support
bundles a later one) accepts one connection per readiness callback, and the loop runs the
callbacks uvloop scheduled (that `connection_made`, which closes a dropped connection) before
it polls again: a connection accepted beyond the cap holds a descriptor for one loop
iteration, so each listener needs room for one more.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

from agw_fast.log import logger
from agw_fast.proxy.pool import UpstreamPool
from agw_fast.server.sockets import LISTEN_BACKLOG

__all__ = ["DescriptorBudget", "Listener", "dropped_connection"]

REPORT_INTERVAL = 1.0  # seconds between "dropped" log lines
# accept() errors about one connection that went away before we took it (accept(2)).
_PEER_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ETIMEDOUT})

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class DescriptorBudget:
    """How many client connections this worker takes, computed once from RLIMIT_NOFILE.

    What the worker may hold (`sockets`) is the limit less the descriptors open at start, a
    margin (DNS lookups, log files) and one connection per listener about to be dropped. A
    client connection may need an upstream connection too, so each counts twice, and idle
    pooled upstream connections count once: `2 * clients + idle <= sockets` holds whenever a
    descriptor is taken, as `make_room` closes idle upstream connections (oldest first) when
    a client connection is admitted or an upstream connection opened. Beyond `cap` clients,
    new connections are dropped (`admit` says no; the factory hands them
    `dropped_connection`).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, pool: UpstreamPool, listeners: int
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.limit = _open_file_limit()
        # Before the listeners start: each will hold one more descriptor (uvloop's duplicate).
        fixed = _open_descriptors() + listeners
        margin = 16 + self.limit // 64
        self.sockets = max(0, self.limit - fixed - margin - listeners)
        self.cap = self.sockets // 2  # client connections
        self.dropped = 0  # connections dropped since the last log line
        self.clients = 0  # client connections open at the latest drop
        self.report: asyncio.Handle | None = None  # the next log line, if one is due

    def close(self) -> None:
        if self.report is not None:
            self.report.cancel()
            self.report = None

    def admit(self, clients: int) -> bool:
        """Whether to take a connection just accepted, with `clients` open besides it."""
        if clients >= self.cap:
            self.dropped += 1
            self.clients = clients
            if self.report is None:
                # After the accept callback: one line counts a whole burst.
                self.report = self.loop.call_soon(self._report)
            return False
        self.make_room(clients + 1)
        return True

    def make_room(self, clients: int) -> None:
        """Close idle upstream connections (oldest first) until `clients` client connections,
        each with an upstream connection, fit with the idle ones."""
        idle = self.pool.idle.values()
        excess = 2 * clients + sum(map(len, idle)) - self.sockets
        while excess > 0:
            oldest = min(
                (conns for conns in idle if conns), key=lambda c: c[0].idle_since, default=None
            )
            if oldest is None:
                return
            oldest.pop(0).close()
            excess -= 1

    def _report(self) -> None:
        """Log what was dropped, at most once per `REPORT_INTERVAL`."""
        if not self.dropped:
            self.report = None
            return
        logger.warning(
            "out of file descriptors (open-file limit %d, %d client connections open): "
            "dropped %d new connection(s)",
            self.limit, self.clients, self.dropped,
        )
        self.dropped = 0
        self.report = self.loop.call_later(REPORT_INTERVAL, self._report)


class _Dropped(asyncio.Protocol):
    """A connection the worker has no room for: closed as soon as it is made."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


def dropped_connection() -> asyncio.Protocol:
    """What the protocol factory returns for a connection `DescriptorBudget.admit` refused."""
    return _Dropped()


class Listener:
    """One listening socket of a worker, served by uvloop until the end of the drain window.

    uvloop gets a duplicate of the socket (closing its server closes only that), so that at
    the end of the window the worker can still take what is queued on it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: ProtocolFactory,
        spawn: Callable[[Coroutine[object, object, None]], None],
        tls: tuple[ssl.SSLContext, float] | None = None,  # context, handshake timeout
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.spawn = spawn
        # HTTPS listeners: uvloop does the TLS (server side), with the handshake bounded.
        self.tls: dict[str, Any] = (
            {} if tls is None else {"ssl": tls[0], "ssl_handshake_timeout": tls[1]}
        )
        self.server: asyncio.Server | None = None
        self.closed = False

    async def start(self) -> None:
        duplicate = self.sock.dup()
        try:
            self.server = await self.loop.create_server(
                self.factory, sock=duplicate, backlog=LISTEN_BACKLOG, **self.tls
            )  # create_server calls listen() again, with this backlog
        except BaseException:
            duplicate.close()
            raise

    async def restart(
        self, factory: ProtocolFactory, tls: tuple[ssl.SSLContext, float] | None
    ) -> None:
        """Serve the socket with another protocol factory and TLS context (a reload: uvloop
        fixes both when its server starts). The new server starts before the old one closes,
        so the socket is never left without a server: connections arriving meanwhile wait in
        its queue, and the old server's accepted connections go on as they are."""
        if self.closed:
            return
        old = self.server
        self.factory = factory
        self.tls = {} if tls is None else {"ssl": tls[0], "ssl_handshake_timeout": tls[1]}
        await self.start()
        if old is not None:
            old.close()

    def close(self, shutdown: bool) -> None:
        """Stop accepting: serve what the kernel has already queued and, if `shutdown`
        (the whole gateway is stopping), shut the socket down.

        The order is what makes the end of the window exact. Once uvloop's server is closed,
        only this method accepts (in this process). It takes every connection whose handshake
        has completed, until accept() says the queue is empty, and then, in the same
        callback, shuts the socket down: the kernel stops listening, so a later connection is
        refused, and one completed in the microseconds since the last accept() is reset,
        never left queued with nobody to accept it. Neither step could be done by another
        process: a shutdown resets what is still queued (the supervisor cannot know when a
        worker has taken it all), and closing a descriptor is not enough while others hold one.

        A shutdown acts on the socket, not on this descriptor: in `shared` listen mode every
        worker and the supervisor hold the same socket, and in both modes the supervisor's
        copy is what a replacement worker inherits. A worker stopped on its own (`kill -TERM`
        on its pid) therefore only closes its descriptor: the other workers go on accepting,
        and what the kernel queues on its own socket (reuseport mode) waits for the
        replacement.
        """
        if self.closed:
            return
        self.closed = True
        if self.server is not None:
            self.server.close()
            self.server = None
        self._accept_queued()
        if shutdown:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # another worker shut it down already (shared mode)
        self.sock.close()

    def _accept_queued(self) -> None:
        # A queue holds at most backlog + 1 connections; in shared mode others may arrive
        # meanwhile, which another worker's window may still take.
        for _ in range(LISTEN_BACKLOG + 1):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _PEER_GONE:
                    continue
                # EINVAL: another worker ended its window and shut the shared socket down.
                # Anything else: what is left is reset by the shutdown, or (a worker stopped
                # on its own) left to the other workers and the replacement.
                if error.errno != errno.EINVAL:
                    logger.warning("accept failed at the end of the drain window: %s", error)
                return
            # The factory decides now, not when the connection is set up: a whole queue of
            # connections beyond the cap must not hold descriptors meanwhile.
            protocol = self.factory()
            if isinstance(protocol, _Dropped):
                conn.close()
            else:
                self.spawn(self._connect(conn, protocol))

    async def _connect(self, conn: socket.socket, protocol: asyncio.BaseProtocol) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: protocol, conn, **self.tls)
        except OSError:
            conn.close()


def _open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return 64  # no /proc: a guess that errs high
