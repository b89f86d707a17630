"""Bedrock Converse responses -> OpenAI chat completions (JSON, event stream, errors).

Follows agentgateway's `ConverseResponseAdapter::to_completions` and
`from_completions::translate_stream`:

- text blocks concatenate into `content`; a reasoning block becomes `reasoning_content` (its
  signature, when not empty, `reasoning_signature`, so a client can replay it); `toolUse`
  blocks become `tool_calls` with their names restored;
- `stopReason`: end_turn/stop_sequence -> stop, max_tokens/model_context_window_exceeded ->
  length, content_filtered/guardrail_intervened -> content_filter, tool_use -> tool_calls;
- `usage` is exact: prompt/completion/total from input/output/total tokens, and the cache
  counts (when Bedrock reports either) as `prompt_tokens_details.cached_tokens`/
  `cache_write_tokens` plus `cache_read_input_tokens`/`cache_creation_input_tokens`;
- the stream (AWS event stream, bedrock_eventstream.py) becomes `chat.completion.chunk`s:
  the role on `messageStart`, one chunk per content delta (tool calls numbered from 0 in the
  order they start; Bedrock numbers every block), the finish reason on `messageStop`, a usage
  chunk with no choices on `metadata`, then `data: [DONE]`;
- errors: Bedrock's `{"message": ...}` (or `Message`) becomes an OpenAI
  `invalid_request_error` with that message, whatever the status (as agentgateway).

The model reported is the Bedrock model id the request was sent to. Differences: a stream's
chunk id is random (agentgateway uses the `x-amzn-requestid` response header, which a
translator does not see); an `exception` message in the stream (agentgateway drops it) is
passed on as an OpenAI error event, and no `[DONE]` follows it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping

from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.bedrock_eventstream import EventStreamDecoder, EventStreamMessage
from agw_fast.llm.usage import CacheExcludedUsage, Usage

__all__ = [
    "BedrockToCompletions",
    "BedrockToCompletionsStream",
    "FINISH_REASONS",
    "openai_error_from_bedrock",
]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "tool_use": "tool_calls",
}
_DONE = b"data: [DONE]\n\n"
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Clock = Callable[[], float]


def _count(usage: Mapping[str, object], key: str) -> int | None:
    value = usage.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise TranslationError(f"failed to parse response: usage.{key} is not a count")
    return value


def _usage(raw: object) -> tuple[dict[str, object], Usage]:
    """(OpenAI `usage`, telemetry usage); a missing usage counts zeros, as agentgateway's
    `unwrap_or_default`."""
    if raw is None:
        raw = {}
    if type(raw) is not dict:
        raise TranslationError("failed to parse response: usage is not an object")
    prompt = _count(raw, "inputTokens") or 0
    completion = _count(raw, "outputTokens") or 0
    total = _count(raw, "totalTokens") or 0
    cache_read = _count(raw, "cacheReadInputTokens")
    cache_write = _count(raw, "cacheWriteInputTokens")
    out: dict[str, object] = {
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
    }  # fmt: skip
    if cache_read is not None or cache_write is not None:
        details: dict[str, object] = {}
        if cache_read is not None:
            details["cached_tokens"] = cache_read
            out["cache_read_input_tokens"] = cache_read
        if cache_write is not None:
            details["cache_write_tokens"] = cache_write
            out["cache_creation_input_tokens"] = cache_write
        out["prompt_tokens_details"] = details
    # Bedrock's inputTokens leaves the cache out (agentgateway's InputExcludesCache).
    return out, CacheExcludedUsage(
        prompt, completion, total, cache_read, cache_write_tokens=cache_write
    )


def _finish(reason: object) -> str:
    if type(reason) is not str:
        raise TranslationError("failed to parse response: missing stopReason")
    return FINISH_REASONS.get(reason, "stop")


def _message(content: object, names: Mapping[str, str]) -> dict[str, object]:
    if type(content) is not list:
        raise TranslationError("failed to parse response: message.content is not an array")
    text: str | None = None
    reasoning: str | None = None
    signature: str | None = None
    calls: list[dict[str, object]] = []
    for block in content:
        if type(block) is not dict:
            continue
        if type(block.get("text")) is str:
            text = (text or "") + block["text"]
        elif type(block.get("reasoningContent")) is dict:
            rc = block["reasoningContent"]
            structured = rc.get("reasoningText")
            if type(structured) is dict:
                reasoning = structured.get("text") if type(structured.get("text")) is str else ""
                sig = structured.get("signature")
                if type(sig) is str and sig:
                    signature = sig
            elif type(rc.get("text")) is str:
                reasoning = rc["text"]
        elif type(block.get("toolUse")) is dict:
            use = block["toolUse"]
            name = use.get("name")
            calls.append({
                "id": use.get("toolUseId"), "type": "function",
                "function": {"name": names.get(name, name) if type(name) is str else name,
                             "arguments": _encode(use.get("input"))},
            })  # fmt: skip
    message: dict[str, object] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if signature is not None:
        message["reasoning_signature"] = signature
    return message


def _error_message(body: bytes) -> str:
    try:
        obj = loads(body)
    except ValueError:
        obj = None
    if type(obj) is dict:
        for key in ("message", "Message"):
            if type(obj.get(key)) is str:
                return str(obj[key])
    return body.decode("utf-8", "replace")


def openai_error_from_bedrock(status: int, body: bytes) -> bytes:
    del status  # agentgateway answers every Bedrock error as an invalid request
    error = {"type": "invalid_request_error", "message": _error_message(body),
             "param": None, "code": None}  # fmt: skip
    return _encode({"error": error}).encode()


class BedrockToCompletions:
    """The way back for an OpenAI chat client served by Bedrock Converse."""

    __slots__ = ("_model", "_names", "_clock")

    def __init__(self, model: str, names: Mapping[str, str], clock: Clock = time.monotonic) -> None:
        self._model = model
        self._names = names  # Bedrock-safe tool name -> the client's
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        obj = loads(body)
        if type(obj) is not dict:
            raise TranslationError("failed to parse response: expected a JSON object")
        output = obj.get("output")
        message = output.get("message") if type(output) is dict else None
        if type(message) is not dict:
            raise TranslationError("incomplete response: no output message")
        usage, telemetry = _usage(obj.get("usage"))
        now = time.time()
        doc = {
            "id": f"bedrock-{int(now * 1000)}",
            "object": "chat.completion",
            "created": int(now),
            "model": self._model,
            "choices": [{"index": 0, "message": _message(message.get("content"), self._names),
                         "finish_reason": _finish(obj.get("stopReason"))}],
            "usage": usage,
        }  # fmt: skip
        return _encode(doc).encode(), telemetry, self._model

    def error_json(self, status: int, body: bytes) -> bytes:
        return openai_error_from_bedrock(status, body)

    def stream(self) -> BedrockToCompletionsStream:
        return BedrockToCompletionsStream(self._model, self._names, self._clock)


class BedrockToCompletionsStream:
    """One Converse event stream -> OpenAI chat completion chunks (SSE)."""

    __slots__ = (
        "usage", "model", "first_token_at", "_decoder", "_names", "_clock", "_id", "_created",
        "_tools", "_next_tool", "_failed",
    )  # fmt: skip

    def __init__(self, model: str, names: Mapping[str, str], clock: Clock = time.monotonic) -> None:
        self.usage: Usage | None = None
        self.model: str | None = model
        self.first_token_at: float | None = None
        self._decoder = EventStreamDecoder()
        self._names = names
        self._clock = clock
        self._id = os.urandom(8).hex()
        self._created = int(time.time())
        self._tools: dict[object, int] = {}  # Bedrock block index -> OpenAI tool call index
        self._next_tool = 0
        self._failed = False

    def feed(self, data: bytes) -> bytes:
        out = [self._event(message) for message in self._decoder.feed(data)]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._decoder.pending:
            raise TranslationError("the event stream ended inside a frame")
        return b"" if self._failed else _DONE

    def _chunk(self, choices: list[object], usage: object = None) -> bytes:
        doc = {
            "id": self._id, "choices": choices, "created": self._created, "model": self.model,
            "service_tier": None, "system_fingerprint": None, "object": "chat.completion.chunk",
            "usage": usage,
        }  # fmt: skip
        return b"data: " + _encode(doc).encode() + b"\n\n"

    def _delta(self, delta: dict[str, object], finish: str | None = None) -> bytes:
        choice: dict[str, object] = {"index": 0, "delta": delta}
        if finish is not None:
            choice["finish_reason"] = finish
        return self._chunk([choice])

    def _event(self, message: EventStreamMessage) -> bytes:
        kind = message.header(":message-type")
        if kind is not None and kind != "event":
            # `exception` (or `error`): the stream's last message.
            name = message.header(":exception-type") or message.header(":error-code") or "error"
            text = _error_message(message.payload)
            self._failed = True
            error = {"type": name, "message": f"{name}: {text}", "param": None, "code": None}
            return b"data: " + _encode({"error": error}).encode() + b"\n\n"
        event = message.header(":event-type")
        try:
            obj = loads(message.payload)
        except ValueError:
            return b""  # agentgateway skips an event it cannot read
        if type(obj) is not dict:
            return b""
        if event == "contentBlockDelta":
            return self._content_delta(obj)
        if event == "contentBlockStart":
            start = obj.get("start")
            use = start.get("toolUse") if type(start) is dict else None
            if type(use) is not dict:
                return b""
            index = self._next_tool
            self._next_tool += 1
            self._tools[obj.get("contentBlockIndex")] = index
            tool = use.get("name")
            restored = self._names.get(tool, tool) if type(tool) is str else tool
            call = {"index": index, "id": use.get("toolUseId"), "type": "function",
                    "function": {"name": restored}}  # fmt: skip
            return self._delta({"content": None, "tool_calls": [call]})
        if event == "contentBlockStop":
            self._tools.pop(obj.get("contentBlockIndex"), None)
            return b""
        if event == "messageStart":
            role = obj.get("role")
            return self._delta({"content": None, "role": role if type(role) is str else None})
        if event == "messageStop":
            reason = obj.get("stopReason")
            finish = FINISH_REASONS.get(reason, "stop") if type(reason) is str else "stop"
            return self._delta({"content": None}, finish)
        if event == "metadata":
            raw = obj.get("usage")
            if type(raw) is not dict:
                return b""
            try:
                usage, self.usage = _usage(raw)
            except TranslationError:
                return b""
            return self._chunk([], usage)
        return b""

    def _content_delta(self, obj: dict[str, object]) -> bytes:
        if self.first_token_at is None:
            self.first_token_at = self._clock()
        delta = obj.get("delta")
        if type(delta) is not dict:
            return b""
        out: dict[str, object]
        if type(delta.get("text")) is str:
            out = {"content": delta["text"]}
        elif type(delta.get("reasoningContent")) is dict:
            reasoning = delta["reasoningContent"]
            out = {"content": None}
            if type(reasoning.get("text")) is str:
                out["reasoning_content"] = reasoning["text"]
            elif "redactedContent" in reasoning:
                out["reasoning_content"] = "[REDACTED]"
            elif type(reasoning.get("signature")) is str:
                out["reasoning_signature"] = reasoning["signature"]
            else:
                return b""
        elif type(delta.get("toolUse")) is dict:
            index = self._tools.get(obj.get("contentBlockIndex"))
            arguments = delta["toolUse"].get("input")
            if index is None or type(arguments) is not str:
                return b""
            call = {"index": index, "id": None, "type": None,
                    "function": {"arguments": arguments}}  # fmt: skip
            out = {"content": None, "tool_calls": [call]}
        else:
            return b""
        return self._delta(out)
