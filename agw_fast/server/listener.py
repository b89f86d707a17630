"""A worker's listening sockets: who accepts, what happens when descriptors run out, and how
a listener stops at the end of the drain window.

uvloop accepts while descriptors are plentiful: its accept path is C and the fastest there is.
It cannot be the only path, because of what it does when accept() fails with EMFILE or ENFILE:
libuv (`uv__emfile_trick` in src/unix/stream.c) closes a spare descriptor it keeps for the
purpose, accepts every pending connection and closes it at once, and tells uvloop nothing
(uvloop 0.23 `__uv_streamserver_on_listen` only hears of it if that trick fails, and then closes
the listening handle for good, again without a log line as the error is an OSError). Clients
see a reset or an empty reply and the operator sees nothing.

So each worker keeps an upper bound of the descriptors it uses (`DescriptorBudget`); when it
comes near RLIMIT_NOFILE, the listeners stop uvloop's server and accept themselves
(`Listener._accept`), which sheds the same connections libuv would but counts them, and logs
the count at most once a second. Below the limit again, uvloop takes over. Accepting ourselves
costs a Task per connection, which is why it is not the normal path.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import sys
from collections.abc import Callable, Coroutine, Sized

from agw_fast.log import logger
from agw_fast.server.sockets import LISTEN_BACKLOG

__all__ = ["DescriptorBudget", "Listener"]

CHECK_INTERVAL = 1.0  # seconds between re-estimates, and between "dropped" log lines
RETRY_DELAY = 0.1  # with no descriptor left even to shed, accepting waits this long
ACCEPT_BATCH = 128  # connections taken per readiness event before other callbacks run
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() errors about one connection that went away before we took it (accept(2)).
_PEER_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ETIMEDOUT})

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class DescriptorBudget:
    """Whether this worker is near its open-file limit, and what it dropped for lack of one.

    The estimate is an upper bound: the descriptors open once the listeners started, one per
    client connection, one more per client connection for its upstream connection, the idle
    pooled upstream connections, and a margin for the rest (DNS lookups, log files). From
    `guard_at` client connections on, the listeners accept through `Listener._accept`.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connections: Sized,
        idle_upstream: Callable[[], int],
    ) -> None:
        self.loop = loop
        self.connections = connections
        self.idle_upstream = idle_upstream
        self.limit = _open_file_limit()
        self.base = 0
        self.listeners: list[Listener] = []
        self.guarded = False
        self.guard_at = sys.maxsize  # client connections; the protocol factory compares
        self.dropped = 0  # connections shed since the last log line
        self.stalled = False  # accepting had to pause since the last log line
        self.report_armed = False
        self.reserve = -1  # a spare descriptor, closed to make room for shedding
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Measure the worker's fixed descriptors (listeners running) and begin watching."""
        self.base = _open_descriptors()
        self.reserve = _open_reserve()
        self.check()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.reserve >= 0:
            os.close(self.reserve)
            self.reserve = -1

    def threshold(self) -> int:
        margin = 16 + self.limit // 64
        spare = self.limit - self.base - margin - self.idle_upstream()
        return spare // 2

    def check(self) -> None:
        """Once a second: re-estimate, and switch who accepts if that changed."""
        self.timer = self.loop.call_later(CHECK_INTERVAL, self.check)
        self.limit = _open_file_limit()  # `prlimit` may have changed it
        threshold = self.threshold()
        open_now = len(self.connections)
        if not self.guarded:
            self.guard_at = threshold
            if open_now >= threshold:
                self.guard()
        elif open_now < threshold * 3 // 4 and not self.dropped and not self.stalled:
            self.unguard(threshold)

    def guard_soon(self) -> None:
        """Called by the protocol factory (inside uvloop's accept callback) at `guard_at`."""
        self.guard_at = sys.maxsize
        self.loop.call_soon(self.guard)

    def guard(self) -> None:
        if self.guarded:
            return
        self.guarded = True
        self.guard_at = sys.maxsize
        logger.info(
            "%d client connections open, open-file limit %d: accepting in Python until "
            "descriptors free up",
            len(self.connections), self.limit,
        )
        for listener in self.listeners:
            listener.guard()

    def unguard(self, threshold: int) -> None:
        self.guarded = False
        self.guard_at = threshold
        logger.info("descriptors free again: uvloop accepts new connections")
        for listener in self.listeners:
            listener.unguard()

    def shed(self, sock: socket.socket) -> bool:
        """Accept and close what `sock` has queued, in the room the spare descriptor leaves.

        False if there is no spare descriptor (something else took it): then the caller
        leaves the connections queued and looks again after `RETRY_DELAY`.
        """
        if self.reserve < 0:
            self.reserve = _open_reserve()
        if self.reserve < 0:
            self.stalled = True
            self._arm_report()
            return False
        os.close(self.reserve)
        self.reserve = -1
        count = 0
        while count < LISTEN_BACKLOG:
            try:
                conn, _ = sock.accept()
            except OSError:
                break  # EAGAIN: the queue is empty (or still no room: try again later)
            conn.close()
            count += 1
        self.reserve = _open_reserve()
        self.dropped += count
        self._arm_report()
        return True

    def _arm_report(self) -> None:
        if not self.report_armed:
            self._report()

    def _report(self) -> None:
        """Log what was dropped, at most once per `CHECK_INTERVAL`."""
        if not self.dropped and not self.stalled:
            self.report_armed = False
            return
        logger.warning(
            "out of file descriptors (open-file limit %d, %d client connections open): "
            "dropped %d new connection(s)%s",
            self.limit, len(self.connections), self.dropped,
            "; others wait in the listen queue" if self.stalled else "",
        )
        self.dropped = 0
        self.stalled = False
        self.report_armed = True
        self.loop.call_later(CHECK_INTERVAL, self._report)


