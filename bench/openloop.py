"""Open-loop load at a fixed offered rate, free of coordinated omission.

Request *i* is scheduled at `t0 + i / rate` whatever happened before. It goes out on an idle
keep-alive connection, or waits in a backlog until one frees up (new connections are opened,
up to `--max-conns`, while the backlog is non-empty). Latency is measured from the *scheduled*
time, so a stalled server is charged for every request it delayed — what wrk2 does, and what
wrk (closed-loop) cannot do.

Limits, reported in the output: the scheduler wakes on the event loop's timer (≈1 ms
granularity), so a request can leave up to ~1 ms after its slot (`send_lag_*`) and that delay
is part of the scheduled latency, for every target alike; `service_*` percentiles (send →
response) are given too. Python caps the generator at a few thousand requests per second on
this box; `achieved_rps` below `offered_rps` means the generator (or the target) fell behind.

    python -m bench.openloop --port P --rate 2000 --duration 5 [--conns 32] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from typing import cast

from bench.clients import ClientError, ResponseFramer, percentiles
from bench.payloads import request_bytes

__all__ = ["main", "run_open_loop"]

_POINTS = (50.0, 90.0, 99.0, 99.9)
SECONDS = 1.0


class _Conn(asyncio.Protocol):
    __slots__ = ("_gen", "_framer", "transport", "scheduled", "sent")

    def __init__(self, gen: _Generator) -> None:
        self._gen = gen
        self._framer = ResponseFramer()
        self.transport: asyncio.Transport | None = None
        self.scheduled = 0.0  # the slot of the request in flight (0.0: none)
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._gen.ready(self)

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.sent = time.perf_counter()
        self.transport.write(self._gen.request)

    def data_received(self, data: bytes) -> None:
        try:
            done = self._framer.feed(data)
        except ClientError:
            self._gen.errors += 1
            assert self.transport is not None
            self.transport.close()
            return
        if done:
            ok = self._framer.status < 400
            self._gen.finished(self, ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._gen.lost(self)


class _Generator:
    def __init__(self, port: int, rate: float, max_conns: int, warmup: float) -> None:
        self.port = port
        self.request = request_bytes(f"127.0.0.1:{port}")
        self.interval = 1.0 / rate
        self.max_conns = max_conns
        self.warmup = warmup
        self.t0 = 0.0
        self.idle: deque[_Conn] = deque()
        self.backlog: deque[float] = deque()
        self.conns: set[_Conn] = set()
        self.opening = 0
        self.peak_conns = 0
        self.in_flight = 0
        self.errors = 0
        self.scheduled_us: list[float] = []
        self.service_us: list[float] = []
        self.lag_us: list[float] = []

    # -- connection bookkeeping ---------------------------------------------------------
    def open_conn(self) -> None:
        self.opening += 1
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port))
        task.add_done_callback(self._opened)

    def _opened(
        self, task: asyncio.Task[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]
    ) -> None:
        self.opening -= 1
        if task.exception() is not None:
            self.errors += 1

    def ready(self, conn: _Conn) -> None:
        self.conns.add(conn)
        self.peak_conns = max(self.peak_conns, len(self.conns))
        self._next(conn)

    def lost(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.scheduled:
            self.errors += 1
            self.in_flight -= 1
            conn.scheduled = 0.0
        if self.backlog and len(self.conns) + self.opening < self.max_conns:
            self.open_conn()

    # -- requests -----------------------------------------------------------------------
    def dispatch(self, scheduled: float) -> None:
        self.in_flight += 1
        if self.idle:
            self._send(self.idle.pop(), scheduled)
            return
        self.backlog.append(scheduled)
        if len(self.conns) + self.opening < self.max_conns:
            self.open_conn()

    def _send(self, conn: _Conn, scheduled: float) -> None:
        conn.send(scheduled)
        if scheduled - self.t0 >= self.warmup:
            self.lag_us.append((conn.sent - scheduled) * 1e6)

    def finished(self, conn: _Conn, ok: bool) -> None:
        now = time.perf_counter()
        scheduled, conn.scheduled = conn.scheduled, 0.0
        self.in_flight -= 1
        if not ok:
            self.errors += 1
        elif scheduled - self.t0 >= self.warmup:
            self.scheduled_us.append((now - scheduled) * 1e6)
            self.service_us.append((now - conn.sent) * 1e6)
        self._next(conn)

    def _next(self, conn: _Conn) -> None:
        if self.backlog:
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)

    async def run(self, duration: float, conns: int, drain: float) -> dict[str, object]:
        for _ in range(conns):
            self.open_conn()
        deadline = time.perf_counter() + 10 * SECONDS
        while len(self.conns) < conns and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        total = int((self.warmup + duration) / self.interval)
        self.t0 = time.perf_counter() + 0.01
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - self.t0) / self.interval) + 1)
            while sent < due:
                self.dispatch(self.t0 + sent * self.interval)
                sent += 1
            wait = self.t0 + sent * self.interval - time.perf_counter()
            await asyncio.sleep(max(0.0, wait))
        end_of_schedule = time.perf_counter()
        drain_deadline = end_of_schedule + drain
        while self.in_flight and time.perf_counter() < drain_deadline:
            await asyncio.sleep(0.005)
        incomplete = self.in_flight
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        measured = len(self.scheduled_us)
        window = end_of_schedule - self.t0 - self.warmup
        return {
            "method": "open-loop (Python asyncio, latency from the scheduled send time)",
            "offered_rps": 1.0 / self.interval,
            "achieved_rps": measured / window if window > 0 else 0.0,
            "requests": measured,
            "errors": self.errors,
            "incomplete": incomplete,
            "peak_conns": self.peak_conns,
            "latency_us": percentiles(self.scheduled_us, _POINTS)
            | {"max": max(self.scheduled_us, default=0.0)},
            "service_us": percentiles(self.service_us, _POINTS),
            "send_lag_us": percentiles(self.lag_us, (50.0, 99.0)),
        }


def run_open_loop(
    port: int,
    *,
    rate: float,
    duration: float,
    conns: int = 32,
    max_conns: int = 256,
    warmup: float = 0.5,
) -> dict[str, object]:
    gen = _Generator(port, rate, max_conns, warmup)
    try:
        import uvloop  # lower generator overhead when the venv has it

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(gen.run(duration, conns, drain=5 * SECONDS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--conns", type=int, default=32, help="connections opened up front")
    parser.add_argument("--max-conns", type=int, default=256)
    args = parser.parse_args(argv)
    result = run_open_loop(
        args.port,
        rate=args.rate,
        duration=args.duration,
        conns=args.conns,
        max_conns=args.max_conns,
        warmup=args.warmup,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
