"""The OpenAI Responses API through an `llm:` Gemini model: the official `openai` SDK's
`responses.create` (whole and streamed) and `responses.stream` against the gateway, the mock
LLM as Gemini's OpenAI-compatible chat completions endpoint. What the client gets, which
provider path was called, what the metrics say."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    gateway_client,
    scrape_metrics,
    start_mock,
)

CLIENT_KEY = "client-key-never-forwarded"
CHAT_PATH = "/v1beta/openai/chat/completions"


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("llm-responses-mock"), name="responses-mock")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, mock: Process) -> Process:
    config = f"""config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
llm:
  port: 0
  models:
  - name: gemini-*
    provider: gemini
    params: {{apiKey: AIza-mock-key, baseUrl: "http://127.0.0.1:{mock.port}"}}
"""
    return module_gateway(config, expect_stats=True)


@pytest.fixture(scope="module")
def client(gw: Process) -> Iterator[openai.OpenAI]:
    sdk = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gw.port}/v1", api_key=CLIENT_KEY, max_retries=0,
        timeout=DEADLINE * 2,
    )  # fmt: skip
    yield sdk
    sdk.close()


def _mock_calls(mock: Process) -> dict[str, int]:
    with httpx.Client(base_url=f"http://127.0.0.1:{mock.port}", timeout=DEADLINE) as c:
        by_path: dict[str, int] = c.get("/mock/stats").json()["by_path"]
    return by_path


def test_responses_create_is_served_by_gemini_chat_completions(
    client: openai.OpenAI, mock: Process
) -> None:
    before = _mock_calls(mock).get(CHAT_PATH, 0)
    response = client.responses.create(
        model="gemini-flash", instructions="Be terse.", input="Say hello.", max_output_tokens=64
    )
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "gemini-flash"
    assert response.id.startswith("resp_")
    assert response.output_text
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert _mock_calls(mock).get(CHAT_PATH, 0) == before + 1


def test_responses_stream_events_end_with_the_whole_answer(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gemini-flash", input="Say hello.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:3] == [
        "response.created", "response.output_item.added", "response.content_part.added"
    ]  # fmt: skip
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text
    final = events[-1].response
    assert final.output_text == text
    assert final.usage is not None and final.usage.output_tokens > 0


def test_responses_stream_helper_and_forced_tool_call(client: openai.OpenAI) -> None:
    tools: list[openai.types.responses.ToolParam] = [{
        "type": "function", "name": "get_weather", "strict": False,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }]  # fmt: skip
    with client.responses.stream(
        model="gemini-flash", input="Weather in Paris?", tools=tools,
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:  # fmt: skip
        for _ in stream:
            pass
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"]
    assert calls[0].call_id
    whole = client.responses.create(
        model="gemini-flash", input="Weather in Paris?", tools=tools, tool_choice="required"
    )
    assert [item.type for item in whole.output] == ["function_call"]


def test_provider_error_reaches_the_sdk_in_openai_shape(gw: Process) -> None:
    with gateway_client(gw.port) as http:
        reply = http.post(
            "/v1/responses",
            json={"model": "gemini-flash", "input": "hi"},
            headers={"authorization": f"Bearer {CLIENT_KEY}", "x-mock-status": "429"},
        )
    assert reply.status_code == 429
    error = reply.json()["error"]
    assert type(error["message"]) is str and error["message"]


def test_request_the_translation_cannot_read_is_a_400(gw: Process) -> None:
    with gateway_client(gw.port) as http:
        reply = http.post(
            "/v1/responses",
            json={"model": "gemini-flash", "input": 3},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert reply.status_code == 400
    assert "input: must be a string or an array of items" in reply.text


def test_metrics_record_the_translated_usage(client: openai.OpenAI, gw: Process) -> None:
    client.responses.create(model="gemini-metrics", input="Say hello.")
    samples = scrape_metrics(gw.extra_ports["stats"])
    tokens = [
        s for s in samples
        if s.name == "agentgateway_gen_ai_client_token_usage_sum"
        and s.labels.get("gen_ai_request_model") == "gemini-metrics"
    ]  # fmt: skip
    kinds = {s.labels.get("gen_ai_token_type"): s.value for s in tokens}
    assert kinds.get("input", 0) > 0 and kinds.get("output", 0) > 0, kinds
