"""OpenAI chat completions -> AWS Bedrock's Converse API (the request), and the factory.

Follows agentgateway's `conversion::bedrock::from_completions::translate`:

- system and developer messages join (LF) into one `system` text block; user, assistant, tool
  and function messages become `messages`, consecutive ones of one role merged into one turn
  (Converse requires strict user/assistant alternation; tool results are user turns);
- blank text parts are dropped; images must be base64 `data:` URLs (`image/*`); audio and
  file parts are dropped; tool call arguments that are not a JSON object become `{}`;
- an assistant turn carrying `reasoning_signature` (agentgateway's extension, echoed from its
  responses) replays its thinking block first;
- `inferenceConfig`: `maxTokens` (max_completion_tokens, max_tokens, else 4096), temperature,
  topP, stopSequences; `reasoning_effort` -> Anthropic thinking budget in
  `additionalModelRequestFields`; `response_format` -> `outputConfig.textFormat`;
- function tools -> `toolConfig.tools[].toolSpec`, with names Bedrock accepts
  (`[A-Za-z0-9_-]{1,64}`; others are rewritten and restored in the response); a conversation
  with tool history but no tools gets agentgateway's placeholder tool (Converse demands a
  toolConfig then);
- a guardrail, when the provider names one, goes in `guardrailConfig`.

Deliberate differences: `tool_choice` is sent as Converse's `toolChoice` (`{"auto": {}}`,
`{"any": {}}`, `{"tool": {"name": ...}}`); agentgateway serialises it as `tool_choice` with bare
strings, which Bedrock does not read. Null fields (`description`, `status`) are left out. The
`x-bedrock-metadata` header (requestMetadata) is not read. A sanitised tool name's hash suffix
is SHA-256 based, not Rust's SipHash.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from urllib.parse import quote

from agw_fast.llm.translate import Translation, TranslationError
from agw_fast.llm.translate.bedrock_response import BedrockToCompletions

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "PLACEHOLDER_TOOL",
    "ToolNames",
    "bedrock_path",
    "build_converse",
    "completions_to_bedrock",
]

DEFAULT_MAX_TOKENS = 4096
PLACEHOLDER_TOOL = "agentgateway_dummy_do_not_call"
_TOOL_NAME_MAX = 64
_VALID_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# agentgateway's `thinking_budget_for_reasoning_effort`.
_THINKING_BUDGETS = {"minimal": 1024, "low": 1024, "medium": 2048, "high": 4096,
                     "xhigh": 8192, "max": 16384}  # fmt: skip
_JSON_OBJECT_SCHEMA = '{"type":"object","additionalProperties":true}'
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def bedrock_path(model: str, stream: bool) -> str:
    """`/model/{model}/converse[-stream]`; the model id is one path segment (an inference
    profile ARN's `/` is escaped, as agentgateway's `get_path_for_route`)."""
    segment = quote(model, safe="!$&'()*+,;=:@-._~")
    return f"/model/{segment}/converse-stream" if stream else f"/model/{segment}/converse"


class ToolNames:
    """Client tool names <-> names Bedrock accepts, for one request."""

    __slots__ = ("forward", "reverse")

    def __init__(self) -> None:
        self.forward: dict[str, str] = {}
        self.reverse: dict[str, str] = {}

    def register(self, original: str) -> str:
        original = original or "tool"
        mapped = self.forward.get(original)
        if mapped is not None:
            return mapped
        used = self.forward.values()
        if _VALID_TOOL_NAME.fullmatch(original) and original not in used:
            self.forward[original] = original
            return original
        base = _INVALID_CHARS.sub("_", original)
        if len(base) > _TOOL_NAME_MAX or base in used:
            digest = hashlib.sha256(original.encode()).hexdigest()[:6]
            base = f"{base[: _TOOL_NAME_MAX - 7]}_{digest}"
            counter = 0
            while base in used:
                counter += 1
                suffix = f"_{counter:x}"
                base = base[: _TOOL_NAME_MAX - len(suffix)] + suffix
        self.forward[original] = base
        if base != original:
            self.reverse[base] = original
        return base

    def restore(self, name: str) -> str:
        return self.reverse.get(name, name)


def _bad(message: str) -> TranslationError:
    return TranslationError(f"failed to parse request: {message}")


def _text_of(content: object, where: str) -> str | None:
    """A system/developer message's text: a string, or its text parts joined by LF."""
    if type(content) is str:
        return content if content.strip() else None
    if type(content) is not list:
        raise _bad(f"{where}: expected a string or an array")
    texts = []
    for part in content:
        text = part.get("text") if type(part) is dict else None
        if type(text) is not str:
            raise _bad(f"{where}: expected text parts")
        if text.strip():
            texts.append(text)
    joined = "\n".join(texts)
    return joined if joined.strip() else None


