"""Fault injection: `delay`, `directResponse.conditional`, `requestMirror` (config and steps)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from agw_fast.config import load_config, load_config_file
from agw_fast.config.load_policies import parse_route_policies
from agw_fast.config.model import (
    ConditionalDirectResponse,
    DelayPolicy,
    DirectResponse,
    HostBackend,
    RequestMirror,
    RoutePolicies,
)
from agw_fast.core import cel
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.plan import RuntimeMirror, compile_config
from agw_fast.policies import DEFER, PolicyRequest, compile_request_steps, run_steps
from agw_fast.policies.delay import delay_seconds

needs_cel = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

P = "routes[0].policies"
EXAMPLE = (
    Path(__file__).resolve().parents[1] / "data" / "agentgateway-examples" / "fault-injection.yaml"
)


def _parse(raw: dict[str, object]) -> RoutePolicies | None:
    return parse_route_policies(raw, P, Path("."))


def _error(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as caught:
        compile_request_steps(_parse(raw))
    return str(caught.value)


def _request(chaos: bytes | None = None, path: bytes = b"/") -> PolicyRequest:
    headers = [(b"host", b"x")] + ([(b"x-chaos", chaos)] if chaos is not None else [])
    return PolicyRequest(b"GET", b"x", path, b"", headers, None, "127.0.0.1:5000")


@needs_cel
def test_agentgateway_fault_injection_example_loads_unchanged() -> None:
    config = load_config_file(EXAMPLE, {})
    (bind,) = compile_config(config)
    assert bind.single is not None
    routes = {route.name: route for route in bind.single.routes()}
    assert set(routes) == {"delay-probability", "delay-header", "abort-probability"}
    header = routes["delay-header"]
    assert run_steps(header.request_steps, _request()) is None
    request = _request(b"1")
    assert run_steps(header.request_steps, request) is DEFER
    assert request.delay == 0.5 and request.resume == ()


# -- delay ----------------------------------------------------------------------------------


def test_delay_duration_string_is_fixed_and_needs_no_cel() -> None:
    assert _parse({"delay": {"duration": "2s"}}) == RoutePolicies(
        delay=DelayPolicy(seconds=2.0, path=f"{P}.delay.duration")
    )
    (step,) = compile_request_steps(_parse({"delay": {"duration": "150ms"}}))
    request = _request()
    assert step(request) is DEFER and request.delay == 0.15


@pytest.mark.parametrize("duration", ["0s", "0"])
def test_zero_fixed_delay_adds_no_step(duration: str) -> None:
    assert compile_request_steps(_parse({"delay": {"duration": duration}})) == ()


@needs_cel
def test_negative_duration_is_not_a_duration_and_not_cel() -> None:
    assert _error({"delay": {"duration": "-1s"}}).startswith(
        f"{P}.delay.duration: invalid CEL expression"
    )


@needs_cel
def test_number_without_unit_is_cel_milliseconds() -> None:
    (step,) = compile_request_steps(_parse({"delay": {"duration": "250"}}))
    request = _request()
    assert step(request) is DEFER and request.delay == 0.25


def test_other_text_is_a_cel_expression() -> None:
    policies = _parse({"delay": {"duration": "random() < 0.1 ? 2000 : 0"}})
    assert policies is not None and policies.delay is not None
    assert policies.delay.expression == "random() < 0.1 ? 2000 : 0"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (500, 0.5),
        (1.5, 0.0015),
        (timedelta(milliseconds=250), 0.25),
        (0, 0.0),
        (-5, 0.0),
        (timedelta(seconds=-1), 0.0),
        (float("nan"), 0.0),
        (float("inf"), 0.0),
        (True, 0.0),  # a bool is neither a duration nor a number
        ("500", 0.0),
        (None, 0.0),
    ],
)
def test_delay_seconds_of_a_cel_value(value: object, seconds: float) -> None:
    assert delay_seconds(value) == pytest.approx(seconds)


@needs_cel
@pytest.mark.parametrize(
    ("expression", "chaos", "seconds"),
    [
        ('request.headers["x-chaos"] == "1" ? 500 : 0', b"1", 0.5),
        ('request.headers["x-chaos"] == "1" ? 500 : 0', b"0", 0.0),
        # A failed evaluation (no such header) injects no delay.
        ('request.headers["x-chaos"] == "1" ? 500 : 0', None, 0.0),
        ('duration("250ms")', None, 0.25),
        ("int(random() * 0.0) + 30", None, 0.03),
        ('"soon"', None, 0.0),
    ],
)
def test_cel_delay(expression: str, chaos: bytes | None, seconds: float) -> None:
    (step,) = compile_request_steps(_parse({"delay": {"duration": expression}}))
    request = _request(chaos)
    answer = step(request)
    if seconds:
        assert answer is DEFER and request.delay == pytest.approx(seconds)
    else:
        assert answer is None and request.delay == 0.0


@needs_cel
def test_invalid_delay_expression_is_refused_at_load() -> None:
    message = _error({"delay": {"duration": "1 +"}})
    assert message.startswith(f"{P}.delay.duration: invalid CEL expression")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"delay": {}}, f'{P}.delay.duration: missing required field "duration"'),
        ({"delay": {"duration": 5}}, f"{P}.delay.duration: expected a string"),
        ({"delay": {"duration": "1s", "x": 1}}, f'{P}.delay.x: unknown field "x"'),
    ],
)
def test_bad_delay_config(raw: dict[str, object], message: str) -> None:
    assert _error(raw).startswith(message)


@needs_cel
def test_delay_runs_before_direct_response_and_resumes_there() -> None:
    steps = compile_request_steps(
        _parse({"delay": {"duration": "100ms"}, "directResponse": {"status": 200, "body": "x"}})
    )
    request = _request()
    assert run_steps(steps, request) is DEFER
    assert len(request.resume) == 1
    answer = run_steps(request.resume, request)
    assert answer is not None and answer.reason == Reason.DIRECT_RESPONSE


# -- directResponse.conditional -------------------------------------------------------------


def test_conditional_direct_response_parses() -> None:
    raw = {"conditional": [{"condition": "a", "status": 503, "body": "x"}, {"status": 200}]}
    assert _parse({"directResponse": raw}) == RoutePolicies(
        direct_response=ConditionalDirectResponse(
            (
                ("a", DirectResponse(503, b"x"), f"{P}.directResponse.conditional[0].condition"),
                (None, DirectResponse(200), f"{P}.directResponse.conditional[1].condition"),
            )
        )
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"conditional": []}, f"{P}.directResponse.conditional: conditional policies need at"),
        (
            {"conditional": [{"status": 200}, {"condition": "true", "status": 503}]},
            f"{P}.directResponse.conditional[0]: an entry without condition must be the last",
        ),
        (
            {"conditional": [{"condition": "true"}]},
            f'{P}.directResponse.conditional[0].status: missing required field "status"',
        ),
        (
            {"conditional": [{"condition": "true", "status": 99}]},
            f"{P}.directResponse.conditional[0].status: status must be in 200..599",
        ),
        (
            {"conditional": [{"status": 503}] * 65},
            f"{P}.directResponse.conditional: conditional policies take at most 64",
        ),
    ],
)
def test_bad_conditional_direct_response(raw: dict[str, object], message: str) -> None:
    assert _error({"directResponse": raw}).startswith(message)


@needs_cel
def test_first_true_condition_answers_else_the_request_goes_on() -> None:
    raw = {
        "conditional": [
            {"condition": 'request.headers["x-chaos"] == "1"', "status": 503, "body": "one"},
            {"condition": 'request.headers["x-chaos"] != "0"', "status": 502, "body": "two"},
        ]
    }
    (step,) = compile_request_steps(_parse({"directResponse": raw}))
    one, two = step(_request(b"1")), step(_request(b"2"))
    assert one is not None and one.response.startswith(b"HTTP/1.1 503 ")
    assert one.response.endswith(b"\r\n\r\none") and one.reason == Reason.DIRECT_RESPONSE
    assert two is not None and two.response.startswith(b"HTTP/1.1 502 ")
    assert step(_request(b"0")) is None
    # A condition that cannot be evaluated (no such header) is false.
    assert step(_request()) is None


@needs_cel
def test_entry_without_condition_is_the_fallback() -> None:
    raw = {"conditional": [{"condition": "false", "status": 503}, {"status": 204}]}
    (step,) = compile_request_steps(_parse({"directResponse": raw}))
    answer = step(_request())
    assert answer is not None and answer.response.startswith(b"HTTP/1.1 204 ")


@needs_cel
def test_invalid_condition_is_refused_at_load() -> None:
    raw = {"conditional": [{"condition": "nope(", "status": 503}]}
    message = _error({"directResponse": raw})
    assert message.startswith(f"{P}.directResponse.conditional[0].condition: invalid CEL")


# -- requestMirror --------------------------------------------------------------------------


def test_request_mirror_parses() -> None:
    raw = {"backend": {"host": "127.0.0.1:9000"}, "percentage": 0.5}
    assert _parse({"requestMirror": raw}) == RoutePolicies(
        request_mirror=RequestMirror(HostBackend("127.0.0.1", 9000), 0.5)
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"percentage": 1}, f'{P}.requestMirror.backend: missing required field "backend"'),
        (
            {"backend": {"host": "h:1"}, "percentage": 1.5},
            f"{P}.requestMirror.percentage: percentage must be in 0.0..1.0",
        ),
        (
            {"backend": {"host": "h:1"}, "percentage": "1"},
            f"{P}.requestMirror.percentage: expected a number",
        ),
        ({"backend": {"host": "h"}, "percentage": 1}, f"{P}.requestMirror.backend.host: port"),
        (
            {"backend": {"backend": "b"}, "percentage": 1},
            f"{P}.requestMirror.backend.backend: not supported",
        ),
    ],
)
def test_bad_request_mirror(raw: dict[str, object], message: str) -> None:
    assert _error({"requestMirror": raw}).startswith(message)


def _mirror_route(percentage: float) -> RuntimeMirror | None:
    text = f"""
