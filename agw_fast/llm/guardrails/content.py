"""Where the text is in each client API's request and response JSON, as guards see it.

agentgateway's `visit_text_mut` (crates/llm/src/types/*.rs), per client format:
- chat completions: each message's content (a string, or runs of text parts), scoped by role
  (`system`/`developer` -> systemPrompt, `tool`/`function` -> toolOutput, else messages);
  tool call arguments are toolInput;
- Anthropic Messages: `system` (systemPrompt), message content (messages), `tool_result`
  content (toolOutput) and `tool_use` input (toolInput);
- Responses: `instructions` (systemPrompt), `input` text or items (messages, by role), tool
  outputs and arguments;
- Gemini generateContent: `systemInstruction` (systemPrompt) and `contents` parts' text.

Runs of consecutive text parts are scanned as one text joined by a separator (a pattern may
span parts); a run that a mask changes collapses into its last part, as agentgateway does.
Responses: the assistant's text (chat `choices[].message.content`, Messages text blocks,
Responses `output_text` parts, Gemini candidates' parts). Sans-IO; everything works on the
parsed JSON objects in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "GUARDED_ROUTE_TYPES",
    "ResponseText",
    "TextSlot",
    "finish_slots",
    "request_messages",
    "request_slots",
    "response_texts",
    "set_request_messages",
    "set_response_texts",
]

# The client formats guards read (agentgateway's `supports_prompt_guard`).
GUARDED_ROUTE_TYPES = frozenset({"completions", "messages", "responses", "generateContent"})

_Obj = dict[str, Any]


class TextSlot:
    """One text a request guard scans: a string field, or a run of text parts joined by
    `sep`. `set` writes a masked text back (a run collapses into its last part)."""

    __slots__ = ("scope", "text", "collapsed", "_parts", "_indexes", "_key", "_owner")

    def __init__(self, scope: str, text: str, owner: Any, key: Any,
                 parts: list[Any] | None = None, indexes: tuple[int, ...] = ()) -> None:
        self.scope = scope
        self.text = text
        self._owner = owner  # the dict or list holding the string (for a run: its last part)
        self._key = key
        self._parts = parts
        self._indexes = indexes
        self.collapsed = False

    def set(self, text: str) -> None:
        self.text = text
        self._owner[self._key] = text
        parts = self._parts
        if parts is not None and len(self._indexes) > 1:
            # Marked, not removed: the other slots' indexes stay valid until `finish_slots`.
            for index in self._indexes[:-1]:
                parts[index] = _DROPPED
            self.collapsed = True


_DROPPED: Any = object()


def finish_slots(slots: list[TextSlot]) -> None:
    """Remove the parts that collapsed runs left behind (after all `set` calls)."""
    done: set[int] = set()
    for slot in slots:
        parts = slot._parts
        if slot.collapsed and parts is not None and id(parts) not in done:
            done.add(id(parts))
            parts[:] = [p for p in parts if p is not _DROPPED]


def _string(owner: Any, key: Any, scope: str) -> Iterator[TextSlot]:
    value = owner[key]
    if type(value) is str:
        yield TextSlot(scope, value, owner, key)


def _json_strings(owner: Any, key: Any, scope: str) -> Iterator[TextSlot]:
    """Every string in the JSON tree at owner[key] (a bare string is one opaque value)."""
    value = owner[key]
    if type(value) is str:
        yield TextSlot(scope, value, owner, key)
    elif type(value) is list:
        for index in range(len(value)):
            yield from _json_strings(value, index, scope)
    elif type(value) is dict:
        for item_key in list(value):
            yield from _json_strings(value, item_key, scope)


def _at(obj: Any, *path: str) -> tuple[Any, str] | None:
    """(owner, key) of obj[path...] when it exists."""
    for key in path[:-1]:
        if type(obj) is not dict:
            return None
        obj = obj.get(key)
    if type(obj) is not dict or path[-1] not in obj:
        return None
    return obj, path[-1]


def _visit_at(obj: Any, path: tuple[str, ...], scope: str) -> Iterator[TextSlot]:
    found = _at(obj, *path)
    if found is not None:
        yield from _json_strings(found[0], found[1], scope)


def _runs(parts: list[Any], sep: str, scope: str,
          text_of: Callable[[Any], str | None]) -> Iterator[TextSlot]:
    """Runs of consecutive text parts, each one slot (agentgateway's `scan_text_runs`)."""
    i = 0
    n = len(parts)
    while i < n:
        texts: list[str] = []
        start = i
        while i < n:
            text = text_of(parts[i])
            if text is None:
                break
            texts.append(text)
            i += 1
        if i == start:
            i += 1
            continue
        indexes = tuple(range(start, i))
        yield TextSlot(scope, sep.join(texts), parts[i - 1], "text", parts, indexes)


def _text_field(part: Any) -> str | None:
    if type(part) is dict:
        text = part.get("text")
        if type(text) is str and part.get("type", "text") == "text":
            return text
    return None


def _responses_text(part: Any) -> str | None:
    if type(part) is dict and part.get("type") in ("input_text", "output_text"):
        text = part.get("text")
        if type(text) is str:
            return text
    return None


def _gemini_text(part: Any) -> str | None:
    if type(part) is dict and part.get("thought") is not True:
        text = part.get("text")
        if type(text) is str:
            return text
    return None


def request_slots(route_type: str, obj: _Obj) -> list[TextSlot]:
    """The texts of a client request, in agentgateway's visiting order."""
    if route_type == "completions":
        return list(_completions(obj))
    if route_type == "messages":
        return list(_messages(obj))
    if route_type == "responses":
        return list(_responses(obj))
    if route_type == "generateContent":
        return list(_gemini(obj))
    return []


def _completions(obj: _Obj) -> Iterator[TextSlot]:
    messages = obj.get("messages")
    if type(messages) is not list:
        return
    for msg in messages:
        if type(msg) is not dict:
            continue
        role = msg.get("role")
        scope = (
            "toolOutput" if role in ("tool", "function")
            else "systemPrompt" if role in ("system", "developer") else "messages"
        )
        content = msg.get("content")
        if type(content) is str:
            yield TextSlot(scope, content, msg, "content")
        elif type(content) is list:
            yield from _runs(content, " ", scope, _text_field)
        calls = msg.get("tool_calls")
        if type(calls) is list:
            for call in calls:
                yield from _visit_at(call, ("function", "arguments"), "toolInput")
                yield from _visit_at(call, ("custom", "input"), "toolInput")
        yield from _visit_at(msg, ("function_call", "arguments"), "toolInput")


_ANTHROPIC_TOOL_RESULTS = frozenset({
    "tool_result", "mcp_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
    "tool_search_tool_result", "web_fetch_tool_result", "advisor_tool_result",
})  # fmt: skip
_ANTHROPIC_TOOL_USES = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})


