"""Streamed Anthropic responses: Messages SSE -> OpenAI chat completion chunks, and the
usage reader for Anthropic streams relayed unchanged (the reverse is `anthropic_chat_stream`).

Each translator is fed the provider's bytes in any split and returns the client's bytes for
the events those completed (`SSEEventReader` does the splitting). Events follow
agentgateway's stream conversion, checked against its golden fixtures; an event whose data
is not JSON is skipped, as there. Chunks are built from prefixes encoded once per stream, so
a text delta costs one JSON parse and one string encode.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from agw_fast.llm.jsonbytes import loads as _loads
from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.anthropic_response import (
    FINISH_REASON,
    anthropic_usage,
    count,
    messages_usage_for_chat,
    openai_error_json,
)
from agw_fast.llm.translate.events import EventTooLarge, SSEEventReader
from agw_fast.llm.usage import Usage

__all__ = [
    "AnthropicTotals",
    "MessagesPassthroughStream",
    "MessagesToChatStream",
    "json_event",
    "strict_json_event",
    "read_events",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_DONE = b"data: [DONE]\n\n"


def json_event(data: bytes) -> dict[str, object] | None:
    try:
        obj = _loads(data)
    except (ValueError, RecursionError):
        return None
    return obj if type(obj) is dict else None


def strict_json_event(data: bytes) -> dict[str, object]:
    """An event a translation must read: one that is not a JSON object cuts the stream (a
    translated stream that skipped it would look complete while missing content)."""
    event = json_event(data)
    if event is None:
        raise TranslationError(f"provider stream: an event is not a JSON object: {data[:80]!r}")
    return event


def read_events(reader: SSEEventReader, data: bytes | None) -> list[tuple[bytes | None, bytes]]:
    try:
        return reader.feed(data) if data is not None else reader.finish()
    except EventTooLarge as exc:
        raise TranslationError(f"provider stream: {exc}") from None


class AnthropicTotals:
    """Anthropic's cumulative counts: `message_start` sets them, `message_delta` updates the
    ones it carries (older API versions send only `output_tokens` there)."""

    __slots__ = ("cache_read", "cache_write", "input", "output")

    def __init__(self) -> None:
        self.input: int | None = None
        self.output: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None

    def update(self, usage: object) -> None:
        if type(usage) is not dict:
            return
        get = usage.get
        for attr, key in (
            ("input", "input_tokens"),
            ("output", "output_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("cache_write", "cache_creation_input_tokens"),
        ):
            value = count(get(key))
            if value is not None:
                setattr(self, attr, value)

    def usage(self) -> Usage:
        return anthropic_usage(self.input, self.output, self.cache_read, self.cache_write)


class MessagesToChatStream:
    """Anthropic Messages SSE -> `chat.completion.chunk` SSE, ending with `data: [DONE]`.

    Usage rides on the finish chunk, as agentgateway sends it. A client that asked for
    `stream_options.include_usage` gets OpenAI's form instead: the finish chunk with
    `"usage":null` and then a chunk with no choices and the usage. An Anthropic `error`
    event becomes OpenAI's in-stream error (`data: {"error":...}`), which the OpenAI SDKs
    raise; no `[DONE]` follows it.
    """

    __slots__ = (
        "_clock",
        "_created",
        "_errored",
        "_head",
        "_id",
        "_include_usage",
        "_next_tool",
        "_role",
        "_tail",
        "_tier",
        "_tools",
        "_totals",
        "_reader",
        "first_token_at",
        "model",
        "usage",
    )

    def __init__(
        self,
        *,
        include_usage: bool = False,
        clock: Callable[[], float] = time.monotonic,
        created: int | None = None,
    ) -> None:
        self._reader = SSEEventReader()
        self._clock = clock
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = "unknown"
        self._tier: str | None = None
        self._role: str | None = None  # stated once by message_start, sent on the next chunk
        self._next_tool = 0
        # block index -> [tool index, arguments sent]; keyed by the event's raw `index`
        self._tools: dict[object, list[int]] = {}
        self._totals = AnthropicTotals()
        self._errored = False
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None
        self._head = ""
        self._tail = ""
        self._frame()

    def _frame(self) -> None:
        # Every chunk is head + choices + tail + usage + "}": the per-stream fields once.
        self._head = f'data: {{"id":{_dumps(self._id)},"choices":'
        self._tail = (
            f',"created":{self._created},"model":{_dumps(self.model or "")},'
            f'"service_tier":{_dumps(self._tier)},"system_fingerprint":null,'
            '"object":"chat.completion.chunk","usage":'
        )

    def _chunk(self, delta: str, finish: str | None = None, usage: str = "null") -> str:
        role = self._role
        if role is not None:
            self._role = None
            delta = f'{delta[:-1]},"role":{_dumps(role)}}}'
        if finish is None:
            choice = f'[{{"index":0,"delta":{delta}}}]'
        else:
            choice = f'[{{"index":0,"delta":{delta},"finish_reason":{_dumps(finish)}}}]'
        return f"{self._head}{choice}{self._tail}{usage}}}\n\n"

    def feed(self, data: bytes) -> bytes:
        out: list[str] = []
        for _name, payload in read_events(self._reader, data):
            self._event(payload, out)
        return "".join(out).encode() if out else b""

    def finish(self) -> bytes:
        out: list[str] = []
        for _name, payload in read_events(self._reader, None):
            self._event(payload, out)
        tail = b"" if self._errored else _DONE
        return "".join(out).encode() + tail

    def _event(self, payload: bytes, out: list[str]) -> None:
        if self._errored:
            return
        event = strict_json_event(payload)
        kind = event.get("type")
        if kind == "content_block_delta":
            if self.first_token_at is None:
                self.first_token_at = self._clock()
            self._delta(event, out)
        elif kind == "content_block_start":
            block = event.get("content_block")
            index = event.get("index")
            if type(block) is dict and block.get("type") in ("tool_use", "server_tool_use"):
                tool_index = self._next_tool
                self._next_tool += 1
                if type(index) is int:
                    self._tools[index] = [tool_index, 0]
                call = (
                    f'{{"index":{tool_index},"id":{_dumps(block.get("id"))},"type":"function",'
                    f'"function":{{"name":{_dumps(block.get("name"))}}}}}'
                )
                out.append(self._chunk(f'{{"content":null,"tool_calls":[{call}]}}'))
        elif kind == "content_block_stop":
            ongoing = self._tools.pop(event.get("index"), None)
            if ongoing is not None and not ongoing[1]:
                # A tool called without arguments still gets a parseable `{}`.
                out.append(self._chunk(self._arguments_delta(ongoing[0], "{}")))
        elif kind == "message_delta":
            self._message_delta(event, out)
        elif kind == "message_start":
            self._message_start(event)
        elif kind == "error":
            error = event.get("error")
            error = error if type(error) is dict else {}
            message, error_kind = error.get("message"), error.get("type")
            body = openai_error_json(
                error_kind if type(error_kind) is str else "api_error",
                message if type(message) is str else "stream error",
            )
            out.append(f"data: {body.decode()}\n\n")
            self._errored = True
        # ping, message_stop and unknown events carry nothing for the client.

    def _message_start(self, event: dict[str, object]) -> None:
        message = event.get("message")
        if type(message) is not dict:
            return
        msg_id, model, role = message.get("id"), message.get("model"), message.get("role")
        if type(msg_id) is str:
            self._id = msg_id
        if type(model) is str:
            self.model = model
        self._role = role if type(role) is str else "assistant"
        usage = message.get("usage")
        self._totals.update(usage)
        if type(usage) is dict:
            tier = usage.get("service_tier")
            self._tier = tier if type(tier) is str else None
        self.usage = self._totals.usage()
        self._frame()

    @staticmethod
    def _arguments_delta(tool_index: int, arguments: str) -> str:
        return (
            f'{{"content":null,"tool_calls":[{{"index":{tool_index},"id":null,"type":null,'
            f'"function":{{"arguments":{_dumps(arguments)}}}}}]}}'
        )

    def _delta(self, event: dict[str, object], out: list[str]) -> None:
        delta = event.get("delta")
        if type(delta) is not dict:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            out.append(self._chunk(f'{{"content":{_dumps(delta.get("text"))}}}'))
        elif kind == "thinking_delta":
            reasoning = _dumps(delta.get("thinking"))
            out.append(self._chunk(f'{{"content":null,"reasoning_content":{reasoning}}}'))
        elif kind == "input_json_delta":
            ongoing = self._tools.get(event.get("index"))
            partial = delta.get("partial_json")
            if ongoing is not None and type(partial) is str and partial:
                ongoing[1] = 1
                out.append(self._chunk(self._arguments_delta(ongoing[0], partial)))
        # signature and citation deltas have no chat completions form.

    def _message_delta(self, event: dict[str, object], out: list[str]) -> None:
        totals = self._totals
        totals.update(event.get("usage"))
        self.usage = totals.usage()
        delta = event.get("delta")
        stop = delta.get("stop_reason") if type(delta) is dict else None
        usage = _dumps(
            messages_usage_for_chat(
                totals.input or 0, totals.output or 0, totals.cache_read, totals.cache_write
            )
        )
        finish = FINISH_REASON.get(stop) if type(stop) is str else None
        if self._include_usage:
            if finish is not None:
                out.append(self._chunk('{"content":null}', finish))
            out.append(f"{self._head}[]{self._tail}{usage}}}\n\n")
        elif finish is not None:
            out.append(self._chunk('{"content":null}', finish, usage))
        else:
            out.append(f"{self._head}[]{self._tail}{usage}}}\n\n")


class MessagesPassthroughStream:
    """An Anthropic stream relayed unchanged to an Anthropic client, read for telemetry.

    Only message_start and message_delta are parsed; the first content_block_delta is the
    first token. Reading never alters or cuts the stream: an event too large to read ends
    the observation, not the relay.
    """

    __slots__ = ("_clock", "_reader", "_totals", "first_token_at", "model", "usage")

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._reader: SSEEventReader | None = SSEEventReader()
        self._clock = clock
        self._totals = AnthropicTotals()
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def feed(self, data: bytes) -> bytes:
        reader = self._reader
        if reader is not None:
            try:
                events = reader.feed(data)
            except EventTooLarge:
                self._reader = None
            else:
                if events:
                    self._observe(events)
        return data

    def finish(self) -> bytes:
        reader = self._reader
        if reader is not None:
            self._reader = None
            self._observe(reader.finish())
        return b""

    def _observe(self, events: list[tuple[bytes | None, bytes]]) -> None:
        for name, payload in events:
            if name == b"content_block_delta" or name == b"ping" or name == b"content_block_stop":
                if name == b"content_block_delta" and self.first_token_at is None:
                    self.first_token_at = self._clock()
                continue
            event = json_event(payload)
            if event is None:
                continue
            kind = event.get("type")
            if kind == "message_start":
                message = event.get("message")
                if type(message) is dict:
                    model = message.get("model")
                    if type(model) is str:
                        self.model = model
                    self._totals.update(message.get("usage"))
                    self.usage = self._totals.usage()
            elif kind == "message_delta":
                self._totals.update(event.get("usage"))
                self.usage = self._totals.usage()
            elif kind == "content_block_delta" and self.first_token_at is None:
                self.first_token_at = self._clock()
