"""`authorization` over real sockets: CEL allow/deny/require rules on headers, path and the
client's address, agentgateway's 403, and a malformed expression refused at load."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agw_fast.core import cel
from tests.e2e.conftest import (
    QUIET,
    BufferedSocket,
    GatewayFactory,
    Process,
    RawClient,
    RawMessage,
    Upstream,
    gateway_client,
    http_request,
    one_route_config,
    refused_config,
)

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

DENIED_BODY = b"authorization failed"


def authz_config(upstream_port: int) -> str:
    backend = f'[{{host: "127.0.0.1:{upstream_port}"}}]'
    return (
        QUIET
        + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: teams
      matches: [{{path: {{pathPrefix: /team}}}}]
      policies:
        authorization:
          rules:
          - 'request.headers["x-team"] == "a" || request.headers["x-team"] == "b"'
          - deny: 'request.path.startsWith("/team/admin") && request.headers["x-team"] != "a"'
      backends: {backend}
    - name: loopback-one
      matches: [{{path: {{pathPrefix: /local}}}}]
      policies:
        authorization:
          rules:
          - require: 'cidr("127.0.0.1/32").containsIP(source.address)'
          - require: 'request.method == "GET"'
      backends: {backend}
    - name: blocklist
      matches: [{{path: {{pathPrefix: /blocked}}}}]
      policies:
        authorization:
          rules:
          - deny: 'source.address == "127.0.0.3"'
          - deny: 'request.uri.contains("secret=")'
      backends: {backend}
    - name: open
      backends: {backend}
"""
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    return module_gateway(authz_config(upstream.port))


@pytest.fixture(scope="module")
def client(gw: Process) -> Iterator[httpx.Client]:
    with gateway_client(gw.port) as c:
        yield c


def from_address(port: int, source: str, data: bytes) -> RawMessage:
    """One request sent from a chosen loopback source address (Linux routes all 127/8)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(data)
        message = BufferedSocket(s).read_message(request=False)
    assert message is not None
    return message


def assert_denied(response: httpx.Response) -> None:
    assert response.status_code == 403
    assert response.content == DENIED_BODY
    assert response.headers["content-type"] == "text/plain"


def test_allow_rules_on_a_header(client: httpx.Client, upstream: Upstream) -> None:
    before = len(upstream.requests)
    assert client.get("/team/x", headers={"x-team": "a"}).status_code == 200
    assert client.get("/team/x", headers={"x-team": "b"}).status_code == 200
    assert_denied(client.get("/team/x", headers={"x-team": "c"}))
    assert_denied(client.get("/team/x"))  # no header: the rule's error counts as false
    assert len(upstream.requests) == before + 2  # denied requests never reach the backend


def test_deny_rule_on_the_path_wins_over_allow(client: httpx.Client) -> None:
    assert client.get("/team/admin", headers={"x-team": "a"}).status_code == 200
    assert_denied(client.get("/team/admin/users", headers={"x-team": "b"}))
    assert client.get("/team/other", headers={"x-team": "b"}).status_code == 200


def test_deny_rule_on_the_query(client: httpx.Client) -> None:
    assert client.get("/blocked/x?a=1").status_code == 200
    assert_denied(client.get("/blocked/x?secret=1"))


def test_require_rules_on_source_address_and_method(gw: Process, client: httpx.Client) -> None:
    assert client.get("/local").status_code == 200
    assert_denied(client.post("/local", content=b"x"))
    denied = from_address(gw.port, "127.0.0.2", http_request("GET", "/local"))
    assert denied.status == 403 and denied.body == DENIED_BODY
    # a route without the policy lets the same client through
    assert from_address(gw.port, "127.0.0.2", http_request("GET", "/open")).status == 200


def test_deny_rule_on_source_address(gw: Process) -> None:
    request = http_request("GET", "/blocked")
    assert from_address(gw.port, "127.0.0.2", request).status == 200
    denied = from_address(gw.port, "127.0.0.3", request)
    assert denied.status == 403 and denied.body == DENIED_BODY


def test_the_denial_on_the_wire_keeps_the_connection(gw: Process) -> None:
    with RawClient(gw.port) as raw:
        denied = raw.request(http_request("GET", "/team/x", headers=[("X-Team", "z")]))
        assert denied.raw == (
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n"
            b"authorization failed"
        )
        allowed = raw.request(http_request("GET", "/team/x", headers=[("X-Team", "a")]))
        assert allowed.status == 200


def test_curl_sees_the_403(gw: Process) -> None:
    result = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", " %{http_code}", f"http://127.0.0.1:{gw.port}/team/x"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == b"authorization failed 403"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "- 'request.path.startsWith(\"/a\"'",
            "config error: binds[0].listeners[0].routes[0].policies.authorization.rules[0]: "
            "invalid CEL expression: 1:",
        ),
        (
            '- deny: \'coalesce(request.headers["x"], "") == "y"\'',
            "config error: binds[0].listeners[0].routes[0].policies.authorization.rules[0].deny: "
            "invalid CEL expression: 1:9: undeclared reference to 'coalesce' "
            "(agentgateway's coalesce() is not supported by agw-fast)",
        ),
    ],
)
def test_a_malformed_expression_fails_at_load_with_one_line(
    tmp_path: Path, rule: str, message: str
) -> None:
    config = one_route_config("authorization:\n  rules:\n  " + rule)
    line = refused_config(tmp_path / "bad.yaml", config)
    assert line.startswith(message)


def test_rules_read_the_api_key_metadata(gateway: GatewayFactory, upstream: Upstream) -> None:
    """apiKey runs first (agentgateway's order) and hands its metadata to CEL as `apiKey`,
    with the key itself redacted."""
    gw = gateway(QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - policies:
        apiKey:
          mode: strict
          keys:
          - {{key: key-a, metadata: {{team: a}}}}
          - {{key: key-b, metadata: {{team: b}}}}
        authorization:
          rules:
          - 'apiKey.team == "a" && apiKey.key == "<redacted>"'
      backends: [{{host: "127.0.0.1:{upstream.port}"}}]
""")
    with gateway_client(gw.port) as client:
        ok = client.get("/x", headers={"authorization": "Bearer key-a"})
        assert ok.status_code == 200, ok.text
        denied = client.get("/x", headers={"authorization": "Bearer key-b"})
        assert (denied.status_code, denied.text) == (403, "authorization failed")
        missing = client.get("/x")
        assert missing.status_code == 401