binds:
- port: 3000
  listeners:
  - routes:
    - policies:
        requestMirror:
          backend: {{host: mirror.internal:8080}}
          percentage: {percentage}
      backends:
      - host: 127.0.0.1:8080
"""
    (bind,) = compile_config(load_config(text, {}, base_dir=Path(".")))
    assert bind.single is not None
    (route,) = bind.single.routes()
    return route.mirror


def test_mirror_compiles_to_a_plain_http_backend() -> None:
    mirror = _mirror_route(1)
    assert mirror is not None
    backend = mirror.backend
    assert (backend.host, backend.port, backend.ssl) == ("mirror.internal", 8080, None)
    assert backend.auto_authority == b"mirror.internal:8080"
    assert mirror.chosen()


def test_zero_percentage_mirrors_nothing() -> None:
    assert _mirror_route(0) is None


# -- directResponse bodyExpression / headers ------------------------------------------------


def _answer(raw: dict[str, object], request: PolicyRequest | None = None) -> bytes:
    (step,) = compile_request_steps(_parse({"directResponse": raw}))
    answer = step(request or _request(b"v", b"/p"))
    assert answer is not None
    return answer.response


def test_body_expression_and_headers_parse() -> None:
    raw = {"status": 422, "bodyExpression": "'a'", "headers": {"X-Direct": "'b'"}}
    parsed = _parse({"directResponse": raw})
    assert parsed == RoutePolicies(
        direct_response=DirectResponse(422, b"", "'a'", (("x-direct", "'b'"),))
    )


@needs_cel
def test_body_expression_and_headers_as_agentgateways_test() -> None:
    # crates/agentgateway/tests/tests/direct_response.rs `direct_response_expression`
    raw = {
        "status": 422,
        "bodyExpression": "'hello ' + request.path",
        "headers": {"x-direct": "'direct-' + request.headers['x-chaos']"},
    }
    assert _answer(raw) == (
        b"HTTP/1.1 422 Unprocessable Content\r\nx-direct: direct-v\r\n"
        b"content-length: 8\r\n\r\nhello /p"
    )


@needs_cel
@pytest.mark.parametrize(
    ("expression", "body"),
    [
        ("b'\\x00\\xff'", b"\x00\xff"),
        ("{'a': [1, 2.5, true, null, b'hi']}", b'{"a":[1,2.5,true,null,"aGk="]}'),
        ("{'k': request.path}", b'{"k":"/p"}'),
        ("42", b"42"),
        ("duration('1.5s')", b'"1.5s"'),
        ("timestamp('2020-01-01T00:00:00Z')", b'"2020-01-01T00:00:00Z"'),
        ("''", b""),
    ],
)
def test_body_expression_values(expression: str, body: bytes) -> None:
    response = _answer({"status": 200, "bodyExpression": expression})
    assert response.endswith(b"content-length: %d\r\n\r\n" % len(body) + body)
    assert b"content-type" not in response


@needs_cel
def test_body_expression_error_is_a_500() -> None:
    (step,) = compile_request_steps(
        _parse({"directResponse": {"status": 200, "bodyExpression": "request.headers['no']"}})
    )
    answer = step(_request())
    assert answer is not None and answer.reason == Reason.INTERNAL
    assert answer.response.startswith(b"HTTP/1.1 500 ")
    head, _, body = answer.response.partition(b"\r\n\r\n")
    assert body.startswith(b"failed to apply filters: invalid filter configuration: ")


@needs_cel
def test_header_that_fails_or_is_no_field_value_is_left_out() -> None:
    raw = {
        "status": 204,
        "headers": {
            "x-missing": "request.headers['no']",
            "x-int": "1",
            "x-newline": "'a\\nb'",
            "x-bytes": "b'raw'",
            "X-Ok": "'yes'",
        },
    }
    assert _answer(raw) == b"HTTP/1.1 204 No Content\r\nx-bytes: raw\r\nx-ok: yes\r\n\r\n"


@needs_cel
def test_static_body_with_expression_headers() -> None:
    raw = {"status": 200, "body": "static", "headers": {"x-path": "request.path"}}
    assert _answer(raw).endswith(b"x-path: /p\r\ncontent-length: 6\r\n\r\nstatic")


@needs_cel
def test_conditional_entries_take_expressions() -> None:
    raw = {
        "conditional": [
            {"condition": "request.path == '/a'", "status": 200, "bodyExpression": "'A'"},
            {"status": 202, "bodyExpression": "request.path", "headers": {"x": "'f'"}},
        ]
    }
    assert _answer(raw, _request(path=b"/a")).endswith(b"\r\n\r\nA")
    fallback = _answer(raw, _request(path=b"/b"))
    assert fallback.startswith(b"HTTP/1.1 202 ")
    assert fallback.endswith(b"x: f\r\ncontent-length: 2\r\n\r\n/b")


def test_static_direct_response_stays_prebuilt() -> None:
    (step,) = compile_request_steps(_parse({"directResponse": {"status": 200, "body": "x"}}))
    assert step(_request()) is step(_request(b"other"))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"status": 200, "body": "x", "bodyExpression": "'y'"},
            f"{P}.directResponse.bodyExpression: body and bodyExpression may not both be set",
        ),
        (
            {"status": 200, "headers": {"Content-Length": "'1'"}},
            f"{P}.directResponse.headers.Content-Length: content-length is set by the gateway",
        ),
        (
            {"status": 200, "headers": {"bad name": "'1'"}},
            f"{P}.directResponse.headers.bad name: ",
        ),
        ({"status": 200, "headers": {"x": 1}}, f"{P}.directResponse.headers.x: expected"),
        ({"status": 200, "headers": ["x"]}, f"{P}.directResponse.headers: expected"),
        ({"status": 200, "bodyExpression": 3}, f"{P}.directResponse.bodyExpression: expected"),
    ],
)
def test_bad_direct_response_expressions_config(raw: dict[str, object], message: str) -> None:
    assert _error({"directResponse": raw}).startswith(message)


@needs_cel
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"status": 200, "bodyExpression": "nope("},
            f"{P}.directResponse.bodyExpression: invalid CEL expression",
        ),
        (
            {"conditional": [{"status": 200, "headers": {"x": "llmRequest"}}]},
            f"{P}.directResponse.conditional[0].headers.x: invalid CEL expression",
        ),
        (
            {"status": 200, "bodyExpression": "request.body"},
            f"{P}.directResponse.bodyExpression: not supported: request.body",
        ),
    ],
)
def test_bad_direct_response_expressions(raw: dict[str, object], message: str) -> None:
    assert _error({"directResponse": raw}).startswith(message)


def test_expressions_without_the_cel_extra_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cel, "_cel", None)
    message = _error({"directResponse": {"status": 200, "headers": {"x": "'1'"}}})
    assert message.startswith(f"{P}.directResponse.headers.x: invalid CEL expression")
    assert cel.CEL_EXTRA_HINT in message
