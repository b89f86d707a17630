"""`promptCaching`: cache markers on an Anthropic Messages request built from chat completions.

agentgateway defines where a prompt-caching policy puts its cache points only in its Bedrock
Converse translation of chat completions (llm/src/conversion/bedrock.rs, `from_completions`
and its helpers `estimate_system_tokens`, `insert_message_cache_point`): one after the
system prompt when it is estimated at `minTokens` or more, one after the message
`cacheMessageOffset` places before the second-to-last (clamped to the first; none with fewer
than two messages), one after the last tool definition. A Messages request marks "cache up
to here" with `cache_control: {"type": "ephemeral"}` on the last block before that point, so
the same places become: the system prompt as one text block carrying the marker, the
marker on the chosen message's last content block, the marker on the last tool.

The estimate is agentgateway's: whitespace-separated words times 1.3, no tokenizer. A
request the client sends in the Messages format keeps its own markers and gets none
added (agentgateway adds none to Messages input either: its client decides).
"""

from __future__ import annotations

from agw_fast.config.model import PromptCaching

__all__ = ["estimate_tokens", "insert_cache_markers"]


def _marker() -> dict[str, str]:
    return {"type": "ephemeral"}


def estimate_tokens(text: str) -> int:
    """agentgateway's estimate of a system prompt's tokens: words * 13 // 10."""
    return len(text.split()) * 13 // 10


def insert_cache_markers(body: dict[str, object], caching: PromptCaching) -> None:
    """Add the markers `caching` asks for to `body` (a Messages request, changed in place)."""
    system = body.get("system")
    if caching.cache_system and type(system) is str and system:
        minimum = caching.min_tokens
        if minimum is None or estimate_tokens(system) >= minimum:
            body["system"] = [{"type": "text", "text": system, "cache_control": _marker()}]
    messages = body.get("messages")
    if caching.cache_messages and type(messages) is list and len(messages) >= 2:
        index = max(len(messages) - 2 - caching.cache_message_offset, 0)
        message = messages[index]
        if type(message) is dict:
            _mark_last_block(message)
    tools = body.get("tools")
    if caching.cache_tools and type(tools) is list and tools and type(tools[-1]) is dict:
        tools[-1]["cache_control"] = _marker()


def _mark_last_block(message: dict[str, object]) -> None:
    content = message.get("content")
    if type(content) is str:
        if content:
            message["content"] = [{"type": "text", "text": content, "cache_control": _marker()}]
        return
    if type(content) is list and content and type(content[-1]) is dict:
        content[-1]["cache_control"] = _marker()
