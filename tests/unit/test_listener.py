"""server/listener.py on real loopback sockets: who accepts, and how a listener closes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import cast

import pytest
import uvloop

from agw_fast.server.listener import DescriptorBudget, Listener
from agw_fast.server.sockets import open_listen_socket


class Greeter(asyncio.Protocol):
    """Answers each read with `hello <bytes>` and counts its connections."""

    made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Greeter.made += 1
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"hello " + data)


def run(test: Coroutine[object, object, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(test)


async def start_listener() -> tuple[Listener, DescriptorBudget, set[asyncio.Task[None]]]:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Coroutine[object, object, None]) -> None:
        task = loop.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    budget = DescriptorBudget(loop, set(), lambda: 0)
    listener = Listener(loop, open_listen_socket("127.0.0.1", 0, False), Greeter, budget, spawn)
    await listener.start()
    budget.start()
    return listener, budget, tasks


async def ask(port: int, text: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(text)
    answer = await reader.readexactly(len(text) + 6)
    writer.close()
    return answer


def test_close_serves_the_queued_connections_then_the_port_refuses() -> None:
    async def test() -> None:
        listener, budget, tasks = await start_listener()
        port = listener.sock.getsockname()[1]
        # The kernel completes these handshakes while the loop is not running: they sit in
        # the accept queue when the window ends.
        queued = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for i, sock in enumerate(queued):
            sock.sendall(b"%d" % i)
        before = Greeter.made
        listener.close(shutdown=True)
        budget.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        await asyncio.gather(*tasks)
        assert Greeter.made == before + 3
        for i, sock in enumerate(queued):
            sock.setblocking(False)
            answer = await asyncio.get_running_loop().sock_recv(sock, 100)
            assert answer == b"hello %d" % i
            sock.close()

    run(test())


def test_guarded_listener_accepts_itself_and_hands_back_to_uvloop() -> None:
    async def test() -> None:
        listener, budget, tasks = await start_listener()
        port = listener.sock.getsockname()[1]
        assert listener.server is not None and not listener.watching
        assert await ask(port, b"uvloop") == b"hello uvloop"
        budget.guard()
        assert listener.server is None and listener.watching
        assert await ask(port, b"guarded") == b"hello guarded"
        budget.unguard(budget.threshold())
        await asyncio.gather(*tasks)
        assert listener.server is not None and not listener.watching
        assert await ask(port, b"again") == b"hello again"
        listener.close(shutdown=True)
        budget.close()

    run(test())


def test_a_worker_short_of_descriptors_guards_from_the_start() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        budget = DescriptorBudget(loop, set(), lambda: 1_000_000)  # more than any limit
        sock = open_listen_socket("127.0.0.1", 0, False)
        listener = Listener(loop, sock, Greeter, budget, lambda work: None)
        await listener.start()
        budget.start()
        assert budget.guarded and listener.watching and listener.server is None
        listener.close(shutdown=True)
        budget.close()

    run(test())
