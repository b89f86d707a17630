"""Whole (non-streamed) responses and error bodies between Anthropic Messages and OpenAI
chat completions, both ways, as agentgateway's conversion maps them.

Telemetry `Usage` is always the provider's own accounting, whatever the client's format:
for Anthropic `input_tokens` excludes cache reads and writes (cache reads are
`cached_input_tokens`); for OpenAI `prompt_tokens` includes them. A streamed and a whole
response from one provider therefore report the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from agw_fast.llm.jsonbytes import loads as _loads
from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.anthropic_request import tool_arguments_to_input
from agw_fast.llm.usage import CacheExcludedUsage, Usage, usage_from_mapping

__all__ = [
    "anthropic_error_type",
    "anthropic_error_to_anthropic",
    "anthropic_error_to_openai",
    "anthropic_usage",
    "chat_response_to_messages",
    "chat_usage_for_anthropic",
    "messages_response_to_chat",
    "messages_usage_for_chat",
    "openai_error_to_anthropic",
    "parse_object",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

FINISH_REASON = {
    "end_turn": "stop",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
# Whole responses; a stream maps content_filter to `refusal` (agentgateway does the same).
STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "end_turn",
    "function_call": "tool_use",
}


def parse_object(body: bytes, what: str) -> dict[str, object]:
    try:
        obj = _loads(body)
    except (ValueError, RecursionError) as exc:
        raise TranslationError(f"{what} is not JSON: {exc}") from None
    if type(obj) is not dict:
        raise TranslationError(f"{what} is not a JSON object")
    return obj


def count(value: object) -> int | None:
    """A token count, or None for anything that is not a non-negative integer."""
    if type(value) is int and value >= 0:
        return value
    return None


def anthropic_usage(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None = None,
) -> Usage:
    total = None if input_tokens is None or output_tokens is None else input_tokens + output_tokens
    return CacheExcludedUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


def messages_usage_for_chat(
    input_tokens: int, output_tokens: int, cache_read: int | None, cache_write: int | None
) -> dict[str, object]:
    """Anthropic token counts as a chat `usage` object, agentgateway's shape: the prompt count
    is Anthropic's (cache excluded), and the cache counts appear both under
    `prompt_tokens_details` and under Anthropic's own names."""
    usage: dict[str, object] = {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    if cache_read is not None or cache_write is not None:
        details: dict[str, object] = {"cached_tokens": cache_read or 0}
        if cache_write is not None:
            details["cache_write_tokens"] = cache_write
        usage["prompt_tokens_details"] = details
        if cache_read is not None:
            usage["cache_read_input_tokens"] = cache_read
        if cache_write is not None:
            usage["cache_creation_input_tokens"] = cache_write
    return usage


def messages_response_to_chat(body: bytes, created: int) -> tuple[bytes, Usage, str]:
    """An Anthropic Messages response as a `chat.completion` (one choice)."""
    resp = parse_object(body, "Anthropic response")
    content = resp.get("content")
    model = resp.get("model")
    usage = resp.get("usage")
    if type(content) is not list or type(model) is not str or type(usage) is not dict:
        raise TranslationError("Anthropic response lacks content, model or usage")
    text: str | None = None
    reasoning: str | None = None
    calls: list[dict[str, object]] = []
    for block in content:
        if type(block) is not dict:
            continue
        kind = block.get("type")
        if kind == "text":
            piece = block.get("text")
            if type(piece) is str:
                # Text split around citations arrives as several blocks: one content string.
                text = piece if text is None else text + piece
        elif kind == "tool_use" or kind == "server_tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": _dumps(block.get("input")),
                    },
                }
            )
        elif kind == "thinking":
            thinking = block.get("thinking")
            if type(thinking) is str:
                reasoning = thinking
    message: dict[str, object] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    stop = resp.get("stop_reason")
    input_tokens = count(usage.get("input_tokens"))
    output_tokens = count(usage.get("output_tokens"))
    cache_read = count(usage.get("cache_read_input_tokens"))
    cache_write = count(usage.get("cache_creation_input_tokens"))
    out: dict[str, object] = {
        "id": resp.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASON.get(stop) if type(stop) is str else None,
            }
        ],
        "usage": messages_usage_for_chat(
            input_tokens or 0, output_tokens or 0, cache_read, cache_write
        ),
    }
    tier = usage.get("service_tier")
    if type(tier) is str:
        out["service_tier"] = tier
    return _dumps(out).encode(), anthropic_usage(
        input_tokens, output_tokens, cache_read, cache_write
    ), model


