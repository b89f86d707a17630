"""The LLM exchange glue for `ai` backends: request preparation and response observation.

Sans-IO: the proxy hands in the buffered request body and, later, the response bytes it is
relaying anyway; nothing here touches a socket or changes a response byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agw_fast.core.rewrite import split_target
from agw_fast.errors import ProxyError
from agw_fast.llm.providers.openai import (
    LLMRequestError,
    decode_request_body,
    default_path,
    rewrite_request_body,
)
from agw_fast.llm.sse import SSEUsageObserver
from agw_fast.llm.usage import JSONBodyCollector, Usage

if TYPE_CHECKING:
    from agw_fast.core.plan import AIRuntime
    from agw_fast.telemetry.metrics import MetricsRegistry

__all__ = ["LLMRequest", "LLMRequestError", "LLMResponseObserver", "prepare_llm_request"]

# Route types whose body is an OpenAI JSON request we may rewrite (model override).
_JSON_TYPES = frozenset({"completions", "responses", "embeddings"})
_OBSERVED_TYPES = _JSON_TYPES | {"detect"}
PROVIDER = "openai"
# agentgateway's own answer for `models` (it does not list the provider's models).
_MODELS_NOT_IMPLEMENTED = """{"error":"Route 'Models' not implemented"}"""
# Non-streaming responses are copied for usage up to this size; past it usage goes unread.
RESPONSE_COLLECT_LIMIT = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LLMRequest:
    target: bytes
    body: bytes
    route_type: str
    request_model: str | None
    stream: bool
    temperature: float | None = None
    max_tokens: int | None = None
    decoded: bool = False  # the body was content-decoded: its Content-Encoding no longer holds


def prepare_llm_request(
    ai: AIRuntime, target: bytes, body: bytes, content_encoding: bytes | None
) -> LLMRequest:
    """The upstream target and body for an `ai` backend (reference §2.3 and §7).

    Raises `LLMRequestError` (400 invalid JSON / missing model, 413, 415), or the 501
    ProxyError agentgateway answers for the `models` route type.
    """
    path, query = split_target(target)
    route_type = ai.route_types(path.decode("latin-1"))
    if route_type == "models":
        raise ProxyError(501, _MODELS_NOT_IMPLEMENTED, content_type=b"application/json")
    if route_type not in _OBSERVED_TYPES and route_type != "passthrough":
        # The loader refuses every other route type; this guards a plan built by hand.
        raise LLMRequestError(f"route type '{route_type}' is not supported by agw-fast", 501)
    if ai.path_override is not None:
        new_target = ai.path_override  # replaces path and query (reference §2.1)
    elif route_type in _JSON_TYPES and (not ai.has_host_override or ai.path_prefix is not None):
        new_target = default_path(route_type, ai.path_prefix).encode("latin-1") + query
    else:
        new_target = target
    if route_type not in _JSON_TYPES:
        model, stream = None, False
        if route_type == "detect":
            try:
                rewritten = rewrite_request_body(
                    body, model_override=None, include_usage=False
                )
                model, stream = rewritten.model, rewritten.stream
            except LLMRequestError:
                pass  # detect observes what it can and forwards the request regardless
        return LLMRequest(new_target, body, route_type, model, stream)
    if content_encoding is not None:
        body = decode_request_body(body, content_encoding.decode("latin-1"), ai.max_body)
    rewritten = rewrite_request_body(
        body,
        model_override=ai.model_override,
        include_usage=route_type == "completions",
    )
    return LLMRequest(
        new_target,
        rewritten.body,
        route_type,
        rewritten.model,
        rewritten.stream,
        rewritten.temperature,
        rewritten.max_tokens,
        content_encoding is not None,
    )


class LLMResponseObserver:
    """Reads usage, response model and time to first token from the relayed response."""

    __slots__ = ("request", "started", "observing", "chunked", "_sse", "_json")

    def __init__(self, request: LLMRequest, started: float) -> None:
        self.request = request
        self.started = started  # time.monotonic() when the request arrived
        self.observing = False
        self.chunked = False  # set by the exchange when it feeds de-chunked payload
        self._sse: SSEUsageObserver | None = None
        self._json: JSONBodyCollector | None = None

    def on_response_head(self, status: int, content_type: bytes) -> bool:
        """Whether the body should be fed to `feed` (only successful responses are read)."""
        if not 200 <= status < 300:
            return False
        if content_type.startswith(b"text/event-stream"):
            self._sse = SSEUsageObserver()
        else:
            self._json = JSONBodyCollector(RESPONSE_COLLECT_LIMIT)
        self.observing = True
        return True

    def feed(self, data: bytes) -> None:
        if self._sse is not None:
            self._sse.feed(data)
        elif self._json is not None:
            self._json.feed(data)

    def finish(
        self, registry: MetricsRegistry, route: str, log: bool
    ) -> dict[str, object] | None:
        """Record token metrics; return the access-log fields (when `log`) of this exchange."""
        request = self.request
        usage: Usage | None = None
        response_model: str | None = None
        ttft: float | None = None
        if self._sse is not None:
            self._sse.close()
            usage, response_model = self._sse.usage, self._sse.model
            ttft = self._sse.ttft(self.started)
        elif self._json is not None:
            usage, response_model = self._json.finish()
        request_model = request.request_model or ""
        registry.record_llm(
            route,
            request_model,
            response_model or "",
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            duration_s=time.monotonic() - self.started,
            ttft_s=ttft,
            cached_input_tokens=usage.cached_input_tokens if usage else None,
            system=PROVIDER,
        )
        if not log:
            return None
        fields: dict[str, object] = {
            "protocol": "llm",
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": request.request_model,
            "gen_ai.response.model": response_model,
        }
        if usage is not None:
            fields["gen_ai.usage.input_tokens"] = usage.input_tokens
            fields["gen_ai.usage.output_tokens"] = usage.output_tokens
        if ttft is not None:
            fields["agw.ai.time_to_first_token"] = f"{ttft * 1000:.0f}ms"
        if request.temperature is not None:
            fields["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            fields["gen_ai.request.max_tokens"] = request.max_tokens
        return fields
