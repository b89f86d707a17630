"""`agw-fast mock-llm` as the upstream of the translation tests: the Anthropic, Gemini, Azure and
OpenAI Responses/embeddings APIs (checked with the official SDKs where one exists), the injected
failures (flags and `x-mock-*` headers) and the `/mock/stats` counters.

Each mock runs as users run it, through the CLI in a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import Process, start_mock

TEXT = "Hello from the mock LLM."
KEY = "test-key"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather at a place",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                       "days": {"type": "integer"}},
        "required": ["location", "unit"],
    },
}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris today?"}]


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("mock-apis"), name="apis")
    yield process
    process.stop()


def url(process: Process) -> str:
    return f"http://127.0.0.1:{process.port}"


def stats(process: Process) -> dict[str, Any]:
    response = httpx.get(url(process) + "/mock/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def reset_stats(process: Process) -> None:
    assert httpx.post(url(process) + "/mock/reset").status_code == 200


def sse_events(body: str, separator: str = "\n\n") -> list[tuple[str | None, Any]]:
    """(event name, decoded data) per SSE event."""
    events: list[tuple[str | None, Any]] = []
    for block in body.split(separator):
        if not block.strip():
            continue
        name = None
        data = None
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        assert data is not None, block
        events.append((name, json.loads(data)))
    return events


# -- Anthropic Messages ------------------------------------------------------------------------


def anthropic_client(process: Process, prefix: str = "") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url(process) + prefix, api_key=KEY, max_retries=0)


def test_anthropic_key_as_x_api_key_or_bearer(mock: Process) -> None:
    # The `anthropic` SDK (2.x) sends its key as `authorization: Bearer`; others, x-api-key.
    body = {"model": "claude-x", "max_tokens": 10, "messages": MESSAGES}
    for key in ({"x-api-key": "k"}, {"authorization": "Bearer k"}):
        response = httpx.post(url(mock) + "/v1/messages", json=body,
                              headers={**key, "anthropic-version": "2023-06-01"})
        assert response.status_code == 200, key


def test_anthropic_sdk_message(mock: Process) -> None:
    client = anthropic_client(mock)
    message = client.messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=MESSAGES,
        system="You are terse.",
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_01") and len(message.id) > 20
    assert message.model == "claude-haiku-4-5"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].type == "text" and message.content[0].text == TEXT
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 5
    # The mock's tokenizer: UTF-8 bytes of all prompt text // 4 + 1, system included.
    prompt = len("You are terse.") + len(MESSAGES[0]["content"])
    assert message.usage.input_tokens == prompt // 4 + 1


def test_anthropic_sdk_stream_events_in_the_real_order(mock: Process) -> None:
    client = anthropic_client(mock)
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=256, messages=MESSAGES
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    # The SDK adds its own "text" events next to the wire's content_block_delta and drops
    # "ping" (test_anthropic_stream_wire_format sees it).
    wire = [k for k in kinds if k not in ("text",)]
    assert wire == (["message_start", "content_block_start"]
                    + ["content_block_delta"] * 5
                    + ["content_block_stop", "message_delta", "message_stop"])
    assert final.content[0].type == "text" and final.content[0].text == TEXT
    assert final.model == "claude-haiku-4-5" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0


def test_anthropic_stream_wire_format(mock: Process) -> None:
    response = httpx.post(url(mock) + "/v1/messages", headers=ANTHROPIC_HEADERS, json={
        "model": "claude-x", "max_tokens": 100, "stream": True, "messages": MESSAGES})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["request-id"].startswith("req_")
    events = sse_events(response.text)
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events] == (
        ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 5
        + ["content_block_stop", "message_delta", "message_stop"])
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] > 0 and start["stop_reason"] is None
    assert start["model"] == "claude-x" and start["content"] == []
    deltas = [data["delta"] for _, data in events if data["type"] == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == TEXT
    message_delta = events[-2][1]
    assert message_delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert message_delta["usage"]["output_tokens"] == 5


def test_anthropic_forced_tool_use(mock: Process) -> None:
    client = anthropic_client(mock)
    message = client.messages.create(
        model="claude-x", max_tokens=256, messages=MESSAGES, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.id.startswith("toolu_")
    # Required properties get placeholders of their type (the first enum value for enums).
    assert block.input == {"location": "mock", "unit": "celsius"}

    with client.messages.stream(
        model="claude-x", max_tokens=256, messages=MESSAGES, tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    (block,) = final.content
    assert block.type == "tool_use" and block.input == {"location": "mock", "unit": "celsius"}
    assert final.stop_reason == "tool_use"


def test_anthropic_auto_tool_choice_answers_text(mock: Process) -> None:
    message = anthropic_client(mock).messages.create(
        model="claude-x", max_tokens=256, messages=MESSAGES, tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert message.content[0].type == "text" and message.stop_reason == "end_turn"


def test_anthropic_max_tokens_cuts_the_reply(mock: Process) -> None:
    message = anthropic_client(mock).messages.create(
        model="claude-x", max_tokens=2, messages=MESSAGES)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2
    assert message.content[0].type == "text" and TEXT.startswith(message.content[0].text)
    assert message.content[0].text != TEXT


def test_anthropic_count_tokens(mock: Process) -> None:
    client = anthropic_client(mock)
    counted = client.messages.count_tokens(model="claude-x", messages=MESSAGES)
    message = client.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    assert counted.input_tokens == message.usage.input_tokens > 0


@pytest.mark.parametrize(
    ("headers", "status", "kind", "message"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error",
         "x-api-key header is required"),
        ({"x-api-key": "anything"}, 400, "invalid_request_error",
         "anthropic-version: header is required"),
    ],
)
def test_anthropic_requires_key_and_version(
    mock: Process, headers: dict[str, str], status: int, kind: str, message: str
) -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = httpx.post(url(mock) + path, headers=headers, json={
            "model": "claude-x", "max_tokens": 10, "messages": MESSAGES})
        assert response.status_code == status
        body = response.json()
        assert body["type"] == "error" and body["request_id"].startswith("req_")
        assert body["error"] == {"type": kind, "message": message}


def test_anthropic_sdk_sees_errors_as_its_own_types(mock: Process) -> None:
    client = anthropic_client(mock)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="claude-x", max_tokens=10, messages=[],
                               extra_body={"max_tokens": None})
    assert "max_tokens" in str(caught.value)
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES,
                               extra_headers={"x-mock-status": "429"})
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["error"] == {
        "type": "rate_limit_error", "message": "Too Many Requests (injected by agw-fast mock-llm)"}


def test_foundry_anthropic_path(mock: Process) -> None:
    # Foundry serves Claude under /anthropic/v1/messages.
    message = anthropic_client(mock, "/anthropic").messages.create(
        model="claude-opus-4-1", max_tokens=50, messages=MESSAGES)
    assert message.content[0].type == "text" and message.content[0].text == TEXT
    response = httpx.post(
        url(mock) + "/anthropic/v1/messages",
        headers={"authorization": "Bearer entra-token", "anthropic-version": "2023-06-01"},
        json={"model": "claude-opus-4-1", "max_tokens": 50, "messages": MESSAGES})
    assert response.status_code == 200 and response.json()["model"] == "claude-opus-4-1"


# -- Gemini ------------------------------------------------------------------------------------

GEMINI_BODY: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "You are terse."}]},
    "contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris today?"}]}],
}
GEMINI_KEY = {"x-goog-api-key": KEY}


def test_gemini_generate_content(mock: Process) -> None:
    response = httpx.post(url(mock) + "/v1beta/models/gemini-2.5-flash:generateContent",
                          headers=GEMINI_KEY, json=GEMINI_BODY)
    assert response.status_code == 200
    body = response.json()
    (candidate,) = body["candidates"]
    assert candidate["content"] == {"parts": [{"text": TEXT}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    assert body["modelVersion"] == "gemini-2.5-flash" and body["responseId"]
    usage = body["usageMetadata"]
    prompt = (len("You are terse.") + len("What is the weather in Paris today?")) // 4 + 1
    assert usage["promptTokenCount"] == prompt and usage["candidatesTokenCount"] == 5
    assert usage["totalTokenCount"] == prompt + 5


def test_gemini_stream_sse(mock: Process) -> None:
    with httpx.stream(
        "POST", url(mock) + "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        headers=GEMINI_KEY, json=GEMINI_BODY,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        raw = response.read().decode()
    # Gemini ends events with CRLF CRLF and names none of them.
    events = sse_events(raw, "\r\n\r\n")
    assert len(events) == 5 and all(name is None for name, _ in events)
    chunks = [data for _, data in events]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == TEXT
    assert all(c["modelVersion"] == "gemini-2.5-pro" for c in chunks)
    assert len({c["responseId"] for c in chunks}) == 1
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("candidatesTokenCount" not in c["usageMetadata"] for c in chunks[:-1])
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 5


def test_gemini_stream_without_sse_is_a_json_array(mock: Process) -> None:
    response = httpx.post(
        url(mock) + "/v1beta/models/gemini-2.5-pro:streamGenerateContent?key=" + KEY,
        json=GEMINI_BODY)
    assert response.status_code == 200
    chunks = response.json()
    assert isinstance(chunks, list) and chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_function_call_and_count_tokens(mock: Process) -> None:
    body = {**GEMINI_BODY,
            "tools": [{"functionDeclarations": [
                {"name": "get_weather",
                 "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}},
                                "required": ["city"]}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}
    response = httpx.post(url(mock) + "/v1beta/models/gemini-2.5-flash:generateContent",
                          headers=GEMINI_KEY, json=body)
    part = response.json()["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "mock"}}}

    counted = httpx.post(url(mock) + "/v1beta/models/gemini-2.5-flash:countTokens",
                         headers=GEMINI_KEY, json={"contents": GEMINI_BODY["contents"]})
    assert counted.status_code == 200
    assert counted.json()["totalTokens"] == len("What is the weather in Paris today?") // 4 + 1


def test_gemini_needs_a_key_and_answers_its_error_shape(mock: Process) -> None:
    response = httpx.post(url(mock) + "/v1beta/models/gemini-2.5-flash:generateContent",
                          json=GEMINI_BODY)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == 403 and error["status"] == "PERMISSION_DENIED"
    missing = httpx.post(url(mock) + "/v1beta/models/gemini-2.5-flash:generateContent",
                         headers=GEMINI_KEY, json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_gemini_openai_compatible_paths(mock: Process) -> None:
    client = openai.OpenAI(base_url=url(mock) + "/v1beta/openai/", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == TEXT
    assert completion.model == "gemini-2.5-flash"
    embedded = client.embeddings.create(model="gemini-embedding-001", input=["a", "b"])
    assert [item.index for item in embedded.data] == [0, 1]
    assert len(embedded.data[0].embedding) == 16


# -- OpenAI Responses, embeddings, models; Azure and Foundry paths -----------------------------


def test_responses_json_and_stream(mock: Process) -> None:
    client = openai.OpenAI(base_url=url(mock) + "/v1", api_key=KEY, max_retries=0)
    response = client.responses.create(model="gpt-4.1-mini", input="Say hello")
    assert response.output_text == TEXT and response.model == "gpt-4.1-mini"
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.output_tokens == 5

    kinds = []
    with client.responses.stream(model="gpt-4.1-mini", input="Say hello") as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_response()
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds.count("response.output_text.delta") == 5
    assert kinds[-1] == "response.completed" and final.output_text == TEXT


def test_embeddings_float_and_base64(mock: Process) -> None:
    client = openai.OpenAI(base_url=url(mock) + "/v1", api_key=KEY, max_retries=0)
    # The SDK asks for base64 by default and decodes it; the floats must round-trip.
    packed = client.embeddings.create(model="text-embedding-3-small", input="hello",
                                      dimensions=8)
    plain = client.embeddings.create(model="text-embedding-3-small", input="hello",
                                     dimensions=8, encoding_format="float")
    assert len(plain.data[0].embedding) == 8
    assert packed.data[0].embedding == pytest.approx(plain.data[0].embedding, abs=1e-6)
    assert sum(x * x for x in plain.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    assert plain.usage.prompt_tokens > 0


def test_openai_forced_tool_call(mock: Process) -> None:
    client = openai.OpenAI(base_url=url(mock) + "/v1", api_key=KEY, max_retries=0)
    tools: Any = [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]}}]
    completion = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=tools, tool_choice="required")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "mock", "unit": "celsius"}

    arguments = ""
    finish = None
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, tools=tools, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ):
        for delta_call in chunk.choices[0].delta.tool_calls or ():
            arguments += (delta_call.function and delta_call.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert json.loads(arguments) == {"location": "mock", "unit": "celsius"}


def test_models_list(mock: Process) -> None:
    client = openai.OpenAI(base_url=url(mock) + "/v1", api_key=KEY, max_retries=0)
    assert [model.id for model in client.models.list()] == ["mock-gpt"]
    gemini = httpx.get(url(mock) + "/v1beta/models", headers=GEMINI_KEY).json()
    assert gemini["models"][0]["name"] == "models/mock-gpt"


def test_azure_paths(mock: Process) -> None:
    reset_stats(mock)
    azure = openai.AzureOpenAI(azure_endpoint=url(mock), api_key=KEY,
                               api_version="2024-10-21", max_retries=0)
    completion = azure.chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == TEXT
    embedded = azure.embeddings.create(model="my-embeddings", input="hi")
    assert len(embedded.data[0].embedding) == 16

    v1 = openai.OpenAI(base_url=url(mock) + "/openai/v1", api_key=KEY, max_retries=0)
    assert v1.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    ).choices[0].message.content == TEXT
    assert v1.responses.create(model="gpt-4o", input="hi").output_text == TEXT
    assert len(v1.embeddings.create(model="e", input="hi").data) == 1

    foundry = openai.OpenAI(base_url=url(mock) + "/api/projects/proj/openai/v1", api_key=KEY,
                            max_retries=0)
    assert foundry.responses.create(model="gpt-4o", input="hi").output_text == TEXT

    assert stats(mock)["by_path"] == {
        "/openai/deployments/my-deployment/chat/completions": 1,
        "/openai/deployments/my-embeddings/embeddings": 1,
        "/openai/v1/chat/completions": 1,
        "/openai/v1/responses": 1,
        "/openai/v1/embeddings": 1,
        "/api/projects/proj/openai/v1/responses": 1,
    }


# -- injected failures and counters ------------------------------------------------------------


def test_stats_count_requests_by_path(mock: Process) -> None:
    reset_stats(mock)
    assert stats(mock) == {"requests": 0, "by_path": {}, "injected": 0}
    client = anthropic_client(mock)
    client.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    client.messages.count_tokens(model="claude-x", messages=MESSAGES)
    client.messages.create(model="claude-x", max_tokens=10, messages=MESSAGES)
    httpx.post(url(mock) + "/v1/chat/completions", json={"messages": []},
               headers={"x-mock-status": "500"})
    # The query string is not part of the counted path; /mock/... is never counted.
    httpx.post(url(mock) + "/v1beta/models/g:generateContent?key=k", json=GEMINI_BODY)
    assert stats(mock) == {
        "requests": 5,
        "by_path": {"/v1/messages": 2, "/v1/messages/count_tokens": 1,
                    "/v1/chat/completions": 1, "/v1beta/models/g:generateContent": 1},
        "injected": 1,
    }


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/chat/completions", {"model": "m", "messages": []},
         {"error": {"message": "Service Unavailable (injected by agw-fast mock-llm)",
                    "type": "server_error", "param": None, "code": None}}),
        ("/v1/messages", {"model": "m", "max_tokens": 1, "messages": []},
         {"type": "error", "error": {"type": "api_error",
                                     "message": "Service Unavailable (injected by agw-fast "
                                     "mock-llm)"}}),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", GEMINI_BODY,
         {"error": {"code": 503, "message": "Service Unavailable (injected by agw-fast mock-llm)",
                    "status": "UNAVAILABLE"}}),
    ],
)
def test_status_header_answers_in_the_apis_error_shape(
    mock: Process, path: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    # Injected before any check of the request: no key needed, even for Anthropic or Gemini.
    response = httpx.post(url(mock) + path, json={**body, "stream": True},
                          headers={"x-mock-status": "503", "x-mock-retry-after": "7"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "7"
    got = response.json()
    got.pop("request_id", None)
    assert got == expected


def test_status_header_must_be_an_error_status(mock: Process) -> None:
    for value in ("200", "abc", "5000", "399"):
        response = httpx.post(url(mock) + "/v1/chat/completions", json={},
                              headers={"x-mock-status": value})
        assert response.status_code == 400
        assert "x-mock-status" in response.json()["error"]["message"]


def test_reset_header_is_a_connection_error(mock: Process) -> None:
    with httpx.Client() as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            client.post(url(mock) + "/v1/chat/completions", headers={"x-mock-reset": "1"},
                        json={"messages": []})
        # The next request on the same client gets a new connection and a normal answer.
        assert client.post(url(mock) + "/v1/chat/completions",
                           json={"messages": []}).status_code == 200


def test_openai_sdk_sees_injected_errors(mock: Process) -> None:
    client = openai.OpenAI(base_url=url(mock) + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-mock-status": "429"})
    assert caught.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"x-mock-reset": "1"})


@pytest.fixture
def tmp_mock(tmp_path: Path) -> Iterator[Any]:
    started: list[Process] = []

    def start(*flags: str) -> Process:
        process = start_mock(tmp_path, *flags, name=f"mock{len(started)}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_fail_status_with_retry_after(tmp_mock: Any) -> None:
    process = tmp_mock("--fail-status", "429", "--retry-after", "2")
    for _ in range(3):
        response = httpx.post(url(process) + "/v1/chat/completions", json={"messages": []})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["type"] == "requests"
    anthropic_reply = httpx.post(url(process) + "/v1/messages", json={})
    assert anthropic_reply.status_code == 429
    assert anthropic_reply.json()["error"]["type"] == "rate_limit_error"
    # A per-request status wins over the flag's.
    assert httpx.post(url(process) + "/v1/chat/completions", json={},
                      headers={"x-mock-status": "502"}).status_code == 502
    assert stats(process) == {"requests": 5, "by_path": {"/v1/chat/completions": 4,
                                                         "/v1/messages": 1}, "injected": 5}


def test_fail_first_then_recover(tmp_mock: Any) -> None:
    process = tmp_mock("--fail-first", "2", "--fail-status", "503")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    codes = [httpx.post(url(process) + "/v1/chat/completions", json=body).status_code
             for _ in range(4)]
    assert codes == [503, 503, 200, 200]
    assert stats(process)["injected"] == 2
    reset_stats(process)  # also restarts --fail-first
    codes = [httpx.post(url(process) + "/v1/chat/completions", json=body).status_code
             for _ in range(3)]
    assert codes == [503, 503, 200]
    assert stats(process) == {"requests": 3, "by_path": {"/v1/chat/completions": 3},
                              "injected": 2}


def test_fail_first_alone_means_500(tmp_mock: Any) -> None:
    process = tmp_mock("--fail-first", "1")
    assert httpx.get(url(process) + "/v1/models").status_code == 500
    assert httpx.get(url(process) + "/v1/models").status_code == 200


def test_reset_flag(tmp_mock: Any) -> None:
    process = tmp_mock("--reset", "--fail-first", "1")
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.post(url(process) + "/v1/messages", json={})
    client = anthropic_client(process)
    assert client.messages.create(model="c", max_tokens=5, messages=MESSAGES).content
    assert stats(process) == {"requests": 2, "by_path": {"/v1/messages": 2}, "injected": 1}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fail-status", "200"], "expected a status 400-599"),
        (["--fail-first", "-1"], "expected a count >= 0"),
        (["--retry-after", "2"], "retry-after is only sent with an injected status"),
        (["--fail-status", "500", "--reset"], "choose one of fail status and reset"),
    ],
)
def test_cli_refuses_bad_failure_flags(flags: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agw_fast", "mock-llm", "--port", "0", *flags],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_documents_flags_and_headers() -> None:
    result = subprocess.run([sys.executable, "-m", "agw_fast", "mock-llm", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for name in ("--fail-status", "--retry-after", "--fail-first", "--reset",
                 "x-mock-status", "x-mock-retry-after", "x-mock-reset", "/mock/stats",
                 "/v1/messages", ":streamGenerateContent", "/openai/deployments/"):
        assert name in result.stdout


def test_mock_headers_match_in_any_case(mock: Process) -> None:
    response = httpx.post(url(mock) + "/v1/embeddings", json={"input": "x"},
                          headers={"X-Mock-Status": "504", "X-MOCK-RETRY-AFTER": "1.5"})
    assert response.status_code == 504 and response.headers["retry-after"] == "1.5"
    assert response.json()["error"]["type"] == "server_error"
