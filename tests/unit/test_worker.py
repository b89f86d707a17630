"""server/worker.py on real sockets: what the worker's stop does to a client connection."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import uvloop

from agw_fast.config.model import Bind, Config, HostBackend, Listener, Route, RouteBackend
from agw_fast.plan import compile_config
from agw_fast.proxy.downstream import DownstreamProtocol, LiveBind
from agw_fast.server.listener import DescriptorBudget
from agw_fast.server.worker import WorkerContext, _drain, _protocol_factory
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.recorder import Recorder

BACKEND = HostBackend("up.example", 9000)
CONFIG = Config(
    binds=(
        Bind(
            8080,
            (
                Listener(
                    "main",
                    hostname="gw.local",
                    routes=(Route(name="api", backends=(RouteBackend(BACKEND),)),),
                ),
            ),
        ),
    )
)


def test_a_connection_accepted_just_before_the_stop_closes_after_one_answer() -> None:
    async def exchange() -> bytes:
        loop = asyncio.get_running_loop()
        (bind,) = compile_config(CONFIG)
        ctx = WorkerContext(loop, CONFIG, Recorder(MetricsRegistry(), None))
        ours, theirs = socket.socketpair()
        # uvloop calls the protocol factory as it accepts, and connection_made only later:
        # the stop can begin in between, before the connection is in `ctx.connections`.
        protocol = DownstreamProtocol(ctx, bind)
        ctx.begin_stop()
        await loop.connect_accepted_socket(lambda: protocol, ours)
        reader, writer = await asyncio.open_connection(sock=theirs)
        try:
            # A host no listener serves: answered locally, no upstream needed.
            writer.write(b"GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n" * 2)
            try:
                return await asyncio.wait_for(reader.read(), 2)  # until the gateway closes
            except TimeoutError:
                return b"still open"
        finally:
            writer.close()
            protocol.abort()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answer = runner.run(exchange())
    assert answer.startswith(b"HTTP/1.1 404 "), answer
    assert answer.count(b"HTTP/1.1") == 1, "one answer, then the connection closes"
    assert b"connection: close\r\n" in answer


def test_the_drain_waits_for_a_connection_accepted_but_not_yet_made() -> None:
    async def exchange() -> tuple[bool, bytes]:
        loop = asyncio.get_running_loop()
        (bind,) = compile_config(CONFIG)
        ctx = WorkerContext(loop, CONFIG, Recorder(MetricsRegistry(), None))
        budget = DescriptorBudget(loop, ctx.pool, 1)
        # uvloop has accepted a connection (called the factory); its connection_made is still
        # to come when the stop begins.
        protocol = _protocol_factory(ctx, LiveBind(bind), budget)()
        drain = loop.create_task(_drain(0, CONFIG, ctx, [], None))
        await asyncio.sleep(0.1)
        drained_early = drain.done()
        ours, theirs = socket.socketpair()
        await loop.connect_accepted_socket(lambda: protocol, ours)
        reader, writer = await asyncio.open_connection(sock=theirs)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 2)
            await asyncio.wait_for(drain, 2)
        finally:
            writer.close()
            cast(DownstreamProtocol, protocol).abort()
            budget.close()
        return drained_early, answer

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        drained_early, answer = runner.run(exchange())
    assert not drained_early, "the worker would have exited with the connection unanswered"
    assert answer.startswith(b"HTTP/1.1 404 ") and b"connection: close\r\n" in answer
