"""agentgateway's connection, byte, processing and upstream metrics; `process_*`; build info;
the log directives of `/logging`.

Expositions are read back with `prometheus_client`'s parser (what a Prometheus server would
ingest); names, types, label sets and buckets are agentgateway's
(crates/agentgateway/src/telemetry/metrics.rs).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agw_fast.core.http1 import ChunkedScanner
from agw_fast.log import apply_log_directive, logger, normalize_log_directive
from agw_fast.plan import RouteLabels
from agw_fast.server.reload import ReloadState
from agw_fast.telemetry.metrics import (
    CONNECT_DURATION_BUCKETS,
    CONNECTION,
    PROCESSING_BUCKETS,
    TPOT_BUCKETS,
    MetricsRegistry,
    RequestKey,
)
from agw_fast.telemetry.process import read_process, render_process_metrics
from agw_fast.telemetry.prometheus import render_build_info, render_prometheus
from agw_fast.telemetry.recorder import Recorder
from agw_fast.telemetry.shared_slots import SharedSlots

ROUTE = RouteLabels.of("bind/3000", "default/default", "main", "default/api")
BIND = RouteLabels.of("bind/3000")
KEY: RequestKey = (*ROUTE.values, "backend0", "http", "POST", 200, "Upstream")


def families(text: bytes) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """name -> (type, samples) as prometheus_client reads the exposition."""
    return {
        family.name: (family.type, [(s.name, dict(s.labels), s.value) for s in family.samples])
        for family in text_string_to_metric_families(text.decode())
    }


def record(body: int, request_processing: float | None, response_processing: float | None,
           method: bytes = b"POST") -> tuple[object, ...]:
    return (
        ROUTE, "backend0", "127.0.0.1:8080", "http", method, b"h", b"/", "HTTP/1.1",
        "127.0.0.1:1", 200, "Upstream", None, 0.01, None, 0, None, body, request_processing,
        response_processing,
    )  # fmt: skip


@pytest.fixture
def slots() -> Iterator[SharedSlots]:
    shared = SharedSlots(2, 256 * 1024)
    yield shared
    shared.close()


def test_request_extras_render_with_agentgateway_labels(slots: SharedSlots) -> None:
    recorder = Recorder(MetricsRegistry(slots.writer(0)), None)
    recorder.record(record(300, 0.0002, 0.00003))  # type: ignore[arg-type]
    recorder.record(record(200, 0.0004, None))  # type: ignore[arg-type]
    # Another method: its own request series, the same backend and route.
    recorder.record(record(0, 0.3, 0.00003, method=b"GET"))  # type: ignore[arg-type]
    other = Recorder(MetricsRegistry(slots.writer(1)), None)  # a second worker
    other.record(record(50, 0.0002, 0.00003))  # type: ignore[arg-type]
    found = families(render_prometheus(slots.read_all()))

    kind, samples = found["agentgateway_response_bytes"]
    assert kind == "counter"
    # A label set appears once a response had a body; both workers summed.
    assert [(s[1]["method"], s[2]) for s in samples] == [("POST", 550.0)]
    assert set(samples[0][1]) == {
        "backend", "protocol", "method", "status", "reason",
        "bind", "gateway", "listener", "route", "route_rule",
    }  # fmt: skip

    kind, samples = found["agentgateway_request_processing_seconds"]
    assert kind == "histogram"
    count = [s for s in samples if s[0].endswith("_count")]
    # MinimalHTTPLabels: backend and route; the methods' series are summed.
    assert count == [("agentgateway_request_processing_seconds_count", {
        "backend": "backend0", "bind": "bind/3000", "gateway": "default/default",
        "listener": "main", "route": "default/api", "route_rule": "unknown",
    }, 4.0)]  # fmt: skip
    bounds = [s[1]["le"] for s in samples if s[0].endswith("_bucket")]
    assert bounds == [*(repr(b) for b in PROCESSING_BUCKETS), "+Inf"]
    cumulative = {s[1]["le"]: s[2] for s in samples if s[0].endswith("_bucket")}
    assert cumulative["0.00025"] == 2 and cumulative["0.0005"] == 3 and cumulative["+Inf"] == 4
    _, samples = found["agentgateway_response_processing_seconds"]
    assert [s[2] for s in samples if s[0].endswith("_count")] == [3.0]  # one had none


def test_connections_connects_and_calls_render(slots: SharedSlots) -> None:
    recorder = Recorder(MetricsRegistry(slots.writer(0)), None)
    series = recorder.connection_series(BIND, "http")
    assert recorder.connection_series(BIND, "http") is series  # cached per labels object
    series[0] += 2
    series[1] += 1000
    series[2] += 5000
    tls = recorder.connection_series(ROUTE, "https")
    tls[0] += 1
    tls[3 + 1] += 1  # one handshake in the 1.5 ms bucket
    tls[3 + len(CONNECT_DURATION_BUCKETS) + 1] += 0.001
    recorder.upstream_connect(False, 0.0002)
    recorder.upstream_connect(True, 0.02)
    recorder.upstream_call(False, 0.003)
    recorder.upstream_call(True, 2.0)
    recorder.upstream_call(False, 0.5, mirror=True)
    found = families(render_prometheus(slots.read_all()))

    http = {"bind": "bind/3000", "gateway": "unknown", "listener": "unknown", "protocol": "http"}
    https = {"bind": "bind/3000", "gateway": "default/default", "listener": "main",
             "protocol": "https"}  # fmt: skip
    for name, values in (
        ("agentgateway_downstream_connections", (2.0, 1.0)),
        ("agentgateway_downstream_received_bytes", (1000.0, 0.0)),
        ("agentgateway_downstream_sent_bytes", (5000.0, 0.0)),
    ):
        kind, samples = found[name]
        assert kind == "counter"
        assert sorted((s[1] == http, s[2]) for s in samples) == sorted(
            [(True, values[0]), (False, values[1])]
        )
    kind, samples = found["agentgateway_tls_handshake_duration_seconds"]
    assert kind == "histogram"
    assert {tuple(sorted(s[1].items())) for s in samples if s[0].endswith("_count")} == {
        tuple(sorted(https.items()))
    }  # only the listener that had handshakes
    bounds = [s[1]["le"] for s in samples if s[0].endswith("_bucket")]
    assert bounds == ["0.0005", "0.0015", "0.0043", "0.0126", "0.0368", "0.108", "0.316",
                      "0.924", "2.71", "8.0", "+Inf"]  # fmt: skip

    kind, samples = found["agentgateway_upstream_connect_duration_seconds"]
    assert kind == "histogram"
    counts = {s[1]["transport"]: s[2] for s in samples if s[0].endswith("_count")}
    assert counts == {"plaintext": 1.0, "tls": 1.0}
    kind, samples = found["agentgateway_upstream_call_duration_seconds"]
    counts = {(s[1]["kind"], s[1]["subtype"]): s[2] for s in samples if s[0].endswith("_count")}
    assert counts == {("Primary", "Http"): 1, ("Primary", "Llm"): 1, ("Mirror", "Http"): 1}
    assert [s[1]["le"] for s in samples if s[0].endswith("_bucket")][:2] == ["0.001", "0.005"]


def test_a_replacement_worker_continues_the_connection_counts(slots: SharedSlots) -> None:
    first = MetricsRegistry(slots.writer(0))
    first.fixed_series(CONNECTION, ("bind/1", "unknown", "unknown", "http"))[0] += 3
    second = MetricsRegistry(slots.writer(0))  # the same slot, as after a SIGKILL
    second.fixed_series(CONNECTION, ("bind/1", "unknown", "unknown", "http"))[0] += 1
    snapshot = slots.read(0)
    assert snapshot is not None
    assert snapshot.connections[("bind/1", "unknown", "unknown", "http")][0] == 4
    assert slots.pid(0) == os.getpid() and slots.pid(1) == 0


def test_time_per_output_token_has_agentgateways_one_millisecond_bucket() -> None:
    assert TPOT_BUCKETS[:2] == (0.001, 0.01)


def test_build_info_is_a_gauge_of_one() -> None:
    found = families(render_build_info('1.2.3"x'))
    assert found["agentgateway_build_info"] == (
        "gauge", [("agentgateway_build_info", {"tag": '1.2.3"x'}, 1.0)]
    )


def test_process_metrics_of_this_process() -> None:
    stats = read_process(os.getpid())
    assert stats is not None
    cpu, rss, vsize, fds, max_fds, started = stats
    assert cpu > 0 and rss > 1 << 20 and vsize >= rss and fds >= 3 and max_fds >= fds
    assert time.time() - 3600 < started <= time.time() + 1  # this test run's start
    # A pid that is not a child of the given parent (a stale one, reused) is left out.
    assert read_process(os.getpid(), parent=os.getpid()) is None
    assert read_process(2**22 + 12345) is None
    found = families(render_process_metrics([(0, stats), (1, stats)]))
    assert found["process_cpu_seconds"][0] == "counter"
    for name in ("process_resident_memory_bytes", "process_virtual_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):  # fmt: skip
        kind, samples = found[name]
        assert kind == "gauge"
        assert [s[1] for s in samples] == [{"worker": "0"}, {"worker": "1"}]
    assert render_process_metrics([]) == b""


def test_chunked_scanner_counts_payload_not_framing() -> None:
    scanner = ChunkedScanner()
    body = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n"
    for i in range(len(body)):  # one byte at a time: the count never depends on the reads
        scanner.feed(body[i : i + 1])
    assert scanner.payload == 8


@pytest.fixture
def restore_levels() -> Iterator[None]:
    level = logger.level
    yield
    apply_log_directive("info")
    logger.setLevel(level)


@pytest.mark.usefixtures("restore_levels")
def test_log_directives() -> None:
    assert normalize_log_directive("info") == "info"
    assert normalize_log_directive("info,warn") == "warn"
    assert normalize_log_directive("debug,request=off,agw_fast.proxy=error,request=info") == (
        "debug,agw_fast.proxy=error,request=info"
    )
    assert normalize_log_directive("agw_fast=debug") == "debug"  # the package is the global
    for bad in ("loud", "request=loud", "a b=info", "=info"):
        with pytest.raises(ValueError, match="is invalid"):
            normalize_log_directive(bad)
    assert apply_log_directive("warn") is False  # the access log is info
    assert logger.level == logging.WARNING
    assert apply_log_directive("warn,request=info") is True
    assert apply_log_directive("info,agw_fast.proxy=debug") is True
    assert logging.getLogger("agw_fast.proxy").level == logging.DEBUG
    apply_log_directive("info")  # a target left out goes back to the global level
    assert logging.getLogger("agw_fast.proxy").level == logging.NOTSET
    assert apply_log_directive("info,request=off") is False


def test_reload_state_carries_the_log_directive() -> None:
    state = ReloadState(2)
    assert state.log_directive() == (0, "")
    generation = state.set_log_directive("warn,request=info")
    assert state.log_directive() == (generation, "warn,request=info")
    assert state.log_lagging(generation) == [0, 1]
    state.set_log_applied(1, generation)
    assert state.log_lagging(generation) == [0]
    assert state.set_log_directive("info") == generation + 1
    assert state.log_directive() == (generation + 1, "info")  # shorter: no old bytes left
