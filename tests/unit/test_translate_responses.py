"""OpenAI Responses clients served by chat completions (agw_fast.llm.translate.responses).

Golden cases are agentgateway's own fixtures (tests/data/agentgateway-llm, see its README):
requests and whole responses compare as JSON, streams event by event (ids and timestamps
normalised as the snapshots redact them; the closing events' filled-in text and items,
where agentgateway sends them empty, are checked against what was streamed). The SDK tests
feed our bytes to the official `openai` client.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agw_fast.llm.translate import StreamTranslator, TranslationError
from agw_fast.llm.translate.responses import responses_to_completions
from agw_fast.llm.usage import Usage

DATA = Path(__file__).resolve().parents[1] / "data" / "agentgateway-llm"
COMPLETIONS = DATA / "response" / "completions"


def _snapshot(path: Path) -> tuple[str, Any]:
    """(body, parsed trailing JSON or None) of an insta snapshot, front matter removed."""
    text = path.read_text()
    assert text.startswith("---\n")
    body = text[text.index("\n---\n", 4) + 5 :]
    if body.startswith("{"):
        return body, json.loads(body)
    at = body.find("\n{\n")
    return body[:at], json.loads(body[at + 1 :])


def _sse(text: str) -> list[tuple[str | None, Any]]:
    events: list[tuple[str | None, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def _ticks() -> Callable[[], float]:
    return itertools.count(1000).__next__  # type: ignore[return-value]


def _run(stream: StreamTranslator, data: bytes) -> bytes:
    return stream.feed(data) + stream.finish()


def _translation(request: dict[str, Any] | None = None) -> Any:
    return responses_to_completions(request or {"model": "input-model", "input": "hi"},
                                    clock=_ticks())[1]  # fmt: skip


def _telemetry(parsed: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=parsed.get("input_tokens"),
        output_tokens=parsed.get("output_tokens"),
        total_tokens=parsed.get("total_tokens"),
        cached_input_tokens=parsed.get("cached_input_tokens"),
        reasoning_tokens=parsed.get("reasoning_tokens"),
    )


# --- requests ---------------------------------------------------------------------------------

REQUESTS = ["basic", "instructions", "input-list", "parallel-tool-call", "cache_control"]


@pytest.mark.parametrize("name", REQUESTS)
def test_request_matches_agentgateway(name: str) -> None:
    source = json.loads((DATA / "requests/responses" / f"{name}.json").read_text())
    _, expected = _snapshot(DATA / "requests/responses" / f"{name}.gemini.snap")
    body, _ = responses_to_completions(source)
    assert json.loads(body) == expected["request"]


def test_request_tools_choice_format_reasoning_and_numbers() -> None:
    body, _ = responses_to_completions({
        "model": "m",
        "input": [
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "S"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "a", "annotations": []},
                         {"type": "output_text", "text": "b", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1",
             "output": [{"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y"}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://i/x.png", "detail": "low"},
                {"type": "input_file", "file_id": "f1"}]},
            {"type": "item_reference", "id": "r1"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
        "tools": [
            {"type": "function", "name": "f", "description": "d",
             "parameters": {"type": "object"}, "strict": True},
            {"type": "web_search"},
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"},
                            "strict": True}},
        "reasoning": {"effort": "low"},
        "temperature": 0.5, "top_p": 0.9, "max_output_tokens": 99, "parallel_tool_calls": False,
        "store": True, "previous_response_id": None,
    })  # fmt: skip
    assert json.loads(body) == {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "S"}]},
            {"role": "assistant", "content": "a\nb"},
            {"role": "assistant", "tool_calls": [
                {"type": "function", "id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": "x\ny", "tool_call_id": "c1"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://i/x.png", "detail": "low"}}]},
        ],
        "model": "m",
        "tools": [{"type": "function", "function": {
            "name": "f", "description": "d", "parameters": {"type": "object"}, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "s", "schema": {"type": "object"}, "strict": True}},
        "stream": False,
        "temperature": 0.5, "top_p": 0.9, "max_completion_tokens": 99,
        "parallel_tool_calls": False,
    }  # fmt: skip


def test_request_custom_tool_calls_pair_by_call_id_and_json_object_format() -> None:
    body, _ = responses_to_completions({
        "model": "m",
        "input": [
            {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_9", "name": "sh",
             "input": "ls"},
            {"type": "custom_tool_call_output", "call_id": "call_9", "output": "a.txt"},
        ],
        "text": {"format": {"type": "json_object"}},
        "tool_choice": "required",
        "reasoning": {"effort": "none"},
    })  # fmt: skip
    assert json.loads(body) == {
        "messages": [
            {"role": "assistant", "tool_calls": [
                {"type": "function", "id": "call_9",
                 "function": {"name": "sh", "arguments": '"ls"'}}]},
            {"role": "tool", "content": "a.txt", "tool_call_id": "call_9"},
        ],
        "model": "m",
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "stream": False,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": ["x"]}, "input[0]"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": 1}]}, "input[0].content"),
        (
            {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        ({"model": "m", "input": "x", "instructions": 1}, "instructions"),
        ({"model": "m", "input": "x", "tools": {}}, "tools"),
        ({"model": "m", "input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ],
)
def test_request_refuses_what_it_cannot_read(request_body: dict[str, Any], field: str) -> None:
    with pytest.raises(TranslationError, match=re.escape(field)):
        responses_to_completions(request_body)


# --- whole responses ----------------------------------------------------------------------------

RESPONSES = [
    "basic", "tool_call", "truncated_tool_call", "audio", "gemini_zero_completion_tokens",
    "gemini_with_completion_tokens", "openrouter_reasoning",
]  # fmt: skip


def _redacted(obj: Any) -> Any:
    """Our ids and timestamps as agentgateway's snapshots redact them."""
    obj["id"] = "[id]"
    obj["created_at"] = "[date]"
    for item in obj["output"]:
        item["id"] = "[id]"
    return obj


