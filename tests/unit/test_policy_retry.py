"""`retry`: config loading as agentgateway's http/retry/mod.rs reads it, `condition` (compiled
at load, refused when it reads what a response head cannot offer, evaluated as
httpproxy.rs `should_retry`), the resend head's `x-retry-attempt`, and
`agentgateway_retries_total` (registry, shared slots, exposition, access log)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agw_fast.config.load import load_config
from agw_fast.config.model import RetryPolicy, RoutePolicies
from agw_fast.errors import ConfigError
from agw_fast.policies import PolicyRequest, compile_request_steps
from agw_fast.policies.retry import RetryCondition, compile_condition
from agw_fast.proxy.exchange import _with_attempt
from agw_fast.telemetry.metrics import MetricsRegistry, RequestKey, Snapshot
from agw_fast.telemetry.prometheus import render_prometheus
from agw_fast.telemetry.shared_slots import SharedSlots


def _load(retry: object) -> RetryPolicy | None:
    route = {"backends": [{"host": "127.0.0.1:1"}], "policies": {"retry": retry}}
    text = json.dumps({"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]})
    policies = load_config(text, {}, base_dir=Path("/")).binds[0].listeners[0].routes[0].policies
    return None if policies is None else policies.retry


def _error(retry: object) -> str:
    with pytest.raises(ConfigError) as info:
        _load(retry)
    return str(info.value)


# -- config ---------------------------------------------------------------------------------


def test_config_fields() -> None:
    assert _load({"attempts": 3, "codes": [503, 429], "backoff": "250ms"}) == RetryPolicy(
        attempts=3, codes=frozenset({503, 429}), backoff=0.25
    )


def test_config_precondition() -> None:
    retry = _load({"codes": [503], "precondition": 'request.method == "GET"'})
    assert retry is not None and retry.precondition == 'request.method == "GET"'
    assert retry.path == "binds[0].listeners[0].routes[0].policies.retry.precondition"


def test_precondition_compiles_at_load_and_marks_the_request() -> None:
    policies = RoutePolicies(retry=RetryPolicy(codes=frozenset({503}),
                                               precondition='request.method == "GET"'))
    (step,) = compile_request_steps(policies)
    get = PolicyRequest(b"GET", b"h", b"/", b"", [], None)
    post = PolicyRequest(b"POST", b"h", b"/", b"", [], None)
    assert step(get) is None and not get.no_retry
    assert step(post) is None and post.no_retry
    # A failed evaluation is false: no retries.
    odd = RoutePolicies(retry=RetryPolicy(precondition='request.headers["x-missing"] == "1"'))
    (step,) = compile_request_steps(odd)
    assert step(get) is None and get.no_retry
    # No precondition: no step at all.
    assert compile_request_steps(RoutePolicies(retry=RetryPolicy())) == ()


def test_precondition_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        compile_request_steps(RoutePolicies(retry=RetryPolicy(precondition="request.(", path="p")))
    assert str(info.value).startswith("p: invalid CEL expression")


# -- condition ----------------------------------------------------------------------------------


def test_config_condition() -> None:
    # agentgateway's own example (http/retry/mod.rs `parses_pre_and_post_conditions`).
    retry = _load({"attempts": 3, "codes": [503], "precondition": 'request.method == "GET"',
                   "condition": 'response.headers["x-req-failed"] != ""'})
    assert retry is not None and retry.condition == 'response.headers["x-req-failed"] != ""'
    assert retry.condition_path == "binds[0].listeners[0].routes[0].policies.retry.condition"
    assert retry.path.endswith("retry.precondition")
    assert _load({"codes": [500]}) == RetryPolicy(codes=frozenset({500}))  # none by default


def _condition(text: str) -> RetryCondition:
    condition = compile_condition(RetryPolicy(condition=text, condition_path="r.condition"))
    assert condition is not None
    return condition


_LINES = [b"content-type: text/plain", b"x-req-failed:  true ", b"set-cookie: a",
          b"set-cookie: b", b"x-latin: \xff"]  # fmt: skip
_GET = PolicyRequest(b"GET", b"h", b"/v1", b"", [(b"x-team", b"a")], None, "10.0.0.1:4000")


@pytest.mark.parametrize(
    ("text", "status", "holds"),
    [
        ('response.headers["x-req-failed"] != ""', 200, True),
        ('response.headers["X-Req-Failed"] == "true"', 200, True),  # names: any case, trimmed
        ('response.headers["x-other"] != ""', 200, False),  # a missing key fails: false
        ('int(response.headers["content-type"]) > 0', 200, False),  # a failed conversion
        ("response.code", 200, False),  # not a boolean: false
        ("response.code == 200", 200, True),
        ("response.code >= 500", 404, False),
        ('response.headers["set-cookie"] == ["a", "b"]', 200, True),  # several values: a list
        ('"x-latin" in response.headers', 200, False),  # not UTF-8: absent, as in `request`
        ('response.?headers["x-other"].orValue("") == ""', 200, True),
        ('request.method == "GET" && request.headers["x-team"] == "a"', 200, True),
        ('source.address == "10.0.0.1" && response.code == 200', 200, True),
        ('jwt.sub == "x"', 200, False),  # no authentication ran: an empty map
    ],
)
def test_condition_evaluates_on_the_head(text: str, status: int, holds: bool) -> None:
    assert _condition(text).holds(status, _LINES, _GET) is holds


def test_condition_reads_only_what_it_names() -> None:
    code_only = _condition("response.code == 503")
    assert not code_only.headers and not code_only.request_uses
    with_headers = _condition('response.headers["retry-after"] == "1" || request.path == "/"')
    assert with_headers.headers and with_headers.request_uses == {"request"}
    # A string that looks like a field is no use of `response`.
    assert not _condition('"response.headers" == request.path').headers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('response.body == ""', "the CEL field `response.body`"),
        ('response["body"].size() > 0', "the CEL field `response.body`"),
        ('json(response.body).error != ""', "the CEL field `response.body`"),
        ("has(response.bodyPrefix)", "the CEL field `response.bodyPrefix`"),
        ("response.grpcStatus == 14", "the CEL field `response.grpcStatus`"),
        ("size(response) > 0", "`response` as a whole"),
        ('llm.provider == "openai"', "the CEL variable `llm` is not supported"),
        ("response.code ==", "invalid CEL expression"),
    ],
)
def test_condition_reading_what_the_head_lacks_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_condition(RetryPolicy(condition=text, condition_path="p.retry.condition"))
    message = str(info.value)
    assert message.startswith("p.retry.condition: ") and expected in message
    assert "\n" not in message


def test_condition_reading_the_request_gets_a_step() -> None:
    # The request variables come from the `PolicyRequest` the route's steps make.
    reads = RoutePolicies(retry=RetryPolicy(condition='request.method == "GET"'))
    (step,) = compile_request_steps(reads)
    assert step(_GET) is None and not _GET.no_retry
    # Only the response: no step, nothing per request.
    code_only = RoutePolicies(retry=RetryPolicy(condition="response.code == 1"))
    assert compile_request_steps(code_only) == ()
    with pytest.raises(ConfigError):
        compile_request_steps(RoutePolicies(retry=RetryPolicy(condition="response.body == 1")))


def test_config_defaults() -> None:
    # `attempts` defaults to 1 (one resend); `codes` may be empty (connection errors only).
    assert _load({"codes": []}) == RetryPolicy(attempts=1, codes=frozenset(), backoff=None)
    assert _load(None) is None


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        ({}, 'retry.codes: missing required field "codes"'),
        ({"codes": None}, 'retry.codes: missing required field "codes"'),
        ({"codes": [503], "attempts": 0}, "retry.attempts"),
        ({"codes": [503], "attempts": 256}, "retry.attempts"),
        ({"codes": [99]}, "retry.codes[0]"),
        ({"codes": [503, 1000]}, "retry.codes[1]"),
        ({"codes": "503"}, "retry.codes"),
        ({"codes": [503], "backoff": "soon"}, "retry.backoff"),
        ({"codes": [503], "tries": 2}, 'unknown field "tries"'),
        ("yes", "retry"),
    ],
)
def test_config_errors(retry: object, expected: str) -> None:
    assert expected in _error(retry)


# -- the resend's head ------------------------------------------------------------------------


def test_with_attempt_replaces_the_clients_field() -> None:
    head = b"GET / HTTP/1.1\r\nhost: a\r\nX-Retry-Attempt: 7\r\naccept: */*\r\n\r\n"
    assert _with_attempt(head, 2) == (
        b"GET / HTTP/1.1\r\nhost: a\r\naccept: */*\r\nx-retry-attempt: 2\r\n\r\n"
    )
    again = _with_attempt(_with_attempt(head, 1), 2)
    assert again.count(b"x-retry-attempt") == 1 and again.endswith(b"x-retry-attempt: 2\r\n\r\n")


# -- agentgateway_retries_total ---------------------------------------------------------------


def _key(status: int = 200) -> RequestKey:
    return ("bind/3000", "default/default", "listener0", "default/r", "", "b", "http", "GET",
            status, "Upstream")  # fmt: skip


def _retries(text: bytes) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "agentgateway_retries_total":
                out[sample.labels["status"]] = sample.value
    return out


def test_retries_counted_per_request_labels_and_merged() -> None:
    a, b = MetricsRegistry(), MetricsRegistry()
    a.record_retries(_key(), 2)
    a.record_retries(_key(), 1)
    b.record_retries(_key(), 4)
    b.record_retries(_key(503), 1)
    assert a.snapshot().retries == {_key(): 3.0}
    text = render_prometheus([a.snapshot(), b.snapshot()])
    assert _retries(text) == {"200": 7.0, "503": 1.0}
    assert b"# TYPE agentgateway_retries_total counter" in text
    # No retries anywhere: no family at all (agentgateway registers it, with no samples).
    assert b"retries" not in render_prometheus([Snapshot({}, {})])


def test_retries_live_in_shared_slots() -> None:
    slots = SharedSlots(1)
    try:
        reg = MetricsRegistry(slots.writer(0))
        reg.record_request(_key(), 0.1)
        reg.record_retries(_key(), 2)
        assert slots.read(0) == reg.snapshot()
        assert slots.read(0).retries == {_key(): 2.0}  # type: ignore[union-attr]
        # A replacement worker continues the count.
        again = MetricsRegistry(slots.writer(0))
        again.record_retries(_key(), 1)
        assert slots.read(0).retries == {_key(): 3.0}  # type: ignore[union-attr]
    finally:
        slots.close()


def test_retries_series_are_bounded() -> None:
    reg = MetricsRegistry(max_request_series=1)
    reg.record_retries(_key(), 1)
    reg.record_retries(_key(503), 1)
    reg.record_retries(_key(504), 1)
    retries = reg.snapshot().retries
    assert len(retries) == 2 and sum(retries.values()) == 3