def _messages(obj: _Obj) -> Iterator[TextSlot]:
    system = obj.get("system")
    if type(system) is str:
        yield TextSlot("systemPrompt", system, obj, "system")
    elif type(system) is list:
        yield from _runs(system, "\n", "systemPrompt", _text_field)
    messages = obj.get("messages")
    if type(messages) is not list:
        return
    for msg in messages:
        if type(msg) is not dict:
            continue
        content = msg.get("content")
        if type(content) is str:
            yield TextSlot("messages", content, msg, "content")
        elif type(content) is list:
            for part in content:
                kind = part.get("type") if type(part) is dict else None
                if kind in _ANTHROPIC_TOOL_RESULTS:
                    yield from _visit_at(part, ("content",), "toolOutput")
                elif kind in _ANTHROPIC_TOOL_USES:
                    yield from _visit_at(part, ("input",), "toolInput")
                elif kind == "document":
                    for key in ("source", "title", "context"):
                        yield from _visit_at(part, (key,), "messages")
            yield from _runs(content, " ", "messages", _text_field)


_RESPONSES_TOOL_ITEMS: dict[str, tuple[tuple[str, str], ...]] = {
    "function_call_output": (("output", "toolOutput"),),
    "custom_tool_call_output": (("output", "toolOutput"),),
    "local_shell_call_output": (("output", "toolOutput"),),
    "shell_call_output": (("output", "toolOutput"),),
    "apply_patch_call_output": (("output", "toolOutput"),),
    "function_call": (("arguments", "toolInput"), ("output", "toolOutput"),
                      ("error", "toolOutput")),
    "mcp_call": (("arguments", "toolInput"), ("output", "toolOutput"), ("error", "toolOutput")),
    "custom_tool_call": (("input", "toolInput"),),
}  # fmt: skip


def _responses(obj: _Obj) -> Iterator[TextSlot]:
    if type(obj.get("instructions")) is str:
        yield from _string(obj, "instructions", "systemPrompt")
    items = obj.get("input")
    if type(items) is str:
        yield TextSlot("messages", items, obj, "input")
        return
    if type(items) is not list:
        return
    for item in items:
        if type(item) is not dict:
            continue
        role = item.get("role")
        if type(role) is str:
            scope = "systemPrompt" if role in ("system", "developer") else "messages"
            content = item.get("content")
            if type(content) is str:
                yield TextSlot(scope, content, item, "content")
            elif type(content) is list:
                for part in content:
                    yield from _visit_at(part, ("refusal",), scope)
                yield from _runs(content, "\n", scope, _responses_text)
            continue
        for key, scope in _RESPONSES_TOOL_ITEMS.get(str(item.get("type")), ()):
            yield from _visit_at(item, (key,), scope)


def _gemini(obj: _Obj) -> Iterator[TextSlot]:
    system = obj.get("systemInstruction")
    if type(system) is dict and type(system.get("parts")) is list:
        yield from _runs(system["parts"], "\n", "systemPrompt", _gemini_text)
    contents = obj.get("contents")
    if type(contents) is not list:
        return
    for content in contents:
        if type(content) is dict and type(content.get("parts")) is list:
            yield from _runs(content["parts"], " ", "messages", _gemini_text)


