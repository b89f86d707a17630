"""One pre-forked worker: a uvloop event loop serving the inherited listening sockets.

Everything per-request lives in the protocol classes; this module owns what a worker has
once: the upstream pool, the set of client connections (for idle expiry and draining), the
access log and the metrics publisher, and the graceful-stop sequence.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING

import uvloop

from agw_fast.config.model import Config
from agw_fast.core.plan import RuntimeBind
from agw_fast.log import format_fields, logger, text_value
from agw_fast.proxy.downstream import DownstreamProtocol
from agw_fast.proxy.pool import UpstreamPool
from agw_fast.server.sockets import LISTEN_BACKLOG
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.shared_slots import Publisher, SharedSlots

if TYPE_CHECKING:
    from agw_fast.proxy.exchange import Exchange

__all__ = ["WorkerContext", "run_worker"]

HOUSEKEEPING_INTERVAL = 1.0
PUBLISH_DELAY = 0.1


class WorkerContext:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: Config,
        registry: MetricsRegistry,
        publisher: Publisher | None,
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
        self.registry = registry
        self.publisher = publisher
        self.access_log = (
            AccessLog(loop, config.static.logging.format)
            if logger.isEnabledFor(logging.INFO)
            else None
        )
        self.stopping = False
        self.publish_scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()  # upstream connections being opened

    def spawn(self, work: Coroutine[object, object, None]) -> None:
        """Run `work` as a Task held here: the loop keeps only weak references to tasks."""
        task = self.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- per request (called once each request ends) -----------------------------------------

    def record(self, exchange: Exchange) -> None:
        duration = time.monotonic() - exchange.started
        route = exchange.route
        backend = exchange.backend
        method = exchange.method.decode("ascii", "replace")
        status = exchange.status
        self.registry.record_request(route.name, backend.name, method, status, duration)
        access_log = self.access_log
        llm = exchange.llm
        outcome = (
            llm.finish(self.registry, route.name, access_log is not None)
            if llm is not None
            else None
        )
        if not self.publish_scheduled and self.publisher is not None:
            self._schedule_publish()
        if access_log is None:
            return
        # The client's view, as agentgateway logs it; the query is left out because some
        # clients put credentials there.
        host = exchange.client_host().decode("latin-1")
        path = exchange.client_path.decode("latin-1")
        millis = f"{duration * 1000:.0f}ms"
        if not access_log.json:
            # The common text line is one f-string; config-defined parts are preformatted.
            line = (
                f"{backend.log_prefix} http.method={method} http.host={text_value(host)} "
                f"http.path={text_value(path)} http.status={status}"
            )
            if outcome is not None:
                line += " " + format_fields(outcome)
            if exchange.error is not None:
                line += " error=" + text_value(exchange.error)
            access_log.emit_line(f"{line} duration={millis}")
            return
        fields: dict[str, object] = {
            "listener": route.listener,
            "route": route.name,
            "endpoint": backend.endpoint,
            "http.method": method,
            "http.host": host,
            "http.path": path,
            "http.status": status,
        }
        if outcome is not None:
            fields.update(outcome)
        if exchange.error is not None:
            fields["error"] = exchange.error
        fields["duration"] = millis
        access_log.emit(fields)

    def record_local(
        self, down: DownstreamProtocol, status: int, started: float, route: str, body: bytes
    ) -> None:
        duration = time.monotonic() - started
        self.registry.record_request(route or "-", "-", "-", status, duration)
        if not self.publish_scheduled and self.publisher is not None:
            self._schedule_publish()
        if self.access_log is not None:
            fields: dict[str, object] = {"route": route or None, "http.status": status}
            if status >= 400 and body:
                fields["error"] = body.decode("latin-1")
            fields["src.addr"] = down.peer_name()
            fields["duration"] = f"{duration * 1000:.0f}ms"
            self.access_log.emit(fields)

    def _schedule_publish(self) -> None:
        # Metrics reach /metrics within ~100 ms without a write to shared memory per request.
        self.publish_scheduled = True
        self.loop.call_later(PUBLISH_DELAY, self._publish)

    def _publish(self) -> None:
        self.publish_scheduled = False
        if self.publisher is not None:
            self.publisher.publish_now()

    def log_protocol_error(self, peer: str, status: int, message: str) -> None:
        logger.info("rejected request from %s: %d %s", peer, status, message)

    # -- housekeeping -------------------------------------------------------------------------

    def housekeeping(self) -> None:
        """Once a second: expire idle upstream and client connections, publish metrics."""
        self.pool.sweep()
        deadline = self.loop.time() - self.idle_timeout
        for connection in [
            c for c in self.connections
            if c.last_active < deadline or 0.0 < c.head_started < deadline
        ]:
            if connection.head_started and connection.last_active >= deadline:
                # A request head must be complete within the idle timeout of its first
                # byte, as agentgateway bounds it (hyper's header read timeout): a client
                # sending a byte now and then would otherwise hold the connection forever.
                logger.info(
                    "closing connection from %s: request head incomplete after %gs",
                    connection.peer_name(), self.idle_timeout,
                )
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
    registry = MetricsRegistry()
    publisher = None
    if slots is not None:
        registry.restore(slots.read(index))
        publisher = Publisher(registry, slots, index)
        publisher.publish_now()
    ctx = WorkerContext(loop, config, registry, publisher)
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
    if ctx.access_log is not None:
        ctx.access_log.flush()
    if publisher is not None:
        publisher.publish_now()
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
