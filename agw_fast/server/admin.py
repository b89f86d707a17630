"""Stats (`/metrics`), readiness (`/healthz/ready`) and admin endpoints, in their own process.

Forked by the supervisor beside the workers, so scraping never competes with the data plane
for a worker's loop. `/metrics` sums the series each worker keeps in shared memory, and
reads each worker's `process_*` metrics from /proc. `/logging` (POST) shows and changes the
log level of every process, as agentgateway's admin endpoint does (Envoy's form).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import parse_qs

import h11
import uvloop

from agw_fast.config.model import Config
from agw_fast.config.validate import split_host_port
from agw_fast.log import apply_log_directive, logger, normalize_log_directive
from agw_fast.server.reload import ReloadState, receive_latest
from agw_fast.telemetry.process import read_process, render_process_metrics
from agw_fast.telemetry.prometheus import CONTENT_TYPE, render_build_info, render_prometheus
from agw_fast.telemetry.shared_slots import SharedSlots

__all__ = ["LOG_APPLY_TIMEOUT", "admin_child", "parse_address"]

Reply = tuple[int, bytes, bytes]  # status, content type, body
# (method, path, query) -> a reply, or an awaitable one (the connection waits for it).
Handler = Callable[[str, str, str], Reply | Awaitable[Reply]]
# How long `/logging` waits for every worker to apply a new level (they look once a second).
LOG_APPLY_TIMEOUT = 3.0


def parse_address(address: str) -> tuple[str, int]:
    """`"[::]:15020"`, `"0.0.0.0:15020"`, `"localhost:15000"` -> (host, port)."""
    host, port = split_host_port(address, "adminAddr", port_required=True, min_port=0)
    assert port is not None
    return host or "::", port


class _AdminProtocol(asyncio.Protocol):
    """A deliberately plain h11 server: one response per request, then the next."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[Reply] | None = None  # a reply being prepared

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.waiting is None:
            self._process()

    def _reply(self, reply: Reply) -> None:
        if self.transport is None:
            return
        status, content_type, body = reply
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        out = self.conn.send(h11.Response(status_code=status, headers=headers))
        out = (out or b"") + (self.conn.send(h11.Data(data=body)) or b"")
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.transport.write(out)

    def _replied(self, future: asyncio.Future[Reply]) -> None:
        self.waiting = None
        try:
            reply = future.result()
        except Exception:
            logger.exception("internal error in an admin endpoint")
            reply = 500, b"text/plain", b"internal error\n"
        self._reply(reply)
        self._process()  # requests that arrived meanwhile

    def _process(self) -> None:
        while self.transport is not None:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.transport.close()
                return
            if isinstance(event, h11.Request):
                path, _, query = event.target.decode("latin-1").partition("?")
                reply = self.handler(event.method.decode(), path, query)
                if isinstance(reply, tuple):
                    self._reply(reply)
                else:
                    self.waiting = asyncio.ensure_future(reply)
                    self.waiting.add_done_callback(self._replied)
                    return
            elif isinstance(event, h11.EndOfMessage):
                if self.conn.our_state is h11.MUST_CLOSE:
                    self.transport.close()
                    return
                self.conn.start_next_cycle()
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


class _Live:
    """The config the admin endpoints describe, replaced as reloads arrive."""

    def __init__(self, config: Config) -> None:
        self.config = config


def _build_tag() -> str:
    try:
        return importlib.metadata.version("agw-fast")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _stats_handler(
    slots: SharedSlots, state: ReloadState | None, extra: Callable[[], bytes] | None = None
) -> Handler:
    build_info = render_build_info(_build_tag())
    supervisor = os.getppid()

    def handle(method: str, path: str, query: str) -> Reply:
        if path in ("/metrics", "/stats/prometheus"):
            # Workers count straight into shared memory: every request that finished is in.
            body = build_info + render_prometheus(slots.read_all())
            if state is not None:
                body += state.render()
            if extra is not None:
                body += extra()
            workers = []
            for index in range(slots.n_slots):
                pid = slots.pid(index)
                stats = read_process(pid, supervisor) if pid else None
                if stats is not None:
                    workers.append((index, stats))
            body += render_process_metrics(workers)
            return 200, CONTENT_TYPE.encode(), body
        return 404, b"text/plain", b"not found\n"

    return handle


def _readiness_handler(slots: SharedSlots, state: ReloadState | None) -> Handler:
    def handle(method: str, path: str, query: str) -> Reply:
        if path != "/healthz/ready":
            return 404, b"text/plain", b"not found\n"
        if method != "GET":
            return 405, b"text/plain", b"method not allowed\n"
        # Ready once every worker has started and serves the current config (a reload
        # makes it not ready until every worker has swapped it in).
        lagging = set(state.lagging()) if state is not None else set()
        pending = [
            str(i) for i in range(slots.n_slots) if not slots.is_attached(i) or i in lagging
        ]
        if pending:
            return 500, b"text/plain", f"not ready, pending: workers {pending}\n".encode()
        return 200, b"text/plain", b"ready\n"

    return handle


_LOGGING_HELP = (
    "usage: POST /logging                          (the current level)\n"
    "usage: POST /logging?level=<level>            (the level of every logger)\n"
    "usage: POST /logging?level=<target>=<level>,... (one target's level; targets are\n"
    "       logger names such as agw_fast.proxy, and request, the access log)\n"
    "usage: POST /logging?reset[&level=...]        (back to the config's level first)\n"
    "levels: error|warn|info|debug|trace|off\n"
)


