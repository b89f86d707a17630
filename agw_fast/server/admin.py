"""Stats (`/metrics`), readiness (`/healthz/ready`) and admin endpoints, in their own process.

Forked by the supervisor beside the workers, so scraping never competes with the data plane
for a worker's loop. `/metrics` sums the series each worker keeps in shared memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
from collections.abc import Callable
from typing import cast

import h11
import uvloop

from agw_fast.config.model import Config
from agw_fast.config.validate import split_host_port
from agw_fast.log import logger
from agw_fast.server.reload import ReloadState, receive_latest
from agw_fast.telemetry.prometheus import CONTENT_TYPE, render_prometheus
from agw_fast.telemetry.shared_slots import SharedSlots

__all__ = ["admin_child", "parse_address"]

Handler = Callable[[str, str], tuple[int, bytes, bytes]]  # (method, path) -> status, type, body


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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.transport.close()
                return
            if isinstance(event, h11.Request):
                target = event.target.decode("latin-1").split("?", 1)[0]
                status, content_type, body = self.handler(event.method.decode(), target)
                headers = [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(body)),
                ]
                out = self.conn.send(h11.Response(status_code=status, headers=headers))
                out = (out or b"") + (self.conn.send(h11.Data(data=body)) or b"")
                out += self.conn.send(h11.EndOfMessage()) or b""
                self.transport.write(out)
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


def _stats_handler(
    slots: SharedSlots, state: ReloadState | None, extra: Callable[[], bytes] | None = None
) -> Handler:
    def handle(method: str, path: str) -> tuple[int, bytes, bytes]:
        if path in ("/metrics", "/stats/prometheus"):
            # Workers count straight into shared memory: every request that finished is in.
            body = render_prometheus(slots.read_all())
            if state is not None:
                body += state.render()
            if extra is not None:
                body += extra()
            return 200, CONTENT_TYPE.encode(), body
        return 404, b"text/plain", b"not found\n"

    return handle


def _readiness_handler(slots: SharedSlots, state: ReloadState | None) -> Handler:
    def handle(method: str, path: str) -> tuple[int, bytes, bytes]:
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


def _admin_handler(live: _Live) -> Handler:
    def handle(method: str, path: str) -> tuple[int, bytes, bytes]:
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
        ("admin", static.admin_addr, _admin_handler(live)),
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
