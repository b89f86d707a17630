"""Streamed chat completion chunks as OpenAI Responses streaming events.

After agentgateway's `conversion::openai_compat::to_responses::translate_stream`, checked
against its golden fixtures (`response/completions/*.completions-responses-streaming.snap`):
the first chunk opens the response (`response.created`) and its one assistant message
(`response.output_item.added`, output 0); text arrives as `response.output_text.delta`
(after one `response.content_part.added`), each tool call as its own function_call output
item (outputs 1, 2, ...) with `response.function_call_arguments.delta`. When both the finish
reason and the usage chunk have been seen (or at `[DONE]`, or the end of the stream) the
items are closed and `response.completed` (`incomplete` for `length`, `failed` for
`content_filter`) carries the usage.

Where this differs from agentgateway, so that the official SDK's stream helper ends with
the whole answer: the closing events carry what was streamed (`content_part.done` the text,
`output_item.done` the message's content, `response.completed` the output items) where
agentgateway sends them empty; each event is named by its type (agentgateway names every
event `event`); a function call keeps the provider's call id (agentgateway makes up a new
one, which the provider then does not recognise in the follow-up `function_call_output`);
a stream that ends without `[DONE]` is still completed; an in-stream provider error
becomes an `error` event and ends the translation.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from agw_fast.llm.jsonbytes import loads as _loads
from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.events import EventTooLarge, SSEEventReader
from agw_fast.llm.usage import Usage

__all__ = [
    "ChatToResponsesStream",
    "new_id",
    "response_usage",
    "telemetry_usage",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_getrandbits = random.getrandbits


def new_id(prefix: str) -> str:
    """An id in OpenAI's style (`resp_`, `msg_`, `call_` and 16 hex digits)."""
    return f"{prefix}_{_getrandbits(64):016x}"


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _detail(details: object, key: str) -> int | None:
    if type(details) is not dict:
        return None
    value = details.get(key)
    return value if type(value) is int and value >= 0 else None


def _output_tokens(usage: dict[str, object]) -> int:
    """Gemini's compatible endpoint has been seen to report 0 completion tokens beside a
    larger total; the output is then the total less the prompt (agentgateway does this)."""
    completion = _count(usage.get("completion_tokens"))
    total = _count(usage.get("total_tokens"))
    if completion == 0 and total > 0:
        return max(total - _count(usage.get("prompt_tokens")), 0)
    return completion


def response_usage(usage: dict[str, object], *, cache_write_null: bool) -> dict[str, object]:
    """A chat `usage` as the Responses `usage` object. agentgateway writes an absent
    `cache_write_tokens` as null in streams and leaves it out of whole responses."""
    prompt_details = usage.get("prompt_tokens_details")
    input_details: dict[str, object] = {
        "cached_tokens": _detail(prompt_details, "cached_tokens") or 0
    }
    cache_write = _detail(prompt_details, "cache_write_tokens")
    if cache_write is None:
        cache_write = _detail(usage, "cache_creation_input_tokens")
    if cache_write is not None or cache_write_null:
        input_details["cache_write_tokens"] = cache_write
    return {
        "input_tokens": _count(usage.get("prompt_tokens")),
        "output_tokens": _output_tokens(usage),
        "input_tokens_details": input_details,
        "output_tokens_details": {
            "reasoning_tokens": _detail(usage.get("completion_tokens_details"), "reasoning_tokens")
            or 0
        },
        "total_tokens": _count(usage.get("total_tokens")),
    }


