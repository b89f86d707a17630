"""Reply documents for the APIs the mock speaks besides OpenAI chat completions.

Anthropic Messages, Gemini `generateContent`, the OpenAI Responses and embeddings APIs, and each
API family's error body. Everything here is a pure function of a decoded request body and the
mock's fixed completion (`Completion`): no sockets, no HTTP framing (responses.py frames).
Shapes follow the official SDKs' types (`anthropic`, `openai`) and agentgateway's response
fixtures; ids look like the real ones but are random.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import string
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = [
    "ANTHROPIC",
    "GEMINI",
    "OPENAI",
    "ApiError",
    "Completion",
    "ForcedTool",
    "anthropic_count_tokens",
    "anthropic_events",
    "anthropic_message",
    "api_family",
    "embeddings",
    "error_body",
    "gemini_chunks",
    "gemini_count_tokens",
    "gemini_models",
    "gemini_response",
    "gemini_sse",
    "injected_message",
    "openai_tool_call_chunks",
    "openai_tool_call_completion",
    "openai_forced_tool",
    "request_id",
    "responses_events",
    "responses_object",
    "text_tokens",
]

OPENAI = "openai"
ANTHROPIC = "anthropic"
GEMINI = "gemini"

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ALNUM = string.ascii_letters + string.digits
_EMBEDDING_DIMENSIONS = 16  # default vector size; `dimensions` in the request overrides it
_MAX_DIMENSIONS = 4096


class ApiError(Exception):
    """A request the real API would refuse: `status` and the message for the API's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Completion:
    """What the mock "generates": the content pieces (one per token and per stream delta)."""

    pieces: tuple[str, ...]

    def take(self, limit: int | None) -> tuple[tuple[str, ...], bool]:
        """The pieces within a `max_tokens`-style `limit`, and whether the limit cut them."""
        if limit is None or limit >= len(self.pieces):
            return self.pieces, False
        return self.pieces[: max(limit, 0)], True


@dataclass(frozen=True, slots=True)
class ForcedTool:
    """A tool call the request forces (tool_choice / toolConfig): its name and made-up input."""

    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return _DUMPS(self.arguments)


# -- shared helpers ----------------------------------------------------------------------------


def _random_id(prefix: str, size: int = 24) -> str:
    return prefix + "".join(random.choices(_ALNUM, k=size))


def _hex_id(prefix: str) -> str:
    return prefix + os.urandom(24).hex()


def _text_size(node: object) -> int:
    """UTF-8 bytes of every string under a `text`, `content` or `input` key (or a bare string in
    a list), anywhere in `node`: the prompt text of all four API shapes."""
    if isinstance(node, str):
        return len(node.encode())
    size = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                if key in ("text", "content", "input", "system", "instructions"):
                    size += len(value.encode())
            elif isinstance(value, dict | list):
                size += _text_size(value)
    elif isinstance(node, list):
        for item in node:
            size += _text_size(item)
    return size


def text_tokens(*nodes: object) -> int:
    """The mock's stand-in for a tokenizer (as for chat completions): text bytes // 4 + 1."""
    return sum(_text_size(node) for node in nodes) // 4 + 1


