"""OpenAI chat completions -> Gemini's native generateContent, as agentgateway's `gemini`
provider does it; plus the provider's upstream paths and API-key header.

agentgateway routes each client format for `gemini` like this (crates/agentgateway/src/llm):

- chat completions: translated to native `generateContent` (this module), sent to
  `/v1beta/models/{model}:generateContent` or `:streamGenerateContent?alt=sse`; its responses,
  streams and errors come back through `gemini_response`.
- Gemini's own `:generateContent`/`:streamGenerateContent`/`:countTokens`: passed through to
  the same native paths; only usage is read (`gemini_passthrough`).
- Anthropic messages and OpenAI responses: translated to chat completions (the shared
  messages/responses -> completions translators, nothing Gemini-specific) and sent to Google's
  OpenAI-compatible endpoint, `OPENAI_CHAT_PATH`. That endpoint answers errors in Google's
  shape: `anthropic_error_from_google` / `openai_error_from_google` turn them into the
  client's. Embeddings go to `OPENAI_EMBEDDINGS_PATH`, errors and all passed through.

Sans-IO: the request is the client's parsed JSON (never modified), the output is bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from agw_fast.llm.translate import Translation, TranslationError
from agw_fast.llm.translate.gemini_response import (
    THOUGHT_SIGNATURE_SEPARATOR,
    CompletionsFromGemini,
    GeminiPassthrough,
    anthropic_error_from_google,
    count_tokens_total,
    openai_error_from_google,
    to_json_bytes,
)
from agw_fast.llm.translate.gemini_schema import normalize_schema

__all__ = [
    "API_KEY_HEADER",
    "API_KEY_PREFIX",
    "DEFAULT_HOST",
    "OPENAI_CHAT_PATH",
    "OPENAI_EMBEDDINGS_PATH",
    "anthropic_error_from_google",
    "api_key_header",
    "build_generate_content",
    "completions_to_gemini",
    "count_tokens_total",
    "gemini_count_tokens_path",
    "gemini_passthrough",
    "gemini_path",
    "openai_error_from_google",
]

DEFAULT_HOST = "generativelanguage.googleapis.com"
# Everything that is not native generateContent goes to Google's OpenAI-compatible shim.
OPENAI_CHAT_PATH = "/v1beta/openai/chat/completions"
OPENAI_EMBEDDINGS_PATH = "/v1beta/openai/embeddings"
# Google API keys all start with this; OAuth access tokens (ya29..., JWTs) never do.
API_KEY_PREFIX = "AIza"
API_KEY_HEADER = b"x-goog-api-key"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Tool-call arguments are a JSON string; NaN/Infinity are not JSON (serde refuses them too).
_decode_arguments = json.JSONDecoder(parse_constant=_reject_constant).decode


# ---------------------------------------------------------------- paths and auth

# RFC 3986 §3.3 pchar minus "%": what may stand unescaped in one path segment. agentgateway
# escapes only controls, "/" and "%"; escaping the rest too keeps a client-chosen model name
# from opening a query (`?`) or breaking the request line (a space), and changes nothing for
# real model names.
_SEGMENT_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
)


def _escape_segment(text: str) -> str:
    raw = text.encode("utf-8")
    if all(b in _SEGMENT_SAFE for b in raw):
        return text
    return "".join(chr(b) if b in _SEGMENT_SAFE else f"%{b:02X}" for b in raw)


def _model_resource(model: str) -> str:
    """`models/{id}` or `tunedModels/{id}`: clients and configs write either the bare id or
    the resource name; the id is escaped so it can never add a path segment."""
    collection, sep, rest = model.partition("/")
    if sep and collection in ("models", "tunedModels"):
        return f"{collection}/{_escape_segment(rest)}"
    return f"models/{_escape_segment(model)}"


def gemini_path(model: str, stream: bool) -> str:
    """The native path for one generateContent call. `alt=sse` makes Google stream SSE;
    without it `:streamGenerateContent` answers one JSON array at the end."""
    if stream:
        return f"/v1beta/{_model_resource(model)}:streamGenerateContent?alt=sse"
    return f"/v1beta/{_model_resource(model)}:generateContent"


def gemini_count_tokens_path(model: str) -> str:
    return f"/v1beta/{_model_resource(model)}:countTokens"


def api_key_header(authorization: bytes, *, explicit: bool = False) -> bytes | None:
    """On the native paths: the key to send as `x-goog-api-key` instead of `authorization`.

    Google's native endpoints take API keys in `x-goog-api-key` and keep `Authorization:
    Bearer` for OAuth access tokens. agentgateway moves a Bearer token there exactly when it
    is an API key (`AIza...`) and the Authorization header was not placed by an explicitly
    configured backend-auth location (`explicit`). None: send `authorization` unchanged. The
    OpenAI-compatible paths always take `Authorization: Bearer`; do not call this for them.
    """
    if explicit or len(authorization) < 8 or authorization[:7].lower() != b"bearer ":
        return None
    token = authorization[7:].lstrip(b" ")
    if not token.startswith(b"AIza"):
        return None
    return token


# ---------------------------------------------------------------- request translation

# OpenAI reasoning_effort -> Gemini 2.5 thinkingBudget (agentgateway's shared budget scale).
_THINKING_BUDGET = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
# Gemini 3 takes a thinkingLevel instead.
_THINKING_LEVEL = {
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
_REASONING_EFFORTS = frozenset(("none", *_THINKING_BUDGET))
_CANONICAL_MIME = {"image/jpg": "image/jpeg"}
_MIME_BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "txt": "text/plain",
}
_UINT32 = 0xFFFFFFFF


def _split_tool_call_id(raw: str) -> tuple[str, str | None]:
    base, sep, signature = raw.partition(THOUGHT_SIGNATURE_SEPARATOR)
    if sep and signature:
        return base, signature
    return raw, None


def _bad(message: str) -> TranslationError:
    return TranslationError(f"invalid chat completions request: {message}")


def _opt_str(obj: dict[str, object], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise _bad(f"{where}{key} must be a string")


def _opt_number(request: dict[str, object], key: str) -> int | float | None:
    value = request.get(key)
    if value is None or (type(value) in (int, float)):
        return value  # type: ignore[return-value]  # narrowed by the type() test
    raise _bad(f"{key} must be a number")


def _opt_int(request: dict[str, object], key: str, low: int, high: int) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise _bad(f"{key} must be an integer in [{low}, {high}]")
    return value


def _as_uint(value: object) -> int | None:
    # serde_json's as_u64: a non-negative integer, else nothing (then cast to u32).
    if type(value) is int and value >= 0:
        return value & _UINT32 if value < 1 << 64 else None
    return None


def _text_part(text: str) -> dict[str, object]:
    return {"text": text}


def _content_parts(content: object, where: str) -> list[dict[str, object]] | None:
    """A message's content array, checked (a string content returns None)."""
    if type(content) is not list:
        raise _bad(f"{where}content must be a string, an array of parts or null")
    for i, part in enumerate(content):
        if type(part) is not dict or type(part.get("type")) is not str:
            raise _bad(f"{where}content[{i}] must be an object with a string type")
        text = part.get("text")
        if text is not None and type(text) is not str:
            raise _bad(f"{where}content[{i}].text must be a string")
    return content


def _content_text(content: object, where: str) -> str | None:
    if content is None:
        return None
    if type(content) is str:
        return content
    parts = _content_parts(content, where)
    assert parts is not None
    texts = (p.get("text") for p in parts if p["type"] == "text")
    return "".join(t for t in texts if type(t) is str)


def _mime_from_extension(token: str) -> str | None:
    return _MIME_BY_EXTENSION.get(token.lower())


def _image_part(image_url: object) -> dict[str, object]:
    url = image_url.get("url") if type(image_url) is dict else None
    if type(url) is not str:
        url = ""
    if url.startswith("data:"):
        meta, comma, data = url[5:].partition(",")
        media_type, semi, encoding = meta.partition(";")
        if comma and semi and encoding.lower() == "base64":
            mime_type = _CANONICAL_MIME.get(media_type, media_type)
            # mimeType before data: Vertex answers 400 to the other order.
            return {"inlineData": {"mimeType": mime_type, "data": data}}
    if url.startswith("gs://"):
        mime: str | None = None
        assert type(image_url) is dict
        for key in ("format", "mime_type", "content_type"):
            hint = image_url.get(key)
            if type(hint) is str and hint:
                mime = hint if "/" in hint else _mime_from_extension(hint)
                break
        if mime is None:
            name = url.rsplit("/", 1)[-1]
            if "." in name:
                mime = _mime_from_extension(name.rsplit(".", 1)[1])
        if mime is None:
            raise TranslationError(
                f"gs:// image_url ({url}) has no recognised extension or MIME hint; pass "
                "image_url.format (or mime_type/content_type), or use an object with a known "
                "extension"
            )
        return {"fileData": {"mimeType": _CANONICAL_MIME.get(mime, mime), "fileUri": url}}
    # Gemini cannot fetch http(s) URLs itself.
    raise TranslationError(
        f"native Gemini path rejects http(s) image_url ({url}); upload to gs:// or send "
        "inline data:"
    )


def _user_parts(content: object, where: str) -> list[dict[str, object]]:
    if content is None:
        return []
    if type(content) is str:
        return [_text_part(content)]  # an explicit "" stays {text: ""}
    parts: list[dict[str, object]] = []
    for part in _content_parts(content, where) or ():
        kind = part["type"]
        if kind == "text":
            text = part.get("text")
            if text is not None:
                parts.append(_text_part(text))  # type: ignore[arg-type]
        elif kind == "image_url":
            parts.append(_image_part(part.get("image_url")))
    return parts


def _function_call_part(call: object) -> dict[str, object]:
    fn = call.get("function") if type(call) is dict else None
    name = fn.get("name") if type(fn) is dict else None
    arguments = fn.get("arguments") if type(fn) is dict else None
    args: object = {}
    if type(arguments) is str:
        try:
            args = _decode_arguments(arguments)
        except ValueError:
            args = {}  # "" or broken JSON: Gemini needs an object
    # Vertex rejects an id on functionCall; only the embedded thoughtSignature goes back.
    raw_id = call.get("id") if type(call) is dict else None
    signature = _split_tool_call_id(raw_id)[1] if type(raw_id) is str else None
    part: dict[str, object] = {
        "functionCall": {"name": name if type(name) is str else "", "args": args}
    }
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def _has_text(parts: Iterable[dict[str, object]]) -> bool:
    return any("text" in p for p in parts)


def _has_function_response(parts: Iterable[dict[str, object]]) -> bool:
    return any("functionResponse" in p for p in parts)


def _push(contents: list[dict[str, object]], role: str, parts: list[dict[str, object]]) -> None:
    """Append a turn, merging into the previous one of the same role (Gemini wants user and
    model to alternate). Function responses keep a user turn of their own (Gemini 3 refuses
    siblings beside them); another user turn without text gets a " " text part."""
    if not parts:
        return
    responses = _has_function_response(parts)
    if contents:
        last = contents[-1]
        last_parts: list[dict[str, object]] = last["parts"]  # type: ignore[assignment]
        if last["role"] == role and _has_function_response(last_parts) == responses:
            if (
                role == "user"
                and not responses
                and not _has_text(last_parts)
                and not _has_text(parts)
            ):
                parts.append(_text_part(" "))
            last_parts.extend(parts)
            return
    if role == "user" and not responses and not _has_text(parts):
        parts.append(_text_part(" "))
    contents.append({"role": role, "parts": parts})


def _messages_to_contents(
    messages: object,
) -> tuple[list[str], list[dict[str, object]]]:
    if type(messages) is not list:
        raise _bad("messages must be an array")
    # base tool_call id -> (function name, position among the assistant's tool_calls)
    calls: dict[str, tuple[str, int]] = {}
    system: list[str] = []
    contents: list[dict[str, object]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]."
        if type(message) is not dict:
            raise _bad(f"messages[{i}] must be an object")
        role = message.get("role")
        if type(role) is not str:
            raise _bad(f"{where}role must be a string")
        content = message.get("content")
        name = _opt_str(message, "name", where)
        tool_call_id = _opt_str(message, "tool_call_id", where)
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and type(tool_calls) is not list:
            raise _bad(f"{where}tool_calls must be an array")
        if role in ("system", "developer"):
            text = _content_text(content, where)
            if text:
                system.append(text)
        elif role == "user":
            _push(contents, "user", _user_parts(content, where))
        elif role == "assistant":
            for index, call in enumerate(tool_calls or ()):
                fn = call.get("function") if type(call) is dict else None
                call_id = call.get("id") if type(call) is dict else None
                fn_name = fn.get("name") if type(fn) is dict else None
                if type(call_id) is str and type(fn_name) is str:
                    calls[_split_tool_call_id(call_id)[0]] = (fn_name, index)
            parts: list[dict[str, object]]
            if type(content) is str:
                parts = [_text_part(content)] if content else []
            elif content is None:
                parts = []
            else:
                parts = [
                    _text_part(p["text"])  # type: ignore[arg-type]
                    for p in _content_parts(content, where) or ()
                    if p["type"] == "text" and p.get("text") is not None
                ]
            parts.extend(_function_call_part(c) for c in tool_calls or ())
            _push(contents, "model", parts)
        elif role in ("tool", "function"):
            base_id = _split_tool_call_id(tool_call_id)[0] if tool_call_id is not None else None
            known = calls.get(base_id) if base_id is not None else None
            text = _content_text(content, where)
            response: dict[str, object] = {
                "name": known[0] if known else (name or ""),
                # A correlation key for the reordering below; removed before sending.
                "id": base_id,
                "response": {"content": text} if text is not None else {},
            }
            _push(contents, "user", [{"functionResponse": response}])
        # other roles carry nothing Gemini can take
    _order_function_responses(contents, calls)
    return system, contents


def _order_function_responses(
    contents: list[dict[str, object]], calls: dict[str, tuple[str, int]]
) -> None:
    """Gemini matches functionResponses to functionCalls by position, not id, so each group
    follows the assistant's call order even when a client sent the results out of order."""
    unknown = 1 << 62

    def position(part: dict[str, object]) -> int:
        fr: dict[str, object] = part["functionResponse"]  # type: ignore[assignment]
        call_id = fr["id"]
        known = calls.get(call_id) if type(call_id) is str else None
        return known[1] if known else unknown

    for content in contents:
        parts: list[dict[str, object]] = content["parts"]  # type: ignore[assignment]
        slots = [i for i, p in enumerate(parts) if "functionResponse" in p]
        if not slots:
            continue
        ordered = sorted((parts[i] for i in slots), key=position)
        for slot, part in zip(slots, ordered, strict=True):
            fr: dict[str, object] = part["functionResponse"]  # type: ignore[assignment]
            del fr["id"]
            parts[slot] = part


def _tools(request: dict[str, object]) -> list[dict[str, object]]:
    tools = request.get("tools")
    if tools is None:
        return []
    if type(tools) is not list:
        raise _bad("tools must be an array")
    declarations: list[dict[str, object]] = []
    for tool in tools:
        fn = tool.get("function") if type(tool) is dict else None
        if fn is None:
            continue
        fn_obj = fn if type(fn) is dict else {}
        name = fn_obj.get("name")
        declaration: dict[str, object] = {"name": name if type(name) is str else ""}
        description = fn_obj.get("description")
        if type(description) is str:
            declaration["description"] = description
        if "parameters" in fn_obj:
            declaration["parameters"] = normalize_schema(fn_obj["parameters"])
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(request: dict[str, object]) -> dict[str, object] | None:
    choice = request.get("tool_choice")
    config: dict[str, object]
    if type(choice) is str:
        mode = {"none": "NONE", "required": "ANY"}.get(choice, "AUTO")
        config = {"mode": mode}
    elif type(choice) is dict:
        config = {"mode": "ANY"}
        fn = choice.get("function")
        name = fn.get("name") if type(fn) is dict else None
        if type(name) is str:
            config["allowedFunctionNames"] = [name]
    else:
        return None
    return {"functionCallingConfig": config}


def _thinking_config(request: dict[str, object], model: str) -> dict[str, object] | None:
    effort = request.get("reasoning_effort")
    if effort is not None and (type(effort) is not str or effort not in _REASONING_EFFORTS):
        raise _bad(f"reasoning_effort {effort!r} is not one of {sorted(_REASONING_EFFORTS)}")
    key = "thinking_config" if "thinking_config" in request else "thinkingConfig"
    if key in request:
        # A client's own Gemini thinkingConfig wins over reasoning_effort, sent as given if it
        # is one (and dropped if not, as agentgateway does).
        return _explicit_thinking_config(request[key])
    if effort is None or effort == "none":
        return None  # no thinkingConfig rather than a zero budget
    if "gemini-3" in model:
        return {"thinkingLevel": _THINKING_LEVEL[effort], "includeThoughts": True}
    return {"thinkingBudget": _THINKING_BUDGET[effort], "includeThoughts": True}


_THINKING_KEYS = ("thinkingLevel", "thinkingBudget", "includeThoughts")


def _explicit_thinking_config(config: object) -> dict[str, object] | None:
    if type(config) is not dict:
        return None
    level = config.get("thinkingLevel")
    budget = config.get("thinkingBudget")
    include = config.get("includeThoughts")
    if (
        (level is not None and type(level) is not str)
        or (budget is not None and (type(budget) is not int or not -(1 << 31) <= budget < 1 << 31))
        or (include is not None and type(include) is not bool)
    ):
        return None
    out: dict[str, object] = {
        k: v for k, v in zip(_THINKING_KEYS, (level, budget, include), strict=True) if v is not None
    }
    out.update((k, v) for k, v in config.items() if k not in _THINKING_KEYS)
    return out


def _response_format(request: dict[str, object]) -> tuple[str | None, object]:
    fmt = request.get("response_format")
    kind = fmt.get("type") if type(fmt) is dict else None
    if kind == "json_object":
        return "application/json", None
    if kind == "json_schema":
        assert type(fmt) is dict
        wrapper = fmt.get("json_schema")
        if type(wrapper) is dict and "schema" in wrapper:
            return "application/json", normalize_schema(wrapper["schema"])
        return "application/json", None
    return None, None


def _generation_config(request: dict[str, object], model: str) -> dict[str, object] | None:
    stop = request.get("stop")
    if type(stop) is str:
        stop_sequences: list[str] = [stop]
    elif type(stop) is list:
        stop_sequences = [s for s in stop if type(s) is str]
    else:
        stop_sequences = []
    max_tokens = _opt_int(request, "max_completion_tokens", 0, _UINT32)
    if max_tokens is None:
        max_tokens = _opt_int(request, "max_tokens", 0, _UINT32)
    else:
        _opt_int(request, "max_tokens", 0, _UINT32)
    mime_type, schema = _response_format(request)
    fields: tuple[tuple[str, object], ...] = (
        ("temperature", _opt_number(request, "temperature")),
        ("topP", _opt_number(request, "top_p")),
        ("topK", _as_uint(request.get("top_k"))),
        ("frequencyPenalty", _opt_number(request, "frequency_penalty")),
        ("presencePenalty", _opt_number(request, "presence_penalty")),
        ("maxOutputTokens", max_tokens),
        ("stopSequences", stop_sequences or None),
        ("candidateCount", _as_uint(request.get("n"))),
        ("seed", _opt_int(request, "seed", -(1 << 63), (1 << 63) - 1)),
        ("responseMimeType", mime_type),
        ("responseSchema", schema),
        ("thinkingConfig", _thinking_config(request, model)),
    )
    config = {k: v for k, v in fields if v is not None}
    return config or None


def _safety_settings(request: dict[str, object]) -> list[dict[str, object]]:
    key = "safetySettings" if "safetySettings" in request else "safety_settings"
    settings = request.get(key)
    if type(settings) is not list:
        return []
    out: list[dict[str, object]] = []
    for setting in settings:
        if (
            type(setting) is not dict
            or type(setting.get("category")) is not str
            or type(setting.get("threshold")) is not str
        ):
            return []  # agentgateway ignores a malformed list as a whole
        out.append(
            {
                "category": setting["category"],
                "threshold": setting["threshold"],
                **{k: v for k, v in setting.items() if k not in ("category", "threshold")},
            }
        )
    return out


def build_generate_content(request: dict[str, object]) -> dict[str, object]:
    """The generateContent body for a chat completions request, as a JSON object."""
    if type(request) is not dict:
        raise _bad("the body must be a JSON object")
    model = request.get("model")
    if model is not None and type(model) is not str:
        raise _bad("model must be a string")
    system, contents = _messages_to_contents(request.get("messages"))
    if not contents:
        contents = [{"role": "user", "parts": [_text_part(" ")]}]  # "contents is required"
    body: dict[str, object] = {"contents": contents}
    tools = _tools(request)
    tool_config = _tool_config(request)
    generation_config = _generation_config(request, model or "")
    cached = request.get("cachedContent" if "cachedContent" in request else "cached_content")
    cached_content = cached if type(cached) is str else None
    # A cachedContent already holds the system instruction and tools; Gemini refuses both.
    if cached_content is None:
        if system:
            body["systemInstruction"] = {"parts": [_text_part("\n".join(system))]}
        if tools:
            body["tools"] = tools
        if tool_config is not None:
            body["toolConfig"] = tool_config
    if generation_config is not None:
        body["generationConfig"] = generation_config
    safety = _safety_settings(request)
    if safety:
        body["safetySettings"] = safety
    if cached_content is not None:
        body["cachedContent"] = cached_content
    labels = request.get("labels")
    if type(labels) is dict:
        body["labels"] = labels
    return body


def completions_to_gemini(request: dict[str, object]) -> tuple[bytes, Translation]:
    """Translate a chat completions request (its `model` already the provider's model) into a
    generateContent body, and the `Translation` for what comes back. The path is
    `gemini_path(model, stream)`: the body carries neither model nor stream flag.

    Raises `TranslationError` (a 400 for the client) when the request cannot be expressed."""
    body = build_generate_content(request)
    model = request.get("model")
    return to_json_bytes(body), CompletionsFromGemini(model if type(model) is str else "")


def gemini_passthrough() -> Translation:
    """For a Gemini client on the native routes: bodies and errors unchanged, usage read."""
    return GeminiPassthrough()
