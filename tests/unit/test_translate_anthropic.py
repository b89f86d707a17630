"""OpenAI chat completions <-> Anthropic Messages translation (agw_fast.llm.translate.anthropic).

Golden cases are agentgateway's own fixtures (tests/data/agentgateway-llm, see its README):
requests compare as JSON, streams event by event with `created` normalised as the snapshots
do. The SDK tests feed our bytes to the official `openai` and `anthropic` clients.
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
from agw_fast.llm.translate.anthropic import (
    completions_to_messages,
    messages_passthrough,
    messages_to_completions,
)
from agw_fast.llm.usage import CacheExcludedUsage, Usage, usage_from_mapping

DATA = Path(__file__).resolve().parents[1] / "data" / "agentgateway-llm"


def _snapshot(path: Path) -> tuple[str, Any]:
    """(body, parsed trailing JSON or None) of an insta snapshot, front matter removed."""
    text = path.read_text()
    assert text.startswith("---\n")
    body = text[text.index("\n---\n", 4) + 5 :]
    if body.startswith("{"):
        return body, json.loads(body)
    # A stream: SSE text, then (after blank lines) the telemetry agentgateway recorded.
    at = body.find("\n{\n")
    if at == -1:
        return body, None
    return body[:at], json.loads(body[at + 1 :])


def _sse(text: str) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) per event; `created` normalised to the snapshots' 123."""
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
        if not data:
            continue
        joined = "\n".join(data)
        parsed: Any = joined if joined == "[DONE]" else json.loads(joined)
        if isinstance(parsed, dict) and "created" in parsed:
            parsed["created"] = 123
        events.append((name, parsed))
    return events


def _run(stream: StreamTranslator, data: bytes) -> bytes:
    return stream.feed(data) + stream.finish()


def _uncreated(data: bytes) -> bytes:
    """Chunk bytes with `created` (wall-clock seconds, per stream) fixed."""
    return re.sub(rb'"created":\d+', b'"created":0', data)


def _ticks() -> Callable[[], float]:
    return itertools.count(1000).__next__  # type: ignore[return-value]


# --- requests: agentgateway's golden fixtures ----------------------------------------------

COMPLETIONS_REQUESTS = ["basic", "full", "tool-call", "reasoning", "reasoning_max", "image-url"]
MESSAGES_REQUESTS = [
    "basic",
    "tools",
    "system_message",
    "reasoning",
    "metadata",
    "structured-output",
    "server_tools",
    "cache_control",
    "gpt_adaptive_thinking_with_tools",
]


@pytest.mark.parametrize("name", COMPLETIONS_REQUESTS)
def test_completions_request_matches_agentgateway(name: str) -> None:
    request = json.loads((DATA / "requests/completions" / f"{name}.json").read_text())
    _, expected = _snapshot(DATA / "requests/completions" / f"{name}.anthropic.snap")
    body, _ = completions_to_messages(request)
    assert json.loads(body) == expected["request"]


@pytest.mark.parametrize("name", MESSAGES_REQUESTS)
def test_messages_request_matches_agentgateway(name: str) -> None:
    request = json.loads((DATA / "requests/messages" / f"{name}.json").read_text())
    _, expected = _snapshot(DATA / "requests/messages" / f"{name}.completions.snap")
    body, _ = messages_to_completions(request)
    assert json.loads(body) == expected["request"]


def test_completions_request_stream_and_parallel_tool_calls() -> None:
    body, _ = completions_to_messages(
        {
            "model": "claude-x",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "stop": "END",
            "max_completion_tokens": 2000,
            "max_tokens": 10,
            "parallel_tool_calls": False,
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "reasoning_effort": "high",
        }
    )
    assert json.loads(body) == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "model": "claude-x",
        "max_tokens": 2000,
        "stop_sequences": ["END"],
        "stream": True,
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1999},
    }


def test_messages_request_stream_asks_for_usage() -> None:
    body, _ = messages_to_completions(
        {
            "model": "gpt-4o",
            "max_tokens": 5,
            "stream": True,
            "stop_sequences": ["x"],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "t", "signature": "s"},
                        {"type": "tool_use", "id": "t1", "name": "f", "input": {"é": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "r"},
                        {"type": "text", "text": "more"},
                    ],
                },
            ],
        }
    )
    assert json.loads(body) == {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "q"}]},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "t1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"é":1}'},
                    }
                ],
            },
            # Tool results come first: chat requires them right after the assistant's calls.
            {"role": "tool", "content": "r", "tool_call_id": "t1"},
            {"role": "user", "content": [{"type": "text", "text": "more"}]},
        ],
        "model": "gpt-4o",
        "max_completion_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["x"],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }


