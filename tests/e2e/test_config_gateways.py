"""The gateways form end to end: two named gateways (one with two listeners), top-level routes
attached by gateway and by listener, a named backend, and the `llm:` block attached to one
listener, served through the CLI; the request metrics name the listener and route as
agentgateway does for this form (listener `<gateway>` or `<gateway>/<listener>`, unnamed
routes numbered per listener, gateway `default/default`, a named backend `/<name>`)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    RawClient,
    Sample,
    Upstream,
    http_request,
    metric_total,
    poll,
    scrape_metrics,
    start_mock,
    unused_port,
    wait_until,
)

REQUESTS = "agentgateway_requests_total"
KEY = "sk-gateway-held-key"


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("gateways-mock"), name="gateways-mock")
    yield process
    process.stop()


def gateways_config(api_port: int, web_port: int, upstream: int, mock_port: int) -> str:
    return f"""config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
gateways:
  api:
    port: {api_port}
  web:
    port: {web_port}
    listeners:
    - name: a
      hostname: a.test
    - hostname: b.test
backends:
- name: echo
  host: 127.0.0.1:{upstream}
routes:
- name: chat
  gateways: [api, web/a]
  matches: [{{path: {{pathPrefix: /chat}}}}]
  backends: [{{backend: echo}}]
- gateways: web
  matches: [{{path: {{pathPrefix: /hello}}}}]
  policies:
    directResponse: {{status: 200, body: hello}}
llm:
  gateways: web/listener1
  models:
  - name: smart
    provider: openAI
    params: {{model: gpt-mock-smart, apiKey: {KEY}, baseUrl: "http://127.0.0.1:{mock_port}/v1"}}
"""


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def one(samples: list[Sample], **labels: str) -> Sample:
    found = [
        s for s in samples
        if s.name == REQUESTS and all(s.labels.get(k) == v for k, v in labels.items())
    ]  # fmt: skip
    assert len(found) == 1, (labels, found)
    return found[0]


def test_gateways_routes_named_backend_and_attached_llm(
    gateway: GatewayFactory, mock: Process
) -> None:
    api_port, web_port = unused_port(), unused_port()
    with Upstream() as upstream:
        gw = gateway(
            gateways_config(api_port, web_port, upstream.port, mock.port), expect_stats=True
        )
        assert gw.port == api_port  # the gateways' binds open in file order
        wait_until(lambda: accepting(web_port), what="the web gateway's port")
        chat = json.dumps(
            {"model": "smart", "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        sent = [
            # port, method, target, host, body, status
            (api_port, "POST", "/chat/x", "api.test", b"ping", 200),
            (web_port, "GET", "/chat/y", "a.test", b"", 200),
            (web_port, "GET", "/hello", "a.test", b"", 200),
            (web_port, "GET", "/hello", "b.test", b"", 200),
            (web_port, "POST", "/v1/chat/completions", "b.test", chat, 200),
            (web_port, "GET", "/chat/z", "c.test", b"", 404),  # no listener for the host
        ]
        answers = []
        for port, method, target, host, body, status in sent:
            with RawClient(port) as client:
                headers = [("content-type", "application/json")] if body == chat else []
                response = client.request(
                    http_request(method, target, host=host, body=body, headers=headers)
                )
                assert response.status == status, (target, host, response.raw[:300])
                answers.append(response)
        assert [r.target for r in upstream.requests] == ["/chat/x", "/chat/y"]
        assert answers[2].body == answers[3].body == b"hello"
        completion = json.loads(answers[4].body)
        assert completion["model"] == "gpt-mock-smart"
        total = len(sent)
        samples = poll(
            lambda: scrape_metrics(gw.extra_ports["stats"]),
            lambda s: metric_total(s, REQUESTS) >= total,
            what=f"{total} requests",
        )

    api = {"bind": f"bind/{api_port}", "gateway": "default/default"}
    web = {"bind": f"bind/{web_port}", "gateway": "default/default"}
    assert one(samples, **api, listener="api", route="default/chat", backend="/echo").value == 1
    assert one(samples, **web, listener="web/a", route="default/chat", backend="/echo").value == 1
    # Unnamed, attached to both listeners of `web`: route1 after `chat` on web/a, route0 alone
    # on web/listener1 (numbered per listener, as agentgateway numbers them).
    assert one(samples, **web, listener="web/a", route="default/route1").value == 1
    assert one(samples, **web, listener="web/listener1", route="default/route0").value == 1
    llm = one(samples, **web, listener="web/listener1", route="internal/llm:request")
    assert llm.labels["status"] == "200"
    unmatched = one(samples, status="404")
    assert unmatched.labels["bind"] == f"bind/{web_port}"
    assert unmatched.labels["listener"] == unmatched.labels["route"] == "unknown"


def test_a_route_without_gateways_attaches_to_default(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        gw = gateway(
            f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
gateways:
  default:
    port: 0
routes:
- backends: [{{host: "127.0.0.1:{upstream.port}"}}]
"""
        )
        with RawClient(gw.port) as client:
            assert client.request(http_request("GET", "/anything")).status == 200
        assert [r.target for r in upstream.requests] == ["/anything"]


def test_a_bad_gateway_reference_names_the_field(gateway: GatewayFactory) -> None:
    with pytest.raises(AssertionError) as info:
        gateway("gateways:\n  g:\n    port: 0\nroutes:\n- gateways: h\n")
    assert "routes[0].gateways: unknown gateway reference h" in str(info.value)
    assert "Traceback" not in str(info.value)
