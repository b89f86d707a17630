"""OpenAI chat completions <-> Anthropic Messages: the three request translations.

- `completions_to_messages`: an OpenAI chat client, an Anthropic provider;
- `messages_to_completions`: an Anthropic Messages client, an OpenAI-compatible provider;
- `messages_passthrough`: both Anthropic; nothing is translated, the response is read for
  usage, model and time to first token.

Each takes the client's parsed JSON body (with `model` already set to the provider's model)
and returns the provider request body and the `Translation` for the way back. A request the
target API cannot express raises `TranslationError` naming the field. Semantics follow
agentgateway (`crates/llm/src/conversion/{messages,completions}.rs`); the request and
response modules list where they deliberately differ.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

from agw_fast.config.model import PromptCaching
from agw_fast.llm.jsonbytes import loads as _loads
from agw_fast.llm.translate import Translation, TranslationError
from agw_fast.llm.translate.anthropic_cache import insert_cache_markers
from agw_fast.llm.translate.anthropic_chat_request import messages_request_to_chat
from agw_fast.llm.translate.anthropic_chat_stream import ChatToMessagesStream
from agw_fast.llm.translate.anthropic_request import chat_request_to_messages
from agw_fast.llm.translate.anthropic_response import (
    anthropic_error_to_anthropic,
    anthropic_error_to_openai,
    anthropic_usage,
    chat_response_to_messages,
    count,
    messages_response_to_chat,
    openai_error_to_anthropic,
)
from agw_fast.llm.translate.anthropic_stream import (
    MessagesPassthroughStream,
    MessagesToChatStream,
)
from agw_fast.llm.usage import Usage

__all__ = [
    "ChatToMessagesTranslation",
    "MessagesPassthrough",
    "MessagesToChatTranslation",
    "completions_to_messages",
    "messages_passthrough",
    "messages_to_completions",
]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Clock = Callable[[], float]


def _body(obj: object) -> bytes:
    return _encode(obj).encode()


class MessagesToChatTranslation:
    """The way back for an OpenAI chat client served by Anthropic."""

    __slots__ = ("_clock", "_include_usage")

    def __init__(self, include_usage: bool, clock: Clock) -> None:
        self._include_usage = include_usage
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return messages_response_to_chat(body, int(time.time()))

    def error_json(self, status: int, body: bytes) -> bytes:
        return anthropic_error_to_openai(status, body)

    def stream(self) -> MessagesToChatStream:
        return MessagesToChatStream(include_usage=self._include_usage, clock=self._clock)


class ChatToMessagesTranslation:
    """The way back for an Anthropic Messages client served by an OpenAI-compatible API."""

    __slots__ = ("_clock",)

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return chat_response_to_messages(body)

    def error_json(self, status: int, body: bytes) -> bytes:
        return openai_error_to_anthropic(status, body)

    def stream(self) -> ChatToMessagesStream:
        return ChatToMessagesStream(clock=self._clock)


class MessagesPassthrough:
    """Anthropic to Anthropic: bytes unchanged, usage read on the way."""

    __slots__ = ("_clock",)

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        # Relayed as is, even if unreadable: this path promises the provider's bytes.
        try:
            obj = _loads(body)
        except (ValueError, RecursionError):
            return body, None, None
        if type(obj) is not dict:
            return body, None, None
        model = obj.get("model")
        usage = obj.get("usage")
        read = None
        if type(usage) is dict:
            read = anthropic_usage(
                count(usage.get("input_tokens")),
                count(usage.get("output_tokens")),
                count(usage.get("cache_read_input_tokens")),
                count(usage.get("cache_creation_input_tokens")),
            )
        return body, read, model if type(model) is str else None

    def error_json(self, status: int, body: bytes) -> bytes:
        return anthropic_error_to_anthropic(status, body)

    def stream(self) -> MessagesPassthroughStream:
        return MessagesPassthroughStream(clock=self._clock)


def _include_usage(request: Mapping[str, object]) -> bool:
    options = request.get("stream_options")
    return type(options) is dict and options.get("include_usage") is True


def completions_to_messages(
    request: dict[str, object],
    *,
    clock: Clock = time.monotonic,
    prompt_caching: PromptCaching | None = None,
) -> tuple[bytes, Translation]:
    """An OpenAI chat completions request for Anthropic's /v1/messages, with the cache
    markers of a `promptCaching` policy (translate/anthropic_cache.py)."""
    body = chat_request_to_messages(request)
    if prompt_caching is not None:
        insert_cache_markers(body, prompt_caching)
    return _body(body), MessagesToChatTranslation(_include_usage(request), clock)


def messages_to_completions(
    request: dict[str, object], *, clock: Clock = time.monotonic
) -> tuple[bytes, Translation]:
    """An Anthropic Messages request for an OpenAI-compatible /chat/completions."""
    return _body(messages_request_to_chat(request)), ChatToMessagesTranslation(clock)


def messages_passthrough(
    request: dict[str, object], *, clock: Clock = time.monotonic
) -> tuple[bytes, Translation]:
    """An Anthropic Messages request for Anthropic: re-encoded (the model may have changed),
    otherwise unchanged."""
    if type(request) is not dict:
        raise TranslationError("the request body must be a JSON object")
    return _body(request), MessagesPassthrough(clock)
