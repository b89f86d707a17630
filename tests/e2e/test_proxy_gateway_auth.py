"""Listener-level (gateway phase) jwtAuth, basicAuth, apiKey and authorization through the
CLI-started gateway: they run before route selection, the route's own policies run after
them on the same request (agentgateway's apply_gateway_policies, then apply_request_policies),
a gateway JWT's claims reach a route's CEL rules, and consumed credentials never go upstream."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from agw_fast.core import cel
from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    RawClient,
    Upstream,
    gateway_client,
    http_request,
)

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

ISS = "https://issuer.test"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(_KEY.public_key())), "kid": "k"}]})
API_KEY = "sk-route-key-42"
# htpasswd `{SHA}` of "test"
HTPASSWD = "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="


def token(sub: str = "alice") -> str:
    claims = {"iss": ISS, "sub": sub, "exp": int(time.time()) + 300}
    return pyjwt.encode(claims, _KEY, algorithm="RS256", headers={"kid": "k"})


def bearer(sub: str = "alice") -> dict[str, str]:
    return {"authorization": f"Bearer {token(sub)}"}


def _config(upstream_port: int) -> str:
    backends = [{"host": f"127.0.0.1:{upstream_port}"}]

    def route(name: str, policies: dict[str, Any] | None = None) -> dict[str, Any]:
        r: dict[str, Any] = {
            "name": name, "matches": [{"path": {"pathPrefix": f"/{name}"}}], "backends": backends,
        }
        if policies:
            r["policies"] = policies
        return r

    doc = {
        "config": {"statsAddr": "off", "adminAddr": "off", "readinessAddr": "off"},
        "binds": [
            {
                "port": 0,
                "listeners": [
                    {
                        "policies": {
                            "jwtAuth": {"mode": "strict", "issuer": ISS, "jwks": JWKS},
                            "authorization": {
                                "rules": [{"deny": 'request.path.startsWith("/blocked")'}]
                            },
                        },
                        "routes": [
                            route("open"),
                            route("blocked"),
                            route("admin", {"authorization": {"rules": ['jwt.sub == "admin"']}}),
                            route(
                                "keyed",
                                {
                                    "apiKey": {
                                        "mode": "strict",
                                        "keys": [{"key": API_KEY}],
                                        "location": {"header": {"name": "x-api-key"}},
                                    }
                                },
                            ),
                        ],
                    }
                ],
            }
        ],
    }
    return json.dumps(doc)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    return module_gateway(_config(upstream.port))


@pytest.fixture(scope="module")
def client(gw: Process) -> Iterator[httpx.Client]:
    with gateway_client(gw.port) as c:
        yield c


def test_gateway_jwt_runs_before_route_selection(client: httpx.Client, upstream: Upstream) -> None:
    before = len(upstream.requests)
    for path in ("/open", "/no-such-route"):
        missing = client.get(path)
        assert missing.status_code == 401
        assert missing.text == "authentication failure: no bearer token found"
        assert missing.headers["content-type"] == "text/plain"
    bad = client.get("/open", headers={"authorization": "Bearer x.y.z"})
    assert bad.status_code == 401 and bad.text.startswith("authentication failure: ")
    assert len(upstream.requests) == before
    # Authenticated: then route selection (404 for no route) and the route itself.
    assert client.get("/no-such-route", headers=bearer()).status_code == 404
    ok = client.get("/open", headers=bearer())
    assert ok.status_code == 200
    sent = upstream.requests[-1]
    assert sent.header("authorization") is None  # the verified token was taken out


def test_gateway_authorization(client: httpx.Client) -> None:
    denied = client.get("/blocked/x", headers=bearer())
    assert denied.status_code == 403 and denied.text == "authorization failed"
    # Authentication comes first in the gateway phase too.
    assert client.get("/blocked/x").status_code == 401


def test_gateway_claims_reach_the_route_rules(client: httpx.Client) -> None:
    denied = client.get("/admin", headers=bearer("alice"))
    assert denied.status_code == 403 and denied.text == "authorization failed"
    assert client.get("/admin", headers=bearer("admin")).status_code == 200


def test_route_api_key_also_applies(client: httpx.Client, upstream: Upstream) -> None:
    missing = client.get("/keyed", headers=bearer())
    assert missing.status_code == 401
    assert missing.text == "api key authentication failure: no API Key found"
    # The route's key alone is not enough: the gateway's JWT is required as well.
    assert client.get("/keyed", headers={"x-api-key": API_KEY}).status_code == 401
    ok = client.get("/keyed", headers={**bearer(), "x-api-key": API_KEY})
    assert ok.status_code == 200
    sent = upstream.requests[-1]
    assert sent.header("authorization") is None and sent.header("x-api-key") is None


def test_curl_and_raw_answers(gw: Process) -> None:
    result = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", " %{http_code}", f"http://127.0.0.1:{gw.port}/open"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == b"authentication failure: no bearer token found 401"
    with RawClient(gw.port) as raw:
        first = raw.request(http_request("GET", "/blocked"))
        assert first.status == 401
        # The connection stays usable after a gateway-phase answer.
        second = raw.request(
            http_request("GET", "/blocked", headers=[("Authorization", f"Bearer {token()}")])
        )
        assert second.raw == (
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n"
            b"authorization failed"
        )


def test_listener_basic_auth_with_curl(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        doc = {
            "config": {"statsAddr": "off", "adminAddr": "off", "readinessAddr": "off"},
            "binds": [{"port": 0, "listeners": [{
                "policies": {"basicAuth": {"htpasswd": HTPASSWD, "mode": "strict",
                                           "realm": "edge"}},
                "routes": [{"backends": [{"host": f"127.0.0.1:{upstream.port}"}]}],
            }]}],
        }  # fmt: skip
        gw = gateway(json.dumps(doc))
        url = f"http://127.0.0.1:{gw.port}/x"
        refused = subprocess.run(
            ["curl", "-s", "-D", "-", "-o", "/dev/null", url],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        assert refused.stdout.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        assert b'\r\nwww-authenticate: Basic realm="edge"\r\n' in refused.stdout
        ok = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "alice:test", url],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        assert ok.stdout == b"200"
        assert upstream.requests[-1].header("authorization") is None
        wrong = base64.b64encode(b"alice:nope").decode()
        with gateway_client(gw.port) as client:
            assert client.get("/x", headers={"authorization": f"Basic {wrong}"}).status_code == 401
