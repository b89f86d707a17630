"""Guardrails end to end, as the official openai SDK sees them: request guards (regex,
webhook, OpenAI moderation) and response guards (regex, on JSON and, with `streaming:
Enabled`, on streams), against the mock LLM and purpose-built guard services.

The mock answers every chat completion with CONTENT (`--content`), streamed in CHUNKS deltas
`--chunk-delay` apart, so the phone number in it is split across events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    Upstream,
    UpstreamConnection,
    http_response,
    metric_total,
    poll,
    scrape_metrics,
    start_mock,
    unused_port,
)

PHONE = "415-555-0132"
CONTENT = (
    "Here is what I found for you. " * 12
    + f"Call me at {PHONE} today. "
    + "That is all the information I have. " * 60
)
CHUNKS = 250
CHUNK_DELAY = 0.012  # the whole stream takes CHUNKS * CHUNK_DELAY = 3 s upstream
EMAIL_REJECTION = {
    "error": {"message": "Request rejected: email", "type": "invalid_request_error",
              "code": "pii_detected"}
}  # fmt: skip
DEFAULT_REJECTION = "The request was rejected due to inappropriate content"
OPENAI_REPLY = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
}  # fmt: skip


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(
        tmp_path_factory.mktemp("guard-mock"), "--content", CONTENT, "--chunks", str(CHUNKS),
        "--chunk-delay", str(CHUNK_DELAY), name="guard-mock",
    )  # fmt: skip
    yield process
    process.stop()


def _webhook(conn: UpstreamConnection) -> None:
    """A guard service in agentgateway's webhook shape: rejects a prompt that says
    "forbidden", masks "secret" as "[redacted]", passes the rest."""
    while (request := conn.read_request()) is not None:
        messages = json.loads(request.body)["body"]["messages"]
        text = " ".join(m["content"] for m in messages)
        action: dict[str, Any]
        if "forbidden" in text:
            action = {"body": "no forbidden topics", "status_code": 422, "reason": "topic"}
        elif "secret" in text:
            masked = [{**m, "content": m["content"].replace("secret", "[redacted]")}
                      for m in messages]  # fmt: skip
            action = {"body": {"messages": masked}, "reason": "secret"}
        else:
            action = {"reason": "fine"}
        conn.send(http_response(200, json.dumps({"action": action}).encode(),
                                [("content-type", "application/json")]))  # fmt: skip


_RELEASE_SLOW = threading.Event()


def _slow(conn: UpstreamConnection) -> None:
    """A guard service that never answers in time (until the module's tests are done)."""
    while conn.read_request() is not None:
        _RELEASE_SLOW.wait(30)
        return


def _provider(conn: UpstreamConnection) -> None:
    """A recording OpenAI provider (to see what a webhook's mask sent upstream)."""
    while conn.read_request() is not None:
        conn.send(http_response(200, json.dumps(OPENAI_REPLY).encode(),
                                [("content-type", "application/json")]))  # fmt: skip


@pytest.fixture(scope="module")
def webhook() -> Iterator[Upstream]:
    with Upstream(_webhook) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def slow() -> Iterator[Upstream]:
    with Upstream(_slow) as upstream:
        yield upstream
        _RELEASE_SLOW.set()


@pytest.fixture(scope="module")
def provider() -> Iterator[Upstream]:
    with Upstream(_provider) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, mock: Process, webhook: Upstream, slow: Upstream,
       provider: Upstream) -> Process:
    base = f"http://127.0.0.1:{mock.port}/v1"
    recorded = f"http://127.0.0.1:{provider.port}/v1"
    down = unused_port()
    rejection = json.dumps(json.dumps(EMAIL_REJECTION))
    return module_gateway(
        f"""config:
  adminAddr: "off"
  readinessAddr: "off"
  statsAddr: "off"
llm:
  port: 0
  policies:
    guardrails:
      request:
      - regex:
          action: reject
          rules: [{{builtin: email}}]
        rejection:
          status: 400
          headers: {{set: {{content-type: application/json, x-guard: email}}}}
          body: {rejection}
  models:
  - name: plain
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
  - name: masked
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      streaming: Enabled
      response:
      - regex:
          rules: [{{builtin: phoneNumber}}]
  - name: masked-no-stream
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      response:
      - regex:
          rules: [{{builtin: phoneNumber}}]
  - name: strict
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      streaming: Enabled
      response:
      - regex:
          action: reject
          rules: [{{pattern: '415-555-\\d{{4}}'}}]
  - name: moderated
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      request:
      - openAIModeration: {{policies: {{backendAuth: {{key: moderation-key}}}}}}
  - name: hooked
    provider: openAI
    params: {{apiKey: k, baseUrl: "{recorded}"}}
    guardrails:
      request:
      - webhook:
          target: {{host: "127.0.0.1:{webhook.port}"}}
          forwardHeaderMatches:
          - name: x-tenant
            value: {{regex: "acme|globex"}}
  - name: hook-down-closed
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      request:
      - webhook: {{target: {{host: "127.0.0.1:{down}"}}}}
  - name: hook-down-open
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      request:
      - webhook: {{target: {{host: "127.0.0.1:{down}"}}, failureMode: failOpen}}
  - name: hook-slow-open
    provider: openAI
    params: {{apiKey: k, baseUrl: "{base}"}}
    guardrails:
      request:
      - webhook: {{target: {{host: "127.0.0.1:{slow.port}"}}, failureMode: failOpen}}
""",
        env={"AGW_FAST_OPENAI_MODERATION_URL": f"http://127.0.0.1:{mock.port}/v1/moderations"},
    )


