"""OpenAI chat completions request bodies as Anthropic Messages request bodies, and the
field checks both request directions share.

Dict in, dict out; the caller encodes. The mapping follows agentgateway's
`conversion::messages::from_completions`, checked against its golden fixtures. Where a
field's shape is not one the source API allows, `TranslationError` names the field (the
client gets a 400): a request we cannot read faithfully is not guessed at.

One deliberate difference, fixing a request Anthropic would refuse: a function tool without
`parameters` gets `input_schema: {"type": "object"}` instead of null.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from agw_fast.llm.translate import TranslationError

__all__ = [
    "ADAPTIVE_EFFORTS",
    "array",
    "content_parts",
    "count",
    "fail",
    "json_object",
    "number",
    "optional_string",
    "string",
    "DEFAULT_MAX_TOKENS",
    "chat_request_to_messages",
    "tool_arguments_to_input",
]

# Anthropic requires max_tokens; agentgateway sends this when the client set neither limit.
DEFAULT_MAX_TOKENS = 4096
# Anthropic refuses a thinking budget below this, and one not below max_tokens.
_MIN_THINKING_BUDGET = 1024
_THINKING_BUDGET = {
    "none": None,
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
ADAPTIVE_EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_decode = json.JSONDecoder().decode


def fail(path: str, problem: str) -> TranslationError:
    return TranslationError(f"{path}: {problem}")


def string(value: object, path: str) -> str:
    if type(value) is not str:
        raise fail(path, "must be a string")
    return value


def optional_string(value: object, path: str) -> str | None:
    return None if value is None else string(value, path)


def json_object(value: object, path: str) -> dict[str, object]:
    if type(value) is not dict:
        raise fail(path, "must be an object")
    return value


def array(value: object, path: str) -> list[object]:
    if type(value) is not list:
        raise fail(path, "must be an array")
    return value


def content_parts(value: object, path: str) -> list[object]:
    """A message `content` that is not a string: its parts."""
    if type(value) is not list:
        raise fail(path, "must be a string or an array")
    return value


def count(value: object, path: str) -> int:
    if type(value) is not int or value < 0:
        raise fail(path, "must be a non-negative integer")
    return value


def number(value: object, path: str) -> int | float:
    if type(value) is not int and type(value) is not float:
        raise fail(path, "must be a number")
    return value


def _blank(text: str) -> bool:
    return not text or text.isspace()


def tool_arguments_to_input(arguments: str) -> object:
    """An OpenAI `function.arguments` string as an Anthropic `tool_use.input` value.

    The empty string (a call without arguments) becomes `{}`; anything else that parses is
    passed as parsed, and text that does not parse is kept as a string rather than replaced:
    a truncated call stays visible instead of silently becoming empty.
    """
    if not arguments:
        return {}
    try:
        return _decode(arguments)
    except ValueError:
        return arguments


# --- OpenAI chat completions -> Anthropic Messages ---------------------------------------


def _text_parts(content: object, path: str) -> list[str]:
    """The texts of a system/developer/tool message content (a string or text parts)."""
    if type(content) is str:
        return [content]
    parts = content_parts(content, path)
    texts: list[str] = []
    for j, part in enumerate(parts):
        part_path = f"{path}[{j}]"
        obj = json_object(part, part_path)
        if obj.get("type") != "text":
            raise fail(f"{part_path}.type", "only text parts are allowed here")
        texts.append(string(obj.get("text"), f"{part_path}.text"))
    return texts


def _system_text(msg: Mapping[str, object], path: str) -> str | None:
    texts = [t for t in _text_parts(msg.get("content"), f"{path}.content") if not _blank(t)]
    return "\n".join(texts) if texts else None


def _data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL (RFC 2397)."""
    if not url.startswith("data:"):
        return None
    meta, comma, data = url[5:].partition(",")
    media_type, semicolon, encoding = meta.partition(";")
    if not comma or not semicolon or encoding.lower() != "base64":
        return None
    return media_type, data


