"""An OpenAI Responses request (`POST /v1/responses`) as a chat completions request.

For providers that speak chat completions but not Responses (Gemini's OpenAI-compatible
endpoint), after agentgateway's `conversion::openai_compat::from_responses` and checked
against its golden fixtures (`requests/responses/*.gemini.snap`):

- `instructions` becomes a leading `developer` message; a string `input` one user message;
- message items keep their role, except that the shorthand form (`{"role", "content"}`
  without `"type": "message"`) sends `system` as `developer`, as agentgateway's reading of
  the two forms does; `input_text` parts become `text` parts (with any
  `prompt_cache_breakpoint`), a previous answer's `output_text` parts one assistant text;
- `function_call` items become assistant `tool_calls` (consecutive calls share one
  message), `function_call_output` items `tool` messages;
- function tools, `tool_choice`, `reasoning.effort`, `text.format`, `max_output_tokens`,
  `temperature`, `top_p`, `parallel_tool_calls` and `stream` (with usage asked for) map to
  their chat names; what chat completions cannot carry (hosted tools, item references,
  reasoning items, ...) is dropped, as there.

Where this differs from agentgateway: `input_image` parts of user messages are sent as
`image_url` parts (agentgateway drops them), an assistant shorthand message may carry
`output_text` parts (agentgateway refuses the request), and custom tool calls pair by
`call_id` (agentgateway pairs a call's item `id` with its output's, which never match).
"""

from __future__ import annotations

import json

from agw_fast.llm.translate import TranslationError

__all__ = ["responses_request_to_chat"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_EASY_ROLES = {"user": "user", "assistant": "assistant", "system": "developer",
               "developer": "developer"}  # fmt: skip
_INPUT_ROLES = frozenset({"user", "system", "developer"})
_TOOL_CHOICE_MODES = frozenset({"auto", "required", "none"})
_EFFORTS = frozenset({"minimal", "low", "medium", "high", "xhigh", "max"})
# Copied as they are when present (and not null); the chat field has the same meaning.
_NUMBERS = (("temperature", "temperature"), ("top_p", "top_p"),
            ("max_output_tokens", "max_completion_tokens"))  # fmt: skip


def _str(value: object, where: str) -> str:
    if type(value) is not str:
        raise TranslationError(f"{where}: must be a string")
    return value


def _parts(content: list[object], where: str, *, images: bool, output_text: bool) -> list[object]:
    """Chat content parts of Responses content parts; kinds chat cannot take are dropped."""
    out: list[object] = []
    for i, part in enumerate(content):
        if type(part) is not dict:
            raise TranslationError(f"{where}[{i}]: must be an object")
        kind = part.get("type")
        if kind == "input_text" or (output_text and kind == "output_text"):
            text: dict[str, object] = {
                "type": "text",
                "text": _str(part.get("text"), f"{where}[{i}].text"),
            }
            breakpoint_ = part.get("prompt_cache_breakpoint")
            if breakpoint_ is not None:
                text["prompt_cache_breakpoint"] = breakpoint_
            out.append(text)
        elif images and kind == "input_image" and type(part.get("image_url")) is str:
            image: dict[str, object] = {"url": part["image_url"]}
            detail = part.get("detail")
            if type(detail) is str:
                image["detail"] = detail
            out.append({"type": "image_url", "image_url": image})
    return out


def _message(item: dict[str, object], where: str) -> dict[str, object]:
    role = item.get("role")
    content = item.get("content")
    typed = item.get("type") == "message"
    if typed and role == "assistant" and type(content) is list and "id" in item:
        # A previous answer (an output message): its text parts joined, as agentgateway does.
        texts = [
            p["text"] for p in content
            if type(p) is dict and p.get("type") == "output_text" and type(p.get("text")) is str
        ]  # fmt: skip
        answer: dict[str, object] = {"role": "assistant"}
        if texts:
            answer["content"] = "\n".join(texts)
        return answer
    if typed and role in _INPUT_ROLES and type(content) is list:
        chat_role = role
    else:
        mapped = _EASY_ROLES.get(role) if type(role) is str else None
        if mapped is None:
            raise TranslationError(f"{where}.role: must be user, assistant, system or developer")
        chat_role = mapped
    if type(content) is str:
        return {"role": chat_role, "content": content}
    if type(content) is not list:
        raise TranslationError(f"{where}.content: must be a string or an array")
    parts = _parts(
        content, f"{where}.content", images=chat_role == "user",
        output_text=chat_role == "assistant",
    )  # fmt: skip
    return {"role": chat_role, "content": parts}


def _add_tool_call(messages: list[dict[str, object]], call: dict[str, object]) -> None:
    last = messages[-1] if messages else None
    if last is not None and last.get("role") == "assistant" and "tool_calls" in last:
        calls = last["tool_calls"]
        assert type(calls) is list
        calls.append(call)
    else:
        messages.append({"role": "assistant", "tool_calls": [call]})


def _output_text(output: object, where: str) -> str:
    if type(output) is str:
        return output
    if type(output) is list:
        return "\n".join(
            p["text"] for p in output
            if type(p) is dict and p.get("type") == "input_text" and type(p.get("text")) is str
        )  # fmt: skip
    raise TranslationError(f"{where}: must be a string or an array")


def _items(items: list[object], messages: list[dict[str, object]]) -> None:
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if type(item) is not dict:
            raise TranslationError(f"{where}: must be an object")
        kind = item.get("type")
        if kind is None or kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call_id = _str(item.get("call_id"), f"{where}.call_id")
            function = {
                "name": _str(item.get("name"), f"{where}.name"),
                "arguments": _str(item.get("arguments"), f"{where}.arguments"),
            }
            _add_tool_call(messages, {"type": "function", "id": call_id, "function": function})
        elif kind == "function_call_output":
            messages.append({
                "role": "tool",
                "content": _output_text(item.get("output"), f"{where}.output"),
                "tool_call_id": _str(item.get("call_id"), f"{where}.call_id"),
            })  # fmt: skip
        elif kind == "custom_tool_call":
            call_id = _str(item.get("call_id"), f"{where}.call_id")
            function = {
                "name": _str(item.get("name"), f"{where}.name"),
                "arguments": _dumps(_str(item.get("input"), f"{where}.input")),
            }
            _add_tool_call(messages, {"type": "function", "id": call_id, "function": function})
        elif kind == "custom_tool_call_output":
            output = item.get("output")
            if type(output) is str:
                messages.append({
                    "role": "tool",
                    "content": output,
                    "tool_call_id": _str(item.get("call_id"), f"{where}.call_id"),
                })  # fmt: skip
        elif type(kind) is not str:
            raise TranslationError(f"{where}.type: must be a string")
        # Anything else (item_reference, reasoning, hosted tool calls, ...) has no chat
        # counterpart and is skipped, as agentgateway does.


def _tools(tools: object) -> list[object] | None:
    if tools is None:
        return None
    if type(tools) is not list:
        raise TranslationError("tools: must be an array")
    out: list[object] = []
    for i, tool in enumerate(tools):
        if type(tool) is not dict:
            raise TranslationError(f"tools[{i}]: must be an object")
        if tool.get("type") != "function":
            continue  # hosted tools (web_search, file_search, ...) have no chat counterpart
        function: dict[str, object] = {"name": _str(tool.get("name"), f"tools[{i}].name")}
        for key in ("description", "parameters", "strict"):
            value = tool.get(key)
            if value is not None:
                function[key] = value
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object) -> object | None:
    if type(choice) is str:
        return choice if choice in _TOOL_CHOICE_MODES else None
    if (
        type(choice) is dict
        and choice.get("type") == "function"
        and type(choice.get("name")) is str
    ):
        return {"type": "function", "function": {"name": choice["name"]}}
    return None


