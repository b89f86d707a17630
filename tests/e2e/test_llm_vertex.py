"""The `vertex` provider end to end, offline: a service-account key whose `token_uri` is a
local token endpoint (set through GOOGLE_APPLICATION_CREDENTIALS, as Application Default
Credentials are found in production), the mock LLM or a recording upstream as Vertex AI
(`params.baseUrl`), and the `openai`/`anthropic` SDKs as clients. What reaches "Google": the
bearer token the worker fetched, Vertex's paths per model, its request bodies."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawMessage,
    Upstream,
    UpstreamConnection,
    access_log_lines,
    gateway_client,
    http_response,
    poll,
    start_mock,
    unused_port,
)

PROJECT = "test-project"
REGION = "us-central1"
BASE = f"/v1/projects/{PROJECT}/locations/{REGION}"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class TokenEndpoint:
    """Google's OAuth token endpoint, locally: each JWT-bearer grant gets a new token
    (`ya29.test-1`, `ya29.test-2`, ...) valid `lifetime` seconds."""

    def __init__(self, lifetime: int = 3600) -> None:
        self.lifetime = lifetime
        self.issued = 0
        self.grants: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()
        self.upstream = Upstream(self.serve)

    def serve(self, conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            form = urllib.parse.parse_qs(request.body.decode())
            with self.lock:
                self.grants.append(form)
                self.issued += 1
                token = f"ya29.test-{self.issued}"
            doc = {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}
            conn.send(http_response(200, json.dumps(doc).encode(),
                                    [("Content-Type", "application/json")]))  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.upstream.port}/token"

    def close(self) -> None:
        self.upstream.close()


def service_account(path: Path, token_uri: str) -> Path:
    """A service-account key file (a real RSA key: google-auth signs its JWT grant)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "k1",
        "private_key": pem, "client_email": f"gw@{PROJECT}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri,
    }))  # fmt: skip
    return path


def _env(credentials: Path | None) -> dict[str, str]:
    env = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}
    if credentials is not None:
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
    return env


def _config(base_url: str, models: str = "", port_line: str = "  port: 0\n") -> str:
    params = f'{{vertexProject: {PROJECT}, vertexRegion: {REGION}, baseUrl: "{base_url}"}}'
    return f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
