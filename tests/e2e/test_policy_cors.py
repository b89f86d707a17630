"""`cors` through the real gateway: preflights answered locally (the upstream sees nothing),
actual requests proxied with CORS fields that replace the upstream's, no Origin untouched.

Semantics: agentgateway's crates/agentgateway/src/http/cors.rs (Envoy's, with
forwardNotMatchingPreflights=false) and proxy/httpproxy.rs (CORS runs first; its fields are
inserted into whatever response the request gets).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    UpstreamConnection,
    echo_json,
    gateway_client,
    http_request,
    http_response,
    unused_port,
)

APP = "https://app.example"


def _serve(conn: UpstreamConnection) -> None:
    """Echo; under /own the upstream sends its own CORS fields, as some APIs do."""
    while (request := conn.read_request()) is not None:
        headers = [("Content-Type", "application/json")]
        if request.target.endswith("/own"):
            headers += [
                ("Access-Control-Allow-Origin", "https://upstream.example"),
                ("Access-Control-Allow-Credentials", "false"),
                ("Access-Control-Expose-Headers", "x-upstream"),
                ("Access-Control-Max-Age", "5"),
            ]
        conn.send(http_response(200, echo_json(request), headers))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(_serve) as up:
        yield up


@pytest.fixture(scope="module")
def cors_gateway(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    backend = f'[{{host: "127.0.0.1:{upstream.port}"}}]'
    return module_gateway(
        QUIET
        + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: plain
      matches: [{{path: {{pathPrefix: /plain}}}}]
      backends: {backend}
    - name: creds
      matches: [{{path: {{pathPrefix: /creds}}}}]
      policies:
        cors:
          allowOrigins: ["*"]
          allowCredentials: true
          allowMethods: ["*"]
          allowHeaders: ["*"]
      backends: {backend}
    - name: denied
      matches: [{{path: {{pathPrefix: /denied}}}}]
      policies:
        cors: {{allowOrigins: ["{APP}"]}}
        directResponse: {{status: 403, body: "no"}}
      backends: {backend}
    - name: down
      matches: [{{path: {{pathPrefix: /down}}}}]
      policies:
        cors: {{allowOrigins: ["{APP}"], exposeHeaders: ["*"]}}
      backends: [{{host: "127.0.0.1:{unused_port()}"}}]
    - name: main
      policies:
        cors:
          allowOrigins: ["{APP}", "http://*.example.com:8080"]
          allowMethods: [GET, POST]
          allowHeaders: [X-A, content-type]
          exposeHeaders: [X-Request-Id]
          maxAge: 10m30.5s
      backends: {backend}
"""
    )


