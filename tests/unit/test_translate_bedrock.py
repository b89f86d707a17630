"""Bedrock translation: agentgateway's golden fixtures (requests, JSON responses, event streams),
the AWS event-stream decoder at every split and with bad CRCs, tool names, errors."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.bedrock import (
    PLACEHOLDER_TOOL,
    ToolNames,
    bedrock_path,
    build_converse,
    completions_to_bedrock,
)
from agw_fast.llm.translate.bedrock_eventstream import (
    EventStreamDecoder,
    EventStreamError,
    encode_message,
)
from agw_fast.llm.translate.bedrock_response import (
    BedrockToCompletions,
    BedrockToCompletionsStream,
    openai_error_from_bedrock,
)
from agw_fast.llm.usage import CacheExcludedUsage

FIXTURES = Path(__file__).parent.parent / "data" / "agentgateway-llm"
REQUESTS = FIXTURES / "requests" / "completions"
RESPONSES = FIXTURES / "response" / "bedrock"
MODEL = "input-model"  # what agentgateway's response snapshots were taken with


def snapshot(path: Path) -> object:
    """The JSON of an insta snapshot (after its YAML header)."""
    return json.loads(path.read_text().split("\n---\n", 1)[1])


def without_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def agentgateway_request(expected: dict[str, object]) -> dict[str, object]:
    """agentgateway's snapshot, with the two documented differences undone: null fields are
    left out, and the tool choice is Converse's `toolChoice` (agentgateway writes
    `tool_choice`, with unit variants as bare strings)."""
    expected = without_nulls(expected)  # type: ignore[assignment]
    config = expected.get("toolConfig")
    if isinstance(config, dict) and "tool_choice" in config:
        choice = config.pop("tool_choice")
        config["toolChoice"] = {choice: {}} if isinstance(choice, str) else choice
    return expected


REQUEST_FIXTURES = sorted(p.stem for p in REQUESTS.glob("*.json")
                          if (REQUESTS / f"{p.stem}.bedrock.snap").exists())  # fmt: skip


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_request_matches_agentgateway(name: str) -> None:
    request = json.loads((REQUESTS / f"{name}.json").read_text())
    expected = snapshot(REQUESTS / f"{name}.bedrock.snap")
    assert isinstance(expected, dict)
    body, _ = completions_to_bedrock(request, str(request["model"]))
    assert json.loads(body) == agentgateway_request(expected["request"])


def test_request_fixtures_are_all_there() -> None:
    assert {"basic", "full", "tool-call", "reasoning", "reasoning_replay"} <= set(
        REQUEST_FIXTURES
    )


def test_tool_choice_modes() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    for choice, expected in (("auto", {"auto": {}}), ("required", {"any": {}})):
        body, _ = build_converse({"messages": [{"role": "user", "content": "x"}], "tools": tools,
                                  "tool_choice": choice})  # fmt: skip
        assert body["toolConfig"] == {"tools": [{"toolSpec": {
            "name": "f", "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": expected}
    body, _ = build_converse({"messages": [{"role": "user", "content": "x"}], "tools": tools,
                              "tool_choice": "none"})  # fmt: skip
    assert "toolChoice" not in body["toolConfig"]  # type: ignore[operator]


def test_tool_history_without_tools_gets_the_placeholder() -> None:
    body, _ = build_converse({"messages": [
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": "[1]"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ]})  # fmt: skip
    assert body["messages"][0]["content"][0]["toolUse"]["input"] == {}  # type: ignore[index]
    tools = body["toolConfig"]["tools"]  # type: ignore[index]
    assert tools[0]["toolSpec"]["name"] == PLACEHOLDER_TOOL


def test_tool_names_bedrock_rejects_are_rewritten_and_restored() -> None:
    names = ToolNames()
    long_name = "x" * 80
    assert names.register("get_weather") == "get_weather"
    dotted = names.register("ns.get weather")
    assert dotted == "ns_get_weather"
    shortened = names.register(long_name)
    assert len(shortened) == 64 and shortened.startswith("x" * 57 + "_")
    assert names.register(long_name) == shortened  # stable within a request
    clash = names.register("ns/get_weather")  # sanitises to a name already taken
    assert clash != dotted and len(clash) <= 64
    assert names.restore(dotted) == "ns.get weather"
    assert names.restore("get_weather") == "get_weather"
    request = {"messages": [{"role": "user", "content": "x"}],
               "tools": [{"type": "function", "function": {"name": "ns.get weather"}}]}
    _, translation = completions_to_bedrock(request, "m")
    reply = {"output": {"message": {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "ns_get_weather", "input": {"a": 1}}}]}},
        "stopReason": "tool_use", "usage": {"inputTokens": 1, "outputTokens": 2,
                                            "totalTokens": 3}}  # fmt: skip
    out, _, _ = translation.response_json(json.dumps(reply).encode())
    message = json.loads(out)["choices"][0]["message"]
    assert message["tool_calls"] == [{"id": "t1", "type": "function", "function": {
        "name": "ns.get weather", "arguments": '{"a":1}'}}]
    assert json.loads(out)["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/cat.png", "must be base64 data URLs"),
        ("data:image/png,abc", "must be base64-encoded"),
        ("data:text/plain;base64,abc", r"image/\* media type"),
    ],
)
def test_images_bedrock_cannot_take_are_refused(url: str, message: str) -> None:
    request = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}  # fmt: skip
    with pytest.raises(TranslationError, match=message):
        build_converse(request)


def test_guardrail_and_json_schema() -> None:
    body, _ = build_converse(
        {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7,
         "stop": "END", "response_format": {"type": "json_schema", "json_schema": {
             "name": "n", "description": "d", "schema": {"type": "object"}}}},
        guardrail=("gr-1", "2"),
    )  # fmt: skip
    assert body["inferenceConfig"] == {"maxTokens": 7, "stopSequences": ["END"]}
    assert body["guardrailConfig"] == {"guardrailIdentifier": "gr-1", "guardrailVersion": "2",
                                       "trace": "enabled"}  # fmt: skip
    assert body["outputConfig"] == {"textFormat": {"type": "json_schema", "structure": {
        "jsonSchema": {"schema": '{"type":"object"}', "name": "n", "description": "d"}}}}


def test_path_escapes_the_model_segment() -> None:
    assert bedrock_path("anthropic.claude-3:0", False) == "/model/anthropic.claude-3:0/converse"
    arn = "arn:aws:bedrock:us-east-1:1:inference-profile/us.x"
    assert bedrock_path(arn, True) == (
        "/model/arn:aws:bedrock:us-east-1:1:inference-profile%2Fus.x/converse-stream"
    )


# -- responses ----------------------------------------------------------------------------------


def _normalized_response(body: bytes) -> dict[str, object]:
    doc = json.loads(body)
    assert doc["id"].startswith("bedrock-") and isinstance(doc["created"], int)
    doc["id"], doc["created"] = "[id]", "[date]"
    return without_nulls(doc)  # type: ignore[return-value]


JSON_FIXTURES = sorted(p.name.split(".")[0] for p in RESPONSES.glob("*.bedrock-completions.snap"))


@pytest.mark.parametrize("name", JSON_FIXTURES)
def test_json_response_matches_agentgateway(name: str) -> None:
    expected = snapshot(RESPONSES / f"{name}.bedrock-completions.snap")
    assert isinstance(expected, dict)
    body = (RESPONSES / f"{name}.json").read_bytes()
    out, usage, model = BedrockToCompletions(MODEL, {}).response_json(body)
    assert _normalized_response(out) == without_nulls(expected["response"])
    parsed = expected["parsed"]
    assert usage == CacheExcludedUsage(
        parsed["input_tokens"], parsed["output_tokens"], parsed["total_tokens"],
        parsed.get("cached_input_tokens"),
        cache_write_tokens=parsed.get("cache_creation_input_tokens"),
    )
    assert model == parsed["provider_model"]


def _stream_snapshot(name: str) -> tuple[list[object], dict[str, object]]:
    text = (RESPONSES / f"{name}.bedrock-completions-streaming.snap").read_text()
    body = text.split("\n---\n", 1)[1]
    sse, _, telemetry = body.partition("\n\n\n\n")
    events = [json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]"
              for line in sse.strip().split("\n\n")]  # fmt: skip
    return events, json.loads(telemetry)


def _events(out: bytes) -> list[object]:
    events: list[object] = []
    for block in out.decode().strip().split("\n\n"):
        assert block.startswith("data: ")
        if block == "data: [DONE]":
            events.append("[DONE]")
            continue
        doc = json.loads(block[6:])
        doc["id"], doc["created"] = "request_id", 123
        events.append(doc)
    return events


STREAM_FIXTURES = sorted(
    p.name.split(".")[0] for p in RESPONSES.glob("*.bedrock-completions-streaming.snap")
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_stream_matches_agentgateway(name: str) -> None:
    expected, telemetry = _stream_snapshot(name)
    stream = BedrockToCompletions(MODEL, {}, Clock()).stream()
    out = stream.feed((RESPONSES / f"{name}.bin").read_bytes()) + stream.finish()
    assert _events(out) == expected
    assert stream.usage == CacheExcludedUsage(
        telemetry["input_tokens"], telemetry["output_tokens"], telemetry["total_tokens"],
    )
    assert stream.model == MODEL
    assert stream.first_token_at == 101.0


@pytest.mark.parametrize("name", STREAM_FIXTURES)
def test_stream_at_every_split(name: str) -> None:
    data = (RESPONSES / f"{name}.bin").read_bytes()
    whole = BedrockToCompletionsStream(MODEL, {})
    reference = _events(whole.feed(data) + whole.finish())
    for cut in range(1, len(data)):
        stream = BedrockToCompletionsStream(MODEL, {})
        out = stream.feed(data[:cut]) + stream.feed(data[cut:]) + stream.finish()
        assert _events(out) == reference, cut
    stream = BedrockToCompletionsStream(MODEL, {})
    out = b"".join(stream.feed(data[i : i + 1]) for i in range(len(data))) + stream.finish()
    assert _events(out) == reference


def test_an_exception_in_the_stream_becomes_an_error_event() -> None:
    stream = BedrockToCompletionsStream(MODEL, {})
    start = encode_message({":event-type": "messageStart", ":message-type": "event"},
                           b'{"role":"assistant"}')  # fmt: skip
    failure = encode_message(
        {":exception-type": "throttlingException", ":message-type": "exception"},
        b'{"message":"Too many requests"}',
    )
    out = stream.feed(start + failure) + stream.finish()
    events = out.decode().strip().split("\n\n")
    assert json.loads(events[-1][6:]) == {"error": {
        "type": "throttlingException", "message": "throttlingException: Too many requests",
        "param": None, "code": None}}  # fmt: skip
    assert "[DONE]" not in out.decode()


def test_a_truncated_stream_is_an_error() -> None:
    data = (RESPONSES / "basic.bin").read_bytes()
    stream = BedrockToCompletionsStream(MODEL, {})
    stream.feed(data[:-3])
    with pytest.raises(TranslationError, match="inside a frame"):
        stream.finish()


def test_errors_become_openai_errors() -> None:
    for body in (b'{"message":"bad model"}', b'{"Message":"bad model"}'):
        assert json.loads(openai_error_from_bedrock(400, body)) == {"error": {
            "type": "invalid_request_error", "message": "bad model", "param": None,
            "code": None}}  # fmt: skip
    assert json.loads(openai_error_from_bedrock(500, b"upstream down"))["error"]["message"] == (
        "upstream down"
    )


def test_a_response_without_a_message_is_refused() -> None:
    with pytest.raises(TranslationError):
        BedrockToCompletions(MODEL, {}).response_json(b'{"stopReason":"end_turn"}')


# -- the event-stream decoder -------------------------------------------------------------------


def test_decoder_reads_headers_and_payload() -> None:
    frame = encode_message({":event-type": "metadata", ":message-type": "event"}, b"{}")
    (message,) = EventStreamDecoder().feed(frame)
    assert message.header(":event-type") == "metadata"
    assert message.payload == b"{}"


def test_decoder_at_every_byte_boundary() -> None:
    frames = [encode_message({":event-type": f"e{i}"}, b"x" * i) for i in range(5)]
    data = b"".join(frames)
    for cut in range(len(data) + 1):
        decoder = EventStreamDecoder()
        messages = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert [m.payload for m in messages] == [b"x" * i for i in range(5)]
        assert decoder.pending == 0


def test_decoder_rejects_a_bad_message_crc() -> None:
    frame = bytearray(encode_message({":event-type": "x"}, b"payload"))
    frame[-6] ^= 0xFF  # a payload byte
    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(bytes(frame))


def test_decoder_rejects_a_bad_prelude_crc() -> None:
    frame = bytearray(encode_message({":event-type": "x"}, b"payload"))
    frame[3] ^= 0x01  # the total length
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError, match="prelude CRC"):
        decoder.feed(bytes(frame[:12]))  # found before the rest arrives


def test_decoder_rejects_impossible_and_oversized_lengths() -> None:
    prelude = struct.pack(">II", 8, 0)
    with pytest.raises(EventStreamError, match="invalid"):
        EventStreamDecoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
    frame = encode_message({}, b"x" * 100)
    with pytest.raises(EventStreamError, match="limit"):
        EventStreamDecoder(max_frame=64).feed(frame)


def test_decoder_reads_every_header_type() -> None:
    raw = b"".join([
        b"\x01a\x00", b"\x01b\x01", b"\x01c\x02\x05", b"\x01d\x03\x00\x01",
        b"\x01e\x04" + b"\x00" * 4, b"\x01f\x05" + b"\x00" * 8, b"\x01g\x06\x00\x02hi",
        b"\x01h\x08" + b"\x00" * 8, b"\x01i\x09" + b"\x00" * 16,
    ])  # fmt: skip
    total = 16 + len(raw)
    prelude = struct.pack(">II", total, len(raw))
    body = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw
    frame = body + struct.pack(">I", zlib.crc32(body))
    (message,) = EventStreamDecoder().feed(frame)
    assert message.headers["a"] is True and message.headers["b"] is False
    assert message.headers["g"] == b"hi" and message.header("g") is None
    assert message.payload == b""
