"""Upstream paths of an `ai` backend with hostOverride (`pathPrefix`, `pathOverride`, untouched
otherwise) and the route types of `policies.ai.routes` (`passthrough`, `models`), observed
through the mock's `/echo` (which answers with the request it received)."""

from __future__ import annotations

import gzip
import hashlib
import json

import httpx
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    UPSTREAM_KEY,
    Certs,
    GatewayFactory,
    Process,
    ai_route,
    llm_config,
)

BODY = json.dumps({"model": "client", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, tls_upstream: Process, certs: Certs) -> Process:
    def route(prefix: str, **ai: object) -> dict[str, object]:
        return ai_route(tls_upstream.port, match_prefix=prefix, ca_path=certs.ca_path, **ai)

    return module_gateway(
        llm_config(
            route("/prefixed", path_prefix="/echo/custom"),
            route("/overridden", path_override="/echo/fixed"),
            route("/typed", path_prefix="/echo/typed",
                  ai_routes={"/embeddings": "embeddings", "/chat/completions": "completions"}),
            route("/echo", ai_routes={"/raw": "passthrough", "/models": "models"}),
        ),
        env={"UPSTREAM_KEY": UPSTREAM_KEY},
    )


def post(gw: Process, target: str, body: bytes = BODY, **headers: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{gw.port}{target}",
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer client",
                 **headers},
        timeout=DEADLINE,
    )


def echoed(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    doc = response.json()
    assert isinstance(doc, dict)
    return doc


def headers_of(doc: dict[str, object], name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name]


def test_path_prefix_replaces_path_and_keeps_query(gw: Process) -> None:
    seen = echoed(post(gw, "/prefixed/v1/chat/completions?q=1"))
    assert seen["target"] == "/echo/custom/chat/completions?q=1"
    assert headers_of(seen, "host") == ["api.example.test"]
    assert headers_of(seen, "authorization") == [f"Bearer {UPSTREAM_KEY}"]


def test_path_prefix_applies_to_any_client_path(gw: Process) -> None:
    seen = echoed(post(gw, "/prefixed/some/other/path"))
    assert seen["target"] == "/echo/custom/chat/completions"


def test_path_prefix_uses_the_route_type_suffix(gw: Process) -> None:
    body = json.dumps({"model": "e", "input": "embed me"}).encode()
    seen = echoed(post(gw, "/typed/v1/embeddings?x=2", body))
    assert seen["target"] == "/echo/typed/embeddings?x=2"
    seen = echoed(post(gw, "/typed/v1/chat/completions"))
    assert seen["target"] == "/echo/typed/chat/completions"


def test_path_override_replaces_path_and_drops_query(gw: Process) -> None:
    seen = echoed(post(gw, "/overridden/v1/chat/completions?q=1&r=2"))
    assert seen["target"] == "/echo/fixed"


def test_host_override_without_prefix_leaves_path_untouched(gw: Process) -> None:
    seen = echoed(post(gw, "/echo/v1/chat/completions?k=v"))
    assert seen["target"] == "/echo/v1/chat/completions?k=v"
    # A completions route: the model was overridden, so the body changed.
    assert seen["body_sha256"] != hashlib.sha256(BODY).hexdigest()
    assert headers_of(seen, "content-length") == [str(seen["body_length"])]


@pytest.mark.parametrize(
    "body",
    [BODY, b"this is { not JSON", b'{"messages": []}', b""],
    ids=["json", "invalid-json", "no-model", "empty"],
)
def test_passthrough_forwards_body_untouched(gw: Process, body: bytes) -> None:
    seen = echoed(post(gw, "/echo/v1/raw?p=1", body))
    assert seen["target"] == "/echo/v1/raw?p=1"
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
    # The route's policies still apply.
    assert headers_of(seen, "host") == ["api.example.test"]
    assert headers_of(seen, "authorization") == [f"Bearer {UPSTREAM_KEY}"]


def test_passthrough_keeps_content_encoding(gw: Process) -> None:
    data = gzip.compress(b"opaque, not even JSON")
    seen = echoed(post(gw, "/echo/raw", data, **{"content-encoding": "gzip"}))
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert headers_of(seen, "content-encoding") == ["gzip"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_models_route_type_is_501(gw: Process, method: str) -> None:
    response = httpx.request(method, f"http://127.0.0.1:{gw.port}/echo/v1/models",
                             content=BODY if method == "POST" else None, timeout=DEADLINE)
    assert response.status_code == 501
    # agentgateway's own answer, byte for byte; the upstream is never asked.
    assert response.headers["content-type"] == "application/json"
    assert response.content == b"""{"error":"Route 'Models' not implemented"}"""
