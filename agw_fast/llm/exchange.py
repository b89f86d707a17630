"""The LLM exchange glue for `ai` backends: request preparation and response observation.

Sans-IO: the proxy hands in the buffered request body and, later, the response bytes it is
relaying anyway; nothing here touches a socket or changes a response byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from agw_fast.core.rewrite import split_target
from agw_fast.errors import ProxyError
from agw_fast.llm.codings import CodingError, Inflater, UnsupportedCoding, parse_codings
from agw_fast.llm.providers.openai import (
    LLMRequestError,
    RouteTypeResolver,
    decode_request_body,
    default_path,
    rewrite_request_body,
)
from agw_fast.llm.sse import SSEUsageObserver
from agw_fast.llm.translate import Translation
from agw_fast.llm.usage import JSONBodyCollector, Usage

__all__ = [
    "AIRuntime",
    "EstimatedLLMRequest",
    "LLMOutcome",
    "LLMRequest",
    "LLMRequestError",
    "LLMResponseObserver",
    "prepare_llm_request",
]

# Route types whose body is an OpenAI JSON request we may rewrite (model override).
_JSON_TYPES = frozenset({"completions", "responses", "embeddings"})
_OBSERVED_TYPES = _JSON_TYPES | {"detect"}
PROVIDER = "openai"
# agentgateway's own answer for `models` (it does not list the provider's models).
_MODELS_NOT_IMPLEMENTED = """{"error":"Route 'Models' not implemented"}"""
# Non-streaming responses are copied for usage up to this size; past it usage goes unread.
# With a content coding the limit bounds the decoded size (the relayed bytes stay encoded).
RESPONSE_COLLECT_LIMIT = 8 * 1024 * 1024
# An encoded event stream is decoded for the observer up to this many bytes in all: memory is
# bounded anyway (pieces of codings.STEP), this bounds the work a compression bomb can cause.
STREAM_DECODE_LIMIT = 64 * 1024 * 1024
_CONTENT_ENCODING = b"content-encoding:"


@dataclass(frozen=True, slots=True)
class AIRuntime:
    """What an `ai` backend does to each request, compiled at load (`agw_fast.plan`)."""

    model_override: str | None
    route_types: RouteTypeResolver
    has_host_override: bool
    path_prefix: str | None
    path_override: bytes | None
    max_body: int


@dataclass(slots=True)
class LLMRequest:
    """One LLM call as prepared for the upstream. Never mutated once built; not frozen
    because a frozen dataclass's __init__ costs ~4x more (one object.__setattr__ a field)
    and one is built per request."""

    target: bytes
    body: bytes
    route_type: str
    request_model: str | None
    stream: bool
    temperature: float | None = None
    max_tokens: int | None = None
    decoded: bool = False  # the body was content-decoded: its Content-Encoding no longer holds
    provider: str = PROVIDER  # agentgateway's provider name for telemetry
    # The `llm:` form: how the provider's response becomes the client's (None: relayed as is).
    translation: Translation | None = None

    # A field of `EstimatedLLMRequest` only: a request without `tokenize` (every request on
    # the fast path) builds no more fields than before (a frozen field costs ~0.15 µs).
    @property
    def input_tokens(self) -> int | None:
        """`tokenize`: the prompt's estimated tokens (llm/tokenizer.py), taken from `type:
        tokens` limits before the call (agentgateway's LLMRequest.input_tokens)."""
        return None

    def with_estimate(self, tokens: int) -> EstimatedLLMRequest:
        return EstimatedLLMRequest(
            self.target, self.body, self.route_type, self.request_model, self.stream,
            self.temperature, self.max_tokens, self.decoded, self.provider, self.translation,
            tokens,
        )  # fmt: skip


@dataclass(slots=True)
class EstimatedLLMRequest(LLMRequest):
    """A request whose prompt `tokenize` counted."""

    input_tokens: int | None = None


def prepare_llm_request(
    ai: AIRuntime, target: bytes, body: bytes, content_encoding: bytes | None
) -> LLMRequest:
    """The upstream target and body for an `ai` backend (agentgateway's `ai` backend semantics).

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
        new_target = ai.path_override  # path and query, as agentgateway's pathOverride
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
    """Reads usage, response model and time to first token from the relayed response.

    A gzip or deflate response (the OpenAI SDK asks for them) is inflated for this copy only:
    the client receives the upstream's bytes unchanged.
    """

    __slots__ = (
        "request", "started", "observing", "chunked", "_sse", "_json", "_inflater", "_translated",
    )  # fmt: skip

    def __init__(self, request: LLMRequest, started: float) -> None:
        self.request = request
        self.started = started  # time.monotonic() when the request arrived
        self.observing = False
        self.chunked = False  # set by the exchange when it feeds de-chunked payload
        self._sse: SSEUsageObserver | None = None
        self._json: JSONBodyCollector | None = None
        self._inflater: Inflater | None = None
        self._translated: tuple[Usage | None, str | None, float | None] | None = None

    def translated(
        self, usage: Usage | None, model: str | None, first_token_at: float | None
    ) -> None:
        """What a translated response told (the translator read it; nothing is fed here)."""
        self._translated = (usage, model, first_token_at)

    def on_response_head(
        self, status: int, content_type: bytes, lines: Sequence[bytes] = ()
    ) -> bool:
        """Whether the body should be fed to `feed` (only successful responses are read).

        `lines` are the relayed field lines (lowercase names), read for `Content-Encoding`.
        """
        if not 200 <= status < 300:
            return False
        encoding = _content_encoding(lines)
        if encoding is not None:
            try:
                codings = parse_codings(encoding.decode("latin-1"))
            except UnsupportedCoding:
                return False  # br, zstd, ...: relayed, but its usage cannot be read
            if len(codings) > 1:
                return False  # stacked codings: as rare as they are costly; agentgateway refuses
            if codings:
                self._inflater = Inflater(codings[0])
        if content_type.startswith(b"text/event-stream"):
            self._sse = SSEUsageObserver()
        else:
            self._json = JSONBodyCollector(RESPONSE_COLLECT_LIMIT)
        self.observing = True
        return True

    def payload_reader(self) -> Callable[[bytes], None]:
        """What to call with each slice of payload: `feed`, or when nothing is to inflate,
        the reader `feed` would pass it to (one call fewer per SSE event)."""
        if self._inflater is None:
            if self._sse is not None:
                return self._sse.feed
            if self._json is not None:
                return self._json.feed
        return self.feed

    def feed(self, data: bytes) -> None:
        inflater = self._inflater
        if inflater is not None:
            self._feed_encoded(inflater, data)
        elif self._sse is not None:
            self._sse.feed(data)
        elif self._json is not None:
            self._json.feed(data)

    def _feed_encoded(self, inflater: Inflater, data: bytes) -> None:
        if not self.observing:
            return  # gave up on this body
        sse, collector = self._sse, self._json
        # One byte past the collector's limit is enough for it to see the overflow.
        limit = STREAM_DECODE_LIMIT if sse is not None else RESPONSE_COLLECT_LIMIT
        try:
            for piece in inflater.feed(data, limit):
                if sse is not None:
                    sse.feed(piece)
                elif collector is not None:
                    collector.feed(piece)
        except CodingError:
            self._give_up()
            return
        if inflater.decoded > limit:
            self._give_up()

    def _give_up(self) -> None:
        """The rest cannot be read (corrupt, or past the limit). A JSON body then reports no
        usage; a stream keeps what its earlier events told (model, time to first token)."""
        if self._json is not None:
            self._json.stop()
        self.observing = False

    def outcome(self) -> LLMOutcome:
        """What the exchange learned about this LLM call, for metrics and the access log."""
        request = self.request
        usage: Usage | None = None
        response_model: str | None = None
        ttft: float | None = None
        if self._translated is not None:
            usage, response_model, first = self._translated
            ttft = None if first is None or not request.stream else first - self.started
        elif self._sse is not None:
            self._sse.close()
            usage, response_model = self._sse.usage, self._sse.model
            ttft = self._sse.ttft(self.started)
        elif self._json is not None:
            usage, response_model = self._json.finish()
        # agentgateway's `normalized_input_tokens`: the `tokenize` estimate, if any, when the
        # provider said nothing.
        if usage is None:
            return LLMOutcome(
                request.provider, request.route_type, request.request_model, response_model,
                request.input_tokens, None, None, ttft, request.temperature, request.max_tokens,
                None, None, False, request.stream,
            )
        input_tokens = usage.input_tokens
        if input_tokens is None:
            input_tokens = request.input_tokens
        if type(usage) is Usage:  # OpenAI's accounting: the cache is part of the input
            return LLMOutcome(
                request.provider, request.route_type, request.request_model, response_model,
                input_tokens, usage.output_tokens, usage.cached_input_tokens, ttft,
                request.temperature, request.max_tokens, usage.reasoning_tokens, None, False,
                request.stream,
            )
        return LLMOutcome(
            request.provider, request.route_type, request.request_model, response_model,
            input_tokens, usage.output_tokens, usage.cached_input_tokens, ttft,
            request.temperature, request.max_tokens, usage.reasoning_tokens,
            usage.cache_write_tokens, usage.input_excludes_cache, request.stream,
        )


def _content_encoding(lines: Sequence[bytes]) -> bytes | None:
    """The `Content-Encoding` of a response head; repeated fields form one list (RFC 9110 §5.3)."""
    found: bytes | None = None
    for line in lines:
        if line.startswith(_CONTENT_ENCODING):
            value = line[len(_CONTENT_ENCODING) :].strip(b" \t")
            found = value if found is None else found + b", " + value
    return found


class LLMOutcome(NamedTuple):
    """The outcome of one LLM call (a NamedTuple: built positionally, once per call)."""

    provider: str
    route_type: str  # "completions", "embeddings", ... (see `RouteTypeResolver`)
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    time_to_first_token: float | None  # seconds from the request's arrival (streams only)
    temperature: float | None
    max_tokens: int | None
    reasoning_tokens: int | None = None  # part of output_tokens
    cache_write_tokens: int | None = None  # Anthropic's cache_creation_input_tokens
    # Whether `input_tokens` leaves the cached ones out (Anthropic, Bedrock) rather than
    # including them (OpenAI, Gemini): agentgateway's CacheTokenConvention.
    input_excludes_cache: bool = False
    streaming: bool = False  # the client asked for a stream

    def normalized_input_tokens(self) -> int | None:
        """Input tokens with cache reads and writes included, whatever the provider's way
        (agentgateway's `normalized_input_tokens`, what token limits are charged)."""
        tokens = self.input_tokens
        if tokens is not None and self.input_excludes_cache:
            tokens += (self.cached_input_tokens or 0) + (self.cache_write_tokens or 0)
        return tokens
