"""Micro-benchmarks of agw-fast's pure hot-path pieces, in µs per operation.

    python -m bench.micro [--quick] [--json]

Each case imports what it needs lazily: a piece that does not exist (yet) prints
`skipped: <name> not available` instead of failing. To add a case, write a setup function that
returns `(callable, operations per call)` and decorate it with `@case("name")`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import timeit
from collections.abc import Callable
from typing import Any

from bench.payloads import (
    REQUEST_BODY,
    RESPONSE_BODY,
    STREAM_REQUEST_BODY,
    sse_event,
    sse_final_events,
)

__all__ = ["CASES", "case", "run_micro"]

Setup = Callable[[], tuple[Callable[[], object], int]]
CASES: dict[str, Setup] = {}


def case(name: str) -> Callable[[Setup], Setup]:
    def register(setup: Setup) -> Setup:
        CASES[name] = setup
        return setup

    return register


def _attr(module: str, name: str) -> Any:
    """`module.name`, raising ImportError (→ skipped) if either is missing."""
    try:
        return getattr(importlib.import_module(module), name)
    except AttributeError as exc:
        raise ImportError(f"{module}.{name}") from exc


# Headers as the downstream parser hands them over: lowercased names, wire values.
_HEADERS = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"OpenAI/Python 1.54.0"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-client-000000000000000000000000"),
    (b"x-stainless-lang", b"python"),
    (b"x-stainless-retry-count", b"0"),
    (b"content-length", b"292"),
    (b"connection", b"keep-alive"),
]


def _route_table(routes: int) -> tuple[Any, Any]:
    model = importlib.import_module("agw_fast.config.model")
    table_cls = _attr("agw_fast.core.routing", "RouteTable")
    view_cls = _attr("agw_fast.core.routing", "RequestView")
    declared = []
    for i in range(routes - 1):
        match = model.RouteMatch(
            path=model.PathMatch("prefix", f"/svc{i}/"),
            headers=(model.ValueMatch("x-tenant", "exact", f"t{i}"),),
        )
        declared.append((f"r{i}", model.Route(name=f"r{i}", matches=(match,)), i))
    last = model.RouteMatch(path=model.PathMatch("prefix", "/v1/"))
    declared.append(("llm", model.Route(name="llm", matches=(last,)), routes))
    table = table_cls(declared)
    request = view_cls("POST", "/v1/chat/completions", "", _HEADERS)
    return table, request


@case("route match: 1 catch-all route")
def _route_catch_all() -> tuple[Callable[[], object], int]:
    model = importlib.import_module("agw_fast.config.model")
    table = _attr("agw_fast.core.routing", "RouteTable")([("r0", model.Route(name="r0"), 0)])
    view = _attr("agw_fast.core.routing", "RequestView")
    return lambda: table.select(
        "api.example.com", view("POST", "/v1/chat/completions", "", _HEADERS)
    ), 1


@case("route match: 10 routes, header matches, last wins")
def _route_ten() -> tuple[Callable[[], object], int]:
    table, _ = _route_table(10)
    view = _attr("agw_fast.core.routing", "RequestView")
    return lambda: table.select(
        "api.example.com", view("POST", "/v1/chat/completions", "", _HEADERS)
    ), 1


@case("header rewrite: upstream head (set, remove, backendAuth)")
def _header_rewrite() -> tuple[Callable[[], object], int]:
    model = importlib.import_module("agw_fast.config.model")
    plan = _attr("agw_fast.core.rewrite", "RequestHeaderPlan").build(
        [model.HeaderModifier(set=(("x-team", "bench"),), remove=("x-stainless-lang",))],
        model.BackendAuth(key="sk-upstream-0000000000000000"),
    )
    build = _attr("agw_fast.core.rewrite", "build_upstream_head")
    framing = b"content-length: 292\r\n"
    return lambda: build(
        b"POST", b"/v1/chat/completions", b"api.openai.com", _HEADERS, plan, framing
    ), 1


def _rate_limit_step(capacity: int) -> tuple[Callable[[], object], int]:
    model = importlib.import_module("agw_fast.config.model")
    limit = model.LocalRateLimit(capacity, capacity, 3600 * 10**9)
    step = _attr("agw_fast.policies.localratelimit", "build")(
        model.RoutePolicies(local_rate_limit=(limit,))
    )
    request = _attr("agw_fast.policies", "PolicyRequest")(
        b"POST", b"api.example.com", b"/v1/chat/completions", b"", _HEADERS, None
    )

    def run() -> object:
        request.response_lines = None
        return step(request)

    return run, 1


@case("local rate limit: 1 bucket, allowed (lock, take, 3 fields)")
def _rate_limit_allowed() -> tuple[Callable[[], object], int]:
    return _rate_limit_step(2**62)


@case("local rate limit: 1 bucket, refused (429 answer)")
def _rate_limit_refused() -> tuple[Callable[[], object], int]:
    return _rate_limit_step(0)


@case("body rewrite: model override (300 B JSON)")
def _body_rewrite() -> tuple[Callable[[], object], int]:
    rewrite = _attr("agw_fast.llm.providers.openai", "rewrite_request_body")
    return lambda: rewrite(REQUEST_BODY, model_override="bench-model"), 1


@case("body rewrite: stream, add stream_options")
def _body_rewrite_stream() -> tuple[Callable[[], object], int]:
    rewrite = _attr("agw_fast.llm.providers.openai", "rewrite_request_body")
    body = STREAM_REQUEST_BODY.replace(b',"stream_options":{"include_usage":true}', b"")
    return lambda: rewrite(body, model_override=None), 1


@case("SSE usage parse: per event (50-event stream)")
def _sse_usage() -> tuple[Callable[[], object], int]:
    observer_cls = _attr("agw_fast.llm.sse", "SSEUsageObserver")
    events = [sse_event(i) for i in range(50)] + [sse_final_events(50)]

    def stream() -> object:
        observer = observer_cls()
        for event in events:
            observer.feed(event)
        observer.close()
        return observer.usage

    return stream, len(events)


@case("chunk scan: per event (50-event SSE body, one chunk a read)")
def _chunk_scan() -> tuple[Callable[[], object], int]:
    """What `ChunkedScanner` costs an SSE stream: one `<hex>CRLF` line and one CRLF after the
    data per event, each chunk arriving in a read of its own (as servers flush events)."""
    scanner_cls = _attr("agw_fast.core.http1", "ChunkedScanner")
    events = [sse_event(i) for i in range(50)] + [sse_final_events(50)]
    reads = [b"%x\r\n%s\r\n" % (len(event), event) for event in events]
    reads[-1] += b"0\r\n\r\n"

    def observe(payload: bytes) -> None:  # the SSE observer's place (the LLM routes)
        pass

    def stream() -> object:
        scanner = scanner_cls(observe)
        for data in reads:
            end = scanner.feed(data)
        return end

    return stream, len(reads)


@case("usage parse: non-streaming 345 B response")
def _json_usage() -> tuple[Callable[[], object], int]:
    parse = _attr("agw_fast.llm.usage", "usage_from_json_body")
    return lambda: parse(RESPONSE_BODY), 1


def _telemetry_case(
    log_format: str | None, access_log_filter: str | None = None
) -> tuple[Callable[[], object], int]:
    """What an exchange's end costs telemetry: build its `RequestRecord`, record it (with a
    `frontendPolicies.accessLog` filter when `access_log_filter` is set; it passes)."""
    import asyncio
    import os
    import time

    recorder_cls = _attr("agw_fast.telemetry.recorder", "Recorder")
    registry_cls = _attr("agw_fast.telemetry.metrics", "MetricsRegistry")
    slots = _attr("agw_fast.telemetry.shared_slots", "SharedSlots")(1)
    labels = _attr("agw_fast.plan", "RouteLabels").of(
        "bind/3000", "default/default", "listener0", "default/route0"
    )
    access_log = None
    if log_format is not None:
        loop = asyncio.new_event_loop()  # never run: the bench flushes the batch itself
        log_cls = _attr("agw_fast.telemetry.access_log", "AccessLog")
        access_log = log_cls(loop, log_format, os.open(os.devnull, os.O_WRONLY))
    policy = None
    request = None
    if access_log_filter is not None:
        model = importlib.import_module("agw_fast.config.model")
        compile_access_log = _attr("agw_fast.policies.access_log", "compile_access_log")
        policy = compile_access_log(model.AccessLogPolicy("bench", filter=access_log_filter))
        if policy.needs_request:
            request = _attr("agw_fast.policies.request", "PolicyRequest")(
                b"POST", b"api.example.com", b"/v1/chat/completions", b"", list(_HEADERS),
                None, "127.0.0.1:50000",
            )
    recorder = recorder_cls(registry_cls(slots.writer(0)), access_log, policy)
    backend = "/default/default/bind/3000/listener0/default/route0/backend0"
    started = time.monotonic()

    def finish() -> None:
        recorder.record(
            (
                labels, backend, "127.0.0.1:8080", "http", b"POST", b"api.example.com",
                b"/v1/chat/completions", "HTTP/1.1", "127.0.0.1:50000", 200, "Upstream",
                None, time.monotonic() - started, None, 0, request, 345, 0.0002, 0.00001,
            )
        )  # fmt: skip
        if access_log is not None and len(access_log.lines) >= 100:
            access_log.flush()  # one write per batch, as a loop turn would

    return finish, 1


@case("telemetry: record a finished request (no access log)")
def _telemetry_no_log() -> tuple[Callable[[], object], int]:
    return _telemetry_case(None)


@case("telemetry: record a finished request (text access log)")
def _telemetry_text_log() -> tuple[Callable[[], object], int]:
    return _telemetry_case("text")


@case("telemetry: text access log, accessLog filter on response.code")
def _telemetry_filter_response() -> tuple[Callable[[], object], int]:
    return _telemetry_case("text", "response.code < 500")


@case("telemetry: text access log, accessLog filter on a request header")
def _telemetry_filter_header() -> tuple[Callable[[], object], int]:
    return _telemetry_case("text", 'request.headers["content-type"] == "application/json"')


class _FakeTransport:
    """Just enough of an asyncio transport for the protocols: writes are dropped."""

    def write(self, data: object) -> None:
        pass

    def writelines(self, parts: object) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 50000) if name == "peername" else default


def _request_cycle(
    request: bytes, access_log_filter: str | None = None
) -> tuple[Callable[[], object], int]:
    """One request through DownstreamProtocol + Exchange + a pooled UpstreamConnection, with
    fake transports and no running loop: h11 parsing, routing, the upstream head, the
    response relay and the return to the pool (what a keep-alive request costs in Python)."""
    model = importlib.import_module("agw_fast.config.model")
    plan = importlib.import_module("agw_fast.plan")
    down_cls = _attr("agw_fast.proxy.downstream", "DownstreamProtocol")
    upstream_cls = _attr("agw_fast.proxy.upstream", "UpstreamConnection")
    context_cls = _attr("agw_fast.server.worker", "WorkerContext")
    recorder_cls = _attr("agw_fast.telemetry.recorder", "Recorder")
    registry_cls = _attr("agw_fast.telemetry.metrics", "MetricsRegistry")
    import uvloop

    backend = model.RouteBackend(model.HostBackend("up.example", 9000))
    listener = model.Listener("main", routes=(model.Route(name="api", backends=(backend,)),))
    frontend = model.FrontendPolicies()
    if access_log_filter is not None:  # the per-request capture an accessLog expression needs
        frontend = model.FrontendPolicies(
            access_log=model.AccessLogPolicy("bench", filter=access_log_filter)
        )
    config = model.Config(binds=(model.Bind(8080, (listener,)),), frontend=frontend)
    (bind,) = plan.compile_config(config)
    loop = uvloop.new_event_loop()  # never run: time() and call_later() only
    # Metrics in a process-local registry, no access log (its cost is the telemetry case's).
    ctx = context_cls(loop, config, recorder_cls(registry_cls(), None))
    (route,) = bind.single.routes()
    key = route.backends[0].pool_key
    upstream = upstream_cls(key)
    upstream.connection_made(_FakeTransport())
    ctx.pool.put(upstream)
    down = down_cls(ctx, bind)
    down.connection_made(_FakeTransport())
    response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    def cycle() -> object:
        down.data_received(request)
        upstream.data_received(response)
        return down

    return cycle, 1


_REQUEST_HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\n"
    + b"".join(b"%s: %s\r\n" % (n, v) for n, v in _HEADERS if n != b"content-length")
)


@case("request path: GET, 8 headers (h11 + route + relay)")
def _request_get() -> tuple[Callable[[], object], int]:
    return _request_cycle(_REQUEST_HEAD.replace(b"POST", b"GET", 1) + b"\r\n")


@case("request path: GET, 8 headers, accessLog filter on a request header")
def _request_get_access_log() -> tuple[Callable[[], object], int]:
    return _request_cycle(
        _REQUEST_HEAD.replace(b"POST", b"GET", 1) + b"\r\n",
        'request.headers["x-debug"] == "1"',
    )


@case("request path: POST 292 B, content-length")
def _request_post() -> tuple[Callable[[], object], int]:
    body = REQUEST_BODY
    return _request_cycle(_REQUEST_HEAD + b"content-length: %d\r\n\r\n" % len(body) + body)


@case("request path: POST chunked, 16 x 1 KiB chunks")
def _request_chunked() -> tuple[Callable[[], object], int]:
    chunk = b"400;ext=1\r\n" + b"x" * 1024 + b"\r\n"
    head = _REQUEST_HEAD + b"transfer-encoding: chunked\r\n\r\n"
    return _request_cycle(head + chunk * 16 + b"0\r\n\r\n")


def run_micro(*, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time every case: best of N repeats of an auto-sized loop; µs per operation."""
    min_time, repeats = (0.05, 3) if quick else (0.2, 5)
    results: dict[str, Any] = {}
    for name, setup in CASES.items():
        try:
            fn, ops = setup()
            fn()  # fail fast (and warm caches) before timing
        except (ImportError, TypeError, ValueError, AttributeError) as exc:
            log(f"  skipped: {name} not available ({type(exc).__name__}: {exc})")
            results[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
            continue
        timer = timeit.Timer(fn)
        number = 1
        while True:
            if timer.timeit(number) >= min_time:
                break
            number *= 2
        best = min(timer.repeat(repeats, number)) / number
        us = best / ops * 1e6
        results[name] = {"us_per_op": us, "ops_per_call": ops, "loops": number}
        log(f"  {name:<58} {us:9.2f} µs/op")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = run_micro(quick=args.quick)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
