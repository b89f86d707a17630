"""`cors`: config loading, origin matching and the fields of each answer (sans-IO).

Cases follow agentgateway's crates/agentgateway/src/http/cors.rs and its tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.config.load import load_config
from agw_fast.config.model import CorsPolicy, DirectResponse, GatewayPolicies, RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.policies import (
    PolicyAnswer,
    PolicyRequest,
    compile_gateway_steps,
    compile_request_steps,
    run_steps,
)
from agw_fast.policies.cors import OriginMatcher, parse_origin


def _load_cors(cors: object) -> CorsPolicy | None:
    route = {"backends": [{"host": "127.0.0.1:1"}], "policies": {"cors": cors}}
    text = json.dumps({"binds": [{"port": 3000, "listeners": [{"routes": [route]}]}]})
    policies = load_config(text, {}, base_dir=Path("/")).binds[0].listeners[0].routes[0].policies
    return None if policies is None else policies.cors


# -- config ---------------------------------------------------------------------------------


def test_config_full() -> None:
    cors = _load_cors(
        {
            "allowOrigins": ["https://a.example", "http://*.example.com:8080"],
            "allowMethods": ["GET", "patch"],
            "allowHeaders": ["X-Custom", "content-type"],
            "exposeHeaders": ["X-Request-Id"],
            "allowCredentials": True,
            "maxAge": "1m30.9s",
        }
    )
    assert cors == CorsPolicy(
        allow_credentials=True,
        allow_headers=("x-custom", "content-type"),
        allow_methods=("GET", "patch"),
        allow_origins=("https://a.example", "http://*.example.com:8080"),
        expose_headers=("x-request-id",),
        max_age=90,
    )


def test_config_defaults_and_wildcards() -> None:
    assert _load_cors({}) == CorsPolicy()
    assert _load_cors(None) is None
    # A `*` anywhere makes the list "any"; the other entries are not read.
    cors = _load_cors({"allowOrigins": ["https://a", "*"], "allowHeaders": ["bad name", "*"]})
    assert cors == CorsPolicy(allow_origins=("*",), allow_headers=("*",))


@pytest.mark.parametrize(
    ("cors", "message"),
    [
        ({"allowMethods": ["G T"]}, "policies.cors.allowMethods[0]: invalid method 'G T'"),
        ({"allowMethods": [""]}, "policies.cors.allowMethods[0]: invalid method ''"),
        ({"allowHeaders": ["ok", "a:b"]}, "policies.cors.allowHeaders[1]: invalid header name"),
        ({"exposeHeaders": "x-a"}, "policies.cors.exposeHeaders"),
        ({"allowOrigins": [1]}, "policies.cors.allowOrigins[0]"),
        ({"allowCredentials": "yes"}, "policies.cors.allowCredentials"),
        ({"maxAge": "10"}, "policies.cors.maxAge: invalid duration"),
        ({"maxAge": 10}, "policies.cors.maxAge"),
        ({"allowOrigin": ["*"]}, 'policies.cors.allowOrigin: unknown field "allowOrigin"'),
    ],
)
def test_config_errors_name_the_field(cors: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load_cors(cors)
    assert message in str(info.value)


# -- origins --------------------------------------------------------------------------------


def test_parse_origin_default_ports() -> None:
    assert parse_origin("http://example.com") == ("http", "example.com", 80)
    assert parse_origin("HTTPS://Example.COM") == ("https", "example.com", 443)
    assert parse_origin("https://example.com:0443") == ("https", "example.com", 443)


@pytest.mark.parametrize(
    "value",
    [
        "ftp://example.com",
        "http://example.com/path",
        "http://example.com?q",
        "http://example.com#f",
        "http://example.com:0",
        "http://example.com:65536",
        "http://example.com:",
        "http://example.com:8a",
        "http://:80",
        "http://",
        "http://exa*mple.com",
        "http://[::1]:8080",
        "example.com",
        "null",
    ],
)
def test_parse_origin_rejects(value: str) -> None:
    assert parse_origin(value) is None


def test_default_and_explicit_ports_match() -> None:
    assert OriginMatcher(("http://example.com:80",)).allows(b"http://example.com")
    assert OriginMatcher(("https://example.com",)).allows(b"https://example.com:443")
    assert not OriginMatcher(("https://example.com",)).allows(b"http://example.com")
    assert OriginMatcher(("https://Example.com",)).allows(b"https://EXAMPLE.com")


def test_wildcard_hosts() -> None:
    origin = b"http://foo.bar.com"
    assert OriginMatcher(("http://*.com",)).allows(origin)
    assert OriginMatcher(("http://*.bar.com",)).allows(origin)
    assert not OriginMatcher(("http://*.org",)).allows(origin)
    assert not OriginMatcher(("https://*.com",)).allows(origin)
    assert not OriginMatcher(("http://*.bar.com",)).allows(b"http://bar.com")
    assert OriginMatcher(("https://*",)).allows(b"https://service.internal")
    assert not OriginMatcher(("http://*",)).allows(b"https://service.internal")
    assert OriginMatcher(("https://*.com:8443",)).allows(b"https://foo.com:8443")
    assert not OriginMatcher(("https://*.com",)).allows(b"https://foo.com:8443")
    assert OriginMatcher(("http://a*c.example",)).allows(b"http://abbbc.example")
    # Regex characters in a pattern are literal.
    assert not OriginMatcher(("http://a.*",)).allows(b"http://abc")


def test_invalid_origins_never_match() -> None:
    matcher = OriginMatcher(("http://example.com", "not an origin", "http://*"))
    assert not matcher.allows(b"http://example.com/")
    assert not matcher.allows(b"null")
    assert not matcher.allows(b"http://ex\xe4mple.com")
    assert not OriginMatcher(()).allows(b"http://example.com")


# -- answers --------------------------------------------------------------------------------



def _run(
    cors: CorsPolicy, method: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[PolicyAnswer | None, PolicyRequest]:
    request = PolicyRequest(method, b"lo", b"/", b"", headers, None, "127.0.0.1:1")
    steps = compile_request_steps(RoutePolicies(cors=cors))
    return run_steps(steps, request), request


_POLICY = CorsPolicy(
    allow_origins=("http://example.com",),
    allow_methods=("GET", "POST"),
    allow_headers=("x-a", "x-b"),
    expose_headers=("x-id",),
    max_age=600,
)
_ORIGIN = (b"origin", b"http://example.com")
_PREFLIGHT = [_ORIGIN, (b"access-control-request-method", b"POST")]


def test_without_origin_nothing_happens() -> None:
    answer, request = _run(_POLICY, b"OPTIONS", [(b"access-control-request-method", b"GET")])
    assert answer is None
    assert request.response_lines is None
    assert request.response_replaces is None


def test_allowed_preflight_is_answered_with_every_field() -> None:
    answer, _ = _run(_POLICY, b"OPTIONS", _PREFLIGHT)
    assert answer == PolicyAnswer(
        b"HTTP/1.1 200 OK\r\n"
        b"access-control-allow-origin: http://example.com\r\n"
        b"access-control-allow-methods: GET,POST\r\n"
        b"access-control-allow-headers: x-a,x-b\r\n"
        b"access-control-max-age: 600\r\n"
        b"access-control-expose-headers: x-id\r\n"
        b"content-length: 0\r\n\r\n",
        Reason.DIRECT_RESPONSE,
    )


def test_allowed_options_without_request_method_is_answered_too() -> None:
    # agentgateway answers any OPTIONS from an allowed origin (cors.rs: `method == OPTIONS`).
    answer, _ = _run(_POLICY, b"OPTIONS", [_ORIGIN])
    assert answer is not None
    assert b"access-control-allow-origin: http://example.com\r\n" in answer.response


def test_disallowed_preflight_gets_an_empty_200() -> None:
    headers = [(b"origin", b"http://evil.example"), (b"access-control-request-method", b"GET")]
    answer, request = _run(_POLICY, b"OPTIONS", headers)
    assert answer == PolicyAnswer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Reason.DIRECT_RESPONSE
    )
    assert request.response_lines is None


def test_disallowed_options_without_request_method_goes_on() -> None:
    for headers in (
        [(b"origin", b"http://evil.example")],
        [(b"origin", b"http://evil.example"), (b"access-control-request-method", b"")],
    ):
        answer, request = _run(_POLICY, b"OPTIONS", headers)
        assert answer is None
        assert request.response_lines is None


def test_actual_request_from_allowed_origin_gets_fields() -> None:
    answer, request = _run(_POLICY, b"POST", [_ORIGIN])
    assert answer is None
    assert b"".join(request.response_lines or []) == (
        b"access-control-allow-origin: http://example.com\r\n"
        b"access-control-expose-headers: x-id\r\n"
    )
    assert request.response_replaces == {
        b"access-control-allow-origin",
        b"access-control-expose-headers",
    }


def test_actual_request_with_credentials() -> None:
    cors = CorsPolicy(allow_origins=("*",), allow_credentials=True)
    answer, request = _run(cors, b"GET", [(b"origin", b"https://any.where")])
    assert answer is None
    assert b"".join(request.response_lines or []) == (
        b"access-control-allow-origin: https://any.where\r\n"
        b"access-control-allow-credentials: true\r\n"
    )
    assert request.response_replaces == {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
    }


def test_actual_request_from_disallowed_origin_is_untouched() -> None:
    answer, request = _run(_POLICY, b"GET", [(b"origin", b"http://example.com:81")])
    assert answer is None
    assert request.response_lines is None


def test_first_origin_field_counts() -> None:
    headers = [(b"origin", b"http://evil.example"), _ORIGIN]
    _, request = _run(_POLICY, b"GET", headers)
    assert request.response_lines is None


def test_wildcard_lists_echo_the_preflight_request() -> None:
    cors = CorsPolicy(allow_origins=("*",), allow_methods=("*",), allow_headers=("*",))
    headers = [
        (b"origin", b"http://example.com"),
        (b"access-control-request-method", b"PUT"),
        (b"access-control-request-headers", b" x-header-1 ,, x-header-2,"),
    ]
    answer, _ = _run(cors, b"OPTIONS", headers)
    assert answer is not None
    assert answer.response == (
        b"HTTP/1.1 200 OK\r\n"
        b"access-control-allow-origin: http://example.com\r\n"
        b"access-control-allow-methods: PUT\r\n"
        b"access-control-allow-headers: x-header-1, x-header-2\r\n"
        b"content-length: 0\r\n\r\n"
    )


def test_wildcard_lists_without_request_values() -> None:
    headers = [(b"origin", b"http://example.com")]
    cors = CorsPolicy(allow_origins=("*",), allow_methods=("*",), allow_headers=("*",))
    answer, _ = _run(cors, b"OPTIONS", headers)
    assert answer is not None
    assert b"access-control-allow-methods: *\r\n" in answer.response
    assert b"access-control-allow-headers: *\r\n" in answer.response
    # With credentials a `*` would be refused by browsers, so agentgateway leaves it out.
    with_credentials = CorsPolicy(
        allow_origins=("*",), allow_methods=("*",), allow_headers=("*",), allow_credentials=True
    )
    answer, _ = _run(with_credentials, b"OPTIONS", headers)
    assert answer is not None
    assert answer.response == (
        b"HTTP/1.1 200 OK\r\n"
        b"access-control-allow-origin: http://example.com\r\n"
        b"access-control-allow-credentials: true\r\n"
        b"content-length: 0\r\n\r\n"
    )


def test_wildcard_expose_headers_is_a_star() -> None:
    cors = CorsPolicy(allow_origins=("*",), expose_headers=("*",))
    _, request = _run(cors, b"GET", [_ORIGIN])
    assert b"access-control-expose-headers: *\r\n" in b"".join(request.response_lines or [])


def test_no_allowed_origins_allows_none() -> None:
    answer, _ = _run(CorsPolicy(), b"OPTIONS", _PREFLIGHT)
    assert answer == PolicyAnswer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", Reason.DIRECT_RESPONSE
    )


def test_cors_runs_before_direct_response_and_its_fields_reach_the_answer() -> None:
    policies = RoutePolicies(
        cors=CorsPolicy(allow_origins=("*",)), direct_response=DirectResponse(403, b"no")
    )
    steps = compile_request_steps(policies)
    request = PolicyRequest(b"GET", b"lo", b"/", b"", [_ORIGIN], None, "127.0.0.1:1")
    answer = run_steps(steps, request)
    assert answer is not None and answer.response.startswith(b"HTTP/1.1 403")
    assert request.response_lines == [b"access-control-allow-origin: http://example.com\r\n"]
    preflight = PolicyRequest(b"OPTIONS", b"lo", b"/", b"", _PREFLIGHT, None, "127.0.0.1:1")
    answer = run_steps(steps, preflight)
    assert answer is not None and answer.response.startswith(b"HTTP/1.1 200")


# -- listener (gateway phase) ---------------------------------------------------------------


def test_listener_policies_load() -> None:
    listener = {
        "policies": {"cors": {"allowOrigins": ["*"], "maxAge": "5s"}},
        "routes": [{"backends": [{"host": "127.0.0.1:1"}]}],
    }
    text = json.dumps({"binds": [{"port": 3000, "listeners": [listener]}]})
    loaded = load_config(text, {}, base_dir=Path("/")).binds[0].listeners[0]
    assert loaded.policies == GatewayPolicies(cors=CorsPolicy(allow_origins=("*",), max_age=5))
    assert compile_gateway_steps(loaded.policies) != ()
    assert compile_gateway_steps(None) == ()
    assert compile_gateway_steps(GatewayPolicies()) == ()


def test_a_later_cors_replaces_an_earlier_ones_fields() -> None:
    # A listener's and a route's cors both apply; agentgateway inserts into one header map,
    # so the route's fields win and the listener's other fields stay.
    gateway = compile_gateway_steps(
        GatewayPolicies(CorsPolicy(allow_origins=("*",), allow_credentials=True))
    )
    route = compile_request_steps(
        RoutePolicies(cors=CorsPolicy(allow_origins=("*",), expose_headers=("x-id",)))
    )
    request = PolicyRequest(b"GET", b"lo", b"/", b"", [_ORIGIN], None, "127.0.0.1:1")
    assert run_steps(gateway, request) is None
    assert run_steps(route, request) is None
    assert request.response_lines == [
        b"access-control-allow-credentials: true\r\n",
        b"access-control-allow-origin: http://example.com\r\n",
        b"access-control-expose-headers: x-id\r\n",
    ]
    assert request.response_replaces == {
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
        b"access-control-expose-headers",
    }


def test_agentgateway_traffic_http_example_block() -> None:
    # The cors block of agentgateway's examples/traffic-http/config.yaml.
    cors = _load_cors(
        {
            "allowHeaders": ["header"],
            "allowOrigins": ["*"],
            "allowCredentials": True,
            "allowMethods": ["GET"],
            "exposeHeaders": ["header2"],
            "maxAge": "100s",
        }
    )
    assert cors is not None
    headers = [(b"origin", b"http://site.example"), (b"access-control-request-method", b"GET")]
    answer, _ = _run(cors, b"OPTIONS", headers)
    assert answer is not None
    assert answer.response == (
        b"HTTP/1.1 200 OK\r\n"
        b"access-control-allow-origin: http://site.example\r\n"
        b"access-control-allow-methods: GET\r\n"
        b"access-control-allow-headers: header\r\n"
        b"access-control-max-age: 100\r\n"
        b"access-control-allow-credentials: true\r\n"
        b"access-control-expose-headers: header2\r\n"
        b"content-length: 0\r\n\r\n"
    )


def test_origin_verdicts_are_remembered_within_a_bound() -> None:
    matcher = OriginMatcher(("https://*.example",))
    for i in range(3000):
        assert matcher.allows(b"https://h%d.example" % i)
        assert not matcher.allows(b"https://h%d.other" % i)
    assert len(matcher._seen) <= 1024
    assert matcher.allows(b"https://h1.example") and not matcher.allows(b"https://h1.other")
