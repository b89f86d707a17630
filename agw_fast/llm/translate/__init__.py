"""API translation: a client speaks one LLM API, the provider another.

Sans-IO. The proxy hands a translator the client's parsed request and, later, the provider's
response bytes (de-chunked, identity-coded: a translated request asks for no content coding);
the translator returns the bytes the client receives. Streams are translated event by event
as they arrive, never buffered whole.

One module per pair of formats (`anthropic`: OpenAI chat completions <-> Anthropic Messages,
`gemini`: OpenAI chat completions -> Gemini's native generateContent, ...). Each exposes a
`RequestTranslation` factory; the contract is `Translation` below.
"""

from __future__ import annotations

from typing import Protocol

from agw_fast.llm.usage import Usage

__all__ = ["StreamTranslator", "Translation", "TranslationError"]


class TranslationError(Exception):
    """The client's request cannot be expressed in the provider's API (a 400 for the client),
    or a provider's response could not be read (the exchange answers 502/cuts the stream)."""


class StreamTranslator(Protocol):
    """Translates one streamed (SSE) provider response into the client's SSE format."""

    # Read by telemetry once the stream ends; set as events are seen.
    usage: Usage | None
    model: str | None  # the response model the provider reported
    first_token_at: float | None  # time.monotonic() when the first content event arrived

    def feed(self, data: bytes) -> bytes:
        """Provider bytes in (any split), client bytes out (possibly b"")."""
        ...

    def finish(self) -> bytes:
        """The provider's stream ended: what the client still needs (e.g. `data: [DONE]`)."""
        ...


class Translation(Protocol):
    """What one translated request needs on its way back."""

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        """A whole non-streamed 2xx provider body -> (client body, usage, response model).

        Raises `TranslationError` when the body is not what the provider's API returns."""
        ...

    def error_json(self, status: int, body: bytes) -> bytes:
        """A provider error body (status >= 400) in the client's error format; a body that
        cannot be read is wrapped as the client API's generic error with its text."""
        ...

    def stream(self) -> StreamTranslator:
        """A fresh translator for a streamed 2xx response."""
        ...