def _client(gw: Process, timeout: float = DEADLINE * 2) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="client-key",
                         max_retries=0, timeout=timeout)  # fmt: skip


def _ask(gw: Process, model: str, prompt: str, **extra: Any) -> str:
    with _client(gw) as client:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], **extra
        )
    return reply.choices[0].message.content or ""


# -- request guards --------------------------------------------------------------------------


def test_a_prompt_with_an_email_is_rejected_with_the_configured_answer(gw: Process) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _ask(gw, "plain", "Please write to jane.doe@example.com for me")
    response = info.value.response
    assert response.status_code == 400
    assert response.headers["x-guard"] == "email"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == EMAIL_REJECTION
    assert _ask(gw, "plain", "Please write a haiku") == CONTENT  # the same route, no email


def test_the_shared_request_guard_applies_to_every_model(gw: Process) -> None:
    with pytest.raises(openai.BadRequestError):
        _ask(gw, "masked", "mail jane.doe@example.com")


def test_moderation_flags_a_violent_prompt(gw: Process) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        _ask(gw, "moderated", "how do I kill a process nicely?")
    assert info.value.response.status_code == 403
    assert info.value.response.text == DEFAULT_REJECTION
    assert _ask(gw, "moderated", "how do I stop a process nicely?") == CONTENT


def test_a_webhook_rejects_masks_and_passes(gw: Process, webhook: Upstream,
                                            provider: Upstream) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        _ask(gw, "hooked", "tell me something forbidden")
    assert info.value.response.text == "no forbidden topics"
    assert _ask(gw, "hooked", "my secret plan", extra_headers={"x-tenant": "acme"}) == "Hello."
    with provider.lock:
        sent = json.loads(provider.requests[-1].body)
    assert sent["messages"] == [{"role": "user", "content": "my [redacted] plan"}]
    with webhook.lock:
        asked = webhook.requests[-1]
    assert asked.target == "/request"
    assert asked.header("x-tenant") == "acme"  # forwardHeaderMatches
    assert json.loads(asked.body) == {
        "body": {"messages": [{"role": "user", "content": "my secret plan"}]}
    }
    assert _ask(gw, "hooked", "a fine question") == "Hello."


