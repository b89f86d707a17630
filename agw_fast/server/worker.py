"""One pre-forked worker: a uvloop event loop serving the listening sockets it inherited.

Everything per-request lives in the protocol classes; this module owns what a worker has
once: the upstream pool, the set of client connections (for idle expiry and draining), the
request recorder (metrics in its shared-memory slot, the access log). The lifecycle (start,
respawn, drain, stop) is told once, on `agw_fast.server.supervisor.Supervisor`; the worker's
part is `_serve` (start), `_drain` with `WorkerContext.begin_stop` and `housekeeping` (drain
and stop), and `agw_fast.server.listener` (how many connections a worker takes, and how a
listener closes).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine

import uvloop

from agw_fast.config.model import Config
from agw_fast.log import logger
from agw_fast.plan import RuntimeBind
from agw_fast.policies.access_log import compile_access_log
from agw_fast.proxy.downstream import DownstreamProtocol
from agw_fast.proxy.pool import UpstreamPool
from agw_fast.server.aws_credentials import AwsCredentialRefresher
from agw_fast.server.google_token import GoogleTokenRefresher
from agw_fast.server.jwks import JwksRefresher
from agw_fast.server.listener import DescriptorBudget, Listener, dropped_connection
from agw_fast.server.supervisor import StopFlag
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.record import RequestRecorder
from agw_fast.telemetry.recorder import Recorder
from agw_fast.telemetry.shared_slots import SharedSlots

__all__ = ["WorkerContext", "run_worker", "worker_recorder"]

HOUSEKEEPING_INTERVAL = 1.0
DRAIN_POLL = 0.05  # seconds between looks at what is left while draining


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
    policy = compile_access_log(config.frontend.access_log) if access_log is not None else None
    return Recorder(registry, access_log, policy, config.static.model_catalog)


class WorkerContext:
    """What one worker has once and lends every connection (`ConnectionServices`): the loop,
    the upstream pool, the open client connections, the recorder, Tasks it holds, and the
    once-a-second housekeeping that expires idle connections and slow heads."""

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
            keepalive=backend.keepalive,
        )
        self.connections: set[DownstreamProtocol] = set()
        self.open_clients = 0  # see `ConnectionServices.open_clients`
        self.idle_timeout = config.frontend.http1_idle_timeout
        self.recorder = recorder  # told about every finished request
        self.stopping = False
        self.stop_began = 0.0
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
        """Once a second, draining included: expire idle upstream and client connections."""
        self.loop.call_later(HOUSEKEEPING_INTERVAL, self.housekeeping)
        self.pool.sweep()
        now = self.loop.time()
        quiet_since = now - HOUSEKEEPING_INTERVAL
        if self.stopping and self.stop_began < quiet_since:
            # A connection with no request begun has nothing left to wait for, but may have
            # been accepted a moment ago (just before the stop, in the drain window, or from
            # the queue at its end): it gets one interval to begin its request.
            for connection in [
                c for c in self.connections if c.last_active < quiet_since and c.between_requests()
            ]:
                connection.abort()
        deadline = now - self.idle_timeout
        for connection in [
            c for c in self.connections
            # A connection we stopped reading from (its upstream is slow to take the body)
            # waits on us, not the client.
            if (c.last_active < deadline or 0.0 < c.head_started < deadline)
            and not c.read_pauses
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
            # expires; one waiting for its upstream is bounded by the timeout policies, and
            # one a `delay` policy holds, by its delay.
            if connection.delay_timer is None and (
                exchange is None or not exchange.request_done
            ):
                connection.abort()

    def begin_stop(self) -> None:
        """Close idle keep-alive connections (one that has not sent anything yet gets an
        interval, see `housekeeping`); every other one (and every one accepted from now on,
        see `DownstreamProtocol.connection_made`) closes after its current response, sent
        with `connection: close`."""
        self.stopping = True
        self.stop_began = self.loop.time()
        for connection in list(self.connections):
            connection.stop_taking_requests()


def _protocol_factory(
    ctx: WorkerContext, bind: RuntimeBind, budget: DescriptorBudget
) -> Callable[[], asyncio.Protocol]:
    """uvloop calls this as it accepts a connection (its `connection_made` comes in a later
    callback): counting here, no accepted connection escapes `DescriptorBudget`."""

    plain = bind.ssl_context is None

    def make() -> asyncio.Protocol:
        if not budget.admit(ctx.open_clients):
            return dropped_connection()
        protocol = DownstreamProtocol(ctx, bind)
        if plain:
            # Counted now; an HTTPS connection is counted when its handshake completes, as
            # one whose handshake fails never reaches the protocol (nor its connection_lost).
            ctx.open_clients += 1
            protocol.counted = True
        return protocol

    return make


async def _serve(
    index: int,
    config: Config,
    binds: list[tuple[socket.socket, RuntimeBind]],
    slots: SharedSlots | None,
    stop_flag: StopFlag | None,
) -> int:
    loop = asyncio.get_running_loop()
    recorder = worker_recorder(loop, config, slots, index)
    ctx = WorkerContext(loop, config, recorder)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    budget = DescriptorBudget(loop, ctx.pool, len(binds))
    ctx.pool.before_connect = lambda: budget.make_room(ctx.open_clients)
    handshake = config.frontend.tls_handshake_timeout
    listeners = [
        Listener(
            loop, sock, _protocol_factory(ctx, bind, budget), ctx.spawn,
            None if bind.ssl_context is None else (bind.ssl_context, handshake),
        )
        for sock, bind in binds
    ]
    for listener in listeners:
        await listener.start()
    loop.call_later(HOUSEKEEPING_INTERVAL, ctx.housekeeping)
    jwks = JwksRefresher(loop)
    aws = AwsCredentialRefresher(loop)
    # Vertex AI models: one Google access token for the config, kept fresh by each worker.
    google_token = next((b.google_token for _, b in binds if b.google_token is not None), None)
    token_refresher = None if google_token is None else GoogleTokenRefresher(loop, google_token)
    await stop.wait()
    jwks.close()
    aws.close()
    if token_refresher is not None:
        token_refresher.close()
    await _drain(index, config, ctx, listeners, stop_flag)
    budget.close()
    ctx.pool.close_all()
    if recorder.access_log is not None:
        recorder.access_log.flush()
    return 0


async def _drain(
    index: int,
    config: Config,
    ctx: WorkerContext,
    listeners: list[Listener],
    stop_flag: StopFlag | None,
) -> None:
    """The worker's part of a stop (see `Supervisor` for the whole sequence)."""
    window = config.static.connection_min_termination_deadline
    ctx.begin_stop()
    logger.info(
        "worker %d draining: %d connections open; new connections accepted for %gs",
        index, len(ctx.connections), window,
    )
    if window > 0:
        await asyncio.sleep(window)
    # Shut the listening sockets down only if the whole gateway stops: they are shared with
    # the supervisor (and in shared mode with every worker), see `Listener.close`.
    everyone = stop_flag is not None and stop_flag.is_set()
    for listener in listeners:
        listener.close(shutdown=everyone)
    loop = ctx.loop
    deadline = loop.time() + config.static.connection_termination_deadline
    # open_clients, not connections: uvloop may have accepted a connection whose
    # connection_made has yet to run. ctx.tasks: those the listeners took at the end of the
    # window are still being set up.
    while (ctx.open_clients > 0 or ctx.tasks) and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL)
    for connection in list(ctx.connections):
        connection.abort()


def run_worker(
    index: int,
    config: Config,
    binds: list[tuple[socket.socket, RuntimeBind]],
    slots: SharedSlots | None,
    stop_flag: StopFlag | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT, then drain and return its exit code.

    `stop_flag` says whether the whole gateway is stopping (else only this worker is)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(index, config, binds, slots, stop_flag))
