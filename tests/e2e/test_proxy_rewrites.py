"""What the upstream receives after the route's rewrites, seen through the mock's
`/echo` (target and headers in wire order), and what the client receives from response-side
policies, redirects and direct responses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    Process,
    RawClient,
    gateway_client,
    http_request,
    ok_json,
    unused_port,
)


def rewrites_config(port: int) -> str:
    ip = f"127.0.0.1:{port}"
    dead = f"127.0.0.1:{unused_port()}"  # redirects and direct responses never call it
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: full
      matches: [{{path: {{pathPrefix: /full}}}}]
      policies:
        urlRewrite:
          path: {{full: /echo/replaced}}
      backends: [{{host: "{ip}"}}]
    - name: prefix
      matches: [{{path: {{pathPrefix: /pre}}}}]
      policies:
        urlRewrite:
          path: {{prefix: /echo/new}}
      backends: [{{host: "{ip}"}}]
    - name: strip
      matches: [{{path: {{pathPrefix: /strip/}}}}]
      policies:
        urlRewrite:
          path: {{prefix: /}}
      backends: [{{host: "{ip}"}}]
    - name: authority-full
      matches: [{{path: {{pathPrefix: /echo/authority-full}}}}]
      policies:
        urlRewrite:
          authority: {{full: "api.example.test:8443"}}
      backends: [{{host: "localhost:{port}"}}]
    - name: authority-host
      matches: [{{path: {{pathPrefix: /echo/authority-host}}}}]
      policies:
        urlRewrite:
          authority: {{host: rewritten.test}}
      backends: [{{host: "{ip}"}}]
    - name: authority-port
      matches: [{{path: {{pathPrefix: /echo/authority-port}}}}]
      policies:
        urlRewrite:
          authority: {{port: 9999}}
      backends: [{{host: "{ip}"}}]
    - name: auto-hostname
      matches: [{{path: {{pathPrefix: /echo/auto}}}}]
      backends: [{{host: "localhost:{port}"}}]
    - name: request-headers
      matches: [{{path: {{pathPrefix: /echo/request-headers}}}}]
      policies:
        requestHeaderModifier:
          add: {{x-added: from-gateway}}
          set: {{x-set: from-gateway}}
          remove: [x-remove]
      backends: [{{host: "{ip}"}}]
    - name: response-headers
      matches: [{{path: {{pathPrefix: /echo/response-headers}}}}]
      policies:
        responseHeaderModifier:
          add: {{x-added: from-gateway}}
          set: {{content-type: text/x-replaced}}
      backends: [{{host: "{ip}"}}]
    - name: response-remove
      matches: [{{path: {{pathPrefix: /echo/response-remove}}}}]
      policies:
        responseHeaderModifier:
          remove: [content-type]
      backends: [{{host: "{ip}"}}]
    - name: redirect-https
      matches: [{{path: {{pathPrefix: /redir}}}}]
      policies:
        requestRedirect:
          scheme: https
          authority: {{host: secure.example.test}}
      backends: [{{host: "{dead}"}}]
    - name: redirect-prefix
      matches: [{{path: {{pathPrefix: /old}}}}]
      policies:
        requestRedirect:
          path: {{prefix: /new}}
          status: 301
      backends: [{{host: "{dead}"}}]
    - name: redirect-host-keeps-port
      matches: [{{path: {{pathPrefix: /keepport}}}}]
      policies:
        requestRedirect:
          authority: {{host: other.test}}
      backends: [{{host: "{dead}"}}]
    - name: redirect-full-authority
      matches: [{{path: {{pathPrefix: /moved}}}}]
      policies:
        requestRedirect:
          authority: {{full: "elsewhere.test:8080"}}
          path: {{full: /landing}}
      backends: [{{host: "{dead}"}}]
    - name: direct
      matches: [{{path: {{exact: /teapot}}}}]
      policies:
        directResponse:
          status: 418
          body: "short and stout"
      backends: [{{host: "{dead}"}}]
    - name: echo
      backends: [{{host: "{ip}"}}]
"""


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, plain_upstream: Process) -> Process:
    return module_gateway(rewrites_config(plain_upstream.port))


@pytest.fixture(scope="module")
def client(gw: Process) -> Iterator[httpx.Client]:
    with gateway_client(gw.port, follow_redirects=False) as c:
        yield c


def seen(response: httpx.Response) -> dict[str, Any]:
    """The request as the mock upstream received it."""
    return ok_json(response)


def header_values(doc: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in doc["headers"] if key.lower() == name]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/full/a/b?x=1&y=2", "/echo/replaced?x=1&y=2"),  # full keeps the query
        ("/full", "/echo/replaced"),
        ("/pre/a/b?q=1", "/echo/new/a/b?q=1"),
        ("/pre", "/echo/new"),
        ("/pre/", "/echo/new/"),
        ("/strip/echo/x?z=9", "/echo/x?z=9"),
    ],
)
def test_path_rewrites(client: httpx.Client, target: str, expected: str) -> None:
    assert seen(client.get(target))["target"] == expected


def test_path_is_forwarded_untouched_without_rewrite(client: httpx.Client) -> None:
    doc = seen(client.get("/echo/plain/%7Euser/a%20b?k=v&k=w&empty="))
    assert doc["target"] == "/echo/plain/%7Euser/a%20b?k=v&k=w&empty="
    assert doc["method"] == "GET"
    assert doc["http_version"] == "HTTP/1.1"