def test_a_webhook_that_is_down_fails_closed_by_default(gw: Process) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        _ask(gw, "hook-down-closed", "hello")
    assert info.value.response.status_code == 503
    assert info.value.response.text == "failed to process LLM request: prompt guard failed"


def test_a_webhook_that_is_down_fails_open_when_configured(gw: Process) -> None:
    assert _ask(gw, "hook-down-open", "hello") == CONTENT


def test_a_slow_webhook_times_out_after_ten_seconds_and_fails_open(gw: Process) -> None:
    started = time.monotonic()
    assert _ask(gw, "hook-slow-open", "hello") == CONTENT
    assert time.monotonic() - started >= 9.5  # agentgateway's 10 s guard timeout


# -- response guards -------------------------------------------------------------------------


def test_a_json_response_with_a_phone_number_is_masked(gw: Process) -> None:
    masked = _ask(gw, "masked", "where can I reach you?")
    assert PHONE not in masked
    assert "Call me at <PHONE_NUMBER>today." in masked  # agentgateway's match takes the space


def test_a_json_response_is_rejected_with_the_default_answer(gw: Process) -> None:
    with pytest.raises(openai.PermissionDeniedError) as info:
        _ask(gw, "strict", "where can I reach you?")
    assert info.value.response.text == DEFAULT_REJECTION


def _stream(gw: Process, model: str) -> tuple[list[str], list[float], float]:
    """The deltas of a streamed answer, when each arrived, and when the stream ended."""
    deltas: list[str] = []
    arrivals: list[float] = []
    with _client(gw) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "where can I reach you?"}],
            stream=True,
        )  # fmt: skip
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
                arrivals.append(time.monotonic())
    return deltas, arrivals, time.monotonic()


def test_the_mock_splits_the_phone_number_across_events(gw: Process) -> None:
    deltas, _, _ = _stream(gw, "plain")
    assert "".join(deltas) == CONTENT
    assert not any(PHONE in d for d in deltas)  # so the guarded stream must join them


def test_a_stream_with_a_split_phone_number_is_masked_as_it_flows(gw: Process) -> None:
    deltas, arrivals, ended = _stream(gw, "masked")
    text = "".join(deltas)
    assert PHONE not in text and "415" not in text
    assert text == CONTENT.replace(f"{PHONE} ", "<PHONE_NUMBER>")
    # Not buffered whole: text reached the client while the upstream was still streaming
    # (the stream takes CHUNKS * CHUNK_DELAY = 3 s; the first text leaves after ~0.6 s, once
    # the windows' 512 characters have arrived).
    assert arrivals[0] < ended - 1.5, (arrivals[0], ended)
    assert len(deltas) > CHUNKS // 2  # released event by event, not as one blob


def test_a_stream_is_not_guarded_unless_streaming_is_enabled(gw: Process) -> None:
    deltas, _, _ = _stream(gw, "masked-no-stream")
    assert "".join(deltas) == CONTENT  # agentgateway: guards skip streams by default


def test_a_rejected_stream_ends_with_the_guardrail_error_event(gw: Process) -> None:
    deltas: list[str] = []
    with _client(gw) as client, pytest.raises(openai.APIError) as info:
        stream = client.chat.completions.create(
            model="strict", messages=[{"role": "user", "content": "where can I reach you?"}],
            stream=True,
        )  # fmt: skip
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                deltas.append(chunk.choices[0].delta.content)
    assert info.value.body == {
        "type": "guardrail_blocked", "code": "guardrail_intervention",
        "message": DEFAULT_REJECTION,
    }  # fmt: skip
    text = "".join(deltas)
    assert "415" not in text  # held back, then dropped
    assert CONTENT.startswith(text)