@pytest.mark.parametrize("name", RESPONSES)
def test_response_matches_agentgateway(name: str) -> None:
    source = (COMPLETIONS / f"{name}.json").read_bytes()
    _, expected = _snapshot(COMPLETIONS / f"{name}.completions-responses.snap")
    body, usage, model = _translation().response_json(source)
    assert _redacted(json.loads(body)) == expected["response"]
    assert model == expected["parsed"]["provider_model"] == "input-model"
    assert usage == _telemetry(expected["parsed"])


def test_response_keeps_the_providers_call_ids_and_fails_on_content_filter() -> None:
    body, usage, _ = _translation().response_json(json.dumps({
        "model": "x",
        "choices": [{"index": 0, "finish_reason": "content_filter",
                     "message": {"role": "assistant", "content": None}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3,
                  "prompt_tokens_details": {"cached_tokens": 1, "cache_write_tokens": 2}},
    }).encode())  # fmt: skip
    obj = json.loads(body)
    assert obj["status"] == "failed" and obj["output"] == []
    assert obj["error"] == {"code": "content_filter", "message": "Content filtered"}
    assert obj["usage"]["input_tokens_details"] == {"cached_tokens": 1, "cache_write_tokens": 2}
    assert obj["usage"]["output_tokens"] == 0
    assert usage == Usage(3, 0, 3, 1, 0)
    body, _, _ = _translation().response_json((COMPLETIONS / "tool_call.json").read_bytes())
    assert [(i["call_id"], i["id"]) for i in json.loads(body)["output"]] == [
        ("call_abc123", "call_abc123"), ("call_xyz789", "call_xyz789")]  # fmt: skip


@pytest.mark.parametrize("body", [b"nope", b"[]", b'{"object":"chat.completion"}'])
def test_unreadable_response_is_a_translation_error(body: bytes) -> None:
    with pytest.raises(TranslationError):
        _translation().response_json(body)


def test_errors_in_openai_shape() -> None:
    translation = _translation()
    google = b'[{"error":{"code":400,"message":"bad key","status":"INVALID_ARGUMENT"}}]'
    error = json.loads(translation.error_json(400, google))["error"]
    assert error["message"] == "bad key" and error["type"] == "invalid_request_error"
    openai_error = b'{"error":{"message":"slow down","type":"rate_limit_error"}}'
    assert translation.error_json(429, openai_error) == openai_error
    error = json.loads(translation.error_json(502, b"upstream fell over"))["error"]
    assert error == {"type": "api_error", "message": "upstream fell over"}


# --- streams --------------------------------------------------------------------------------------


def _normalised(events: list[tuple[str | None, Any]]) -> list[Any]:
    """Data of our events with ids and timestamps as the snapshots redact them; each event
    is checked to be named by its type."""
    out = []
    for name, data in events:
        assert name == data["type"]
        data = json.loads(json.dumps(data))
        if "item_id" in data:
            data["item_id"] = ""
        response = data.get("response")
        if response is not None:
            response["id"] = ""
            response["created_at"] = 123
            for item in response["output"]:
                item["id"] = ""
        item = data.get("item")
        if item is not None:
            item["id"] = ""
        out.append(data)
    return out


def _filled(golden: list[Any], call_ids: dict[int, str]) -> list[Any]:
    """agentgateway's events with what we add: the closing events carry what was streamed,
    and function calls keep the provider's call id (`call_ids` by output index)."""
    text = "".join(e["delta"] for e in golden if e["type"] == "response.output_text.delta")
    part = {"type": "output_text", "annotations": [], "logprobs": None, "text": text}
    streamed_text = any(e["type"] == "response.content_part.added" for e in golden)
    done_items: dict[int, Any] = {}
    for event in golden:
        item = event.get("item")
        if item is not None and item["type"] == "function_call":
            item["call_id"] = call_ids[event["output_index"]]
        if event["type"] == "response.content_part.done":
            event["part"] = part
        if event["type"] == "response.output_item.done":
            if item["type"] == "message" and streamed_text:
                item["content"] = [part]
            done_items[event["output_index"]] = item
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            event["response"]["output"] = [done_items[i] for i in sorted(done_items)]
    return golden


STREAMS = {"stream": {}, "stream_tool_empty_content": {1: "toolu_empty_content"}}


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_matches_agentgateway(name: str) -> None:
    source = (COMPLETIONS / f"{name}.json").read_bytes()
    text, parsed = _snapshot(COMPLETIONS / f"{name}.completions-responses-streaming.snap")
    stream = _translation().stream()
    out = _run(stream, source)
    golden = [data for _, data in _sse(text)]
    assert _normalised(_sse(out.decode())) == _filled(golden, STREAMS[name])
    assert stream.model == parsed["provider_model"]
    assert stream.usage == _telemetry(parsed)
    assert stream.first_token_at == 1000  # the first chunk's (empty) content


def _ids_and_times(data: bytes) -> bytes:
    data = re.sub(rb"(resp|msg|call)_[0-9a-f]{16}", rb"\1_id", data)
    return re.sub(rb'"created_at":\d+', b'"created_at":0', data)


def test_stream_split_at_every_byte_gives_the_same_bytes() -> None:
    source = (COMPLETIONS / "stream_tool_empty_content.json").read_bytes()
    source = source.replace(b"\n", b"\r\n")
    whole = _ids_and_times(_run(_translation().stream(), source))
    for at in range(1, len(source)):
        stream = _translation().stream()
        split = stream.feed(source[:at]) + stream.feed(source[at:]) + stream.finish()
        assert _ids_and_times(split) == whole, at
    text = (COMPLETIONS / "stream.json").read_bytes()
    stream = _translation().stream()
    one_by_one = b"".join(stream.feed(text[i : i + 1]) for i in range(len(text))) + stream.finish()
    assert _ids_and_times(one_by_one) == _ids_and_times(_run(_translation().stream(), text))


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "c", "object": "chat.completion.chunk", "model": "gemini-x", "choices": choices}
    body.update(extra)
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def test_stream_first_token_waits_for_content_and_length_is_incomplete() -> None:
    stream = _translation().stream()
    out = stream.feed(_chunk({"role": "assistant"}))
    assert stream.first_token_at is None and b"response.created" in out
    stream.feed(_chunk({"content": "Hel"}))
    assert stream.first_token_at == 1000
    stream.feed(_chunk({"content": "lo"}, "length"))
    out = stream.feed(_chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 2,
                                          "total_tokens": 7}))  # fmt: skip
    final = _sse(out.decode())[-1][1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_tokens"}
    assert final["response"]["output"][0]["content"][0]["text"] == "Hello"
    assert stream.usage == Usage(5, 2, 7, None, None)
    assert stream.feed(b"data: [DONE]\n\n") + stream.finish() == b""


def test_stream_without_done_or_usage_still_completes() -> None:
    stream = _translation().stream()
    out = _run(stream, _chunk({"content": "hi"}) + _chunk({}, "stop"))
    events = [data for _, data in _sse(out.decode())]
    assert events[-1]["type"] == "response.completed"
    assert "usage" not in events[-1]["response"]
    assert [e["sequence_number"] for e in events] == list(range(1, len(events) + 1))
    assert stream.usage is None and stream.model == "gemini-x"


def test_stream_parallel_tool_calls_keep_order_and_ids() -> None:
    stream = _translation().stream()
    source = (
        _chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}},
                               {"index": 1, "id": "b", "function": {"name": "g"}}]})
        + _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"y":'}},
                                 {"index": 0, "function": {"arguments": '{"x":1}'}}]})
        + _chunk({"tool_calls": [{"index": 1, "function": {"arguments": "2}"}}]}, "tool_calls")
        + b"data: [DONE]\n\n"
    )  # fmt: skip
    events = [data for _, data in _sse(_run(stream, source).decode())]
    assert stream.first_token_at == 1000
    final = events[-1]["response"]["output"]
    assert [(i["type"], i.get("call_id"), i.get("arguments")) for i in final] == [
        ("message", None, None), ("function_call", "a", '{"x":1}'),
        ("function_call", "b", '{"y":2}')]  # fmt: skip
    assert final[0]["content"] == []
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [
        0, 1, 2]  # fmt: skip


