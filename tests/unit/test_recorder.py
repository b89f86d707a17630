"""The recorder: a finished request's record -> metric series and agentgateway's access line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest

from agw_fast.core.reason import Reason
from agw_fast.llm.exchange import LLMOutcome
from agw_fast.log import format_fields
from agw_fast.plan import RouteLabels
from agw_fast.telemetry import recorder as recorder_module
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.record import RequestRecord
from agw_fast.telemetry.recorder import Recorder

ROUTE = RouteLabels.of("bind/3000", "default/default", "listener0", "default/route0")
BIND = RouteLabels.of("bind/3000")
BACKEND = "/default/default/bind/3000/listener0/default/route0/backend0"


FIELDS = (
    "labels backend endpoint protocol method host path http_version peer status reason error "
    "duration llm retries request body_bytes request_processing response_processing"
).split()


def record(**changes: object) -> RequestRecord:
    """A proxied GET as the exchange records it, with `changes` by field name."""
    base: RequestRecord = (
        ROUTE, BACKEND, "127.0.0.1:8080", "http", b"GET", b"api.example.com", b"/v1/models",
        "HTTP/1.1", "127.0.0.1:50000", 200, Reason.UPSTREAM, None, 0.0123, None, 0, None, 0,
        None, None,
    )  # fmt: skip
    assert set(changes) <= set(FIELDS)
    return tuple(changes.get(name, value) for name, value in zip(FIELDS, base, strict=True))  # type: ignore[return-value]


OUTCOME = LLMOutcome(
    "openai", "completions", "gpt-4o", "gpt-4o-2024", 10, 5, 2, 0.25, 0.5, 64,
)  # fmt: skip


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    new = asyncio.new_event_loop()  # never run: lines stay queued for the test to read
    yield new
    new.close()


def lines(recorder: Recorder) -> list[str]:
    assert recorder.access_log is not None
    return list(recorder.access_log.lines)


def text_recorder(loop: asyncio.AbstractEventLoop) -> Recorder:
    return Recorder(MetricsRegistry(), AccessLog(loop, "text", fd=-1))


def test_text_line_fields_in_agentgateways_order(loop: asyncio.AbstractEventLoop) -> None:
    recorder = text_recorder(loop)
    recorder.record(record())
    assert lines(recorder) == [
        "info request gateway=default/default listener=listener0 route=default/route0 "
        "endpoint=127.0.0.1:8080 src.addr=127.0.0.1:50000 http.method=GET "
        "http.host=api.example.com http.path=/v1/models http.version=HTTP/1.1 "
        "http.status=200 protocol=http duration=12ms"
    ]


def test_local_answer_line_has_method_host_path_and_reason(
    loop: asyncio.AbstractEventLoop,
) -> None:
    recorder = text_recorder(loop)
    recorder.record(record(
        labels=BIND, backend=None, endpoint=None, method=b"DELETE", host=b"a b",
        http_version="HTTP/1.0", status=404, reason=Reason.NOT_FOUND, error="listener not found",
    ))  # fmt: skip
    assert lines(recorder) == [
        'info request src.addr=127.0.0.1:50000 http.method=DELETE http.host="a b" '
        "http.path=/v1/models http.version=HTTP/1.0 http.status=404 protocol=http "
        'error="listener not found" reason=NotFound duration=12ms'
    ]
    (key,) = recorder.registry.snapshot().requests
    assert key == (
        "bind/3000", "unknown", "unknown", "unknown", "unknown",
        "unknown", "http", "DELETE", 404, "NotFound",
    )  # fmt: skip


def test_client_gone_before_any_response(loop: asyncio.AbstractEventLoop) -> None:
    recorder = text_recorder(loop)
    recorder.record(record(status=0, reason=None, error="downstream closed"))
    (line,) = lines(recorder)
    assert "http.status" not in line and "reason=" not in line
    assert 'error="downstream closed"' in line
    (key,) = recorder.registry.snapshot().requests
    assert key[-2:] == (0, "unknown")


def test_llm_fields_and_series(loop: asyncio.AbstractEventLoop) -> None:
    recorder = text_recorder(loop)
    recorder.record(record(method=b"POST", protocol="llm", duration=1.25, llm=OUTCOME))
    (line,) = lines(recorder)
    tail = line.split(" protocol=llm ", 1)[1]
    assert tail == (
        "gen_ai.operation.name=chat gen_ai.provider.name=openai gen_ai.request.model=gpt-4o "
        "gen_ai.response.model=gpt-4o-2024 gen_ai.usage.input_tokens=10 "
        "gen_ai.usage.cache_read.input_tokens=2 gen_ai.usage.output_tokens=5 "
        "agw.ai.time_to_first_token=0.25 agw.ai.time_per_output_token=0.2 "
        "gen_ai.request.temperature=0.5 gen_ai.request.max_tokens=64 duration=1250ms"
    )
    snap = recorder.registry.snapshot()
    (key,) = snap.llm
    assert key == ROUTE.values + ("chat", "openai", "gpt-4o", "gpt-4o-2024")
    tpot = snap.llm[key][6]
    assert tpot is not None and tpot[-1] == pytest.approx(0.2)  # (1.25 - 0.25) / 5 tokens
    (request_key,) = snap.requests
    assert request_key[5:] == (BACKEND, "llm", "POST", 200, "Upstream")


def test_llm_without_usage_reads_unknown(loop: asyncio.AbstractEventLoop) -> None:
    recorder = text_recorder(loop)
    outcome = LLMOutcome("openai", "embeddings", None, None, None, None, None, None, None, None)
    recorder.record(record(protocol="llm", llm=outcome))
    (line,) = lines(recorder)
    assert "gen_ai.operation.name=embeddings gen_ai.provider.name=openai duration=" in line
    (key,) = recorder.registry.snapshot().llm
    assert key[-4:] == ("chat", "openai", "unknown", "unknown")


def test_json_line(loop: asyncio.AbstractEventLoop) -> None:
    recorder = Recorder(MetricsRegistry(), AccessLog(loop, "json", fd=-1))
    recorder.record(record(status=504, reason=Reason.TIMEOUT, error="request timeout",
                           llm=OUTCOME, protocol="llm"))  # fmt: skip
    (line,) = lines(recorder)
    doc = json.loads(line)
    assert list(doc)[:16] == [
        "level", "message", "gateway", "listener", "route", "endpoint", "src.addr",
        "http.method", "http.host", "http.path", "http.version", "http.status", "protocol",
        "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
    ]  # fmt: skip
    assert list(doc)[-3:] == ["error", "reason", "duration"]
    assert doc["http.status"] == 504 and doc["reason"] == "Timeout"
    assert doc["agw.ai.time_to_first_token"] == 0.25
    assert doc["duration"] == "12ms"


def test_no_access_log_still_counts() -> None:
    recorder = Recorder(MetricsRegistry(), None)
    recorder.record(record(method=b"PROPFIND"))
    (key,) = recorder.registry.snapshot().requests
    assert key[7] == "PROPFIND"


def test_a_failing_record_is_logged_not_raised(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    # The recorder runs inside the exchange's ending; an exception there would reach an
    # upstream callback and cut a pooled connection. It is logged (once a minute) instead.
    recorder = text_recorder(loop)
    bad = record(method=None)  # type: ignore[arg-type]
    with caplog.at_level("ERROR", logger="agw_fast"):
        recorder.record(bad)
        recorder.record(bad)
    assert [r.getMessage() for r in caplog.records] == [
        "internal error recording a request (logged once a minute)"
    ]
    recorder.record(record())  # and the next request is recorded as usual
    assert len(lines(recorder)) == 1


def test_retries_reach_the_line_and_the_counter(loop: asyncio.AbstractEventLoop) -> None:
    recorder = text_recorder(loop)
    recorder.record(record(retries=2, status=503, error="upstream call failed"))
    (line,) = lines(recorder)
    assert "protocol=http retry.attempt=2 error=" in line
    assert list(recorder.registry.snapshot().retries.values()) == [2.0]
    recorder.record(record())  # no retries: nothing added
    assert "retry.attempt" not in lines(recorder)[1]
    assert list(recorder.registry.snapshot().retries.values()) == [2.0]
    json_recorder = Recorder(MetricsRegistry(), AccessLog(loop, "json", fd=-1))
    json_recorder.record(record(retries=1))
    assert json.loads(lines(json_recorder)[0])["retry.attempt"] == 1


@pytest.mark.parametrize(
    "outcome",
    [
        LLMOutcome("openai", "embeddings", None, None, None, None, None, None, None, None),
        LLMOutcome("open ai", "completions", 'a "b"', "x=y", 1, 2, 3, 0.5, 1.5, 7),
        LLMOutcome("anthropic", "completions", "m", "", 0, 0, 0, 0.01, 0.0, 0),
        LLMOutcome("openai", "completions", "gpt-4o-mini", "bench", 9, 12, None, None, 0.2, 64),
    ],
)
@pytest.mark.parametrize("cost", [None, Decimal("0.000123")])
@pytest.mark.parametrize("duration", [0.001, 2.0])
def test_llm_text_fields_match_the_generic_formatting(
    outcome: LLMOutcome, cost: Decimal | None, duration: float
) -> None:
    """The text line's hand-built `gen_ai.*` fields say exactly what the JSON line's do."""
    expected = format_fields(recorder_module._llm_fields(outcome, duration, cost))
    assert recorder_module._llm_text(outcome, duration, cost) == " " + expected