def _response_format(text: object) -> object | None:
    if type(text) is not dict:
        return None
    fmt = text.get("format")
    if type(fmt) is not dict:
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        return None
    schema: dict[str, object] = {"name": _str(fmt.get("name"), "text.format.name")}
    for key in ("description", "schema", "strict"):
        value = fmt.get(key)
        if value is not None:
            schema[key] = value
    return {"type": "json_schema", "json_schema": schema}


def responses_request_to_chat(request: dict[str, object]) -> dict[str, object]:
    """The chat completions body for a Responses request body (parsed JSON)."""
    messages: list[dict[str, object]] = []
    instructions = request.get("instructions")
    if instructions is not None:
        messages.append({"role": "developer", "content": _str(instructions, "instructions")})
    source = request.get("input")
    if type(source) is str:
        messages.append({"role": "user", "content": [{"type": "text", "text": source}]})
    elif type(source) is list:
        _items(source, messages)
    else:
        raise TranslationError("input: must be a string or an array of items")
    out: dict[str, object] = {"messages": messages}
    model = request.get("model")
    if model is not None:
        out["model"] = model
    tools = _tools(request.get("tools"))
    if tools is not None:
        out["tools"] = tools
    choice = _tool_choice(request.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    reasoning = request.get("reasoning")
    if type(reasoning) is dict and reasoning.get("effort") in _EFFORTS:
        out["reasoning_effort"] = reasoning["effort"]
    response_format = _response_format(request.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    stream = request.get("stream") is True
    out["stream"] = stream
    if stream:
        # Usage arrives only when asked for; the translated stream's response.completed needs it.
        out["stream_options"] = {"include_usage": True}
    for source_key, chat_key in _NUMBERS:
        value = request.get(source_key)
        if value is not None:
            if type(value) not in (int, float):
                raise TranslationError(f"{source_key}: must be a number")
            out[chat_key] = value
    parallel = request.get("parallel_tool_calls")
    if type(parallel) is bool:
        out["parallel_tool_calls"] = parallel
    return out
