"""Metric series, their shared-memory slots and the Prometheus text they render to.

The exposition is read back with `prometheus_client`'s parser, so what we check is what a
Prometheus server would ingest.
"""

from __future__ import annotations

import math
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agw_fast.telemetry.metrics import (
    DEFAULT_MAX_LLM_SERIES,
    DEFAULT_MAX_REQUEST_SERIES,
    GEN_AI_DURATION_BUCKETS,
    MAX_LABEL_LENGTH,
    OVERFLOW,
    REQUEST_DURATION_BUCKETS,
    TOKEN_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    LLMKey,
    MetricsRegistry,
    RequestKey,
    Snapshot,
)
from agw_fast.telemetry.prometheus import render_prometheus
from agw_fast.telemetry.shared_slots import DEFAULT_SLOT_SIZE, SharedSlots

Sample = tuple[str, dict[str, str], float]
ROUTE = ("bind/3000", "default/default", "listener0", "default/route0", "unknown")
ROUTE_LABELS = {
    "bind": "bind/3000",
    "gateway": "default/default",
    "listener": "listener0",
    "route": "default/route0",
    "route_rule": "unknown",
}
REQUESTS = "agentgateway_requests_total"
DURATION = "agentgateway_request_duration_seconds"
TOKENS = "agentgateway_gen_ai_client_token_usage"


def rkey(
    method: str = "GET",
    status: int = 200,
    reason: str = "Upstream",
    backend: str = "b",
    route: tuple[str, str, str, str, str] = ROUTE,
) -> RequestKey:
    return route + (backend, "http", method, status, reason)


def lkey(request_model: str = "m", response_model: str = "m") -> LLMKey:
    return ROUTE + ("chat", "openai", request_model, response_model)


def llm(
    reg: MetricsRegistry,
    key: LLMKey,
    *,
    input_tokens: int | None = 1,
    output_tokens: int | None = 1,
    cached_input_tokens: int | None = None,
    duration_s: float = 0.1,
    ttft_s: float | None = None,
    tpot_s: float | None = None,
) -> None:
    reg.record_llm(
        key, input_tokens=input_tokens, output_tokens=output_tokens,
        cached_input_tokens=cached_input_tokens, duration_s=duration_s, ttft_s=ttft_s,
        tpot_s=tpot_s,
    )  # fmt: skip


def parse(body: bytes) -> tuple[dict[str, str], list[Sample]]:
    """(family name -> type, samples), with prometheus_client's (strict) text parser."""
    text = body.decode("utf-8")
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
    return types, samples