def _image(url: object) -> dict[str, object]:
    if type(url) is not str or not url.startswith("data:"):
        raise TranslationError(
            "unsupported conversion: bedrock image inputs must be base64 data URLs; remote "
            "URLs and file_ids are unsupported"
        )
    meta, comma, data = url[5:].partition(",")
    media_type, semicolon, encoding = meta.partition(";")
    if not comma or not semicolon or encoding.lower() != "base64":
        raise TranslationError(
            "unsupported conversion: bedrock image data URLs must be base64-encoded"
        )
    image_format = media_type[6:] if media_type.startswith("image/") else ""
    if not image_format:
        raise TranslationError(
            "unsupported conversion: bedrock image data URLs must use a non-empty image/* "
            "media type"
        )
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _user_blocks(content: object, where: str) -> list[dict[str, object]]:
    if type(content) is str:
        return [{"text": content}] if content.strip() else []
    if type(content) is not list:
        raise _bad(f"{where}: expected a string or an array")
    blocks: list[dict[str, object]] = []
    for part in content:
        kind = part.get("type") if type(part) is dict else None
        if kind == "text":
            text = part.get("text")
            if type(text) is not str:
                raise _bad(f"{where}: text part without text")
            if text.strip():
                blocks.append({"text": text})
        elif kind == "image_url":
            image_url = part.get("image_url")
            blocks.append(_image(image_url.get("url") if type(image_url) is dict else None))
        elif kind not in ("input_audio", "file"):
            raise _bad(f"{where}: unknown content part type {kind!r}")
    return blocks


def _tool_input(arguments: object) -> object:
    # Converse rejects a toolUse input that is not an object.
    if type(arguments) is str:
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return {}
        if type(parsed) is dict:
            return parsed
    return {}


def _assistant_blocks(message: dict[str, object], names: ToolNames) -> list[dict[str, object]]:
    blocks: list[dict[str, object]] = []
    signature = message.get("reasoning_signature")
    if type(signature) is str and signature:
        reasoning = message.get("reasoning_content")
        blocks.append({"reasoningContent": {"reasoningText": {
            "text": reasoning if type(reasoning) is str else "", "signature": signature}}})
    content = message.get("content")
    if type(content) is str:
        if content.strip():
            blocks.append({"text": content})
    elif type(content) is list:
        for part in content:
            if type(part) is dict:
                text = part.get("text") if part.get("type") == "text" else part.get("refusal")
                if type(text) is str and text.strip():
                    blocks.append({"text": text})
    refusal = message.get("refusal")
    if type(refusal) is str and refusal.strip():
        blocks.append({"text": refusal})
    calls = message.get("tool_calls")
    if type(calls) is list:
        for call in calls:
            if type(call) is not dict:
                raise _bad("tool_calls: expected objects")
            function = call.get("function") if call.get("type") != "custom" else call.get("custom")
            if type(function) is not dict:
                raise _bad("tool_calls: a call without its function")
            name, arguments = function.get("name"), function.get(
                "arguments" if call.get("type") != "custom" else "input"
            )
            tool_id = call.get("id")
            if type(name) is not str or type(tool_id) is not str:
                raise _bad("tool_calls: a call needs an id and a name")
            blocks.append({"toolUse": {"toolUseId": tool_id, "name": names.register(name),
                                       "input": _tool_input(arguments)}})  # fmt: skip
    return blocks


def _tool_result(message: dict[str, object]) -> list[dict[str, object]]:
    content = message.get("content")
    parts: list[dict[str, object]]
    if type(content) is str:
        parts = [{"text": content}]
    elif type(content) is list:
        parts = [{"text": p.get("text")} for p in content if type(p) is dict]
    else:
        raise _bad("tool message: expected content")
    tool_call_id = message.get("tool_call_id")
    if type(tool_call_id) is not str:
        raise _bad("tool message: missing tool_call_id")
    if not parts:
        return []
    return [{"toolResult": {"toolUseId": tool_call_id, "content": parts}}]


def _register_names(request: dict[str, object], names: ToolNames) -> None:
    """Tool names in agentgateway's order: tools, a named tool_choice, then the history, so a
    sanitised name is the same wherever it appears."""
    tools = request.get("tools")
    for tool in tools if type(tools) is list else ():
        function = tool.get("function") if type(tool) is dict else None
        if type(function) is dict and type(function.get("name")) is str:
            names.register(function["name"])
    choice = request.get("tool_choice")
    if type(choice) is dict:
        function = choice.get("function")
        if type(function) is dict and type(function.get("name")) is str:
            names.register(function["name"])
    messages = request.get("messages")
    for message in messages if type(messages) is list else ():
        if type(message) is dict and message.get("role") == "assistant":
            calls = message.get("tool_calls")
            for call in calls if type(calls) is list else ():
                if type(call) is dict:
                    function = call.get("function") or call.get("custom")
                    if type(function) is dict and type(function.get("name")) is str:
                        names.register(function["name"])


