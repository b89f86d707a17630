"""An `expression` credential location (agentgateway's AuthorizationLocation::Expression)
through the CLI-started gateway: apiKey, basicAuth and jwtAuth read the credential a CEL
expression yields, leave the request as it was (nothing to take out), and a non-string or a
failed evaluation is no credential."""

from __future__ import annotations

import base64
import json
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from agw_fast.core import cel
from tests.e2e.conftest import GatewayFactory, Upstream, gateway_client

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

ISS = "https://issuer.test"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps({"keys": [{**json.loads(RSAAlgorithm.to_jwk(_KEY.public_key())), "kid": "k"}]})
API_KEY = "sk-expr-1"


def _route(name: str, policies: dict[str, object], port: int) -> dict[str, object]:
    return {
        "name": name,
        "matches": [{"path": {"pathPrefix": f"/{name}"}}],
        "policies": policies,
        "backends": [{"host": f"127.0.0.1:{port}"}],
    }


def test_expression_locations(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        port = upstream.port
        routes = [
            _route("key", {"apiKey": {
                "mode": "strict", "keys": [{"key": API_KEY}],
                "location": {"expression": 'request.headers["x-auth"].stripPrefix("Key ")'},
            }}, port),
            _route("basic", {"basicAuth": {
                "mode": "strict", "htpasswd": "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
                "authorizationLocation": {"expression": 'request.headers["x-basic"]'},
            }}, port),
            _route("jwt", {"jwtAuth": {
                "mode": "strict", "issuer": ISS, "jwks": JWKS,
                "location": {"expression": 'request.headers["x-token"]'},
            }}, port),
        ]  # fmt: skip
        doc = {
            "config": {"statsAddr": "off", "adminAddr": "off", "readinessAddr": "off"},
            "binds": [{"port": 0, "listeners": [{"routes": routes}]}],
        }
        gw = gateway(json.dumps(doc))
        with gateway_client(gw.port) as client:
            ok = client.get("/key", headers={"x-auth": f"Key {API_KEY}"})
            assert ok.status_code == 200
            # Nothing is taken out for an expression location.
            assert upstream.requests[-1].header("x-auth") == f"Key {API_KEY}"
            wrong = client.get("/key", headers={"x-auth": "Key nope"})
            assert wrong.status_code == 401
            assert wrong.text == "api key authentication failure: invalid credentials"
            # No header: the evaluation fails, which is no credential.
            missing = client.get("/key", headers={"authorization": f"Bearer {API_KEY}"})
            assert missing.status_code == 401
            assert missing.text == "api key authentication failure: no API Key found"

            good = base64.b64encode(b"alice:test").decode()
            assert client.get("/basic", headers={"x-basic": good}).status_code == 200
            assert upstream.requests[-1].header("x-basic") == good
            refused = client.get("/basic", headers={"authorization": f"Basic {good}"})
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == 'Basic realm="Restricted"'

            claims = {"iss": ISS, "sub": "alice", "exp": int(time.time()) + 300}
            tok = pyjwt.encode(claims, _KEY, algorithm="RS256", headers={"kid": "k"})
            assert client.get("/jwt", headers={"x-token": tok}).status_code == 200
            assert upstream.requests[-1].header("x-token") == tok
            bad = client.get("/jwt", headers={"x-token": "x.y.z"})
            assert bad.status_code == 401 and bad.text.startswith("authentication failure: ")
            none = client.get("/jwt", headers={"authorization": f"Bearer {tok}"})
            assert none.status_code == 401
            assert none.text == "authentication failure: no bearer token found"
