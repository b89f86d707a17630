"""agentgateway's `custom` provider, and the presets (cohere, groq, ...) that are custom
providers with a default endpoint: which format a call goes out in, and to which path.

A custom provider lists the upstream formats it accepts (llm/src/custom.rs
`ProviderFormat`). A chat call (completions, messages, responses, native Gemini) goes out
in the first format of agentgateway's `CHAT_TRANSLATIONS` order the provider accepts;
every other call only in its own format. The path is the format's configured `path`
verbatim, else the format's usual path under `pathPrefix` (llm/mod.rs `set_default_path`).
Sans-IO.
"""

from __future__ import annotations

from collections.abc import Sequence

from agw_fast.config.model import CustomFormat
from agw_fast.llm.translate.gemini import gemini_count_tokens_path, gemini_path

__all__ = ["custom_format", "custom_path"]

# Client API -> the provider formats that can serve it, best first: passthrough before
# translation, except that a completions client goes to native Gemini ahead of chat
# completions (agentgateway prefers its own Gemini conversion to Google's compat shim, and
# applies that to custom providers that advertise generateContent too).
_CHAT_ORDER: dict[str, tuple[str, ...]] = {
    "completions": ("generateContent", "completions", "messages"),
    "messages": ("messages", "completions", "responses"),
    "responses": ("responses", "completions"),
    "generateContent": ("generateContent",),
}
# Route types that are not chat go out only in their own format.
_OWN_FORMAT = frozenset(
    ("embeddings", "rerank", "anthropicTokenCount", "geminiCountTokens", "realtime")
)
_DEFAULT_BASE_PATH = "/v1"  # OpenAI's and Anthropic's, which the default paths follow
_OPENAI_SUFFIX = {
    "responses": "/responses",
    "embeddings": "/embeddings",
    "rerank": "/rerank",
    "realtime": "/realtime",
}


def custom_format(formats: Sequence[CustomFormat], route_type: str) -> str | None:
    """The format a `route_type` call goes out in; None when the provider takes none that
    serves it."""
    candidates = _CHAT_ORDER.get(route_type)
    if candidates is None:
        if route_type not in _OWN_FORMAT:
            return None
        candidates = (route_type,)
    for candidate in candidates:
        for accepted in formats:  # a handful: scanning beats building a set per call
            if accepted.format == candidate:
                return candidate
    return None


def custom_path(
    formats: Sequence[CustomFormat],
    path_prefix: str | None,
    out_format: str,
    request_model: str,
    stream: bool,
    query: str,
) -> str:
    """The upstream path and query for a call in `out_format`. `query` is the client's
    (without `?`); it is kept, as agentgateway keeps it, except for `alt` on the native
    Gemini formats, whose own `alt=sse` picks the streaming framing."""
    native = out_format in ("generateContent", "geminiCountTokens")
    if native and query:
        query = "&".join(p for p in query.split("&") if p.partition("=")[0] != "alt")
    # agentgateway looks at the first entry of the format only.
    configured = next((f.path for f in formats if f.format == out_format), None)
    if configured is not None:
        path = configured
    else:
        prefix = path_prefix.rstrip("/") if path_prefix is not None else None
        if out_format == "generateContent":
            path = (prefix or "") + gemini_path(request_model, stream)
        elif out_format == "geminiCountTokens":
            path = (prefix or "") + gemini_count_tokens_path(request_model)
        else:
            base = _DEFAULT_BASE_PATH if prefix is None else prefix
            if out_format == "messages":
                path = base + "/messages"
            elif out_format == "anthropicTokenCount":
                path = base + "/messages/count_tokens"
            else:
                path = base + _OPENAI_SUFFIX.get(out_format, "/chat/completions")
    if not query:
        return path
    return path + ("&" if "?" in path else "?") + query