def test_authority_full(client: httpx.Client) -> None:
    # An explicit authority also turns auto-hostname off (the backend is `localhost:PORT`).
    assert header_values(seen(client.get("/echo/authority-full")), "host") == [
        "api.example.test:8443"
    ]


def test_authority_host(client: httpx.Client) -> None:
    # agentgateway's rewrite_host (crates/agentgateway/src/http/filters.rs): for a URL rewrite
    # `host` replaces the whole authority, like Gateway API's URLRewrite.hostname; the client's
    # port is not carried over to another host.
    doc = seen(client.get("/echo/authority-host", headers={"host": "client.test:8080"}))
    assert header_values(doc, "host") == ["rewritten.test"]


def test_authority_port(client: httpx.Client) -> None:
    doc = seen(client.get("/echo/authority-port", headers={"host": "client.test:8080"}))
    assert header_values(doc, "host") == ["client.test:9999"]


def test_auto_hostname_for_a_named_backend(client: httpx.Client, plain_upstream: Process) -> None:
    doc = seen(client.get("/echo/auto", headers={"host": "client.test"}))
    assert header_values(doc, "host") == [f"localhost:{plain_upstream.port}"]


def test_ip_backend_keeps_the_client_host(client: httpx.Client) -> None:
    doc = seen(client.get("/echo/ip", headers={"host": "client.test:1234"}))
    assert header_values(doc, "host") == ["client.test:1234"]


def test_request_header_modifier(client: httpx.Client) -> None:
    doc = seen(
        client.get(
            "/echo/request-headers",
            headers=[
                ("x-added", "from-client"),
                ("X-Set", "from-client"),
                ("x-set", "again-from-client"),
                ("X-Remove", "secret"),
                ("x-keep", "kept"),
            ],
        )
    )
    assert sorted(header_values(doc, "x-added")) == ["from-client", "from-gateway"]
    assert header_values(doc, "x-set") == ["from-gateway"]
    assert header_values(doc, "x-remove") == []
    assert header_values(doc, "x-keep") == ["kept"]


def test_response_header_modifier(client: httpx.Client) -> None:
    response = client.get("/echo/response-headers")
    assert response.status_code == 200
    assert response.headers.get_list("content-type") == ["text/x-replaced"]
    assert response.headers.get_list("x-added") == ["from-gateway"]
    assert response.json()["target"] == "/echo/response-headers"  # body untouched
    removed = client.get("/echo/response-remove")
    assert removed.status_code == 200
    assert "content-type" not in removed.headers
    assert removed.json()["target"] == "/echo/response-remove"


def test_hop_by_hop_headers_are_not_forwarded(gw: Process) -> None:
    with RawClient(gw.port) as raw:
        response = raw.request(
            http_request(
                "GET",
                "/echo/hop",
                headers=[
                    ("Connection", "keep-alive, X-Foo"),
                    ("Keep-Alive", "timeout=5"),
                    ("TE", "trailers"),
                    ("Upgrade", "websocket"),
                    ("Proxy-Connection", "keep-alive"),
                    ("X-Foo", "connection-scoped"),
                    ("X-Bar", "end-to-end"),
                ],
            )
        )
        assert response.status == 200, response.raw
        names = {name.lower() for name, _ in json.loads(response.body)["headers"]}
        for hop in ("connection", "keep-alive", "te", "upgrade", "proxy-connection", "x-foo"):
            assert hop not in names, f"{hop} was forwarded: {sorted(names)}"
        assert "x-bar" in names
        # Still one keep-alive connection: the next request is answered on it.
        follow_up = raw.request(http_request("GET", "/echo/after"))
        assert follow_up.status == 200
        assert b'"/echo/after"' in follow_up.body


def test_redirect_with_scheme_and_host(client: httpx.Client) -> None:
    response = client.get("/redir/x?q=1")
    assert response.status_code == 302  # the default status
    # A scheme change drops the old port (filters.rs rewrite_host with an explicit scheme).
    assert response.headers["location"] == "https://secure.example.test/redir/x?q=1"
    assert response.content == b""


def test_redirect_host_without_scheme_keeps_the_port(client: httpx.Client) -> None:
    response = client.get("/keepport/x", headers={"host": "client.test:8080"})
    assert response.status_code == 302
    assert response.headers["location"] == "http://other.test:8080/keepport/x"


def test_redirect_prefix_and_status(client: httpx.Client, gw: Process) -> None:
    response = client.get("/old/a/b?x=1")
    assert response.status_code == 301
    assert response.headers["location"] == f"http://127.0.0.1:{gw.port}/new/a/b?x=1"


def test_redirect_full_authority_and_path(client: httpx.Client) -> None:
    response = client.get("/moved/anything?keep=yes")
    assert response.status_code == 302
    assert response.headers["location"] == "http://elsewhere.test:8080/landing?keep=yes"


def test_direct_response(client: httpx.Client) -> None:
    response = client.get("/teapot")
    assert response.status_code == 418
    assert response.content == b"short and stout"
    assert response.headers["content-length"] == str(len(b"short and stout"))
    # The keep-alive connection carries on.
    assert seen(client.get("/echo/after-direct"))["target"] == "/echo/after-direct"