def _tool_config(request: dict[str, object], names: ToolNames) -> dict[str, object] | None:
    tools = request.get("tools")
    if tools is None:
        return None
    if type(tools) is not list:
        raise _bad("tools: expected an array")
    specs: list[dict[str, object]] = []
    for tool in tools:
        if type(tool) is not dict or tool.get("type", "function") != "function":
            continue  # agentgateway drops other tool types (with a warning)
        function = tool.get("function")
        if type(function) is not dict or type(function.get("name")) is not str:
            raise _bad("tools: a function tool needs function.name")
        spec: dict[str, object] = {"name": names.register(function["name"])}
        if type(function.get("description")) is str:
            spec["description"] = function["description"]
        if function.get("parameters") is not None:
            spec["inputSchema"] = {"json": function["parameters"]}
        specs.append({"toolSpec": spec})
    config: dict[str, object] = {"tools": specs}
    choice = request.get("tool_choice")
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif type(choice) is dict:
        function = choice.get("function")
        if type(function) is dict and type(function.get("name")) is str:
            config["toolChoice"] = {"tool": {"name": names.register(function["name"])}}
    return config


def _output_config(response_format: object) -> dict[str, object] | None:
    if type(response_format) is not dict:
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        definition: dict[str, object] = {"schema": _JSON_OBJECT_SCHEMA}
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if type(spec) is not dict or type(spec.get("name")) is not str:
            raise _bad("response_format.json_schema: expected an object with a name")
        definition = {"schema": _encode(spec.get("schema")), "name": spec["name"]}
        if type(spec.get("description")) is str:
            definition["description"] = spec["description"]
    else:
        return None
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


def _inference_config(request: dict[str, object]) -> dict[str, object]:
    max_tokens = request.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = request.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if type(max_tokens) is not int or max_tokens < 0:
        raise _bad("max_tokens: expected a non-negative integer")
    config: dict[str, object] = {"maxTokens": max_tokens}
    for key, out in (("temperature", "temperature"), ("top_p", "topP")):
        value = request.get(key)
        if value is not None:
            if type(value) not in (int, float):
                raise _bad(f"{key}: expected a number")
            config[out] = value
    stop = request.get("stop")
    if type(stop) is str:
        config["stopSequences"] = [stop]
    elif type(stop) is list and stop:
        config["stopSequences"] = stop
    return config


def build_converse(
    request: dict[str, object], guardrail: tuple[str, str] | None = None
) -> tuple[dict[str, object], ToolNames]:
    """The Converse request body for an OpenAI chat completions request (see the module
    docstring); the model goes in the path, not here. Raises TranslationError."""
    messages = request.get("messages")
    if type(messages) is not list:
        raise _bad("messages: expected an array")
    names = ToolNames()
    _register_names(request, names)
    system: list[str] = []
    turns: list[dict[str, object]] = []
    for i, message in enumerate(messages):
        if type(message) is not dict:
            raise _bad(f"messages[{i}]: expected an object")
        role = message.get("role")
        where = f"messages[{i}].content"
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), where)
            if text is not None:
                system.append(text)
            continue
        if role == "user":
            blocks, turn_role = _user_blocks(message.get("content"), where), "user"
        elif role == "assistant":
            blocks, turn_role = _assistant_blocks(message, names), "assistant"
        elif role == "tool":
            blocks, turn_role = _tool_result(message), "user"
        elif role == "function":
            content = message.get("content")
            ok = type(content) is str and content.strip()
            blocks, turn_role = ([{"text": content}] if ok else []), "user"
        else:
            raise _bad(f"messages[{i}].role: unknown role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)  # type: ignore[attr-defined]
        else:
            turns.append({"role": turn_role, "content": blocks})
    body: dict[str, object] = {"messages": turns}
    if system:
        body["system"] = [{"text": "\n".join(system)}]
    body["inferenceConfig"] = _inference_config(request)
    output_config = _output_config(request.get("response_format"))
    if output_config is not None:
        body["outputConfig"] = output_config
    tool_config = _tool_config(request, names)
    if tool_config is None and any(
        "toolUse" in block or "toolResult" in block
        for turn in turns
        for block in turn["content"]  # type: ignore[attr-defined]
    ):
        tool_config = {"tools": [{"toolSpec": {
            "name": PLACEHOLDER_TOOL, "inputSchema": {"json": {"type": "object"}}}}]}
    if tool_config is not None:
        body["toolConfig"] = tool_config
    if guardrail is not None:
        body["guardrailConfig"] = {"guardrailIdentifier": guardrail[0],
                                   "guardrailVersion": guardrail[1], "trace": "enabled"}
    effort = request.get("reasoning_effort")
    budget = _THINKING_BUDGETS.get(effort) if type(effort) is str else None
    if budget is not None:
        body["additionalModelRequestFields"] = {
            "thinking": {"type": "enabled", "budget_tokens": budget}
        }
    return body, names


def completions_to_bedrock(
    request: dict[str, object],
    model: str,
    guardrail: tuple[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[bytes, Translation]:
    """An OpenAI chat client served by Bedrock: the Converse body and the way back. `model`
    is the Bedrock model id (the response reports it as the model)."""
    # The stream always ends with a usage chunk (as agentgateway's), whatever stream_options.
    body, names = build_converse(request, guardrail)
    return _encode(body).encode(), BedrockToCompletions(model, names.reverse, clock)
