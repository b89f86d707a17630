"""One pre-forked worker: a uvloop event loop serving the inherited listening sockets.

Everything per-request lives in the protocol classes; this module owns what a worker has
once: the upstream pool, the set of client connections (for idle expiry and draining), the
request recorder (metrics in its shared-memory slot, the access log), and the graceful-stop
sequence.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Coroutine

import uvloop

from agw_fast.config.model import Config
from agw_fast.core.plan import RuntimeBind
from agw_fast.log import logger
from agw_fast.proxy.downstream import DownstreamProtocol
from agw_fast.proxy.pool import UpstreamPool
from agw_fast.server.sockets import LISTEN_BACKLOG
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.record import RequestRecorder
from agw_fast.telemetry.recorder import Recorder
from agw_fast.telemetry.shared_slots import SharedSlots

__all__ = ["WorkerContext", "run_worker", "worker_recorder"]

HOUSEKEEPING_INTERVAL = 1.0


def worker_recorder(
    loop: asyncio.AbstractEventLoop, config: Config, slots: SharedSlots | None, index: int
) -> Recorder:
    """Metrics in worker `index`'s shared slot (continuing from what it holds: the totals
    of the worker this one replaces) and, at log level info, the access log."""
    registry = MetricsRegistry(slots.writer(index) if slots is not None else None)
    access_log = (
        AccessLog(loop, config.static.logging.format)
        if logger.isEnabledFor(logging.INFO)
        else None
    )
    return Recorder(registry, access_log)


class WorkerContext:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: Config,
        recorder: RequestRecorder,
    ) -> None:
        self.loop = loop
        backend = config.static.backend
        self.pool = UpstreamPool(
            loop,
            connect_timeout=backend.connect_timeout,
            idle_timeout=backend.pool_idle_timeout,
            max_idle=backend.pool_max_size,
        )
        self.connections: set[DownstreamProtocol] = set()
        self.idle_timeout = config.frontend.http1_idle_timeout
        self.recorder = recorder  # told about every finished request
        self.stopping = False
        self.tasks: set[asyncio.Task[None]] = set()  # upstream connections being opened

    def spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run `work` as a Task held here: the loop keeps only weak references to tasks."""
        task = self.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def log_protocol_error(self, peer: str, status: int, message: str) -> None:
        logger.info("rejected request from %s: %d %s", peer, status, message)

    # -- housekeeping -------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Once a second: expire idle upstream and client connections."""
        self.pool.sweep()
        deadline = self.loop.time() - self.idle_timeout
        for connection in [c for c in self.connections if c.last_active < deadline]:
            exchange = connection.exchange
            # Only a connection we are waiting on (idle, or a request not fully received)
            # expires; one waiting for its upstream is bounded by the timeout policies.
            if exchange is None or not exchange.request_done:
                connection.abort()
        if not self.stopping:
            self.loop.call_later(HOUSEKEEPING_INTERVAL, self.housekeeping)

    def begin_stop(self) -> None:
        """Stop taking requests on idle connections; busy ones close after their response."""
        self.stopping = True
        for connection in list(self.connections):
            connection.closing = True
            if connection.exchange is None and connection.mode == 0:
                connection.abort()


async def _serve(
    index: int,
    config: Config,
    binds: list[tuple[socket.socket, RuntimeBind]],
    slots: SharedSlots | None,
) -> int:
    loop = asyncio.get_running_loop()
    recorder = worker_recorder(loop, config, slots, index)
    ctx = WorkerContext(loop, config, recorder)
    servers = []
    for sock, bind in binds:
        servers.append(
            await loop.create_server(
                lambda bind=bind: DownstreamProtocol(ctx, bind),  # type: ignore[misc]
                sock=sock,
                backlog=LISTEN_BACKLOG,  # create_server calls listen() again with it
            )
        )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.call_later(HOUSEKEEPING_INTERVAL, ctx.housekeeping)
    await stop.wait()
    for server in servers:
        server.close()
    ctx.begin_stop()
    deadline = time.monotonic() + config.static.connection_termination_deadline
    while ctx.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for connection in list(ctx.connections):
        connection.abort()
    ctx.pool.close_all()
    if recorder.access_log is not None:
        recorder.access_log.flush()
    return 0


def run_worker(
    index: int,
    config: Config,
    binds: list[tuple[socket.socket, RuntimeBind]],
    slots: SharedSlots | None,
) -> int:
    """Run one worker until SIGTERM/SIGINT, then drain and return its exit code."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(index, config, binds, slots))
