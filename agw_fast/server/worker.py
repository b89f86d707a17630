"""One pre-forked worker: a uvloop event loop serving the listening sockets it inherited.

Everything per-request lives in the protocol classes; this module owns what a worker has
once: the upstream pool, the set of client connections (for idle expiry and draining), the
request recorder (metrics in its shared-memory slot, the access log). The lifecycle (start,
respawn, drain, stop) is told once, on `agw_fast.server.supervisor.Supervisor`; the worker's
part is `_serve` (start), `_drain` with `WorkerContext.begin_stop` and `housekeeping` (drain
and stop), and `agw_fast.server.listener` (how many connections a worker takes, and how a
listener closes). A reload (`_Reloads`) swaps the compiled binds in place: each port's
`LiveBind` gets the new one (connections read it per request), TLS listeners get a new uvloop
server, binds added start listening and removed ones drain their queue and stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uvloop

from agw_fast.config.limits import SharedLimitsConfig
from agw_fast.config.model import Config, TracingPolicy
from agw_fast.log import apply_log_directive, logger
from agw_fast.plan import RuntimeBind, compile_config
from agw_fast.policies.access_log import compile_access_log
from agw_fast.policies.localratelimit import bucket_files
from agw_fast.policies.shared_limits import Limiter
from agw_fast.proxy.downstream import DownstreamProtocol, LiveBind
from agw_fast.proxy.pool import UpstreamPool
from agw_fast.server.aws_credentials import AwsCredentialRefresher
from agw_fast.server.google_token import GoogleTokenRefresher
from agw_fast.server.jwks import JwksRefresher
from agw_fast.server.listener import DescriptorBudget, Listener, dropped_connection
from agw_fast.server.reload import ReloadState, Update, receive_latest
from agw_fast.server.supervisor import StopFlag
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.record import RequestRecorder
from agw_fast.telemetry.recorder import Recorder
from agw_fast.telemetry.shared_slots import SharedSlots
from agw_fast.telemetry.store_status import StoreStatus
from agw_fast.telemetry.tracing import Tracer, start_tracer

if TYPE_CHECKING:
    from agw_fast.server.shared_store import SharedStore  # needs the `redis` extra

__all__ = ["SharedLimits", "WorkerContext", "WorkerControl", "run_worker", "worker_recorder"]

# The `--limits` buckets: the limiter the routes' steps use, its settings, `/metrics` status.
SharedLimits = tuple[Limiter, SharedLimitsConfig, StoreStatus]

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
        self.pool.on_connect = recorder.upstream_connect
        self.connections: set[DownstreamProtocol] = set()
        self.open_clients = 0  # see `ConnectionServices.open_clients`
        self.idle_timeout = config.frontend.http1_idle_timeout
        self.recorder = recorder  # told about every finished request
        # Built by `_serve` after the fork (the exporter's thread belongs to this process).
        self.tracer: Tracer | None = None
        self.stopping = False
        self.stop_began = 0.0
        self.tasks: set[asyncio.Task[None]] = set()  # upstream connections being opened
        self.on_housekeeping: Callable[[], None] | None = None  # the log level's watch

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
        if self.on_housekeeping is not None:
            self.on_housekeeping()
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
    ctx: WorkerContext, live: LiveBind, budget: DescriptorBudget
) -> Callable[[], asyncio.Protocol]:
    """uvloop calls this as it accepts a connection (its `connection_made` comes in a later
    callback): counting here, no accepted connection escapes `DescriptorBudget`."""

    plain = live.bind.ssl_context is None  # a reload changing it restarts the listener

    def make() -> asyncio.Protocol:
        if not budget.admit(ctx.open_clients):
            return dropped_connection()
        protocol = DownstreamProtocol(ctx, live)
        if plain:
            # Counted now; an HTTPS connection is counted when its handshake completes, as
            # one whose handshake fails never reaches the protocol (nor its connection_lost).
            ctx.open_clients += 1
            protocol.counted = True
        else:
            protocol.accepted_at = time.monotonic()  # the TLS handshake starts now
        return protocol

    return make


class _LogLevel:
    """Applies the log level the admin's `/logging` publishes (checked once a second, and
    at start: a replacement worker takes what was set), the access log included."""

    def __init__(
        self, index: int, state: ReloadState, served: _Served, recorder: Recorder
    ) -> None:
        self.index = index
        self.state = state
        self.served = served
        self.recorder = recorder
        self.generation = 0

    def check(self) -> None:
        generation, directive = self.state.log_directive()
        if generation == self.generation:
            return
        self.generation = generation
        try:
            request_log = apply_log_directive(directive)
        except ValueError:
            logger.error("worker %d: bad log level %r", self.index, directive)
        else:
            recorder = self.recorder
            if not request_log:
                if recorder.access_log is not None:
                    recorder.access_log.flush()
                recorder.access_log = None
            elif recorder.access_log is None:
                config = self.served.config
                recorder.access_log = AccessLog(self.served.loop, config.static.logging.format)
                recorder.policy = compile_access_log(config.frontend.access_log)
        self.state.set_log_applied(self.index, generation)


@dataclass
class WorkerControl:
    """A worker's side of hot reload: where updates arrive, where it says which config
    (generation) it serves, and the generation of the config it starts with."""

    channel: socket.socket
    state: ReloadState
    generation: int


def _shared_store(
    loop: asyncio.AbstractEventLoop, limiter: Limiter, shared: SharedLimits, index: int
) -> SharedStore:
    from agw_fast.server.shared_store import SharedStore

    return SharedStore(loop, limiter, shared[1], shared[2], index)


class _Served:
    """What the worker serves: each port's `LiveBind` and `Listener`, and the per-config
    services (JWKS, AWS and Google credential refreshers)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ctx: WorkerContext,
        budget: DescriptorBudget,
        config: Config,
        index: int = 0,
        shared: SharedLimits | None = None,
    ) -> None:
        self.loop = loop
        self.ctx = ctx
        self.budget = budget
        self.config = config
        self.index = index
        # `--limits`: its settings and status, and the store syncing the current limiter.
        self.shared = shared
        self.store: SharedStore | None = None
        if shared is not None:
            self.store = _shared_store(loop, shared[0], shared, index)
        self.live: dict[int, LiveBind] = {}
        self.listeners: dict[int, Listener] = {}
        self.jwks: JwksRefresher | None = None
        self.aws: AwsCredentialRefresher | None = None
        self.google: GoogleTokenRefresher | None = None

    def _tls(self, bind: RuntimeBind) -> tuple[ssl.SSLContext, float] | None:
        if bind.ssl_context is None:
            return None
        return bind.ssl_context, self.config.frontend.tls_handshake_timeout

    async def open(self, port: int, sock: socket.socket, bind: RuntimeBind) -> None:
        live = self.live[port] = LiveBind(bind)
        listener = Listener(
            self.loop, sock, _protocol_factory(self.ctx, live, self.budget), self.ctx.spawn,
            self._tls(bind),
        )
        self.listeners[port] = listener
        await listener.start()

    async def replace(self, port: int, bind: RuntimeBind) -> None:
        live = self.live[port]
        old, live.bind = live.bind, bind
        if old.ssl_context is not None or bind.ssl_context is not None:
            # uvloop holds the TLS context (and the factory, whether to count connections
            # at accept) from the server's start: serve the socket with a new server.
            await self.listeners[port].restart(
                _protocol_factory(self.ctx, live, self.budget), self._tls(bind)
            )

    def remove(self, port: int) -> None:
        """A bind the config no longer has: take what its queue holds, stop listening (a
        later connection is refused), and close its connections after their response."""
        live = self.live.pop(port)
        live.retired = True
        self.listeners.pop(port).close(shutdown=True)
        for connection in list(self.ctx.connections):
            if connection.live is live:
                connection.stop_taking_requests()

    def start_services(self, binds: list[RuntimeBind], previous: list[RuntimeBind]) -> None:
        self.stop_services()
        self.jwks = JwksRefresher(self.loop)
        self.aws = AwsCredentialRefresher(self.loop)
        # Vertex AI models: one Google access token for the config, kept fresh by each worker.
        token = next((b.google_token for b in binds if b.google_token is not None), None)
        before = next((b.google_token for b in previous if b.google_token is not None), None)
        if token is not None and before is not None and token is not before:
            # A reload: the token in use stays valid until the refresher replaces it.
            token.line, token.expires_at = before.line, before.expires_at
        self.google = None if token is None else GoogleTokenRefresher(self.loop, token)

    def attach_limits(self, runtime: list[RuntimeBind], config: Config) -> Limiter | None:
        """A reloaded runtime's `--limits` steps (before it serves); None without --limits.
        Raises ConfigError for a budget the new config cannot take."""
        if self.shared is None:
            return None
        from agw_fast.server.shared_store import attach

        return attach(runtime, config, self.shared[1])

    def swap_store(self, limiter: Limiter | None) -> None:
        """Sync the new limiter from now on; the old store gives its leases back."""
        if limiter is None or self.shared is None:
            return
        old, self.store = self.store, _shared_store(self.loop, limiter, self.shared, self.index)
        if old is not None:
            self.ctx.spawn(old.close())

    async def close_store(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    def stop_services(self) -> None:
        for service in (self.jwks, self.aws, self.google):
            if service is not None:
                service.close()
        self.jwks = self.aws = self.google = None


class _Reloads:
    """Takes updates off the worker's channel and swaps each new config in, one at a time
    (the latest of a burst only)."""

    def __init__(
        self, index: int, control: WorkerControl, served: _Served, recorder: Recorder
    ) -> None:
        self.index = index
        self.control = control
        self.served = served
        self.recorder = recorder
        self.generation = control.generation
        self.binds: list[RuntimeBind] = []
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        served.loop.add_reader(control.channel.fileno(), self._readable)

    def _readable(self) -> None:
        # Not read again until this swap is done (the reader is level-triggered).
        self.served.loop.remove_reader(self.control.channel.fileno())
        self.task = self.served.loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            while not self.closed:
                try:
                    update = receive_latest(self.control.channel, self.generation)
                except (OSError, ValueError, EOFError) as error:
                    logger.error("worker %d: bad config update: %s", self.index, error)
                    self._replace()
                    return
                if update is None:
                    return
                try:
                    await self._apply(update)
                except Exception:
                    logger.exception("worker %d failed to swap in the reloaded config", self.index)
                    self._replace()
                    return
                finally:
                    update.close()
        finally:
            self.task = None
            if not self.closed:
                self.served.loop.add_reader(self.control.channel.fileno(), self._readable)

    def _replace(self) -> None:
        """Stop this worker (draining as usual): the supervisor forks a replacement with the
        config it holds."""
        self.close()
        os.kill(os.getpid(), signal.SIGTERM)

    async def _apply(self, update: Update) -> None:
        served = self.served
        buckets, update.buckets = update.buckets, []
        try:
            with bucket_files(buckets):
                runtime = compile_config(update.config)
            limiter = served.attach_limits(runtime, update.config)
            if len(runtime) != len(update.ports):
                raise RuntimeError("the compiled binds do not match the update")
        except Exception as error:
            # The supervisor compiled this config, so only a file that changed in between
            # (a TLS key, say) gets here: this worker is replaced, and its replacement
            # starts with the config the supervisor holds.
            logger.error(
                "worker %d cannot apply the reloaded config: %s; replacing the worker",
                self.index, error,
            )
            self._replace()
            return
        previous = [live.bind for live in served.live.values()]
        served.config = config = update.config
        new = dict(zip(update.ports, runtime, strict=True))
        for port in [p for p in served.live if p not in new]:
            served.remove(port)
        for port, bind in new.items():
            if port in served.live:
                await served.replace(port, bind)
                continue
            sock = update.sockets.pop(port, None)
            if sock is None:
                # Serving the port without its socket would leave connections queued on it
                # unanswered: replaced, this worker starts with every socket.
                raise RuntimeError(f"no socket received for new port {port}")
            await served.open(port, sock, bind)
        ctx = served.ctx
        ctx.idle_timeout = config.frontend.http1_idle_timeout
        if self.recorder.access_log is not None:
            self.recorder.policy = compile_access_log(config.frontend.access_log)
        self.recorder.catalog = config.static.model_catalog  # re-read with every reload
        _swap_tracer(ctx, config)
        served.start_services(runtime, previous)
        served.swap_store(limiter)
        self.generation = update.generation
        self.control.state.set_serving(self.index, update.generation)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.served.loop.remove_reader(self.control.channel.fileno())  # if it is there

    async def settle(self) -> None:
        """Let a swap under way finish (a stop waits for it)."""
        self.close()
        task = self.task
        if task is not None:
            await asyncio.wait([task])


async def _serve(
    index: int,
    config: Config,
    binds: list[tuple[socket.socket, RuntimeBind]],
    slots: SharedSlots | None,
    stop_flag: StopFlag | None,
    control: WorkerControl | None,
    shared: SharedLimits | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    recorder = worker_recorder(loop, config, slots, index)
    ctx = WorkerContext(loop, config, recorder)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    budget = DescriptorBudget(loop, ctx.pool, len(binds))
    ctx.pool.before_connect = lambda: budget.make_room(ctx.open_clients)
    served = _Served(loop, ctx, budget, config, index, shared)
    for sock, bind in binds:
        await served.open(sock.getsockname()[1], sock, bind)
    loop.call_later(HOUSEKEEPING_INTERVAL, ctx.housekeeping)
    ctx.tracer = start_tracer(_tracing(config))
    served.start_services([bind for _, bind in binds], [])
    reloads = None
    if control is not None:
        log_level = _LogLevel(index, control.state, served, recorder)
        log_level.check()
        ctx.on_housekeeping = log_level.check
        control.state.set_serving(index, control.generation)  # readiness
        reloads = _Reloads(index, control, served, recorder)
    await stop.wait()
    if reloads is not None:
        await reloads.settle()
    served.stop_services()
    await _drain(index, served.config, ctx, list(served.listeners.values()), stop_flag)
    await served.close_store()  # leases go back to the fleet
    budget.close()
    ctx.pool.close_all()
    if recorder.access_log is not None:
        recorder.access_log.flush()
    if ctx.tracer is not None:
        ctx.tracer.shutdown()  # the spans of the requests drained, within a bounded wait
    return 0


def _tracing(config: Config) -> TracingPolicy | None:
    """`frontendPolicies.tracing`, else `config.tracing` (the loader refuses both)."""
    return config.frontend.tracing or config.static.tracing


def _swap_tracer(ctx: WorkerContext, config: Config) -> None:
    """A reload: a changed tracing policy gets a new tracer (requests in flight finish
    their spans on the old one, which then flushes and closes in the background)."""
    policy = _tracing(config)
    old = ctx.tracer
    if (None if old is None else old.compiled.policy) == policy:
        return
    ctx.tracer = start_tracer(policy)
    if old is not None:
        old.retire()


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
    control: WorkerControl | None = None,
    shared: SharedLimits | None = None,
) -> int:
    """Run one worker until SIGTERM/SIGINT, then drain and return its exit code.

    `stop_flag` says whether the whole gateway is stopping (else only this worker is);
    `control`, where reloaded configs arrive (None: the config never changes)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(index, config, binds, slots, stop_flag, control, shared))
