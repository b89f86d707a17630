"""server/listener.py on real loopback sockets: how many connections a worker takes, and how a
listener closes at the end of the drain window."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Coroutine
from typing import cast

import pytest
import uvloop

from agw_fast.proxy.pool import UpstreamPool
from agw_fast.proxy.upstream import UpstreamConnection
from agw_fast.server.listener import (
    REPORT_INTERVAL,
    DescriptorBudget,
    Listener,
    dropped_connection,
)
from agw_fast.server.sockets import open_listen_socket


class Greeter(asyncio.Protocol):
    """Answers each read with `hello <bytes>`; `open` counts its connections."""

    made = 0
    open = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Greeter.made += 1
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        Greeter.open -= 1

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"hello " + data)


def run(test: Coroutine[object, object, None]) -> None:
    loop = uvloop.new_event_loop()
    loop.run_until_complete(test)
    # Only once the test passed: after a failure, with connections left open, uvloop's close
    # can wait for them forever (seen under pytest), and a failing test must fail, not hang.
    loop.close()


def new_pool(loop: asyncio.AbstractEventLoop) -> UpstreamPool:
    return UpstreamPool(loop, connect_timeout=1.0, idle_timeout=60.0, max_idle=None)


def budgeted_greeter(budget: DescriptorBudget) -> asyncio.Protocol:
    """The worker's protocol factory, with a Greeter for a client connection."""
    if not budget.admit(Greeter.open):
        return dropped_connection()
    Greeter.open += 1
    return Greeter()


async def start_listener(
    sock: socket.socket | None = None,
) -> tuple[Listener, set[asyncio.Task[None]]]:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(work: Coroutine[object, object, None]) -> None:
        task = loop.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    if sock is None:
        sock = open_listen_socket("127.0.0.1", 0, False)
    listener = Listener(loop, sock, Greeter, spawn)
    await listener.start()
    return listener, tasks


async def ask(sock: socket.socket, text: bytes) -> bytes:
    """Send `text` on a connected socket: b"hello <text>", or b"" if the gateway dropped it."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    try:
        await loop.sock_sendall(sock, text)
        return await asyncio.wait_for(loop.sock_recv(sock, 100), 5)
    except ConnectionError:
        return b""


def test_close_serves_the_queued_connections_then_the_port_refuses() -> None:
    async def test() -> None:
        listener, tasks = await start_listener()
        port = listener.sock.getsockname()[1]
        # The kernel completes these handshakes while the loop is not running: they sit in
        # the accept queue when the window ends.
        queued = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        before = Greeter.made
        listener.close(shutdown=True)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        await asyncio.gather(*tasks)
        assert Greeter.made == before + 3
        for i, sock in enumerate(queued):
            assert await ask(sock, b"%d" % i) == b"hello %d" % i
            sock.close()

    run(test())


def test_a_worker_stopping_alone_leaves_the_socket_listening_for_the_others() -> None:
    async def test() -> None:
        sock = open_listen_socket("127.0.0.1", 0, False)
        supervisors_copy = sock.dup()  # what the other workers, and a replacement, accept from
        listener, tasks = await start_listener(sock)
        port = sock.getsockname()[1]
        queued = socket.create_connection(("127.0.0.1", port))
        listener.close(shutdown=False)
        await asyncio.gather(*tasks)
        assert await ask(queued, b"queued") == b"hello queued"
        later = socket.create_connection(("127.0.0.1", port), timeout=5)  # not refused
        replacement, _ = await start_listener(supervisors_copy)
        assert await ask(later, b"later") == b"hello later"
        for each in (queued, later):
            each.close()
        replacement.close(shutdown=True)

    run(test())


def test_a_burst_of_queued_connections_is_cut_at_the_cap_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        budget = DescriptorBudget(loop, new_pool(loop), 1)
        budget.sockets, budget.cap = 10, 5
        Greeter.open = 0
        sock = open_listen_socket("127.0.0.1", 0, False)
        port = sock.getsockname()[1]
        # Queued before anyone accepts: uvloop calls the factory for each as it accepts,
        # possibly for several before any of their connection_made.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        listener = Listener(loop, sock, lambda: budgeted_greeter(budget), lambda _: None)
        await listener.start()
        answers = [await ask(client, b"%d" % i) for i, client in enumerate(clients)]
        assert [a for a in answers if a] == [b"hello %d" % i for i in range(5)]
        assert Greeter.open == 5
        clients[0].close()  # one client leaves: room for one more
        while Greeter.open > 4:
            await asyncio.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port)) as another:
            assert await ask(another, b"again") == b"hello again"
        await asyncio.sleep(REPORT_INTERVAL * 1.5)  # the loop's own timers: the last line is out
        listener.close(shutdown=True)
        budget.close()
        for client in clients:
            client.close()

    with caplog.at_level(logging.WARNING, logger="agw_fast"):
        run(test())
    lines = [r.getMessage() for r in caplog.records if "out of file descriptors" in r.message]
    counts = [re.search(r"5 client connections open\): dropped (\d+) new", x) for x in lines]
    assert all(counts), lines
    assert sum(int(m[1]) for m in counts if m) == 15, lines


def test_the_queue_taken_at_the_end_of_the_window_is_cut_at_the_cap() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        budget = DescriptorBudget(loop, new_pool(loop), 1)
        budget.sockets, budget.cap = 4, 2
        Greeter.open = 0
        tasks: set[asyncio.Task[None]] = set()
        sock = open_listen_socket("127.0.0.1", 0, False)
        listener = Listener(loop, sock, lambda: budgeted_greeter(budget), tasks.add)
        port = sock.getsockname()[1]
        queued = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        listener.close(shutdown=True)
        assert len(tasks) == 2, "the three beyond the cap were closed as they were accepted"
        await asyncio.gather(*tasks)
        answers = [await ask(client, b"%d" % i) for i, client in enumerate(queued)]
        assert answers == [b"hello 0", b"hello 1", b"", b"", b""]
        budget.close()
        for client in queued:
            client.close()

    run(test())


def test_idle_upstream_connections_make_room_oldest_first() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        pool = new_pool(loop)
        budget = DescriptorBudget(loop, pool, 1)
        budget.sockets, budget.cap = 8, 4
        idle = {}
        for name, since in (("a-old", 1.0), ("a-new", 3.0), ("b-old", 2.0)):
            key = (name[0], 443, 0)
            connection = UpstreamConnection(key)
            connection.idle_since = since
            pool.idle.setdefault(key, []).append(connection)
            idle[name] = connection
        # 2 clients (4 descriptors) + 3 idle upstream connections fit in 8.
        assert budget.admit(1)
        assert not any(c.closed for c in idle.values())
        # A third client: 6 + 3 > 8, the oldest idle connection goes.
        assert budget.admit(2)
        assert [name for name, c in idle.items() if c.closed] == ["a-old"]
        budget.make_room(3)  # before an upstream connection opens with 3 clients: 6 + 2 fit
        assert [name for name, c in idle.items() if c.closed] == ["a-old"]
        assert budget.admit(3)  # the fourth client: 8 + 2 > 8
        assert all(c.closed for c in idle.values())
        assert not budget.admit(4)  # the cap
        budget.close()

    run(test())