class _Logging:
    """`/logging`: the directive every process applies (published in `ReloadState`)."""

    def __init__(self, config: Config, state: ReloadState | None) -> None:
        self.state = state
        try:
            self.default = normalize_log_directive(config.static.logging.level or "info")
        except ValueError:  # targets of agentgateway's own (Rust module paths)
            self.default = normalize_log_directive(config.static.logging.level.split(",")[0])
        if state is not None:
            generation, directive = state.log_directive()
            if generation:  # a replaced admin process: what `/logging` set still holds
                apply_log_directive(directive)

    def current(self) -> str:
        if self.state is not None:
            generation, directive = self.state.log_directive()
            if generation:
                return directive
        return self.default

    def listing(self) -> Reply:
        return 200, b"text/plain", f"current log level is {self.current()}\n".encode()

    def handle(self, method: str, query: str) -> Reply | Awaitable[Reply]:
        if method != "POST":
            return 405, b"text/plain", b"method not allowed\n"
        params = parse_qs(query, keep_blank_values=True)
        level = params.get("level", [""])[-1]
        reset = "reset" in params
        if not level and not reset:
            return self.listing()
        base = self.default if reset else self.current()
        try:
            directive = normalize_log_directive(f"{base},{level}" if level else base)
        except ValueError:
            body = f"Invalid level provided: {level}\n{_LOGGING_HELP}"
            return 400, b"text/plain", body.encode()
        logger.warning("log level set to %s", directive)
        if self.state is None:
            apply_log_directive(directive)
            return self.listing()
        generation = self.state.set_log_directive(directive)
        apply_log_directive(directive)  # this process's own lines
        return self._applied(generation)

    async def _applied(self, generation: int) -> Reply:
        """Answer once every worker has applied it (each looks once a second)."""
        assert self.state is not None
        deadline = time.monotonic() + LOG_APPLY_TIMEOUT
        while self.state.log_lagging(generation) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lagging = self.state.log_lagging(generation)
        if lagging:
            body = f"current log level is {self.current()} (not yet applied by workers {lagging})\n"
            return 200, b"text/plain", body.encode()
        return self.listing()


def _admin_handler(live: _Live, logging_level: _Logging) -> Handler:
    def handle(method: str, path: str, query: str) -> Reply | Awaitable[Reply]:
        if path == "/logging":
            return logging_level.handle(method, query)
        if path == "/config_dump":
            dumped = dataclasses.asdict(live.config)
            _redact(dumped)
            return 200, b"application/json", json.dumps(dumped, default=repr).encode()
        if path == "/quitquitquit":
            if method != "POST":
                return 405, b"text/plain", b"method not allowed\n"
            os.kill(os.getppid(), signal.SIGTERM)
            return 200, b"text/plain", b"OK\n"
        return 404, b"text/plain", b"not found\n"

    return handle


# backendAuth's key; apiKey's key list (digests and metadata, as agentgateway redacts its
# whole map of users); basicAuth's htpasswd entries.
_SECRET_FIELDS = frozenset({"key", "keys", "htpasswd"})


def _redact(value: object) -> None:
    """Secrets never leave the process, not even on the admin port."""
    if isinstance(value, dict):
        for key in value:
            if key in _SECRET_FIELDS and value[key] is not None:
                value[key] = "<redacted>"
            else:
                _redact(value[key])
    elif isinstance(value, list | tuple):
        for item in value:
            _redact(item)


async def _serve(
    config: Config,
    slots: SharedSlots,
    state: ReloadState | None,
    channel: socket.socket | None,
    extra: Callable[[], bytes] | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    static = config.static
    live = _Live(config)
    plan = [
        ("stats", static.stats_addr, _stats_handler(slots, state, extra)),
        ("readiness", static.readiness_addr, _readiness_handler(slots, state)),
        ("admin", static.admin_addr, _admin_handler(live, _Logging(config, state))),
    ]
    servers = []
    for name, address, handler in plan:
        if address is None:
            continue
        host, port = parse_address(address)
        try:
            server = await loop.create_server(
                lambda h=handler: _AdminProtocol(h),  # type: ignore[misc]
                host,
                port,
                reuse_address=True,
            )
            servers.append(server)
            bound = server.sockets[0].getsockname()
            logger.warning("%s listening on %s port %d", name, bound[0], bound[1])
        except OSError as error:
            logger.error("cannot listen on %s: %s", address, error.strerror or error)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if channel is not None:
        generation = state.target if state is not None else 0

        def take_updates() -> None:
            nonlocal generation
            try:
                update = receive_latest(channel, generation)
            except (OSError, ValueError, EOFError) as error:
                logger.error("stats/admin process: bad config update: %s", error)
                loop.remove_reader(channel.fileno())
                return
            if update is not None:
                update.close()
                generation, live.config = update.generation, update.config

        loop.add_reader(channel.fileno(), take_updates)
    await stop.wait()
    for server in servers:
        server.close()
    return 0


AdminMain = Callable[[SharedSlots, ReloadState | None, socket.socket | None], int]


def admin_child(
    config: Config, extra_metrics: Callable[[], bytes] | None = None
) -> AdminMain | None:
    """The supervisor's extra child serving the configured addresses, or None if all off.
    It is given the workers' metric slots, the reload state (readiness, the
    `config_synchronized` gauge) and the channel reloaded configs arrive on.
    `extra_metrics` gives more series for `/metrics` (the shared limits store's)."""
    static = config.static
    if static.stats_addr is None and static.readiness_addr is None and static.admin_addr is None:
        return None

    def run(
        slots: SharedSlots, state: ReloadState | None = None, channel: socket.socket | None = None
    ) -> int:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(config, slots, state, channel, extra_metrics))

    return run