def _image_block(part: Mapping[str, object], path: str) -> dict[str, object]:
    image = json_object(part.get("image_url"), f"{path}.image_url")
    url = string(image.get("url"), f"{path}.image_url.url")
    parsed = _data_url(url)
    if parsed is not None:
        source: dict[str, object] = {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
    else:
        source = {"type": "url", "url": url}
    return {"type": "image", "source": source}


def _user_blocks(content: object, path: str) -> list[dict[str, object]]:
    if type(content) is str:
        return [] if _blank(content) else [{"type": "text", "text": content}]
    blocks: list[dict[str, object]] = []
    for j, part in enumerate(content_parts(content, path)):
        part_path = f"{path}[{j}]"
        obj = json_object(part, part_path)
        kind = obj.get("type")
        if kind == "text":
            text = string(obj.get("text"), f"{part_path}.text")
            if not _blank(text):
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(obj, part_path))
        elif kind in ("input_audio", "file"):
            continue  # Messages has no audio input; files would need the Files API
        else:
            raise fail(f"{part_path}.type", f"unknown content part type {kind!r}")
    return blocks


def _tool_use(call: object, path: str) -> dict[str, object]:
    obj = json_object(call, path)
    call_id = string(obj.get("id"), f"{path}.id")
    kind = obj.get("type", "function")
    if kind == "function":
        function = json_object(obj.get("function"), f"{path}.function")
        name = string(function.get("name"), f"{path}.function.name")
        arguments = string(function.get("arguments"), f"{path}.function.arguments")
    elif kind == "custom":
        custom = json_object(obj.get("custom"), f"{path}.custom")
        name = string(custom.get("name"), f"{path}.custom.name")
        arguments = string(custom.get("input"), f"{path}.custom.input")
    else:
        raise fail(f"{path}.type", f"unknown tool call type {kind!r}")
    return {
        "type": "tool_use",
        "id": call_id,
        "name": name,
        "input": tool_arguments_to_input(arguments),
    }


def _assistant_blocks(msg: Mapping[str, object], path: str) -> list[dict[str, object]]:
    blocks: list[dict[str, object]] = []
    content = msg.get("content")
    if type(content) is str:
        if not _blank(content):
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        for j, part in enumerate(content_parts(content, f"{path}.content")):
            part_path = f"{path}.content[{j}]"
            obj = json_object(part, part_path)
            kind = obj.get("type")
            if kind not in ("text", "refusal"):
                raise fail(f"{part_path}.type", f"unknown content part type {kind!r}")
            text = string(obj.get(kind), f"{part_path}.{kind}")
            if not _blank(text):
                blocks.append({"type": "text", "text": text})
    refusal = optional_string(msg.get("refusal"), f"{path}.refusal")
    if refusal is not None and not _blank(refusal):
        blocks.append({"type": "text", "text": refusal})
    calls = msg.get("tool_calls")
    if calls is not None:
        path_calls = f"{path}.tool_calls"
        blocks.extend(
            _tool_use(c, f"{path_calls}[{k}]") for k, c in enumerate(array(calls, path_calls))
        )
    return blocks


def _tool_result(msg: Mapping[str, object], path: str) -> dict[str, object]:
    call_id = string(msg.get("tool_call_id"), f"{path}.tool_call_id")
    content = msg.get("content")
    result: object
    if type(content) is str:
        result = content
    else:
        result = [{"type": "text", "text": t} for t in _text_parts(content, f"{path}.content")]
    return {"type": "tool_result", "tool_use_id": call_id, "content": result}