def test_stream_error_becomes_error_event_and_ends() -> None:
    stream = _translation().stream()
    out = _run(
        stream,
        _chunk({"content": "x"})
        + b'data: {"error":{"message":"quota","type":"rate_limit_error","code":"429"}}\n\n'
        + _chunk({"content": "after"}),
    )
    events = [data for _, data in _sse(out.decode())]
    assert events[-1] == {"type": "error", "sequence_number": len(events), "code": "429",
                          "message": "quota", "param": None}  # fmt: skip
    assert not any(e.get("delta") == "after" for e in events)


def test_stream_event_too_large_is_a_translation_error() -> None:
    stream = _translation().stream()
    with pytest.raises(TranslationError):
        stream.feed(b"data: " + b"x" * (5 * 1024 * 1024))


# --- the official SDK reads what we send ---------------------------------------------------------


def _openai(status: int, body: bytes, content_type: str = "application/json") -> Any:
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")

    def handler(request: Any) -> Any:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return openai.OpenAI(
        api_key="k", base_url="http://test/v1", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )  # fmt: skip


def test_openai_sdk_reads_translated_response() -> None:
    body, _, _ = _translation().response_json((COMPLETIONS / "basic.json").read_bytes())
    response = _openai(200, body).responses.create(model="input-model", input="hi")
    assert response.output_text.startswith("Sorry, I couldn't find")
    assert response.status == "completed" and response.model == "input-model"
    assert response.usage is not None and response.usage.total_tokens == 40
    body, _, _ = _translation().response_json((COMPLETIONS / "tool_call.json").read_bytes())
    response = _openai(200, body).responses.create(model="input-model", input="hi")
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name) for c in calls] == [
        ("call_abc123", "get_weather"), ("call_xyz789", "search_web")]  # fmt: skip


