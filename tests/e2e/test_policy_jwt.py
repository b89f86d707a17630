"""jwtAuth end to end: tokens checked by the gateway started from its CLI, over real sockets.

The answers are agentgateway's (http/jwt.rs, proxy/mod.rs): 401 `authentication failure: ...`
as text/plain; a verified token's Authorization header does not reach the upstream.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from agw_fast.policies.jwt import KeySetHolder, ProviderRules, Verifier
from agw_fast.server import jwks as jwks_module
from tests.e2e.conftest import (
    DEADLINE,
    Certs,
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    gateway_client,
    http_request,
    refused_config,
    tls_client_context,
    tls_server_context,
    unused_port,
)

ISS = "https://issuer.test"
AUD = "api"
_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP256R1())


def _jwk(kid: str, key: Any, algorithm: Any) -> dict[str, Any]:
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid}


JWKS = json.dumps({"keys": [_jwk("rsa", _RSA, RSAAlgorithm), _jwk("ec", _EC, ECAlgorithm)]})


def token(kid: str = "rsa", key: Any = _RSA, alg: str = "RS256", **claims: Any) -> str:
    body: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": int(time.time()) + 300}
    body.update(claims)
    return pyjwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def config(upstream_port: int, routes: dict[str, dict[str, Any]]) -> str:
    """A quiet gateway with one route per path prefix, each with its own jwtAuth."""
    doc = {
        "config": {"statsAddr": "off", "adminAddr": "off", "readinessAddr": "off"},
        "binds": [{"port": 0, "listeners": [{"routes": [
            {
                "name": prefix.strip("/"),
                "matches": [{"path": {"pathPrefix": prefix}}],
                "policies": {"jwtAuth": jwt_auth},
                "backends": [{"host": f"127.0.0.1:{upstream_port}"}],
            }
            for prefix, jwt_auth in routes.items()
        ]}]}],
    }  # fmt: skip
    return json.dumps(doc)


def provider(jwks: object = JWKS, **extra: Any) -> dict[str, Any]:
    return {"issuer": ISS, "audiences": [AUD], "jwks": jwks, **extra}


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    return module_gateway(
        config(
            upstream.port,
            {
                "/strict": {"mode": "strict", **provider()},
                "/optional": provider(),
                "/permissive": {"mode": "permissive", **provider()},
            },
        )
    )


def forwarded_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {name: value for name, value in response.json()["headers"]}


def refused(response: httpx.Response, message: str) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "text/plain"
    assert response.text == f"authentication failure: {message}"


EXPIRED = "the token is invalid or malformed: Error(ExpiredSignature)"


def test_strict(gw: Process) -> None:
    with gateway_client(gw.port) as client:
        refused(client.get("/strict"), "no bearer token found")
        refused(client.get("/strict", headers={"authorization": "Basic eDp5"}),
                "no bearer token found")  # fmt: skip
        expired = token(exp=int(time.time()) - 3600)
        refused(client.get("/strict", headers={"authorization": f"Bearer {expired}"}), EXPIRED)
        refused(
            client.get("/strict", headers={"authorization": f"Bearer {token(kid='gone')}"}),
            'token uses the unknown key "gone"',
        )
        headers = forwarded_headers(
            client.get("/strict", headers={"authorization": f"bearer {token('ec', _EC, 'ES256')}"})
        )
        assert "authorization" not in headers


def test_optional(gw: Process) -> None:
    with gateway_client(gw.port) as client:
        assert "authorization" not in forwarded_headers(client.get("/optional"))
        # Not a bearer token: the request goes on, with its header.
        basic = {"authorization": "Basic eDp5"}
        headers = forwarded_headers(client.get("/optional", headers=basic))
        assert headers["authorization"] == "Basic eDp5"
        refused(
            client.get("/optional", headers={"authorization": f"Bearer {token(iss='x')}"}),
            "the token is invalid or malformed: Error(InvalidIssuer)",
        )
        headers = forwarded_headers(
            client.get("/optional", headers={"authorization": f"Bearer {token()}"})
        )
        assert "authorization" not in headers


def test_permissive(gw: Process) -> None:
    with gateway_client(gw.port) as client:
        forwarded_headers(client.get("/permissive"))
        forged = token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        # An invalid token passes, unauthenticated: its header is forwarded as it came.
        headers = forwarded_headers(
            client.get("/permissive", headers={"authorization": f"Bearer {forged}"})
        )
        assert headers["authorization"] == f"Bearer {forged}"
        headers = forwarded_headers(
            client.get("/permissive", headers={"authorization": f"Bearer {token()}"})
        )
        assert "authorization" not in headers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Bearer", "no bearer token found"),
        ("Bearer ", "no bearer token found"),  # the trailing space is not part of the value
        ("Bearer a.b", "the token header is malformed: Error(InvalidToken)"),
        ("Bearer !.b.c", "the token header is malformed: Error(Base64(InvalidByte(0, 33)))"),
        ("Bearer  " + "x", "the token header is malformed: Error(InvalidToken)"),
        ("Bearer caf\xe9", "no bearer token found"),  # not visible ASCII: no usable value
    ],
)
def test_malformed_authorization_headers(gw: Process, value: str, message: str) -> None:
    with RawClient(gw.port) as raw:
        response = raw.request(
            http_request("GET", "/strict", headers=[("Authorization", value)])
        )
    assert response.status == 401
    assert response.body.decode() == f"authentication failure: {message}"


def test_the_first_authorization_header_is_the_one_read(gw: Process) -> None:
    with RawClient(gw.port) as raw:
        good = raw.request(http_request("GET", "/strict", headers=[
            ("Authorization", f"Bearer {token()}"), ("Authorization", "Bearer junk")]))
        bad = raw.request(http_request("GET", "/strict", headers=[
            ("Authorization", "Bearer junk"), ("Authorization", f"Bearer {token()}")]))  # fmt: skip
    assert good.status == 200
    # Both fields are removed once the first verified.
    assert b"authorization" not in good.body.lower()
    assert bad.status == 401


def test_cookie_and_query_parameter_locations(
    gateway: GatewayFactory, upstream: Upstream
) -> None:
    """The token read from a cookie or a query parameter; once verified, it is not forwarded
    (agentgateway's AuthorizationLocation::remove), the other cookies and parameters are."""
    gw = gateway(config(upstream.port, {
        "/cookie": {"mode": "strict", "location": {"cookie": {"name": "jwt"}}, **provider()},
        "/query": {"mode": "strict", "location": {"queryParameter": {"name": "access_token"}},
                   **provider()},
    }))  # fmt: skip
    tok = token()
    with gateway_client(gw.port) as client:
        response = client.get("/cookie", headers={"cookie": f"a=1; jwt={tok}; b=2"})
        headers = forwarded_headers(response)
        assert headers["cookie"] == "a=1; b=2" and tok not in response.text
        refused(client.get("/cookie", headers={"authorization": f"Bearer {tok}"}),
                "no bearer token found")  # fmt: skip
        expired = token(exp=int(time.time()) - 3600)
        refused(client.get("/cookie", headers={"cookie": f"jwt={expired}"}), EXPIRED)

        response = client.get("/query", params={"x": "1 2", "access_token": tok})
        assert response.status_code == 200, response.text
        assert response.json()["target"] == "/query?x=1+2"
        response = client.get(f"/query?access_token={tok}")
        assert response.status_code == 200 and response.json()["target"] == "/query"
        refused(client.get("/query?access_token=a.b"),
                "the token header is malformed: Error(InvalidToken)")  # fmt: skip
        refused(client.get("/query", headers={"cookie": f"jwt={tok}"}), "no bearer token found")


def test_a_bad_inline_key_set_fails_startup(tmp_path: Path, upstream: Upstream) -> None:
    bad = json.dumps({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]})
    path = tmp_path / "gw.json"
    assert refused_config(path, config(upstream.port, {"/": provider(bad)})) == (
        "config error: binds[0].listeners[0].routes[0].policies.jwtAuth.jwks: the key \"s\" "
        "uses an unsupported algorithm OctetKey (supported: RSA, EC, OKP[Ed25519])"
    )