def test_reasoning_none_is_not_sent_to_a_gpt_model_that_did_not_ask_for_reasoning() -> None:
    tool = {"name": "f", "input_schema": {"type": "object"}}
    base = {"model": "gpt-4o", "max_tokens": 5, "tools": [tool], "messages": []}
    assert "reasoning_effort" not in json.loads(messages_to_completions(base)[0])
    adaptive = {**base, "thinking": {"type": "adaptive"}}
    assert json.loads(messages_to_completions(adaptive)[0])["reasoning_effort"] == "none"


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"messages": "hi"}, "messages: must be an array"),
        ({"messages": [1]}, "messages[0]: must be an object"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role: unknown role"),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "messages[0].content: must be a string or an array",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages[0].content[0].type: unknown content part type 'video'",
        ),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {}}]}]},
            "messages[0].tool_calls[0].function.name: must be a string",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {}}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments: must be a string",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id: must be a string",
        ),
        ({"messages": [], "max_tokens": -1}, "max_tokens: must be a non-negative integer"),
        ({"messages": [], "temperature": "hot"}, "temperature: must be a number"),
        ({"messages": [], "stop": [1]}, "stop[0]: must be a string"),
        ({"messages": [], "tool_choice": "sometimes"}, "tool_choice: unknown mode"),
        ({"messages": [], "reasoning_effort": "huge"}, "reasoning_effort: unknown effort"),
        ({"messages": [], "tools": [{"type": "function"}]}, "tools[0].function: must be an object"),
    ],
)
def test_completions_request_refuses_what_it_cannot_read(
    request_body: dict[str, object], message: str
) -> None:
    with pytest.raises(TranslationError, match="^" + message.replace("[", r"\[")):
        completions_to_messages(request_body)


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"messages": []}, "max_tokens: must be a non-negative integer"),
        ({"max_tokens": 1, "messages": {}}, "messages: must be an array"),
        ({"max_tokens": 1, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {"max_tokens": 1, "messages": [{"role": "user", "content": 1}]},
            "messages[0].content: must be a string or an array",
        ),
        (
            {"max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text: must be a string",
        ),
        ({"max_tokens": 1, "messages": [], "tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"max_tokens": 1, "messages": [], "tool_choice": {"type": "x"}}, "tool_choice.type"),
        ({"max_tokens": 1, "messages": [], "stream": "yes"}, "stream: must be a boolean"),
    ],
)
def test_messages_request_refuses_what_it_cannot_read(
    request_body: dict[str, object], message: str
) -> None:
    with pytest.raises(TranslationError, match="^" + message.replace("[", r"\[")):
        messages_to_completions(request_body)


# --- Anthropic responses for a chat client -------------------------------------------------


@pytest.mark.parametrize("name", ["basic", "tool", "thinking", "multiple_text_blocks"])
def test_anthropic_response_matches_agentgateway(name: str) -> None:
    source = (DATA / "response/anthropic" / f"{name}.json").read_bytes()
    snap_path = DATA / "response/anthropic" / f"{name}.messages-completions.snap"
    _, expected = _snapshot(snap_path)
    _, translation = completions_to_messages({"messages": []})
    body, usage, model = translation.response_json(source)
    got = json.loads(body)
    got["id"], got["created"] = "[id]", "[date]"
    assert got == expected["response"]
    parsed = expected["parsed"]
    assert model == parsed["provider_model"]
    assert usage == CacheExcludedUsage(
        parsed["input_tokens"],
        parsed["output_tokens"],
        parsed["total_tokens"],
        parsed.get("cached_input_tokens"),
        cache_write_tokens=parsed.get("cache_creation_input_tokens"),
    )


STREAMS = [
    "stream_basic",
    "stream_tool",
    "stream_thinking",
    "stream_tool_empty_args",
    "stream_message_delta_usage",
]


@pytest.mark.parametrize("name", STREAMS)
def test_anthropic_stream_matches_agentgateway(name: str) -> None:
    source = (DATA / "response/anthropic" / f"{name}.json").read_bytes()
    sse, parsed = _snapshot(
        DATA / "response/anthropic" / f"{name}.messages-completions-streaming.snap"
    )
    _, translation = completions_to_messages({"messages": []})
    stream = translation.stream()
    out = _run(stream, source)
    assert _sse(out.decode()) == _sse(sse)
    assert stream.model == parsed["provider_model"]
    assert stream.usage == CacheExcludedUsage(
        parsed["input_tokens"],
        parsed["output_tokens"],
        parsed["total_tokens"],
        parsed.get("cached_input_tokens"),
        cache_write_tokens=parsed.get("cache_creation_input_tokens"),
    )


def test_anthropic_stream_split_at_every_byte_gives_the_same_bytes() -> None:
    source = (DATA / "response/anthropic/stream_thinking.json").read_bytes()
    source += (DATA / "response/anthropic/stream_tool.json").read_bytes().replace(b"\n", b"\r\n")

    def translator() -> StreamTranslator:
        return completions_to_messages({"messages": []})[1].stream()

    whole = _uncreated(_run(translator(), source))
    for at in range(len(source) + 1):
        stream = translator()
        out = stream.feed(source[:at]) + stream.feed(source[at:]) + stream.finish()
        assert _uncreated(out) == whole
    stream = translator()
    out = b"".join(stream.feed(source[i : i + 1]) for i in range(len(source))) + stream.finish()
    assert _uncreated(out) == whole


def test_anthropic_stream_first_token_at_first_content_delta() -> None:
    source = (DATA / "response/anthropic/stream_basic.json").read_bytes()
    first_delta = source.index(b"event: content_block_delta")
    stream = completions_to_messages({"messages": []}, clock=_ticks())[1].stream()
    assert stream.feed(source[:first_delta]) == b""  # message_start, block start: no chunk yet
    assert stream.first_token_at is None
    assert stream.model == "claude-haiku-4-5-20251001"
    # message_start's counts until message_delta
    assert stream.usage == CacheExcludedUsage(15, 5, 20, 0, cache_write_tokens=0)
    stream.feed(source[first_delta:])
    assert stream.first_token_at == 1000
    assert stream.usage == CacheExcludedUsage(15, 21, 36, 0, cache_write_tokens=0)


def test_anthropic_stream_include_usage_sends_openais_final_usage_chunk() -> None:
    source = (DATA / "response/anthropic/stream_basic.json").read_bytes()
    request = {"messages": [], "stream": True, "stream_options": {"include_usage": True}}
    events = _sse(_run(completions_to_messages(request)[1].stream(), source).decode())
    *_, finish, usage, done = events
    assert finish[1]["choices"][0]["finish_reason"] == "stop"
    assert finish[1]["usage"] is None
    assert usage[1]["choices"] == []
    assert usage[1]["usage"]["total_tokens"] == 36
    assert usage[1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert done == (None, "[DONE]")


def test_anthropic_stream_usage_missing_from_message_delta_keeps_message_start_input() -> None:
    source = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c",'
        b'"role":"assistant","usage":{"input_tokens":7,"cache_read_input_tokens":3,'
        b'"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
        b'"max_tokens"},"usage":{"output_tokens":4}}\n\n'
    )
    stream = completions_to_messages({"messages": []})[1].stream()
    events = _sse(_run(stream, source).decode())
    chunk = events[0][1]
    assert chunk["choices"] == [
        {"index": 0, "delta": {"content": None, "role": "assistant"}, "finish_reason": "length"}
    ]
    assert chunk["usage"]["prompt_tokens"] == 7
    assert chunk["usage"]["completion_tokens"] == 4
    assert stream.usage == CacheExcludedUsage(7, 4, 11, 3)


def test_anthropic_stream_error_event_becomes_openai_stream_error() -> None:
    source = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"c",'
        b'"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    out = _run(completions_to_messages({"messages": []})[1].stream(), source)
    assert _sse(out.decode()) == [
        (
            None,
            {
                "error": {
                    "message": "Overloaded",
                    "type": "overloaded_error",
                    "param": None,
                    "code": None,
                }
            },
        )
    ]


def test_anthropic_errors_in_openai_shape() -> None:
    _, translation = completions_to_messages({"messages": []})
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    assert json.loads(translation.error_json(429, body)) == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    }
    assert json.loads(translation.error_json(502, b"<html>bad gateway</html>")) == {
        "error": {
            "message": "<html>bad gateway</html>",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"content":"x","model":"m","usage":{}}', b"\xff"]
)
def test_unreadable_anthropic_response_is_a_translation_error(body: bytes) -> None:
    with pytest.raises(TranslationError):
        completions_to_messages({"messages": []})[1].response_json(body)


# --- OpenAI responses for a Messages client ------------------------------------------------

CHAT_RESPONSES = [
    "basic",
    "tool_call",
    "cache_write",
    "truncated_tool_call",
    "openrouter_reasoning",
]


@pytest.mark.parametrize("name", CHAT_RESPONSES)
def test_chat_response_matches_agentgateway(name: str) -> None:
    source = (DATA / "response/completions" / f"{name}.json").read_bytes()
    _, expected = _snapshot(DATA / "response/completions" / f"{name}.completions-messages.snap")
    _, translation = messages_to_completions({"max_tokens": 1, "messages": []})
    body, usage, model = translation.response_json(source)
    got = json.loads(body)
    got["id"] = "[id]"
    assert got == expected["response"]
    assert model == expected["parsed"]["provider_model"]
    # Telemetry keeps the provider's own accounting (prompt_tokens includes the cache).
    assert usage == usage_from_mapping(json.loads(source)["usage"])


@pytest.mark.parametrize("name", ["stream", "stream_tool_empty_content"])
def test_chat_stream_matches_agentgateway(name: str) -> None:
    source = (DATA / "response/completions" / f"{name}.json").read_bytes()
    snap = DATA / "response/completions" / f"{name}.completions-messages-streaming.snap"
    sse, parsed = _snapshot(snap)
    stream = messages_to_completions({"max_tokens": 1, "messages": []})[1].stream()
    out = _run(stream, source)
    assert _sse(out.decode()) == _sse(sse)
    assert stream.model == parsed["provider_model"]
    assert stream.usage is not None
    assert (stream.usage.input_tokens, stream.usage.output_tokens) == (
        parsed["input_tokens"],
        parsed["output_tokens"],
    )
    assert stream.usage.total_tokens == parsed["total_tokens"]


def test_chat_stream_split_at_every_byte_gives_the_same_bytes() -> None:
    source = (DATA / "response/completions/stream_tool_empty_content.json").read_bytes()

    def translator() -> StreamTranslator:
        return messages_to_completions({"max_tokens": 1, "messages": []})[1].stream()

    whole = _run(translator(), source)
    for at in range(len(source) + 1):
        stream = translator()
        assert stream.feed(source[:at]) + stream.feed(source[at:]) + stream.finish() == whole


def _chat_chunk(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def test_chat_stream_text_then_parallel_tools_and_first_token() -> None:
    source = b"".join(
        [
            _chat_chunk({"role": "assistant", "content": ""}),
            _chat_chunk({"content": "Hi"}),
            # Arguments before the name: held until the block can open.
            _chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
            _chat_chunk({"tool_calls": [{"index": 0, "id": "t0", "function": {"name": "f"}}]}),
            _chat_chunk(
                {
                    "tool_calls": [
                        {"index": 1, "id": "t1", "function": {"name": "g", "arguments": ""}}
                    ]
                }
            ),
            _chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            _chat_chunk({}, "tool_calls"),
            b"data: "
            + json.dumps(
                {
                    "id": "c1",
                    "model": "gpt-x",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": 5,
                        "total_tokens": 15,
                        "prompt_tokens_details": {"cached_tokens": 4},
                    },
                }
            ).encode()
            + b"\n\n",
            b"data: [DONE]\n\n",
        ]
    )
    stream = messages_to_completions({"max_tokens": 1, "messages": []}, clock=_ticks())[1].stream()
    events = _sse(_run(stream, source).decode())
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[4][1]["content_block"] == {
        "type": "tool_use",
        "id": "t0",
        "name": "f",
        "input": {},
    }
    assert events[5][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a"'}
    assert events[7][1] == {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ":1}"},
    }
    assert events[10][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"input_tokens": 6, "output_tokens": 5, "cache_read_input_tokens": 4},
    }
    assert stream.first_token_at == 1000
    assert stream.usage == Usage(10, 5, 15, 4)
    assert stream.model == "gpt-x"


