"""OpenAI Responses API clients served by a chat completions provider.

`responses_to_completions` takes a `POST /v1/responses` body and returns the chat
completions body to send (responses_request.py) and the `Translation` for the way back: a
whole `chat.completion` becomes a Responses object (below), a stream of chunks the
Responses streaming events (responses_stream.py), a provider error OpenAI's error shape.
This is agentgateway's `Responses -> OpenAICompletions` translation
(`conversion::openai_compat`), which it uses for Gemini's OpenAI-compatible endpoint.

A whole response, as agentgateway builds it: one `message` output item with the text (when
the provider sent any), then one `function_call` item per tool call; `status` from the
finish reason (`length` -> incomplete with `incomplete_details.reason` max_tokens,
`content_filter` -> failed with an error); `model` is the request's model, which is also
the response model telemetry records (the provider's own name is not read); usage in the
Responses names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from agw_fast.llm.jsonbytes import loads as _loads
from agw_fast.llm.translate import Translation, TranslationError
from agw_fast.llm.translate.gemini_response import openai_error_from_google
from agw_fast.llm.translate.responses_request import responses_request_to_chat
from agw_fast.llm.translate.responses_stream import (
    ChatToResponsesStream,
    ending,
    new_id,
    response_usage,
)
from agw_fast.llm.usage import Usage

__all__ = ["ChatToResponsesTranslation", "chat_response_to_responses", "responses_to_completions"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Clock = Callable[[], float]


def _usage_from_response(usage: dict[str, object]) -> Usage:
    """Telemetry of a whole response: read back from the Responses usage it was given, as
    agentgateway does (so absent details count as 0, unlike a stream's)."""
    in_details = usage["input_tokens_details"]
    out_details = usage["output_tokens_details"]
    assert type(in_details) is dict and type(out_details) is dict
    return Usage(
        input_tokens=usage["input_tokens"],  # type: ignore[arg-type]
        output_tokens=usage["output_tokens"],  # type: ignore[arg-type]
        total_tokens=usage["total_tokens"],  # type: ignore[arg-type]
        cached_input_tokens=in_details["cached_tokens"],
        reasoning_tokens=out_details["reasoning_tokens"],
    )


def chat_response_to_responses(
    body: bytes, model: str, created_at: int
) -> tuple[bytes, Usage | None, str | None]:
    """A whole `chat.completion` body as a Responses object; (body, usage, response model)."""
    try:
        obj = _loads(body)
    except (ValueError, RecursionError) as exc:
        raise TranslationError(f"provider response is not JSON: {exc}") from None
    if type(obj) is not dict:
        raise TranslationError("provider response is not a JSON object")
    choices = obj.get("choices")
    if type(choices) is not list:
        raise TranslationError("provider response has no choices")
    choice = choices[0] if choices and type(choices[0]) is dict else None
    output: list[object] = []
    finish: object = None
    if choice is not None:
        finish = choice.get("finish_reason")
        message = choice.get("message")
        if type(message) is dict:
            content = message.get("content")
            if type(content) is str:
                output.append({
                    "type": "message",
                    "content": [{"type": "output_text", "annotations": [], "logprobs": None,
                                 "text": content}],
                    "id": new_id("msg"),
                    "role": "assistant",
                    "status": "completed",
                })  # fmt: skip
            calls = message.get("tool_calls")
            if type(calls) is list:
                for call in calls:
                    function = call.get("function") if type(call) is dict else None
                    if type(function) is not dict or call.get("type", "function") != "function":
                        continue  # custom tool calls are not translated (nor by agentgateway)
                    call_id = call.get("id")
                    call_id = call_id if type(call_id) is str else new_id("call")
                    output.append({
                        "type": "function_call",
                        "arguments": function.get("arguments") or "",
                        "call_id": call_id,
                        "name": function.get("name") or "",
                        "id": call_id,
                        "status": "completed",
                    })  # fmt: skip
    status, _, _ = ending(finish)
    response: dict[str, object] = {
        "id": new_id("resp"),
        "status": status,
        "output": output,
        "model": model,
    }
    raw_usage = obj.get("usage")
    usage: Usage | None = None
    if type(raw_usage) is dict:
        translated = response_usage(raw_usage, cache_write_null=False)
        response["usage"] = translated
        usage = _usage_from_response(translated)
    response["created_at"] = created_at
    if status == "incomplete":
        response["incomplete_details"] = {"reason": "max_tokens"}
    elif status == "failed":
        response["error"] = {"code": "content_filter", "message": "Content filtered"}
    response["object"] = "response"
    return _encode(response).encode(), usage, model


def _openai_error(body: bytes) -> bool:
    """Whether `body` is already an OpenAI error (`{"error": {"message": ...}}`)."""
    try:
        obj = _loads(body)
    except (ValueError, RecursionError):
        return False
    error = obj.get("error") if type(obj) is dict else None
    return type(error) is dict and type(error.get("message")) is str


class ChatToResponsesTranslation:
    """The way back for a Responses client served by a chat completions provider."""

    __slots__ = ("_clock", "_model")

    def __init__(self, model: str, clock: Clock) -> None:
        self._model = model
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return chat_response_to_responses(body, self._model, int(time.time()))

    def error_json(self, status: int, body: bytes) -> bytes:
        # Google's compatible endpoint answers in Google's error shape (agentgateway's
        # translate_google_error); an OpenAI-shaped error is already what the client reads.
        if _openai_error(body):
            return body
        return openai_error_from_google(status, body)

    def stream(self) -> ChatToResponsesStream:
        return ChatToResponsesStream(clock=self._clock)


def responses_to_completions(
    request: dict[str, object], *, clock: Clock = time.monotonic
) -> tuple[bytes, Translation]:
    """An OpenAI Responses request for an OpenAI-compatible `/chat/completions`."""
    if type(request) is not dict:
        raise TranslationError("the request body must be a JSON object")
    body = responses_request_to_chat(request)
    model = request.get("model")
    return _encode(body).encode(), ChatToResponsesTranslation(
        model if type(model) is str else "", clock
    )
