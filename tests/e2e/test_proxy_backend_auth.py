"""`backendAuth`: the gateway's credential replaces the client's Authorization;
without it the client's header passes unchanged; secrets never reach the gateway's output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import QUIET, GatewayFactory, Process, gateway_client, ok_json, unused_port

ENV_SECRET = "sk-env-secret-6f1d2a"
FILE_SECRET = "sk-file-secret-93be07"
CLIENT_SECRET = "client-secret-key-c0ffee"


def auth_config(port: int, key_file: Path, *, refused_port: int | None = None) -> str:
    refused = ""
    if refused_port is not None:
        refused = f"""    - name: refused
      matches: [{{path: {{pathPrefix: /refused}}}}]
      policies:
        backendAuth:
          key: $UPSTREAM_KEY
      backends: [{{host: "127.0.0.1:{refused_port}"}}]
"""
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: env-key
      matches: [{{path: {{pathPrefix: /echo/env}}}}]
      policies:
        backendAuth:
          key: $UPSTREAM_KEY
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: file-key
      matches: [{{path: {{pathPrefix: /echo/file}}}}]
      policies:
        backendAuth:
          key: {{file: "{key_file}"}}
      backends: [{{host: "127.0.0.1:{port}"}}]
    - name: backend-level-key
      matches: [{{path: {{pathPrefix: /echo/backend-level}}}}]
      backends:
      - host: "127.0.0.1:{port}"
        policies:
          backendAuth:
            key: $UPSTREAM_KEY
{refused}    - name: no-auth
      backends: [{{host: "127.0.0.1:{port}"}}]
"""


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "upstream.key"
    path.write_text(f"  {FILE_SECRET}\n")  # surrounding whitespace is trimmed
    return path


@pytest.fixture(scope="module")
def client(
    module_gateway: GatewayFactory, plain_upstream: Process, key_file: Path
) -> Iterator[httpx.Client]:
    gw = module_gateway(
        auth_config(plain_upstream.port, key_file), env={"UPSTREAM_KEY": ENV_SECRET}
    )
    with gateway_client(gw.port) as c:
        yield c


def authorization_seen(response: httpx.Response) -> list[str]:
    doc = ok_json(response)
    return [value for name, value in doc["headers"] if name.lower() == "authorization"]


def test_key_from_env_replaces_client_authorization(client: httpx.Client) -> None:
    response = client.get("/echo/env", headers={"authorization": f"Bearer {CLIENT_SECRET}"})
    assert authorization_seen(response) == [f"Bearer {ENV_SECRET}"]
    assert CLIENT_SECRET not in response.text


def test_key_replaces_every_client_authorization_spelling(client: httpx.Client) -> None:
    response = client.get(
        "/echo/env",
        headers=[("AUTHORIZATION", f"Bearer {CLIENT_SECRET}"), ("authorization", "Basic eA==")],
    )
    assert authorization_seen(response) == [f"Bearer {ENV_SECRET}"]


def test_key_is_added_when_the_client_sends_none(client: httpx.Client) -> None:
    assert authorization_seen(client.get("/echo/env")) == [f"Bearer {ENV_SECRET}"]


def test_key_from_file(client: httpx.Client) -> None:
    response = client.post(
        "/echo/file", content=b"{}", headers={"authorization": f"Bearer {CLIENT_SECRET}"}
    )
    assert authorization_seen(response) == [f"Bearer {FILE_SECRET}"]


def test_key_on_the_backend(client: httpx.Client) -> None:
    response = client.get(
        "/echo/backend-level", headers={"authorization": f"Bearer {CLIENT_SECRET}"}
    )
    assert authorization_seen(response) == [f"Bearer {ENV_SECRET}"]


def test_without_backend_auth_the_client_header_passes_unchanged(client: httpx.Client) -> None:
    response = client.get("/echo/none", headers={"authorization": f"Bearer {CLIENT_SECRET}"})
    assert authorization_seen(response) == [f"Bearer {CLIENT_SECRET}"]
    assert authorization_seen(client.get("/echo/none")) == []


def test_secrets_never_reach_the_log(
    gateway: GatewayFactory, plain_upstream: Process, key_file: Path
) -> None:
    config = auth_config(plain_upstream.port, key_file, refused_port=unused_port())
    # Debug level: the most the gateway ever logs.
    config = config.replace("  readinessAddr: \"off\"\n", "  readinessAddr: \"off\"\n"
                            "  logging:\n    level: debug\n", 1)
    gw = gateway(config, env={"UPSTREAM_KEY": ENV_SECRET})
    headers = {"authorization": f"Bearer {CLIENT_SECRET}"}
    with gateway_client(gw.port) as c:
        assert c.get("/echo/env", headers=headers).status_code == 200
        assert c.get("/echo/file", headers=headers).status_code == 200
        assert c.get("/echo/none", headers=headers).status_code == 200
        failed = c.get("/refused", headers=headers)
        assert failed.status_code == 503
        assert failed.text.startswith("upstream call failed: ")
    assert gw.stop() == 0  # flushes the access log
    output = gw.output()
    assert "route=default/env-key" in output, output[-2000:]
    for secret in (ENV_SECRET, FILE_SECRET, CLIENT_SECRET):
        assert secret not in output, f"{secret} leaked into the log:\n{output[-3000:]}"
