"""What a request policy sees of a request, and the shape of a compiled policy step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

__all__ = [
    "DEFER",
    "ApiKeyClaims",
    "LLMTokenLimits",
    "PolicyAnswer",
    "PolicyRequest",
    "RequestStep",
]


class ApiKeyClaims(NamedTuple):
    """What an `apiKey` policy learnt of a request (CEL's `apiKey`: the key, redacted unless
    asked for, and the matched key's `metadata` flattened beside it)."""

    key: str
    metadata: object


class LLMTokenLimits(Protocol):
    """`type: tokens` limits as an LLM exchange uses them (localratelimit.TokenLimits)."""

    def check(self, estimate: int = 0) -> tuple[bool, bytes]: ...
    def charge(self, tokens: int) -> None: ...


class PolicyRequest:
    """A routed request as policies see it: the client's values, before any rewrite.

    Built only for routes that have steps. `headers` are (lowercase name, value) pairs as
    the client sent them; `query` keeps its leading `?` (b"" when there is none);
    `matched_prefix` is the route's path prefix when a prefix match selected it. A step may
    also add response fields (`add_response_header`), e.g. rate-limit or CORS headers, and
    an authentication step records its claims for later steps (`set_claims`).

    A step may replace `headers` (a new list) and `query` to change what is forwarded (and
    what later steps see): authentication policies take out the credential they consumed
    (`remove_request_header`). Authentication results: `claims` by CEL variable name; for
    the steps themselves `api_key` (ApiKeyClaims), `basic_auth_user` (the username),
    `jwt_claims` (a verified token's payload) and `jwt_token`, None when not authenticated
    that way.
    """

    __slots__ = (
        "method", "host", "path", "query", "headers", "matched_prefix", "source",
        "response_lines", "response_replaces", "version", "claims", "api_key",
        "basic_auth_user", "jwt_claims", "jwt_token", "delay", "resume", "no_retry",
        "token_limits",
    )  # fmt: skip

    def __init__(
        self,
        method: bytes,
        host: bytes,
        path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        matched_prefix: str | None,
        source: str = "",
        version: bytes = b"1.1",
    ) -> None:
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
        self.matched_prefix = matched_prefix
        self.source = source  # the client's "addr:port" (IPv6 in brackets)
        # Lines (`name: value\r\n`) steps add to whatever response the request gets.
        self.response_lines: list[bytes] | None = None
        # Lowercase names whose upstream fields the proxied response loses (see `replace`).
        self.response_replaces: frozenset[bytes] | None = None
        self.api_key: ApiKeyClaims | None = None
        self.basic_auth_user: str | None = None
        self.jwt_claims: dict[str, Any] | None = None
        self.jwt_token: str | None = None
        self.version = version  # h11's http_version: b"1.1" or b"1.0"
        # What authentication steps established, by agentgateway's CEL variable name
        # ("jwt", "apiKey", "basicAuth"): later steps (authorization) read it.
        self.claims: dict[str, object] | None = None
        # A step that returned `DEFER`: seconds to wait, and the steps still to run then.
        self.delay = 0.0
        self.resume: Sequence[RequestStep] = ()
        # Set by a step to send this request once only, whatever the route's `retry` says
        # (a false `retry.precondition`).
        self.no_retry = False
        # The `type: tokens` limit a `conditional` localRateLimit selected: the LLM exchange
        # checks and charges it in place of the route's.
        self.token_limits: LLMTokenLimits | None = None

    def set_claims(self, variable: str, value: object) -> None:
        """Record an authentication result under its CEL variable name (e.g. "jwt")."""
        if self.claims is None:
            self.claims = {variable: value}
        else:
            self.claims[variable] = value

    def remove_request_header(self, name: bytes) -> None:
        """Send the request upstream without any `name` field (a lowercase name); later
        steps see the request without it too."""
        self.headers = [pair for pair in self.headers if pair[0] != name]

    def add_response_header(self, name: bytes, value: bytes) -> None:
        """Have the response, proxied or answered by a later step, carry this field."""
        line = b"%s: %s\r\n" % (name, value)
        if self.response_lines is None:
            self.response_lines = [line]
        else:
            self.response_lines.append(line)

    def replace_response_fields(self, names: frozenset[bytes]) -> None:
        """Fields of these (lowercase) names added from now on replace the upstream's and
        those earlier steps added (agentgateway inserts policy response headers into a map,
        so a route's CORS fields override the gateway's and the upstream's). Call it before
        adding the replacing fields."""
        lines = self.response_lines
        if lines is not None:
            # An entry may hold several prebuilt lines (`add_response_lines`).
            self.response_lines = [
                line
                for block in lines
                for line in block.splitlines(keepends=True)
                if line[: line.index(b":")].lower() not in names
            ] or None
        previous = self.response_replaces
        self.response_replaces = names if previous is None else previous | names

    def add_response_lines(self, lines: bytes) -> None:
        """Like `add_response_header`, for one or more prebuilt lines (`name: value\r\n`)."""
        if self.response_lines is None:
            self.response_lines = [lines]
        else:
            self.response_lines.append(lines)


class PolicyAnswer(NamedTuple):
    """A policy's own answer to a request: the complete response and why (a `Reason`)."""

    response: bytes
    reason: str


# None lets the request go on; an answer ends it with the gateway's own response.
RequestStep = Callable[[PolicyRequest], PolicyAnswer | None]

# The answer of a step that holds the request for `PolicyRequest.delay` seconds (`delay`):
# `run_steps` then records the steps after it in `PolicyRequest.resume`, and the connection
# runs them, and proxies the request, when the time is up. Compared by identity.
DEFER = PolicyAnswer(b"", "Deferred")