class Listener:
    """One listening socket of a worker, served by uvloop or, while guarded, by `_accept`.

    uvloop gets a duplicate of the socket (closing its server closes only that), so the worker
    can switch paths and, at the end of the drain window, take what is still queued.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: ProtocolFactory,
        budget: DescriptorBudget,
        spawn: Callable[[Coroutine[object, object, None]], None],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.budget = budget
        self.spawn = spawn
        self.server: asyncio.Server | None = None
        self.watching = False
        self.closed = False
        budget.listeners.append(self)

    async def start(self) -> None:
        if self.budget.guarded:
            self._watch()
        else:
            await self._serve_with_uvloop()

    def guard(self) -> None:
        if self.closed:
            return
        self._watch()
        if self.server is not None:
            self.server.close()
            self.server = None

    def unguard(self) -> None:
        if not self.closed and self.server is None:
            self.spawn(self._serve_with_uvloop())

    async def _serve_with_uvloop(self) -> None:
        try:
            duplicate = self.sock.dup()
        except OSError:
            return  # no descriptor for it: keep accepting ourselves
        try:
            server = await self.loop.create_server(
                self.factory, sock=duplicate, backlog=LISTEN_BACKLOG
            )  # create_server calls listen() again, with this backlog
        except OSError:
            duplicate.close()
            return
        if self.closed or self.budget.guarded:
            server.close()
            return
        self.server = server
        self._unwatch()

    def _watch(self) -> None:
        if not self.watching and not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.watching = True

    def _unwatch(self) -> None:
        if self.watching:
            self.loop.remove_reader(self.sock.fileno())
            self.watching = False

    def _accept(self, limit: int = ACCEPT_BATCH) -> None:
        for _ in range(limit):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _PEER_GONE:
                    continue
                if error.errno in _OUT_OF_DESCRIPTORS:
                    if not self.budget.shed(self.sock) and self.watching:
                        self._unwatch()
                        self.loop.call_later(RETRY_DELAY, self._watch)
                    return
                # EINVAL: another worker ended its drain window and shut the shared socket
                # down (listen mode "shared"); anything else is unexpected.
                if error.errno != errno.EINVAL and not self.closed:
                    logger.warning("accept failed: %s; this listener stops", error)
                self._unwatch()
                return
            self.spawn(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:
            conn.close()

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
        if self.server is not None:
            self.server.close()
            self.server = None
        self._unwatch()
        self.closed = True
        self._accept(LISTEN_BACKLOG)
        if shutdown:
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # another worker shut it down already (shared mode)
        self.sock.close()


def _open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else soft


def _open_reserve() -> int:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return 64  # no /proc: a guess that errs high