def test_chat_stream_without_done_or_usage_still_ends_the_message() -> None:
    source = _chat_chunk({"content": "x"}) + _chat_chunk({}, "length")
    stream = messages_to_completions({"max_tokens": 1, "messages": []})[1].stream()
    assert b"message_delta" not in stream.feed(source)  # waits for the usage chunk
    events = _sse(stream.finish().decode())
    assert [n for n, _ in events] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[1][1]["delta"]["stop_reason"] == "max_tokens"
    assert stream.usage is None


def test_chat_stream_error_becomes_anthropic_error_event() -> None:
    source = _chat_chunk({"content": "x"}) + (
        b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    )
    events = _sse(
        _run(
            messages_to_completions({"max_tokens": 1, "messages": []})[1].stream(), source
        ).decode()
    )
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "server_error", "message": "boom"}},
    )


def test_openai_errors_in_anthropic_shape() -> None:
    _, translation = messages_to_completions({"max_tokens": 1, "messages": []})
    body = b'{"error":{"message":"bad model","type":"invalid_request_error","code":null}}'
    assert json.loads(translation.error_json(400, body)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad model"},
    }
    assert json.loads(translation.error_json(429, b'{"error":{"message":"slow"}}')) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow"},
    }
    assert json.loads(translation.error_json(503, b"upstream down")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream down"},
    }