# -- the webhook and moderation views: messages as {role, content} ---------------------------


def request_messages(route_type: str, obj: _Obj) -> list[dict[str, str]]:
    """agentgateway's `get_messages`: the prompt as role/content pairs (system first)."""
    out: list[dict[str, str]] = []
    if route_type == "completions":
        for msg in obj.get("messages") or ():
            if type(msg) is dict:
                out.append({"role": str(msg.get("role", "user")),
                            "content": _flat(msg.get("content"), _text_field)})
    elif route_type == "messages":
        system = obj.get("system")
        if system is not None:
            out.append({"role": "system", "content": _flat(system, _text_field)})
        for msg in obj.get("messages") or ():
            if type(msg) is dict:
                out.append({"role": str(msg.get("role", "user")),
                            "content": _flat(msg.get("content"), _text_field)})
    elif route_type == "responses":
        if type(obj.get("instructions")) is str:
            out.append({"role": "system", "content": obj["instructions"]})
        items = obj.get("input")
        if type(items) is str:
            out.append({"role": "user", "content": items})
        elif type(items) is list:
            for item in items:
                if type(item) is dict and type(item.get("role")) is str:
                    out.append({"role": item["role"],
                                "content": _flat(item.get("content"), _responses_text)})
    elif route_type == "generateContent":
        system = obj.get("systemInstruction")
        if type(system) is dict:
            out.append({"role": "system", "content": _flat(system.get("parts"), _gemini_text)})
        for content in obj.get("contents") or ():
            if type(content) is dict:
                out.append({"role": str(content.get("role", "user")),
                            "content": _flat(content.get("parts"), _gemini_text)})
    return out


def _flat(value: object, text_of: Callable[[Any], str | None]) -> str:
    if type(value) is str:
        return value
    if type(value) is list:
        return "\n".join(t for t in map(text_of, value) if t is not None)
    return ""


def set_request_messages(route_type: str, obj: _Obj, messages: list[dict[str, str]]) -> None:
    """agentgateway's `set_messages` (a webhook's mask): the prompt becomes these messages
    (their text only: other content of the replaced messages is gone, as there)."""
    if route_type == "completions":
        obj["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif route_type == "messages":
        system = [m["content"] for m in messages if m["role"] == "system"]
        if system:
            obj["system"] = "\n".join(system)
        obj["messages"] = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
    elif route_type == "responses":
        system = [m["content"] for m in messages if m["role"] in ("system", "developer")]
        if "instructions" in obj and system:
            obj["instructions"] = "\n".join(system)
            messages = [m for m in messages if m["role"] not in ("system", "developer")]
        obj["input"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif route_type == "generateContent":
        system = [m["content"] for m in messages if m["role"] == "system"]
        if system:
            obj["systemInstruction"] = {"parts": [{"text": "\n".join(system)}]}
        obj["contents"] = [
            {"role": m["role"], "parts": [{"text": m["content"]}]}
            for m in messages if m["role"] != "system"
        ]


# -- responses -------------------------------------------------------------------------------


class ResponseText:
    """One text of a response body; `set` writes a masked text back."""

    __slots__ = ("text", "_owner", "_key", "_clear")

    def __init__(self, text: str, owner: Any, key: Any, clear: tuple[str, ...] = ()) -> None:
        self.text = text
        self._owner = owner
        self._key = key
        self._clear = clear  # fields describing offsets of the text, void once it changes

    def set(self, text: str) -> None:
        if text == self.text:
            return
        self.text = text
        self._owner[self._key] = text
        for key in self._clear:
            if key in self._owner:
                self._owner[key] = [] if key == "annotations" else None


def response_texts(route_type: str, obj: _Obj) -> list[ResponseText]:
    out: list[ResponseText] = []
    if route_type == "completions":
        for choice in obj.get("choices") or ():
            message = choice.get("message") if type(choice) is dict else None
            if type(message) is dict and type(message.get("content")) is str:
                out.append(ResponseText(message["content"], message, "content"))
    elif route_type == "messages":
        for block in obj.get("content") or ():
            if type(block) is dict and type(block.get("text")) is str:
                out.append(ResponseText(block["text"], block, "text"))
    elif route_type == "responses":
        for item in obj.get("output") or ():
            if type(item) is not dict or item.get("type") != "message":
                continue
            for part in item.get("content") or ():
                if (type(part) is dict and part.get("type") == "output_text"
                        and type(part.get("text")) is str):
                    clear = ("annotations", "logprobs")
                    out.append(ResponseText(part["text"], part, "text", clear))
    elif route_type == "generateContent":
        for candidate in obj.get("candidates") or ():
            content = candidate.get("content") if type(candidate) is dict else None
            if type(content) is dict:
                for part in content.get("parts") or ():
                    if _gemini_text(part) is not None:
                        out.append(ResponseText(part["text"], part, "text"))
    return out


def set_response_texts(texts: list[ResponseText], replacements: list[str]) -> None:
    """A webhook's masked choices: one text per choice, in order."""
    for slot, text in zip(texts, replacements, strict=False):
        slot.set(text)
