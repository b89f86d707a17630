from __future__ import annotations

import math
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from agw_fast.telemetry.metrics import (
    DEFAULT_MAX_LLM_SERIES,
    DEFAULT_MAX_REQUEST_SERIES,
    MAX_LABEL_LENGTH,
    REQUEST_DURATION_BUCKETS,
    TOKEN_BUCKETS,
    MetricsRegistry,
    Snapshot,
    render_prometheus,
)
from agw_fast.telemetry.shared_slots import DEFAULT_SLOT_SIZE, Publisher, SharedSlots

Sample = tuple[str, dict[str, str], float]


def _parse_labels(text: str) -> dict[str, str]:
    """Parse `a="x",b="y\\"z"` with the 0.0.4 escapes; strict about the syntax."""
    labels: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        name = text[i:eq]
        assert name.isidentifier(), name
        assert text[eq + 1] == '"'
        j = eq + 2
        value: list[str] = []
        while text[j] != '"':
            if text[j] == "\\":
                value.append({"\\": "\\", '"': '"', "n": "\n"}[text[j + 1]])
                j += 2
            else:
                value.append(text[j])
                j += 1
        assert name not in labels
        labels[name] = "".join(value)
        i = j + 1
        if i < len(text):
            assert text[i] == ","
            i += 1
    return labels


