"""The seed configuration (urlRewrite + backendTLS + backendAuth) against a TLS upstream."""

from __future__ import annotations

import json

import httpx

from tests.e2e.conftest import QUIET, Certs, GatewayFactory, Process


def seed_config(upstream_port: int, ca_path: str, ai: bool) -> str:
    backend = (
        f"""      - ai:
          name: cohere
          hostOverride: localhost:{upstream_port}
          provider:
            openAI:
              model: command"""
        if ai
        else f"""      - host: localhost:{upstream_port}"""
    )
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - policies:
        urlRewrite:
          authority:
            full: api.example.test
          path:
            full: "/echo/compatibility/v1/chat/completions"
        backendTLS:
          root: {ca_path}
        backendAuth:
          key: $UPSTREAM_KEY
      backends:
{backend}
"""


def test_seed_shape_plain_host_backend(
    gateway: GatewayFactory, tls_upstream: Process, certs: Certs
) -> None:
    gw = gateway(
        seed_config(tls_upstream.port, str(certs.ca_path), ai=False),
        env={"UPSTREAM_KEY": "sk-upstream-secret"},
    )
    response = httpx.post(
        f"http://127.0.0.1:{gw.port}/anything?x=1",
        json={"model": "foo", "messages": []},
        headers={"authorization": "Bearer client-key"},
    )
    assert response.status_code == 200
    seen = response.json()
    assert seen["target"] == "/echo/compatibility/v1/chat/completions?x=1"
    headers = dict(seen["headers"])
    assert headers["host"] == "api.example.test"
    assert headers["authorization"] == "Bearer sk-upstream-secret"
    assert "client-key" not in json.dumps(seen)
    assert "sk-upstream-secret" not in gw.output()