def _anthropic_tools(tools: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for i, tool in enumerate(array(tools, "tools")):
        obj = json_object(tool, f"tools[{i}]")
        if obj.get("type", "function") != "function":
            continue  # custom (free-form) tools have no Messages equivalent
        function = json_object(obj.get("function"), f"tools[{i}].function")
        entry: dict[str, object] = {
            "name": string(function.get("name"), f"tools[{i}].function.name")
        }
        description = optional_string(
            function.get("description"), f"tools[{i}].function.description"
        )
        if description is not None:
            entry["description"] = description
        parameters = function.get("parameters")
        entry["input_schema"] = {"type": "object"} if parameters is None else parameters
        out.append(entry)
    return out


def _anthropic_tool_choice(
    choice: object, disable_parallel: bool | None, has_tools: bool
) -> dict[str, object] | None:
    picked: dict[str, object]
    if choice is None:
        if disable_parallel is None or not has_tools:
            return None
        picked = {"type": "auto"}
    elif type(choice) is str:
        modes = {"auto": "auto", "required": "any", "none": "none"}
        if choice not in modes:
            raise fail("tool_choice", f"unknown mode {choice!r}")
        if choice == "none":
            return {"type": "none"}
        picked = {"type": modes[choice]}
    else:
        obj = json_object(choice, "tool_choice")
        if obj.get("type") != "function":
            return None  # allowed_tools / custom choices have no Messages equivalent
        function = json_object(obj.get("function"), "tool_choice.function")
        picked = {"type": "tool", "name": string(function.get("name"), "tool_choice.function.name")}
    if disable_parallel is not None:
        picked["disable_parallel_tool_use"] = disable_parallel
    return picked


def _output_format(response_format: object) -> dict[str, object] | None:
    if response_format is None:
        return None
    obj = json_object(response_format, "response_format")
    kind = obj.get("type")
    if kind == "json_schema":
        schema = json_object(obj.get("json_schema"), "response_format.json_schema")
        return {"type": "json_schema", "schema": schema.get("schema")}
    if kind == "json_object":
        return {"type": "json_schema", "schema": {"type": "object", "additionalProperties": True}}
    if kind == "text":
        return None
    raise fail("response_format.type", f"unknown format {kind!r}")


def _thinking_budget(effort: object, max_tokens: int) -> int | None:
    if effort is None:
        return None
    if type(effort) is not str or effort not in _THINKING_BUDGET:
        raise fail("reasoning_effort", f"unknown effort {effort!r}")
    budget = _THINKING_BUDGET[effort]
    if budget is None or budget < _MIN_THINKING_BUDGET or max_tokens <= _MIN_THINKING_BUDGET:
        return None
    return min(budget, max_tokens - 1)


def chat_request_to_messages(request: Mapping[str, object]) -> dict[str, object]:
    """An OpenAI chat completions request body as an Anthropic Messages request body."""
    messages = array(request.get("messages"), "messages")
    model = optional_string(request.get("model"), "model") or ""
    limit = request.get("max_completion_tokens")
    limit_path = "max_completion_tokens"
    if limit is None:
        limit, limit_path = request.get("max_tokens"), "max_tokens"
    max_tokens = DEFAULT_MAX_TOKENS if limit is None else count(limit, limit_path)

    system: list[str] = []
    out_messages: list[dict[str, object]] = []
    for i, raw in enumerate(messages):
        path = f"messages[{i}]"
        msg = json_object(raw, path)
        role = msg.get("role")
        if role == "system" or role == "developer":
            text = _system_text(msg, path)
            if text is not None:
                system.append(text)
            continue
        if role == "user":
            out_role, blocks = "user", _user_blocks(msg.get("content"), f"{path}.content")
        elif role == "assistant":
            out_role, blocks = "assistant", _assistant_blocks(msg, path)
        elif role == "tool":
            out_role, blocks = "user", [_tool_result(msg, path)]
        elif role == "function":
            text = optional_string(msg.get("content"), f"{path}.content")
            out_role = "user"
            blocks = [] if text is None or _blank(text) else [{"type": "text", "text": text}]
        else:
            raise fail(f"{path}.role", f"unknown role {role!r}")
        if blocks:
            out_messages.append({"role": out_role, "content": blocks})

    body: dict[str, object] = {"messages": out_messages}
    if system:
        body["system"] = "\n".join(system)
    body["model"] = model
    body["max_tokens"] = max_tokens
    stop = request.get("stop")
    if type(stop) is str:
        body["stop_sequences"] = [stop]
    elif stop is not None:
        sequences = [string(s, f"stop[{k}]") for k, s in enumerate(array(stop, "stop"))]
        if sequences:
            body["stop_sequences"] = sequences
    stream = request.get("stream")
    if stream is not None and type(stream) is not bool:
        raise fail("stream", "must be a boolean")
    if stream:
        body["stream"] = True
    for key in ("temperature", "top_p"):
        value = request.get(key)
        if value is not None:
            body[key] = number(value, key)

    tools = request.get("tools")
    anthropic_tools = None if tools is None else _anthropic_tools(tools)
    if anthropic_tools is not None:
        body["tools"] = anthropic_tools
    parallel = request.get("parallel_tool_calls")
    if parallel is not None and type(parallel) is not bool:
        raise fail("parallel_tool_calls", "must be a boolean")
    tool_choice = _anthropic_tool_choice(
        request.get("tool_choice"),
        None if parallel is None else not parallel,
        bool(anthropic_tools),
    )
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    user = optional_string(request.get("user"), "user")
    if user is not None:
        body["metadata"] = {"user_id": user}
    budget = _thinking_budget(request.get("reasoning_effort"), max_tokens)
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    output_format = _output_format(request.get("response_format"))
    if output_format is not None:
        body["output_config"] = {"format": output_format}
    return body
