"""Concurrency: N slow SSE streams held at once through a 2-worker proxy, none dropped or stalled.

The issue's target: 10,000 concurrent streams, one event per 100 ms each, carried by agw-fast
with 2 workers with no stream stalled or dropped, and the memory each stream costs (Busbar's
test for LLM gateways counts the streams carried with no frame dropped). Three processes:

* **upstream** (`python -m bench.streams upstream`): a bench-only SSE origin. Every request gets
  a chunked `text/event-stream` of OpenAI `chat.completion.chunk` events, then a finish event,
  the usage event and `data: [DONE]`. Pacing costs one timer for all streams: a tick every
  `interval / SLOTS` writes the next event to the streams of one slot, so each stream gets an
  event every `interval` (the project's mock LLM arms a timer per event per stream, which
  costs more at 100k events/s). Each event's content is `<seq>@<µs>`: its sequence number and
  the upstream's CLOCK_MONOTONIC when it was written, so the client checks order and loss and
  measures how long the event took through the proxy. `GET /stats` answers the tick lateness
  (how late pacing ran) and counts.
* **client** (`python -m bench.streams client`): opens the streams ramped (`ramp_step`
  connections every `ramp_every` s) as raw uvloop protocols, de-chunks and splits events, and
  per stream checks status 200, every sequence number in order, the final `[DONE]` and the
  terminating chunk, and the longest wait for an event (the first one counted from the
  request's send). A stream is *dropped* when it did not complete (connect error, non-200,
  closed early, unfinished at the deadline, an event missing or out of order) and *stalled*
  when it waited longer than `stall` seconds for an event. It prints JSON lines: a phase line
  when every stream has its first event (`all_open`) and when the first one completes
  (`first_done`), then the result.
* the **scenario** (`streams(bench)`, `--streams` in bench/run.py): per repetition a fresh
  proxy (nginx with 2 workers as the reference, agw-fast with 2 workers on the plain route and
  on the AI route, and `direct`: the client straight to the upstream as the baseline for what
  the client and upstream themselves manage), a short warm-up, then one client run while the
  proxy tree's VmRSS is sampled (peak − before = bytes per stream) and its CPU is read when
  every stream is open and when the first completes (CPU per event while all are held).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.payloads import CHAT_PATH, STREAM_REQUEST_BODY, request_bytes  # noqa: E402
from bench.procs import raise_nofile_limit  # noqa: E402

if TYPE_CHECKING:
    from bench.harness import Bench, Rep
    from bench.report import Row
    from bench.targets import Target

__all__ = [
    "EventStream",
    "StreamPlan",
    "main",
    "run_client",
    "serve_upstream",
    "stream_rows",
    "streams",
]

SECONDS = 1.0
SLOTS = 10  # ticks per interval: a slot's streams get their events on the same tick
STALL_S = 1.0  # a wait for the next event longer than this is a stall (10 intervals)
WARMUP_STREAMS = 20
PROGRESS_S = 0.25  # the client's progress lines (and the bench's samples of the proxy)
EVENTS_HEADER = "x-bench-events"  # per-request event count (the warm-up sends 2)
_HEAD_END = b"\r\n\r\n"
_SEQ = re.compile(rb'"content":"([0-9]+)@([0-9]+) "')
_DONE = b"data: [DONE]"
_STATUS = re.compile(rb"HTTP/1\.[01] ([0-9]{3})")
_CHUNKED = re.compile(rb"(?im)^transfer-encoding:[^\r\n]*chunked")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]+)")
_EVENTS = re.compile(rb"(?im)^" + EVENTS_HEADER.encode() + rb":[ \t]*([0-9]+)")
BUCKET_S = 1e-4  # histogram resolution: 0.1 ms


@dataclass(frozen=True)
class StreamPlan:
    """What one run asks for: `streams` streams of `events` content events, `interval` s
    apart, opened `ramp_step` at a time every `ramp_every` s."""

    streams: int = 10_000
    events: int = 50
    interval: float = 0.1
    ramp_step: int = 100
    ramp_every: float = 0.01
    stall: float = STALL_S

    @property
    def ramp_s(self) -> float:
        return max(0, math.ceil(self.streams / self.ramp_step) - 1) * self.ramp_every

    @property
    def deadline_s(self) -> float:
        """How long the client waits before it counts the remaining streams unfinished."""
        stream_s = self.events * self.interval
        return self.ramp_s + stream_s + max(30.0, 2 * stream_s)


# --- the upstream ------------------------------------------------------------------------------

_RESPONSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_EVENT = (
    b'data: {"id":"chatcmpl-streams","object":"chat.completion.chunk","created":1732406400,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"%d@%d "},'
    b'"finish_reason":null}]}\n\n'
)


def _chunk(payload: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1): hex size, CRLF, data, CRLF."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _tail(events: int) -> bytes:
    """The finish event, the usage event and `[DONE]` (one chunk), then the last chunk."""
    finish = (
        b'data: {"id":"chatcmpl-streams","object":"chat.completion.chunk","created":1732406400,'
        b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},'
        b'"finish_reason":"stop"}]}\n\n'
    )
    usage = (
        b'data: {"id":"chatcmpl-streams","object":"chat.completion.chunk","created":1732406400,'
        b'"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":42,'
        b'"completion_tokens":%d,"total_tokens":%d}}\n\n' % (events, 42 + events)
    )
    return _chunk(finish + usage + _DONE + b"\n\n") + b"0\r\n\r\n"


class _Histogram:
    """Counts per 0.1 ms bucket (a dict: sparse, cheap per sample)."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, seconds: float) -> None:
        bucket = int(seconds / BUCKET_S) if seconds > 0 else 0
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.n += 1

    def percentile(self, p: float) -> float:
        """The `p`-th percentile in milliseconds (upper edge of its bucket); 0 when empty."""
        if not self.n:
            return 0.0
        rank = max(1, math.ceil(self.n * p / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return (bucket + 1) * BUCKET_S * 1e3
        return 0.0

    def summary(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_p50_ms": self.percentile(50),
            f"{prefix}_p99_ms": self.percentile(99),
            f"{prefix}_p999_ms": self.percentile(99.9),
            f"{prefix}_max_ms": self.percentile(100),
        }


class _UpstreamConn(asyncio.Protocol):
    """One connection to the upstream: requests are answered one at a time."""

    __slots__ = ("server", "transport", "buf", "seq", "events", "closed", "streaming")

    def __init__(self, server: PacedUpstream) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.seq = 0  # the next event to write
        self.events = server.events
        self.closed = False
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # the tick drops it from its slot

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.streaming:
            self._next_request()

    def _next_request(self) -> None:
        end = self.buf.find(_HEAD_END)
        if end < 0:
            return
        head = self.buf[: end + 4]
        length = _CONTENT_LENGTH.search(head)
        body_end = end + 4 + (int(length.group(1)) if length else 0)
        if len(self.buf) < body_end:
            return
        self.buf = self.buf[body_end:]
        assert self.transport is not None
        if head.startswith(b"GET /stats"):
            reset = head.startswith(b"GET /stats?reset")
            body = json.dumps(self.server.stats(reset=reset)).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        wanted = _EVENTS.search(head)
        self.events = max(1, int(wanted.group(1))) if wanted else self.server.events
        self.streaming = True
        self.seq = 0
        self.server.start(self)

    def finished(self) -> None:
        """The last event left: serve a request that was pipelined meanwhile."""
        self.streaming = False
        if self.buf:
            self._next_request()


class PacedUpstream:
    """The streams in flight, in `SLOTS` slots; one tick per `interval / SLOTS` writes the next
    event to every stream of one slot."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: int, interval: float) -> None:
        self.loop = loop
        self.events = events
        self.tick_s = interval / SLOTS
        self.slots: list[dict[_UpstreamConn, None]] = [{} for _ in range(SLOTS)]
        self.tick = 0
        self.t0 = time.monotonic()
        self.lateness = _Histogram()
        self.written = 0
        self.started = 0
        self.completed = 0
        self.open = 0
        self.peak_open = 0
        self.tails: dict[int, bytes] = {}
        self.loop.call_soon(self._on_tick)

    def start(self, conn: _UpstreamConn) -> None:
        """Write the head and event 0 now (time to first event includes no pacing); the
        stream joins the slot that ticked last, so its next event leaves one interval later."""
        assert conn.transport is not None
        stamp = time.monotonic_ns() // 1000
        conn.transport.write(_RESPONSE_HEAD + _chunk(_EVENT % (0, stamp)))
        self.written += 1
        self.started += 1
        conn.seq = 1
        if conn.events == 1:
            self._finish(conn)
            return
        self.slots[(self.tick - 1) % SLOTS][conn] = None
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)

    def _finish(self, conn: _UpstreamConn) -> None:
        assert conn.transport is not None
        tail = self.tails.get(conn.events)
        if tail is None:
            tail = self.tails[conn.events] = _tail(conn.events)
        conn.transport.write(tail)
        self.completed += 1
        conn.finished()

    def _on_tick(self) -> None:
        now = time.monotonic()
        # Catch up on every tick that is due (a late loop writes them back to back).
        while self.t0 + self.tick * self.tick_s <= now + 0.0005:
            self.lateness.add(now - (self.t0 + self.tick * self.tick_s))
            slot = self.slots[self.tick % SLOTS]
            self.tick += 1
            if slot:
                self._write_slot(slot)
            now = time.monotonic()
        self.loop.call_later(max(0.0, self.t0 + self.tick * self.tick_s - now), self._on_tick)

    def _write_slot(self, slot: dict[_UpstreamConn, None]) -> None:
        stamp = time.monotonic_ns() // 1000
        cache: dict[int, bytes] = {}  # one event per sequence number per tick
        leaving = []
        for conn in slot:
            if conn.closed:
                leaving.append(conn)
                continue
            seq = conn.seq
            chunk = cache.get(seq)
            if chunk is None:
                chunk = cache[seq] = _chunk(_EVENT % (seq, stamp))
            assert conn.transport is not None
            conn.transport.write(chunk)
            self.written += 1
            seq += 1
            conn.seq = seq
            if seq >= conn.events:
                leaving.append(conn)
        for conn in leaving:
            del slot[conn]
            self.open -= 1
            if not conn.closed:
                self._finish(conn)

    def stats(self, *, reset: bool) -> dict[str, float]:
        out = {
            "events_written": float(self.written),
            "streams_started": float(self.started),
            "streams_completed": float(self.completed),
            "streams_open": float(self.open),
            "peak_open": float(self.peak_open),
            "ticks": float(self.lateness.n),
            **self.lateness.summary("tick_late"),
        }
        if reset:
            self.lateness = _Histogram()
            self.written = self.started = self.completed = 0
            self.peak_open = self.open
        return out


async def serve_upstream(
    port: int, events: int, interval: float, *, host: str = "127.0.0.1"
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    paced = PacedUpstream(loop, events, interval)
    return await loop.create_server(
        lambda: _UpstreamConn(paced), host, port, backlog=4096, reuse_address=True
    )


# --- the client --------------------------------------------------------------------------------

_HEAD, _SIZE, _DATA, _CRLF, _END = range(5)


class EventStream:
    """Sans-IO reader of one streamed response: head, chunked body (RFC 9112 §7.1), SSE events
    (blank-line separated, WHATWG HTML §9.2.6). `feed()` returns the content events' `(seq,
    upstream µs)` in the bytes given; `done` is set by `[DONE]`, `ended` by the last chunk."""

    __slots__ = ("state", "buf", "left", "sse", "status", "done", "ended", "error", "other")

    def __init__(self) -> None:
        self.state = _HEAD
        self.buf = b""
        self.left = 0  # bytes of the current chunk's data still to come
        self.sse = b""
        self.status = 0
        self.done = False
        self.ended = False
        self.error = ""
        self.other = 0  # events that are neither content nor [DONE] (finish, usage)

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        if self.state == _HEAD:
            self.buf += data
            end = self.buf.find(_HEAD_END)
            if end < 0:
                return []
            head = self.buf[: end + 4]
            data, self.buf = self.buf[end + 4 :], b""
            match = _STATUS.match(head)
            self.status = int(match.group(1)) if match else 0
            if self.status != 200:
                self.error = f"status {self.status}"
                return []
            if not _CHUNKED.search(head):
                self.error = "not chunked"
                return []
            self.state = _SIZE
        return self._body(data)

    def _body(self, data: bytes) -> list[tuple[int, int]]:
        buf = self.buf + data if self.buf else data
        pos, size, parts = 0, len(buf), []
        while pos < size and self.state != _END:
            if self.state == _DATA:
                end = min(size, pos + self.left)
                parts.append(buf[pos:end])
                self.left -= end - pos
                pos = end
                if not self.left:
                    self.state = _CRLF
            elif self.state == _CRLF:
                if size - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    self.error = "bad chunk framing"
                    self.state = _END
                    break
                pos += 2
                self.state = _SIZE
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                try:
                    self.left = int(buf[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    self.error = "bad chunk size"
                    self.state = _END
                    break
                pos = eol + 2
                self.state = _DATA if self.left else _END
                self.ended = not self.left  # trailers, if any, are not read
        self.buf = buf[pos:] if self.state != _END else b""
        if not parts:
            return []
        sse = self.sse + b"".join(parts) if self.sse else b"".join(parts)
        found, start = [], 0
        while (end := sse.find(b"\n\n", start)) >= 0:
            match = _SEQ.search(sse, start, end)
            if match is not None:
                found.append((int(match.group(1)), int(match.group(2))))
            elif sse.startswith(_DONE, start):
                self.done = True
            else:
                self.other += 1
            start = end + 2
        self.sse = sse[start:]
        return found


class _Client:
    """All streams of one run and what they saw."""

    def __init__(self, plan: StreamPlan, port: int, phases: bool) -> None:
        self.plan = plan
        self.port = port
        self.phases = phases
        self.request = request_bytes(
            f"127.0.0.1:{port}",
            CHAT_PATH,
            STREAM_REQUEST_BODY,
            headers={EVENTS_HEADER: str(plan.events)},
        )
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self.t0 = time.monotonic()
        self.gaps = _Histogram()  # every wait between two events of a stream
        self.first = _Histogram()  # request sent -> first event
        self.transit = _Histogram()  # upstream wrote the event -> the client read it
        self.max_gaps: list[float] = []  # per completed or dropped stream
        self.events = 0
        self.out_of_order = 0
        self.corrupt = 0
        self.complete = 0
        self.stalled = 0  # streams with a wait over `plan.stall`, of which:
        self.stalled_first = 0  # ... only for the first event
        self.stalled_between = 0  # ... between two events
        self.reasons: dict[str, int] = {}
        self.first_seen = 0
        self.streaming = 0  # streams past their first event, not yet settled
        self.peak_streaming = 0
        self.settled = 0  # streams completed or failed
        self.open = 0
        self.peak_open = 0
        self.phase_times: dict[str, float] = {}

    def phase(self, name: str) -> None:
        if name in self.phase_times:
            return
        self.phase_times[name] = time.monotonic() - self.t0
        if self.phases:
            line = {"phase": name, "t": self.phase_times[name], "events": self.events}
            print(json.dumps(line), flush=True)

    def fail(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        self._settle()

    def _settle(self) -> None:
        self.settled += 1
        if self.first_seen + sum(self.reasons.values()) >= self.plan.streams:
            self.phase("all_open")
        if self.settled >= self.plan.streams:
            self.finished.set()

    def first_event(self) -> None:
        self.first_seen += 1
        self.streaming += 1
        if self.streaming > self.peak_streaming:
            self.peak_streaming = self.streaming
        if self.first_seen + sum(self.reasons.values()) >= self.plan.streams:
            self.phase("all_open")

    def done(self, stream: _ClientConn) -> None:
        self.complete += 1
        self.phase("first_done")
        self._settle()

    def progress(self) -> None:
        """A progress line every PROGRESS_S: the bench samples the proxy at each."""
        line = {
            "phase": "progress",
            "t": time.monotonic() - self.t0,
            "events": self.events,
            "streaming": self.streaming,
            "open": self.open,
        }
        print(json.dumps(line), flush=True)
        if not self.finished.is_set():
            self.loop.call_later(PROGRESS_S, self.progress)

    async def ramp(self) -> None:
        plan = self.plan
        for index, start in enumerate(range(0, plan.streams, plan.ramp_step)):
            delay = self.t0 + index * plan.ramp_every - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(start, min(plan.streams, start + plan.ramp_step)):
                self.loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            await self.loop.create_connection(lambda: _ClientConn(self), "127.0.0.1", self.port)
        except OSError as exc:
            self.fail(f"connect: {exc.strerror or type(exc).__name__}")

    def result(self, conns_left: int) -> dict[str, Any]:
        waits = sorted(self.max_gaps)

        def pick(p: float) -> float:
            if not waits:
                return 0.0
            return waits[max(0, math.ceil(len(waits) * p / 100) - 1)] * 1e3

        plan = self.plan
        dropped = plan.streams - self.complete
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "plan": asdict(plan),
            "requested": plan.streams,
            "complete": self.complete,
            "dropped": dropped,
            "drop_reasons": self.reasons | ({"unfinished": conns_left} if conns_left else {}),
            "stalled": self.stalled,
            "stalled_first_event": self.stalled_first,
            "stalled_between_events": self.stalled_between,
            "events_expected": plan.streams * plan.events,
            "events_received": self.events,
            "out_of_order": self.out_of_order,
            "corrupt": self.corrupt,
            "peak_open": self.peak_open,
            "peak_streaming": self.peak_streaming,
            **self.gaps.summary("gap"),
            **self.first.summary("first_event"),
            **self.transit.summary("transit"),
            "stream_max_gap_p50_ms": pick(50),
            "stream_max_gap_p99_ms": pick(99),
            "stream_max_gap_max_ms": pick(100),
            "phases": self.phase_times,
            "wall_s": time.monotonic() - self.t0,
            "client_cpu_s": usage.ru_utime + usage.ru_stime,
        }


class _ClientConn(asyncio.Protocol):
    """One stream: sends the request, checks what comes back."""

    __slots__ = (
        "client",
        "transport",
        "reader",
        "sent_at",
        "last",
        "first_wait",
        "max_gap",
        "next_seq",
        "settled",
    )

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.reader = EventStream()
        self.sent_at = 0.0
        self.last = 0.0
        self.first_wait = 0.0  # request sent -> first event
        self.max_gap = 0.0  # the longest wait between two events
        self.next_seq = 0
        self.settled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        client = self.client
        client.open += 1
        client.peak_open = max(client.peak_open, client.open)
        transport.write(client.request)  # type: ignore[attr-defined]
        self.sent_at = time.monotonic()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        client = self.client
        reader = self.reader
        events = reader.feed(data)
        if reader.error:
            self._fail(reader.error)
            return
        if events:
            now_us = now * 1e6
            for seq, stamp in events:
                if seq != self.next_seq:
                    client.out_of_order += 1
                self.next_seq = seq + 1
                client.transit.add((now_us - stamp) * 1e-6)
            last = self.last
            if last:
                wait = now - last
                client.gaps.add(wait)
                if wait > self.max_gap:
                    self.max_gap = wait
            else:
                wait = self.first_wait = now - self.sent_at
                client.first.add(wait)
                client.first_event()
            # Events read together after a wait: the first of them waited, the rest did not.
            for _ in range(len(events) - 1):
                client.gaps.add(0.0)
            self.last = now
            client.events += len(events)
        if reader.ended:
            plan = client.plan
            if not reader.done or self.next_seq != plan.events or reader.other < 2:
                self._fail("incomplete stream")
                return
            self._settle()
            client.done(self)
            assert self.transport is not None
            self.transport.close()

    def _settle(self) -> None:
        self.settled = True
        client = self.client
        if self.last:
            client.streaming -= 1
        client.max_gaps.append(self.max_gap)
        stall = client.plan.stall
        if self.first_wait > stall or self.max_gap > stall:
            client.stalled += 1
            if self.max_gap > stall:
                client.stalled_between += 1
            else:
                client.stalled_first += 1

    def _fail(self, reason: str) -> None:
        if self.settled:
            return
        self._settle()
        self.client.fail(reason)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.open -= 1
        if not self.settled:
            self._fail("closed early" if exc is None else f"reset: {type(exc).__name__}")


async def run_client(plan: StreamPlan, port: int, *, phases: bool = False) -> dict[str, Any]:
    """Open `plan.streams` streams to 127.0.0.1:port and check each; the result dict."""
    client = _Client(plan, port, phases)
    if phases:
        client.progress()
    ramp = asyncio.create_task(client.ramp())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(client.finished.wait(), plan.deadline_s)
    ramp.cancel()
    return client.result(conns_left=plan.streams - client.settled)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # the bench still runs, slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    """`upstream` and `client` processes of the scenario (the bench starts both)."""
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    up = sub.add_parser("upstream", help="the paced SSE upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--events", type=int, default=StreamPlan.events)
    up.add_argument("--interval", type=float, default=StreamPlan.interval)
    cl = sub.add_parser("client", help="open the streams, print one JSON result line")
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--streams", type=int, default=StreamPlan.streams)
    cl.add_argument("--events", type=int, default=StreamPlan.events)
    cl.add_argument("--interval", type=float, default=StreamPlan.interval)
    cl.add_argument("--ramp-step", type=int, default=StreamPlan.ramp_step)
    cl.add_argument("--ramp-every", type=float, default=StreamPlan.ramp_every)
    cl.add_argument("--stall", type=float, default=STALL_S)
    cl.add_argument("--phases", action="store_true", help="print phase lines as they happen")
    args = parser.parse_args(argv)
    if args.role == "upstream":
        limit = raise_nofile_limit(1 << 20)
        print(f"streams upstream on 127.0.0.1:{args.port}, open-file limit {limit}", flush=True)

        async def serve() -> None:
            server = await serve_upstream(args.port, args.events, args.interval)
            async with server:
                await server.serve_forever()

        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(serve())
        return 0
    plan = StreamPlan(
        args.streams, args.events, args.interval, args.ramp_step, args.ramp_every, args.stall
    )
    limit = raise_nofile_limit(plan.streams + 256)
    if limit < plan.streams + 64:
        print(
            json.dumps({"error": f"open-file limit {limit} < {plan.streams} streams: ulimit -n"}),
            flush=True,
        )
        return 2
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        result = runner.run(run_client(plan, args.port, phases=args.phases))
    print(json.dumps({"result": result}), flush=True)
    return 0


# --- the scenario ------------------------------------------------------------------------------

STREAM_TARGETS = ("direct-streams", "nginx-streams", "agw-streams", "agw-streams-ai")
HOLD_SHARE = 0.9
HOLD_MIN_S = 1.0  # a shorter hold is left out: /proc CPU ticks are 10 ms


def _accept_queue(port: int) -> int:
    """Connections waiting in the accept queue of the listening socket(s) on `port`: a
    LISTEN row's rx_queue in /proc/net/tcp (summed over SO_REUSEPORT sockets)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                total += int(parts[4].split(":")[1], 16)
    return total


def _listen_overflows() -> int:
    """TcpExt ListenOverflows (system-wide): handshakes dropped on a full accept queue."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", 0))
    return 0


def _plan(bench: Bench) -> StreamPlan:
    s = bench.settings
    return StreamPlan(streams=s.stream_count, events=s.stream_events, interval=s.stream_interval)


def _client_argv(plan: StreamPlan, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.streams",
        "client",
        "--port",
        str(port),
        "--streams",
        str(plan.streams),
        "--events",
        str(plan.events),
        "--interval",
        f"{plan.interval:g}",
        "--ramp-step",
        str(plan.ramp_step),
        "--ramp-every",
        f"{plan.ramp_every:g}",
        "--stall",
        f"{plan.stall:g}",
        "--phases",
    ]


def _tree_rss(pids: list[int]) -> int:
    from bench.procs import rss_bytes

    return sum(rss_bytes(pid) for pid in pids)


def _upstream_stats(port: int, *, reset: bool) -> dict[str, float]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/stats?reset" if reset else "/stats")
        data: dict[str, float] = json.loads(conn.getresponse().read())
        return data
    finally:
        conn.close()


class _Run:
    """One client process against one target, with the proxy tree sampled meanwhile."""

    def __init__(self, bench: Bench, plan: StreamPlan, target: Target, upstream: int) -> None:
        self.bench = bench
        self.plan = plan
        self.target = target
        self.upstream_pid = upstream
        self.lines: queue.Queue[str | None] = queue.Queue()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def client(self, plan: StreamPlan) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one client; (its result, measurements of the proxy tree)."""
        from bench.procs import cpu_delta, cpu_snapshot, descendants

        roots = self.target.pids
        tree = [pid for root in roots for pid in descendants(root)]
        rss_before = _tree_rss(tree)
        up_before = cpu_snapshot([self.upstream_pid])
        before = cpu_snapshot(roots)
        log = (self.bench.work / "logs" / f"streams-client-{self.target.name}.log").open("ab")
        proc = subprocess.Popen(
            _client_argv(plan, self.target.port),
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        reader = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        reader.start()
        # Per progress line: (client's figures, proxy CPU, proxy tree RSS, accept queue).
        samples: list[tuple[dict[str, Any], Any, int, int]] = []
        result: dict[str, Any] = {}
        rss_peak = rss_before
        overflows = _listen_overflows()
        deadline = time.monotonic() + plan.deadline_s + 30 * SECONDS
        try:
            while True:
                if time.monotonic() > deadline:
                    raise RuntimeError("streams client did not finish")
                try:
                    line = self.lines.get(timeout=5 * PROGRESS_S)
                except queue.Empty:
                    continue
                if line is None:
                    break
                doc = json.loads(line)
                if doc.get("phase") == "progress":
                    rss = _tree_rss(tree)
                    rss_peak = max(rss_peak, rss)
                    queued = _accept_queue(self.target.port)
                    samples.append((doc, cpu_snapshot(roots), rss, queued))
                elif "result" in doc:
                    result = doc["result"]
                elif "error" in doc:
                    raise RuntimeError(doc["error"])
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        after = cpu_snapshot(roots)
        up_after = cpu_snapshot([self.upstream_pid])
        if not result:
            raise RuntimeError(f"streams client exited with {proc.returncode} and no result")
        whole = cpu_delta(before, after)
        measured: dict[str, Any] = {
            "rss_before": float(rss_before),
            "rss_peak": float(rss_peak),
            "proxy_cpu_s": whole.cpu_s,
            "upstream_cpu_s": cpu_delta(up_before, up_after).cpu_s,
            "accept_queue_max": float(max((q for *_, q in samples), default=0)),
            "listen_overflows": float(_listen_overflows() - overflows),
        }
        # The hold: from the first to the last sample with at least HOLD_SHARE of the peak
        # number of streams flowing (every stream open, when the run gets there).
        peak = max((doc["streaming"] for doc, *_ in samples), default=0)
        held = [
            (doc, cpu) for doc, cpu, *_ in samples if peak and doc["streaming"] >= HOLD_SHARE * peak
        ]
        if len(held) >= 2 and held[-1][0]["t"] - held[0][0]["t"] >= HOLD_MIN_S:
            (doc_a, cpu_a), (doc_b, cpu_b) = held[0], held[-1]
            hold = cpu_delta(cpu_a, cpu_b)
            measured["hold_s"] = hold.wall_s
            measured["hold_events"] = float(doc_b["events"] - doc_a["events"])
            measured["hold_cpu_s"] = hold.cpu_s
        return result, measured


def _rep(plan: StreamPlan, result: dict[str, Any], measured: dict[str, Any]) -> Rep:
    """The numbers of one run (all floats, as the harness summarizes them)."""
    rep: Rep = {
        key: float(value)
        for key, value in result.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    for reason, count in result.get("drop_reasons", {}).items():
        key = "dropped_" + re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")
        rep[key] = rep.get(key, 0.0) + float(count)
    rep |= {k: float(v) for k, v in measured.items()}
    rep["dropped_or_stalled"] = rep["dropped"] + rep["stalled"]
    rep["events_lost"] = rep["events_expected"] - rep["events_received"]
    if rep.get("peak_streaming"):  # the RSS peak over the most streams flowing at once
        rep["bytes_per_stream"] = (rep["rss_peak"] - rep["rss_before"]) / rep["peak_streaming"]
    wall = rep.get("wall_s", 0.0)
    if wall:
        rep["proxy_cores"] = rep["proxy_cpu_s"] / wall
        rep["upstream_cores"] = rep["upstream_cpu_s"] / wall
        rep["client_cores"] = rep["client_cpu_s"] / wall
    if rep["events_received"]:
        rep["cpu_per_event_us"] = rep["proxy_cpu_s"] / rep["events_received"] * 1e6
    if rep.get("hold_events"):
        rep["hold_cpu_per_event_us"] = rep["hold_cpu_s"] / rep["hold_events"] * 1e6
        rep["hold_cores"] = rep["hold_cpu_s"] / rep["hold_s"]
        rep["hold_events_per_s"] = rep["hold_events"] / rep["hold_s"]
    first = result.get("phases", {}).get("first_done")
    if first:  # the first stream's length against its plan: how much pacing stretched
        rep["first_stream_s"] = float(first)
    return rep


def _nginx_2w(bench: Bench, name: str, upstream_port: int, streams: int) -> Target:
    """nginx as the reference proxy with 2 workers (one SO_REUSEPORT socket each, as agw-fast),
    enough worker_connections for every stream landing on one worker."""
    from bench.nginx import nginx_argv, proxy_conf
    from bench.procs import Proc, ProcStartError, free_port
    from bench.targets import Target

    stack = bench.stack
    desc = "nginx reverse proxy, 2 workers (reuseport), proxy_buffering off"
    if not stack.allowed(name):
        return Target(name, "skipped", desc, error="skipped (--targets)")
    if stack.tools.nginx is None:
        return Target(
            name, "nginx", desc, error="nginx is not installed (apt-get install nginx-light)"
        )
    port = free_port()
    connections = max(16384, 2 * streams + 1024)
    conf = proxy_conf(
        bench.work, name, port=port, upstream_port=upstream_port, connections=connections
    )
    text = conf.read_text().replace("worker_processes 1;", "worker_processes 2;", 1)
    text = text.replace(
        f"listen 127.0.0.1:{port} backlog=4096;",
        f"listen 127.0.0.1:{port} backlog=4096 reuseport;",
        1,
    )
    conf.write_text(text)
    proc = Proc(
        name,
        nginx_argv(stack.tools.nginx, bench.work, conf, name),
        bench.work / "logs" / f"{name}.log",
        cwd=stack.repo,
    )
    try:
        proc.start().wait_ready(port)
    except ProcStartError as exc:
        return Target(name, "nginx", desc, error=str(exc))
    time.sleep(0.2)
    return Target(name, "nginx", desc, port, [proc], workers=2)


def _start(bench: Bench, name: str, upstream_port: int, plan: StreamPlan) -> Target:
    from bench.targets import Target

    if name == "direct-streams":
        return Target(name, "direct", "the streams upstream itself (no proxy)", upstream_port)
    if name == "nginx-streams":
        return _nginx_2w(bench, name, upstream_port, plan.streams)
    route = "ai" if name.endswith("-ai") else "plain"
    return bench.stack.agw(name, upstream_port, workers=2, route=route)


def streams(bench: Bench) -> dict[str, object]:
    """10,000 slow SSE streams (1 event / 100 ms) through 2 workers: none dropped or stalled;
    memory per stream, CPU per event (--stream-count, --stream-events, --stream-interval)."""
    from bench.harness import Collector
    from bench.procs import Proc, free_port

    plan = _plan(bench)
    stack = bench.stack
    port = free_port()
    upstream = Proc(
        "streams-upstream",
        [
            sys.executable,
            "-m",
            "bench.streams",
            "upstream",
            "--port",
            str(port),
            "--events",
            str(plan.events),
            "--interval",
            f"{plan.interval:g}",
        ],
        bench.work / "logs" / "streams-upstream.log",
        cwd=stack.repo,
    )
    collector = Collector()
    upstream_stats: dict[str, dict[str, float]] = {}
    warm = StreamPlan(WARMUP_STREAMS, 2, plan.interval, WARMUP_STREAMS, plan.ramp_every, plan.stall)
    try:
        upstream.start().wait_ready(port)
        for rep_index in range(bench.settings.reps):
            for name in STREAM_TARGETS:
                target = _start(bench, name, port, plan)
                if target.kind == "skipped":
                    continue
                try:
                    if not target.ok:
                        collector.fail(target, target.error or "not started")
                        continue
                    run = _Run(bench, plan, target, upstream.pid)
                    warm_result, _ = run.client(warm)
                    if warm_result["complete"] != warm.streams:
                        reasons = warm_result["drop_reasons"]
                        raise RuntimeError(f"warm-up streams failed: {reasons}")
                    time.sleep(0.3)
                    _upstream_stats(port, reset=True)
                    result, measured = run.client(plan)
                    stats = _upstream_stats(port, reset=False)
                    upstream_stats[f"{name}#{rep_index}"] = stats
                    measured["upstream_tick_late_p99_ms"] = stats["tick_late_p99_ms"]
                    measured["upstream_tick_late_max_ms"] = stats["tick_late_max_ms"]
                    rep = _rep(plan, result, measured)
                    collector.add(target, rep | {"rep": float(rep_index)})
                    bench.log(
                        f"  streams rep {rep_index + 1}/{bench.settings.reps} {name}: "
                        + _brief(rep)
                        + (f"; drops {result['drop_reasons']}" if rep["dropped"] else "")
                    )
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                    bench.log(f"  ! streams {name}: {type(exc).__name__}: {exc}")
                    collector.fail(target, f"{type(exc).__name__}: {exc}")
                finally:
                    if target.kind == "nginx":
                        for proc in target.procs:
                            proc.stop()
                    elif target.kind == "agw":
                        stack.stop(target)
    finally:
        upstream.stop()
    return collector.result(
        method=(
            f"{plan.streams:,} streams opened {plan.ramp_step:,} per {plan.ramp_every * 1e3:g} ms, "
            f"each {plan.events} chat.completion.chunk events {plan.interval * 1e3:g} ms apart "
            f"then usage + [DONE] (bench-only paced upstream, one timer tick per "
            f"{plan.interval / SLOTS * 1e3:g} ms); raw uvloop client checks status, every "
            f"sequence number in order, [DONE] and the last chunk; dropped = not complete; "
            f"stalled = a wait for an event over {plan.stall:g} s (the first counted from the "
            "request's send); bytes per stream = (peak − before) VmRSS of the proxy tree ÷ "
            "streams (kernel socket buffers not included); CPU per event over the whole run "
            "and while every stream is held (all open → the first done); fresh proxy per rep"
        ),
        plan=asdict(plan),
        upstream=upstream_stats,
    )


def _brief(rep: Rep) -> str:
    parts = [
        f"{rep.get('complete', 0):,.0f}/{rep.get('requested', 0):,.0f} complete",
        f"dropped {rep.get('dropped', 0):,.0f}",
        f"stalled {rep.get('stalled', 0):,.0f} (first event "
        f"{rep.get('stalled_first_event', 0):,.0f}, between events "
        f"{rep.get('stalled_between_events', 0):,.0f})",
        f"peak streaming {rep.get('peak_streaming', 0):,.0f}",
        f"accept queue max {rep.get('accept_queue_max', 0):,.0f}",
        f"events {rep.get('events_received', 0):,.0f}/{rep.get('events_expected', 0):,.0f}",
        f"gap p99 {rep.get('gap_p99_ms', 0):,.1f} ms max {rep.get('gap_max_ms', 0):,.0f} ms",
    ]
    if "bytes_per_stream" in rep and rep.get("proxy_cpu_s"):
        parts.append(f"{rep['bytes_per_stream']:,.0f} B/stream")
    if "hold_cpu_per_event_us" in rep and rep.get("proxy_cpu_s"):
        parts.append(
            f"{rep['hold_cores']:.2f} cores, {rep['hold_cpu_per_event_us']:.1f} µs CPU/event held"
        )
    parts.append(
        f"first event p99 {rep.get('first_event_p99_ms', 0):,.0f} ms; upstream tick late p99 "
        f"{rep.get('upstream_tick_late_p99_ms', 0):,.0f} ms; cores: client "
        f"{rep.get('client_cores', 0):.2f}, upstream {rep.get('upstream_cores', 0):.2f}"
    )
    return ", ".join(parts)


# --- key figures -------------------------------------------------------------------------------


def stream_rows(results: dict[str, Any]) -> list[Row]:
    """The issue's concurrency target and its context, for report.key_figures."""
    from bench.report import Row, Stat, _paired, _ratio, _reps, _values

    node = results.get("scenarios", {}).get("streams", {})
    data = node.get("targets", {}) if isinstance(node, dict) else {}
    if not data:
        return []
    count = int(node.get("plan", {}).get("streams", 0))
    label = f"{count:,} slow SSE streams, 2 workers"
    rows: list[Row] = []
    for agw, route in (("agw-streams", ""), ("agw-streams-ai", ", AI route")):
        if agw not in data:
            continue
        reps, nginx = _reps(data, agw), _reps(data, "nginx-streams")
        direct = _reps(data, "direct-streams")
        bad = _values(reps, "dropped_or_stalled")
        met = None if not bad or data[agw].get("error") else max(bad) == 0
        rows.append(
            Row(
                f"{label}{route}: dropped or stalled",
                "rate",
                Stat.of(bad),
                Stat.of(_values(nginx, "dropped_or_stalled")),
                Stat.of(_values(direct, "dropped_or_stalled")),
                None,
                "nginx",
                "none dropped or stalled",
                met,
            )
        )
        for figure, metric, unit, direct_too in (
            ("max wait between events", "gap_max_ms", "ms", True),
            ("max wait for a first event", "first_event_max_ms", "ms", True),
            ("bytes per stream", "bytes_per_stream", "bytes", False),
            ("proxy CPU µs per event, streams held", "hold_cpu_per_event_us", "us", False),
        ):
            rows.append(
                Row(
                    f"{label}{route}: {figure}",
                    unit,
                    Stat.of(_values(reps, metric)),
                    Stat.of(_values(nginx, metric)),
                    Stat.of(_values(direct, metric)) if direct_too else None,
                    Stat.of(_paired(reps, nginx, _ratio, metric)),
                    "nginx",
                    "–",
                    None,
                )
            )
    return rows


if __name__ == "__main__":
    sys.exit(main())