def _example(schema: object, depth: int = 0) -> object:
    """A value that satisfies a JSON Schema's shape well enough for a test: the first enum
    value, or a placeholder of the declared type; objects get their required properties (all of
    them when none is marked required)."""
    if not isinstance(schema, dict) or depth > 8:
        return "mock"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "string")
    kind = kind.lower() if isinstance(kind, str) else ("object" if "properties" in schema else "")
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        required = schema.get("required")
        names = [n for n in required if n in properties] if isinstance(required, list) else list(
            properties)
        return {name: _example(properties[name], depth + 1) for name in names}
    if kind == "array":
        return [_example(schema.get("items"), depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "mock"


def _split(text: str, n: int) -> list[str]:
    """`text` in at most `n` non-empty pieces (at least one), without repeating it."""
    n = max(1, min(n, len(text)))
    return [text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n)]


def _sse(event: str | None, doc: object, end: bytes = b"\n\n") -> bytes:
    data = b"data: " + _DUMPS(doc).encode() + end
    return data if event is None else b"event: " + event.encode() + b"\n" + data


def _max_tokens(payload: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _tools_named(tools: object, key: str) -> Iterator[tuple[str, object]]:
    if isinstance(tools, list):
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                yield tool["name"], tool.get(key)


# -- errors ------------------------------------------------------------------------------------

_OPENAI_ERROR_TYPES = {401: "invalid_request_error", 403: "permission_error",
                       429: "requests"}
_OPENAI_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found",
                       429: "rate_limit_exceeded"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def api_family(path: bytes) -> str:
    """Which API's error shape a path gets: Anthropic Messages (also Foundry's
    `/anthropic/v1/messages`), Gemini native (`/models/{m}:action`, `/v1beta/models`), else
    OpenAI (also Azure and Gemini's OpenAI-compatible `/v1beta/openai/...`)."""
    if path.endswith((b"/v1/messages", b"/v1/messages/count_tokens")):
        return ANTHROPIC
    if b"/openai/" in path:
        return OPENAI
    if (b"/models/" in path and b":" in path) or path.endswith(b"/v1beta/models"):
        return GEMINI
    return OPENAI


def error_body(family: str, status: int, message: str) -> bytes:
    """The error JSON each API returns with `status`."""
    if family == ANTHROPIC:
        kind = _ANTHROPIC_ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error")
        return _DUMPS({"type": "error", "error": {"type": kind, "message": message},
                       "request_id": request_id()}).encode()
    if family == GEMINI:
        code = _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return _DUMPS({"error": {"code": status, "message": message, "status": code}}).encode()
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500
                                   else "invalid_request_error")
    return _DUMPS({"error": {"message": message, "type": kind, "param": None,
                             "code": _OPENAI_ERROR_CODES.get(status)}}).encode()


def request_id() -> str:
    """An Anthropic `request-id` header value."""
    return _random_id("req_011")


def injected_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{phrase} (injected by agw-fast mock-llm)"


# -- Anthropic Messages ------------------------------------------------------------------------


def _anthropic_forced_tool(payload: dict[str, Any]) -> ForcedTool | None:
    choice = payload.get("tool_choice")
    if not isinstance(choice, dict):
        return None
    tools = dict(_tools_named(payload.get("tools"), "input_schema"))
    if not tools:
        return None
    if choice.get("type") == "tool" and choice.get("name") in tools:
        name = choice["name"]
    elif choice.get("type") == "any":
        name = next(iter(tools))
    else:
        return None
    arguments = _example(tools[name])
    return ForcedTool(name, arguments if isinstance(arguments, dict) else {})


def _anthropic_check(payload: dict[str, Any]) -> None:
    # The real API validates these before anything else (400 invalid_request_error).
    if not isinstance(payload.get("messages"), list):
        raise ApiError(400, "messages: Field required")
    if _max_tokens(payload, "max_tokens") is None:
        raise ApiError(400, "max_tokens: Field required")


def _anthropic_usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": output_tokens,
            "service_tier": "standard"}


def _anthropic_plan(
    payload: dict[str, Any], completion: Completion
) -> tuple[int, tuple[str, ...], ForcedTool | None, str]:
    _anthropic_check(payload)
    input_tokens = text_tokens(payload.get("system"), payload.get("messages"))
    tool = _anthropic_forced_tool(payload)
    if tool is not None:
        return input_tokens, completion.pieces, tool, "tool_use"
    pieces, cut = completion.take(_max_tokens(payload, "max_tokens"))
    return input_tokens, pieces, None, "max_tokens" if cut else "end_turn"