def telemetry_usage(usage: dict[str, object]) -> Usage:
    """The counts agentgateway logs for a translated stream: the chunk's own details (None
    when the provider sent none), output tokens corrected as in `response_usage`."""
    return Usage(
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_output_tokens(usage),
        total_tokens=_count(usage.get("total_tokens")),
        cached_input_tokens=_detail(usage.get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_detail(usage.get("completion_tokens_details"), "reasoning_tokens"),
    )


# finish_reason -> (status, the final event's type, what the response says about it)
_ENDINGS: dict[str, tuple[str, str, str]] = {
    "length": ("incomplete", "response.incomplete",
               ',"incomplete_details":{"reason":"max_tokens"}'),
    "content_filter": ("failed", "response.failed",
                       ',"error":{"code":"content_filter","message":"Content filtered"}'),
}  # fmt: skip
_COMPLETED = ("completed", "response.completed", "")


def ending(finish_reason: object) -> tuple[str, str, str]:
    """(status, final stream event, extra response fields as JSON text) of a finish reason;
    stop, tool calls and anything unknown complete the response."""
    return _ENDINGS.get(finish_reason, _COMPLETED) if type(finish_reason) is str else _COMPLETED


def _text_part(text: str) -> str:
    return f'{{"type":"output_text","annotations":[],"logprobs":null,"text":{_dumps(text)}}}'


class _ToolCall:
    __slots__ = ("arguments", "call_id", "name", "output_index")

    def __init__(self, call_id: str, output_index: int) -> None:
        self.call_id = call_id
        self.output_index = output_index
        self.name = ""
        self.arguments: list[str] = []

    def item(self, status: str, arguments: str) -> str:
        call_id = _dumps(self.call_id)
        return (
            f'{{"type":"function_call","arguments":{_dumps(arguments)},"call_id":{call_id},'
            f'"name":{_dumps(self.name)},"id":{call_id},"status":"{status}"}}'
        )


class ChatToResponsesStream:
    """`chat.completion.chunk` SSE -> OpenAI Responses SSE events (see the module doc)."""

    __slots__ = (
        "_clock",
        "_created_at",
        "_done",
        "_message_id",
        "_reader",
        "_response_id",
        "_seq",
        "_started",
        "_stop_reason",
        "_text",
        "_text_started",
        "_tools",
        "_usage",
        "first_token_at",
        "model",
        "usage",
    )

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._reader = SSEEventReader()
        self._clock = clock
        self._started = False
        self._done = False
        self._seq = 0
        self._response_id = new_id("resp")
        self._message_id = new_id("msg")
        self._created_at = 0
        self._text: list[str] = []
        self._text_started = False
        self._tools: dict[int, _ToolCall] = {}  # chat tool index -> call
        self._stop_reason: object = None
        self._usage: dict[str, object] | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def feed(self, data: bytes) -> bytes:
        return self._run(data)

    def finish(self) -> bytes:
        out = self._run(None)
        if self._started and not self._done:
            tail: list[str] = []
            self._flush(tail)
            return out + "".join(tail).encode()
        return out

    def _run(self, data: bytes | None) -> bytes:
        try:
            events = self._reader.feed(data) if data is not None else self._reader.finish()
        except EventTooLarge as exc:
            raise TranslationError(f"provider stream: {exc}") from None
        if not events:
            return b""
        out: list[str] = []
        for _name, payload in events:
            if not self._done:
                self._event(payload, out)
        return "".join(out).encode() if out else b""

    def _emit(self, out: list[str], kind: str, fields: str) -> None:
        """One event; `fields` is the JSON text after `type` and `sequence_number`."""
        self._seq += 1
        out.append(
            f'event: {kind}\ndata: {{"type":"{kind}","sequence_number":{self._seq}{fields}}}\n\n'
        )

    def _response(self, status: str, output: str, extra: str = "") -> str:
        return (
            f'{{"created_at":{self._created_at},"id":"{self._response_id}",'
            f'"model":{_dumps(self.model or "")},"object":"response","output":[{output}],'
            f'"status":"{status}"{extra}}}'
        )

    def _first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = self._clock()

    def _event(self, payload: bytes, out: list[str]) -> None:
        if payload == b"[DONE]":
            if self._started:
                self._flush(out)
            return
        try:
            chunk = _loads(payload)
        except (ValueError, RecursionError):
            return  # agentgateway skips a chunk it cannot read, and so do we
        if type(chunk) is not dict:
            return
        error = chunk.get("error")
        if type(error) is dict:
            self._error(error, out)
            return
        if not self._started:
            self._start(chunk, out)
        usage = chunk.get("usage")
        if type(usage) is dict:
            self._usage = usage
            self.usage = telemetry_usage(usage)
        choices = chunk.get("choices")
        if type(choices) is list and choices and type(choices[0]) is dict:
            self._choice(choices[0], out)
        if self._stop_reason is not None and self._usage is not None:
            self._flush(out)

    def _start(self, chunk: dict[str, object], out: list[str]) -> None:
        self._started = True
        self._created_at = int(time.time())
        model = chunk.get("model")
        self.model = model if type(model) is str else None
        self._emit(out, "response.created", f',"response":{self._response("in_progress", "")}')
        self._emit(
            out,
            "response.output_item.added",
            f',"output_index":0,"item":{{"type":"message","content":[],'
            f'"id":"{self._message_id}","role":"assistant","status":"in_progress"}}',
        )

    def _choice(self, choice: dict[str, object], out: list[str]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict:
            text = delta.get("content")
            if type(text) is str:
                # An empty delta counts too: agentgateway's first token is the first content.
                self._text.append(text)
                if not self._text_started:
                    self._text_started = True
                    self._emit(
                        out,
                        "response.content_part.added",
                        f',"item_id":"{self._message_id}","output_index":0,"content_index":0,'
                        f'"part":{_text_part("")}',
                    )
                self._first_token()
                self._emit(
                    out,
                    "response.output_text.delta",
                    f',"item_id":"{self._message_id}","output_index":0,"content_index":0,'
                    f'"delta":{_dumps(text)}',
                )
            calls = delta.get("tool_calls")
            if type(calls) is list:
                for call in calls:
                    if type(call) is dict:
                        self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if type(finish) is str:
            self._stop_reason = finish

    def _tool_call(self, call: dict[str, object], out: list[str]) -> None:
        index = call.get("index")
        if type(index) is not int:
            index = 0  # some compatible providers leave it out for a single call
        function = call.get("function")
        name = arguments = None
        if type(function) is dict:
            name, arguments = function.get("name"), function.get("arguments")
        entry = self._tools.get(index)
        if entry is None:
            call_id = call.get("id")
            entry = self._tools[index] = _ToolCall(
                call_id if type(call_id) is str and call_id else new_id("call"),
                len(self._tools) + 1,
            )
            if type(name) is str:
                entry.name = name
            self._first_token()
            self._emit(
                out,
                "response.output_item.added",
                f',"output_index":{entry.output_index},"item":{entry.item("in_progress", "")}',
            )
        elif type(name) is str:
            entry.name = name
        if type(arguments) is str and arguments:
            entry.arguments.append(arguments)
            self._emit(
                out,
                "response.function_call_arguments.delta",
                f',"item_id":{_dumps(entry.call_id)},"output_index":{entry.output_index},'
                f'"delta":{_dumps(arguments)}',
            )

    def _flush(self, out: list[str]) -> None:
        if self._done:
            return
        self._done = True
        status, final, extra = ending(self._stop_reason)
        items: list[str] = []
        message_content = ""
        if self._text_started:
            message_content = _text_part("".join(self._text))
        message = (
            f'{{"type":"message","content":[{message_content}],"id":"{self._message_id}",'
            f'"role":"assistant","status":"completed"}}'
        )
        items.append(message)
        for call in sorted(self._tools.values(), key=lambda c: c.output_index):
            arguments = "".join(call.arguments)
            self._emit(
                out,
                "response.function_call_arguments.done",
                f',"name":{_dumps(call.name)},"item_id":{_dumps(call.call_id)},'
                f'"output_index":{call.output_index},"arguments":{_dumps(arguments)}',
            )
            item = call.item("completed", arguments)
            items.append(item)
            self._emit(
                out,
                "response.output_item.done",
                f',"output_index":{call.output_index},"item":{item}',
            )
        if self._text_started:
            self._emit(
                out,
                "response.content_part.done",
                f',"item_id":"{self._message_id}","output_index":0,"content_index":0,'
                f'"part":{message_content}',
            )
        self._emit(out, "response.output_item.done", f',"output_index":0,"item":{message}')
        if self._usage is not None:
            extra += f',"usage":{_dumps(response_usage(self._usage, cache_write_null=True))}'
        self._emit(out, final, f',"response":{self._response(status, ",".join(items), extra)}')

    def _error(self, error: dict[str, object], out: list[str]) -> None:
        """A provider error inside the stream: the Responses `error` event, then nothing."""
        message, code = error.get("message"), error.get("code")
        if type(code) is not str:
            code = error.get("type") if type(error.get("type")) is str else None
        self._emit(
            out,
            "error",
            f',"code":{_dumps(code)},'
            f'"message":{_dumps(message if type(message) is str else "provider stream error")},'
            '"param":null',
        )
        self._done = True