def chat_usage_for_anthropic(usage: Mapping[str, object] | None) -> dict[str, object]:
    """A chat `usage` object as Anthropic's: input excludes the cache reads and writes."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    details = usage.get("prompt_tokens_details")
    details = details if type(details) is dict else {}
    cache_write = count(details.get("cache_write_tokens"))
    if cache_write is None:
        cache_write = count(usage.get("cache_creation_input_tokens"))
    cache_read = count(details.get("cached_tokens"))
    if cache_read is None:
        cache_read = count(usage.get("cache_read_input_tokens"))
    prompt = count(usage.get("prompt_tokens")) or 0
    out: dict[str, object] = {
        "input_tokens": max(prompt - (cache_write or 0) - (cache_read or 0), 0),
        "output_tokens": count(usage.get("completion_tokens")) or 0,
    }
    if cache_write is not None:
        out["cache_creation_input_tokens"] = cache_write
    if cache_read is not None:
        out["cache_read_input_tokens"] = cache_read
    return out


def chat_response_to_messages(body: bytes) -> tuple[bytes, Usage | None, str | None]:
    """A `chat.completion` as an Anthropic Messages response (its first choice)."""
    resp = parse_object(body, "chat completion")
    choices = resp.get("choices")
    if type(choices) is not list or not choices or type(choices[0]) is not dict:
        raise TranslationError("chat completion has no choices")
    choice = choices[0]
    message = choice.get("message")
    message = message if type(message) is dict else {}
    content: list[dict[str, object]] = []
    text = message.get("content")
    if type(text) is str:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    if type(calls) is list:
        for call in calls:
            if type(call) is not dict or call.get("type", "function") != "function":
                continue
            function = call.get("function")
            if type(function) is not dict:
                continue
            arguments = function.get("arguments")
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": tool_arguments_to_input(arguments if type(arguments) is str else ""),
                }
            )
    finish = choice.get("finish_reason")
    model = resp.get("model")
    usage = resp.get("usage")
    usage = usage if type(usage) is dict else None
    anthropic_usage_obj = chat_usage_for_anthropic(usage)
    tier = resp.get("service_tier")
    if usage is not None and type(tier) is str:
        anthropic_usage_obj["service_tier"] = tier
    out = {
        "id": resp.get("id"),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": STOP_REASON.get(finish, "end_turn") if type(finish) is str else "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage_obj,
    }
    return (
        _dumps(out).encode(),
        None if usage is None else usage_from_mapping(usage),
        model if type(model) is str else None,
    )


def anthropic_error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status, when the body does not name one."""
    if status == 400:
        return "invalid_request_error"
    if status == 401 or status == 403:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    return "api_error"


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def _anthropic_error(body: bytes) -> tuple[str, str] | None:
    """(type, message) of an Anthropic error body `{"type":"error","error":{...}}`."""
    try:
        obj = _loads(body)
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict:
        return None
    error = obj.get("error")
    if type(error) is not dict:
        return None
    kind, message = error.get("type"), error.get("message")
    if type(kind) is not str or type(message) is not str:
        return None
    return kind, message


def openai_error_json(kind: str, message: str) -> bytes:
    return _dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": None}}
    ).encode()


def anthropic_error_json(kind: str, message: str) -> bytes:
    return _dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def anthropic_error_to_openai(status: int, body: bytes) -> bytes:
    """An Anthropic error in OpenAI's error shape. Anthropic's error type is kept (its names
    mostly coincide with OpenAI's, and `overloaded_error` says more than agentgateway's fixed
    `invalid_request_error`); an unreadable body becomes the message."""
    parsed = _anthropic_error(body)
    if parsed is None:
        return openai_error_json(anthropic_error_type(status), _text(body))
    return openai_error_json(*parsed)


def anthropic_error_to_anthropic(status: int, body: bytes) -> bytes:
    """An Anthropic provider's error for an Anthropic client: unchanged when it is one."""
    if _anthropic_error(body) is not None:
        return body
    return anthropic_error_json(anthropic_error_type(status), _text(body))


def openai_error_to_anthropic(status: int, body: bytes) -> bytes:
    """An OpenAI-style error `{"error":{"message","type"}}` in Anthropic's error shape."""
    message: str | None = None
    kind: str | None = None
    try:
        obj = _loads(body)
    except (ValueError, RecursionError):
        obj = None
    if type(obj) is list and obj:
        obj = obj[0]  # Google's OpenAI-compatible endpoints wrap the error in an array
    if type(obj) is dict:
        error = obj.get("error")
        if type(error) is dict:
            raw_message, raw_kind = error.get("message"), error.get("type")
            message = raw_message if type(raw_message) is str else None
            kind = raw_kind if type(raw_kind) is str else None
    if message is None:
        return anthropic_error_json(anthropic_error_type(status), _text(body))
    return anthropic_error_json(kind or anthropic_error_type(status), message)
