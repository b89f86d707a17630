"""Anthropic Messages request bodies as OpenAI chat completions request bodies.

The reverse of `anthropic_request` (an Anthropic client, an OpenAI-compatible provider),
after agentgateway's `conversion::completions::from_messages`. Prompt-cache breakpoints
(`cache_control`) become `prompt_cache_breakpoint` only for models that accept them;
thinking maps to `reasoning_effort` only when adaptive, as there.

One deliberate difference: `reasoning_effort: "none"` is forced for GPT models that refuse
reasoning with tools only when the client asked for reasoning at all; agentgateway sends it
with every tool request, which models without reasoning refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from agw_fast.llm.translate.anthropic_request import (
    ADAPTIVE_EFFORTS,
    array,
    content_parts,
    count,
    fail,
    number,
    optional_string,
    string,
)
from agw_fast.llm.translate.anthropic_request import (
    json_object as _object,
)

__all__ = ["messages_request_to_chat"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _supports_cache_breakpoints(model: str) -> bool:
    """Explicit prompt-cache breakpoints exist on GPT 5.6 and newer only."""
    if not model.startswith("gpt-"):
        return False
    major, dot, minor = model[4:].split("-", 1)[0].partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        return False
    return (int(major), int(minor)) >= (5, 6)


def _supports_reasoning_with_tools(model: str) -> bool:
    # OpenAI refuses reasoning + function tools on chat completions for older GPT models.
    return (
        not model.startswith("gpt-")
        or model == "gpt-5"
        or model.startswith(("gpt-5-", "gpt-5.1", "gpt-5.2"))
    )


class _ChatBuilder:
    """Builds chat messages from Messages content, with the model's cache-breakpoint rule."""

    __slots__ = ("breakpoints", "messages")

    def __init__(self, breakpoints: bool) -> None:
        self.breakpoints = breakpoints
        self.messages: list[dict[str, object]] = []

    def text_part(self, block: Mapping[str, object], path: str) -> dict[str, object]:
        part: dict[str, object] = {
            "type": "text",
            "text": string(block.get("text"), f"{path}.text"),
        }
        if self.breakpoints and block.get("cache_control") is not None:
            part["prompt_cache_breakpoint"] = {"mode": "explicit"}
        return part

    def content(self, content: object, path: str) -> list[dict[str, object]]:
        if type(content) is str:
            return [{"type": "text", "text": content}]
        blocks = content_parts(content, path)
        return [_object(b, f"{path}[{j}]") for j, b in enumerate(blocks)]

    def system(self, system: object) -> None:
        if type(system) is str:
            self.messages.append({"role": "system", "content": system})
            return
        parts = []
        for j, block in enumerate(array(system, "system")):
            obj = _object(block, f"system[{j}]")
            if obj.get("type") != "text":
                raise fail(f"system[{j}].type", "only text blocks are allowed")
            parts.append(self.text_part(obj, f"system[{j}]"))
        self.messages.append({"role": "system", "content": parts})

    def user(self, blocks: list[dict[str, object]], path: str) -> None:
        parts: list[dict[str, object]] = []
        for j, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "text":
                parts.append(self.text_part(block, f"{path}[{j}]"))
            elif kind == "image":
                url = _source_url(block.get("source"))
                if url is not None:
                    # OpenAI refuses cache breakpoints on image parts.
                    parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "tool_result":
                self.tool_result(block, f"{path}[{j}]")
        if parts:
            self.messages.append({"role": "user", "content": parts})

    def tool_result(self, block: Mapping[str, object], path: str) -> None:
        call_id = string(block.get("tool_use_id"), f"{path}.tool_use_id")
        content = block.get("content")
        marked = self.breakpoints and block.get("cache_control") is not None
        result: object
        if content is None or type(content) is str:
            text = content or ""
            if marked:
                result = [
                    {"type": "text", "text": text, "prompt_cache_breakpoint": {"mode": "explicit"}}
                ]
            else:
                result = text
        else:
            parts: list[dict[str, object]] = []
            for k, raw in enumerate(array(content, f"{path}.content")):
                item = _object(raw, f"{path}.content[{k}]")
                if item.get("type") == "text":
                    parts.append(self.text_part(item, f"{path}.content[{k}]"))
                elif self.breakpoints and item.get("cache_control") is not None:
                    # Chat tool messages hold text only: a breakpoint on a dropped image or
                    # document moves to the last text part so the cache prefix stays the same.
                    marked = True
            if marked:
                if parts:
                    parts[-1]["prompt_cache_breakpoint"] = {"mode": "explicit"}
                else:
                    parts.append(
                        {
                            "type": "text",
                            "text": "",
                            "prompt_cache_breakpoint": {"mode": "explicit"},
                        }
                    )
            result = parts
        self.messages.append({"role": "tool", "content": result, "tool_call_id": call_id})

    def assistant(self, blocks: list[dict[str, object]], path: str) -> None:
        parts: list[dict[str, object]] = []
        calls: list[dict[str, object]] = []
        for j, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "text":
                parts.append(self.text_part(block, f"{path}[{j}]"))
            elif kind == "tool_use":
                calls.append(
                    {
                        "id": string(block.get("id"), f"{path}[{j}].id"),
                        "type": "function",
                        "function": {
                            "name": string(block.get("name"), f"{path}[{j}].name"),
                            "arguments": _dumps(block.get("input")),
                        },
                    }
                )
            # thinking blocks cannot be replayed to chat completions; others have no form.
        if parts or calls:
            msg: dict[str, object] = {"role": "assistant"}
            if parts:
                msg["content"] = parts
            if calls:
                msg["tool_calls"] = calls
            self.messages.append(msg)

    def system_role(self, blocks: list[dict[str, object]], path: str) -> None:
        parts = [
            self.text_part(b, f"{path}[{j}]")
            for j, b in enumerate(blocks)
            if b.get("type") == "text"
        ]
        if parts:
            self.messages.append({"role": "system", "content": parts})


