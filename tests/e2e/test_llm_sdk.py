"""The official `openai` SDK through the seed configuration (urlRewrite + backendTLS + backendAuth
+ `ai` backend with hostOverride) to a TLS upstream: what the client gets, what the upstream sees.

One gateway serves three routes, all to TLS upstreams on `localhost`:
  - `/echo/...`   -> the mock's `/echo/compatibility/v1/chat/completions` (request as JSON);
  - `/record/...` -> a recording upstream (keeps the whole body, to compare it field by field);
  - `/limited/...` -> the mock's `/status/429` (an upstream error);
  - `/...`        -> the mock's `/compatibility/v1/chat/completions` (a real completion).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    UPSTREAM_KEY,
    Certs,
    GatewayFactory,
    Process,
    Upstream,
    ai_route,
    llm_config,
    start_mock,
    tls_client_context,
    tls_server_context,
)

CLIENT_KEY = "client-key-should-not-travel"
PROVIDER_PATH = "/compatibility/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello, with a snowman: \u2603"},
]
MOCK_TEXT = "Hello from the mock LLM."


@pytest.fixture(scope="module")
def recorder(certs: Certs) -> Iterator[Upstream]:
    with Upstream(tls=tls_server_context(certs)) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(
    module_gateway: GatewayFactory, tls_upstream: Process, recorder: Upstream, certs: Certs
) -> Process:
    seed = {"ca_path": certs.ca_path}
    return module_gateway(
        llm_config(
            ai_route(tls_upstream.port, match_prefix="/echo",
                     rewrite_path="/echo" + PROVIDER_PATH, **seed),
            ai_route(recorder.port, match_prefix="/record", rewrite_path=PROVIDER_PATH, **seed),
            ai_route(tls_upstream.port, match_prefix="/limited", rewrite_path="/status/429",
                     **seed),
            ai_route(tls_upstream.port, rewrite_path=PROVIDER_PATH, **seed),
        ),
        env={"UPSTREAM_KEY": UPSTREAM_KEY},
    )


def sdk(port: int, prefix: str = "", **client_args: object) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}{prefix}/v1",
        api_key=CLIENT_KEY,
        max_retries=0,
        timeout=DEADLINE * 2,
        **client_args,
    )


def sent_bodies() -> tuple[list[bytes], httpx.Client]:
    """An httpx client for the SDK that records each request body it sends."""
    bodies: list[bytes] = []

    def hook(request: httpx.Request) -> None:
        bodies.append(request.read())

    return bodies, httpx.Client(event_hooks={"request": [hook]}, timeout=DEADLINE * 2)


def header(headers: list[list[str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


# -- 1. non-streaming ---------------------------------------------------------------------------


def test_sdk_completion_parses_with_provider_model(gw: Process) -> None:
    with sdk(gw.port) as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.2
        )
    assert reply.object == "chat.completion"
    assert reply.model == "command"  # the mock answers with the model it was sent
    assert reply.choices[0].message.content == MOCK_TEXT
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


def test_sdk_request_as_seen_by_upstream(gw: Process, recorder: Upstream) -> None:
    """Path + query rewritten, authority set, client key replaced, model overridden, framing
    recomputed for the rewritten body, every other body field as the SDK sent it."""
    bodies, http_client = sent_bodies()
    kwargs: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_tokens": 17,
        "user": "e2e",
        "extra_query": {"q": "1"},
    }
    with sdk(gw.port, "/echo", http_client=http_client) as client:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
    assert raw.http_response.status_code == 200
    seen = raw.http_response.json()
    with sdk(gw.port, "/record", http_client=sent_bodies()[1]) as client:
        recorded = client.chat.completions.with_raw_response.create(**kwargs)
    assert recorded.http_response.status_code == 200

    # What the upstream saw (the mock's /echo).
    assert seen["method"] == "POST"
    assert seen["target"] == "/echo" + PROVIDER_PATH + "?q=1"
    headers = seen["headers"]
    assert header(headers, "host") == ["api.example.test"]
    assert header(headers, "authorization") == [f"Bearer {UPSTREAM_KEY}"]
    assert CLIENT_KEY not in json.dumps(seen)
    assert header(headers, "transfer-encoding") == []
    assert header(headers, "content-encoding") == []
    assert header(headers, "content-length") == [str(seen["body_length"])]

    # The body itself (the recording upstream keeps it whole).
    (sent,) = bodies
    with recorder.lock:
        upstream_request = recorder.requests[-1]
    assert recorded.http_response.json()["target"] == upstream_request.target
    body = upstream_request.body
    assert upstream_request.target == PROVIDER_PATH + "?q=1"
    assert upstream_request.header("content-length") == str(len(body))
    expected = json.loads(sent)
    assert expected["model"] == "gpt-4o-mini"
    expected["model"] = "command"
    assert json.loads(body) == expected
    # Both upstreams got the same bytes for the same SDK call.
    assert seen["body_length"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_non_streaming_response_relayed_byte_for_byte(
    gw: Process, tls_upstream: Process, certs: Certs
) -> None:
    body = {"model": "whatever", "messages": MESSAGES}
    through = httpx.post(f"http://127.0.0.1:{gw.port}/v1/chat/completions", json=body,
                         timeout=DEADLINE)
    with httpx.Client(verify=tls_client_context(certs), timeout=DEADLINE) as direct_client:
        direct = direct_client.post(f"https://localhost:{tls_upstream.port}{PROVIDER_PATH}",
                                    json={**body, "model": "command"})
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content
    assert through.headers["content-type"] == direct.headers["content-type"]
    assert through.headers["content-length"] == str(len(direct.content))


def test_upstream_error_status_reaches_the_sdk(gw: Process) -> None:
    with sdk(gw.port, "/limited") as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.response.json() == {"status": 429}


# -- 2. streaming -------------------------------------------------------------------------------


def test_sdk_stream_gets_all_deltas_and_injected_usage(gw: Process) -> None:
    with sdk(gw.port) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        chunks = list(stream)
    assert chunks, "no chunk"
    assert {c.model for c in chunks} == {"command"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_TEXT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes.count("stop") == 1
    # The client did not ask for usage: the gateway injected stream_options.include_usage.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == last.usage.prompt_tokens + 5
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_body_upstream_sees_include_usage(gw: Process, recorder: Upstream) -> None:
    bodies, http_client = sent_bodies()
    with sdk(gw.port, "/record", http_client=http_client) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        raw.http_response.read()
    with recorder.lock:
        body = recorder.requests[-1].body
    expected = json.loads(bodies[0])
    assert "stream_options" not in expected
    expected["model"] = "command"
    expected["stream_options"] = {"include_usage": True}
    assert json.loads(body) == expected


def test_client_stream_options_are_left_alone(gw: Process, recorder: Upstream) -> None:
    with sdk(gw.port, "/record") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, stream=True,
            stream_options={"include_usage": False},
        )
        raw.http_response.read()
    with recorder.lock:
        body = json.loads(recorder.requests[-1].body)
    assert body["stream_options"] == {"include_usage": False}
    with sdk(gw.port) as client:
        chunks = list(client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True,
            stream_options={"include_usage": False},
        ))
    assert chunks and all(c.usage is None for c in chunks)


def test_stream_relayed_byte_for_byte(gw: Process, tls_upstream: Process, certs: Certs) -> None:
    body = {"model": "x", "messages": MESSAGES, "stream": True}
    through = httpx.post(f"http://127.0.0.1:{gw.port}/v1/chat/completions", json=body,
                         timeout=DEADLINE)
    direct_body = {**body, "model": "command", "stream_options": {"include_usage": True}}
    with httpx.Client(verify=tls_client_context(certs), timeout=DEADLINE) as direct_client:
        direct = direct_client.post(f"https://localhost:{tls_upstream.port}{PROVIDER_PATH}",
                                    json=direct_body)
    assert through.status_code == direct.status_code == 200
    assert through.headers["content-type"].startswith("text/event-stream")
    assert through.content == direct.content
    assert through.content.endswith(b"data: [DONE]\n\n")


def test_stream_events_relayed_while_upstream_still_sending(
    gateway: GatewayFactory, certs: Certs, tmp_path: Path
) -> None:
    """With a paced upstream (9 events, 0.3 s apart: about 2.4 s), each event must reach the
    client as it is produced, not when the stream ends."""
    slow = start_mock(tmp_path, "--chunks", "5", "--chunk-delay", "0.3", tls=certs, name="slow")
    try:
        gw = gateway(
            llm_config(ai_route(slow.port, rewrite_path=PROVIDER_PATH, ca_path=certs.ca_path)),
            env={"UPSTREAM_KEY": UPSTREAM_KEY},
        )
        arrivals: list[float] = []
        with sdk(gw.port) as client:
            start = time.monotonic()
            stream = client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True
            )
            for chunk in stream:
                arrivals.append(time.monotonic() - start)
                del chunk
            total = time.monotonic() - start  # after [DONE], the last event produced
    finally:
        slow.stop()
    # role, 5 deltas, stop, usage: 8 chunks; [DONE] ends the iteration.
    assert len(arrivals) == 8, arrivals
    assert total >= 1.6, f"the upstream paces its events over ~2.4 s, took {total:.2f}s"
    assert arrivals[0] < total - 0.6, f"first chunk at {arrivals[0]:.2f}s of {total:.2f}s"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert sum(gap >= 0.1 for gap in gaps) >= 4, f"arrivals bunched: {arrivals}"
    assert sum(t < total - 0.6 for t in arrivals) >= 4, f"arrivals at the end: {arrivals}"