# -- a JWKS URL -----------------------------------------------------------------------------


class JwksServer:
    """The test's own HTTP server for a JWKS document; `stop()` takes it down."""

    def __init__(self, document: str, tls: ssl.SSLContext | None = None) -> None:
        self.document = document
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                outer.hits += 1
                body = outer.document.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=0")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        # The suite's certificate names `localhost`.
        origin = f"http://127.0.0.1:{self.port}" if tls is None else f"https://localhost:{self.port}"
        self.url = f"{origin}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer(JWKS)
    yield server
    server.stop()


def test_a_jwks_url_keeps_validating_when_it_goes_down(
    gateway: GatewayFactory, upstream: Upstream, jwks_server: JwksServer
) -> None:
    jwt_auth = {"mode": "strict", **provider({"url": jwks_server.url})}
    gw = gateway(config(upstream.port, {"/": jwt_auth}), workers=2)
    assert jwks_server.hits == 1  # fetched once, before the workers forked
    with gateway_client(gw.port) as client:
        forwarded_headers(client.get("/", headers={"authorization": f"Bearer {token()}"}))
        jwks_server.stop()
        for _ in range(4):  # both workers, on fresh connections
            with gateway_client(gw.port) as fresh:
                response = fresh.get("/", headers={"authorization": f"Bearer {token()}"})
                forwarded_headers(response)
        refused(client.get("/"), "no bearer token found")