def find(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = find(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0][2]


def bucket_bounds(samples: list[Sample], name: str, **labels: str) -> list[str]:
    return [s[1]["le"] for s in find(samples, name + "_bucket", **labels)]


def check_histograms(samples: list[Sample]) -> None:
    """Every histogram series: buckets cumulative, ending in +Inf equal to _count."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    for name, labels, val in samples:
        if name.endswith("_bucket"):
            key = dict(labels)
            le = key.pop("le")
            bound = math.inf if le == "+Inf" else float(le)
            series.setdefault((name[:-7], tuple(sorted(key.items()))), []).append((bound, val))
    assert series
    for (base, label_items), buckets in series.items():
        bounds = [b for b, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), (base, counts)
        assert value(samples, base + "_count", **dict(label_items)) == counts[-1]


def test_request_metrics_have_agentgateways_labels_and_buckets() -> None:
    reg = MetricsRegistry()
    ok = rkey("POST", backend="/default/default/bind/3000/listener0/default/route0/backend0")
    reg.record_request(ok, 0.0005)
    reg.record_request(ok, 0.3)
    reg.record_request(ok, 100.0)
    reg.record_request(rkey("GET", 404, "NotFound", backend="unknown"), 0.002)
    reg.record_request(rkey("POST", 0, "unknown"), 0.002)  # the client left: no status
    body = render_prometheus([reg.snapshot()])
    types, samples = parse(body)
    assert types["agentgateway_requests"] == "counter"
    assert types[DURATION] == "histogram"
    first = body.decode().split("\n")[2]
    # agentgateway's label order: HTTPLabels, then the flattened RouteIdentifier.
    assert first.startswith(
        'agentgateway_requests_total{backend="/default/default/bind/3000/listener0/default/'
        'route0/backend0",protocol="http",method="POST",status="200",reason="Upstream",'
        'bind="bind/3000",gateway="default/default",listener="listener0",'
        'route="default/route0",route_rule="unknown"} 3'
    ), first
    labels = {**ROUTE_LABELS, "method": "POST", "status": "200", "reason": "Upstream"}
    assert value(samples, REQUESTS, **labels) == 3
    assert value(samples, REQUESTS, status="404", reason="NotFound", backend="unknown") == 1
    assert value(samples, REQUESTS, status="unknown", reason="unknown") == 1
    assert bucket_bounds(samples, DURATION, **labels) == [
        *(repr(b) for b in REQUEST_DURATION_BUCKETS), "+Inf"
    ]
    assert REQUEST_DURATION_BUCKETS[-3:] == (10.0, 30.0, 80.0)  # agentgateway's, exactly
    assert value(samples, DURATION + "_bucket", le="0.001", **labels) == 1
    assert value(samples, DURATION + "_bucket", le="0.25", **labels) == 1
    assert value(samples, DURATION + "_bucket", le="0.5", **labels) == 2
    assert value(samples, DURATION + "_bucket", le="80.0", **labels) == 2
    assert value(samples, DURATION + "_bucket", le="+Inf", **labels) == 3
    assert value(samples, DURATION + "_sum", **labels) == pytest.approx(100.3005)
    check_histograms(samples)


def test_llm_metrics_render() -> None:
    reg = MetricsRegistry()
    key = lkey("command", "command-r")
    llm(reg, key, input_tokens=10, output_tokens=101, duration_s=2.0, ttft_s=0.5,
        cached_input_tokens=4, tpot_s=0.015)  # fmt: skip
    llm(reg, key, input_tokens=1, output_tokens=None, duration_s=0.1)
    types, samples = parse(render_prometheus([reg.snapshot()]))
    assert types[TOKENS] == "histogram"
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_system": "openai",
        "gen_ai_request_model": "command",
        "gen_ai_response_model": "command-r",
        **ROUTE_LABELS,
    }
    assert value(samples, TOKENS + "_count", gen_ai_token_type="input", **labels) == 2
    assert value(samples, TOKENS + "_sum", gen_ai_token_type="input", **labels) == 11
    assert value(samples, TOKENS + "_bucket", gen_ai_token_type="input", le="1.0", **labels) == 1
    assert value(samples, TOKENS + "_bucket", gen_ai_token_type="input", le="16.0", **labels) == 2
    assert value(samples, TOKENS + "_count", gen_ai_token_type="output", **labels) == 1
    assert value(samples, TOKENS + "_sum", gen_ai_token_type="input_cache_read", **labels) == 4
    assert bucket_bounds(samples, TOKENS, gen_ai_token_type="output") == [
        *(repr(b) for b in TOKEN_BUCKETS), "+Inf"
    ]
    ttft = "agentgateway_gen_ai_server_time_to_first_token"
    assert value(samples, ttft + "_count", **labels) == 1
    assert value(samples, ttft + "_sum", **labels) == 0.5
    assert bucket_bounds(samples, ttft) == [*(repr(b) for b in TTFT_BUCKETS), "+Inf"]
    duration = "agentgateway_gen_ai_server_request_duration"
    assert value(samples, duration + "_count", **labels) == 2
    assert bucket_bounds(samples, duration) == [*(repr(b) for b in GEN_AI_DURATION_BUCKETS), "+Inf"]
    tpot = "agentgateway_gen_ai_server_time_per_output_token"
    assert value(samples, tpot + "_sum", **labels) == 0.015
    assert bucket_bounds(samples, tpot)[:2] == ["0.001", "0.01"]  # agentgateway's extra bucket
    assert bucket_bounds(samples, tpot) == [*(repr(b) for b in TPOT_BUCKETS), "+Inf"]
    check_histograms(samples)


def test_label_values_are_escaped() -> None:
    reg = MetricsRegistry()
    nasty = 'a"b\\c\nd'
    reg.record_request(rkey(backend=nasty), 0.1)
    llm(reg, lkey(nasty))
    body = render_prometheus([reg.snapshot()])
    assert b'backend="a\\"b\\\\c\\nd"' in body
    _, samples = parse(body)
    assert value(samples, REQUESTS, backend=nasty) == 1
    assert find(samples, TOKENS + "_count", gen_ai_request_model=nasty)


def test_empty_render_is_valid() -> None:
    types, samples = parse(render_prometheus([]))
    assert samples == [] and "agentgateway_requests" in types


def test_bad_durations_do_not_poison_sums() -> None:
    reg = MetricsRegistry()
    reg.record_request(rkey(), math.nan)
    reg.record_request(rkey(), -1.0)
    llm(reg, lkey(), input_tokens=-5, output_tokens=2, duration_s=math.nan, ttft_s=math.nan)
    _, samples = parse(render_prometheus([reg.snapshot()]))
    assert value(samples, DURATION + "_sum") == 0
    assert value(samples, REQUESTS) == 2
    assert not find(samples, TOKENS + "_count", gen_ai_token_type="input")
    assert not find(samples, "agentgateway_gen_ai_server_request_duration_count")
    assert not find(samples, "agentgateway_gen_ai_server_time_to_first_token_count")


def test_series_cap_folds_into_overflow() -> None:
    reg = MetricsRegistry(max_request_series=3, max_llm_series=1)
    for i in range(10):
        reg.record_request(rkey(f"M{i}"), 0.1)
        llm(reg, lkey(f"model{i}"))
    snap = reg.snapshot()
    assert len(snap.requests) == 4
    assert len(snap.llm) == 2
    _, samples = parse(render_prometheus([snap]))
    assert value(samples, REQUESTS, method=OVERFLOW) == 7
    assert sum(s[2] for s in find(samples, REQUESTS)) == 10


def test_long_label_values_are_clipped() -> None:
    reg = MetricsRegistry()
    long_model = "m" * 10_000
    for _ in range(2):
        reg.record_request(rkey("X" * 5000), 0.1)
        llm(reg, lkey(long_model, long_model))
    snap = reg.snapshot()
    assert list(snap.requests) == [rkey("X" * MAX_LABEL_LENGTH)]
    assert sum(snap.requests[rkey("X" * MAX_LABEL_LENGTH)][:-1]) == 2
    (key,) = snap.llm
    assert key[7] == key[8] == "m" * MAX_LABEL_LENGTH


def test_snapshot_is_a_copy() -> None:
    reg = MetricsRegistry()
    reg.record_request(rkey(), 0.1)
    snap = reg.snapshot()
    reg.record_request(rkey(), 0.1)
    assert sum(snap.requests[rkey()][:-1]) == 1
    assert sum(reg.snapshot().requests[rkey()][:-1]) == 2


def test_render_sums_workers() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    a.record_request(rkey(), 0.1)
    b.record_request(rkey(), 0.2)
    b.record_request(rkey(status=500), 0.2)
    _, samples = parse(render_prometheus([a.snapshot(), b.snapshot()]))
    assert value(samples, REQUESTS, status="200") == 2
    assert value(samples, DURATION + "_sum", status="200") == pytest.approx(0.3)


# --- shared slots ---------------------------------------------------------------------------


def test_series_live_in_the_slot_and_are_read_at_once() -> None:
    slots = SharedSlots(3)
    assert slots.n_slots == 3
    assert slots.read(0) is None and slots.read_all() == []
    assert not slots.is_attached(1)
    reg = MetricsRegistry(slots.writer(1))
    assert slots.is_attached(1) and not slots.is_attached(0)
    assert slots.read(1) == Snapshot({}, {})
    reg.record_request(rkey(), 0.1)
    llm(reg, lkey(), ttft_s=0.05)
    assert slots.read(1) == reg.snapshot()  # no publishing step: the values are shared
    reg.record_request(rkey(), 0.1)
    assert sum(slots.read(1).requests[rkey()][:-1]) == 2  # type: ignore[union-attr]
    assert slots.read_all() == [reg.snapshot()]
    with pytest.raises(IndexError):
        slots.writer(3)
    with pytest.raises(IndexError):
        slots.read(-1)
    slots.close()


def test_a_replacement_continues_from_the_slot() -> None:
    slots = SharedSlots(1)
    old = MetricsRegistry(slots.writer(0))
    old.record_request(rkey(), 0.1)
    llm(old, lkey(), input_tokens=3, output_tokens=4)
    new = MetricsRegistry(slots.writer(0))
    new.record_request(rkey(), 0.1)
    new.record_request(rkey(status=500), 0.1)
    llm(new, lkey(), input_tokens=5, output_tokens=None, ttft_s=0.1)
    _, samples = parse(render_prometheus(slots.read_all()))
    assert value(samples, REQUESTS, status="200") == 2
    assert value(samples, REQUESTS, status="500") == 1
    assert value(samples, TOKENS + "_sum", gen_ai_token_type="input") == 8
    assert value(samples, TOKENS + "_sum", gen_ai_token_type="output") == 4
    assert value(samples, "agentgateway_gen_ai_server_time_to_first_token_count") == 1
    assert new.snapshot() == slots.read(0)


def test_a_record_its_writer_did_not_finish_is_not_read_and_is_reused() -> None:
    slots = SharedSlots(1)
    reg = MetricsRegistry(slots.writer(0))
    reg.record_request(rkey(), 0.1)
    end = struct.unpack_from("<Q", slots._mm, 8)[0]
    # A writer killed mid-append: bytes past `end` (garbage values included), never published.
    slots._mm[end : end + 200] = b"\xff" * 200
    assert slots.read(0) == reg.snapshot()
    again = MetricsRegistry(slots.writer(0))
    again.record_request(rkey("PUT"), 0.1)  # written over the leftovers, values zeroed first
    snap = slots.read(0)
    assert snap is not None and sum(snap.requests[rkey("PUT")][:-1]) == 1
    assert snap.requests[rkey("PUT")][-1] == pytest.approx(0.1)


def test_a_record_seen_before_its_bytes_is_skipped_until_complete() -> None:
    """On a weakly ordered CPU a reader may see `end` advance before the record it covers."""
    slots = SharedSlots(1)
    reg = MetricsRegistry(slots.writer(0))
    reg.record_request(rkey(), 0.1)
    reg.record_request(rkey("PUT"), 0.1)
    end = struct.unpack_from("<Q", slots._mm, 8)[0]
    saved = bytes(slots._mm[64:end])
    second = 64 + struct.unpack_from("<I", slots._mm, 64)[0]
    slots._mm[second + 16 : second + 24] = b"\x00" * 8  # the key not yet visible
    assert list(slots.read(0).requests) == [rkey()]  # type: ignore[union-attr]
    slots._mm[64:end] = saved
    assert list(slots.read(0).requests) == [rkey(), rkey("PUT")]  # type: ignore[union-attr]


def test_a_full_slot_counts_new_label_sets_as_overflow(caplog: pytest.LogCaptureFixture) -> None:
    slots = SharedSlots(1, slot_size=64 + 16 * 1024 + 4096)
    reg = MetricsRegistry(slots.writer(0))
    for i in range(200):
        reg.record_request(rkey(f"M{i}"), 0.1)
        llm(reg, lkey(f"model{i}"), ttft_s=0.1, tpot_s=0.01)
    _, samples = parse(render_prometheus(slots.read_all()))
    assert sum(s[2] for s in find(samples, REQUESTS)) == 200
    assert value(samples, REQUESTS, method=OVERFLOW) > 100
    assert sum(s[2] for s in find(samples, TOKENS + "_count", gen_ai_token_type="input")) == 200
    assert value(samples, TOKENS + "_count", gen_ai_request_model=OVERFLOW,
                 gen_ai_token_type="output") > 100  # fmt: skip
    assert len([r for r in caplog.records if OVERFLOW in r.message]) == 1


def test_the_default_slot_holds_the_series_caps() -> None:
    slots = SharedSlots(1)
    reg = MetricsRegistry(slots.writer(0))
    name = "n" * 100
    for i in range(DEFAULT_MAX_REQUEST_SERIES):
        reg.record_request(rkey(f"{name}{i}", backend=name), 3.0)
    for i in range(DEFAULT_MAX_LLM_SERIES):
        llm(reg, lkey(f"{name}{i}", name), cached_input_tokens=1, ttft_s=1.0, tpot_s=0.1)
    snap = slots.read(0)
    assert snap is not None
    assert OVERFLOW not in {key[7] for key in snap.requests}
    assert OVERFLOW not in {key[7] for key in snap.llm}
    assert struct.unpack_from("<Q", slots._mm, 8)[0] < DEFAULT_SLOT_SIZE


@contextmanager
def forked(child: Callable[[], None]) -> Iterator[int]:
    """Run `child` in a forked process; yields its pid, then asserts it exited 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    try:
        yield pid
    finally:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_forked_workers_count_and_the_parent_sums() -> None:
    slots = SharedSlots(3)

    def worker(index: int, n: int) -> Callable[[], None]:
        def run() -> None:
            reg = MetricsRegistry(slots.writer(index))
            for _ in range(n):
                reg.record_request(rkey("POST"), 0.01)
            llm(reg, lkey(), input_tokens=n, output_tokens=1, duration_s=1.0)
            os.kill(os.getpid(), 9)  # no goodbye: what was recorded is already shared

        return run

    for index, n in ((0, 5), (1, 7), (1, 1)):  # worker 1 dies and its replacement resumes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            try:
                worker(index, n)()
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
    _, samples = parse(render_prometheus(slots.read_all()))
    assert value(samples, REQUESTS) == 13
    assert value(samples, TOKENS + "_sum", gen_ai_token_type="input") == 13
    check_histograms(samples)


def test_concurrent_reads_see_monotonic_totals() -> None:
    slots = SharedSlots(1)
    rounds = 3000

    def writer() -> None:
        reg = MetricsRegistry(slots.writer(0))
        for i in range(rounds):
            reg.record_request(rkey(f"M{i % 300}"), 0.01)  # new series as well as counts

    seen = 0
    reads = 0
    with forked(writer):
        deadline = time.monotonic() + 30
        while seen < rounds and time.monotonic() < deadline:
            snap = slots.read(0)
            if snap is None:
                continue
            total = sum(sum(h[:-1]) for h in snap.requests.values())
            assert total >= seen
            seen = int(total)
            reads += 1
    snap = slots.read(0)
    assert snap is not None and sum(sum(h[:-1]) for h in snap.requests.values()) == rounds
    assert reads > 0