def test_chat_response_without_choices_is_a_translation_error() -> None:
    with pytest.raises(TranslationError, match="no choices"):
        messages_to_completions({"max_tokens": 1, "messages": []})[1].response_json(
            b'{"id":"x","choices":[]}'
        )


# --- Anthropic to Anthropic -----------------------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_passthrough_stream_is_unchanged_and_reads_usage(name: str) -> None:
    source = (DATA / "response/anthropic" / f"{name}.json").read_bytes()
    _, parsed = _snapshot(DATA / "response/anthropic" / f"{name}.messages-messages-streaming.snap")
    body, translation = messages_passthrough({"model": "m", "max_tokens": 1, "messages": []})
    assert json.loads(body) == {"model": "m", "max_tokens": 1, "messages": []}
    stream = translation.stream()
    out = b"".join(stream.feed(source[i : i + 7]) for i in range(0, len(source), 7))
    assert out + stream.finish() == source
    assert stream.model == parsed["provider_model"]
    assert stream.usage == CacheExcludedUsage(
        parsed["input_tokens"],
        parsed["output_tokens"],
        parsed["total_tokens"],
        parsed.get("cached_input_tokens"),
        cache_write_tokens=parsed.get("cache_creation_input_tokens"),
    )


def test_passthrough_first_token_and_whole_response() -> None:
    source = (DATA / "response/anthropic/stream_tool.json").read_bytes()
    first_delta = source.index(b"event: content_block_delta")
    stream = messages_passthrough({}, clock=_ticks())[1].stream()
    stream.feed(source[:first_delta])
    assert stream.first_token_at is None
    stream.feed(source[first_delta:])
    assert stream.first_token_at == 1000

    translation = messages_passthrough({})[1]
    whole = (DATA / "response/anthropic/basic.json").read_bytes()
    assert translation.response_json(whole) == (
        whole,
        CacheExcludedUsage(15, 21, 36, 12, cache_write_tokens=13),
        "claude-haiku-4-5-20251001",
    )
    assert translation.response_json(b"oops") == (b"oops", None, None)
    error = b'{"type":"error","error":{"type":"not_found_error","message":"no model"}}'
    assert translation.error_json(404, error) == error
    assert json.loads(translation.error_json(401, b"denied")) == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "denied"},
    }