def test_a_jwks_url_down_at_startup_fails_it(tmp_path: Path, upstream: Upstream) -> None:
    url = f"http://127.0.0.1:{unused_port()}/jwks.json"
    path = tmp_path / "gw.json"
    line = refused_config(path, config(upstream.port, {"/": provider({"url": url})}))
    assert line.startswith(
        "config error: binds[0].listeners[0].routes[0].policies.jwtAuth.jwks.url: "
        f"cannot load JWKS from {url}: "
    )


def test_the_refresher_swaps_keys_and_keeps_the_last_good_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's refresher against a real server: a rotated set replaces the old one; a
    server that went down leaves the last good set in use (and is retried)."""
    monkeypatch.setattr(jwks_module, "MIN_TTL", 0.05)
    monkeypatch.setattr(jwks_module, "RETRY_AFTER_FAILURE", 0.05)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rotated = json.dumps({"keys": [_jwk("new", other, RSAAlgorithm)]})
    server = JwksServer(JWKS)
    rules = ProviderRules(ISS, frozenset({AUD}), ("aud", "exp", "iss"))
    holder = KeySetHolder(rules, None, server.url)
    monkeypatch.setattr(jwks_module, "remote_key_sets", lambda: {server.url: [holder]})
    verifier = Verifier([holder])

    async def scenario() -> None:
        refresher = jwks_module.JwksRefresher(asyncio.get_running_loop())
        try:
            await _until(lambda: holder.keys is not None and "rsa" in holder.keys)
            verifier.verify(token())
            server.document = rotated
            await _until(lambda: holder.keys is not None and "new" in holder.keys)
            verifier.verify(token("new", other))
            server.stop()
            hits = server.hits
            await asyncio.sleep(0.3)  # several failed refreshes
            assert server.hits == hits
            verifier.verify(token("new", other))
        finally:
            refresher.close()

    asyncio.run(scenario())


async def _until(predicate: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)



def test_an_https_jwks_url_is_verified_against_certifi_roots(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = JwksServer(JWKS, tls=tls_server_context(certs))
    try:
        # The suite's CA is not among certifi's roots: refused.
        with pytest.raises(ssl.SSLCertVerificationError):
            asyncio.run(jwks_module.fetch_jwks(server.url))
        monkeypatch.setattr(jwks_module, "_TLS", tls_client_context(certs))
        text, ttl = asyncio.run(jwks_module.fetch_jwks(server.url))
        assert json.loads(text) == json.loads(JWKS) and ttl == 60
    finally:
        server.stop()