def anthropic_message(payload: dict[str, Any], model: str, completion: Completion
                      ) -> dict[str, Any]:
    """POST /v1/messages without `stream`: a `Message`."""
    input_tokens, pieces, tool, stop = _anthropic_plan(payload, completion)
    content: list[dict[str, Any]]
    if tool is not None:
        content = [{"type": "tool_use", "id": _random_id("toolu_01"), "name": tool.name,
                    "input": tool.arguments}]
    else:
        content = [{"type": "text", "text": "".join(pieces)}]
    return {"id": _random_id("msg_01"), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": _anthropic_usage(input_tokens, len(pieces))}


def anthropic_events(payload: dict[str, Any], model: str, completion: Completion
                     ) -> list[bytes]:
    """POST /v1/messages with `stream: true`: the SSE events in the real API's order
    (message_start, content_block_start, ping, content_block_delta..., content_block_stop,
    message_delta, message_stop)."""
    input_tokens, pieces, tool, stop = _anthropic_plan(payload, completion)
    start_usage = _anthropic_usage(input_tokens, 1)  # the real API reports 1 output token here
    message: dict[str, Any] = {"id": _random_id("msg_01"), "type": "message", "role": "assistant",
               "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": start_usage}
    events = [_sse("message_start", {"type": "message_start", "message": message})]
    deltas: list[dict[str, Any]]
    if tool is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": _random_id("toolu_01"),
                                 "name": tool.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": part}
                  for part in _split(tool.arguments_json, len(pieces))]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    events.append(_sse("content_block_start",
                       {"type": "content_block_start", "index": 0, "content_block": block}))
    events.append(_sse("ping", {"type": "ping"}))
    events += [_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": delta}) for delta in deltas]
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final_usage = {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "output_tokens": len(pieces)}
    events.append(_sse("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
        "usage": final_usage}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


def anthropic_count_tokens(payload: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/messages/count_tokens: `{"input_tokens": N}` (as many as /v1/messages reports)."""
    if not isinstance(payload.get("messages"), list):
        raise ApiError(400, "messages: Field required")
    return {"input_tokens": text_tokens(payload.get("system"), payload.get("messages"))}


# -- Gemini generateContent --------------------------------------------------------------------


def _gemini_forced_tool(payload: dict[str, Any]) -> ForcedTool | None:
    config = payload.get("toolConfig")
    calling = config.get("functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(calling, dict) or str(calling.get("mode", "")).upper() != "ANY":
        return None
    declarations: dict[str, object] = {}
    tools = payload.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            declarations.update(_tools_named(tool.get("functionDeclarations"), "parameters"))
    allowed = calling.get("allowedFunctionNames")
    names = [n for n in allowed if n in declarations] if isinstance(allowed, list) else []
    name = names[0] if names else next(iter(declarations), None)
    if name is None:
        return None
    arguments = _example(declarations[name])
    return ForcedTool(name, arguments if isinstance(arguments, dict) else {})


def _gemini_plan(payload: dict[str, Any], completion: Completion
                 ) -> tuple[int, tuple[str, ...], ForcedTool | None, str]:
    if not isinstance(payload.get("contents"), list):
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    prompt = text_tokens(payload.get("systemInstruction"), payload.get("contents"))
    tool = _gemini_forced_tool(payload)
    if tool is not None:
        return prompt, completion.pieces, tool, "STOP"
    config = payload.get("generationConfig")
    limit = _max_tokens(config, "maxOutputTokens") if isinstance(config, dict) else None
    pieces, cut = completion.take(limit)
    return prompt, pieces, None, "MAX_TOKENS" if cut else "STOP"


def _gemini_usage(prompt: int, candidates: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + (candidates or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def gemini_response(payload: dict[str, Any], model: str, completion: Completion
                    ) -> dict[str, Any]:
    """POST .../models/{model}:generateContent: a `GenerateContentResponse`."""
    prompt, pieces, tool, finish = _gemini_plan(payload, completion)
    part: dict[str, Any] = (
        {"functionCall": {"name": tool.name, "args": tool.arguments}} if tool is not None
        else {"text": "".join(pieces)})
    return {"candidates": [{"content": {"parts": [part], "role": "model"},
                            "finishReason": finish, "index": 0}],
            "usageMetadata": _gemini_usage(prompt, len(pieces)),
            "modelVersion": model, "responseId": _random_id("", 22)}


def gemini_chunks(payload: dict[str, Any], model: str, completion: Completion
                  ) -> list[dict[str, Any]]:
    """POST .../models/{model}:streamGenerateContent: one response per piece. As the real API
    does, every chunk carries usageMetadata (the prompt count) and the last one also the
    candidates count and the finishReason."""
    prompt, pieces, tool, finish = _gemini_plan(payload, completion)
    response_id = _random_id("", 22)
    parts: list[dict[str, Any]]
    if tool is not None:
        parts = [{"functionCall": {"name": tool.name, "args": tool.arguments}}]
    else:
        parts = [{"text": piece} for piece in pieces] or [{"text": ""}]
    chunks: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        last = index == len(parts) - 1
        if last:
            candidate["finishReason"] = finish
        chunks.append({"candidates": [candidate],
                       "usageMetadata": _gemini_usage(prompt, len(pieces) if last else None),
                       "modelVersion": model, "responseId": response_id})
    return chunks


def gemini_sse(chunks: list[dict[str, Any]]) -> list[bytes]:
    # The real API ends each event with CRLF CRLF (both are valid SSE line ends).
    return [_sse(None, chunk, b"\r\n\r\n") for chunk in chunks]


def gemini_count_tokens(payload: dict[str, Any]) -> dict[str, Any]:
    """POST .../models/{model}:countTokens, with `contents` or a whole
    `generateContentRequest`."""
    inner = payload.get("generateContentRequest")
    request = inner if isinstance(inner, dict) else payload
    total = text_tokens(request.get("systemInstruction"), request.get("contents"))
    return {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT",
                                                            "tokenCount": total}]}


def gemini_models(model: str) -> dict[str, Any]:
    """GET /v1beta/models."""
    return {"models": [{"name": f"models/{model}", "version": "001", "displayName": model,
                        "inputTokenLimit": 1048576, "outputTokenLimit": 8192,
                        "supportedGenerationMethods": ["generateContent", "countTokens"]}]}


# -- OpenAI chat completions with a forced tool ------------------------------------------------


def openai_forced_tool(payload: dict[str, Any]) -> ForcedTool | None:
    """`tool_choice: "required"` (first tool) or `{"type": "function", "function": {"name"}}`."""
    choice = payload.get("tool_choice")
    tools: dict[str, object] = {}
    raw = payload.get("tools")
    for tool in raw if isinstance(raw, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools[function["name"]] = function.get("parameters")
    if not tools:
        return None
    if choice == "required":
        name = next(iter(tools))
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in tools:
            return None
    else:
        return None
    arguments = _example(tools[name])
    return ForcedTool(name, arguments if isinstance(arguments, dict) else {})


def openai_tool_call_completion(tool: ForcedTool, model: str, created: int,
                                usage: dict[str, int] | None) -> dict[str, Any]:
    call = {"id": _random_id("call_"), "type": "function",
            "function": {"name": tool.name, "arguments": tool.arguments_json}}
    doc: dict[str, Any] = {
        "id": _random_id("chatcmpl-"), "object": "chat.completion", "created": created,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                     "message": {"role": "assistant", "content": None, "refusal": None,
                                 "tool_calls": [call]}}],
    }
    if usage is not None:
        doc["usage"] = usage
    return doc


def openai_tool_call_chunks(tool: ForcedTool, model: str, created: int, pieces: int,
                            usage: dict[str, int] | None) -> list[dict[str, Any]]:
    chat_id = _random_id("chatcmpl-")

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": chat_id, "object": "chat.completion.chunk",
                               "created": created, "model": model,
                               "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}]}
        if usage is not None:
            doc["usage"] = None
        return doc

    head = {"index": 0, "id": _random_id("call_"), "type": "function",
            "function": {"name": tool.name, "arguments": ""}}
    docs = [chunk({"role": "assistant", "content": None, "tool_calls": [head]}, None)]
    docs += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}, None)
             for part in _split(tool.arguments_json, pieces)]
    docs.append(chunk({}, "tool_calls"))
    if usage is not None:
        final = chunk({}, None)
        final["choices"] = []
        final["usage"] = usage
        docs.append(final)
    return docs


# -- OpenAI Responses --------------------------------------------------------------------------


def responses_object(payload: dict[str, Any], model: str, completion: Completion,
                     *, status: str = "completed", response_id: str | None = None,
                     message_id: str | None = None) -> dict[str, Any]:
    """POST /v1/responses: a `Response` (also the one the stream's events carry)."""
    if "input" not in payload:
        raise ApiError(400, "Missing required parameter: 'input'.")
    input_tokens = text_tokens(payload.get("instructions"), payload.get("input"))
    pieces, cut = completion.take(_max_tokens(payload, "max_output_tokens"))
    done = status == "completed"
    output = [{"id": message_id or _hex_id("msg_"), "type": "message",
               "status": "incomplete" if cut else "completed", "role": "assistant",
               "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                            "text": "".join(pieces)}]}] if done else []
    now = int(time.time())
    return {
        "id": response_id or _hex_id("resp_"), "object": "response", "created_at": now,
        "status": ("incomplete" if cut else "completed") if done else status,
        "completed_at": now if done else None, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if cut and done else None,
        "instructions": payload.get("instructions"),
        "max_output_tokens": payload.get("max_output_tokens"), "model": model,
        "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": True, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled",
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": len(pieces), "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": input_tokens + len(pieces)} if done else None,
        "metadata": {},
    }


def responses_events(payload: dict[str, Any], model: str, completion: Completion
                     ) -> list[bytes]:
    """POST /v1/responses with `stream: true`: the typed events of one text message."""
    response_id, message_id = _hex_id("resp_"), _hex_id("msg_")
    started = responses_object(payload, model, completion, status="in_progress",
                               response_id=response_id)
    final = responses_object(payload, model, completion, response_id=response_id,
                             message_id=message_id)
    message: dict[str, Any] = final["output"][0]
    text = message["content"][0]["text"]
    pieces, _ = completion.take(_max_tokens(payload, "max_output_tokens"))
    docs: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**message, "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "item_id": message_id, "output_index": 0,
         "content_index": 0,
         "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}},
    ]
    docs += [{"type": "response.output_text.delta", "item_id": message_id, "output_index": 0,
              "content_index": 0, "delta": piece, "logprobs": []} for piece in pieces]
    docs += [
        {"type": "response.output_text.done", "item_id": message_id, "output_index": 0,
         "content_index": 0, "text": text, "logprobs": []},
        {"type": "response.content_part.done", "item_id": message_id, "output_index": 0,
         "content_index": 0, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed" if final["status"] == "completed"
         else "response.incomplete", "response": final},
    ]
    events = []
    for number, doc in enumerate(docs):
        doc["sequence_number"] = number
        events.append(_sse(doc["type"], doc))
    return events


# -- OpenAI embeddings -------------------------------------------------------------------------


def _vector(text: bytes, dimensions: int) -> list[float]:
    """A unit vector derived from the input's SHA-256: the same input always embeds the same."""
    digest = hashlib.shake_256(text).digest(2 * dimensions)
    raw = [int.from_bytes(digest[i : i + 2], "little") / 32768.0 - 1.0
           for i in range(0, 2 * dimensions, 2)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 8) for x in raw]


def embeddings(payload: dict[str, Any], model: str) -> dict[str, Any]:
    """POST /v1/embeddings: one deterministic vector per input (string, token list, or a list of
    either); `dimensions` sets the size, `encoding_format: "base64"` packs float32 as the real
    API (and the openai SDK's default request) does."""
    value = payload.get("input")
    inputs: list[object]
    if isinstance(value, str) or (isinstance(value, list) and value
                                  and all(isinstance(t, int) for t in value)):
        inputs = [value]
    elif isinstance(value, list) and value:
        inputs = list(value)
    else:
        raise ApiError(400, "'input' is a required property")
    dimensions = payload.get("dimensions", _EMBEDDING_DIMENSIONS)
    if not isinstance(dimensions, int) or not 1 <= dimensions <= _MAX_DIMENSIONS:
        raise ApiError(400, f"dimensions must be an integer 1-{_MAX_DIMENSIONS}")
    packed = payload.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        key = item.encode() if isinstance(item, str) else _DUMPS(item).encode()
        tokens += len(item) if isinstance(item, list) else len(key) // 4 + 1
        vector = _vector(key, dimensions)
        embedding: object = (base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
                             if packed else vector)
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# -- OpenAI moderations ------------------------------------------------------------------------

# Words the mock flags, with the category it reports (a test double, not a classifier).
_FLAGGED_WORDS = {"kill": "violence", "murder": "violence", "bomb": "violence"}


def moderations(payload: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/moderations: one result per input (a string or a list of strings); an input
    containing a word of `_FLAGGED_WORDS` (any case) is flagged under its category."""
    value = payload.get("input")
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        inputs = list(value)
    else:
        raise ApiError(400, "'input' must be a string or a list of strings")
    results = []
    for text in inputs:
        lowered = text.lower()
        hits = {category for word, category in _FLAGGED_WORDS.items() if word in lowered}
        categories = {c: c in hits for c in sorted(set(_FLAGGED_WORDS.values()))}
        scores = {c: (0.99 if flagged else 0.0001) for c, flagged in categories.items()}
        results.append({"flagged": bool(hits), "categories": categories,
                        "category_scores": scores})
    return {"id": _random_id("modr-"), "model": str(payload.get("model") or
                                                     "omni-moderation-latest"),
            "results": results}