def parse_exposition(body: bytes) -> tuple[dict[str, str], list[Sample]]:
    text = body.decode("utf-8")
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for line in text[:-1].split("\n"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4
        else:
            head, _, value = line.rpartition(" ")
            if "{" in head:
                name, _, rest = head.partition("{")
                assert rest.endswith("}")
                labels = _parse_labels(rest[:-1])
            else:
                name, labels = head, {}
            samples.append((name, labels, float(value)))
    return types, samples


def find(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = find(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0][2]


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


def test_request_metrics_render() -> None:
    reg = MetricsRegistry()
    reg.record_request("route0", "api.openai.com:443", "POST", 200, 0.0005)
    reg.record_request("route0", "api.openai.com:443", "POST", 200, 0.3)
    reg.record_request("route0", "api.openai.com:443", "POST", 200, 100.0)
    reg.record_request("route0", "", "GET", 404, 0.002, reason="NotFound")
    types, samples = parse_exposition(render_prometheus([reg.snapshot()]))
    assert types["agentgateway_requests_total"] == "counter"
    assert types["agentgateway_request_duration_seconds"] == "histogram"
    ok = {"route": "route0", "backend": "api.openai.com:443", "method": "POST", "status": "200"}
    assert value(samples, "agentgateway_requests_total", reason="Upstream", **ok) == 3
    assert value(samples, "agentgateway_requests_total", status="404", reason="NotFound") == 1
    name = "agentgateway_request_duration_seconds"
    assert value(samples, name + "_bucket", le="0.001", **ok) == 1
    assert value(samples, name + "_bucket", le="0.25", **ok) == 1
    assert value(samples, name + "_bucket", le="0.5", **ok) == 2
    assert value(samples, name + "_bucket", le="80.0", **ok) == 2
    assert value(samples, name + "_bucket", le="+Inf", **ok) == 3
    assert value(samples, name + "_sum", **ok) == pytest.approx(100.3005)
    assert len(find(samples, name + "_bucket", **ok)) == len(REQUEST_DURATION_BUCKETS) + 1
    check_histograms(samples)


def test_llm_metrics_render() -> None:
    reg = MetricsRegistry()
    common = ("route0", "command", "command-r")
    reg.record_llm(
        *common, input_tokens=10, output_tokens=101, duration_s=2.0, ttft_s=0.5,
        cached_input_tokens=4,
    )  # fmt: skip
    reg.record_llm(*common, input_tokens=1, output_tokens=None, duration_s=0.1)
    types, samples = parse_exposition(render_prometheus([reg.snapshot()]))
    name = "agentgateway_gen_ai_client_token_usage"
    assert types[name] == "histogram"
    labels = {
        "gen_ai_operation_name": "chat",
        "gen_ai_system": "openai",
        "gen_ai_request_model": "command",
        "gen_ai_response_model": "command-r",
        "route": "route0",
    }
    assert value(samples, name + "_count", gen_ai_token_type="input", **labels) == 2
    assert value(samples, name + "_sum", gen_ai_token_type="input", **labels) == 11
    assert value(samples, name + "_bucket", gen_ai_token_type="input", le="1.0", **labels) == 1
    assert value(samples, name + "_bucket", gen_ai_token_type="input", le="4.0", **labels) == 1
    assert value(samples, name + "_bucket", gen_ai_token_type="input", le="16.0", **labels) == 2
    assert value(samples, name + "_count", gen_ai_token_type="output", **labels) == 1
    assert value(samples, name + "_sum", gen_ai_token_type="input_cache_read", **labels) == 4
    buckets = find(samples, name + "_bucket", gen_ai_token_type="output")
    assert [b[1]["le"] for b in buckets][-2:] == ["67108864.0", "+Inf"]
    assert len(buckets) == len(TOKEN_BUCKETS) + 1
    ttft = "agentgateway_gen_ai_server_time_to_first_token"
    assert value(samples, ttft + "_count", **labels) == 1
    assert value(samples, ttft + "_sum", **labels) == 0.5
    duration = "agentgateway_gen_ai_server_request_duration"
    assert value(samples, duration + "_count", **labels) == 2
    tpot = "agentgateway_gen_ai_server_time_per_output_token"
    assert value(samples, tpot + "_sum", **labels) == pytest.approx(1.5 / 100)
    check_histograms(samples)


def test_label_values_are_escaped() -> None:
    reg = MetricsRegistry()
    nasty = 'a"b\\c\nd'
    reg.record_request(nasty, "b", "POST", 200, 0.1)
    reg.record_llm("r", nasty, "m", input_tokens=1, output_tokens=1, duration_s=0.1)
    body = render_prometheus([reg.snapshot()])
    assert b'route="a\\"b\\\\c\\nd"' in body
    _, samples = parse_exposition(body)
    assert value(samples, "agentgateway_requests_total", route=nasty) == 1
    assert find(samples, "agentgateway_gen_ai_client_token_usage_count", gen_ai_request_model=nasty)


def test_empty_render_is_valid() -> None:
    types, samples = parse_exposition(render_prometheus([]))
    assert samples == [] and "agentgateway_requests_total" in types


def test_bad_durations_do_not_poison_sums() -> None:
    reg = MetricsRegistry()
    reg.record_request("r", "b", "GET", 200, math.nan)
    reg.record_request("r", "b", "GET", 200, -1.0)
    reg.record_llm("r", "m", "m", input_tokens=-5, output_tokens=2, duration_s=math.nan)
    _, samples = parse_exposition(render_prometheus([reg.snapshot()]))
    assert value(samples, "agentgateway_request_duration_seconds_sum") == 0
    assert value(samples, "agentgateway_requests_total") == 2
    assert not find(
        samples, "agentgateway_gen_ai_client_token_usage_count", gen_ai_token_type="input"
    )
    assert not find(samples, "agentgateway_gen_ai_server_request_duration_count")


def test_series_cap_folds_into_overflow() -> None:
    reg = MetricsRegistry(max_request_series=3, max_llm_series=1)
    for i in range(10):
        reg.record_request("r", "b", f"M{i}", 200, 0.1)
        reg.record_llm("r", f"model{i}", "x", input_tokens=1, output_tokens=1, duration_s=0.1)
    snap = reg.snapshot()
    assert len(snap.requests) == 4
    assert len(snap.llm) == 2
    _, samples = parse_exposition(render_prometheus([snap]))
    assert value(samples, "agentgateway_requests_total", method="__overflow__") == 7
    assert sum(s[2] for s in find(samples, "agentgateway_requests_total")) == 10


def test_long_label_values_are_clipped() -> None:
    reg = MetricsRegistry()
    long_model = "m" * 10_000
    for _ in range(2):
        reg.record_request("r", "b", "X" * 5000, 200, 0.1)
        reg.record_llm("r", long_model, long_model, input_tokens=1, output_tokens=1, duration_s=1)
    snap = reg.snapshot()
    assert list(snap.requests) == [("r", "b", "X" * MAX_LABEL_LENGTH, 200, "Upstream")]
    assert sum(snap.requests[("r", "b", "X" * MAX_LABEL_LENGTH, 200, "Upstream")][:-1]) == 2
    (key,) = snap.llm
    assert key[2] == key[3] == "m" * MAX_LABEL_LENGTH
    assert len(reg.encode_snapshot()) < 2000


def test_snapshot_at_the_series_caps_fits_the_default_slot() -> None:
    reg = MetricsRegistry()
    name = "n" * 200
    for i in range(DEFAULT_MAX_REQUEST_SERIES + 10):
        reg.record_request(f"route{i % 20}", f"{name}{i % 7}", f"{name}{i}", 200, 3.0)
    for i in range(DEFAULT_MAX_LLM_SERIES + 10):
        reg.record_llm(
            f"{name}{i % 20}", f"{name}{i}", f"{i}{name}", input_tokens=10**9,
            output_tokens=10**9, duration_s=1e9, ttft_s=1.0, cached_input_tokens=10**9,
        )  # fmt: skip
    for hist in reg._requests.values():
        hist[0] += 2**62  # large counters take more bytes in marshal
    assert len(reg.encode_snapshot()) < DEFAULT_SLOT_SIZE
    slots = SharedSlots(1)
    assert slots.publish(0, reg.encode_snapshot())


def test_snapshot_is_a_copy_and_round_trips() -> None:
    reg = MetricsRegistry()
    reg.record_request("r", "b", "GET", 200, 0.1)
    reg.record_llm("r", "m", "m", input_tokens=3, output_tokens=4, duration_s=1.0, ttft_s=0.2)
    snap = reg.snapshot()
    reg.record_request("r", "b", "GET", 200, 0.1)
    assert sum(snap.requests[("r", "b", "GET", 200, "Upstream")][:-1]) == 1
    assert Snapshot.decode(snap.encode()) == snap
    assert Snapshot.decode(reg.encode_snapshot()) == reg.snapshot()


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage", b"\xff" * 10, Snapshot({}, {}).encode()[:-1]],
)
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        Snapshot.decode(data)


def test_decode_drops_malformed_entries() -> None:
    import marshal

    good = MetricsRegistry()
    good.record_request("r", "b", "GET", 200, 0.1)
    req = dict(good.snapshot().requests)
    req[("x", "y", "z", "200", "w")] = req[("r", "b", "GET", 200, "Upstream")]  # type: ignore[index]
    req[("r", "b", "PUT", 200, "Upstream")] = [1, 2]
    snap = Snapshot.decode(marshal.dumps((1, req, {("a",): [None]})))
    assert list(snap.requests) == [("r", "b", "GET", 200, "Upstream")]
    assert snap.llm == {}
    with pytest.raises(ValueError):
        Snapshot.decode(marshal.dumps((999, {}, {})))


def test_restore_continues_from_a_snapshot() -> None:
    old = MetricsRegistry()
    old.record_request("r", "b", "GET", 200, 0.1)
    old.record_llm("r", "m", "m", input_tokens=3, output_tokens=4, duration_s=1.0)
    new = MetricsRegistry()
    assert not new.dirty
    new.restore(None)
    assert not new.dirty
    new.restore(old.snapshot())
    assert new.dirty
    new.record_request("r", "b", "GET", 200, 0.1)
    new.record_llm("r", "m", "m", input_tokens=5, output_tokens=None, duration_s=1.0)
    _, samples = parse_exposition(render_prometheus([new.snapshot()]))
    assert value(samples, "agentgateway_requests_total") == 2
    token = "agentgateway_gen_ai_client_token_usage_sum"
    assert value(samples, token, gen_ai_token_type="input") == 8
    assert value(samples, token, gen_ai_token_type="output") == 4
    assert old.snapshot().requests[("r", "b", "GET", 200, "Upstream")][-1] == 0.1  # not aliased


def test_render_sums_workers() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    a.record_request("r", "b", "GET", 200, 0.1)
    b.record_request("r", "b", "GET", 200, 0.2)
    b.record_request("r", "b", "GET", 500, 0.2)
    _, samples = parse_exposition(render_prometheus([a.snapshot(), b.snapshot()]))
    assert value(samples, "agentgateway_requests_total", status="200") == 2
    assert value(samples, "agentgateway_request_duration_seconds_sum", status="200") == (
        pytest.approx(0.3)
    )


# --- shared slots ---------------------------------------------------------------------------


def test_slots_in_process() -> None:
    slots = SharedSlots(3, slot_size=4096)
    assert slots.n_slots == 3 and slots.slot_size == 4096
    assert slots.read(0) is None and slots.read_all() == []
    assert not slots.is_published(1)
    reg = MetricsRegistry()
    reg.record_request("r", "b", "GET", 200, 0.1)
    assert slots.publish(1, reg.encode_snapshot())
    assert slots.is_published(1) and not slots.is_published(0)
    assert slots.read(1) == reg.snapshot()
    assert slots.read_all() == [reg.snapshot()]
    reg.record_request("r", "b", "GET", 200, 0.1)
    assert slots.publish(1, reg.encode_snapshot())  # second publish uses the other buffer
    assert slots.read(1) == reg.snapshot()
    with pytest.raises(IndexError):
        slots.publish(3, b"")
    with pytest.raises(IndexError):
        slots.read(-1)
    slots.close()


def test_oversized_payload_is_rejected_without_corrupting(caplog: pytest.LogCaptureFixture) -> None:
    slots = SharedSlots(1, slot_size=64)
    assert slots.publish(0, b"x" * 64)
    assert not slots.publish(0, b"y" * 65)
    assert not slots.publish(0, b"y" * 65)
    assert slots.read_payload(0) == b"x" * 64
    assert len([r for r in caplog.records if "exceeds" in r.message]) == 1


def test_unreadable_slot_payload_is_skipped() -> None:
    slots = SharedSlots(2, slot_size=64)
    slots.publish(0, b"not a snapshot")
    slots.publish(1, Snapshot({}, {}).encode())
    assert slots.read(0) is None
    assert slots.read_all() == [Snapshot({}, {})]


def test_writer_killed_mid_write_leaves_last_snapshot_readable() -> None:
    slots = SharedSlots(1, slot_size=64)
    slots.publish(0, b"complete")
    mm = slots._mm
    seq, active = struct.unpack_from("<QI", mm, 0)
    # What a writer dying half-way leaves: seq odd, the inactive buffer half written.
    struct.pack_into("<Q", mm, 0, seq + 1)
    inactive = 16 + (active ^ 1) * (8 + 64)
    mm[inactive : inactive + 12] = b"\x05\x00\x00\x00\x00\x00\x00\x00torn"
    assert slots.read_payload(0) == b"complete"
    assert slots.publish(0, b"next")  # the replacement recovers the seqlock
    assert struct.unpack_from("<Q", mm, 0)[0] % 2 == 0
    assert slots.read_payload(0) == b"next"


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


def test_fork_children_publish_and_parent_sums() -> None:
    slots = SharedSlots(3, slot_size=64 * 1024)

    def worker(index: int, n: int) -> Callable[[], None]:
        def run() -> None:
            reg = MetricsRegistry()
            reg.restore(slots.read(index))
            for _ in range(n):
                reg.record_request("r", "b", "POST", 200, 0.01)
            reg.record_llm("r", "m", "m", input_tokens=n, output_tokens=1, duration_s=1.0)
            assert Publisher(reg, slots, index).publish_now()

        return run

    with forked(worker(0, 5)):
        pass
    with forked(worker(1, 7)):
        pass
    # Worker 1 died; its replacement resumes from slot 1.
    with forked(worker(1, 1)):
        pass
    _, samples = parse_exposition(render_prometheus(slots.read_all()))
    assert value(samples, "agentgateway_requests_total") == 13
    token = "agentgateway_gen_ai_client_token_usage_sum"
    assert value(samples, token, gen_ai_token_type="input") == 13
    check_histograms(samples)


def test_concurrent_reads_see_consistent_monotonic_snapshots() -> None:
    slots = SharedSlots(1, slot_size=256 * 1024)
    rounds = 3000

    def writer() -> None:
        reg = MetricsRegistry()
        for i in range(rounds):
            # Growing payloads (new label sets) change the length as well as the bytes.
            reg.record_request("r", "b", f"M{i % 300}", 200, 0.01)
            slots.publish(0, reg.encode_snapshot())

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
    assert slots.read(0) is not None
    assert reads > 0


def test_publisher_throttles_and_skips_when_clean() -> None:
    now = [0.0]
    slots = SharedSlots(1, slot_size=4096)
    reg = MetricsRegistry()
    pub = Publisher(reg, slots, 0, interval_s=0.1, clock=lambda: now[0])
    assert not pub.maybe_publish()  # nothing recorded
    reg.record_request("r", "b", "GET", 200, 0.1)
    assert pub.maybe_publish()
    assert not reg.dirty
    reg.record_request("r", "b", "GET", 200, 0.1)
    now[0] = 0.05
    assert not pub.maybe_publish()  # too soon
    now[0] = 0.16
    assert pub.maybe_publish()
    now[0] = 1.0
    assert not pub.maybe_publish()  # clean
    assert slots.read(0) == reg.snapshot()