def test_a_rejected_stream_on_the_wire(gw: Process) -> None:
    body = {"model": "strict", "stream": True,
            "messages": [{"role": "user", "content": "where can I reach you?"}]}  # fmt: skip
    with httpx.Client(timeout=DEADLINE * 2, trust_env=False) as client:
        response = client.post(f"http://127.0.0.1:{gw.port}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    events = [e for e in response.text.split("\n\n") if e]
    assert json.loads(events[-1].removeprefix("data: ")) == {"error": {
        "type": "guardrail_blocked", "code": "guardrail_intervention",
        "message": DEFAULT_REJECTION}}  # fmt: skip
    assert "[DONE]" not in response.text


# -- the binds form and the metric -----------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "data/agentgateway-examples"


def test_agentgateway_prompt_guard_example_with_metrics(gateway: GatewayFactory,
                                                       mock: Process) -> None:
    """agentgateway's examples/llm-prompt-guard/config.yaml, pointed at the mock, on two
    workers: its rejections, and `guardrail_checks_total` summed over the workers."""
    text = (EXAMPLE / "llm-prompt-guard-config.yaml").read_text()
    text = text.replace("port: 3000", "port: 0").replace(
        "      - ai:\n          name: openai\n",
        f'      - ai:\n          name: openai\n          hostOverride: "127.0.0.1:{mock.port}"\n',
    )
    config = 'config:\n  adminAddr: "off"\n  readinessAddr: "off"\n  statsAddr: 127.0.0.1:0\n'
    gw = gateway(config + text, workers=2, expect_stats=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k",
                           max_retries=0, timeout=DEADLINE)  # fmt: skip
    ssn = "Is 123-45-6789 a valid SSN"
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-4o-mini",
                                           messages=[{"role": "user", "content": ssn}])
        assert info.value.response.json()["error"]["code"] == "content_policy_violation"
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "My email is test@example.com"}],
            )
        assert info.value.response.json()["error"]["code"] == "pii_detected"
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
        )
        assert reply.choices[0].message.content == CONTENT
        client.close()  # fresh connections: the kernel spreads them over both workers
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k",
                               max_retries=0, timeout=DEADLINE)  # fmt: skip
    name = "agentgateway_guardrail_checks_total"
    samples = poll(
        lambda: scrape_metrics(gw.extra_ports["stats"]),
        lambda s: metric_total(s, name, phase="Request", action="Allow") >= 9,
        what="9 allowed checks",
    )
    # Per request, in order: the SSN guard, then (if it allowed) the email guard.
    assert metric_total(samples, name, phase="Request", action="Reject") == 6
    assert metric_total(samples, name, phase="Request", action="Allow") == 9
    assert metric_total(samples, name, phase="Response") == 0


def _answers_once(conn: UpstreamConnection) -> None:
    """A guard service that answers the first request of a connection, keeps it open (as
    a keep-alive server does), and closes it unanswered when a second request comes: what a
    reused idle connection meets when the server timed it out just then."""
    if conn.read_request() is None:
        return
    conn.send(http_response(200, json.dumps({"action": {"reason": "fine"}}).encode(),
                            [("content-type", "application/json")]))  # fmt: skip
    conn.read_request()  # then close without answering


def test_a_guard_call_on_a_stale_pooled_connection_is_sent_again(
    gateway: GatewayFactory, mock: Process
) -> None:
    with Upstream(_answers_once) as hook:
        gw = gateway(f"""config: {{statsAddr: "off", adminAddr: "off", readinessAddr: "off"}}
llm:
  port: 0
  models:
  - name: hooked
    provider: openAI
    params: {{apiKey: k, baseUrl: "http://127.0.0.1:{mock.port}/v1"}}
    guardrails:
      request:
      - webhook: {{target: {{host: "127.0.0.1:{hook.port}"}}}}
""")
        for _ in range(3):
            assert _ask(gw, "hooked", "a fine question") == CONTENT
        with hook.lock:
            # Every call after the first found its pooled connection closed, and was sent
            # again on a new one: one answered request per connection, none failed.
            assert hook.accepted == 3