def _source_url(source: object) -> str | None:
    if type(source) is not dict:
        return None
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if type(media_type) is str and type(data) is str:
            return f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = source.get("url")
        if type(url) is str:
            return url
    return None


def _chat_tools(tools: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, raw in enumerate(array(tools, "tools")):
        tool = _object(raw, f"tools[{i}]")
        if "input_schema" not in tool:
            if "type" in tool:
                continue  # a server tool (web_search_...): chat completions cannot run it
            raise fail(f"tools[{i}].input_schema", "is required")
        function: dict[str, object] = {"name": string(tool.get("name"), f"tools[{i}].name")}
        description = optional_string(tool.get("description"), f"tools[{i}].description")
        if description is not None:
            function["description"] = description
        function["parameters"] = tool["input_schema"]
        out.append({"type": "function", "function": function})
    return out


def messages_request_to_chat(request: Mapping[str, object]) -> dict[str, object]:
    """An Anthropic Messages request body as an OpenAI chat completions request body."""
    model = optional_string(request.get("model"), "model") or ""
    max_tokens = count(request.get("max_tokens"), "max_tokens")
    messages = array(request.get("messages"), "messages")
    builder = _ChatBuilder(_supports_cache_breakpoints(model))
    system = request.get("system")
    if system is not None:
        builder.system(system)
    for i, raw in enumerate(messages):
        path = f"messages[{i}]"
        msg = _object(raw, path)
        blocks = builder.content(msg.get("content"), f"{path}.content")
        role = msg.get("role")
        if role == "user":
            builder.user(blocks, f"{path}.content")
        elif role == "assistant":
            builder.assistant(blocks, f"{path}.content")
        elif role == "system":
            builder.system_role(blocks, f"{path}.content")
        else:
            raise fail(f"{path}.role", f"unknown role {role!r}")

    stream = request.get("stream", False)
    if type(stream) is not bool:
        raise fail("stream", "must be a boolean")
    body: dict[str, object] = {
        "messages": builder.messages,
        "model": model,
        "max_completion_tokens": max_tokens,
        "stream": stream,
    }
    if stream:
        # Usage arrives only in the final chunk, and only when asked for.
        body["stream_options"] = {"include_usage": True}
    for key in ("temperature", "top_p"):
        value = request.get(key)
        if value is not None:
            body[key] = number(value, key)
    stop = request.get("stop_sequences")
    if stop is not None:
        sequences = [
            string(s, f"stop_sequences[{k}]") for k, s in enumerate(array(stop, "stop_sequences"))
        ]
        if sequences:
            body["stop"] = sequences

    tools = [] if request.get("tools") is None else _chat_tools(request.get("tools"))
    if tools:
        body["tools"] = tools
    choice = request.get("tool_choice")
    if choice is not None:
        obj = _object(choice, "tool_choice")
        kind = obj.get("type")
        disable = obj.get("disable_parallel_tool_use")
        if disable is not None and type(disable) is not bool:
            raise fail("tool_choice.disable_parallel_tool_use", "must be a boolean")
        if kind == "auto":
            body["tool_choice"] = "auto"
        elif kind == "any":
            body["tool_choice"] = "required"
        elif kind == "tool":
            name = string(obj.get("name"), "tool_choice.name")
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        elif kind == "none":
            body["tool_choice"] = "none"
            disable = None
        else:
            raise fail("tool_choice.type", f"unknown choice {kind!r}")
        if disable is not None:
            body["parallel_tool_calls"] = not disable
    metadata = request.get("metadata")
    if metadata is not None:
        user = _object(metadata, "metadata").get("user_id")
        if type(user) is str:
            # Only user_id: chat `metadata` needs `store: true`, which this path never sets.
            body["user"] = user

    thinking = request.get("thinking")
    output_config = request.get("output_config")
    config = {} if output_config is None else _object(output_config, "output_config")
    effort: str | None = None
    if thinking is not None and _object(thinking, "thinking").get("type") == "adaptive":
        wanted = config.get("effort")
        if wanted is None:
            effort = "high"  # Anthropic's default effort for adaptive thinking
        elif type(wanted) is str and wanted in ADAPTIVE_EFFORTS:
            effort = wanted
        else:
            raise fail("output_config.effort", f"unknown effort {wanted!r}")
    if effort is not None and tools and not _supports_reasoning_with_tools(model):
        effort = "none"
    if effort is not None:
        body["reasoning_effort"] = effort
    fmt = config.get("format")
    if fmt is not None:
        fmt_obj = _object(fmt, "output_config.format")
        if fmt_obj.get("type") != "json_schema":
            raise fail("output_config.format.type", f"unknown format {fmt_obj.get('type')!r}")
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "structured_output", "schema": fmt_obj.get("schema")},
        }
    return body
