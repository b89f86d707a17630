"""The access log of LLM requests: one line per request on stdout, agentgateway's field names,
and never a secret (the provider key from the environment, the client's Authorization)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    UPSTREAM_KEY,
    Certs,
    GatewayFactory,
    Process,
    access_log_lines,
    ai_route,
    llm_config,
    poll,
)

CLIENT_SECRET = "sk-client-own-key-93b1"
MESSAGES = [{"role": "user", "content": "How many tokens is this?"}]


def send_mix(port: int) -> list[tuple[str, int]]:
    """A completion, a stream and an invalid-JSON 400; returns the (path, status) of each."""
    auth = {"authorization": f"Bearer {CLIENT_SECRET}", "x-api-key": CLIENT_SECRET}
    base = f"http://127.0.0.1:{port}"
    sent = []
    with httpx.Client(headers=auth, timeout=DEADLINE) as client:
        response = client.post(f"{base}/v1/chat/completions?debug=1",
                               json={"model": "gpt-4o", "messages": MESSAGES,
                                     "temperature": 0.5, "max_tokens": 64})
        assert response.status_code == 200
        sent.append(("/v1/chat/completions", 200))
        response = client.post(f"{base}/v1/chat/completions",
                               json={"model": "gpt-4o", "messages": MESSAGES, "stream": True})
        assert response.status_code == 200
        assert response.content.endswith(b"data: [DONE]\n\n")
        sent.append(("/v1/chat/completions", 200))
        response = client.post(f"{base}/v1/chat/completions", content=b"{broken")
        assert response.status_code == 400
        sent.append(("/v1/chat/completions", 400))
    return sent


@pytest.fixture
def gw(gateway: GatewayFactory, tls_upstream: Process, certs: Certs) -> Process:
    return gateway(
        llm_config(ai_route(tls_upstream.port, ca_path=certs.ca_path)),
        env={"UPSTREAM_KEY": UPSTREAM_KEY},
    )


def test_one_line_per_request_with_gen_ai_fields(gw: Process) -> None:
    sent = send_mix(gw.port)
    lines = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= len(sent),
                 what=f"{len(sent)} access log lines")
    assert len(lines) == len(sent), lines
    for line, (path, status) in zip(lines, sent, strict=True):
        assert line["http.method"] == "POST"
        assert line["http.path"].split("?")[0] == path
        assert line["http.status"] == str(status)
        assert "duration" in line
    completion, stream, bad = lines
    for line in (completion, stream):
        assert line["protocol"] == "llm"
        assert line["gen_ai.provider.name"] == "openai"
        assert line["gen_ai.request.model"] == "command"
        assert line["gen_ai.response.model"] == "command"
        assert int(line["gen_ai.usage.input_tokens"]) == len(MESSAGES[0]["content"]) // 4 + 1
        assert line["gen_ai.usage.output_tokens"] == "5"
    assert completion["gen_ai.request.temperature"] == "0.5"
    assert completion["gen_ai.request.max_tokens"] == "64"
    # agentgateway logs these times in seconds, and time per token only for streams.
    ttft = float(stream["agw.ai.time_to_first_token"])
    assert 0 < ttft * 1000 < int(stream["duration"].removesuffix("ms")) + 1
    assert float(stream["agw.ai.time_per_output_token"]) >= 0
    assert "agw.ai.time_to_first_token" not in completion
    assert "invalid JSON" in bad.get("error", ""), bad
    assert bad["reason"] == "InvalidRequest"
    assert "reason" not in completion  # the upstream answered
    for line in lines:
        assert line["gateway"] == "default/default"
        assert line["listener"] == "listener0"
        assert line["route"] == "default/route0"
        assert line["src.addr"].startswith("127.0.0.1:")
        assert line["http.version"] == "HTTP/1.1"
        assert line["protocol"] == "llm"
        assert "route_rule" not in line  # agentgateway's binds form never sets one


def test_no_secret_in_output(gw: Process) -> None:
    sent = send_mix(gw.port)
    poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= len(sent),
         what=f"{len(sent)} access log lines")
    assert gw.stop() == 0
    output = gw.output()
    assert UPSTREAM_KEY not in output
    assert CLIENT_SECRET not in output
    assert "Bearer" not in output


def test_json_access_log(gateway: GatewayFactory, tls_upstream: Process, certs: Certs) -> None:
    gw = gateway(
        llm_config(ai_route(tls_upstream.port, ca_path=certs.ca_path), log_format="json"),
        env={"UPSTREAM_KEY": UPSTREAM_KEY},
    )
    sent = send_mix(gw.port)

    def records() -> list[dict[str, object]]:
        found = []
        for text in gw.output().splitlines():
            if text.startswith("{"):
                found.append(json.loads(text))  # every JSON line must parse
        return found

    lines = poll(records, lambda found: len(found) >= len(sent), what="JSON access log lines")
    assert len(lines) == len(sent), lines
    for line, (path, status) in zip(lines, sent, strict=True):
        assert line["http.method"] == "POST"
        assert str(line["http.path"]).split("?")[0] == path
        assert line["http.status"] == status
    assert lines[0]["gen_ai.request.model"] == "command"
    assert lines[0]["gen_ai.usage.output_tokens"] == 5
    assert lines[0]["route"] == "default/route0" and lines[0]["http.version"] == "HTTP/1.1"
    assert isinstance(lines[1]["agw.ai.time_to_first_token"], float)
    assert lines[2]["reason"] == "InvalidRequest" and lines[2]["http.status"] == 400
    assert gw.stop() == 0
    output = gw.output()
    assert UPSTREAM_KEY not in output
    assert CLIENT_SECRET not in output


def test_logged_host_and_path_are_the_clients(
    gateway: GatewayFactory, tls_upstream: Process, certs: Certs
) -> None:
    """agentgateway records `http.host` and `http.path` from the request as it arrived, before
    urlRewrite and the provider's path handling (`proxy_internal` in httpproxy.rs)."""
    gw = gateway(
        llm_config(ai_route(tls_upstream.port, ca_path=certs.ca_path,
                            rewrite_path="/compatibility/v1/chat/completions")),
        env={"UPSTREAM_KEY": UPSTREAM_KEY},
    )
    response = httpx.post(f"http://127.0.0.1:{gw.port}/v1/chat/completions?debug=1",
                          json={"model": "m", "messages": MESSAGES},
                          headers={"host": "gateway.test"}, timeout=DEADLINE)
    assert response.status_code == 200
    (line,) = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 1,
                   what="the access log line")
    assert line["http.path"].split("?")[0] == "/v1/chat/completions"
    assert line["http.host"] == "gateway.test"
    assert line["endpoint"] == f"localhost:{tls_upstream.port}"
