"""Listener `policies` (agentgateway's gateway phase) with jwtAuth, basicAuth, apiKey and
authorization: loaded, run before the route's steps on the same request (both must let it
through, neither replaces the other), in agentgateway's order (proxy/httpproxy.rs
`apply_gateway_policies`)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from agw_fast.config import load_config
from agw_fast.config.model import GatewayPolicies, Listener
from agw_fast.core import cel
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.policies import PolicyRequest, compile_gateway_steps, compile_request_steps, run_steps

L = "binds[0].listeners[0].policies"
KEY = "sk-gateway-0123"


def _listener(policies: object, route_policies: object = None) -> Listener:
    route: dict[str, object] = {"backends": []}
    if route_policies is not None:
        route["policies"] = route_policies
    listener = {"policies": policies, "routes": [route]}
    text = json.dumps({"binds": [{"port": 3000, "listeners": [listener]}]})
    return load_config(text, {}, base_dir=Path("/")).binds[0].listeners[0]


def _request(headers: list[tuple[bytes, bytes]] | None = None, path: bytes = b"/") -> PolicyRequest:
    return PolicyRequest(b"GET", b"h", path, b"", headers or [], None, "127.0.0.1:5000")


def _run(listener: Listener, request: PolicyRequest) -> tuple[bytes, str] | None:
    """Gateway steps, then the route's, as proxy/downstream.py runs them."""
    answer = run_steps(compile_gateway_steps(listener.policies), request)
    if answer is None:
        answer = run_steps(compile_request_steps(listener.routes[0].policies), request)
    return None if answer is None else (answer.response, answer.reason)


def _basic(user: str, password: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Basic " + base64.b64encode(f"{user}:{password}".encode()))


def test_listener_auth_policies_load() -> None:
    listener = _listener(
        {
            "apiKey": {"keys": [{"key": KEY}], "mode": "strict"},
            "basicAuth": {"htpasswd": "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="},
            "authorization": {"rules": ["true"]},
        }
    )
    policies = listener.policies
    assert isinstance(policies, GatewayPolicies)
    assert policies.api_key is not None and policies.api_key.mode == "strict"
    assert policies.basic_auth is not None and policies.basic_auth.htpasswd[0].username == "alice"
    assert policies.authorization is not None and policies.jwt_auth is None


@pytest.mark.parametrize(
    ("policies", "path", "message"),
    [
        (
            {"apiKey": {"keys": [{"key": "a", "keyHash": "b"}]}},
            f"{L}.apiKey.keys[0]",
            "exactly one",
        ),
        ({"basicAuth": {}}, f"{L}.basicAuth.htpasswd", "missing required field"),
        ({"authorization": {"rules": [{"permit": "x"}]}}, f"{L}.authorization.rules[0].permit",
         "unknown rule kind"),
        ({"jwtAuth": {"issuer": "i"}}, f"{L}.jwtAuth.jwks", "missing required field"),
        ({"oidc": {}}, f"{L}.oidc", f"not supported: {L}.oidc"),
    ],
)
def test_listener_auth_config_errors(policies: object, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _listener(policies)
    assert caught.value.path == path
    assert message in caught.value.message


def test_gateway_api_key_then_route_authorization_on_its_metadata() -> None:
    if not cel.available():
        pytest.skip("the cel extra is not installed")
    listener = _listener(
        {"apiKey": {"keys": [{"key": KEY, "metadata": {"team": "a"}}], "mode": "strict"}},
        {"authorization": {"rules": ['apiKey.team == "a"']}},
    )
    missing = _run(listener, _request())
    assert missing is not None and missing[1] == Reason.API_KEY_AUTH
    assert missing[0].endswith(b"api key authentication failure: no API Key found")
    request = _request([(b"authorization", b"Bearer " + KEY.encode())])
    assert _run(listener, request) is None
    # The gateway's apiKey consumed the credential: the upstream never sees it.
    assert request.headers == []


def test_both_phases_run_and_neither_replaces_the_other() -> None:
    # Gateway basicAuth (optional) and route apiKey (strict): a request needs the route's
    # key even with a good password, and a wrong password is refused before the route.
    listener = _listener(
        {"basicAuth": {"htpasswd": "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", "mode": "strict"}},
        {"apiKey": {"keys": [{"key": KEY}], "mode": "strict",
                    "location": {"header": {"name": "x-api-key"}}}},
    )
    good = _basic("alice", "test")
    refused = _run(listener, _request([good]))
    assert refused is not None and refused[1] == Reason.API_KEY_AUTH
    refused = _run(listener, _request([_basic("alice", "nope"), (b"x-api-key", KEY.encode())]))
    assert refused is not None and refused[1] == Reason.BASIC_AUTH
    request = _request([good, (b"x-api-key", KEY.encode())])
    assert _run(listener, request) is None
    assert request.claims is not None and set(request.claims) == {"basicAuth", "apiKey"}


def test_gateway_authorization_denies_before_route_selection() -> None:
    if not cel.available():
        pytest.skip("the cel extra is not installed")
    listener = _listener({"authorization": {"rules": [{"deny": 'request.path == "/x"'}]}})
    answer = _run(listener, _request(path=b"/x"))
    assert answer is not None
    assert answer == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n"
        b"authorization failed",
        Reason.AUTHORIZATION,
    )
    assert _run(listener, _request(path=b"/y")) is None


def test_a_bad_gateway_rule_fails_naming_the_listener_field() -> None:
    if not cel.available():
        pytest.skip("the cel extra is not installed")
    listener = _listener({"authorization": {"rules": ["request.path.startsWith("]}})
    with pytest.raises(ConfigError) as caught:
        compile_gateway_steps(listener.policies)
    assert str(caught.value).startswith(f"{L}.authorization.rules[0]: invalid CEL expression")
