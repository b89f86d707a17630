"""Streamed OpenAI chat completion chunks as Anthropic Messages SSE events.

For an Anthropic Messages client served by an OpenAI-compatible provider, after
agentgateway's `conversion::completions::from_messages::translate_stream` (checked against
its golden fixtures). A chunk whose data is not JSON is skipped, as there; an in-stream
OpenAI error (`data: {"error":...}`) becomes Anthropic's `error` event and ends the
translation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from agw_fast.llm.translate.anthropic_response import (
    anthropic_error_json,
    chat_usage_for_anthropic,
)
from agw_fast.llm.translate.anthropic_stream import read_events, strict_json_event
from agw_fast.llm.translate.events import SSEEventReader
from agw_fast.llm.usage import Usage, usage_from_mapping

__all__ = ["ChatToMessagesStream"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# A stream maps content_filter to Anthropic's `refusal` (a whole response says end_turn).
_STREAM_STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "function_call": "tool_use",
}


class ChatToMessagesStream:
    """`chat.completion.chunk` SSE -> Anthropic Messages SSE (message_start, content blocks,
    message_delta with usage, message_stop).

    Text and each tool call become content blocks; a tool block opens once its name is known
    (argument text that arrived first is sent then). The closing message_delta waits for
    both the finish reason and the usage chunk, or for `[DONE]`/the end of the stream.
    """

    __slots__ = (
        "_clock",
        "_errored",
        "_next_block",
        "_open_tools",
        "_pending",
        "_reader",
        "_started",
        "_stop_reason",
        "_stopped",
        "_text_block",
        "_tool_blocks",
        "_usage",
        "first_token_at",
        "model",
        "usage",
    )

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._reader = SSEEventReader()
        self._clock = clock
        self._started = False
        self._stopped = False
        self._errored = False
        self._next_block = 0
        self._text_block: int | None = None
        self._tool_blocks: dict[int, int] = {}  # chat tool index -> block index
        self._open_tools: list[int] = []  # chat tool indexes whose block is open, in order
        self._pending: dict[int, list[str | None]] = {}  # tool index -> [id, name, json]
        self._stop_reason: str | None = None
        self._usage: dict[str, object] | None = None
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def feed(self, data: bytes) -> bytes:
        out: list[str] = []
        for _name, payload in read_events(self._reader, data):
            self._event(payload, out)
        return "".join(out).encode() if out else b""

    def finish(self) -> bytes:
        out: list[str] = []
        for _name, payload in read_events(self._reader, None):
            self._event(payload, out)
        if self._started and not self._errored:
            self._flush(out, force=True)
        return "".join(out).encode() if out else b""

    @staticmethod
    def _emit(out: list[str], name: str, data: str) -> None:
        out.append(f"event: {name}\ndata: {data}\n\n")

    def _event(self, payload: bytes, out: list[str]) -> None:
        if self._stopped or self._errored:
            return
        if payload == b"[DONE]":
            if self._started:
                self._flush(out, force=True)
            return
        chunk = strict_json_event(payload)
        error = chunk.get("error")
        if type(error) is dict:
            message, kind = error.get("message"), error.get("type")
            body = anthropic_error_json(
                kind if type(kind) is str else "api_error",
                message if type(message) is str else "stream error",
            )
            self._emit(out, "error", body.decode())
            self._errored = True
            return
        if not self._started:
            self._started = True
            model = chunk.get("model")
            self.model = model if type(model) is str else None
            message = (
                f'{{"type":"message_start","message":{{"id":{_dumps(chunk.get("id"))},'
                f'"type":"message","role":"assistant","content":[],'
                f'"model":{_dumps(self.model or "")},"stop_reason":null,"stop_sequence":null,'
                '"usage":{"input_tokens":0,"output_tokens":0}}}'
            )
            self._emit(out, "message_start", message)
        usage = chunk.get("usage")
        if type(usage) is dict:
            self._usage = usage
            self.usage = usage_from_mapping(usage)
        choices = chunk.get("choices")
        if type(choices) is list and choices and type(choices[0]) is dict:
            self._choice(choices[0], out)
        if self._stop_reason is not None and self._usage is not None:
            self._flush(out, force=False)

    def _choice(self, choice: dict[str, object], out: list[str]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict:
            text = delta.get("content")
            if type(text) is str and text:
                index = self._open_text(out)
                self._first_token()
                self._emit(
                    out,
                    "content_block_delta",
                    f'{{"type":"content_block_delta","index":{index},'
                    f'"delta":{{"type":"text_delta","text":{_dumps(text)}}}}}',
                )
            calls = delta.get("tool_calls")
            if type(calls) is list:
                for call in calls:
                    if type(call) is dict:
                        self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if type(finish) is str:
            self._stop_reason = _STREAM_STOP_REASON.get(finish, "end_turn")

    def _first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = self._clock()

    def _tool_call(self, call: dict[str, object], out: list[str]) -> None:
        tool_index = call.get("index")
        if type(tool_index) is not int:
            return
        entry = self._pending.setdefault(tool_index, [None, None, ""])
        call_id = call.get("id")
        if type(call_id) is str:
            entry[0] = call_id
        function = call.get("function")
        if type(function) is dict:
            name, arguments = function.get("name"), function.get("arguments")
            if type(name) is str:
                entry[1] = name
            if type(arguments) is str:
                entry[2] = (entry[2] or "") + arguments
        if entry[1] is None:
            return  # Anthropic's tool_use block needs the name up front
        index = self._open_tool(tool_index, entry[0] or f"tool_call_{tool_index}", entry[1], out)
        pending = entry[2]
        if pending:
            entry[2] = ""
            self._first_token()
            self._emit(
                out,
                "content_block_delta",
                f'{{"type":"content_block_delta","index":{index},'
                f'"delta":{{"type":"input_json_delta","partial_json":{_dumps(pending)}}}}}',
            )

    def _close(self, index: int, out: list[str]) -> None:
        self._emit(out, "content_block_stop", f'{{"type":"content_block_stop","index":{index}}}')

    def _close_tools(self, out: list[str]) -> None:
        for tool_index in sorted(self._open_tools, key=self._tool_blocks.__getitem__):
            self._close(self._tool_blocks[tool_index], out)
        self._open_tools.clear()

    def _open_text(self, out: list[str]) -> int:
        if self._text_block is not None:
            return self._text_block
        self._close_tools(out)
        index = self._text_block = self._next_block
        self._next_block += 1
        self._emit(
            out,
            "content_block_start",
            f'{{"type":"content_block_start","index":{index},'
            '"content_block":{"type":"text","text":""}}',
        )
        return index

    def _open_tool(self, tool_index: int, call_id: str, name: str, out: list[str]) -> int:
        if self._text_block is not None:
            self._close(self._text_block, out)
            self._text_block = None
        index = self._tool_blocks.get(tool_index)
        if index is None:
            index = self._tool_blocks[tool_index] = self._next_block
            self._next_block += 1
        if tool_index not in self._open_tools:
            # Interleaved deltas of parallel calls keep each block open: one start per block.
            self._open_tools.append(tool_index)
            self._emit(
                out,
                "content_block_start",
                f'{{"type":"content_block_start","index":{index},"content_block":'
                f'{{"type":"tool_use","id":{_dumps(call_id)},"name":{_dumps(name)},"input":{{}}}}}}',
            )
        return index

    def _flush(self, out: list[str], *, force: bool) -> None:
        if self._stopped:
            return
        stop = self._stop_reason
        if stop is None:
            if not force:
                return
            stop = "end_turn"
        if self._text_block is not None:
            self._close(self._text_block, out)
            self._text_block = None
        self._close_tools(out)
        usage = _dumps(chat_usage_for_anthropic(self._usage))
        self._emit(
            out,
            "message_delta",
            f'{{"type":"message_delta","delta":{{"stop_reason":{_dumps(stop)},'
            f'"stop_sequence":null}},"usage":{usage}}}',
        )
        self._emit(out, "message_stop", '{"type":"message_stop"}')
        self._stopped = True