# --- the official SDKs read what we send -----------------------------------------------------


def _mock_client(module: str, status: int, body: bytes, content_type: str) -> Any:
    """An HTTP client (of `httpx`, or `httpx2` the anthropic SDK uses) that answers `body`."""
    httpx = pytest.importorskip(module)

    def handler(request: Any) -> Any:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return httpx.Client(transport=httpx.MockTransport(handler))


def _http_package(client_class: type) -> str:
    """`httpx` or `httpx2`: the package an SDK's HTTP client class comes from."""
    return next(
        c.__module__.partition(".")[0]
        for c in client_class.__mro__
        if c.__module__.startswith("httpx")
    )


def _openai(status: int, body: bytes, content_type: str = "application/json") -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(
        api_key="k",
        base_url="http://test/v1",
        max_retries=0,
        http_client=_mock_client("httpx", status, body, content_type),
    )


def _anthropic(status: int, body: bytes, content_type: str = "application/json") -> Any:
    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(
        api_key="k",
        base_url="http://test",
        max_retries=0,
        http_client=_mock_client(
            _http_package(anthropic.DefaultHttpxClient), status, body, content_type
        ),
    )


def test_openai_sdk_reads_translated_stream() -> None:
    source = (DATA / "response/anthropic/stream_thinking.json").read_bytes()
    source += (DATA / "response/anthropic/stream_tool.json").read_bytes()
    request = {"messages": [], "stream": True, "stream_options": {"include_usage": True}}
    out = _run(completions_to_messages(request)[1].stream(), source)
    client = _openai(200, out, "text/event-stream")
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[], stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("I don't have access to real")
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather"
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"location":"San Francisco"}'
    usages = [c.usage for c in chunks if c.usage is not None]
    assert [u.total_tokens for u in usages] == [311, 27]