def test_openai_sdk_raises_translated_error() -> None:
    openai = pytest.importorskip("openai")
    google = b'[{"error":{"code":400,"message":"bad key","status":"INVALID_ARGUMENT"}}]'
    body = _translation().error_json(400, google)
    with pytest.raises(openai.BadRequestError, match="bad key"):
        _openai(400, body).responses.create(model="m", input="hi")


def test_openai_sdk_reads_translated_stream_events() -> None:
    out = _run(_translation().stream(), (COMPLETIONS / "stream.json").read_bytes())
    events = list(_openai(200, out, "text/event-stream").responses.create(
        model="m", input="hi", stream=True))  # fmt: skip
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("Hi there! How can I help today?")
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == 286
    assert events[-1].response.output_text == text


def test_openai_sdk_stream_helper_ends_with_the_whole_answer() -> None:
    out = _run(
        _translation().stream(), (COMPLETIONS / "stream_tool_empty_content.json").read_bytes()
    )
    client = _openai(200, out, "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    call = next(item for item in final.output if item.type == "function_call")
    assert (call.call_id, call.name, call.arguments) == (
        "toolu_empty_content", "Bash", '{"command":"pwd"}')  # fmt: skip
    assert final.usage is not None and final.usage.total_tokens == 20
    text_out = _run(_translation().stream(), (COMPLETIONS / "stream.json").read_bytes())
    with _openai(200, text_out, "text/event-stream").responses.stream(model="m", input="hi") as s:
        assert s.get_final_response().output_text.endswith("I’ll tailor my help.")