llm:
{port_line}  models:
  - name: gemini-*
    provider: vertex
    params: {params}
  - name: claude-*
    provider: vertex
    params: {params}
  - name: meta/*
    provider: vertex
    params: {params}
{models}"""


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("vertex-mock"), name="vertex-mock")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gw(
    module_gateway: GatewayFactory,
    mock: Process,
    tokens: TokenEndpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> Process:
    key = service_account(tmp_path_factory.mktemp("adc") / "sa.json", tokens.url)
    return module_gateway(_config(f"http://127.0.0.1:{mock.port}"), env=_env(key))


def _openai(port: int) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="client-key", max_retries=0,
        timeout=DEADLINE * 2,
    )


def _wait_for_token(port: int, model: str = "gemini-2.5-flash") -> None:
    """The worker fetches its first token as it starts: until then requests get a 503."""
    with gateway_client(port) as client:
        poll(
            lambda: client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            ).status_code,
            lambda status: status != 503,
            what="the first Google access token",
        )


def test_openai_sdk_through_vertex_gemini_claude_and_openai_compatible(
    gw: Process, mock: Process, tokens: TokenEndpoint
) -> None:
    _wait_for_token(gw.port)
    with gateway_client(mock.port) as direct:
        direct.post("/mock/reset")
    with _openai(gw.port) as client:
        for model in ("gemini-2.5-flash", "claude-sonnet-4-5-20250929", "meta/llama-3.3-70b"):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=50
            )
            assert reply.choices[0].message.content, model
            assert reply.usage is not None and reply.usage.prompt_tokens > 0, model
            chunks = list(client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Say hello"}],
                max_tokens=50, stream=True,
            ))  # fmt: skip
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert text, model
    with gateway_client(mock.port) as direct:
        by_path = direct.get("/mock/stats").json()["by_path"]
    assert by_path == {
        f"{BASE}/publishers/google/models/gemini-2.5-flash:generateContent": 1,
        f"{BASE}/publishers/google/models/gemini-2.5-flash:streamGenerateContent": 1,
        f"{BASE}/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict": 1,
        f"{BASE}/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict": 1,
        f"{BASE}/endpoints/openapi/chat/completions": 2,
    }
    # One worker, one token for the whole run so far (valid an hour).
    assert tokens.issued == 1
    assert tokens.grants[0]["grant_type"] == [JWT_GRANT]


def test_anthropic_sdk_through_vertex_claude(gw: Process) -> None:
    _wait_for_token(gw.port)
    with anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{gw.port}", api_key="client-key", max_retries=0,
        timeout=DEADLINE * 2,
    ) as client:
        message = client.messages.create(
            model="claude-haiku-4-5", max_tokens=50,
            messages=[{"role": "user", "content": "Say hello"}],
        )  # fmt: skip
        assert message.content[0].type == "text" and message.content[0].text
        assert message.model == "claude-haiku-4-5"  # the mock echoes the path's model
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=50,
            messages=[{"role": "user", "content": "Say hello"}],
        ) as stream:  # fmt: skip
            assert "".join(stream.text_stream)
        count = client.messages.count_tokens(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "Say hello"}]
        )
        assert count.input_tokens > 0


def test_mock_answers_vertex_anthropic_paths(mock: Process) -> None:
    # The mock as Vertex AI serves Claude: the model in the path, the version in the body, an
    # OAuth bearer token required.
    base = "/v1/projects/p/locations/global/publishers/anthropic/models/"
    bearer = {"authorization": "Bearer ya29.token"}
    messages = [{"role": "user", "content": "Say hello"}]
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 50, "messages": messages}
    with gateway_client(mock.port) as client:
        response = client.post(base + "claude-opus-4-1@20250805:rawPredict", headers=bearer,
                               json=body)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "claude-opus-4-1@20250805"
        stream = client.post(base + "claude-opus-4-1:streamRawPredict", headers=bearer,
                             json={**body, "stream": True})
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.text.startswith("event: message_start")
        assert "event: message_stop" in stream.text
        count = client.post(base + "count-tokens:rawPredict", headers=bearer,
                            json={**body, "model": "claude-opus-4-1"})
        assert count.status_code == 200 and count.json()["input_tokens"] > 0
        assert client.post(base + "claude-opus-4-1:rawPredict", json=body).status_code == 401
        no_version = client.post(base + "claude-opus-4-1:rawPredict", headers=bearer,
                                 json={"max_tokens": 50, "messages": messages})
        assert no_version.status_code == 400 and no_version.json()["type"] == "error"


# ---------------------------------------------------------------- what Vertex is sent

GEMINI_REPLY = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]},
                    "finishReason": "STOP", "index": 0}],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
    "modelVersion": "gemini-2.5-flash",
}  # fmt: skip
CLAUDE_REPLY = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
    "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 1},
}  # fmt: skip
OPENAI_REPLY = {
    "id": "c1", "object": "chat.completion", "created": 1, "model": "x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}  # fmt: skip


def serve_vertex(conn: UpstreamConnection) -> None:
    """A recording Vertex AI: a fixed answer in the API the path names."""
    while (request := conn.read_request()) is not None:
        if ":generateContent" in request.target:
            doc: dict[str, Any] = GEMINI_REPLY
        elif ":rawPredict" in request.target:
            doc = CLAUDE_REPLY
        else:
            doc = OPENAI_REPLY
        conn.send(http_response(200, json.dumps(doc).encode(),
                                [("Content-Type", "application/json")]))  # fmt: skip


@pytest.fixture(scope="module")
def vertex() -> Iterator[Upstream]:
    with Upstream(serve_vertex) as upstream:
        yield upstream


def _last(upstream: Upstream) -> RawMessage:
    with upstream.lock:
        return upstream.requests[-1]


def test_vertex_gets_the_bearer_token_and_its_own_bodies(
    gateway: GatewayFactory, vertex: Upstream, tmp_path: Path
) -> None:
    endpoint = TokenEndpoint()
    try:
        key = service_account(tmp_path / "sa.json", endpoint.url)
        gw = gateway(_config(f"http://127.0.0.1:{vertex.port}"), env=_env(key))
        _wait_for_token(gw.port)
        with gateway_client(gw.port) as client:
            chat = {"messages": [{"role": "user", "content": "hi"}]}
            headers = {"authorization": "Bearer client-key", "x-goog-api-key": "client"}
            reply = client.post("/v1/chat/completions", headers=headers,
                                json={**chat, "model": "claude-sonnet-4-5-20250929"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "hi"
            sent = _last(vertex)
            assert sent.target == (
                f"{BASE}/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
            )
            # The worker's token replaces the client's credentials.
            assert sent.header_values("authorization") == ["Bearer ya29.test-1"]
            assert sent.header_values("x-goog-api-key") == []
            body = json.loads(sent.body)
            assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
            assert sent.header("anthropic-version") is None  # in the body on Vertex

            reply = client.post("/v1/chat/completions", headers=headers,
                                json={**chat, "model": "gemini-2.5-flash"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["usage"]["total_tokens"] == 4
            sent = _last(vertex)
            assert sent.target == (
                f"{BASE}/publishers/google/models/gemini-2.5-flash:generateContent"
            )
            assert sent.header_values("authorization") == ["Bearer ya29.test-1"]
            assert "contents" in json.loads(sent.body)
    finally:
        endpoint.close()


def test_token_is_refreshed_before_it_expires(
    gateway: GatewayFactory, vertex: Upstream, tmp_path: Path
) -> None:
    # A 4 s token is refetched halfway through its life, off the request path.
    endpoint = TokenEndpoint(lifetime=4)
    try:
        key = service_account(tmp_path / "sa.json", endpoint.url)
        gw = gateway(_config(f"http://127.0.0.1:{vertex.port}"), env=_env(key))
        _wait_for_token(gw.port)
        first = _last(vertex).header("authorization")
        assert first is not None and first.startswith("Bearer ya29.test-")
        chat = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}

        def sent_token() -> str | None:
            with gateway_client(gw.port) as client:
                assert client.post("/v1/chat/completions", json=chat).status_code == 200
            return _last(vertex).header("authorization")

        # Requests go on meanwhile; each carries whichever token is current.
        token = poll(sent_token, lambda t: t != first, what="a refreshed token")
        assert token is not None and token.startswith("Bearer ya29.test-")
        assert endpoint.issued >= 2
    finally:
        endpoint.close()


def test_no_token_is_a_503_and_logged(gateway: GatewayFactory, tmp_path: Path) -> None:
    # The token endpoint refuses connections: no token is ever installed.
    key = service_account(tmp_path / "sa.json", f"http://127.0.0.1:{unused_port()}/token")
    upstream_port = unused_port()
    gw = gateway(_config(f"http://127.0.0.1:{upstream_port}"), env=_env(key))
    with gateway_client(gw.port) as client:
        reply = client.post("/v1/chat/completions", json={
            "model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 503
    assert "backend authentication failed: no Google access token yet" in reply.text
    poll(gw.output, lambda out: "vertex: cannot get a Google access token" in out,
         what="the refresher's warning")  # fmt: skip
    line = poll(lambda: access_log_lines(gw.output()), lambda lines: lines,
                what="the access log line")[-1]  # fmt: skip
    assert line["http.status"] == "503"
    assert "no Google access token" in line["error"]


def test_api_key_is_sent_instead_of_a_token(gateway: GatewayFactory, vertex: Upstream) -> None:
    # No GOOGLE_APPLICATION_CREDENTIALS: with params.apiKey none is needed.
    config = f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
llm:
  port: 0
  models:
  - name: '*'
    provider: vertex
    params: {{vertexProject: {PROJECT}, apiKey: vertex-key, baseUrl: "http://127.0.0.1:{vertex.port}"}}
"""
    gw = gateway(config, env=_env(None))
    with _openai(gw.port) as client:
        reply = client.chat.completions.create(
            model="gemini-2.5-pro", messages=[{"role": "user", "content": "hi"}]
        )
    assert reply.choices[0].message.content == "hi"
    sent = _last(vertex)
    assert sent.target == (
        f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/gemini-2.5-pro"
        ":generateContent"
    )
    assert sent.header_values("authorization") == ["Bearer vertex-key"]
    assert "Google access token" not in gw.output()  # no refresher runs


def test_binds_form_vertex_provider(
    gateway: GatewayFactory, vertex: Upstream, tmp_path: Path
) -> None:
    endpoint = TokenEndpoint()
    try:
        key = service_account(tmp_path / "sa.json", endpoint.url)
        config = f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
binds:
- port: 0
  listeners:
  - routes:
    - backends:
      - ai:
          name: vertex
          hostOverride: "127.0.0.1:{vertex.port}"
          provider: {{vertex: {{projectId: {PROJECT}, region: europe-west4,
                                model: claude-opus-4-1-20250805}}}}
"""
        gw = gateway(config, env=_env(key))
        with gateway_client(gw.port) as client:
            reply = poll(
                lambda: client.post("/v1/chat/completions", json={
                    "model": "whatever", "messages": [{"role": "user", "content": "hi"}]}),
                lambda r: r.status_code != 503, what="the first token",
            )  # fmt: skip
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "hi"
        sent = _last(vertex)
        assert sent.target == (
            f"/v1/projects/{PROJECT}/locations/europe-west4/publishers/anthropic/models/"
            "claude-opus-4-1@20250805:rawPredict"
        )
        assert sent.header_values("authorization") == ["Bearer ya29.test-1"]
    finally:
        endpoint.close()
