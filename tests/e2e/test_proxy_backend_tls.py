"""`backendTLS`: trust roots, `{}` (public roots), `insecure`, `insecureHost`,
`hostname` (SNI and verification name) and client certificates (mTLS).

The TLS upstreams are certified by the session's trustme CA for localhost, 127.0.0.1,
upstream.test and api.example.test. The purpose-built ones report the SNI they saw and the
client certificate the gateway presented.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    QUIET,
    Certs,
    GatewayFactory,
    Process,
    Upstream,
    UpstreamConnection,
    gateway_client,
    http_response,
    ok_json,
)


def serve_tls_report(conn: UpstreamConnection) -> None:
    """Answers every request with the TLS facts of its connection."""
    assert conn.tls is not None
    cert: Any = conn.tls["peer_cert"] or {}
    report = {
        "sni": conn.tls["sni"],
        "client_san": [value for _kind, value in cert.get("subjectAltName", ())],
        "connection": conn.index,
    }
    while (request := conn.read_request()) is not None:
        body = json.dumps({**report, "target": request.target}).encode()
        conn.send(http_response(200, body, [("Content-Type", "application/json")]))


def server_context(certs: Certs, client_certs: ssl.VerifyMode) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert_path, certs.key_path)
    context.load_verify_locations(certs.ca_path)
    context.verify_mode = client_certs
    return context


@pytest.fixture(scope="module")
def reporting_upstream(certs: Certs) -> Iterator[Upstream]:
    with Upstream(serve_tls_report, tls=server_context(certs, ssl.CERT_OPTIONAL)) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def mtls_upstream(certs: Certs) -> Iterator[Upstream]:
    with Upstream(serve_tls_report, tls=server_context(certs, ssl.CERT_REQUIRED)) as upstream:
        yield upstream


def tls_config(mock: int, reporting: int, mtls: int, certs: Certs) -> str:
    def route(name: str, tls: str, host: str) -> str:
        return f"""    - name: {name}
      matches: [{{path: {{pathPrefix: /{name}}}}}]
      policies:
        urlRewrite:
          path: {{prefix: /echo/{name}}}
        backendTLS: {tls}
      backends: [{{host: "{host}"}}]
"""

    ca = f'"{certs.ca_path}"'
    client = f'cert: "{certs.client_cert_path}", key: "{certs.client_key_path}"'
    return QUIET + """binds:
- port: 0
  listeners:
  - routes:
""" + "".join(
        [
            route("root", f"{{root: {ca}}}", f"localhost:{mock}"),
            route("system-roots", "{}", f"localhost:{mock}"),
            route("insecure", "{insecure: true}", f"localhost:{mock}"),
            route("hostname", f"{{root: {ca}, hostname: upstream.test}}", f"127.0.0.1:{mock}"),
            route("wrong-hostname", f"{{root: {ca}, hostname: wrong.test}}", f"127.0.0.1:{mock}"),
            route(
                "insecure-host",
                f"{{root: {ca}, hostname: wrong.test, insecureHost: true}}",
                f"127.0.0.1:{mock}",
            ),
            route("sni", f"{{root: {ca}, hostname: upstream.test}}", f"127.0.0.1:{reporting}"),
            route("sni-default", f"{{root: {ca}}}", f"localhost:{reporting}"),
            route("mtls", f"{{root: {ca}, {client}}}", f"localhost:{mtls}"),
            route("mtls-no-cert", f"{{root: {ca}}}", f"localhost:{mtls}"),
        ]
    )


@pytest.fixture(scope="module")
def client(
    module_gateway: GatewayFactory,
    tls_upstream: Process,
    reporting_upstream: Upstream,
    mtls_upstream: Upstream,
    certs: Certs,
) -> Iterator[httpx.Client]:
    gw = module_gateway(
        tls_config(tls_upstream.port, reporting_upstream.port, mtls_upstream.port, certs)
    )
    with gateway_client(gw.port) as c:
        yield c


def assert_upstream_failure(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("upstream call failed: "), response.text
    for word in words:
        assert word in response.text.lower(), response.text


def test_root_ca(client: httpx.Client, tls_upstream: Process) -> None:
    doc = ok_json(client.get("/root/x?q=1"))
    assert doc["target"] == "/echo/root/x?q=1"
    assert dict(doc["headers"])["host"] == f"localhost:{tls_upstream.port}"


def test_system_roots_reject_a_private_ca(client: httpx.Client) -> None:
    assert_upstream_failure(client.get("/system-roots"), "certificate", "verif")
    # The failure is per request: the gateway goes on serving.
    ok_json(client.get("/root"))


def test_insecure_skips_verification(client: httpx.Client) -> None:
    assert ok_json(client.get("/insecure/y"))["target"] == "/echo/insecure/y"


def test_hostname_is_the_verification_name(client: httpx.Client) -> None:
    # The backend is an IP address; the certificate is checked against `hostname`.
    assert ok_json(client.get("/hostname"))["target"] == "/echo/hostname"
    assert_upstream_failure(client.get("/wrong-hostname"), "certificate")


def test_insecure_host_checks_the_chain_only(client: httpx.Client) -> None:
    assert ok_json(client.get("/insecure-host"))["target"] == "/echo/insecure-host"


def test_hostname_is_sent_as_sni(client: httpx.Client) -> None:
    assert ok_json(client.get("/sni"))["sni"] == "upstream.test"
    # Without `hostname`, SNI is the backend's host name.
    assert ok_json(client.get("/sni-default"))["sni"] == "localhost"


def test_client_certificate(client: httpx.Client) -> None:
    doc = ok_json(client.get("/mtls/z"))
    assert doc["target"] == "/echo/mtls/z"
    assert doc["client_san"] == ["client.test"]


def test_missing_client_certificate_fails(client: httpx.Client) -> None:
    assert_upstream_failure(client.get("/mtls-no-cert"))
    ok_json(client.get("/mtls"))
