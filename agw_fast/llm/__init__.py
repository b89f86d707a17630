"""The `ai` backend: OpenAI request rewriting, SSE observation and usage accounting."""

from __future__ import annotations

from agw_fast.llm.providers.openai import (
    COMPLETIONS,
    DEFAULT_BASE_PATH,
    WILDCARD_ROUTE,
    LLMRequestError,
    RewrittenBody,
    RouteTypeResolver,
    decode_request_body,
    default_path,
    resolve_route_type,
    rewrite_request_body,
)
from agw_fast.llm.sse import DEFAULT_MAX_EVENT_SIZE, SSEUsageObserver
from agw_fast.llm.usage import (
    JSONBodyCollector,
    Usage,
    usage_from_json_body,
    usage_from_mapping,
)

__all__ = [
    "COMPLETIONS",
    "DEFAULT_BASE_PATH",
    "DEFAULT_MAX_EVENT_SIZE",
    "WILDCARD_ROUTE",
    "JSONBodyCollector",
    "LLMRequestError",
    "RewrittenBody",
    "RouteTypeResolver",
    "SSEUsageObserver",
    "Usage",
    "decode_request_body",
    "default_path",
    "resolve_route_type",
    "rewrite_request_body",
    "usage_from_json_body",
    "usage_from_mapping",
]