def _cors_fields(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def _preflight(origin: str, method: str = "POST", **extra: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, **extra}


def test_allowed_preflight_is_answered_locally(
    cors_gateway: Process, upstream: Upstream
) -> None:
    before = len(upstream.requests)
    with gateway_client(cors_gateway.port) as client:
        response = client.options(
            "/v1/chat", headers=_preflight(APP, **{"Access-Control-Request-Headers": "x-a"})
        )
    assert response.status_code == 200
    assert response.content == b""
    assert _cors_fields(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET,POST",
        "access-control-allow-headers": "x-a,content-type",
        "access-control-max-age": "630",
        "access-control-expose-headers": "x-request-id",
    }
    assert response.headers["content-length"] == "0"
    assert "vary" not in response.headers  # agentgateway sends none
    assert len(upstream.requests) == before


def test_allowed_preflight_wire_bytes_and_keep_alive(
    cors_gateway: Process, upstream: Upstream
) -> None:
    before = len(upstream.requests)
    with RawClient(cors_gateway.port) as client:
        answer = client.request(
            http_request("OPTIONS", "/x", headers=list(_preflight(APP).items()))
        )
        assert answer.raw == (
            b"HTTP/1.1 200 OK\r\n"
            b"access-control-allow-origin: https://app.example\r\n"
            b"access-control-allow-methods: GET,POST\r\n"
            b"access-control-allow-headers: x-a,content-type\r\n"
            b"access-control-max-age: 630\r\n"
            b"access-control-expose-headers: x-request-id\r\n"
            b"content-length: 0\r\n\r\n"
        )
        # The connection stays usable: the next request is proxied.
        follow = client.request(http_request("GET", "/after"))
        assert follow.status == 200
    assert [r.target for r in upstream.requests[before:]] == ["/after"]


def test_wildcard_origin_pattern_and_port(cors_gateway: Process, upstream: Upstream) -> None:
    with gateway_client(cors_gateway.port) as client:
        allowed = client.options("/", headers=_preflight("http://a.b.example.com:8080"))
        wrong_port = client.options("/", headers=_preflight("http://a.example.com"))
    assert allowed.headers["access-control-allow-origin"] == "http://a.b.example.com:8080"
    assert wrong_port.status_code == 200
    assert _cors_fields(wrong_port) == {}


def test_disallowed_preflight_gets_an_empty_200(
    cors_gateway: Process, upstream: Upstream
) -> None:
    before = len(upstream.requests)
    with RawClient(cors_gateway.port) as client:
        answer = client.request(
            http_request("OPTIONS", "/x", headers=list(_preflight("https://evil.example").items()))
        )
    assert answer.raw == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    assert len(upstream.requests) == before


def test_disallowed_options_without_request_method_is_proxied(
    cors_gateway: Process, upstream: Upstream
) -> None:
    with gateway_client(cors_gateway.port) as client:
        response = client.options("/opt", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert response.json()["method"] == "OPTIONS"
    assert _cors_fields(response) == {}


def test_allowed_options_without_request_method_is_answered(
    cors_gateway: Process, upstream: Upstream
) -> None:
    before = len(upstream.requests)
    with gateway_client(cors_gateway.port) as client:
        response = client.options("/opt", headers={"Origin": APP})
    assert response.headers["access-control-allow-origin"] == APP
    assert response.content == b""
    assert len(upstream.requests) == before


def test_actual_request_from_allowed_origin(cors_gateway: Process, upstream: Upstream) -> None:
    with gateway_client(cors_gateway.port) as client:
        response = client.post("/v1/x", headers={"Origin": APP}, content=b"{}")
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "POST"
    assert ["origin", APP] in [[n.lower(), v] for n, v in echoed["headers"]]
    assert _cors_fields(response) == {
        "access-control-allow-origin": APP,
        "access-control-expose-headers": "x-request-id",
    }


def test_gateway_fields_replace_the_upstreams(cors_gateway: Process, upstream: Upstream) -> None:
    with RawClient(cors_gateway.port) as client:
        answer = client.request(http_request("GET", "/own", headers=[("Origin", APP)]))
    assert answer.status == 200
    assert answer.header_values("access-control-allow-origin") == [APP]
    assert answer.header_values("access-control-expose-headers") == ["x-request-id"]
    # Fields the policy does not set stay as the upstream sent them (agentgateway inserts
    # only the fields it has).
    assert answer.header_values("access-control-allow-credentials") == ["false"]
    assert answer.header_values("access-control-max-age") == ["5"]


def test_disallowed_origin_is_proxied_untouched(
    cors_gateway: Process, upstream: Upstream
) -> None:
    with RawClient(cors_gateway.port) as client:
        answer = client.request(
            http_request("GET", "/own", headers=[("Origin", "https://evil.example")])
        )
        odd = client.request(http_request("GET", "/v1", headers=[("Origin", "http://x\xe9.com")]))
    assert answer.status == 200
    assert answer.header_values("access-control-allow-origin") == ["https://upstream.example"]
    assert answer.header_values("access-control-expose-headers") == ["x-upstream"]
    assert odd.status == 200
    assert odd.header_values("access-control-allow-origin") == []


def test_credentials(cors_gateway: Process, upstream: Upstream) -> None:
    origin = "https://anyone.example"
    with gateway_client(cors_gateway.port) as client:
        preflight = client.options(
            "/creds/x",
            headers=_preflight(origin, "PUT", **{"Access-Control-Request-Headers": "x-b, x-c"}),
        )
        bare = client.options("/creds/x", headers={"Origin": origin})
        actual = client.get("/creds/own", headers={"Origin": origin})
    # `*` lists echo the preflight's request; without one they are left out (credentials).
    assert _cors_fields(preflight) == {
        "access-control-allow-origin": origin,
        "access-control-allow-methods": "PUT",
        "access-control-allow-headers": "x-b, x-c",
        "access-control-allow-credentials": "true",
    }
    assert _cors_fields(bare) == {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
    }
    assert actual.status_code == 200
    assert actual.headers.get_list("access-control-allow-origin") == [origin]
    assert actual.headers.get_list("access-control-allow-credentials") == ["true"]
    assert actual.headers.get_list("access-control-expose-headers") == ["x-upstream"]


def test_fields_reach_a_later_policys_answer(cors_gateway: Process, upstream: Upstream) -> None:
    with gateway_client(cors_gateway.port) as client:
        denied = client.get("/denied", headers={"Origin": APP})
        preflight = client.options("/denied", headers=_preflight(APP))
    assert denied.status_code == 403
    assert denied.content == b"no"
    assert denied.headers["access-control-allow-origin"] == APP
    # CORS runs before directResponse, so the preflight still succeeds.
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP


def test_fields_reach_the_gateways_error_answers(cors_gateway: Process) -> None:
    # agentgateway merges policy response headers into every response, errors included.
    with RawClient(cors_gateway.port) as client:
        answer = client.request(http_request("GET", "/down", headers=[("Origin", APP)]))
        plain = client.request(http_request("GET", "/down"))
    assert answer.status == 503
    assert answer.header_values("access-control-allow-origin") == [APP]
    assert answer.header_values("access-control-expose-headers") == ["*"]
    assert plain.status == 503
    assert plain.header_values("access-control-allow-origin") == []


def test_requests_without_origin_are_untouched(
    cors_gateway: Process, upstream: Upstream
) -> None:
    before = len(upstream.requests)
    with gateway_client(cors_gateway.port) as client:
        options = client.options("/own", headers={"Access-Control-Request-Method": "GET"})
        get = client.get("/own")
        plain = client.get("/plain/own", headers={"Origin": APP})
    for response in (options, get, plain):
        assert response.status_code == 200
        assert response.headers.get_list("access-control-allow-origin") == [
            "https://upstream.example"
        ]
        assert response.headers.get_list("access-control-max-age") == ["5"]
    assert [r.method for r in upstream.requests[before:]] == ["OPTIONS", "GET", "GET"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_preflight(cors_gateway: Process, upstream: Upstream) -> None:
    before = len(upstream.requests)
    result = subprocess.run(
        [
            "curl", "-sS", "-i", "-X", "OPTIONS", f"http://127.0.0.1:{cors_gateway.port}/v1",
            "-H", f"Origin: {APP}", "-H", "Access-Control-Request-Method: POST",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )  # fmt: skip
    head = result.stdout.lower()
    assert head.startswith(b"http/1.1 200 ok\r\n")
    assert f"access-control-allow-origin: {APP}\r\n".encode() in head
    assert b"access-control-max-age: 630\r\n" in head
    assert head.endswith(b"\r\n\r\n")
    assert len(upstream.requests) == before


@pytest.fixture(scope="module")
def listener_gateway(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    backend = f'[{{host: "127.0.0.1:{upstream.port}"}}]'
    return module_gateway(
        QUIET
        + f"""binds:
- port: 0
  listeners:
  - policies:
      cors:
        allowOrigins: ["{APP}"]
        allowCredentials: true
        allowMethods: [GET]
    routes:
    - name: api
      matches: [{{path: {{pathPrefix: /api}}}}]
      backends: {backend}
    - name: route-cors
      matches: [{{path: {{pathPrefix: /both}}}}]
      policies:
        cors: {{allowOrigins: ["*"], exposeHeaders: [x-route], allowMethods: [PUT]}}
      backends: {backend}
"""
    )


def test_listener_cors_answers_preflights_before_route_selection(
    listener_gateway: Process, upstream: Upstream
) -> None:
    before = len(upstream.requests)
    with gateway_client(listener_gateway.port) as client:
        routed = client.options("/api/x", headers=_preflight(APP))
        unrouted = client.options("/no-route", headers=_preflight(APP))
        # The listener answers first, so the route's own cors never sees this preflight.
        both = client.options("/both", headers=_preflight(APP))
    for response in (routed, unrouted, both):
        assert response.status_code == 200
        assert _cors_fields(response) == {
            "access-control-allow-origin": APP,
            "access-control-allow-methods": "GET",
            "access-control-allow-credentials": "true",
        }
    assert len(upstream.requests) == before


def test_listener_cors_fields_on_proxied_and_not_found(
    listener_gateway: Process, upstream: Upstream
) -> None:
    with RawClient(listener_gateway.port) as client:
        proxied = client.request(http_request("GET", "/api/own", headers=[("Origin", APP)]))
        missing = client.request(http_request("GET", "/nothing", headers=[("Origin", APP)]))
        other = client.request(
            http_request("GET", "/api/own", headers=[("Origin", "https://evil.example")])
        )
    assert proxied.status == 200
    assert proxied.header_values("access-control-allow-origin") == [APP]
    assert proxied.header_values("access-control-allow-credentials") == ["true"]
    assert proxied.header_values("access-control-expose-headers") == ["x-upstream"]
    assert missing.status == 404
    assert missing.header_values("access-control-allow-origin") == [APP]
    assert other.header_values("access-control-allow-origin") == ["https://upstream.example"]


def test_route_cors_overrides_the_listeners(
    listener_gateway: Process, upstream: Upstream
) -> None:
    with RawClient(listener_gateway.port) as client:
        answer = client.request(http_request("GET", "/both/own", headers=[("Origin", APP)]))
    assert answer.status == 200
    assert answer.header_values("access-control-allow-origin") == [APP]
    assert answer.header_values("access-control-allow-credentials") == ["true"]
    assert answer.header_values("access-control-expose-headers") == ["x-route"]


@pytest.mark.parametrize(
    ("cors", "message"),
    [
        ("{allowMethods: [G ET]}", "cors.allowMethods[0]: invalid method 'G ET'"),
        ("{maxAge: 10}", "cors.maxAge"),
        ("{allowOrigin: ['*']}", 'unknown field "allowOrigin"'),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, cors: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        QUIET
        + f"""binds:
- port: 0
  listeners:
  - routes:
    - policies: {{cors: {cors}}}
      backends: [{{host: "127.0.0.1:1"}}]
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "agw_fast", "-f", str(config), "--validate-only"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert message in output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1