def test_openai_sdk_reads_translated_response_and_error() -> None:
    openai = pytest.importorskip("openai")
    source = (DATA / "response/anthropic/tool.json").read_bytes()
    _, translation = completions_to_messages({"messages": []})
    body, _, _ = translation.response_json(source)
    completion = _openai(200, body).chat.completions.create(model="m", messages=[])
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert completion.usage.prompt_tokens_details.cached_tokens == 2
    error = translation.error_json(
        400, b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}'
    )
    with pytest.raises(openai.BadRequestError) as caught:
        _openai(400, error).chat.completions.create(model="m", messages=[])
    assert caught.value.body["message"] == "bad"


def test_openai_sdk_raises_translated_stream_error() -> None:
    openai = pytest.importorskip("openai")
    source = (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    )
    out = _run(completions_to_messages({"messages": []})[1].stream(), source)
    with pytest.raises(openai.APIError, match="busy"):
        list(
            _openai(200, out, "text/event-stream").chat.completions.create(
                model="m", messages=[], stream=True
            )
        )


def _chat_stream_source() -> bytes:
    return (DATA / "response/completions/stream_tool_empty_content.json").read_bytes()


def test_anthropic_sdk_reads_translated_stream() -> None:
    text_source = (DATA / "response/completions/stream.json").read_bytes()
    for source in (text_source, _chat_stream_source()):
        out = _run(messages_to_completions({"max_tokens": 1, "messages": []})[1].stream(), source)
        client = _anthropic(200, out, "text/event-stream")
        with client.messages.stream(model="m", max_tokens=1, messages=[]) as stream:
            message = stream.get_final_message()
        if source is text_source:
            assert message.content[0].text.startswith("Hi there! How can I help today?")
            assert message.stop_reason == "end_turn"
            assert (message.usage.input_tokens, message.usage.output_tokens) == (18, 286)
        else:
            assert message.content[0].type == "tool_use"
            assert message.content[0].input == {"command": "pwd"}
            assert message.stop_reason == "tool_use"


def test_anthropic_sdk_reads_translated_response_and_error() -> None:
    anthropic = pytest.importorskip("anthropic")
    _, translation = messages_to_completions({"max_tokens": 1, "messages": []})
    source = (DATA / "response/completions/tool_call.json").read_bytes()
    body, _, _ = translation.response_json(source)
    message = _anthropic(200, body).messages.create(model="m", max_tokens=1, messages=[])
    assert [b.name for b in message.content] == ["get_weather", "search_web"]
    assert message.usage.input_tokens == 25
    error = translation.error_json(429, b'{"error":{"message":"slow","type":"requests"}}')
    with pytest.raises(anthropic.RateLimitError) as caught:
        _anthropic(429, error).messages.create(model="m", max_tokens=1, messages=[])
    assert caught.value.body["error"]["message"] == "slow"


# --- provider request constants ---------------------------------------------------------------


def test_anthropic_provider_headers_and_paths() -> None:
    from agw_fast.llm.providers import anthropic as provider

    assert provider.auth_headers("sk-ant-api03-x") == [
        (b"x-api-key", b"sk-ant-api03-x"),
        (b"anthropic-version", b"2023-06-01"),
    ]
    assert provider.auth_headers("sk-ant-oat01-x")[0] == (
        b"authorization",
        b"Bearer sk-ant-oat01-x",
    )
    assert provider.auth_headers("jwt", explicit_authorization=True)[0] == (
        b"authorization",
        b"Bearer jwt",
    )
    assert provider.path_for_route("messages") == provider.MESSAGES_PATH == "/v1/messages"
    assert provider.path_for_route("anthropicTokenCount") == provider.COUNT_TOKENS_PATH
    assert provider.DEFAULT_HOST == "api.anthropic.com"
